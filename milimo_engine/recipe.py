"""What a render means: the recipe's name and version, and the official LTX-2 constants it follows.

Torch-free, so the storyboard side can put the recipe into every spec hash: a change of semantics
bumps `RECIPE_VERSION`, and takes rendered under the old semantics are never silently reused.
The constants are those of Lightricks' ltx-pipelines (`ltx_pipelines/utils/constants.py`).
"""

from __future__ import annotations

RECIPE_VERSION = 4  # 1: replaced latents at any frame; 2: keyframe tokens, per-token sigma, official schedule;
# 3: STG that perturbs on every checkpoint, per stream; audio length round(frames / fps * 25); zero keyframe start;
# 4: checked against ltx-pipelines run on the same weights: official noise order, keyframes start from the image
#    and span 8 frames, bilinear cover-resize, truncated uint8 decode, the 1.2.0 negative prompt
QUALITIES = ("final", "draft")
RECIPE_NAMES = {"final": "ltx2-two-stage", "draft": "ltx2-distilled", "ic-lora": "ltx2-ic-lora"}

# The distilled model's schedule: the draft recipe's stage 1 (`ltx_pipelines/distilled.py`).
DISTILLED_SIGMA_VALUES = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
STAGE_2_DISTILLED_SIGMA_VALUES = (0.909375, 0.725, 0.421875, 0.0)
# After temporal x2, the refinement round (`ltx_pipelines/dfr_pipeline.py`): the distilled schedule from its 5th sigma.
TEMPORAL_REFINE_SIGMAS = DISTILLED_SIGMA_VALUES[4:]

# `TI2VidTwoStagesPipeline` calls `LTX2Scheduler().execute(steps=...)` without a latent, so stage 1 is
# shifted as for 4096 tokens whatever the real size.
STAGE1_SHIFT_TOKENS = 4096

# ltx-pipelines 1.2.0 (the 1.0.0 text with the first five terms prepended).
DEFAULT_NEGATIVE_PROMPT = (
    "has_subtitles, has_blurbox, transition from black, transition to black, speech_ending_short, "
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)


def recipe_id(kind: str = "final") -> str:
    """e.g. "ltx2-two-stage@3" (a quality, or "ic-lora"): recorded with every take, part of every spec hash."""
    return f"{RECIPE_NAMES[kind]}@{RECIPE_VERSION}"
