"""The shot list: a CSV a person fills beside an editor's cut, because no editor writes prompts.

`cut_rows` + `write_shotlist` give one row per clip with the cut's facts (clip, reel, record and source
timecodes, frames) and empty columns for what milimo needs; `read_shotlist` + `apply_shotlist` turn the
filled sheet back into `metadata["milimo"]` on a copy of the cut. Rows match by `shot_id`, else by a
unique clip name. Spreadsheet exports are accepted as they come: UTF-8 with or without a BOM, commas or
semicolons. Cells holding several entries (LoRAs, images) separate them with `|`.
"""

from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import opentimelineio as otio

from milimo_engine.atomic import atomic_write

from .editorial import clip_prompt, timecode
from .errors import RowProblem, ShotListInvalid
from .fields import check, derived_id
from .load import is_shot
from .schema import NAMESPACE, plain, suggest
from .validate import MIN_HANDOFF_FRAMES

if TYPE_CHECKING:
    from .load import Storyboard

CUT_COLUMNS = ("shot_id", "clip", "reel", "record_in", "record_out", "source_in", "frames")
FILL_COLUMNS = ("prompt", "negative_prompt", "seed", "loras", "images", "handoff", "handles", "max_shot_frames",
                "notes")
KIND_COLUMN = "kind"  # `shot`, or what else the row is (a generator: black, bars, a title) and that it is not rendered
COLUMNS = CUT_COLUMNS + FILL_COLUMNS + (KIND_COLUMN,)
SHOT = "shot"


@dataclass(frozen=True)
class ShotListRow:
    """One filled row, its cells parsed; `number` is the row as a spreadsheet shows it (header = 1)."""

    number: int
    shot_id: str
    clip: str
    settings: dict[str, Any]  # the clip's `metadata["milimo"]` values this row sets
    reel: str = ""
    source_in: str = ""


def _format_entries(entries: list[dict], key: str, sep: str) -> str:
    out = []
    for e in entries or []:
        value = e.get(key)
        out.append(str(e.get("path", "")) + (f"{sep}{value:g}" if isinstance(value, (int, float)) else ""))
    return " | ".join(out)


def cut_rows(board: Storyboard) -> list[dict[str, str]]:
    """One row per clip of the shots track, in record order: each shot with the cut's facts and what milimo
    already knows (a storyboard's metadata, or a prompt the editor left in an EDL comment, a marker or a clip
    comment); each generator (black, bars, a title) with its kind, as not rendered."""
    placed: list[tuple[int, dict[str, str]]] = []
    continued = through_edits(board)
    for shot, clip in zip(board.shots, board.clips(), strict=False):
        m = shot.metadata
        images = " | ".join(f"{e.get('path', '')}@{e.get('frame', 0)}"
                            + (f":{e['strength']:g}" if isinstance(e.get("strength"), (int, float)) else "")
                            for e in m.get("images") or [])
        placed.append((shot.record_in, {
            "shot_id": shot.shot_id, "clip": shot.name, "reel": shot.reel or "",
            "record_in": shot.record_timecode,
            "record_out": timecode(shot.record_in + shot.frames, shot.fps, shot.drop_frame),
            "source_in": shot.source_timecode, "frames": str(shot.frames),
            "prompt": m.get("prompt") or clip_prompt(clip) or "", "negative_prompt": m.get("negative_prompt") or "",
            "seed": "" if m.get("seed") is None else str(m["seed"]),
            "loras": _format_entries(m.get("loras") or [], "weight", ":"), "images": images,
            "handoff": m.get("handoff") or ("previous" if shot.index in continued else ""),
            "handles": "" if m.get("handles") is None else str(m["handles"]),
            "max_shot_frames": "" if m.get("max_shot_frames") is None else str(m["max_shot_frames"]),
            "notes": m.get("notes") or "", KIND_COLUMN: SHOT,
        }))
    for generator in board.generators:  # in the list where the cut has them, so the sheet reads like the cut
        record_in = board.record_start + generator.start_frame
        row = dict.fromkeys(COLUMNS, "")
        row.update({"clip": generator.name, "record_in": timecode(record_in, board.fps, board.drop_frame),
                    "record_out": timecode(record_in + generator.frames, board.fps, board.drop_frame),
                    "frames": str(generator.frames),
                    KIND_COLUMN: f"generator ({generator.kind}): not rendered"})
        placed.append((record_in, row))
    return [row for _, row in sorted(placed, key=lambda p: p[0])]


def through_edits(board: Storyboard) -> set[int]:
    """The shots (by index) that continue the shot before them in the source: the same reel, the source-in where
    the other ended, straight after it with nothing between, not even a transition (an editor's split of one take).
    Their rows start as `handoff: previous`, so the rendered shot stays continuous across the split; writing `none`
    opts out. One pass over the shots track."""
    found: set[int] = set()
    shots = iter(board.shots)
    before, adjacent = None, False
    for item in board.shots_track():
        if not is_shot(item):
            adjacent = False  # a gap, a transition, a generator between
            continue
        shot = next(shots)
        if adjacent and before is not None and shot.reel and shot.reel == before.reel \
                and before.source_frames >= MIN_HANDOFF_FRAMES \
                and before.source_in + before.source_frames == shot.source_in:
            found.add(shot.index)
        before, adjacent = shot, True
    return found


def write_shotlist(rows: list[dict[str, str]], target: str | Path) -> Path:
    """The CSV, atomically, UTF-8 with a BOM so that spreadsheets open accents and quotes as written."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({k: as_text(v) for k, v in row.items()} for row in rows)
    return atomic_write(Path(target), buffer.getvalue().encode("utf-8-sig"))


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet runs as a formula, leading a cell


def as_text(cell: str) -> str:
    """A cell a spreadsheet shows as the text it is: one that would start a formula (`=HYPERLINK(...)`, `+1`,
    `@SUM`) gets a leading `'`, which spreadsheets hide and `read_shotlist` takes off again."""
    return f"'{cell}" if isinstance(cell, str) and cell.startswith(FORMULA_START) else cell


def _from_text(cell: str) -> str:
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_START) else cell


def _delimiter(header: str) -> str:
    return ";" if header.count(";") > header.count(",") else ","


def _entries(text: str, number: int, column: str, problems: list[RowProblem]) -> list[dict[str, Any]]:
    """`a.safetensors:0.8 | b.safetensors` (LoRAs) or `first.png@0 | last.png@48:0.7` (images)."""
    out: list[dict[str, Any]] = []
    for part in (p.strip() for p in text.replace("\n", "|").split("|")):
        if not part:
            continue
        if column == "loras":
            path, _, weight = part.rpartition(":") if ":" in part else (part, "", "")
            entry: dict[str, Any] = {"path": path.strip() or part}
            if weight.strip():
                try:
                    entry["weight"] = float(weight)
                except ValueError:
                    entry = {"path": part}  # a colon in the path, not a weight
            out.append(entry)
            continue
        path, _, where = part.partition("@")
        frame_text, _, strength_text = where.partition(":")
        entry = {"path": path.strip()}
        try:
            entry["frame"] = int(frame_text) if frame_text.strip() else 0
            if strength_text.strip():
                entry["strength"] = float(strength_text)
        except ValueError:
            problems.append(RowProblem(number, column, f"{part!r} is not path@frame[:strength]",
                                       "write e.g. first.png@0 or last.png@48:0.8, entries separated by |"))
            continue
        out.append(entry)
    return out


@dataclass(frozen=True)
class ShotList:
    source: Path
    rows: tuple[ShotListRow, ...]
    problems: tuple[RowProblem, ...]  # cells that did not parse; reported with the matching problems


def read_shotlist(path: str | Path) -> ShotList:
    """Parse a filled shot list. A file that is not a shot list (unreadable, no header, unknown columns) raises
    ShotListInvalid at once; problems in cells are kept to be reported with every other problem."""
    p = Path(path)
    text = _read_text(p)
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(text.splitlines()[0]))
    header = [h.strip().lower() for h in next(reader)]
    problems = _header_problems(header)
    if problems:
        raise ShotListInvalid(p, problems)
    rows: list[ShotListRow] = []
    for number, cells in enumerate(reader, start=2):
        record = {header[i]: _from_text(cell.strip()) for i, cell in enumerate(cells)
                  if i < len(header) and header[i]}
        if record.get(KIND_COLUMN, SHOT).lower() not in ("", SHOT):
            continue  # a generator's row: in the sheet for the editor's eye, nothing to render
        if any(record.values()):
            rows.append(_row(number, record, problems))
    return ShotList(p, tuple(rows), tuple(problems))


def _read_text(p: Path) -> str:
    if not p.is_file():
        raise ShotListInvalid(p, [RowProblem(None, "-", "no such file", "give the CSV that `milimo prompts` wrote")])
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ShotListInvalid(p, [RowProblem(None, "-", f"is not UTF-8 text ({exc.reason} at byte {exc.start})",
                                             "save the sheet as CSV UTF-8")]) from None
    if not text.splitlines():
        raise ShotListInvalid(p, [RowProblem(None, "-", "is empty", "write `milimo prompts CUT -o FILE` and fill it")])
    return text.replace("\r\n", "\n").replace("\r", "\n")  # Windows, and CR alone (Excel for Mac)


def _header_problems(header: list[str]) -> list[RowProblem]:
    problems: list[RowProblem] = []
    for name in header:
        if name and name not in COLUMNS:
            guess = suggest(name, set(COLUMNS))
            problems.append(RowProblem(1, name, "unknown column",
                                       f"did you mean {guess!r}?" if guess else f"use the columns {list(COLUMNS)}"))
    if "prompt" not in header or not ({"shot_id", "clip"} & set(header)):
        problems.append(RowProblem(1, "prompt" if "prompt" not in header else "shot_id",
                                   "missing column", "keep the header `milimo prompts` wrote (shot_id, clip, prompt)"))
    return problems


def _row(number: int, record: dict[str, str], problems: list[RowProblem]) -> ShotListRow:
    """One row's settings; its cell problems go to `problems`, to be reported with every other problem."""
    settings: dict[str, Any] = {}
    shot_label = record.get("shot_id") or record.get("clip") or "?"
    for column in ("prompt", "negative_prompt", "notes"):
        if record.get(column):
            settings[column] = record[column]
    if not record.get("prompt"):
        problems.append(RowProblem(number, "prompt", f"is empty for shot {shot_label!r}", "write what the shot shows"))
    for column in ("seed", "handles", "max_shot_frames"):  # whole numbers
        if record.get(column):
            text = record[column]
            value: Any = int(text) if text.isascii() and text.isdigit() else text  # "5²" is a digit, not a number
            wrong = check(column, value)
            if wrong:
                problems.append(RowProblem(number, column, wrong[0], wrong[1]))
            else:
                settings[column] = value
    if record.get("handoff"):
        handoff = record["handoff"].lower()
        if check("handoff", handoff):
            problems.append(RowProblem(number, "handoff", f"{record['handoff']!r} is not one of the choices",
                                       "write previous (continue from the shot above) or none, or leave it empty"))
        else:
            settings["handoff"] = handoff
    for column in ("loras", "images"):
        if record.get(column):
            entries = _entries(record[column], number, column, problems)
            if entries:
                settings[column] = entries
    return ShotListRow(number, record.get("shot_id", ""), record.get("clip", ""), settings,
                       record.get("reel", ""), record.get("source_in", ""))


def _disagreement(row: ShotListRow, shot: Any) -> tuple[str, str] | None:
    """(column, why) when a row matched by shot_id describes another clip than the shot's (the editor swapped or
    replaced clips): its prompt would land on the wrong picture."""
    if not row.shot_id or row.shot_id != shot.shot_id:
        return None
    for column, mine, theirs in (("clip", row.clip, shot.name), ("reel", row.reel, shot.reel or ""),
                                 ("source_in", row.source_in, shot.source_timecode)):
        if mine and mine != theirs:
            return column, f"{mine!r} is not the {column} of shot {shot.shot_id!r} in the cut ({theirs!r})"
    return None


def apply_shotlist(board: Storyboard, sheet: ShotList, size: tuple[int, int] | None = None,
                   handles: int | None = None) -> otio.schema.Timeline:
    """A copy of the cut's timeline with every shot's `metadata["milimo"]` filled from its row. Clips, names,
    ranges, markers and transitions stay as the editor cut them. Raises ShotListInvalid listing every
    problem: cells, unmatched rows, shots without a row."""
    rows, source = sheet.rows, sheet.source
    problems: list[RowProblem] = list(sheet.problems)
    by_id = {s.shot_id: s for s in board.shots}
    by_clip: dict[str, list] = {}
    for s in board.shots:
        by_clip.setdefault(s.name, []).append(s)
    matched: dict[str, ShotListRow] = {}
    for row in rows:
        shot = by_id.get(row.shot_id) if row.shot_id else None
        if shot is None and row.clip and len(by_clip.get(row.clip, [])) == 1:
            shot = by_clip[row.clip][0]
        if shot is None:
            why = (f"shot_id {row.shot_id!r} and clip {row.clip!r} match no shot of the cut"
                   if row.clip not in by_clip else f"clip {row.clip!r} is {len(by_clip[row.clip])} clips of the cut")
            problems.append(RowProblem(row.number, "shot_id", why,
                                       f"use a shot_id of the cut: {sorted(by_id)}"))
            continue
        disagree = _disagreement(row, shot)
        if disagree:
            problems.append(RowProblem(row.number, disagree[0], disagree[1],
                                       "the cut changed since the sheet was written: correct the cell or the "
                                       "shot_id, or write a fresh sheet with `milimo prompts` and copy the prompts"))
            continue
        if shot.shot_id in matched:
            problems.append(RowProblem(row.number, "shot_id", f"shot {shot.shot_id!r} is also filled by row "
                                       f"{matched[shot.shot_id].number}", "keep one row per shot"))
            continue
        matched[shot.shot_id] = row
    for shot in board.shots:
        if shot.shot_id not in matched:
            problems.append(RowProblem(None, "shot_id", f"shot {shot.shot_id!r} (clip {shot.name!r}) has no row",
                                       "add a row for it (run `milimo prompts` again for a fresh sheet)"))
    if problems:
        raise ShotListInvalid(source, sorted(problems, key=lambda pr: (pr.row is None, pr.row or 0)))
    timeline = copy.deepcopy(board.timeline)
    for shot, clip in zip(board.shots, board.clips(timeline), strict=False):
        meta = plain(clip.metadata.get(NAMESPACE, {})) or {}
        meta = meta if isinstance(meta, dict) else {}
        meta.update({"shot_id": shot.shot_id, **matched[shot.shot_id].settings})
        clip.metadata[NAMESPACE] = meta
    tmeta = plain(timeline.metadata.get(NAMESPACE, {})) or {}
    tmeta = tmeta if isinstance(tmeta, dict) else {}
    tmeta.setdefault("storyboard_id", derived_id(board.name, "storyboard"))
    if board.shots_track(timeline) is not next(iter(timeline.video_tracks())):
        tmeta["shots_track"] = board.track_name  # the storyboard keeps the track the cut was imported by
    if size:
        tmeta["defaults"] = {**(tmeta.get("defaults") or {}), "width": size[0], "height": size[1]}
    if handles is not None:  # an editor's cut renders with handles (a row's `handles` cell overrides its shot)
        tmeta["defaults"] = {**(tmeta.get("defaults") or {}), "handles": handles}
    tmeta["imported_from"] = {"cut": str(board.source_path), "shot_list": str(source)}
    timeline.metadata[NAMESPACE] = tmeta
    return timeline
