"""ModelLedger: who owns the weights, where they live, and what it cost to load them.

A long-lived GPU worker renders shot after shot; the ledger keeps each component warm
between shots, builds it on first use, and when a VRAM budget would be exceeded frees (CPU)
or offloads to host memory (GPU) the least recently used component first. It also owns the
transformer's LoRA adapters: per-stage sets are switched with peft, never merged, so the
base weights stay bit-identical however many shots and LoRAs pass through.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import MissingComponentError, OutOfMemoryBudgetError, UnsupportedDtypeError
from .hashing import file_sha256
from .limits import format_bytes
from .lora import LoraWeights, adapter_name, check_lora_fits, read_lora
from .manifest import REQUIRED_COMPONENTS, ModelManifest
from .memory import (
    RELEASED_AFTER,
    STREAMED,
    MemoryMode,
    MemoryPlanner,
    ModePlan,
    ShotShape,
    apply_storage,
    device_bytes,
    device_capacity,
    from_config,
    place,
    weight_files,
)
from .request import LoraSpec
from .speed import SpeedOptions, apply_speed, fused

# A ledger keeps several LoRA adapters on one transformer on purpose (each stage's set, switched with
# `set_adapters`); peft warns about exactly that on every adapter after the first.
warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning,
                        module="peft")

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class LoadEvent:
    component: str
    action: str  # "load", "evict", "offload", "restore", "release", "lora"
    bytes: int
    seconds: float
    at: float  # time.time()
    detail: str = ""


@dataclass(frozen=True)
class AppliedLora:
    """A LoRA as it was applied to a stage: what the store records with a take."""

    path: str
    sha256: str
    weight: float
    adapter: str
    source_format: str
    ignored: tuple[str, ...] = ()  # its keys for weights this transformer does not have (not applied)


@dataclass
class _Slot:
    module: Any
    bytes: int
    on_device: bool = True


def render_dtype(device: str, dtype: str = "auto") -> str:
    """The dtype a render runs at on `device`: bf16 on a GPU, float32 on a CPU, unless one is named."""
    return dtype if dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise UnsupportedDtypeError("dtype", dtype, f"is not one of {sorted(_DTYPES)}", nearest="bfloat16")
        dtype = _DTYPES[dtype]
    allowed = {torch.float32, torch.bfloat16} if device.type == "cpu" else {torch.float32, torch.bfloat16,
                                                                            torch.float16}
    if dtype not in allowed:
        raise UnsupportedDtypeError(
            "dtype", str(dtype).removeprefix("torch."),
            f"cannot run on {device.type}; supported there: {sorted(str(d).removeprefix('torch.') for d in allowed)}",
            nearest="float32" if device.type == "cpu" else "bfloat16")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UnsupportedDtypeError("dtype", "bfloat16", f"is not supported by {torch.cuda.get_device_name(device)}",
                                    nearest="float16")
    return dtype


def _component_class(folder: Path, fallback: str) -> Any:
    import diffusers
    import transformers
    from diffusers.pipelines import ltx2

    config_path = folder / "config.json"
    name = fallback
    if config_path.is_file():
        raw = json.loads(config_path.read_text())
        name = raw.get("_class_name") or (raw.get("architectures") or [fallback])[0]
    for namespace in (diffusers, ltx2, transformers):
        cls = getattr(namespace, name, None)
        if cls is not None:
            return cls
    from diffusers.pipelines.ltx2 import vocoder
    return getattr(vocoder, name)


def import_model_classes(model_dir: str | Path) -> None:
    """Import the class of each component of the model in `model_dir`, building nothing. diffusers' and
    transformers' modules are the slowest imports a render makes (~3-5 s on a CPU host, torch._dynamo and peft
    among them); `milimo render` makes them while its temporary Prefect server starts, not in the first shot."""
    root = Path(model_dir)
    manifest = ModelManifest.read(root)
    for component, fallback in _FALLBACK_CLASS.items():
        with contextlib.suppress(Exception):  # a component that cannot load says so when the shot loads it
            path = manifest.component_path(root, component)
            _component_class(path.parent if path.is_file() else path, fallback)


_FALLBACK_CLASS = {
    "transformer": "LTX2VideoTransformer3DModel", "vae": "AutoencoderKLLTX2Video",
    "audio_vae": "AutoencoderKLLTX2Audio", "vocoder": "LTX2Vocoder", "connectors": "LTX2TextConnectors",
    "text_encoder": "Gemma3ForConditionalGeneration", "spatial_upsampler": "LTX2LatentUpsamplerModel",
    "temporal_upsampler": "LTX2LatentUpsamplerModel",
}


def _keep_adapter_precision(transformer: torch.nn.Module, state: dict[str, torch.Tensor], adapter: str,
                            dtype: torch.dtype) -> None:
    """peft makes an adapter's layers in its base layer's dtype: float8 when that layer is stored as fp8. An adapter
    is small; it is kept at the render dtype, its values copied again from the file at that precision."""
    marker = f".{adapter}."
    for pname, param in transformer.named_parameters():
        if marker in pname and "lora_" in pname:
            key = "transformer." + pname.replace(marker, ".")
            value = state.get(key)
            param.data = (value if value is not None else param.data).to(device=param.device, dtype=dtype)


class ModelLedger:
    """Owns the weights of one LTX-2 model on one device. Thread-safe; one render at a time per ledger.

    Its memory mode (`milimo_engine.memory`) decides how the weights are stored and placed and what is released
    after each phase; `fit` chooses it per shot from the planner, and a component stored otherwise than the new
    mode wants is built again."""

    def __init__(self, model_dir: Path, manifest: ModelManifest, device: torch.device, dtype: torch.dtype,
                 vram_budget: int | None, memory_mode: MemoryMode = "resident", speed: SpeedOptions | None = None):
        self.model_dir = model_dir
        self.manifest = manifest
        self.device = device
        self.dtype = dtype
        self.vram_budget = vram_budget
        self.memory_mode: MemoryMode = memory_mode
        self.memory_plan: ModePlan | None = None  # the plan of the shot `fit` was last asked about
        self.random_seed: int | None = None  # set: components are built from their configs with random weights
        self.speed = speed or SpeedOptions()
        self.fused_last = False  # whether the last stage 2 ran with the distilled LoRA fused
        self._planner: MemoryPlanner | None = None
        self.events: list[LoadEvent] = []
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._adapters: dict[str, AppliedLora] = {}
        self._active: list[LoraSpec] = []  # the LoRA set asked for last: a rebuilt transformer gets it again
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, model_dir: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
             vram_budget: int | None = None, memory_mode: MemoryMode = "resident",
             speed: SpeedOptions | None = None) -> ModelLedger:
        """Check the folder (manifest, every required component) and return a ledger; loads nothing yet."""
        root = Path(model_dir)
        if not root.is_dir():
            raise MissingComponentError("model", root, "folder does not exist")
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UnsupportedDtypeError("device", str(dev), "CUDA is not available on this machine", nearest="cpu")
        resolved = resolve_dtype(dtype, dev)
        manifest = ModelManifest.read(root)
        for component in REQUIRED_COMPONENTS:
            path = manifest.component_path(root, component)
            if not path.exists():
                raise MissingComponentError(component, path)
            if path.is_dir() and component != "tokenizer" and not (path / "config.json").is_file():
                raise MissingComponentError(component, path / "config.json", "has no config.json")
        if manifest.distilled_lora and not (root / manifest.distilled_lora).is_file():
            raise MissingComponentError("distilled_lora", root / manifest.distilled_lora)
        manifest.check_stg_blocks(root)
        if speed is not None:
            speed.check()
        return cls(root, manifest, dev, resolved, vram_budget, memory_mode, speed)

    @classmethod
    def with_random_weights(cls, model_dir: str | Path, device: str | torch.device = "cpu",
                            dtype: str | torch.dtype = "float32", memory_mode: MemoryMode = "resident",
                            seed: int = 0) -> ModelLedger:
        """A ledger for a folder of configs (its tokenizer and LoRA files read as usual) whose components are built
        from their configs with random weights instead of read: `bench/gpu.py` at full size, where 70 GiB of random
        safetensors would be written only to be read back. The real model classes, placed by the memory mode."""
        ledger = cls.open(model_dir, device, dtype, memory_mode=memory_mode)
        ledger.random_seed = seed
        return ledger

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    # ---------------------------------------------------------------- accessors
    def tokenizer(self):
        return self._get("tokenizer")

    def text_encoder(self):
        return self._get("text_encoder")

    def connectors(self):
        return self._get("connectors")

    def transformer(self):
        return self._get("transformer")

    def video_encoder(self):
        """The video VAE (its encoder half is used); shares weights with `video_decoder()`."""
        return self._get("vae")

    def video_decoder(self):
        return self._get("vae")

    def audio_decoder(self):
        return self._get("audio_vae")

    def vocoder(self):
        return self._get("vocoder")

    def spatial_upsampler(self):
        return self._get("spatial_upsampler")

    def temporal_upsampler(self):
        return self._get("temporal_upsampler")

    def weights_sha256(self, component: str) -> str:
        """One hash for a component's weight files: what records name when "the same VAE" must be provable."""
        path = self.manifest.component_path(self.model_dir, component)
        files = weight_files(path)
        if not files:
            raise MissingComponentError(component, path, "has no .safetensors weights")
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.name}:{file_sha256(f)}\n".encode())
        return h.hexdigest()

    # ---------------------------------------------------------------- memory
    @property
    def planner(self) -> MemoryPlanner:
        if self._planner is None:
            self._planner = MemoryPlanner(self.model_dir, self.dtype, self.manifest)
        return self._planner

    def fit(self, request: Any, mode: str = "auto", device_memory: int | None = None) -> ModePlan:
        """Choose the memory mode this shot renders in (`mode`: auto or one of them) on this device (it has
        `device_memory` bytes when told, else what it reports free) and switch to it. Raises DeviceMemoryError
        before anything loads when the shot fits in no mode (or not in the one asked for)."""
        capacity = device_capacity(self.device, device_memory)
        if device_memory is None and capacity is not None:
            capacity += self.resident_bytes()  # what this ledger holds now is the device's to give back
        plan = self.planner.choose(ShotShape.of(request, self.manifest, self.model_dir), mode, capacity)
        self.use_memory_mode(plan.mode, plan.budget)
        self.memory_plan = plan
        return plan

    def use_memory_mode(self, mode: MemoryMode, budget: int | None) -> None:
        """Switch modes: a component stored or placed otherwise in the new mode is dropped (built again when
        asked for), and the budget applies from the next load."""
        with self._lock:
            if mode != self.memory_mode and {mode, self.memory_mode} & {"fp8", "stream"}:
                for name in ("transformer", "text_encoder"):  # the components fp8 stores and stream places
                    if name in self._slots:
                        del self._slots[name]
                        if name == "transformer":
                            self._adapters.clear()
                        self._event(name, "evict", 0, 0.0, f"memory mode {self.memory_mode} -> {mode}")
            self.memory_mode = mode
            self.vram_budget = budget
            self._make_room(0, keep="")

    def _streamed(self, component: str) -> bool:
        """Streamed, a component lives in host memory already: nothing to offload or release."""
        return self.memory_mode == "stream" and component in STREAMED

    def phase_done(self, phase: str) -> None:
        """A render phase ended: outside `resident`, release what only it needed (the text encoder and connectors
        after encoding, an upsampler after upsampling), as the official pipelines free each model per stage."""
        if self.memory_mode == "resident":
            return
        with self._lock:
            for name in RELEASED_AFTER.get(phase, ()):
                slot = self._slots.get(name)
                if slot is not None and slot.on_device and not self._streamed(name):
                    self._free(name, "release", "released after " + phase)

    # ---------------------------------------------------------------- reporting
    def loaded(self) -> dict[str, int]:
        """Components resident on the device now, with their bytes."""
        with self._lock:
            return {name: slot.bytes for name, slot in self._slots.items() if slot.on_device}

    def resident_bytes(self) -> int:
        return sum(self.loaded().values())

    def load_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.events:
            if e.action == "load":
                counts[e.component] = counts.get(e.component, 0) + 1
        return counts

    def report(self) -> list[dict[str, Any]]:
        return [e.__dict__.copy() for e in self.events]

    # ---------------------------------------------------------------- loading
    def _get(self, component: str):
        with self._lock:
            slot = self._slots.get(component)
            if slot is not None:
                self._slots.move_to_end(component)
                if not slot.on_device:
                    self._make_room(slot.bytes, keep=component)
                    t0 = time.perf_counter()
                    place(component, slot.module, self.memory_mode, self.device)
                    slot.on_device = True
                    self._event(component, "restore", slot.bytes, time.perf_counter() - t0)
                return slot.module
            path = self.manifest.component_path(self.model_dir, component)
            if not path.exists():
                raise MissingComponentError(component, path)
            self._make_room(self._incoming_bytes(component, path), keep=component)
            t0 = time.perf_counter()
            module = self._build(component, path)
            size = device_bytes(component, module, self.memory_mode)
            self._slots[component] = _Slot(module, size)
            self._event(component, "load", size, time.perf_counter() - t0, str(path))
            if component == "transformer" and self._active:
                self._apply_loras(module, self._active)  # evicted and built again: the same adapters as before
            return module

    def _build(self, component: str, path: Path):
        if component == "tokenizer":
            from transformers import AutoTokenizer
            return AutoTokenizer.from_pretrained(path)
        if self.random_seed is not None:
            module = self._build_random(component, path)
        elif path.is_file() and path.suffix == ".safetensors":
            cls = _component_class(path.parent, _FALLBACK_CLASS[component])
            module = cls.from_single_file(str(path), torch_dtype=self.dtype)
        else:
            cls = _component_class(path, _FALLBACK_CLASS[component])
            kwargs: dict[str, Any] = {"torch_dtype": self.dtype}
            if component == "text_encoder":
                kwargs = {"dtype": self.dtype}
            module = cls.from_pretrained(path, **kwargs)
        return self._stored_and_placed(component, module)

    def _stored_and_placed(self, component: str, module: Any) -> Any:
        module = apply_storage(component, module.eval().requires_grad_(False), self.memory_mode, self.dtype)
        module = place(component, module, self.memory_mode, self.device)
        if component == "transformer":
            apply_speed(module, self.speed)
        return module

    def _build_random(self, component: str, path: Path) -> Any:
        """The component from its config alone, its weights drawn at random (seeded), made where it will live."""
        folder = path.parent if path.is_file() else path
        cls = _component_class(folder, _FALLBACK_CLASS[component])
        where = self.device
        if self._streamed(component) and (self.device.type != "cuda" or torch.cuda.mem_get_info(self.device)[0]
                                          < 1.2 * self.planner.weights("resident").get(component, 0)):
            where = torch.device("cpu")  # drawn where it fits (drawing on the GPU is far faster), kept on the host
        torch.manual_seed((self.random_seed or 0) + sorted(_FALLBACK_CLASS).index(component))
        previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            with torch.device(where):
                return from_config(cls, component, folder, self.planner.config(component), self.dtype)
        finally:
            torch.set_default_dtype(previous)

    def _incoming_bytes(self, component: str, path: Path) -> int:
        """What a component will hold once built: the planner's count in this mode, when a budget asks."""
        if self.vram_budget is None or component == "tokenizer":
            return 0
        return self.planner.weights(self.memory_mode).get(component, 0)

    def _make_room(self, incoming: int, keep: str) -> None:
        if self.vram_budget is None:
            return
        for name in list(self._slots):
            if self.resident_bytes() + incoming <= self.vram_budget:
                return
            slot = self._slots[name]
            if name == keep or not slot.on_device or slot.bytes == 0 or self._streamed(name):
                continue
            self._free(name, "evict")
        if keep and self.resident_bytes() + incoming > self.vram_budget:
            raise OutOfMemoryBudgetError(
                keep, f"{format_bytes(incoming)} with {format_bytes(self.resident_bytes())} kept",
                f"the {self.memory_mode} mode's budget on {self.device} is {format_bytes(self.vram_budget)}",
                nearest="--memory-mode stream")

    def _free(self, name: str, cpu_action: str, detail: str = "") -> None:
        """Take a component off the device: dropped on a CPU (`cpu_action`; built again when asked for), moved to
        host memory from a GPU ("offload"; moved back when asked for)."""
        slot = self._slots[name]
        t0 = time.perf_counter()
        if self.device.type == "cpu":
            del self._slots[name]
            if name == "transformer":
                self._adapters.clear()
            self._event(name, cpu_action, slot.bytes, time.perf_counter() - t0, detail)
        else:
            slot.module.to("cpu")
            slot.on_device = False
            self._event(name, "offload", slot.bytes, time.perf_counter() - t0, detail)
            torch.cuda.empty_cache()

    def _event(self, component: str, action: str, size: int, seconds: float, detail: str = "") -> None:
        self.events.append(LoadEvent(component, action, size, seconds, time.time(), detail))
        log.debug("%s %s: %d bytes in %.3fs %s", action, component, size, seconds, detail)

    # ---------------------------------------------------------------- LoRAs
    def resolve_lora_path(self, path: str | Path) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.model_dir / p

    def distilled_lora(self) -> LoraSpec | None:
        rel = self.manifest.distilled_lora
        return LoraSpec(self.model_dir / rel, self.manifest.distilled_lora_strength) if rel else None

    def use_loras(self, loras: Sequence[LoraSpec]) -> list[AppliedLora]:
        """Make exactly `loras` active on the transformer (an empty list: the base model alone). The set stays
        active when a memory budget evicts the transformer and it is built again."""
        with self._lock:
            self._active = list(loras)
            return self._apply_loras(self.transformer(), self._active)

    def _apply_loras(self, transformer, loras: Sequence[LoraSpec]) -> list[AppliedLora]:
        with self._lock:
            applied: list[AppliedLora] = []
            for spec in loras:
                weights = read_lora(self.resolve_lora_path(spec.path))
                name = adapter_name(weights.sha256)
                if name not in self._adapters:
                    self._load_adapter(transformer, weights, name)
                base = self._adapters[name]
                applied.append(AppliedLora(str(spec.path), base.sha256, float(spec.weight), name,
                                           base.source_format, base.ignored))
            if applied:
                names = [a.adapter for a in applied]
                if len(set(names)) != len(names):
                    merged: dict[str, float] = {}
                    for a in applied:
                        merged[a.adapter] = merged.get(a.adapter, 0.0) + a.weight
                    transformer.set_adapters(list(merged), list(merged.values()))
                else:
                    transformer.set_adapters(names, [a.weight for a in applied])
                transformer.enable_lora()
            elif self._adapters:
                transformer.disable_lora()
            return applied

    def _load_adapter(self, transformer, weights: LoraWeights, name: str) -> None:
        weights = check_lora_fits(weights, transformer)
        if weights.ignored:
            log.warning("LoRA %s: %d key(s) for weights this transformer does not have are ignored (as ltx-core "
                        "ignores them), e.g. %s", weights.path.name, len(weights.ignored), list(weights.ignored[:3]))
        t0 = time.perf_counter()
        state = {f"transformer.{k}": v.to(self.dtype) for k, v in weights.state_dict.items()}
        transformer.load_lora_adapter(state, prefix="transformer", adapter_name=name)
        if self.memory_mode == "fp8":
            _keep_adapter_precision(transformer, state, name, self.dtype)
        if self.memory_mode != "stream":  # streamed, diffusers applies its offloading to the new layers itself
            transformer.to(self.device)
        slot = self._slots.get("transformer")
        if slot is not None:  # the adapters count in the budget
            slot.bytes = device_bytes("transformer", transformer, self.memory_mode)
        self._adapters[name] = AppliedLora(str(weights.path), weights.sha256, 1.0, name, weights.source_format,
                                           weights.ignored)
        self._event("transformer", "lora", sum(v.numel() * v.element_size() for v in state.values()),
                    time.perf_counter() - t0, f"{weights.path.name} as {name}")

    def fused_distilled(self, applied: Sequence[AppliedLora]) -> contextlib.AbstractContextManager[None]:
        """Stage 2 with the distilled LoRA merged into the weights (`SpeedOptions.fuse_distilled`), the base
        weights restored exactly after; where the weights are stored as fp8 or streamed, the adapter path."""
        distilled = self.distilled_lora()
        names = [a.adapter for a in applied if distilled is not None and Path(a.path) == Path(distilled.path)]
        self.fused_last = bool(self.speed.fuse_distilled and names and self.memory_mode in ("resident", "release"))
        return fused(self.transformer(), names) if self.fused_last else contextlib.nullcontext()

    def close(self) -> None:
        with self._lock:
            self._slots.clear()
            self._adapters.clear()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
