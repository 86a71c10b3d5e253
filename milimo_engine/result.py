"""What a shot render returns: pictures, sound, the latents that made them, and timings."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .handoff import Handoff
from .ledger import AppliedLora
from .media import write_mov, write_mp4
from .request import ShotRequest


@dataclass
class ShotResult:
    request: ShotRequest
    frames: np.ndarray | None  # uint8 [F, H, W, 3]; None for output_type="latent"
    audio: np.ndarray | None  # float32 [channels, samples]
    sample_rate: int
    fps: float  # doubled when temporal upsampling ran
    latent: torch.Tensor  # final video latent [1, C, F, H, W], VAE space (denormalised)
    audio_latent: torch.Tensor  # final audio latent [1, C, L, M], VAE space
    stage1_latent: torch.Tensor  # stage-1 video latent at half size, VAE space
    rendered_frames: int  # the valid LTX-2 length rendered before trimming
    timings: dict[str, float] = field(default_factory=dict)
    loras: dict[str, list[AppliedLora]] = field(default_factory=dict)  # per stage
    model_id: str = ""
    overlap_frames: int = 0  # rendered frames dropped from the front (the incoming handoff's overlap)
    segments: int = 1
    segment_starts: tuple[int, ...] = ()  # delivered frame where each segment after the first begins (seam QA)
    recipe: str = ""  # which recipe rendered it ("" = the request's own)
    handoff_factory: Callable[[], Handoff | None] | None = field(default=None, repr=False, compare=False)
    _handoff: Handoff | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def handoff(self) -> Handoff | None:
        """The handoff for the next shot, built from the last frames this shot delivered.

        Built on first use (two VAE encodes, and a decode for output_type="latent"), so the last
        shot of a chain, which nobody continues, does not pay for it. None when the shot
        produces none (`handoff_m=0`, or fewer than 9 frames).
        """
        if self._handoff is None and self.handoff_factory is not None:
            t0 = time.perf_counter()
            self._handoff = self.handoff_factory()
            self.timings["handoff"] = time.perf_counter() - t0
            self.handoff_factory = None
        return self._handoff

    @property
    def num_frames(self) -> int:
        return 0 if self.frames is None else int(self.frames.shape[0])

    def save_mp4(self, path: str | os.PathLike, crf: int = 18, *, timecode: str | None = None,
                 tags: dict[str, str] | None = None) -> Path:
        """H.264 + 48 kHz AAC; `timecode` and `tags` (reel_name, title) let an editor relink the file."""
        if self.frames is None:
            raise ValueError("this result has no frames (output_type='latent'); decode it first")
        return write_mp4(path, self.frames, self.fps, self.audio, self.sample_rate, crf=crf, timecode=timecode,
                         tags=tags)

    def save_mov(self, path: str | os.PathLike, *, timecode: str, reel: str,
                 tags: dict[str, str] | None = None) -> Path:
        """The take to conform: ProRes in QuickTime with a timecode track naming `reel` (`media.write_mov`)."""
        if self.frames is None:
            raise ValueError("this result has no frames (output_type='latent'); decode it first")
        return write_mov(path, self.frames, self.fps, self.audio, self.sample_rate, timecode=timecode, reel=reel,
                         tags=tags)

    def summary(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "recipe": self.recipe or self.request.recipe,
            "frames": self.num_frames,
            "rendered_frames": self.rendered_frames,
            "fps": self.fps,
            "sample_rate": self.sample_rate,
            "audio_samples": 0 if self.audio is None else int(self.audio.shape[-1]),
            "latent_shape": list(self.latent.shape),
            "overlap_frames": self.overlap_frames,
            "segments": self.segments,
            "segment_starts": list(self.segment_starts),
            "handoff_sha256": self._handoff.sha256() if self._handoff is not None else None,
            "timings": dict(self.timings),
            "loras": {stage: [a.__dict__ for a in applied] for stage, applied in self.loras.items()},
        }
