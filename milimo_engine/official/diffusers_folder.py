"""A diffusers-layout LTX-2 folder (as diffusers publishes `Lightricks/LTX-2`) as a milimo model folder: its
components linked as they are, the upscaler and LoRAs added, the manifest written from the version its
transformer's config implies."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import ModelImportError
from ..hashing import file_sha256
from ..manifest import ModelManifest, ScheduleDefaults
from . import convert
from .importer import ImportReport, _link_or_copy, _refs, _stg_blocks, staged, write_component
from .sources import Sources
from .versions import defaults_for


def import_diffusers(found: Sources, out: Path, *, model_id: str | None, say: Callable[[str], None]) -> ImportReport:
    """A diffusers-layout folder (`Lightricks/LTX-2` as diffusers publishes it): its components are linked as they
    are; the manifest is written from the version its transformer's config implies."""
    source = found.diffusers
    assert source is not None
    transformer = json.loads((source / "transformer" / "config.json").read_text())
    version = "2.3" if transformer.get("cross_attn_mod") else "2.0"
    defaults = defaults_for(version)
    if found.spatial_upsampler is None and not (source / "latent_upsampler").is_dir():
        raise ModelImportError(
            source,
            "has no latent_upsampler/ and no spatial upscaler was given",
            "add the spatial x2 upscaler file to the sources",
        )
    if found.distilled_lora is None:
        raise ModelImportError(source, "no distilled LoRA was given", "add the distilled LoRA file to the sources")
    notes: list[str] = []
    sha = file_sha256(found.distilled_lora.path)
    report = ImportReport(out, defaults.version, model_id or f"{defaults.model_id}@diffusers-{sha[:12]}", notes=notes)
    with staged(out) as staging:
        for child in sorted(source.iterdir()):
            if child.is_dir():
                say(f"linking {child.name}")
                for path in child.rglob("*"):
                    if path.is_file():
                        _link_or_copy(path, staging / child.name / path.relative_to(child))
                report.components[child.name] = "diffusers"
        if found.spatial_upsampler is not None:
            write_component(
                convert.upsampler_component(
                    "latent_upsampler",
                    found.spatial_upsampler.config,
                    _refs(found.spatial_upsampler),
                    found.spatial_upsampler.path,
                ),
                staging / "latent_upsampler",
            )
        for header in [found.distilled_lora, *found.loras]:
            _link_or_copy(header.path, staging / "loras" / header.path.name)
            report.loras.append(header.path.name)
        layers = int(transformer.get("num_layers", 48))
        blocks = _stg_blocks(defaults.stg_blocks, layers, notes)
        ModelManifest(
            model_id=report.model_id,
            distilled_lora=f"loras/{found.distilled_lora.path.name}",
            loras={h.path.stem: f"loras/{h.path.name}" for h in found.loras},
            schedule=ScheduleDefaults(stage1_steps=defaults.stage1_steps),
            stg_blocks=blocks,
            audio_stg_blocks=blocks,
            image_crf=defaults.image_crf,
            cross_timestep=defaults.cross_timestep,
            version=defaults.version,
            negative_prompt=defaults.negative_prompt,
            distilled_lora_strength=defaults.distilled_lora_strength,
            sources={found.distilled_lora.path.name: sha},
        ).write(staging)
    return report
