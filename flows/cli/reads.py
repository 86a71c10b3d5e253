"""Commands that read the store: `status`, `takes`, `verify`, `markers`, `preview` (what people look at, built
again from the current takes), `overrides` and `qa` (which measures the seams not measured yet). None imports
Prefect; none creates a database."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from milimo.context import Context
from milimo.prepare import load_board
from milimo.qa import measure_seams
from milimo.reports import board_status, current_reviews, status_notes, verdict_labels
from milimo.request import RenderRequest
from storyboards.errors import ConfigError
from storyboards.load import Storyboard
from storyboards.store import ShotStatus, Store, TakeView

from .args import add_out, add_storyboard
from .tables import print_table


def board_of(args: argparse.Namespace) -> Storyboard:
    """The storyboard the command names: a cut or sheet that does not load stops here, before any database is
    opened."""
    return load_board(RenderRequest(storyboard=args.storyboard, prompts=args.prompts, size=args.size,
                                    rate=args.rate, shots_track=args.shots_track, handles=args.handles))


def board_name(args: argparse.Namespace) -> str:
    return board_of(args).name


def open_store(args: argparse.Namespace, context: Context) -> Store:
    """The store a reading command looks at; a SQLite file that is not there is an error, never created."""
    store = context.existing_store()
    if store is None:
        raise ConfigError(f"no store at {context.settings.db_url} (nothing has rendered into it)",
                          f"render first (`milimo render {getattr(args, 'storyboard', 'STORYBOARD')}`), or give the "
                          "--db it rendered into")
    return store


def _json(record: ShotStatus | TakeView) -> dict[str, object]:
    """A record as `--json` prints it: its fields, its outputs as the take recorded them."""
    return {**dataclasses.asdict(record), "outputs": record.outputs.as_dict()}


def status(args: argparse.Namespace, context: Context) -> int:
    name = board_name(args)
    store = open_store(args, context)
    rows, seams = board_status(store, name, args.qa)
    reviews = current_reviews(store, name)
    if args.json:
        print(json.dumps([{**_json(r), "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                           "seams": seams.get(r.shot_id, []), "last_try": r.latest_status,
                           "review": reviews[r.shot_id].state if r.shot_id in reviews else None} for r in rows],
                         indent=2, default=str))
        return 0
    table = []
    for r in rows:
        prompt = (r.prompt or "-").replace("\n", " ")
        table.append((r.shot_id, r.chain_index, r.take_number or "-", r.status, r.quality or "-",
                      (r.spec_hash or "-")[:12], f"{r.seconds:.2f}" if r.seconds is not None else "-",
                      r.finished_at.strftime("%Y-%m-%d %H:%M:%S") if r.finished_at else "-",
                      prompt[:40] + ("…" if len(prompt) > 40 else ""),
                      "; ".join(status_notes(r, seams.get(r.shot_id, []), reviews.get(r.shot_id)))))
    print_table(("shot", "chain", "take", "status", "quality", "spec", "seconds", "finished", "prompt", "notes"),
                table)
    return 0


def takes(args: argparse.Namespace, context: Context) -> int:
    name = board_name(args)
    store = open_store(args, context)
    found = store.takes(name, args.shot_id)
    current = store.current_take(name, args.shot_id)
    if args.json:
        layout = context.layout()
        delivered = store.deliveries([t.id for t in found])
        print(json.dumps([{**_json(t), "log": str(layout.take_log(name, t.shot_id, t.number)),
                           "deliveries": [dataclasses.asdict(f) for f in delivered.get(t.id, [])]} for t in found],
                         indent=2, default=str))
        return 0
    print_table(("take", "id", "status", "current", "asked by", "spec", "handoff in", "handoff out", "mp4 / error"), [
        (t.number, t.id, t.status, "*" if current and current.id == t.id else "", t.requested_by or "-",
         t.spec_hash[:12],
         (t.handoff_in_sha256 or "-")[:12], (t.handoff_out_sha256 or "-")[:12],
         t.outputs.mp4 or (t.error or "").strip().rsplit("\n", 1)[-1][:80]) for t in found])
    return 0


def verify(args: argparse.Namespace, context: Context) -> int:
    name = board_name(args)
    store = open_store(args, context)
    rows = store.status(name)
    bad = store.verify(name)
    missing = [r for r in rows if r.take_id is None or r.status in ("failed", "cancelled", "stale", "not rendered")]
    for found in bad:
        print(f"{args.storyboard}: shot {found.shot_id} take {found.take_number}: {found.kind} {found.problem} "
              f"({found.path}). Fix: run `milimo render {args.storyboard}` to render it again")
    for r in missing:
        print(f"{args.storyboard}: shot {r.shot_id}: {r.status}. Fix: run `milimo render {args.storyboard}`")
    if bad or missing:
        print(f"{args.storyboard}: {len(bad)} damaged or missing file(s), {len(missing)} shot(s) without a good take")
        return 1
    print(f"{args.storyboard}: ok, {len(rows)} shot(s), every artifact matches its recorded size and sha256")
    return 0


def markers(args: argparse.Namespace, context: Context) -> int:
    """Each shot as a marker at its record in, coloured by its state, for the editor's timeline."""
    from storyboards.markers import markers_csv, markers_edl, markers_of

    board = board_of(args)
    store = open_store(args, context)
    rows, seams = board_status(store, board.name, args.qa)
    reviews = current_reviews(store, board.name)
    found = markers_of(board, rows, {r.shot_id: status_notes(r, seams.get(r.shot_id, []), reviews.get(r.shot_id))
                                     for r in rows})
    text = markers_edl(board, found) if args.format == "edl" else markers_csv(board, found)
    return write_marker_list(args, text, f"{len(found)} marker(s), one per shot")


def write_marker_list(args: argparse.Namespace, text: str, said: str) -> int:
    """A marker list printed, or written to `-o` (atomically, never over the cut or its shot list)."""
    from milimo.targets import writable_target
    from milimo_engine.atomic import atomic_write

    if not args.output:
        print(text, end="")
        return 0
    target = atomic_write(writable_target(args.output, [args.storyboard, args.prompts], force=args.force,
                                          what="marker list"), text)
    print(f"{target}: {said}" + (
        " (DaVinci Resolve: Timeline > Import > Timeline Markers from EDL)" if args.format == "edl" else ""))
    return 0


def add_marker_list_output(p: argparse.ArgumentParser, csv_rows: str) -> None:
    p.add_argument("--format", choices=["edl", "csv"], default="edl",
                   help=f"edl: a marker EDL DaVinci Resolve imports (default); csv: {csv_rows}")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write it (default: print it)")
    p.add_argument("--force", action="store_true", help="replace an existing -o file")


def preview(args: argparse.Namespace, context: Context) -> int:
    """The preview, the contact sheet and the rendered timeline built again from the current takes, without a render:
    after a pin, a repaired file, or for a preview without burn-ins. Parts of takes that did not change are reused."""
    from milimo import outputs
    from milimo.preview import preview as build_preview

    board = board_of(args)
    store = open_store(args, context)
    layout = context.layout()
    layout.check_claim(board.name, lambda: store.storyboard_uid(board.name))  # not into another store's folder
    rows = store.status(board.name)
    if not any(r.take_id is not None for r in rows):
        raise ConfigError(f"storyboard {board.name!r} has no takes in {context.settings.db_url}",
                          f"render it first (`milimo render {args.storyboard}`), or give the --db it rendered into")
    built = build_preview(layout, board, rows, warn=lambda line: print(line, file=sys.stderr),
                          burn_ins=not args.no_burn_ins, verdicts=verdict_labels(store, board.name))
    sheet = outputs.contact_sheet(layout, board.name, rows, store.seams(board.name), args.qa)
    timeline = outputs.rendered_timeline(board, store, layout, rows)
    good = sum(r.status == "succeeded" for r in rows)
    print(f"{board.name}: {good} of {len(rows)} shot(s) with a good take")
    for label, path in (("preview", built), ("contact_sheet", sheet), ("otio", timeline)):
        print(f"  {label}: {path if path else 'none (no shot has a good take)'}")
    return 0


def overrides(args: argparse.Namespace, context: Context) -> int:
    name = board_name(args)
    store = open_store(args, context)
    if args.all or args.clear:
        cleared = store.clear_overrides(name, None if args.all else args.clear)
        print(f"{name}: cleared the overrides of {len(cleared)} shot(s) {cleared}; the file's values apply again")
        return 0
    stored = store.overrides(name)
    if not stored:
        print(f"{name}: no overrides; every shot renders as the file says")
        return 0
    print_table(("shot", "key", "value"), [(shot_id, key, json.dumps(value)) for shot_id, values in
                                           sorted(stored.items()) for key, value in sorted(values.items())])
    return 0


METRICS = ("pixel_ratio", "histogram", "luma_jump", "audio_jump", "spectral_flux")


def qa(args: argparse.Namespace, context: Context) -> int:
    from storyboards.seams import seam_verdict

    name = board_name(args)
    seams = measure_seams(open_store(args, context), name, args.qa)
    rows = []
    for seam in seams:
        score, flagged = seam_verdict(seam, args.qa)
        rows.append({"seam": seam.label, "kind": seam.kind, "left": seam.left_shot_id, "right": seam.right_shot_id,
                     "frame": seam.frame, "score": score, "flagged": flagged, **seam.metrics})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"{name}: no seams to measure yet (render the storyboard first)")
        return 0
    print_table(("seam", "kind", "pixel", "hist", "luma", "audio", "flux", "score", ""), [
        (r["seam"], r["kind"], *(f"{r[k]:.2f}" if r.get(k) is not None else "-" for k in METRICS),
         f"{r['score']:.2f}", "FLAGGED" if r["flagged"] else ("hard cut" if r["kind"] == "hard" else "ok"))
        for r in rows])
    count = sum(1 for r in rows if r["flagged"])
    print(f"{name}: {len(rows)} seam(s), {count} flagged (thresholds: "
          + ", ".join(f"{k} {v:g}" for k, v in args.qa.model_dump().items()) + ")")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("qa", help="seam QA: every handoff cut and segment boundary measured; flagged above [qa]")
    add_storyboard(p)
    p.add_argument("--json", action="store_true")
    add_out(p)
    p.set_defaults(func=qa)

    p = sub.add_parser("status", help="each shot with its current take, a running take, overrides, problems")
    add_storyboard(p)
    p.add_argument("--json", action="store_true")
    add_out(p)
    p.set_defaults(func=status)

    p = sub.add_parser("takes", help="every take of one shot")
    add_storyboard(p)
    p.add_argument("shot_id")
    p.add_argument("--json", action="store_true")
    add_out(p)
    p.set_defaults(func=takes)

    p = sub.add_parser("verify", help="hash every artifact of the current takes again; exit 1 if any is off")
    add_storyboard(p)
    add_out(p)
    p.set_defaults(func=verify)

    p = sub.add_parser("markers", help="each shot as a marker (shot id, state, take) for the editor's timeline")
    add_storyboard(p)
    add_marker_list_output(p, "one row per shot")
    add_out(p)
    p.set_defaults(func=markers)

    p = sub.add_parser("preview", help="build the preview, contact sheet and rendered timeline again from the "
                                       "current takes (after a pin or a repair), without rendering")
    add_storyboard(p)
    p.add_argument("--no-burn-ins", action="store_true", help="a preview without shot, take and timecode burn-ins")
    add_out(p)
    p.set_defaults(func=preview)

    p = sub.add_parser("overrides", help="list the stored overrides, or clear them")
    add_storyboard(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--clear", nargs="+", metavar="SHOT", help="clear these shots' overrides")
    group.add_argument("--all", action="store_true", help="clear every override of the storyboard")
    p.set_defaults(func=overrides)
