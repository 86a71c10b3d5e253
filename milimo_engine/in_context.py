"""In-context conditioning (IC-LoRA): a reference video seen by a LoRA trained to follow it, as clean tokens
appended to the generated video's (ltx-core's `VideoConditionByReferenceLatent`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import frames as fr
from .codec import Codec, cover_resize
from .components.latents import VideoNorm, pack_video
from .conditioning import AppendedTokens
from .denoise import LatentGrid
from .errors import InvalidConditionError
from .request import LoraSpec, ShotRequest


@dataclass(frozen=True)
class InContext:
    """IC-LoRA conditioning: a reference video seen in context by a LoRA trained to follow it."""

    frames: np.ndarray  # uint8 [F, H, W, 3]
    lora: LoraSpec
    downscale: int = 1  # the LoRA's reference_downscale_factor (safetensors metadata)
    temporal: int = 1  # its reference_temporal_scale_factor


def reference_tokens(codec: Codec, in_context: InContext, request: ShotRequest, grid: LatentGrid) -> AppendedTokens:
    """The reference video as clean tokens at the generated video's positions, at stage-1 size divided by the
    LoRA's `reference_downscale_factor` (`VideoConditionByReferenceLatent`), its positions scaled back up so it
    spans the shot. A `reference_temporal_scale_factor` S keeps frames 0, 1, 1+S, 1+2S... (the first latent
    frame is one pixel frame), its time shifted by -(S-1)/fps so the kept frames line up with the shot's."""
    led = codec.ledger
    d, t = in_context.downscale, in_context.temporal
    if grid.height % d or grid.width % d:
        raise InvalidConditionError(
            "ic_lora", d, f"the IC-LoRA's reference_downscale_factor {d} does not divide the stage-1 latent "
            f"grid {grid.width}x{grid.height}; use a size whose half is a multiple of {32 * d}")
    source = in_context.frames[:request.render_frames]
    frames = source if t == 1 else np.concatenate([source[:1], source[1::t]])
    frames = frames[:fr.largest_valid_length(len(frames))]
    ratio = codec.spatial_ratio
    width, height = grid.width * ratio // d, grid.height * ratio // d
    raw = codec.encode_pixels(np.stack([cover_resize(f, width, height) for f in frames]))
    tokens = pack_video(VideoNorm.of(led.video_decoder()).normalize(raw))
    coords = led.transformer().rope.prepare_video_coords(1, raw.shape[2], raw.shape[3], raw.shape[4], led.device,
                                                         fps=request.fps)
    if t != 1:
        coords[:, 0] = (coords[:, 0] * t - (t - 1) / request.fps).clamp(min=0)
    coords[:, 0] = coords[:, 0] + request.overlap_frames / request.fps  # a handoff shifts the shot's time
    coords[:, 1:] = coords[:, 1:] * d
    return AppendedTokens(tokens, coords)
