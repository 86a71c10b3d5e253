"""The numbers both sides check against: the engine when it renders, the storyboard when it validates.

One module, torch-free, so a storyboard on a machine without a GPU is refused for exactly the
values the engine would refuse later.
"""

from __future__ import annotations

import re

TEMPORAL_RATIO = 8  # the causal video VAE: pixel frame 0, then 8 pixel frames per latent frame
SPATIAL_RATIO = 32
SIZE_STEP = 2 * SPATIAL_RATIO  # two-stage renders: stage 1 at half size must still be a VAE multiple
MAX_SIDE = 4096  # beyond this the token count does not fit any card we render on
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit value
DEFAULT_MAX_FRAMES = 257  # one segment's render limit unless the model manifest says otherwise
DEFAULT_SEGMENT_FRAMES = 121
MAX_STEPS = 1000
MAX_GUIDANCE = 50.0
DEFAULT_HANDLES = 8  # an editor's cut imported with its shot list: 8 frames before and after each cut
MAX_HANDLES = 96  # frames of handle a take may carry before and after its cut (4 s at 24 fps)
MAX_HANDOFF_M = 8  # latent frames of overlap a handoff may carry (1 + 8·m pixel frames)

# How a shot's weights sit on its device, fastest first (`milimo_engine.memory`); `auto` picks the first that fits.
MEMORY_MODES = ("resident", "release", "fp8", "stream")
MEMORY_MODE_CHOICES = ("auto", *MEMORY_MODES)
GIB = 1024**3


def parse_bytes(text: str) -> int:
    """"24GB", "24 GiB", "80g", "141e9" -> bytes (GB and GiB alike are read as GiB: what `nvidia-smi` calls GB)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*(k|m|g|t)?(i?b)?\s*", text.lower())
    if not m:
        raise ValueError(f"{text!r} is not an amount of memory (write e.g. 24GB or 80GiB)")
    scale = {None: 1, "k": 1024, "m": 1024**2, "g": GIB, "t": 1024**4}[m.group(2)]
    return int(float(m.group(1)) * scale)


def format_bytes(n: int | float) -> str:
    """1.5 GiB, 12.0 MiB, 300 KiB: as a person reads an amount of memory."""
    for unit, scale in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= scale or unit == "KiB":
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
