"""Review from a terminal: `review` (each take's state and notes), `approve`, `needs-changes`, `reject`, `note`
and `stop` (a rendering take, at its next step). Each records who (`--by`, else MILIMO_USER, else the login name)
and when; approving a take chooses it for its shot, as the dashboard's pin does. None imports Prefect; none
creates a database."""

from __future__ import annotations

import argparse
import dataclasses
import json

from milimo.context import Context
from storyboards.store import VERDICTS, ReviewState, TakeReview
from storyboards.store.records import frame_span

from .args import add_out, add_storyboard, positive_int
from .reads import add_marker_list_output, board_name, board_of, open_store, write_marker_list
from .tables import print_table


def review(args: argparse.Namespace, context: Context) -> int:
    name = board_name(args)
    found = open_store(args, context).reviews(name)
    if args.json:
        print(json.dumps([_json(r) for r in found], indent=2, default=str))
        return 0
    print_table(("shot", "take", "chosen", "state", "by", "when", "notes"),
                [(r.shot_id, r.take_number, "yes" if r.current else "", r.state, r.by, _when(r.at), len(r.notes))
                 for r in found])
    notes = [(r, n) for r in found for n in r.notes]
    if notes:
        print()
        print_table(("shot", "take", "where", "by", "when", "note"),
                    [(r.shot_id, r.take_number, n.where, n.author, _when(n.created_at), n.text.replace("\n", " "))
                     for r, n in notes])
    return 0


def verdict(args: argparse.Namespace, context: Context) -> int:
    name = board_name(args)
    store = open_store(args, context)
    state = VERDICTS[args.command]
    user = context.settings.user
    stale = store.review_take(name, args.shot_id, args.take, state, user, note=args.note)
    said = f"{name}: {args.shot_id} take {args.take}: {state.value} by {user}"
    if state is ReviewState.approved:
        said += "; it is the shot's chosen take"
    print(said)
    if stale:
        print(f"  stale now (they continued from another take): {', '.join(stale)}; "
              f"`milimo render {args.storyboard}` renders them from this one")
    return 0


def note(args: argparse.Namespace, context: Context) -> int:
    name = board_name(args)
    frame, frame_end = args.frame if args.frame is not None else (None, None)
    added = open_store(args, context).add_note(name, args.shot_id, args.take, args.text, context.settings.user,
                                               frame=frame, frame_end=frame_end)
    where = f" at {added.where}" if added.frame is not None else ""
    print(f"{name}: {args.shot_id} take {args.take}: note{where} by {added.author}")
    return 0


def stop(args: argparse.Namespace, context: Context) -> int:
    """Ask one rendering take to stop at its next step; the render it belongs to goes on with its other shots."""
    name = board_name(args)
    store = open_store(args, context)
    number = args.take if args.take is not None else store.running_take(name, args.shot_id).number
    take = store.request_cancel(name, args.shot_id, number, context.settings.user)
    print(f"{name}: {args.shot_id} take {take.number}: asked to stop at its next step by {take.cancel_requested_by}")
    return 0


def notes(args: argparse.Namespace, context: Context) -> int:
    """The chosen takes' verdicts and notes as markers on the cut's record, for the editor."""
    from storyboards.markers import markers_edl, note_markers, notes_csv

    board = board_of(args)
    store = open_store(args, context)
    found = note_markers(board, store.status(board.name), store.reviews(board.name))
    text = markers_edl(board, found) if args.format == "edl" else notes_csv(board, found)
    return write_marker_list(args, text, f"{len(found)} marker(s): the chosen takes' verdicts and notes")


def _json(r: TakeReview) -> dict[str, object]:
    out = dataclasses.asdict(r)
    out["history"] = [{"state": state, "by": by, "at": at} for state, by, at in r.history]
    return out


def _when(at: object) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at is not None else "-"  # type: ignore[attr-defined]


def frames(text: str) -> tuple[int, int | None]:
    try:
        return frame_span(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _take_arguments(p: argparse.ArgumentParser) -> None:
    add_storyboard(p)
    add_out(p)
    p.add_argument("shot_id", metavar="SHOT")
    p.add_argument("take", type=positive_int, metavar="TAKE", help="the take's number (`milimo takes` lists them)")
    p.add_argument("--by", metavar="NAME", help="who says so (default: $MILIMO_USER, else your login name)")


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("review", help="each take's review state (pending, approved, needs changes, rejected) and notes")
    add_storyboard(p)
    add_out(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=review)
    for command, state in VERDICTS.items():
        p = sub.add_parser(command, help=f"mark a take {state.value}"
                           + ("; it becomes the shot's chosen take" if state is ReviewState.approved else ""))
        _take_arguments(p)
        p.add_argument("--note", help="a note beside the verdict")
        p.set_defaults(func=verdict)
    p = sub.add_parser("note", help="a note on a take, on a frame (--frame N), a range (--frame A-B) or all of it")
    _take_arguments(p)
    p.add_argument("text", help="the note")
    p.add_argument("--frame", type=frames, metavar="N|A-B", help="the frame (or range) of the take's media it is about")
    p.set_defaults(func=note)
    p = sub.add_parser("stop", help="ask a rendering take to stop at its next step (its render goes on with the "
                                    "other shots)")
    add_storyboard(p)
    add_out(p)
    p.add_argument("shot_id", metavar="SHOT")
    p.add_argument("take", type=positive_int, nargs="?", metavar="TAKE", help="default: the shot's take rendering now")
    p.add_argument("--by", metavar="NAME", help="who asks (default: $MILIMO_USER, else your login name)")
    p.set_defaults(func=stop)
    p = sub.add_parser("notes", help="the chosen takes' verdicts and notes as markers at their record timecode, for "
                                     "the editor's timeline")
    add_storyboard(p)
    add_marker_list_output(p, "one row per verdict or note")
    add_out(p)
    p.set_defaults(func=notes)

