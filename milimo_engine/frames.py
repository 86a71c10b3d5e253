"""LTX-2's frame and size arithmetic, in one place.

The causal video VAE maps pixel frame 0 to latent frame 0 and every following 8 pixel
frames to one latent frame, so valid lengths are 8k+1. Spatially it compresses by 32; the
two-stage method renders stage 1 at half size, so full sizes must be multiples of 64.
"""

from __future__ import annotations

from .limits import SIZE_STEP as TWO_STAGE_SIZE_STEP  # noqa: F401 - re-exported
from .limits import SPATIAL_RATIO, TEMPORAL_RATIO  # noqa: F401 - re-exported


def render_length(num_frames: int, temporal_ratio: int = TEMPORAL_RATIO) -> int:
    """The smallest valid (8k+1) length that covers `num_frames`; the excess is trimmed later."""
    if num_frames <= 1:
        return 1
    return ((num_frames - 2) // temporal_ratio + 1) * temporal_ratio + 1


def latent_frames(num_frames: int, temporal_ratio: int = TEMPORAL_RATIO) -> int:
    """Latent frames for a valid pixel length (first latent frame = one pixel frame)."""
    return (num_frames - 1) // temporal_ratio + 1


def pixel_frames(num_latent_frames: int, temporal_ratio: int = TEMPORAL_RATIO) -> int:
    return (num_latent_frames - 1) * temporal_ratio + 1


def nearest_multiple(value: int, step: int) -> int:
    """The nearest positive multiple of `step` (ties round up, never 0)."""
    lower = (value // step) * step
    upper = lower + step
    if lower <= 0:
        return upper
    return lower if value - lower < upper - value else upper


def largest_valid_length(limit: int, temporal_ratio: int = TEMPORAL_RATIO) -> int:
    """The largest 8k+1 length not above `limit`."""
    return max(1, ((limit - 1) // temporal_ratio) * temporal_ratio + 1)
