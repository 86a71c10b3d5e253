"""Seam QA: every join between current takes (a handoff cut, a hard cut, a segment boundary inside a long take)
measured on decoded frames and audio, once per pair of takes, and stored. Plain Python: `milimo qa` and the
render flow's seam task both call `measure_seams`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from milimo_engine.media import AUDIO_OUT_RATE, read_audio, read_frames_at
from storyboards.seams import AUDIO_SECONDS_EACH_SIDE, FRAMES_EACH_SIDE, SeamThresholds, seam_metrics
from storyboards.store import SeamView, ShotStatus, Store


def _usable(row: ShotStatus) -> bool:
    return row.status == "succeeded" and bool(row.outputs.mp4) and row.take_id is not None


@dataclass(frozen=True)
class Join:
    kind: str  # handoff, hard, segment
    left: ShotStatus
    right: ShotStatus
    left_end: int  # the left take's last frame + 1 at the join (before its tail handle)
    right_start: int  # a cut: the right take's first frame after its head handle; a segment's first frame

    @property
    def left_take(self) -> int:
        return int(self.left.take_id or 0)  # joins are only made between rows with a take

    @property
    def right_take(self) -> int:
        return int(self.right.take_id or 0)


class _TakeMedia:
    """The frames a take's joins need and its whole audio, each decoded once (one ffmpeg run for each)."""

    def __init__(self, row: ShotStatus, windows: set[int]):
        mp4 = str(row.outputs.mp4)
        self.fps = float(row.outputs.fps or 24.0)
        self.frames = int(row.outputs.frames or 0)
        wanted = sorted(i for i in windows if 0 <= i < self.frames)
        self.images = dict(zip(wanted, read_frames_at(mp4, wanted), strict=True))
        self.audio = read_audio(mp4, 0.0, self.frames / self.fps + 1.0)

    def window(self, start: int, count: int) -> np.ndarray:
        return np.stack([self.images[i] for i in range(start, start + count) if i in self.images])

    def sound(self, start_frame: int, end_frame: int) -> np.ndarray:
        a, b = (round(f / self.fps * AUDIO_OUT_RATE) for f in (start_frame, end_frame))
        return self.audio[max(0, a):max(0, b)]


def joins(rows: list[ShotStatus]) -> list[Join]:
    """Adjacent shots of one chain are handoff cuts; of different chains, hard cuts; a long take's segment
    starts are joins inside it."""
    found = []
    for left, right in zip(rows, rows[1:], strict=False):
        if _usable(left) and _usable(right):
            kind = "handoff" if left.chain_index == right.chain_index else "hard"
            found.append(Join(kind, left, right, int(left.outputs.frames or 0) - int(left.outputs.tail or 0),
                              int(right.outputs.head or 0)))
    for row in rows:
        if _usable(row):
            found += [Join("segment", row, row, int(start), int(start)) for start in row.outputs.segment_starts]
    return found


def measure_seams(store: Store, storyboard: str, thresholds: SeamThresholds | None = None,
                  rows: list[ShotStatus] | None = None,
                  warn: Callable[[str], None] | None = None) -> list[SeamView]:
    """Measure every join of the current takes not measured yet; return all of them in timeline order.
    Handoff cuts are flagged above a threshold; hard cuts are measured, never flagged. `rows`: the status the
    caller read already."""
    thresholds = thresholds or SeamThresholds()
    every = joins(rows if rows is not None else store.status(storyboard))
    done = store.measured({j.left_take for j in every} | {j.right_take for j in every}) if every else set()
    todo = [j for j in every if (j.left_take, j.right_take, j.right_start) not in done]
    windows: dict[int, set[int]] = {}
    for j in todo:
        windows.setdefault(j.left_take, set()).update(range(j.left_end - FRAMES_EACH_SIDE, j.left_end))
        windows.setdefault(j.right_take, set()).update(range(j.right_start, j.right_start + FRAMES_EACH_SIDE))
    media: dict[int, _TakeMedia] = {}
    for j in todo:
        for take, row in ((j.left_take, j.left), (j.right_take, j.right)):
            if take not in media:
                media[take] = _TakeMedia(row, windows[take])
    for j in todo:
        a, b = media[j.left_take], media[j.right_take]
        side = round(AUDIO_SECONDS_EACH_SIDE * a.fps)  # frames of audio on each side of the join
        metrics = seam_metrics(a.window(j.left_end - FRAMES_EACH_SIDE, FRAMES_EACH_SIDE),
                               b.window(j.right_start, FRAMES_EACH_SIDE),
                               a.sound(j.left_end - side, j.left_end), b.sound(j.right_start, j.right_start + side),
                               AUDIO_OUT_RATE)
        score, flagged = metrics.verdict(j.kind, thresholds)
        store.record_seam(storyboard, j.kind, j.left_take, j.right_take, j.right_start, metrics.as_dict(), score,
                          flagged)
        if warn is not None and flagged:
            warn(f"seam {j.left.shot_id} -> {j.right.shot_id} ({j.kind}) flagged: {metrics.over(thresholds)}")
    return store.seams(storyboard)
