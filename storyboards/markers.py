"""Marker lists of a storyboard's shots, for an editor's timeline: one marker per shot at its record in, as long as
the shot, named by its shot id and state, coloured by state. As a marker EDL (what DaVinci Resolve imports onto a
timeline: `|C:colour |M:name |D:duration` under each event) or as CSV (any spreadsheet or script).

Plain data in, text out: the caller reads the status rows (the store) and the notes beside them."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

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


class Placed(Protocol):
    """What a marker EDL event needs: where on the record, for how long, what it says, its colour."""

    @property
    def record_in(self) -> int: ...
    @property
    def frames(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def colour(self) -> str: ...


REVIEW_COLOURS = {"approved": "Green", "needs changes": "Yellow", "rejected": "Red", "pending": "Blue"}
NOTE_COLUMNS = ["shot_id", "clip", "take", "record_in", "record_out", "take_frame", "where", "author", "at",
                "review", "note"]


@dataclass(frozen=True)
class NoteMarker:
    """A review note (or verdict, `text` empty) on the chosen take of a shot, placed on the cut's record: a note
    on frame f of the take's media sits at the shot's record in + f - the take's head handle."""

    shot_id: str
    clip: str
    take: int
    record_in: int
    frames: int
    take_frame: int | None  # of the take's media (handles included); None: the whole take
    where: str
    author: str
    at: datetime | None
    review: str
    text: str

    @property
    def colour(self) -> str:
        return REVIEW_COLOURS.get(self.review, "Blue") if not self.text else "Cyan"

    @property
    def name(self) -> str:
        if not self.text:
            return f"{self.shot_id} take {self.take}: {self.review} by {self.author}"
        return f"{self.shot_id} take {self.take} {self.where}, {self.author}: {self.text}"


def note_markers(board: Storyboard, rows: Sequence[Any], reviews: Sequence[Any]) -> list[NoteMarker]:
    """The verdict and the notes of each shot's chosen take (`reviews`: the store's `TakeReview`s; `rows`: its
    status rows, for each take's head handle), in cut order. A note in a handle, outside the cut, is placed on
    the cut's nearest frame and says so."""
    by_id = {r.shot_id: r for r in rows}
    chosen = {r.shot_id: r for r in reviews if r.current}
    out: list[NoteMarker] = []
    for shot in board.shots:
        review = chosen.get(shot.shot_id)
        if review is None:
            continue
        row = by_id.get(shot.shot_id)
        head = int(row.outputs.head or 0) if row is not None else 0
        if review.by:
            out.append(NoteMarker(shot.shot_id, shot.name, review.take_number, shot.record_in, shot.frames, None,
                                  "take", review.by, review.at, review.state, ""))
        for note in review.notes:
            where, start, length = note.where, shot.record_in, shot.frames
            if note.frame is not None:
                last = note.frame_end if note.frame_end is not None else note.frame
                first_cut, last_cut = note.frame - head, last - head
                inside_first = min(max(first_cut, 0), shot.frames - 1)
                inside_last = min(max(last_cut, inside_first), shot.frames - 1)
                if (inside_first, inside_last) != (first_cut, last_cut):
                    where += " (in a handle, outside the cut)"
                start, length = shot.record_in + inside_first, inside_last - inside_first + 1
            out.append(NoteMarker(shot.shot_id, shot.name, review.take_number, start, length, note.frame, where,
                                  note.author, note.created_at, review.state, note.text))
    return out


def notes_csv(board: Storyboard, markers: Sequence[NoteMarker]) -> str:
    return _csv_text(NOTE_COLUMNS, [(
        m.shot_id, m.clip, m.take, timecode(m.record_in, board.fps, board.drop_frame),
        timecode(m.record_in + m.frames, board.fps, board.drop_frame), "" if m.take_frame is None else m.take_frame,
        m.where, m.author, m.at.strftime("%Y-%m-%d %H:%M:%S") if m.at else "", m.review, m.text) for m in markers])


def _csv_text(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A spreadsheet's CSV; a cell a spreadsheet would run as a formula (a clip name, a note) stays text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([as_text(str(v)) for v in row])
    return buffer.getvalue()


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


def markers_edl(board: Storyboard, markers: Sequence[Placed]) -> str:
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
    return _csv_text(CSV_COLUMNS, [(
        m.shot_id, m.clip, timecode(m.record_in, board.fps, board.drop_frame),
        timecode(m.record_in + m.frames, board.fps, board.drop_frame), m.frames, m.status, m.take or "", m.colour,
        m.note) for m in markers])


@dataclass(frozen=True)
class CutMarker:
    """A marker the editor put in the cut (on a shot's clip or on the shots track): where it falls in the cut as it
    plays (`frame` from the cut's first frame, `frames` long), what it says, and the shot it is on, if any."""

    frame: int
    frames: int
    name: str
    colour: str
    comment: str
    shot_id: str | None


def cut_markers(board: Storyboard) -> list[CutMarker]:
    """The editor's markers of the shots track and its clips, in cut order, each placed where the cut plays it
    (a clip's marker is in its source time: counted from the clip's source in). Markers outside what the cut
    shows of a clip are left out; transitions take no time, as in the preview."""
    import opentimelineio as otio

    from .load import is_shot

    fps = board.fps
    track = board.shots_track()
    found: list[CutMarker] = []

    def frames_of(t: otio.opentime.RationalTime) -> int:
        return round(t.rescaled_to(fps).value)

    def add(marker: otio.schema.Marker, at: int, shot_id: str | None) -> None:
        comment = str(getattr(marker, "comment", "") or "") or str(marker.metadata.get("comment", "") or "")
        found.append(CutMarker(at, max(1, frames_of(marker.marked_range.duration)), marker.name or "",
                               str(marker.color or ""), comment, shot_id))

    for marker in track.markers:
        add(marker, frames_of(marker.marked_range.start_time), None)
    shots = iter(board.shots)
    position = 0
    for item in track:
        if isinstance(item, otio.schema.Transition):
            continue
        length = frames_of(item.duration())
        if length <= 0:
            continue
        shot_id = next(shots).shot_id if is_shot(item) else None
        start = frames_of(item.trimmed_range().start_time)
        for marker in getattr(item, "markers", ()):
            offset = frames_of(marker.marked_range.start_time) - start
            if 0 <= offset < length:
                add(marker, position + offset, shot_id)
        position += length
    return sorted(found, key=lambda m: m.frame)
