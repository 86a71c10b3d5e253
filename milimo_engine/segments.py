"""Long shots as segments: each renders within the model's per-segment limit and hands off to the next."""

from __future__ import annotations

import numpy as np

from .codec import fit_audio
from .conditioning import ImageCondition
from .errors import InvalidConditionError
from .request import ShotRequest
from .result import ShotResult
from .segment_plan import Segment, plan_segments

__all__ = ["Segment", "join_segments", "place_images", "plan_segments"]


def place_images(request: ShotRequest, segments: list[Segment]) -> list[list[tuple[ImageCondition, int]]]:
    """Each image condition, in the segment that holds its frame, with its rendered frame index there
    (0: it replaces the first latent frame; anything else: keyframe tokens at that frame's time)."""
    placed: list[list[tuple[ImageCondition, int]]] = [[] for _ in segments]
    for i, image in enumerate(request.images):
        if not isinstance(image.frame, int) or isinstance(image.frame, bool) \
                or not 0 <= image.frame < request.num_frames:
            raise InvalidConditionError(
                f"images[{i}].frame", image.frame, f"must be a frame of the shot, 0..{request.num_frames - 1}",
                nearest=min(max(int(image.frame) if isinstance(image.frame, (int, float)) else 0, 0),
                            request.num_frames - 1))
        seg = next(s for s in segments if s.start <= image.frame < s.start + s.frames)
        placed[seg.index].append((image, image.frame - seg.start + seg.overlap))
    return placed


def join_segments(request: ShotRequest, parts: list[ShotResult], text_seconds: float, output_type: str) -> ShotResult:
    """One result for a segmented shot: frames and audio end to end; latents and handoff of the last segment."""
    last = parts[-1]
    timings: dict[str, float] = {"text": text_seconds}
    for part in parts:
        for key, value in part.timings.items():
            timings[key] = timings.get(key, 0.0) + value
    frames = audio = None
    if output_type != "latent":
        frames = np.concatenate([p.frames for p in parts])
        audio = fit_audio(
            np.concatenate([p.audio for p in parts], axis=-1),
            round(request.num_frames / request.fps * last.sample_rate),
        )
    return ShotResult(
        request=request,
        frames=frames,
        audio=audio,
        sample_rate=last.sample_rate,
        fps=last.fps,
        latent=last.latent,
        audio_latent=last.audio_latent,
        stage1_latent=last.stage1_latent,
        rendered_frames=sum(p.rendered_frames for p in parts),
        timings=timings,
        loras=last.loras,
        model_id=last.model_id,
        overlap_frames=parts[0].overlap_frames,
        segments=len(parts),
        segment_starts=tuple(sum(p.request.num_frames for p in parts[:i]) for i in range(1, len(parts))),
        handoff_factory=(lambda: last.handoff) if last.request.produced_handoff_m else None,
    )
