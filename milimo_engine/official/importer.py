"""`milimo model import`: the official files as downloaded become a milimo model folder, offline.

The folder is diffusers' LTX-2 layout (what the engine loads) plus `milimo-model.json`, whose every default comes
from the official constants of the checkpoint's version (`versions.py`), never from a person typing them. The
folder is written under a staging name and renamed when complete, so an interrupted import leaves nothing half
made; the manifest records each source file's sha256.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelImportError
from ..hashing import file_sha256
from ..manifest import ModelManifest, ScheduleDefaults
from ..memory import DTYPE_BYTES
from . import convert
from .sources import FP8_DTYPES, SafetensorsHeader, Sources, classify
from .versions import VersionDefaults, defaults_for

SHARD_BYTES = 4 << 30
GEMMA_WEIGHTS = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "preprocessor_config.json", "processor_config.json", "chat_template.json",
                   "chat_template.jinja")


@dataclass
class ImportReport:
    """What an import made, for the command to print."""

    folder: Path
    version: str
    model_id: str
    components: dict[str, str] = field(default_factory=dict)  # folder -> class
    loras: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was adapted (an STG block the model lacks, ...)
    ignored: list[tuple[str, str]] = field(default_factory=list)


def _refs(header: SafetensorsHeader) -> convert.State:
    with open(header.path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        raw = json.loads(fh.read(size))
    return {k: convert.TensorRef(header.path, k, tuple(v["shape"]), v["dtype"]) for k, v in raw.items()
            if k != "__metadata__"}


def _diffusers_class(name: str) -> Callable[[dict], Any]:
    import diffusers
    from diffusers.pipelines import ltx2
    from diffusers.pipelines.ltx2 import vocoder

    for namespace in (diffusers, ltx2, vocoder):
        cls = getattr(namespace, name, None)
        if cls is not None:
            return cls.from_config
    raise ModelImportError(name, "is not a class of the installed diffusers", "upgrade diffusers")


def write_component(component: convert.Component, target: Path) -> None:
    """config.json and the weights, one tensor read at a time, in shards of at most SHARD_BYTES (with diffusers'
    index file when there is more than one)."""
    import diffusers
    from safetensors import safe_open
    from safetensors.torch import save_file

    target.mkdir(parents=True)
    (target / "config.json").write_text(json.dumps(
        {"_class_name": component.class_name, "_diffusers_version": diffusers.__version__, **component.config},
        indent=2) + "\n")
    shards: list[list[tuple[str, convert.TensorRef]]] = [[]]
    used = 0
    for key, ref in sorted(component.state.items()):
        nbytes = DTYPE_BYTES.get(ref.dtype, 4) * max(1, _prod(ref.shape))
        if shards[-1] and used + nbytes > SHARD_BYTES:
            shards.append([])
            used = 0
        shards[-1].append((key, ref))
        used += nbytes
    names = ["diffusion_pytorch_model.safetensors"] if len(shards) == 1 else [
        f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    handles: dict[Path, Any] = {}
    try:
        for name, shard in zip(names, shards, strict=False):
            tensors = {}
            for key, ref in shard:
                if ref.file not in handles:
                    handles[ref.file] = safe_open(str(ref.file), framework="pt").__enter__()
                tensors[key] = handles[ref.file].get_tensor(ref.key).contiguous()
                weight_map[key] = name
            save_file(tensors, str(target / name), metadata={"format": "pt"})
            del tensors
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)
    if len(shards) > 1:
        (target / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": weight_map}, indent=2) + "\n")


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _gemma_shape(gemma: Path) -> tuple[int, int]:
    config = json.loads((gemma / "config.json").read_text())
    text = config.get("text_config", config)
    return int(text["hidden_size"]), int(text["num_hidden_layers"])


def _refuse_fp8(header: SafetensorsHeader) -> None:
    fp8 = header.dtypes & set(FP8_DTYPES)
    if fp8:
        scaled = any(k.endswith(".weight_scale") for k in header.keys)
        raise ModelImportError(
            header.path, f"is an fp8 checkpoint ({'scaled' if scaled else 'cast'} {', '.join(sorted(fp8))} weights)",
            "import the bfloat16 checkpoint as Lightricks publishes it (e.g. ltx-2-19b-dev.safetensors); milimo "
            "does not read fp8 weights yet, and dropping their scales would render garbage")


def _version_of(header: SafetensorsHeader) -> VersionDefaults:
    declared = header.metadata.get("model_version", "")
    defaults = defaults_for(declared)
    shaped_22b = convert.is_22b(header.config)
    if shaped_22b and defaults.version == "2.0":
        # A 22B-shaped checkpoint without a version of 2.3 or later: its architecture is 2.3's.
        defaults = defaults_for("2.3")
    if not shaped_22b and declared and defaults.version != "2.0":
        raise ModelImportError(header.path, f"declares model_version {declared} but has the 19B (LTX-2.0) layout",
                               "download the checkpoint again; its header and its weights disagree")
    return defaults


def _stg_blocks(blocks: tuple[int, ...], layers: int, notes: list[str]) -> tuple[int, ...]:
    """The official STG blocks; a (test-sized) transformer without them perturbs its last block instead, said."""
    if all(0 <= b < layers for b in blocks):
        return blocks
    fitted = tuple(sorted({min(b, layers - 1) for b in blocks}))
    notes.append(f"the official STG blocks {list(blocks)} do not exist in this {layers}-block transformer; "
                 f"STG perturbs block(s) {list(fitted)}")
    return fitted


def import_model(paths: list[Path], out: Path, *, force: bool = False, model_id: str | None = None,
                 on_step: Callable[[str], None] | None = None) -> ImportReport:
    """Make `out` a milimo model folder from the downloaded files in `paths` (files or folders holding them)."""
    say = on_step or (lambda _msg: None)
    out = Path(out)
    if out.exists() and not force:
        raise ModelImportError(out, "exists", "give another -o, or --force to replace it")
    found = classify([Path(p) for p in paths])
    if found.diffusers is not None and found.checkpoint is None:
        from .diffusers_folder import import_diffusers

        return import_diffusers(found, out, model_id=model_id, say=say)
    _require(found, paths)
    assert found.checkpoint is not None and found.gemma is not None and found.distilled_lora is not None
    checkpoint = found.checkpoint
    defaults = _version_of(checkpoint)
    components = _checkpoint_components(found, checkpoint)
    say(f"hashing {checkpoint.path.name}")
    sources = {h.path.name: file_sha256(h.path) for h in
               [checkpoint, found.spatial_upsampler, found.temporal_upsampler, found.distilled_lora, *found.loras]
               if h is not None}
    chosen_id = model_id or f"{defaults.model_id}@{sources[checkpoint.path.name][:12]}"
    report = ImportReport(out, defaults.version, chosen_id, ignored=[(str(p), why) for p, why in found.ignored])
    with staged(out) as staging:
        for component in components:
            say(f"writing {component.folder}")
            write_component(component, staging / component.folder)
            report.components[component.folder] = component.class_name
        say("linking the Gemma text encoder")
        _write_gemma(found.gemma, staging)
        report.components["text_encoder"] = "Gemma3ForConditionalGeneration"
        for header in [found.distilled_lora, *found.loras]:
            _link_or_copy(header.path, staging / "loras" / header.path.name)
            report.loras.append(header.path.name)
        layers = int(checkpoint.config["transformer"].get("num_layers", 48))
        blocks = _stg_blocks(defaults.stg_blocks, layers, report.notes)
        _official_manifest(report.model_id, defaults, found, blocks, sources).write(staging)
        (staging / "README.txt").write_text(
            f"LTX-{defaults.version} imported by `milimo model import` from {', '.join(sorted(sources))}.\n"
            "Its defaults are the official ones for that version; `milimo model info` prints them.\n"
        )
    return report


def _checkpoint_components(found: Sources, checkpoint: SafetensorsHeader) -> list[convert.Component]:
    """The checkpoint's components and the upscalers, converted lazily and checked to load before anything is
    written (fp8 and files without Lightricks' `config` metadata are refused)."""
    _refuse_fp8(checkpoint)
    config = checkpoint.config
    if not config:
        raise ModelImportError(checkpoint.path, "has no `config` metadata", "import the checkpoint as Lightricks "
                               "publishes it; a file re-saved without its metadata cannot be read")
    assert found.gemma is not None
    state = _refs(checkpoint)
    gemma_hidden, gemma_layers = _gemma_shape(found.gemma)
    components = [
        convert.transformer_component(config, state, checkpoint.path),
        convert.vae_component(config, state, checkpoint.path),
        convert.audio_vae_component(config, state, checkpoint.path),
        convert.vocoder_component(config, state, checkpoint.path),
        convert.connectors_component(config, state, gemma_hidden, gemma_layers, checkpoint.path),
    ]
    for header, folder in ((found.spatial_upsampler, "latent_upsampler"),
                           (found.temporal_upsampler, "temporal_upsampler")):
        if header is not None:
            _refuse_fp8(header)
            components.append(convert.upsampler_component(folder, header.config, _refs(header), header.path))
    for component in components:
        convert.check_loads(component, _diffusers_class(component.class_name), checkpoint.path)
    return components


FOLDERS = {"transformer": "transformer", "vae": "vae", "audio_vae": "audio_vae", "vocoder": "vocoder",
           "connectors": "connectors", "text_encoder": "text_encoder", "tokenizer": "tokenizer",
           "scheduler": "scheduler", "spatial_upsampler": "latent_upsampler",
           "temporal_upsampler": "temporal_upsampler"}


def _official_manifest(model_id: str, defaults: VersionDefaults, found: Sources, blocks: tuple[int, ...],
                       sources: dict[str, str]) -> ModelManifest:
    """The version's official defaults, as `milimo-model.json` records them."""
    assert found.distilled_lora is not None
    distilled = f"loras/{found.distilled_lora.path.name}"
    loras = {h.path.stem: f"loras/{h.path.name}" for h in found.loras if f"loras/{h.path.name}" != distilled}
    return ModelManifest(
        model_id=model_id, components=dict(FOLDERS), distilled_lora=distilled, loras=loras,
        schedule=ScheduleDefaults(stage1_steps=defaults.stage1_steps, distilled_sigmas=defaults.distilled_sigmas),
        stg_blocks=blocks, audio_stg_blocks=blocks, max_frames=defaults.max_frames,
        segment_frames=defaults.segment_frames, image_crf=defaults.image_crf,
        max_sequence_length=defaults.max_sequence_length, cross_timestep=defaults.cross_timestep,
        default_size=defaults.default_size, version=defaults.version, negative_prompt=defaults.negative_prompt,
        distilled_lora_strength=defaults.distilled_lora_strength, sources=sources)


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A folder beside `out` to write into; on success it replaces `out` in one rename, else it is removed, so an
    import that fails or is interrupted leaves `out` as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing.", dir=out.parent))
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _require(found: Sources, paths: list[Path]) -> None:
    missing = []
    if found.checkpoint is None:
        missing.append(("the model checkpoint", "ltx-2-19b-dev.safetensors or ltx-2.3-22b-dev.safetensors"))
    if found.spatial_upsampler is None:
        missing.append(("the spatial x2 upscaler", "ltx-2-spatial-upscaler-x2-1.0.safetensors"))
    if found.distilled_lora is None:
        missing.append(("the distilled LoRA (stage 2 runs on it)", "ltx-2-19b-distilled-lora-384.safetensors"))
    if found.gemma is None:
        missing.append(("the Gemma 3 text encoder folder", "gemma-3-12b-it-qat-q4_0-unquantized/"))
    if missing:
        what = "; ".join(f"{name} (e.g. {example})" for name, example in missing)
        where = found.checkpoint.path if found.checkpoint is not None else ", ".join(str(p) for p in paths)
        raise ModelImportError(
            where, f"missing {what}", "download it from Lightricks' model page and add it to the sources"
        )


def _write_gemma(gemma: Path, staging: Path) -> None:
    """text_encoder/ holds the Gemma weights and config (hard links where the filesystem allows), tokenizer/ its
    tokenizer files."""
    for path in sorted(gemma.iterdir()):
        if path.name in TOKENIZER_FILES:
            _link_or_copy(path, staging / "tokenizer" / path.name)
        if path.suffix == ".safetensors" or path.name.endswith(".safetensors.index.json") or path.name in GEMMA_WEIGHTS:
            _link_or_copy(path, staging / "text_encoder" / path.name)
    if (
        not (staging / "tokenizer" / "tokenizer.json").is_file()
        and not (staging / "tokenizer" / "tokenizer.model").is_file()
    ):
        raise ModelImportError(
            gemma,
            "holds no tokenizer (tokenizer.json or tokenizer.model)",
            "give the Gemma folder as downloaded, tokenizer included",
        )
    if not any((staging / "text_encoder").glob("*.safetensors")):
        raise ModelImportError(gemma, "holds no .safetensors weights", "give the Gemma folder as downloaded")


def imported_folder(source: Path, cache_root: Path, on_step: Callable[[str], None] | None = None) -> Path:
    """`--model` given the official files themselves (a checkpoint file, or a folder of downloads without a
    manifest): imported once into `cache_root`, keyed by the files' names, sizes and mtimes, and reused after."""
    import hashlib

    source = Path(source)
    folder = source.parent if source.is_file() else source
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and (p.suffix == ".safetensors" or p.name.endswith(".json") or p.name.startswith("tokenizer"))
    )
    key = hashlib.sha256(
        "".join(f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}\n" for p in files).encode()
    ).hexdigest()[:16]
    target = Path(cache_root) / f"imported-{folder.name}-{key}"
    if (target / "milimo-model.json").is_file():
        return target
    try:
        import_model([folder], target, on_step=on_step)
    except ModelImportError:
        if (target / "milimo-model.json").is_file():  # another process imported it meanwhile
            return target
        raise
    return target
