"""How a long shot splits into segments, torch-free: the engine renders by it and validation reports it, so a
storyboard says how many segments a shot takes before any GPU sees it."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidFrameCountError


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
