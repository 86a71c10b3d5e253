"""Seam QA after a render: every join between current takes (a handoff cut, a hard cut, a segment
boundary inside a long take) measured on decoded frames and audio, once per pair of takes, and stored.

`measure_seams` is plain Python (the `milimo qa` command calls it without Prefect); `seam_qa_task` is
the flow's task.
"""

from __future__ import annotations

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from milimo_engine.media import AUDIO_OUT_RATE, read_audio, read_frames_at
from storyboards.seams import AUDIO_SECONDS_EACH_SIDE, FRAMES_EACH_SIDE, SeamThresholds, seam_metrics
from storyboards.store import SeamView, ShotStatus, Store

from .worker import store_for


def _usable(row: ShotStatus) -> bool:
    return row.status == "succeeded" and bool(row.outputs.get("mp4")) and row.take_id is not None


class _TakeMedia:
    """The frames a take's joins need and its whole audio, each decoded once (one ffmpeg run for each)."""

    def __init__(self, row: ShotStatus, windows: set[int]):
        self.fps = float(row.outputs.get("fps") or 24.0)
        self.frames = int(row.outputs.get("frames") or 0)
        wanted = sorted(i for i in windows if 0 <= i < self.frames)
        decoded = read_frames_at(row.outputs["mp4"], wanted)
        self.images = dict(zip(wanted, decoded))
        self.audio = read_audio(row.outputs["mp4"], 0.0, self.frames / self.fps + 1.0)

    def window(self, start: int, count: int) -> np.ndarray:
        return np.stack([self.images[i] for i in range(start, start + count) if i in self.images])

    def sound(self, start_frame: int, end_frame: int) -> np.ndarray:
        a, b = (round(f / self.fps * AUDIO_OUT_RATE) for f in (start_frame, end_frame))
        return self.audio[max(0, a):max(0, b)]


def measure_seams(store: Store, storyboard: str, thresholds: SeamThresholds | None = None,
                  log=None) -> list[SeamView]:
    """Measure every join of the current takes not measured yet; return all of them in timeline order.
    Adjacent shots of one chain are handoff cuts (flagged above a threshold); shots of different chains
    are hard cuts (measured, never flagged)."""
    thresholds = thresholds or SeamThresholds()
    rows = store.status(storyboard)
    joins = []
    for left, right in zip(rows, rows[1:]):
        if _usable(left) and _usable(right):
            kind = "handoff" if left.chain_index == right.chain_index else "hard"
            joins.append((kind, left, right, int(left.outputs.get("frames") or 0), 0))
    for row in rows:
        if _usable(row):
            joins += [("segment", row, row, int(start), int(start)) for start in row.outputs.get("segment_starts") or []]
    # (kind, left, right, left_end, right_start): right_start is 0 for a cut, the segment's start inside a take.
    joins = [j for j in joins if not store.has_seam(j[1].take_id, j[2].take_id, j[4])]
    windows: dict[int, set[int]] = {}
    for _, left, right, left_end, right_start in joins:
        windows.setdefault(left.take_id, set()).update(range(left_end - FRAMES_EACH_SIDE, left_end))
        windows.setdefault(right.take_id, set()).update(range(right_start, right_start + FRAMES_EACH_SIDE))
    media = {row.take_id: _TakeMedia(row, windows[row.take_id]) for row in rows if row.take_id in windows}
    for kind, left, right, left_end, right_start in joins:
        a, b = media[left.take_id], media[right.take_id]
        side = round(AUDIO_SECONDS_EACH_SIDE * a.fps)  # frames of audio on each side of the join
        metrics = seam_metrics(a.window(left_end - FRAMES_EACH_SIDE, FRAMES_EACH_SIDE),
                               b.window(right_start, FRAMES_EACH_SIDE),
                               a.sound(left_end - side, left_end), b.sound(right_start, right_start + side),
                               AUDIO_OUT_RATE)
        score, flagged = metrics.verdict(kind, thresholds)
        store.record_seam(storyboard, kind, left.take_id, right.take_id, right_start, metrics.as_dict(), score,
                          flagged)
        if log is not None and flagged:
            log.warning("seam %s -> %s (%s) flagged: %s", left.shot_id, right.shot_id, kind,
                        metrics.over(thresholds))
    return store.seams(storyboard)


@task(name="seam-qa", cache_policy=NO_CACHE)
def seam_qa_task(board_name: str, db_url: str, thresholds: dict | None = None) -> list[dict]:
    seams = measure_seams(store_for(db_url), board_name, SeamThresholds(**(thresholds or {})), get_run_logger())
    return [seam.__dict__ | {"label": seam.label} for seam in seams]
