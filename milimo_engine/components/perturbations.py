"""Perturbed guidance rows: which attention a row of the batched forward skips.

ltx-core perturbs inside its own `Attention` (`ltx_core/model/transformer/attention.py`): a row marked for
spatio-temporal guidance (STG) passes the value projection through instead of attending
(`out * mask + v * (1 - mask)`), in the video self-attention of the video stream's `stg_blocks` and the audio
self-attention of the audio stream's (`Perturbation(SKIP_VIDEO_SELF_ATTN | SKIP_AUDIO_SELF_ATTN, blocks)`, one
list per stream). Modality isolation skips the audio<->video cross-attention of every block.

diffusers has one block list for both streams, and perturbs only when the checkpoint's config sets
`perturbed_attn`; without it STG silently does nothing. So we do not go through diffusers' STG arguments: a
pre-hook on each self-attention hands diffusers' own `LTX2PerturbedAttnProcessor` a per-row mask for the blocks
of its stream, whatever the config says, and a forward hook zeroes the cross-modal attention of isolated rows.
With nothing active the hooks change nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

_STATE = "_milimo_perturbation"
_HOOKED = "_milimo_perturbation_hooked"


@dataclass(frozen=True)
class RowPerturbation:
    """What one forward's rows skip. `stg_rows[i] == 0`: row i is the STG row (value pass-through in the
    self-attention of `video_blocks` / `audio_blocks`); `isolation_rows[i] == 0`: row i sees no
    audio<->video cross-attention. None: no row does."""

    video_blocks: frozenset[int] = frozenset()
    audio_blocks: frozenset[int] = frozenset()
    stg_rows: torch.Tensor | None = None
    isolation_rows: torch.Tensor | None = None
    every_row_stg: bool = False  # ltx-core's `all_perturbed`: perturbed blocks skip the query/key path entirely

    def stg_mask(self, stream: str, block: int) -> torch.Tensor | None:
        blocks = self.video_blocks if stream == "video" else self.audio_blocks
        return self.stg_rows if self.stg_rows is not None and block in blocks else None


def self_attentions(transformer) -> list[tuple[str, int, Any]]:
    """(stream, block index, module) for every video and audio self-attention."""
    found = []
    for index, block in enumerate(getattr(transformer, "transformer_blocks", [])):
        for stream, name in (("video", "attn1"), ("audio", "audio_attn1")):
            module = getattr(block, name, None)
            if module is not None:
                found.append((stream, index, module))
    return found


def cross_modal_attentions(transformer) -> list[torch.nn.Module]:
    return [m for block in getattr(transformer, "transformer_blocks", [])
            for m in (getattr(block, "audio_to_video_attn", None), getattr(block, "video_to_audio_attn", None))
            if m is not None]


def install_hooks(transformer) -> None:
    """Once per transformer: the perturbation-capable processor and the hooks that read the active state."""
    if getattr(transformer, _HOOKED, False):
        return
    from diffusers.models.transformers.transformer_ltx2 import LTX2PerturbedAttnProcessor

    def stg_hook(stream: str, block: int):
        def hook(module, args, kwargs):
            state: RowPerturbation | None = getattr(transformer, _STATE, None)
            mask = state.stg_mask(stream, block) if state is not None else None
            if mask is None:
                return None
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            kwargs["perturbation_mask"] = mask.view(-1, 1, 1).to(hidden.dtype)
            kwargs["all_perturbed"] = state.every_row_stg
            return args, kwargs
        return hook

    def isolation_hook(module, args, output):
        state: RowPerturbation | None = getattr(transformer, _STATE, None)
        rows = state.isolation_rows if state is not None else None
        return output if rows is None else output * rows.view(-1, *([1] * (output.ndim - 1))).to(output.dtype)

    for stream, block, module in self_attentions(transformer):
        if not isinstance(module.processor, LTX2PerturbedAttnProcessor):
            # The same attention when no mask is given; it also knows the value pass-through. An attention
            # backend chosen on the old processor (`set_attention_backend`) carries over.
            processor = LTX2PerturbedAttnProcessor()
            for setting in ("_attention_backend", "_parallel_config"):
                if setting in vars(module.processor):
                    setattr(processor, setting, getattr(module.processor, setting))
            module.set_processor(processor)
        module.register_forward_pre_hook(stg_hook(stream, block), with_kwargs=True)
    for module in cross_modal_attentions(transformer):
        module.register_forward_hook(isolation_hook)
    setattr(transformer, _HOOKED, True)


@contextlib.contextmanager
def perturbing(transformer, perturbation: RowPerturbation | None):
    """Run the forwards inside with `perturbation` applied (the hooks are installed once per transformer)."""
    if perturbation is None or (perturbation.stg_rows is None and perturbation.isolation_rows is None):
        yield
        return
    install_hooks(transformer)
    setattr(transformer, _STATE, perturbation)
    try:
        yield
    finally:
        setattr(transformer, _STATE, None)
