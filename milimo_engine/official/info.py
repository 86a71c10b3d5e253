"""`milimo model info`: what a model folder is, read from its manifest and its files' headers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..manifest import ModelManifest
from .sources import _dtypes


def model_info(folder: Path) -> dict[str, Any]:
    """What a model folder is: version, model id, components (class, dtype, bytes), defaults, size on disk."""
    folder = Path(folder)
    manifest = ModelManifest.read(folder)
    components = {}
    total = 0
    for name, rel in sorted(manifest.components.items()):
        path = folder / rel
        if not path.exists():
            continue
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        total += size
        cls, dtypes = "-", set[str]()
        config = path / "config.json" if path.is_dir() else None
        if config is not None and config.is_file():
            raw = json.loads(config.read_text())
            cls = raw.get("_class_name") or (raw.get("architectures") or ["-"])[0]
        for weights in [p for p in files if p.suffix == ".safetensors"][:4]:
            dtypes |= _dtypes(weights)
        components[name] = {"class": cls, "dtype": ",".join(sorted(dtypes)) or "-", "bytes": size}
    loras = {}
    for rel in ([manifest.distilled_lora] if manifest.distilled_lora else []) + list(manifest.loras.values()):
        path = folder / rel
        if path.is_file():
            loras[rel] = path.stat().st_size
            total += path.stat().st_size
    return {
        "folder": str(folder),
        "model_id": manifest.model_id,
        "version": manifest.version,
        "random_weights": manifest.random_weights,
        "components": components,
        "loras": loras,
        "bytes": total,
        "defaults": {
            "stage1_steps": manifest.schedule.stage1_steps,
            "stg_blocks": list(manifest.stg_blocks),
            "audio_stg_blocks": list(manifest.audio_stg_blocks or manifest.stg_blocks),
            "image_crf": manifest.image_crf,
            "cross_timestep": manifest.cross_timestep,
            "default_size": list(manifest.default_size),
            "max_frames": manifest.max_frames,
            "segment_frames": manifest.segment_frames,
            "max_sequence_length": manifest.max_sequence_length,
            "distilled_lora": manifest.distilled_lora,
            "distilled_lora_strength": manifest.distilled_lora_strength,
            "distilled_sigmas": list(manifest.schedule.distilled_sigmas),
            "negative_prompt": manifest.default_negative_prompt,
        },
        "sources": manifest.sources,
    }
