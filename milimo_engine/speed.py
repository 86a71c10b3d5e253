"""Speed-ups a render opts into: they change numerics (a fused LoRA rounds differently, another attention kernel
sums differently) or cost start-up time (compiling), so each is off unless asked for and recorded with the take.

- `attention`: diffusers' attention backend for the transformer (`native` is torch's SDPA, the default; `flash`,
  `_flash_3`, `sage`, `flex` where their package is installed). Backends that fetch kernels from a hub are refused:
  a render never downloads code.
- `compile`: `torch.compile` of the transformer's repeated blocks (diffusers' `compile_repeated_blocks`: one block
  compiled, reused by all 48).
- `fuse_distilled`: stage 2 with the distilled LoRA merged into the transformer's weights, as the official
  pipelines fuse it, instead of peft's side path; the base weights are copied to host memory first and restored
  exactly (bit for bit) after the stage, so stage 1 and the next shot see the weights as loaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InvalidRequestError

ATTENTION_BACKENDS = ("native", "flash", "_flash_3", "sage", "flex", "_native_math", "_native_efficient",
                      "_native_flash", "_native_cudnn")


@dataclass(frozen=True)
class SpeedOptions:
    attention: str = "native"
    compile: bool = False
    fuse_distilled: bool = False

    def check(self) -> None:
        """Refuse a backend diffusers does not have, one that downloads kernels, or one whose package is missing."""
        if self.attention not in ATTENTION_BACKENDS:
            raise InvalidRequestError("attention", self.attention, f"is not one of {list(ATTENTION_BACKENDS)} "
                                      "(hub backends download kernels; a render never fetches code)",
                                      nearest="native")
        from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

        try:
            _check_attention_backend_requirements(AttentionBackendName(self.attention))
        except RuntimeError as exc:
            raise InvalidRequestError("attention", self.attention, f"is not usable here: {exc}",
                                      nearest="native") from None

    def as_dict(self) -> dict[str, Any]:
        return {"attention": self.attention, "compile": self.compile, "fuse_distilled": self.fuse_distilled}


def apply_speed(transformer: Any, options: SpeedOptions) -> None:
    """Set a freshly built transformer's attention backend and compile its blocks, as `options` ask."""
    if options.attention != "native":
        import logging

        quiet = logging.getLogger("diffusers.models.modeling_utils")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "experimental feature" on every call
        try:
            transformer.set_attention_backend(options.attention)
        finally:
            quiet.setLevel(level)
    if options.compile:
        transformer.compile_repeated_blocks(fullgraph=False, dynamic=True)


@contextlib.contextmanager
def fused(transformer: torch.nn.Module, adapters: Sequence[str]) -> Iterator[None]:
    """The named active adapters merged into the base weights for the duration, then the base weights restored from
    a copy (not by subtracting the merge back: that would leave rounding in the weights)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in transformer.modules()
              if isinstance(m, BaseTunerLayer) and any(a in getattr(m, "lora_A", {}) for a in adapters)]
    saved = [(m, m.get_base_layer().weight.detach().to("cpu", copy=True)) for m in layers]
    try:
        for m in layers:
            m.merge(adapter_names=[a for a in adapters if a in m.lora_A])
        yield
    finally:
        for m, weight in saved:
            base = m.get_base_layer()
            base.weight.data.copy_(weight.to(base.weight.device))
            m.merged_adapters.clear()
