"""Memory modes and the planner: what one shot needs on its device in each mode, known before anything loads.

A studio's GPUs run from 24 GB cards to 141 GB H200s; LTX-2 in bf16 (transformer 35 GiB, Gemma 3 12B 23 GiB,
connectors, VAE, LoRA adapters) does not fit the smaller ones resident. The official pipelines build and free each
model per stage, cast the transformer to fp8, or stream its blocks from host memory. Each of those is a mode here,
fastest first:

- `resident`: every component stays on the device between shots (no rebuilds; the most memory);
- `release`: the text encoder and connectors are released after encoding, the upsamplers after upsampling, and a
  budget offloads the least recently used component before another would not fit;
- `fp8`: `release`, with the transformer's weights stored as float8 e4m3 and computed in the render dtype
  (diffusers' layerwise casting, as official fp8-cast does);
- `stream`: `release`, with the transformer's blocks kept in host memory and brought to the device one group at a
  time (diffusers' group offloading).

The weights are counted exactly: each component is built from its config on the meta device, converted to the
render dtype and to the mode's storage by the same function the ledger applies to the real module, and its
tensors counted; a LoRA's adapters from its file's header. Activations are an estimate (documented per phase
below); `bench/gpu.py` compares it with `torch.cuda.max_memory_allocated` on a real device.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from .errors import InvalidRequestError
from .limits import MEMORY_MODES, format_bytes

MemoryMode = Literal["resident", "release", "fp8", "stream"]
MODES: tuple[MemoryMode, ...] = MEMORY_MODES  # type: ignore[assignment]  # fastest first: `auto` takes the first fit
FP8_STORAGE = torch.float8_e4m3fn

# The components each phase of a render needs on the device at once (the VAE lends its latent statistics to the
# upsampling phases, and decodes). Outside `resident`, RELEASED_AFTER frees a phase's own components when it ends.
PHASES: dict[str, tuple[str, ...]] = {
    "encode": ("text_encoder", "connectors"),
    "stage1": ("transformer",),
    "upsample": ("spatial_upsampler", "vae"),
    "stage2": ("transformer",),
    "temporal": ("temporal_upsampler", "vae"),
    "decode": ("vae", "audio_vae", "vocoder"),
}
RELEASED_AFTER: dict[str, tuple[str, ...]] = {
    "encode": ("text_encoder", "connectors"),
    "upsample": ("spatial_upsampler",),
    "temporal": ("temporal_upsampler",),
}

# Activation estimate of one transformer step, in units of (rows x tokens x width x element size): the residual
# stream, its normalised copy, q/k/v, the attention output and the 4x feed-forward's hidden layer of one block
# live at once, plus the RoPE tables (cos and sin, float32) of the whole sequence.
BLOCK_ACTIVATIONS = 10
ROPE_ACTIVATIONS = 4
# A decode tile's activations in units of (tile frames x the tile's pixels / patch size^2 x the decoder's last
# block's channels x element size): that block runs at the unpatched resolution, its resnet's input, output and
# skip live at once, and the depth-to-space shuffle copies one.
DECODE_ACTIVATIONS = 4
# Buffers (RoPE tables, norms' statistics) a component holds beyond the parameters its files list.
QUICK_MARGIN = 1.02


# --------------------------------------------------------------------------- storage (shared with the ledger)
# What `stream` keeps in host memory, and how it brings it over: the transformer block by block (its
# `transformer_blocks`), Gemma layer by layer (its decoder layers sit two modules deep, so leaf by leaf).
STREAMED: dict[str, Literal["block_level", "leaf_level"]] = {"transformer": "block_level",
                                                            "text_encoder": "leaf_level"}


# What `fp8` stores as float8: the two large models' layers (Gemma too, or the encode phase alone would need more
# than a 24 GB card has); norms, embeddings and the patchify projections stay in the render dtype.
FP8_STORED = ("transformer", "text_encoder")


def apply_storage(component: str, module: Any, mode: MemoryMode, compute_dtype: torch.dtype) -> Any:
    """Store a built component as `mode` keeps it: its layers' weights as fp8 (`fp8`), cast to `compute_dtype`
    layer by layer as each computes. One function for the ledger's real modules and the planner's meta ones, so the
    planner counts exactly what the ledger holds."""
    if component not in FP8_STORED or mode != "fp8":
        return module
    if hasattr(module, "enable_layerwise_casting"):  # a diffusers model: its own skip list, and peft's layers
        module.enable_layerwise_casting(storage_dtype=FP8_STORAGE, compute_dtype=compute_dtype)
    else:
        from diffusers.hooks import apply_layerwise_casting
        from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

        apply_layerwise_casting(module, storage_dtype=FP8_STORAGE, compute_dtype=compute_dtype,
                                # lm_head is tied to the embeddings
                                skip_modules_pattern=(*DEFAULT_SKIP_MODULES_PATTERN, "embed", "lm_head"))
    return module


def place(component: str, module: Any, mode: MemoryMode, device: torch.device) -> Any:
    """Put a built (and stored) component on its device: all of it, or, streamed, only what computes now."""
    if mode == "stream" and component in STREAMED and isinstance(module, torch.nn.Module):
        from diffusers.hooks import apply_group_offloading

        module.to("cpu")
        kwargs: dict[str, Any] = {"num_blocks_per_group": 1} if STREAMED[component] == "block_level" else {}
        apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                               offload_type=STREAMED[component], use_stream=device.type == "cuda", **kwargs)
        return module
    return module.to(device) if hasattr(module, "to") else module


def device_bytes(component: str, module: Any, mode: MemoryMode) -> int:
    """What a component holds on its device in `mode`."""
    if mode == "stream" and component in STREAMED:
        return streamed_bytes(module, STREAMED[component])
    return module_bytes(module)


def from_config(cls: Any, component: str, folder: Path, config: dict[str, Any], dtype: torch.dtype) -> Any:
    """A component built from its config alone, at `dtype`, wherever the caller's context puts its tensors (the meta
    device for the planner, the GPU for random weights). Gemma is built at the dtype, as from_pretrained builds it
    (its rotary tables stay float32)."""
    if component == "text_encoder":
        from transformers import AutoConfig
        return cls._from_config(AutoConfig.from_pretrained(folder), dtype=dtype)
    return cls.from_config(config).to(dtype)


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def module_bytes(module: Any) -> int:
    """Every parameter and buffer of a module, at the dtype it is stored in."""
    if not isinstance(module, torch.nn.Module):
        return 0
    return tensor_bytes(list(module.parameters()) + list(module.buffers()))


def streamed_bytes(module: torch.nn.Module, level: str = "block_level") -> int:
    """What a streamed module keeps on its device at most: two groups (the one computing and the next one
    arriving) of its largest, plus, block by block, everything outside its blocks (onloaded as one group)."""
    if level == "leaf_level":
        leaves = [m for m in module.modules() if not list(m.children())]
        largest = max((module_bytes(m) for m in leaves), default=0)
        own = sum(tensor_bytes(list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)))
                  for m in module.modules() if list(m.children()))
        return own + min(2, len(leaves)) * largest
    blocks = [b for name, b in module.named_children() if isinstance(b, torch.nn.ModuleList)]
    block_list = [blk for group in blocks for blk in group]
    inside = sum(module_bytes(b) for b in block_list)
    largest = max((module_bytes(b) for b in block_list), default=0)
    return module_bytes(module) - inside + min(2, len(block_list)) * largest


# --------------------------------------------------------------------------- the shot
@dataclass(frozen=True)
class ShotShape:
    """What of a shot decides its memory: the final size, frame count, guidance rows per step, LoRA adapters."""

    width: int
    height: int
    frames: int
    fps: float = 24.0
    rows: int = 4  # guided passes per stage-1 step (uncond, cond, STG, modality isolation); 1 when unguided
    lora_files: tuple[Path, ...] = ()  # every adapter the transformer carries (the shot's and the distilled one)
    temporal: bool = False
    lora_ranks: tuple[int, ...] = ()  # adapters planned by rank alone (no file yet): one per rank, on every layer

    @classmethod
    def of(cls, request: Any, manifest: Any, model_dir: Path) -> ShotShape:
        """The shape of an engine `ShotRequest` on this model (its defaults filled from the manifest)."""
        width = request.width or manifest.default_size[0]
        height = request.height or manifest.default_size[1]
        # one row for the prompt, one for each other pass any stream asks for (`denoise.guidance_passes`)
        wanted = {p for s in request.guidance.streams for p in ("uncond", "perturbed", "isolated")
                  if getattr(s, f"wants_{p}")}
        rows = 1 if request.quality == "draft" else 1 + len(wanted)
        loras = model_loras(manifest, model_dir, [spec.path for spec in request.loras])
        frames = min(request.num_frames, request.segment_frames or manifest.segment_frames)
        return cls(width, height, frames, request.fps, rows, loras, bool(request.temporal_upsample))

    def smaller(self) -> ShotShape:
        """The next smaller size at the same aspect (each side about 0.8x, whole multiples of 64)."""
        w = max(64, int(self.width * 0.8) // 64 * 64)
        h = max(64, int(self.height * 0.8) // 64 * 64)
        return replace(self, width=w, height=h)


def model_loras(manifest: Any, model_dir: Path, paths: Iterable[str | Path] = ()) -> tuple[Path, ...]:
    """The LoRA files a shot's transformer carries on this model: its own (relative ones in the model folder, as the
    ledger resolves them) and the distilled one."""
    own = tuple(Path(p) if Path(p).is_absolute() else model_dir / p for p in paths)
    return own + ((model_dir / manifest.distilled_lora,) if manifest.distilled_lora else ())


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class ModePlan:
    mode: MemoryMode
    weights: Mapping[str, int]  # bytes each component holds on the device in this mode (adapters: "loras")
    phases: Mapping[str, int]  # the peak of each phase: its components' weights plus its activations
    peak: int
    budget: int | None  # the weight budget the ledger keeps to (None: resident, no budget)
    capacity: int | None = None  # what the device had when this mode was chosen for it

    def fits(self, capacity: int | None) -> bool:
        return capacity is None or self.peak <= capacity


@dataclass(frozen=True)
class MemoryPlan:
    shape: ShotShape
    dtype: str
    modes: tuple[ModePlan, ...]
    activations: Mapping[str, int]

    def mode(self, name: str) -> ModePlan:
        return next(m for m in self.modes if m.mode == name)

    def fitting(self, requested: str, capacity: int | None) -> ModePlan | None:
        """`auto`: the fastest mode that fits `capacity`; a named mode: that one, if it fits; else None."""
        candidates = self.modes if requested == "auto" else (self.mode(requested),)
        return next((m for m in candidates if m.fits(capacity)), None)

    def table(self) -> list[dict[str, Any]]:
        return [{"mode": m.mode, "peak": m.peak, **{f"phase.{k}": v for k, v in m.phases.items()},
                 **{f"weights.{k}": v for k, v in m.weights.items()}} for m in self.modes]


class DeviceMemoryError(InvalidRequestError):
    """A shot that fits its device in no mode (or not in the mode asked for): refused before it renders."""

    def __init__(self, plan: MemoryPlan, requested: str, capacity: int | None,
                 smaller: tuple[int, int, str] | None):
        self.plan, self.requested, self.capacity = plan, requested, capacity
        leanest = min(plan.modes, key=lambda m: m.peak) if requested == "auto" else plan.mode(requested)
        fitting = [m.mode for m in plan.modes if m.fits(capacity)]
        s = plan.shape
        where = f"{s.width}x{s.height}x{s.frames}"
        fixes = []
        if fitting:
            fixes.append(f"--memory-mode {fitting[0]} ({format_bytes(plan.mode(fitting[0]).peak)})")
        if smaller:
            fixes.append(f"a smaller size such as {smaller[0]}x{smaller[1]} (in {smaller[2]} mode)")
        fixes.append("a device with more memory")
        self.needs = (f"needs {format_bytes(leanest.peak)} in {leanest.mode} mode"
                      f"{' (the leanest)' if requested == 'auto' else ''} but the device has "
                      f"{format_bytes(capacity or 0)}")
        self.fix = "would fit: " + ", or ".join(fixes)
        super().__init__("memory", where, f"{self.needs}; {self.fix}")


class MemoryPlanner:
    """Plans shots for one model folder at one render dtype; the meta builds are made once."""

    def __init__(self, model_dir: str | Path, dtype: str | torch.dtype = "bfloat16", manifest: Any = None):
        from .ledger import _DTYPES
        from .manifest import ModelManifest

        self.model_dir = Path(model_dir)
        self.manifest = manifest or ModelManifest.read(self.model_dir)
        self.dtype = dtype if isinstance(dtype, torch.dtype) else _DTYPES[dtype]
        self._weights: dict[MemoryMode, dict[str, int]] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._metas: dict[str, torch.nn.Module] = {}

    # ------------------------------------------------------------- weights
    def config(self, component: str) -> dict[str, Any]:
        if component not in self._configs:
            path = self.manifest.component_path(self.model_dir, component)
            folder = path.parent if path.is_file() else path
            cfg = folder / "config.json"
            self._configs[component] = json.loads(cfg.read_text()) if cfg.is_file() else {}
        return self._configs[component]

    def weights(self, mode: MemoryMode) -> dict[str, int]:
        """Bytes of each component on the device in `mode` (the tokenizer and scheduler hold none)."""
        storage: MemoryMode = "fp8" if mode == "fp8" else "resident"
        if storage not in self._weights:
            self._weights[storage] = {name: self._component_bytes(name, storage) for name in self._components()}
        if mode == "stream" and "stream" not in self._weights:
            streamed = dict(self._weights[storage])
            for name in STREAMED:
                if name in streamed and self.manifest.component_path(self.model_dir, name).is_dir():
                    streamed[name] = device_bytes(name, self._meta(name), "stream")
            self._weights["stream"] = streamed
        return dict(self._weights["stream" if mode == "stream" else storage])

    def _components(self) -> list[str]:
        names = ["transformer", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", "spatial_upsampler",
                 "temporal_upsampler"]
        return [n for n in names if n in self.manifest.components
                and self.manifest.component_path(self.model_dir, n).exists()]

    def _meta(self, component: str) -> torch.nn.Module:
        """The component built from its config on the meta device at the render dtype (once; callers that change
        it get a copy)."""
        if component not in self._metas:
            self._metas[component] = self._build_meta(component)
        return self._metas[component]

    def _build_meta(self, component: str) -> torch.nn.Module:
        from accelerate import init_empty_weights

        from .ledger import _FALLBACK_CLASS, _component_class

        path = self.manifest.component_path(self.model_dir, component)
        folder = path.parent if path.is_file() else path
        cls = _component_class(folder, _FALLBACK_CLASS[component])
        with init_empty_weights(include_buffers=True), warnings_quiet():
            return from_config(cls, component, folder, self.config(component), self.dtype)

    def _component_bytes(self, component: str, storage: MemoryMode) -> int:
        path = self.manifest.component_path(self.model_dir, component)
        if path.is_file() and not (path.parent / "config.json").is_file():
            return _header_bytes([path], self.dtype)
        module = self._meta(component)
        if storage != "resident":
            module = apply_storage(component, copy.deepcopy(module), storage, self.dtype)
        return module_bytes(module)

    def lora_bytes(self, files: Iterable[Path], ranks: Iterable[int] = ()) -> int:
        """The adapters peft adds for these LoRA files, at the render dtype (each file once), and for adapters of
        these ranks on every linear layer of the transformer's blocks (a LoRA planned before it is downloaded)."""
        total = _header_bytes(sorted({Path(f) for f in files if Path(f).is_file()}), self.dtype)
        ranks = tuple(ranks)
        if ranks:
            item = torch.empty((), dtype=self.dtype).element_size()
            per_rank = sum(m.in_features + m.out_features for name, m in self._meta("transformer").named_modules()
                           if isinstance(m, torch.nn.Linear) and "blocks." in name)
            total += sum(ranks) * per_rank * item
        return total

    # ------------------------------------------------------------- activations
    def activations(self, shape: ShotShape) -> dict[str, int]:
        """Estimated activation bytes of each phase (see the module docstring)."""
        t = self.config("transformer")
        te = self.config("text_encoder")
        text = te.get("text_config", te)
        item = torch.empty((), dtype=self.dtype).element_size()
        video_width = t.get("num_attention_heads", 32) * t.get("attention_head_dim", 128)
        audio_width = t.get("audio_num_attention_heads", 32) * t.get("audio_attention_head_dim", 64)
        lf = (shape.frames - 1) // 8 + 1
        audio_tokens = round(shape.frames / shape.fps * 25)

        def step(width: int, height: int, rows: int) -> int:
            tokens = lf * (height // 32) * (width // 32)
            per = tokens * video_width + audio_tokens * audio_width
            return rows * per * (BLOCK_ACTIVATIONS * item + ROPE_ACTIVATIONS * 4)

        half = (shape.width // 2, shape.height // 2)  # every recipe renders stage 1 at half size
        seq = self.manifest.max_sequence_length
        hidden = text.get("hidden_size", 3840)
        layers = text.get("num_hidden_layers", 48)
        # Gemma's every hidden state of the prompt and the negative prompt, kept for the connectors.
        encode = 2 * seq * hidden * (layers + 1) * item + 2 * seq * hidden * 8 * item
        vae = self.config("vae")
        channels = (vae.get("decoder_block_out_channels") or [256])[0]
        tile_frames = min(shape.frames, 80 + 24)
        tile_pixels = min(shape.height, 768) * min(shape.width, 768) // vae.get("patch_size", 4) ** 2
        latent = lf * (shape.height // 32) * (shape.width // 32) * t.get("in_channels", 128) * 4
        return {
            "encode": encode,
            "stage1": step(*half, shape.rows),
            "upsample": 4 * latent,
            "stage2": step(shape.width, shape.height, 1),
            "temporal": 8 * latent if shape.temporal else 0,
            "decode": DECODE_ACTIVATIONS * tile_frames * tile_pixels * channels * item + latent,
        }

    # ------------------------------------------------------------- the plan
    def choose(self, shape: ShotShape, requested: str, capacity: int | None) -> ModePlan:
        """The mode this shot renders in on a device with `capacity` bytes (`requested`: auto or a mode). Raises
        DeviceMemoryError naming what it needs, what the device has and what would fit."""
        quick = self.quick_resident(shape) if requested in ("auto", "resident") else None
        if quick is not None and quick.fits(capacity):
            return replace(quick, capacity=capacity)
        plan = self.plan(shape)
        chosen = plan.fitting(requested, capacity)
        if chosen is not None:
            if chosen.budget is not None and capacity is not None:  # weights may use all the activations leave
                chosen = replace(chosen, budget=capacity - max(plan.activations[p] for p in chosen.phases))
            return replace(chosen, capacity=capacity)
        raise DeviceMemoryError(plan, requested, capacity, self.largest_fitting(shape, requested, capacity))

    def quick_resident(self, shape: ShotShape) -> ModePlan:
        """`resident` counted from the weight files' headers (every parameter at the render dtype, buffers not
        included: a margin of QUICK_MARGIN covers them), no model built: when it fits, as it does on a large
        device, a render starts without the meta builds a full plan takes (a second or more a process)."""
        weights = {name: int(_header_bytes(weight_files(self.manifest.component_path(self.model_dir, name)),
                                           self.dtype) * QUICK_MARGIN) for name in self._components()}
        return _mode_plan("resident", weights, self.lora_bytes(shape.lora_files, shape.lora_ranks),
                          self.activations(shape), shape.temporal)

    def largest_fitting(self, shape: ShotShape, requested: str, capacity: int | None) -> tuple[int, int, str] | None:
        """The largest size at this shot's aspect (each side 0.8x a step) that fits, and its mode."""
        for _ in range(12):
            if shape.width <= 64 and shape.height <= 64:
                break
            shape = shape.smaller()
            chosen = self.plan(shape).fitting(requested, capacity)
            if chosen is not None:
                return shape.width, shape.height, chosen.mode
        return None

    def plan(self, shape: ShotShape) -> MemoryPlan:
        acts = self.activations(shape)
        loras = self.lora_bytes(shape.lora_files, shape.lora_ranks)
        plans = tuple(_mode_plan(mode, self.weights(mode), loras, acts, shape.temporal) for mode in MODES)
        return MemoryPlan(shape, str(self.dtype).removeprefix("torch."), plans, acts)


def _mode_plan(mode: MemoryMode, weights: dict[str, int], loras: int, acts: Mapping[str, int],
               temporal: bool) -> ModePlan:
    """A mode's peak from its weights: each phase holds its components (the transformer with its adapters) and its
    activations; `resident` holds every weight at once, the others the largest phase's (their budget)."""
    if loras:
        weights = {**weights, "loras": loras}
    phases = {phase: sum(weights.get(c, 0) for c in components) + (loras if "transformer" in components else 0)
              + acts[phase] for phase, components in PHASES.items() if phase != "temporal" or temporal}
    largest_act = max(acts[p] for p in phases)
    if mode == "resident":
        return ModePlan(mode, weights, phases, sum(weights.values()) + largest_act, None)
    peak = max(phases.values())
    return ModePlan(mode, weights, phases, peak, peak - largest_act)


# Bytes an element of each safetensors dtype takes.
DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_header(path: Path) -> dict[str, Any]:
    """A safetensors file's JSON header (each tensor's dtype, shape and offsets; `__metadata__`), weights unread."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        return json.loads(fh.read(size))


def weight_files(path: Path) -> list[Path]:
    """A component's weight files: the one file it is, or the safetensors in its folder."""
    return [path] if path.is_file() else sorted(path.glob("*.safetensors"))


def _header_bytes(files: Iterable[Path], dtype: torch.dtype) -> int:
    """Bytes of every floating tensor in these safetensors files at `dtype` (others at their own), from their
    headers alone."""
    item = torch.empty((), dtype=dtype).element_size()
    total = 0
    for path in files:
        for name, info in safetensors_header(path).items():
            if name != "__metadata__":
                own = DTYPE_BYTES.get(info["dtype"], 4)
                total += math.prod(info["shape"]) * (item if info["dtype"].startswith(("F", "BF")) else own)
    return total


@contextlib.contextmanager
def warnings_quiet():
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in ("diffusers", "transformers")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def device_capacity(device: str | torch.device, told: int | None = None) -> int | None:
    """What a device has for a render: told (`--device-memory`), else what it reports free (a GPU), else the host's
    available memory (None where it cannot be read)."""
    if told is not None:
        return told
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(dev)[0])
    return _available_host_memory()


def _available_host_memory() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None
