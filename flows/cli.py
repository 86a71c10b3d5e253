"""The `milimo` command line.

    milimo render STORYBOARD [--model DIR] [--out DIR] [--db URL] [--only ID ...] [--from-shot ID] [--rate FPS]
    milimo rerender STORYBOARD --from-shot ID [--set key=value ...]   (key=null removes an override)
    milimo validate STORYBOARD [--rate FPS]
    milimo status STORYBOARD [--json]
    milimo takes STORYBOARD SHOT_ID [--json]
    milimo verify STORYBOARD                      (every artifact hashed again; exit 1 if anything is off)
    milimo overrides STORYBOARD [--clear SHOT ... | --all]
    milimo model tiny DIR
    milimo serve [--config FILE] [--storyboard PATH --cron EXPR] [--watch DIR]
    milimo demo

Exit codes: 0 done; 2 input, configuration or environment to fix (one line per problem, the fix
named, no traceback); 1 a shot failed while rendering; 130/143 interrupted (run it again to resume).
Defaults: the embedded tiny model, SQLite at renders/milimo.db, outputs under ./renders/, and
Prefect's local server with telemetry off. Prefect is imported only by the commands that run flows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

NOISE_NOTICE = ("NOTE: no --model given, so this uses the embedded tiny LTX-2 bundle with RANDOM weights. "
                "Its output is noise; it shows the pipeline works, not what LTX-2 looks like.")


def _model_tiny(args: argparse.Namespace) -> int:
    from milimo_engine import build_tiny_model

    path = build_tiny_model(args.dir, seed=args.seed, overwrite=args.force)
    print(f"wrote tiny random LTX-2 bundle to {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from milimo_engine import LoraSpec, ModelLedger, ShotRequest, TwoStagePipeline, ensure_tiny_model
    from milimo_engine.media import probe

    if args.model:
        model_dir = Path(args.model)
    else:
        print(NOISE_NOTICE, file=sys.stderr)
        model_dir = ensure_tiny_model()
    ledger = ModelLedger.open(model_dir, device=args.device, dtype=args.dtype)
    loras = ()
    style = ledger.manifest.loras.get("style")
    if style and not args.model:
        loras = (LoraSpec(model_dir / style, 0.8),)
    request = ShotRequest(prompt=args.prompt, seed=args.seed, width=args.width, height=args.height,
                          num_frames=args.frames, fps=args.fps, steps=args.steps, loras=loras,
                          temporal_upsample=args.temporal)
    result = TwoStagePipeline(ledger)(request)
    out = Path(args.out)
    mp4 = result.save_mp4(out / "demo.mp4")
    info = probe(mp4)
    from milimo_engine.atomic import atomic_write

    atomic_write(out / "demo.json", json.dumps({"model_dir": str(model_dir), **result.summary(),
                                                "ledger": ledger.report()}, indent=2, default=str))
    print(f"{mp4}: {info.frames} frames at {float(info.fps):g} fps, {info.width}x{info.height}, "
          f"audio={'yes' if info.has_audio else 'no'}; total {result.timings['total']:.2f}s "
          f"(stage1 {result.timings['stage1']:.2f}s, stage2 {result.timings['stage2']:.2f}s)")
    return 0


def _store_if_any(db: str | None):
    """The store when it exists (a SQLite file that is there, or a server URL); None for a SQLite file
    not created yet, so checking bad input never creates a database."""
    from sqlalchemy import make_url

    from storyboards.store import Store
    from storyboards.store.db import default_url

    url = db or default_url()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        return None
    return Store.open(url)


def _checked_board(path: str, rate: float | None, db: str | None, shot_ids: list[str] | None = None,
                   overrides: dict | None = None):
    """Load and validate, stored overrides and these new ones applied, before anything starts or is stored."""
    import storyboards
    from storyboards.overrides import apply_overrides, merge

    board = storyboards.load(path, rate=rate)
    for shot_id in shot_ids or []:
        board.shot(shot_id)
    fresh = apply_overrides(board, merge({}, overrides))
    storyboards.validate(fresh).raise_if_invalid(path)  # the file and the new values, before any store exists
    store = _store_if_any(db)
    if store is not None:
        store.check_identity(board)
        board = apply_overrides(board, merge(store.overrides(board.name), overrides))
        storyboards.validate(board).raise_if_invalid(path)
    return board, store


def _run_interruptibly(work: Callable[[], Any]) -> Any:
    """Run `work` (a flow) in a thread while the main thread owns SIGINT and SIGTERM: the first signal
    asks every running shot to stop at its next step and no new shot to start; a second one quits now."""
    from tasks.worker import clear_interrupt, interrupted, request_interrupt

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    def on_signal(signum: int, _frame) -> None:
        if interrupted():
            print("milimo: stopping now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        print(f"milimo: {signal.Signals(signum).name}: stopping; the running shot stops at its next step "
              "(again to quit at once)", file=sys.stderr, flush=True)
        request_interrupt(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=target, name="milimo-flow", daemon=True)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    signum = interrupted()
    clear_interrupt()
    if "error" in outcome:
        raise outcome["error"]
    if signum:
        from storyboards.errors import Interrupted

        result = outcome["value"]
        raise Interrupted(signum, len(result["rendered"]) + len(result["skipped"]), 0)
    return outcome["value"]


def _render_flow(args: argparse.Namespace, **kwargs: Any) -> dict:
    from .prefect_server import prefect_api

    with prefect_api():
        from flows.render import render_storyboard

        return _run_interruptibly(lambda: render_storyboard(
            args.storyboard, model=args.model, out=args.out, db=args.db, devices=args.device or None,
            time_limit_s=args.time_limit, rate=args.rate, draft=args.draft, **kwargs))


def _render(args: argparse.Namespace) -> int:
    _checked_board(args.storyboard, args.rate, args.db, (args.only or []) + ([args.from_shot] if args.from_shot else []))
    _report(_render_flow(args, only=args.only or None, from_shot=args.from_shot))
    return 0


def _rerender(args: argparse.Namespace) -> int:
    from storyboards.overrides import parse_assignments

    overrides = parse_assignments(args.set or [])
    _checked_board(args.storyboard, args.rate, args.db, [args.from_shot],
                   {args.from_shot: overrides} if overrides else None)
    _report(_render_flow(args, from_shot=args.from_shot,
                         overrides={args.from_shot: overrides} if overrides else None))
    return 0


def _report(result: dict) -> None:
    print(f"{result['storyboard']}: rendered {len(result['rendered'])} shot(s) {result['rendered']}, "
          f"kept {len(result['skipped'])} {result['skipped']}")
    for key in ("otio", "preview", "contact_sheet"):
        if result.get(key):
            print(f"  {key}: {result[key]}")


def _validate(args: argparse.Namespace) -> int:
    import storyboards

    board, _ = _checked_board(args.storyboard, args.rate, args.db)
    graph = storyboards.ShotGraph.of(board)
    print(f"{args.storyboard}: ok, {len(board.shots)} shot(s) in {len(graph.chains)} chain(s) at {board.fps:g} fps")
    for chain in graph.chains:
        print(f"  chain {chain.index}: {' -> '.join(chain.shot_ids)}")
    overridden = [s.shot_id for s in board.shots if s.overridden]
    if overridden:
        print(f"  overrides from the store on: {', '.join(overridden)} (`milimo overrides` lists them)")
    return 0


def _board_name(path: str, rate: float | None = None) -> str:
    import storyboards

    return storyboards.load(path, rate=rate).name


def _open_store(args: argparse.Namespace):
    from storyboards.store import Store

    return Store.open(args.db)


def _status(args: argparse.Namespace) -> int:
    rows = _open_store(args).status(_board_name(args.storyboard, args.rate))
    if args.json:
        print(json.dumps([{**r.__dict__, "finished_at": r.finished_at.isoformat() if r.finished_at else None}
                          for r in rows], indent=2, default=str))
        return 0
    table = [("shot", "chain", "take", "status", "quality", "spec", "seconds", "finished", "prompt", "notes")]
    for r in rows:
        notes = []
        if r.running:
            step = f" {r.running.get('stage')} step {r.running.get('step')}/{r.running.get('total')}" \
                if r.running.get("total") else ""
            notes.append(f"running: take {r.running['take']} on {r.running.get('host')}{step}")
        if r.overrides:
            notes.append("override: " + ", ".join(f"{k}={v!r}" for k, v in sorted(r.overrides.items())))
        if not r.spec_is_current and r.take_number:
            notes.append("spec changed since this take")
        prompt = (r.prompt or "-").replace("\n", " ")
        table.append((r.shot_id, str(r.chain_index), str(r.take_number or "-"), r.status, r.quality or "-",
                      (r.spec_hash or "-")[:12],
                      f"{r.seconds:.2f}" if r.seconds is not None else "-",
                      r.finished_at.strftime("%Y-%m-%d %H:%M:%S") if r.finished_at else "-",
                      prompt[:40] + ("…" if len(prompt) > 40 else ""), "; ".join(notes)))
    _print_table(table)
    return 0


def _takes(args: argparse.Namespace) -> int:
    store = _open_store(args)
    name = _board_name(args.storyboard, args.rate)
    takes = store.takes(name, args.shot_id)
    current = store.current_take(name, args.shot_id)
    if args.json:
        print(json.dumps([t.__dict__ for t in takes], indent=2, default=str))
        return 0
    table = [("take", "id", "status", "current", "spec", "handoff in", "handoff out", "mp4 / error")]
    for t in takes:
        table.append((str(t.number), str(t.id), t.status, "*" if current and current.id == t.id else "",
                      t.spec_hash[:12], (t.handoff_in_sha256 or "-")[:12], (t.handoff_out_sha256 or "-")[:12],
                      t.outputs.get("mp4") or (t.error or "").strip().rsplit("\n", 1)[-1][:80]))
    _print_table(table)
    return 0


def _verify(args: argparse.Namespace) -> int:
    store = _open_store(args)
    name = _board_name(args.storyboard, args.rate)
    rows = store.status(name)
    bad = store.verify(name)
    missing = [r for r in rows if r.take_id is None or r.status in ("failed", "cancelled", "stale", "not rendered")]
    for check in bad:
        print(f"{args.storyboard}: shot {check.shot_id} take {check.take_number}: {check.kind} {check.problem} "
              f"({check.path}). Fix: run `milimo render {args.storyboard}` to render it again")
    for r in missing:
        print(f"{args.storyboard}: shot {r.shot_id}: {r.status}. Fix: run `milimo render {args.storyboard}`")
    if bad or missing:
        print(f"{args.storyboard}: {len(bad)} damaged or missing file(s), {len(missing)} shot(s) without a good take")
        return 1
    print(f"{args.storyboard}: ok, {len(rows)} shot(s), every artifact matches its recorded size and sha256")
    return 0


def _overrides(args: argparse.Namespace) -> int:
    store = _open_store(args)
    name = _board_name(args.storyboard, args.rate)
    if args.all or args.clear:
        cleared = store.clear_overrides(name, None if args.all else args.clear)
        print(f"{name}: cleared the overrides of {len(cleared)} shot(s) {cleared}; the file's values apply again")
        return 0
    overrides = store.overrides(name)
    if not overrides:
        print(f"{name}: no overrides; every shot renders as the file says")
        return 0
    table = [("shot", "key", "value")]
    for shot_id, values in sorted(overrides.items()):
        for key, value in sorted(values.items()):
            table.append((shot_id, key, json.dumps(value)))
    _print_table(table)
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _serve(args: argparse.Namespace) -> int:
    from flows.serve import ServeConfig, serve

    config = ServeConfig.from_file(args.config) if args.config else ServeConfig()
    config = config.with_cli(storyboard=args.storyboard, cron=args.cron, watch=args.watch, interval_s=args.interval,
                             model=args.model, out=args.out, db=args.db)
    serve(config)
    return 0


def _add_storyboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("storyboard", help=".otio, .otioz, FCP XML or EDL")
    p.add_argument("--rate", type=_positive_float, metavar="FPS",
                   help="frame rate of an EDL's timecodes (EDLs carry none; default 24)")
    p.add_argument("--db", help="store URL (default: MILIMO_DB_URL or sqlite:///renders/milimo.db)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value:
        raise argparse.ArgumentTypeError(f"{text!r} is not above 0")
    return value


def _add_render_options(p: argparse.ArgumentParser) -> None:
    _add_storyboard(p)
    p.add_argument("--model", help="model folder (default: the embedded tiny random bundle)")
    p.add_argument("--out", help="output root (default: ./renders)")
    p.add_argument("--device", action="append", help="device for the GPU pool (repeat; default: every visible GPU, or cpu)")
    p.add_argument("--time-limit", type=_positive_float, help="per-shot limit in seconds, checked between steps")
    p.add_argument("--draft", action="store_true",
                   help="this run renders every shot on the fast draft recipe (its own takes, beside the finals)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="milimo", description="Milimo: LTX-2 render pipeline")
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="model bundles")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    tiny = model_sub.add_parser("tiny", help="write the tiny random LTX-2 bundle to DIR")
    tiny.add_argument("dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--force", action="store_true", help="replace DIR if it exists")
    tiny.set_defaults(func=_model_tiny)

    demo = sub.add_parser("demo", help="render one demo shot (tiny model unless --model)")
    demo.add_argument("--model", help="model folder (diffusers LTX-2 layout + milimo-model.json)")
    demo.add_argument("--out", default="renders/demo")
    demo.add_argument("--prompt", default="a lighthouse on a cliff at dusk, waves crashing below")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--width", type=int, default=256)
    demo.add_argument("--height", type=int, default=256)
    demo.add_argument("--frames", type=int, default=25)
    demo.add_argument("--fps", type=float, default=24.0)
    demo.add_argument("--steps", type=int, default=40)
    demo.add_argument("--temporal", action="store_true", help="temporal x2 (doubles fps)")
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--dtype", default="float32")
    demo.set_defaults(func=_demo)

    render = sub.add_parser("render", help="render every shot of a storyboard that is not done")
    _add_render_options(render)
    render.add_argument("--only", nargs="+", metavar="ID", help="only these shots (and what they need upstream)")
    render.add_argument("--from-shot", metavar="ID", help="re-render this shot and the rest of its chain")
    render.set_defaults(func=_render)

    rerender = sub.add_parser("rerender", help="re-render a shot (new settings with --set) and the rest of its chain")
    _add_render_options(rerender)
    rerender.add_argument("--from-shot", metavar="ID", required=True)
    rerender.add_argument("--set", action="append", metavar="KEY=VALUE",
                          help="override for that shot: prompt, negative_prompt, seed, steps, guidance, width, height, ...")
    rerender.set_defaults(func=_rerender)

    validate = sub.add_parser("validate", help="check a storyboard (and its stored overrides) and list every problem")
    _add_storyboard(validate)
    validate.set_defaults(func=_validate)

    status = sub.add_parser("status", help="each shot with its current take, a running take, overrides, problems")
    _add_storyboard(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    takes = sub.add_parser("takes", help="every take of one shot")
    _add_storyboard(takes)
    takes.add_argument("shot_id")
    takes.add_argument("--json", action="store_true")
    takes.set_defaults(func=_takes)

    verify = sub.add_parser("verify", help="hash every artifact of the current takes again; exit 1 if any is off")
    _add_storyboard(verify)
    verify.set_defaults(func=_verify)

    overrides = sub.add_parser("overrides", help="list the stored overrides, or clear them")
    _add_storyboard(overrides)
    group = overrides.add_mutually_exclusive_group()
    group.add_argument("--clear", nargs="+", metavar="SHOT", help="clear these shots' overrides")
    group.add_argument("--all", action="store_true", help="clear every override of the storyboard")
    overrides.set_defaults(func=_overrides)

    serve = sub.add_parser("serve", help="serve Prefect deployments: scheduled renders, reruns, a watched folder")
    serve.add_argument("--config", help="TOML file with [[schedule]], [watch] and [defaults]")
    serve.add_argument("--storyboard", help="storyboard to render on --cron")
    serve.add_argument("--cron", help='cron schedule for --storyboard, e.g. "0 2 * * *"')
    serve.add_argument("--watch", help="folder where dropped cuts are imported and rendered")
    serve.add_argument("--interval", type=float, help="seconds between scans of --watch (default 30)")
    serve.add_argument("--model")
    serve.add_argument("--out")
    serve.add_argument("--db")
    serve.set_defaults(func=_serve)
    return parser


RENDER_COMMANDS = {"render", "rerender", "demo"}


def main(argv: list[str] | None = None) -> int:
    from milimo_engine.errors import HandoffError, InvalidRequestError, MissingComponentError
    from storyboards.errors import MilimoError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MilimoError as exc:
        for line in exc.lines():
            print(f"milimo: {line}", file=sys.stderr)
        return exc.exit_code
    except (InvalidRequestError, HandoffError, MissingComponentError, FileExistsError) as exc:
        print(f"milimo: invalid input: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("milimo: interrupted; run the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a render that failed, or a bug: said in one line, exit 1
        what = "render failed" if args.command in RENDER_COMMANDS else "error"
        print(f"milimo: {what}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
