"""Commands over a storyboard file: `validate`, `prompts` (a cut's shot list to fill), `import` (a cut and its
shot list -> a storyboard) and `conform` (the current takes as a timeline an editor opens)."""

from __future__ import annotations

import argparse
from pathlib import Path

import storyboards
from milimo.context import Context
from milimo.prepare import check
from milimo.request import RenderRequest
from milimo.targets import writable_target
from milimo_engine.atomic import atomic_write
from storyboards.errors import ConfigError
from storyboards.load import video_track_labels
from storyboards.validate import segments_of, speed_label

from .args import add_cut_options, add_storyboard
from .reads import board_of, open_store


def _checked(args: argparse.Namespace, context: Context) -> storyboards.Storyboard:
    """The storyboard loaded, its stored overrides applied and validated: what a render of it would see."""
    request = RenderRequest(storyboard=args.storyboard, prompts=args.prompts, size=args.size, rate=args.rate,
                            shots_track=args.shots_track, max_shot_frames=args.max_shot_frames,
                            handles=args.handles, db=context.settings.db_url,
                            asset_roots=[str(r) for r in context.settings.asset_roots] or None)
    return check(request, context, need_model=False).board


def validate(args: argparse.Namespace, context: Context) -> int:
    from milimo.delivery import DeliveryProblems, profile_problems

    board = _checked(args, context)
    if problems := profile_problems(context.settings.config):
        raise DeliveryProblems(problems)
    graph = storyboards.ShotGraph.of(board)
    print(f"{args.storyboard}: ok, {len(board.shots)} shot(s) in {len(graph.chains)} chain(s) at {board.fps:g} fps")
    for chain in graph.chains:
        print(f"  chain {chain.index}: {' -> '.join(chain.shot_ids)}")
    for shot in board.shots:
        if shot.speed != 1:
            print(f"  {speed_label(shot.speed)} on {shot.shot_id}: renders {shot.source_frames} source frame(s) for "
                  f"its {shot.frames} in the cut; the conformed clip keeps the effect")
        if (count := segments_of(board, shot)) > 1:
            print(f"  long shot {shot.shot_id}: {shot.source_frames} frames, rendered as {count} chained segments")
    overridden = [s.shot_id for s in board.shots if s.overridden]
    if overridden:
        print(f"  overrides from the store on: {', '.join(overridden)} (`milimo overrides` lists them)")
    return 0


def prompts(args: argparse.Namespace, context: Context) -> int:
    from storyboards.shotlist import KIND_COLUMN, SHOT, cut_rows, write_shotlist

    board = storyboards.load(args.cut, shots_track=args.shots_track, rate=args.rate)
    target = writable_target(args.output or Path(args.cut).with_suffix(".csv"), [args.cut], force=args.force,
                             what="shot list")
    if target.suffix.lower() == ".ale":
        from storyboards.ale import SHOT_COLUMNS, ale_text, shot_entries

        atomic_write(target, ale_text(shot_entries(board), board.fps, SHOT_COLUMNS))
        print(f"{target}: {len(board.shots)} shot(s) of {board.name!r} at {board.fps:g} fps as an ALE (Tape = the "
              "cut's reel)")
        return 0
    rows = cut_rows(board)
    write_shotlist(rows, target)
    filled = sum(1 for r in rows if r["prompt"])
    skipped = len(rows) - sum(1 for r in rows if r[KIND_COLUMN] == SHOT)
    options = (f" --rate {args.rate:g}" if args.rate else "") + (
        f" --shots-track {args.shots_track}" if args.shots_track else "")
    print(f"{target}: {len(board.shots)} shot(s) of {board.name!r} at {board.fps:g} fps, {filled} with a prompt from "
          f"the cut" + (f", {skipped} generator(s) listed as not rendered" if skipped else "")
          + f"; fill the prompt column, then `milimo import {args.cut} --prompts {target}{options} -o STORYBOARD.otio`")
    if not board.shots and len(board.timeline.video_tracks()) > 1:
        print(f"  note: the shots track {board.track_name} holds no shots; the cut's video tracks are "
              f"{video_track_labels(board.timeline)}: give the one with the shots as --shots-track")
    return 0


def import_cut(args: argparse.Namespace, context: Context) -> int:
    from storyboards.load import write_timeline

    if not args.prompts:
        raise ConfigError("import needs the shot list", f"write one with `milimo prompts {args.storyboard}`, fill "
                          "its prompt column and give it with --prompts")
    target = writable_target(args.output, [args.storyboard, args.prompts], force=args.force, what="import")
    board = _checked(args, context)
    write_timeline(board.timeline, target)
    graph = storyboards.ShotGraph.of(board)
    print(f"{target}: storyboard {board.name!r}, {len(board.shots)} shot(s) in {len(graph.chains)} chain(s) at "
          f"{board.fps:g} fps; render it with `milimo render {target}`")
    return 0


def conform(args: argparse.Namespace, context: Context) -> int:
    from storyboards.conform import EXPORT_FORMATS, export

    if args.output:  # the default target is milimo's own file under the output root: conformed again, replaced
        writable_target(args.output, [args.storyboard, args.prompts], force=args.force, what="conform")
    board = board_of(args)
    store = open_store(args, context)
    rows = store.status(board.name)
    if not rows:
        raise ConfigError(f"{args.storyboard}: storyboard {board.name!r} has no shots in the store "
                          f"{store.engine.url!r}",
                          f"render it first (`milimo render {args.storyboard}`), or give the --db it rendered into")
    suffix = EXPORT_FORMATS[args.format][1]
    target = Path(args.output) if args.output else context.layout().conformed(board.name, suffix)
    path, notes = export(board, store, args.format, target, track=args.track, rows=rows)
    missing = [r.shot_id for r in rows if not r.outputs.mp4]
    print(f"{path}: {len(board.shots) - len(missing)} of {len(board.shots)} shot(s) relinked to their current take"
          + (f"; no take yet: {', '.join(missing)}" if missing else ""))
    for note in notes:
        print(f"  note: {note}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prompts", help="write the shot list (CSV) to fill beside an editor's cut")
    p.add_argument("cut", help="the cut: EDL, FCP 7 XML, AAF, .otio or .otioz")
    add_cut_options(p)
    p.add_argument("-o", "--output", metavar="CSV", help="where to write it (default: beside the cut, .csv; a "
                   ".ale name writes the shots as an Avid bin list instead)")
    p.add_argument("--force", action="store_true", help="replace an existing CSV")
    p.set_defaults(func=prompts)

    p = sub.add_parser("import", help="an editor's cut + its filled shot list -> a milimo storyboard (.otio)")
    add_storyboard(p)
    p.add_argument("-o", "--output", required=True, metavar="STORYBOARD.otio")
    p.add_argument("--force", action="store_true", help="replace an existing file (never the cut or shot list)")
    p.set_defaults(func=import_cut)

    p = sub.add_parser("validate", help="check a storyboard (and its stored overrides) and list every problem")
    add_storyboard(p)
    p.set_defaults(func=validate)

    p = sub.add_parser("conform", help="the current takes as a timeline an editor opens (relinked)")
    add_storyboard(p)
    p.add_argument("--format", required=True, choices=["otio", "otioz", "fcp_xml", "cmx_3600", "ale"],
                   help="ale: the current takes as an Avid bin list (Tape = each take's reel)")
    p.add_argument("-o", "--output", metavar="FILE", help="default: <out>/<storyboard>/<storyboard>.conformed.<ext>")
    p.add_argument("--out", help="output root (default: [paths] out, else ./renders)")
    p.add_argument("--track", metavar="NAME", help="cmx_3600: the video track the EDL carries (default: the shots "
                   "track; an EDL holds one)")
    p.add_argument("--force", action="store_true", help="replace an existing -o file (never the storyboard)")
    p.set_defaults(func=conform)
