"""Milimo's LTX-2 engine: the two-stage pipeline, the model ledger and the tiny demo model.

Usable alone (a notebook, a script); never imports Prefect, OTIO or SQL.
"""

from .errors import (
    InvalidFrameCountError,
    InvalidGuidanceError,
    InvalidRequestError,
    InvalidSizeError,
    LoraFileError,
    MilimoEngineError,
    MissingComponentError,
    RenderCancelled,
    UnknownLoraKeysError,
    UnsupportedDtypeError,
)
from .ledger import AppliedLora, LoadEvent, ModelLedger
from .manifest import ModelManifest
from .pipeline import TwoStagePipeline
from .request import Guidance, LoraSpec, ShotRequest
from .result import ShotResult
from .tiny import build_tiny_model, ensure_tiny_model

__all__ = [
    "AppliedLora", "Guidance", "InvalidFrameCountError", "InvalidGuidanceError", "InvalidRequestError",
    "InvalidSizeError", "LoadEvent", "LoraFileError", "LoraSpec", "MilimoEngineError", "MissingComponentError",
    "ModelLedger", "ModelManifest", "RenderCancelled", "ShotRequest", "ShotResult", "TwoStagePipeline",
    "UnknownLoraKeysError", "UnsupportedDtypeError", "build_tiny_model", "ensure_tiny_model",
]
