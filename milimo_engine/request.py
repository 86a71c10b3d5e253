"""What a shot render is asked to do: frozen, hashable, validated before any GPU work."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import frames as fr
from .errors import InvalidConditionError, InvalidFrameCountError, InvalidRequestError, InvalidSizeError

if TYPE_CHECKING:
    from .conditioning import ImageCondition
    from .handoff import Handoff

from .limits import DEFAULT_MAX_FRAMES, DEFAULT_SEGMENT_FRAMES, MAX_SEED, MAX_SIDE  # noqa: F401
from .recipe import QUALITIES, recipe_id


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA applied to a shot. `path` is a safetensors file (official LTX-2 or diffusers keys)."""

    path: Path
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))


@dataclass(frozen=True)
class ModalityGuidance:
    """One stream's stage-1 guidance, as ltx-core's `MultiModalGuiderParams`: classifier-free (`cfg`, 1 = off),
    spatio-temporal (`stg`, 0 = off) perturbing this stream's self-attention in `stg_blocks` (None: the model's
    default for this stream, from its manifest), modality isolation (`modality`, 1 = off) and rescale (0 = off)."""

    cfg: float = 3.0
    stg: float = 1.0
    modality: float = 3.0
    rescale: float = 0.7
    stg_blocks: tuple[int, ...] | None = None

    @property
    def wants_uncond(self) -> bool:
        return self.cfg != 1.0

    @property
    def wants_perturbed(self) -> bool:
        return self.stg != 0.0

    @property
    def wants_isolated(self) -> bool:
        return self.modality != 1.0


@dataclass(frozen=True)
class Guidance:
    """Stage-1 guidance, per stream. The defaults follow the official LTX-2 two-stage recipe (video cfg 3,
    audio cfg 7). Stage 2 (distilled) runs unguided. Every pass that some stream needs is one row of the
    step's batched forward."""

    video: ModalityGuidance = field(default_factory=ModalityGuidance)
    audio: ModalityGuidance = field(default_factory=lambda: ModalityGuidance(cfg=7.0))

    @classmethod
    def cfg_only(cls, cfg: float = 3.0, audio_cfg: float | None = None) -> Guidance:
        """Plain classifier-free guidance: two rows per step."""
        plain = ModalityGuidance(cfg=cfg, stg=0.0, modality=1.0, rescale=0.0)
        return cls(video=plain, audio=replace(plain, cfg=cfg if audio_cfg is None else audio_cfg))

    def with_cfg(self, cfg: float) -> Guidance:
        """The same guidance with the video stream's classifier-free scale set (a storyboard's `guidance`)."""
        return replace(self, video=replace(self.video, cfg=cfg))

    @property
    def streams(self) -> tuple[ModalityGuidance, ModalityGuidance]:
        return self.video, self.audio


@dataclass(frozen=True)
class ShotRequest:
    """One shot for the two-stage pipeline.

    `num_frames` is what the editor cut: any count from 1 to the model's limit. The engine
    renders the smallest valid LTX-2 length that covers it and trims the rest.
    `width`/`height` are the final (stage-2) size; stage 1 runs at half of each. Left out, they and
    `steps` come from the model's manifest (`ModelManifest.shot_defaults`).

    `images` pin frames to pictures; `handoff` starts the shot where the previous one ended (the
    shot renders the handoff's overlap on top and drops it, so it still delivers `num_frames`);
    `handoff_m` sets the handoff this shot produces for the next one (`1 + 8·m` frames; 0: none;
    smaller when the shot is shorter than that).
    A shot longer than `segment_frames` (None: the model's default, 121) renders as segments
    chained by handoffs, with seed + i for segment i.
    """

    prompt: str
    negative_prompt: str | None = None  # None: the model's official one (its manifest); "" means none
    seed: int = 0
    width: int | None = None  # None: the model's default size (its manifest; 1536x1024 for LTX-2)
    height: int | None = None
    num_frames: int = 121
    fps: float = 24.0
    steps: int | None = None  # None: the model's stage-1 step count (its manifest)
    guidance: Guidance = field(default_factory=Guidance)
    loras: tuple[LoraSpec, ...] = ()
    temporal_upsample: bool = False
    distilled_sigmas: tuple[float, ...] | None = None
    stage1_sigmas: tuple[float, ...] | None = None
    max_sequence_length: int | None = None  # None: the model's (its manifest; 1024 tokens for LTX-2)
    images: tuple[ImageCondition, ...] = ()
    handoff: Handoff | None = None
    handoff_m: int = 1
    segment_frames: int | None = None
    quality: str = "final"  # "draft": the distilled recipe (8 unguided stage-1 steps), for iterating fast

    @property
    def recipe(self) -> str:
        return recipe_id(self.quality)

    def __post_init__(self) -> None:
        object.__setattr__(self, "loras", tuple(
            lora if isinstance(lora, LoraSpec) else LoraSpec(**lora) for lora in self.loras))
        object.__setattr__(self, "images", tuple(self.images))

    @property
    def produced_handoff_m(self) -> int:
        """`handoff_m`, shrunk to what the shot delivers: a shot shorter than 9 frames hands off nothing."""
        return max(0, min(self.handoff_m, (self.num_frames - 1) // fr.TEMPORAL_RATIO))

    @property
    def overlap_frames(self) -> int:
        """Rendered frames before delivered frame 0: the handoff's overlap, or none."""
        return self.handoff.overlap_frames if self.handoff is not None else 0

    @property
    def render_frames(self) -> int:
        return fr.render_length(self.num_frames + self.overlap_frames)

    def replace(self, **changes: Any) -> ShotRequest:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return ShotRequest(**values)

    def validate(self, max_frames: int = DEFAULT_MAX_FRAMES, segment_frames: int = DEFAULT_SEGMENT_FRAMES) -> None:
        """Raise the specific error for the first field that cannot be rendered.

        `num_frames` has no upper bound: above the segment limit the shot renders in segments.
        """
        self._check_size()
        self._check_length(max_frames, segment_frames)
        self._check_images()
        self._check_values()

    def _check_size(self) -> None:
        step = fr.TWO_STAGE_SIZE_STEP
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, int) and value > MAX_SIDE:
                raise InvalidSizeError(name, value, f"is above the largest side this engine renders, {MAX_SIDE}",
                                       nearest=MAX_SIDE)
            if not isinstance(value, int) or value <= 0 or value % step:
                raise InvalidSizeError(
                    name,
                    value,
                    f"must be a positive multiple of {step} (stage 1 renders at half size, "
                    f"and the VAE compresses by {fr.SPATIAL_RATIO})",
                    nearest=fr.nearest_multiple(
                        int(value) if isinstance(value, (int, float)) and value > 0 else step, step
                    ),
                )

    def _check_length(self, max_frames: int, segment_frames: int) -> None:
        if not isinstance(self.num_frames, int) or self.num_frames < 1:
            raise InvalidFrameCountError("num_frames", self.num_frames, "must be at least 1", nearest=1)
        segment = self.segment_frames if self.segment_frames is not None else segment_frames
        overlap = 1 + fr.TEMPORAL_RATIO * max(self.handoff_m, 1)
        smallest = fr.render_length(3 * overlap)
        if (
            not isinstance(segment, int)
            or segment > max_frames
            or fr.render_length(segment) != segment
            or segment < smallest
        ):
            raise InvalidFrameCountError(
                "segment_frames",
                segment,
                f"must be 8k+1, at least {smallest} (a segment delivers at least twice its {overlap}-frame "
                f"handoff) and at most the model's limit of {max_frames}",
                nearest=min(
                    max(fr.render_length(int(segment)) if isinstance(segment, int) and segment > 0 else 0, smallest),
                    fr.largest_valid_length(max_frames),
                ),
            )
        if not isinstance(self.handoff_m, int) or self.handoff_m < 0:
            raise InvalidRequestError("handoff_m", self.handoff_m, "must be 0 (no handoff) or more", nearest=1)
        if self.handoff is not None and self.temporal_upsample:
            raise InvalidRequestError(
                "temporal_upsample",
                True,
                "a shot that takes a handoff is conditioned at its own frame rate, so it cannot be temporally "
                "upsampled; render the chain at the final fps instead",
                nearest=False,
            )

    def _check_images(self) -> None:
        for i, image in enumerate(self.images):
            if not 0.0 <= float(image.strength) <= 1.0:
                raise InvalidConditionError(
                    f"images[{i}].strength",
                    image.strength,
                    "must be in 0..1",
                    nearest=min(max(float(image.strength), 0.0), 1.0),
                )
            if image.crf is not None and not 0 <= int(image.crf) <= 51:
                raise InvalidConditionError(f"images[{i}].crf", image.crf, "must be 0 (off) to 51", nearest=33)

    def _check_values(self) -> None:
        if not (0 <= self.seed <= MAX_SEED):
            raise InvalidRequestError(
                "seed", self.seed, f"must be in 0..{MAX_SEED}", nearest=max(0, min(self.seed, MAX_SEED))
            )
        if self.fps <= 0:
            raise InvalidRequestError("fps", self.fps, "must be positive", nearest=24.0)
        if self.steps is not None and self.steps < 1:
            raise InvalidRequestError("steps", self.steps, "must be at least 1", nearest=1)
        if self.quality not in QUALITIES:
            raise InvalidRequestError("quality", self.quality, f"must be one of {list(QUALITIES)}", nearest="final")
        if not self.prompt or not self.prompt.strip():
            raise InvalidRequestError("prompt", self.prompt, "must not be empty")
        for name in ("distilled_sigmas", "stage1_sigmas"):
            sigmas = getattr(self, name)
            if sigmas is not None and (len(sigmas) < 2 or any(b > a for a, b in zip(sigmas, sigmas[1:], strict=False))):
                raise InvalidRequestError(name, sigmas, "must hold at least two non-increasing sigmas ending at 0")
