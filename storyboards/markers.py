"""Marker lists of a storyboard's shots, for an editor's timeline: one marker per shot at its record in, as long as
the shot, named by its shot id and state, coloured by state. As a marker EDL (what DaVinci Resolve imports onto a
timeline: `|C:colour |M:name |D:duration` under each event) or as CSV (any spreadsheet or script).

Plain data in, text out: the caller reads the status rows (the store) and the notes beside them."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from .ale import cell
from .editorial import timecode
from .load import Storyboard
from .shotlist import as_text

COLOURS = {"succeeded": "Green", "failed": "Red", "cancelled": "Red", "running": "Blue", "stale": "Yellow",
           "not rendered": "Yellow"}  # a problem with a take's files (a state of its own) is Red too
CSV_COLUMNS = ["shot_id", "clip", "record_in", "record_out", "frames", "status", "take", "colour", "note"]


@dataclass(frozen=True)
class Marker:
    shot_id: str
    clip: str
    record_in: int  # frames from 00:00:00:00 at the cut's rate (the record timecode)
    frames: int
    status: str
    take: int | None
    note: str

    @property
    def colour(self) -> str:
        return COLOURS.get(self.status, "Red")

    @property
    def name(self) -> str:
        take = f" take {self.take}" if self.take else ""
        return f"{self.shot_id}: {self.status}{take}" + (f" ({self.note})" if self.note else "")


def markers_of(board: Storyboard, rows: list, notes: dict[str, list[str]]) -> list[Marker]:
    """One marker per shot of `board`, its state from `rows` (status rows by shot id), `notes` beside it."""
    by_id = {r.shot_id: r for r in rows}
    out = []
    for shot in board.shots:
        row = by_id.get(shot.shot_id)
        out.append(Marker(shot.shot_id, shot.name, shot.record_in, shot.frames,
                          row.status if row is not None else "not rendered", row.take_number if row else None,
                          "; ".join(notes.get(shot.shot_id, []))))
    return out


def _safe(text: str) -> str:
    """One line without Resolve's field separator."""
    return cell(text).replace("|", "/")


def markers_edl(board: Storyboard, markers: list[Marker]) -> str:
    """A CMX 3600 list of one-frame events, one per marker, each with Resolve's marker comment."""
    def tc(frame: int) -> str:
        return timecode(frame, board.fps, board.drop_frame)

    lines = [f"TITLE: {_safe(board.name)} markers",
             f"FCM: {'DROP FRAME' if ';' in tc(0) else 'NON-DROP FRAME'}", ""]
    for n, m in enumerate(markers, start=1):
        lines.append(f"{n:03d}  001      V     C        {tc(m.record_in)} {tc(m.record_in + 1)} "
                     f"{tc(m.record_in)} {tc(m.record_in + 1)}  ")
        lines.append(f" |C:ResolveColor{m.colour} |M:{_safe(m.name)} |D:{max(1, m.frames)}")
        lines.append("")
    return "\n".join(lines)


def markers_csv(board: Storyboard, markers: list[Marker]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for m in markers:
        writer.writerow([as_text(str(v)) for v in (
            m.shot_id, m.clip, timecode(m.record_in, board.fps, board.drop_frame),
            timecode(m.record_in + m.frames, board.fps, board.drop_frame), m.frames, m.status, m.take or "", m.colour,
            m.note)])  # a clip name a spreadsheet would run as a formula stays text
    return buffer.getvalue()
