"""ICLoraPipeline: video-to-video control with an in-context LoRA, as `ltx_pipelines/ic_lora.py` does it.

The reference video (pose, depth, edges, a rough cut...) is encoded and its tokens appended
after the generated ones, at the generated video's positions and at timestep 0, so the
LoRA (trained this way) can follow it; a LoRA trained on scaled references says so in its
metadata and the reference is scaled the same way. Both stages run the distilled recipe,
unguided: stage 1 on the distilled sigmas with the IC-LoRA (and the shot's LoRAs), stage 2
on the bare distilled model. The IC-LoRA is switched on only for this pipeline's stage 1;
the ledger's other renders never see it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .conditioning import load_rgb
from .denoise import StepCallback
from .errors import InvalidConditionError
from .in_context import InContext
from .ledger import ModelLedger
from .media import read_frames
from .pipeline import TwoStagePipeline
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
        return self.two_stage.run(request, callback_on_step_end=callback_on_step_end, output_type=output_type,
                                  time_limit_s=time_limit_s, in_context=self.in_context(reference_video, ic_lora))

    @staticmethod
    def in_context(reference_video, ic_lora: LoraSpec | str | os.PathLike) -> InContext:
        """The reference (a file or frames) and the IC-LoRA with the scales its metadata names."""
        lora = ic_lora if isinstance(ic_lora, LoraSpec) else LoraSpec(Path(ic_lora), 1.0)
        downscale, temporal = reference_scales(lora.path)
        return InContext(reference_frames(reference_video), lora, downscale=downscale, temporal=temporal)


def reference_scales(path) -> tuple[int, int]:
    """(reference_downscale_factor, reference_temporal_scale_factor) from the IC-LoRA's safetensors metadata,
    1 where absent: IC-LoRAs trained on scaled references say so there (`ltx_pipelines/iclora_utils.py`)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own types for a damaged header
        raise InvalidConditionError("ic_lora", str(path), f"is not a readable safetensors file ({exc})") from exc
    out = []
    for key in ("reference_downscale_factor", "reference_temporal_scale_factor"):
        try:
            value = int(meta.get(key, 1))
        except ValueError:
            value = 0
        if value < 1:
            raise InvalidConditionError("ic_lora", str(path), f"metadata {key}={meta.get(key)!r} is not a whole "
                                        "number of 1 or more")
        out.append(value)
    return out[0], out[1]


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
        pictures = [load_rgb(f, "reference_video") for f in source]
        frames = np.stack(pictures) if pictures else np.empty((0,), np.uint8)
    if len(frames) == 0:
        raise InvalidConditionError("reference_video", "0 frames", "holds no frames")
    return frames
