"""The official defaults of each LTX-2 generation, as `ltx_pipelines/utils/constants.py` (release 1.2.0) sets them.

A model folder's manifest is written from these, never typed by hand: the version comes from the checkpoint's
`model_version` metadata (`detect_params` does the same), and a version newer than every known one gets the
newest known generation's defaults, as the official code does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..recipe import DEFAULT_NEGATIVE_PROMPT, DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES


@dataclass(frozen=True)
class VersionDefaults:
    """What differs between generations: their official constants, plus what the architecture implies."""

    version: str  # "2.0", "2.3"
    model_id: str
    stage1_steps: int
    stg_blocks: tuple[int, ...]  # video and audio streams alike (`video_guider_params.stg_blocks`)
    image_crf: int
    # The audio<->video cross-attention AdaLN takes the other stream's sigma: ltx-core's
    # `MultiModalTransformerArgsPreprocessor` does so for every version (diffusers calls its per-token variant the
    # "legacy LTX-2.0" behaviour; the official code, run, has none).
    cross_timestep: bool = True
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    distilled_lora_strength: float = 1.0  # DEFAULT_LORA_STRENGTH
    default_size: tuple[int, int] = (1536, 1024)  # stage 1 at 768x512, x2 (`PipelineParams`)
    max_frames: int = 257
    segment_frames: int = 121  # `PipelineParams.num_frames`
    max_sequence_length: int = 1024  # `LTXVGemmaTokenizer(tokenizer_root, 1024)`
    distilled_sigmas: tuple[float, ...] = STAGE_2_DISTILLED_SIGMA_VALUES
    draft_sigmas: tuple[float, ...] = DISTILLED_SIGMA_VALUES


LTX_2_0 = VersionDefaults("2.0", "Lightricks/LTX-2", stage1_steps=40, stg_blocks=(29,), image_crf=33)
LTX_2_3 = VersionDefaults("2.3", "Lightricks/LTX-2.3", stage1_steps=30, stg_blocks=(28,), image_crf=33)

# Newest first: a checkpoint gets the defaults of the newest generation it is at or above.
OFFICIAL_VERSIONS: tuple[tuple[tuple[int, ...], VersionDefaults], ...] = (((2, 3), LTX_2_3), ((2, 0), LTX_2_0))


def parse_version(text: str) -> tuple[int, ...]:
    """"2.3.0" -> (2, 3, 0); "2.3-rc1" -> (2, 3); "" -> ()."""
    parts = []
    for piece in text.replace("-", ".").split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def defaults_for(model_version: str) -> VersionDefaults:
    parsed = parse_version(model_version)
    for since, defaults in OFFICIAL_VERSIONS:
        if parsed >= since:
            return defaults
    return LTX_2_0
