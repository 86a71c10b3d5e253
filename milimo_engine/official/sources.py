"""What each downloaded file is, read from its safetensors header alone (no weights are loaded to tell).

- a model checkpoint (`ltx-2-19b-dev.safetensors`, `ltx-2.3-22b-dev.safetensors`): `config` metadata with a
  `transformer` section, keys under `model.diffusion_model.`;
- an upscaler (`ltx-2-spatial-upscaler-x2-1.0.safetensors`): `config` metadata with `spatial_upsample` /
  `temporal_upsample`;
- a LoRA: `lora_A` / `lora_B` (or `lora_down` / `lora_up`) keys; the distilled LoRA by its name;
- a Gemma folder: `config.json` of a Gemma 3 model, its weights and tokenizer;
- a diffusers-layout model folder: `model_index.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from ..errors import ModelImportError

FP8_DTYPES = ("F8_E4M3", "F8_E5M2")


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    metadata: dict[str, str]
    keys: tuple[str, ...]
    dtypes: frozenset[str]

    @property
    def config(self) -> dict[str, Any]:
        raw = self.metadata.get("config")
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ModelImportError(self.path, f"its `config` metadata is not JSON ({exc})",
                                   "download the file again; it is damaged") from None


def read_header(path: Path) -> SafetensorsHeader:
    """The header of a safetensors file: metadata, keys and the dtypes they use (read without the weights)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            keys = tuple(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelImportError(path, f"is not a readable safetensors file ({exc})",
                               "download it again, or remove it from the sources") from None
    return SafetensorsHeader(path, metadata, keys, _dtypes(path))


def _dtypes(path: Path) -> frozenset[str]:
    """The dtypes of a file's tensors, from its JSON header (safe_open does not expose them without loading)."""
    from ..memory import safetensors_header

    return frozenset(v["dtype"] for k, v in safetensors_header(path).items() if k != "__metadata__")


@dataclass
class Sources:
    """The files one import is made of, each classified."""

    checkpoint: SafetensorsHeader | None = None
    spatial_upsampler: SafetensorsHeader | None = None
    temporal_upsampler: SafetensorsHeader | None = None
    distilled_lora: SafetensorsHeader | None = None
    loras: list[SafetensorsHeader] = field(default_factory=list)
    gemma: Path | None = None
    diffusers: Path | None = None
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def _is_lora(header: SafetensorsHeader) -> bool:
    return any(".lora_A." in k or ".lora_down." in k or ".lora_B." in k for k in header.keys[:64]) or any(
        k.endswith((".lora_A.weight", ".lora_down.weight")) for k in header.keys)


def _is_gemma_folder(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return str(data.get("model_type", "")).startswith("gemma") or any(
        "Gemma" in a for a in data.get("architectures") or [])


def classify(paths: list[Path]) -> Sources:
    """Every source path (files, and folders searched one level down) sorted into what it is."""
    found = Sources()
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ModelImportError(path, "does not exist", "give the files as downloaded (checkpoint, upscalers, "
                                   "LoRAs, the Gemma folder), or a folder that holds them")
        if path.is_dir():
            if (path / "model_index.json").is_file():
                found.diffusers = path
            elif _is_gemma_folder(path):
                found.gemma = path
            else:
                for child in sorted(path.iterdir()):
                    if child.is_dir() and _is_gemma_folder(child):
                        found.gemma = child
                    elif child.is_dir() and (child / "model_index.json").is_file():
                        found.diffusers = child
                    elif child.suffix == ".safetensors":
                        files.append(child)
        elif path.suffix == ".safetensors":
            files.append(path)
        else:
            found.ignored.append((path, "not a .safetensors file"))
    for path in files:
        header = read_header(path)
        config = header.config
        if "transformer" in config or any(k.startswith("model.diffusion_model.") for k in header.keys[:16]):
            if found.checkpoint is not None:
                raise ModelImportError(path, f"is a second model checkpoint beside {found.checkpoint.path.name}",
                                       "import one checkpoint at a time (the dev one; the distilled model is its LoRA)")
            found.checkpoint = header
        elif "spatial_upsample" in config or "temporal_upsample" in config:
            temporal = bool(config.get("temporal_upsample")) and not config.get("spatial_upsample")
            slot = "temporal_upsampler" if temporal else "spatial_upsampler"
            if getattr(found, slot) is not None:
                found.ignored.append((path, f"a second {slot.replace('_', ' ')}"))
            else:
                setattr(found, slot, header)
        elif _is_lora(header):
            if "distilled" in path.name and found.distilled_lora is None:
                found.distilled_lora = header
            else:
                found.loras.append(header)
        else:
            found.ignored.append((path, "neither a checkpoint, an upscaler nor a LoRA"))
    return found
