"""Guidance: how several transformer predictions combine into one denoised estimate.

Guidance is computed on x0 (denoised) estimates with the "delta" formulation, which lets
classifier-free, spatio-temporal (STG) and modality-isolation terms add up independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..request import Guidance


@dataclass(frozen=True)
class Predictions:
    """x0 estimates for one step; absent passes are None."""

    cond: tuple[torch.Tensor, torch.Tensor]
    uncond: tuple[torch.Tensor, torch.Tensor] | None = None
    perturbed: tuple[torch.Tensor, torch.Tensor] | None = None
    isolated: tuple[torch.Tensor, torch.Tensor] | None = None


class Guider(Protocol):
    @property
    def wants_uncond(self) -> bool: ...
    @property
    def wants_perturbed(self) -> bool: ...
    @property
    def wants_isolated(self) -> bool: ...
    @property
    def perturbed_blocks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(video, audio): the blocks whose self-attention the STG row skips, per stream; () where that
        stream's STG is off."""

    def combine(self, p: Predictions) -> tuple[torch.Tensor, torch.Tensor]:
        """(video x0, audio x0) after guidance."""


def rescale(guided: torch.Tensor, cond: torch.Tensor, factor: float) -> torch.Tensor:
    """Pull the guided estimate's std back towards the conditional one (reduces over-saturation)."""
    std_cond = cond.std(dim=list(range(1, cond.ndim)), keepdim=True)
    std_guided = guided.std(dim=list(range(1, guided.ndim)), keepdim=True)
    return factor * (guided * (std_cond / std_guided)) + (1 - factor) * guided


class NoGuider:
    """Stage 2 (distilled): the conditional prediction alone."""

    wants_uncond = wants_perturbed = wants_isolated = False
    perturbed_blocks: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())

    def combine(self, p: Predictions) -> tuple[torch.Tensor, torch.Tensor]:
        return p.cond


class MultiModalGuider:
    """CFG + STG + modality isolation with per-modality scales, STG blocks and guidance rescale
    (ltx-core's `MultiModalGuider`, one `MultiModalGuiderParams` per stream)."""

    def __init__(self, guidance: Guidance, video_stg_blocks: tuple[int, ...], audio_stg_blocks: tuple[int, ...]):
        self.g = guidance
        # As ltx-core builds the perturbed pass: a stream's self-attention is skipped only when its own STG is on.
        self.perturbed_blocks = (tuple(video_stg_blocks) if guidance.video.wants_perturbed else (),
                                 tuple(audio_stg_blocks) if guidance.audio.wants_perturbed else ())

    @property
    def wants_uncond(self) -> bool:
        return any(s.wants_uncond for s in self.g.streams)

    @property
    def wants_perturbed(self) -> bool:
        return any(self.perturbed_blocks)

    @property
    def wants_isolated(self) -> bool:
        return any(s.wants_isolated for s in self.g.streams)

    def combine(self, p: Predictions) -> tuple[torch.Tensor, torch.Tensor]:
        out = []
        for m, stream in enumerate(self.g.streams):
            cfg, stg, mod, resc = stream.cfg, stream.stg, stream.modality, stream.rescale
            cond = p.cond[m]
            guided = cond
            if p.uncond is not None:
                guided = guided + (cfg - 1) * (cond - p.uncond[m])
            if p.perturbed is not None:
                guided = guided + stg * (cond - p.perturbed[m])
            if p.isolated is not None:
                guided = guided + (mod - 1) * (cond - p.isolated[m])
            out.append(rescale(guided, cond, resc) if resc > 0 else guided)
        return out[0], out[1]
