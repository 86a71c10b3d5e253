"""Lightricks' files as users download them, made into a milimo model folder.

`sources` tells what each downloaded file is (a model checkpoint, an upscaler, a LoRA, a Gemma folder); `versions`
holds the official per-version defaults (steps, STG blocks, CRF, ...); `convert` turns each component's official
weights and config into diffusers' layout, which the engine loads; `importer` writes the folder
(`diffusers_folder` for a diffusers-layout download), `info` describes one. Nothing here imports ltx-core:
the conversions are ours, checked against Lightricks' code by the parity tests.
"""

from .importer import ImportReport, import_model
from .info import model_info
from .versions import OFFICIAL_VERSIONS, VersionDefaults, defaults_for

__all__ = ["ImportReport", "OFFICIAL_VERSIONS", "VersionDefaults", "defaults_for", "import_model", "model_info"]
