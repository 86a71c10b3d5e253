"""ICLoraPipeline: video-to-video control with an in-context LoRA.

The reference video (pose, depth, edges, a rough cut...) is encoded and its tokens appended
after the generated ones, at the generated video's positions and at timestep 0, so the
LoRA (trained this way) can follow it. Stage 1 sees the reference with the IC-LoRA active;
stage 2 refines with the distilled LoRA alone, as in the two-stage recipe. The IC-LoRA is
switched on only for this pipeline's stage 1; the ledger's other renders never see it.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch

from .conditioning import load_rgb
from .denoise import StepCallback
from .errors import InvalidConditionError
from .ledger import ModelLedger
from .media import read_frames
from .pipeline import InContext, TwoStagePipeline
from .request import LoraSpec, ShotRequest
from .result import ShotResult




class ICLoraPipeline:
    def __init__(self, ledger: ModelLedger, *, progress: bool | None = None):
        self.ledger = ledger
        self.two_stage = TwoStagePipeline(ledger, progress=progress)

    @torch.no_grad()
    def __call__(self, request: ShotRequest, *, reference_video, ic_lora: LoraSpec | str | os.PathLike,
                 callback_on_step_end: StepCallback | None = None, output_type: Literal["np", "latent"] = "np",
                 time_limit_s: float | None = None) -> ShotResult:
        lora = ic_lora if isinstance(ic_lora, LoraSpec) else LoraSpec(ic_lora, 1.0)
        frames = reference_frames(reference_video)
        return self.two_stage.run(request, callback_on_step_end=callback_on_step_end, output_type=output_type,
                                  time_limit_s=time_limit_s, in_context=InContext(frames, lora))


def reference_frames(source) -> np.ndarray:
    """A reference video as uint8 [F, H, W, 3]: a video file, or frames (an array or a list of images)."""
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise InvalidConditionError("reference_video", str(source), "no such video file")
        try:
            frames = read_frames(source)
        except Exception as exc:  # ffmpeg's message says what is wrong with the file
            raise InvalidConditionError("reference_video", str(source), f"cannot be decoded ({exc})") from exc
    else:  # an array [F, H, W, C] or any sequence of images
        frames = [load_rgb(f, "reference_video") for f in source]
        frames = np.stack(frames) if frames else np.empty((0,), np.uint8)
    if len(frames) == 0:
        raise InvalidConditionError("reference_video", "0 frames", "holds no frames")
    return frames
