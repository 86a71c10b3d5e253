"""Long shots as segments: each renders within the model's per-segment limit and hands off to the next."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codec import fit_audio
from .conditioning import ImageCondition
from .errors import InvalidConditionError, InvalidFrameCountError
from .request import ShotRequest
from .result import ShotResult


@dataclass(frozen=True)
class Segment:
    index: int
    start: int  # first delivered frame of the shot that this segment delivers
    frames: int  # frames it delivers (its handoff overlap comes on top)
    overlap: int  # rendered frames before its first delivered frame


def plan_segments(num_frames: int, limit: int, first_overlap: int, overlap: int) -> list[Segment]:
    """Fill segments greedily up to `limit` rendered frames each.

    Every segment that hands off must deliver at least `overlap` frames (a handoff is made from
    delivered frames only), so a short remainder borrows frames from the segment before it.
    """
    if num_frames + first_overlap <= limit:
        return [Segment(0, 0, num_frames, first_overlap)]
    if limit - first_overlap < overlap or limit - overlap < 2 * overlap:
        raise InvalidFrameCountError(
            "segment_frames", limit,
            f"too small to chain segments with {overlap}-frame handoffs (each segment must deliver at least "
            f"twice its handoff); raise it", nearest=None)
    sizes: list[int] = []
    overlaps: list[int] = []
    start = 0
    while start < num_frames:
        ov = first_overlap if not sizes else overlap
        n = min(limit - ov, num_frames - start)
        sizes.append(n)
        overlaps.append(ov)
        start += n
    if sizes[-1] < overlap:
        need = overlap - sizes[-1]
        sizes[-2] -= need
        sizes[-1] += need
    segments, start = [], 0
    for i, (n, ov) in enumerate(zip(sizes, overlaps, strict=False)):
        segments.append(Segment(i, start, n, ov))
        start += n
    return segments


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
