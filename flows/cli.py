"""The `milimo` command line.

    milimo render STORYBOARD [--model DIR] [--out DIR] [--db URL] [--only ID ...] [--from-shot ID]
    milimo rerender STORYBOARD --from-shot ID [--set key=value ...]
    milimo validate STORYBOARD
    milimo status STORYBOARD [--json]
    milimo takes STORYBOARD SHOT_ID [--json]
    milimo model tiny DIR
    milimo serve [--config FILE] [--storyboard PATH --cron EXPR] [--watch DIR]
    milimo demo

Exit codes: 0 done, 2 invalid input (message on stderr, no traceback), 1 a render failed.
Defaults: the embedded tiny model, SQLite at renders/milimo.db, outputs under ./renders/, and
Prefect's local server with telemetry off. Prefect is imported only by the commands that run flows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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
    (out / "demo.json").write_text(json.dumps({"model_dir": str(model_dir), **result.summary(),
                                               "ledger": ledger.report()}, indent=2, default=str))
    print(f"{mp4}: {info.frames} frames at {float(info.fps):g} fps, {info.width}x{info.height}, "
          f"audio={'yes' if info.has_audio else 'no'}; total {result.timings['total']:.2f}s "
          f"(stage1 {result.timings['stage1']:.2f}s, stage2 {result.timings['stage2']:.2f}s)")
    return 0


def _precheck(path: str, shot_ids: list[str] | None = None, overrides: dict | None = None) -> None:
    """Validate before starting Prefect: bad input exits 2 in a second, not after a server start
    (and without the flow's traceback in the log)."""
    import storyboards
    from storyboards.overrides import apply_overrides

    board = storyboards.load(path)
    for shot_id in shot_ids or []:
        board.shot(shot_id)  # KeyError naming the shots there are
    if overrides:
        board = apply_overrides(board, overrides)
    storyboards.validate(board).raise_if_invalid(path)


def _render(args: argparse.Namespace) -> int:
    _precheck(args.storyboard, (args.only or []) + ([args.from_shot] if args.from_shot else []))
    from flows.render import render_storyboard

    result = render_storyboard(args.storyboard, model=args.model, out=args.out, db=args.db, only=args.only or None,
                               from_shot=args.from_shot, devices=args.device or None, time_limit_s=args.time_limit)
    _report(result)
    return 0


def _rerender(args: argparse.Namespace) -> int:
    from storyboards.overrides import parse_assignments

    overrides = parse_assignments(args.set or [])
    _precheck(args.storyboard, [args.from_shot], {args.from_shot: overrides} if overrides else None)
    from flows.render import rerender

    result = rerender(args.storyboard, from_shot=args.from_shot, overrides=overrides or None, model=args.model,
                      out=args.out, db=args.db, devices=args.device or None, time_limit_s=args.time_limit)
    _report(result)
    return 0


def _report(result: dict) -> None:
    print(f"{result['storyboard']}: rendered {len(result['rendered'])} shot(s) {result['rendered']}, "
          f"kept {len(result['skipped'])} {result['skipped']}")
    for key in ("otio", "preview", "contact_sheet"):
        if result.get(key):
            print(f"  {key}: {result[key]}")


def _validate(args: argparse.Namespace) -> int:
    import storyboards

    board = storyboards.load(args.storyboard)
    report = storyboards.validate(board)
    if not report.ok:
        for problem in report.problems:
            print(str(problem), file=sys.stderr)
        print(f"milimo: {args.storyboard}: {len(report.problems)} problem(s)", file=sys.stderr)
        return 2
    graph = storyboards.ShotGraph.of(board)
    print(f"{args.storyboard}: ok, {len(board.shots)} shot(s) in {len(graph.chains)} chain(s) at {board.fps:g} fps")
    for chain in graph.chains:
        print(f"  chain {chain.index}: {' -> '.join(chain.shot_ids)}")
    return 0


def _board_name(path: str) -> str:
    import storyboards

    return storyboards.load(path).name


def _status(args: argparse.Namespace) -> int:
    from storyboards.store import Store

    rows = Store.open(args.db).status(_board_name(args.storyboard))
    if args.json:
        print(json.dumps([{**r.__dict__, "finished_at": r.finished_at.isoformat() if r.finished_at else None}
                          for r in rows], indent=2, default=str))
        return 0
    table = [("shot", "chain", "take", "status", "spec", "seconds", "finished")]
    for r in rows:
        table.append((r.shot_id, str(r.chain_index), str(r.take_number or "-"), r.status, (r.spec_hash or "-")[:12],
                      f"{r.seconds:.2f}" if r.seconds is not None else "-",
                      r.finished_at.strftime("%Y-%m-%d %H:%M:%S") if r.finished_at else "-"))
    _print_table(table)
    return 0


def _takes(args: argparse.Namespace) -> int:
    from storyboards.store import Store

    store = Store.open(args.db)
    name = _board_name(args.storyboard)
    takes = store.takes(name, args.shot_id)
    current = store.current_take(name, args.shot_id)
    if args.json:
        print(json.dumps([t.__dict__ for t in takes], indent=2, default=str))
        return 0
    table = [("take", "id", "status", "current", "spec", "handoff in", "handoff out", "mp4 / error")]
    for t in takes:
        table.append((str(t.number), str(t.id), t.status, "*" if current and current.id == t.id else "",
                      t.spec_hash[:12], (t.handoff_in_sha256 or "-")[:12], (t.handoff_out_sha256 or "-")[:12],
                      t.outputs.get("mp4") or (t.error or "")[:80]))
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


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("storyboard", help=".otio, .otioz, FCP XML or EDL")
    p.add_argument("--model", help="model folder (default: the embedded tiny random bundle)")
    p.add_argument("--out", help="output root (default: ./renders)")
    p.add_argument("--db", help="store URL (default: MILIMO_DB_URL or sqlite:///renders/milimo.db)")
    p.add_argument("--device", action="append", help="device for the GPU pool (repeat; default: every visible GPU, or cpu)")
    p.add_argument("--time-limit", type=float, help="per-shot limit in seconds, checked between denoising steps")


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

    validate = sub.add_parser("validate", help="check a storyboard and list every problem")
    validate.add_argument("storyboard")
    validate.set_defaults(func=_validate)

    status = sub.add_parser("status", help="each shot with its current take")
    status.add_argument("storyboard")
    status.add_argument("--db")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    takes = sub.add_parser("takes", help="every take of one shot")
    takes.add_argument("storyboard")
    takes.add_argument("shot_id")
    takes.add_argument("--db")
    takes.add_argument("--json", action="store_true")
    takes.set_defaults(func=_takes)

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


def main(argv: list[str] | None = None) -> int:
    from milimo_engine.errors import HandoffError, InvalidRequestError, MissingComponentError
    from storyboards.overrides import OverrideError
    from storyboards.validate import StoryboardInvalid

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StoryboardInvalid as exc:
        print(f"milimo: invalid storyboard: {exc}", file=sys.stderr)
        return 2
    except (InvalidRequestError, HandoffError, MissingComponentError, FileExistsError, FileNotFoundError,
            OverrideError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"milimo: invalid input: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("milimo: interrupted; `milimo render` again resumes where this stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI reports, the traceback goes to --debug later
        print(f"milimo: render failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
