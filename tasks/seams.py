"""Seam QA after a render: every join between current takes (a handoff cut, a hard cut, a segment
boundary inside a long take) measured on decoded frames and audio, once per pair of takes, and stored.

`measure_seams` is plain Python (the `milimo qa` command calls it without Prefect); `seam_qa_task` is
the flow's task.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from milimo_engine.media import AUDIO_OUT_RATE, read_audio, read_window
from storyboards.seams import AUDIO_SECONDS_EACH_SIDE, FRAMES_EACH_SIDE, SeamThresholds, seam_metrics
from storyboards.store import SeamView, ShotStatus, Store

from .worker import store_for


def _usable(row: ShotStatus) -> bool:
    return row.status == "succeeded" and bool(row.outputs.get("mp4")) and row.take_id is not None


def _measure(left_mp4: str, left_end: int, right_mp4: str, right_start: int, fps: float):
    """Metrics of the join between frame `left_end - 1` of one file and frame `right_start` of another."""
    before = read_window(left_mp4, left_end - FRAMES_EACH_SIDE, FRAMES_EACH_SIDE)
    after = read_window(right_mp4, right_start, FRAMES_EACH_SIDE)
    left_s, right_s = left_end / fps, right_start / fps
    audio_before = read_audio(left_mp4, max(0.0, left_s - AUDIO_SECONDS_EACH_SIDE), min(left_s, AUDIO_SECONDS_EACH_SIDE))
    audio_after = read_audio(right_mp4, right_s, AUDIO_SECONDS_EACH_SIDE)
    return seam_metrics(before, after, audio_before, audio_after, AUDIO_OUT_RATE)


def measure_seams(store: Store, storyboard: str, thresholds: SeamThresholds = SeamThresholds(),
                  log=None) -> list[SeamView]:
    """Measure every join of the current takes not measured yet; return all of them in timeline order.
    Adjacent shots of one chain are handoff cuts (flagged above a threshold); shots of different chains
    are hard cuts (measured, never flagged)."""
    rows = store.status(storyboard)
    joins = []
    for left, right in zip(rows, rows[1:]):
        if _usable(left) and _usable(right):
            kind = "handoff" if left.chain_index == right.chain_index else "hard"
            joins.append((kind, left, right, int(left.outputs.get("frames") or 0), 0))
    for row in rows:
        if _usable(row):
            joins += [("segment", row, row, int(start), int(start)) for start in row.outputs.get("segment_starts") or []]
    for kind, left, right, left_end, right_start in joins:
        frame = right_start if kind == "segment" else 0
        if store.has_seam(left.take_id, right.take_id, frame):
            continue
        fps = float(left.outputs.get("fps") or 24.0)
        metrics = _measure(left.outputs["mp4"], left_end, right.outputs["mp4"], right_start, fps)
        score, flagged = metrics.verdict(kind, thresholds)
        store.record_seam(storyboard, kind, left.take_id, right.take_id, frame, metrics.as_dict(), score, flagged)
        if log is not None and flagged:
            log.warning("seam %s -> %s (%s) flagged: %s", left.shot_id, right.shot_id, kind,
                        metrics.over(thresholds))
    return store.seams(storyboard)


@task(name="seam-qa", cache_policy=NO_CACHE)
def seam_qa_task(board_name: str, db_url: str, thresholds: dict | None = None) -> list[dict]:
    seams = measure_seams(store_for(db_url), board_name, SeamThresholds(**(thresholds or {})), get_run_logger())
    return [seam.__dict__ | {"label": seam.label} for seam in seams]
