"""Avid Log Exchange (ALE) lists, through OpenTimelineIO's ALE adapter: the takes of a conformed cut (what an
assistant imports into a bin to relink on Tape + timecode) and the shot list of a cut.

One row per clip of the shots track, never per track: the adapter writes a row for every clip it finds, so a
conformed timeline (whose audio track mirrors the shots) would list every take twice. Cells are made safe here
(the adapter keeps tabs and line breaks, which would split a row): a prompt is free text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import opentimelineio as otio

from .editorial import clip_prompt
from .load import Storyboard, is_shot
from .schema import NAMESPACE

TAKE_COLUMNS = ["Name", "Tape", "Start", "End", "Duration", "Source File", "Shot", "Clip", "Take", "Status",
                "Review", "Prompt"]
SHOT_COLUMNS = ["Name", "Tape", "Start", "End", "Duration", "Source File", "Shot", "Record In", "Prompt"]


@dataclass(frozen=True)
class Entry:
    """One ALE row: `frames` of media from `start` (at the list's rate) on `tape`, and its other columns."""

    name: str
    tape: str
    start: int
    frames: int
    columns: dict[str, str]
    source_file: str | None = None


def cell(text: object) -> str:
    """A value one ALE cell holds: tabs and line breaks (which end a cell or a row) become spaces."""
    return " ".join(str(text).split()) if text is not None else ""


def ale_text(entries: list[Entry], fps: float, columns: list[str]) -> str:
    """The rows as an ALE through OpenTimelineIO's writer, at `fps`, with `columns` in this order."""
    timeline = otio.schema.Timeline("milimo")
    track = otio.schema.Track()
    timeline.tracks.append(track)
    for entry in entries:
        ref = otio.schema.ExternalReference(target_url=entry.source_file) if entry.source_file else None
        clip = otio.schema.Clip(name=cell(entry.name), media_reference=ref, source_range=otio.opentime.TimeRange(
            otio.opentime.RationalTime(entry.start, fps), otio.opentime.RationalTime(entry.frames, fps)))
        clip.metadata["ALE"] = {"Tape": cell(entry.tape), **{k: cell(v) for k, v in entry.columns.items()}}
        track.append(clip)
    return otio.adapters.write_to_string(timeline, "ale", columns=list(columns), fps=fps)


def take_entries(conformed: otio.schema.Timeline, board: Storyboard) -> list[Entry]:
    """Each rendered clip of a conformed cut's shots track as its current take: the take's file, its own reel as
    Tape, Start and End spanning the take's media (its handles included), as the take's timecode track counts."""
    out = []
    for clip in board.shots_track(conformed):
        if not is_shot(clip) or not isinstance(clip.media_reference, otio.schema.ExternalReference):
            continue
        ref = clip.media_reference
        take = ref.metadata.get(NAMESPACE, {})
        render = clip.metadata.get(NAMESPACE, {}).get("render", {})
        have = ref.available_range
        if have is None or not take:
            continue
        rate = board.fps
        out.append(Entry(Path(ref.name or str(ref.target_url)).stem, take.get("reel") or "",
                         round(have.start_time.rescaled_to(rate).value), round(have.duration.rescaled_to(rate).value),
                         {"Shot": render.get("shot_id", ""), "Clip": clip.name, "Take": str(take.get("take", "")),
                          "Status": take.get("status", ""), "Review": render.get("review") or "",
                          "Prompt": clip.metadata.get(NAMESPACE, {}).get("prompt", "")},
                         _file_url(ref.target_url)))
    return out


def shot_entries(board: Storyboard) -> list[Entry]:
    """Each shot of a cut as the editor cut it: its clip name, the original reel as Tape, the source it plays."""
    return [Entry(shot.name, shot.reel or "", shot.source_in, shot.source_frames,
                  {"Shot": shot.shot_id, "Record In": shot.record_timecode,
                   "Prompt": shot.metadata.get("prompt") or clip_prompt(clip) or ""})
            for shot, clip in zip(board.shots, board.clips(), strict=False)]


def _file_url(url: str) -> str:
    return url if "://" in url else Path(url).resolve().as_uri()
