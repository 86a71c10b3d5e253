"""The numbers both sides check against: the engine when it renders, the storyboard when it validates.

One module, torch-free, so a storyboard on a machine without a GPU is refused for exactly the
values the engine would refuse later.
"""

from __future__ import annotations

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
