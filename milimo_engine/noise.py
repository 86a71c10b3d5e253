"""The shot's noise, drawn as ltx-core's `GaussianNoiser` draws it, and the trace seam the parity tests read.

One CPU generator per shot, seeded with its seed; per stage one draw over the whole video state (generated,
keyframe and reference tokens, packed), then one over its audio: the same seed gives the official noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .components.latents import unpack_video
from .components.noisers import gaussian_noise
from .conditioning import StageConditioning
from .denoise import LatentGrid

Trace = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StageLatents:
    """Packed, normalised latents between stages, with their grid."""

    video: torch.Tensor
    audio: torch.Tensor
    grid: LatentGrid


class NoiseDraws:
    """The shot's noise, drawn in the official order: per stage the whole video state (generated, keyframe and
    reference tokens, packed), then the audio; recorded into `trace` as drawn."""

    def __init__(self, generator: torch.Generator, device: torch.device, trace: Trace | None):
        self.generator, self.device, self.trace = generator, device, trace
        self.count = 0

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        noise = gaussian_noise(shape, self.generator, self.device)
        if self.trace is not None:
            self.trace[f"noise.{self.count}"] = noise
        self.count += 1
        return noise

    def state(self, stage: str, conditioning: StageConditioning, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The stage's noised starting state (`GaussianNoiser` at `sigma`): video then audio."""
        video, audio = conditioning.video, conditioning.audio
        assert video is not None and audio is not None
        reference = conditioning.appended.tokens.shape[1] if conditioning.appended is not None else 0
        video_noise = self.draw((1, video.clean.shape[1] + reference, video.clean.shape[2]))
        audio_noise = self.draw(tuple(audio.clean.shape))
        return video.start(video_noise[:, : video.clean.shape[1]], sigma), audio.start(audio_noise, sigma)


def trace_stage(trace: Trace | None, name: str, s: StageLatents) -> None:
    if trace is not None:
        trace[f"{name}.video"] = unpack_video(s.video, s.grid.frames, s.grid.height, s.grid.width)
        trace[f"{name}.audio"] = s.audio
