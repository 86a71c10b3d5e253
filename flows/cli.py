"""The `milimo` command line.

    milimo prompts CUT [--rate FPS] [-o shots.csv]     (the shot list to fill beside an editor's cut)
    milimo import CUT --prompts shots.csv [--rate FPS] [--size WxH] -o STORYBOARD.otio
    milimo render STORYBOARD [--model DIR] [--out DIR] [--db URL] [--only ID ...] [--from-shot ID] [--rate FPS]
    milimo rerender STORYBOARD --from-shot ID [--set key=value ...]   (key=null removes an override)
    milimo validate STORYBOARD [--rate FPS]
    milimo conform STORYBOARD --format otio|otioz|fcp_xml|cmx_3600 [-o FILE]
    milimo qa STORYBOARD [--json]                 (seam QA at every handoff cut and segment boundary)
    milimo status STORYBOARD [--json]
    milimo takes STORYBOARD SHOT_ID [--json]
    milimo verify STORYBOARD                      (every artifact hashed again; exit 1 if anything is off)
    milimo overrides STORYBOARD [--clear SHOT ... | --all]
    milimo model tiny DIR
    milimo model import SRC... -o DIR             (the official files as downloaded -> a model folder)
    milimo model info DIR [--json]
    milimo serve [--config FILE] [--storyboard PATH --cron EXPR] [--watch DIR]
    milimo demo

Every STORYBOARD argument may be an editor's cut with its shot list: `CUT --prompts shots.csv`.
Configuration: milimo.toml (`--config FILE`, $MILIMO_CONFIG or ./milimo.toml; see flows.config).

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


def _model_import(args: argparse.Namespace) -> int:
    from milimo_engine.official import import_model

    report = import_model([Path(p) for p in args.sources], Path(args.output), force=args.force,
                          model_id=args.model_id, on_step=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    print(f"{report.folder}: LTX-{report.version} model {report.model_id!r}, "
          f"{len(report.components)} components, {len(report.loras)} LoRA(s)")
    for note in report.notes:
        print(f"  note: {note}")
    for path, why in report.ignored:
        print(f"  ignored {path}: {why}")
    print(f"  render with --model {report.folder}; `milimo model info {report.folder}` shows its defaults")
    return 0


def _model_info(args: argparse.Namespace) -> int:
    from milimo_engine.official import model_info

    info = model_info(Path(args.dir))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['folder']}: LTX-{info['version']} {info['model_id']!r}"
          + (" (RANDOM weights)" if info["random_weights"] else "") + f", {info['bytes'] / 2**20:.1f} MiB on disk")
    table = [("component", "class", "dtype", "MiB")]
    for name, c in info["components"].items():
        table.append((name, c["class"], c["dtype"], f"{c['bytes'] / 2**20:.1f}"))
    for rel, size in info["loras"].items():
        table.append((rel, "LoRA", "-", f"{size / 2**20:.1f}"))
    _print_table(table)
    defaults = {k: v for k, v in info["defaults"].items() if k != "negative_prompt"}
    print("defaults: " + ", ".join(f"{k}={v}" for k, v in defaults.items()))
    print(f"negative prompt: {info['defaults']['negative_prompt'][:100]}...")
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


def _load(args: argparse.Namespace):
    """The storyboard the command names: a storyboard file, or an editor's cut with its shot list."""
    import storyboards

    return storyboards.load(args.storyboard, rate=args.rate, prompts=args.prompts, size=args.size)


def _checked_board(args: argparse.Namespace, shot_ids: list[str] | None = None, overrides: dict | None = None):
    """Load and validate, stored overrides and these new ones applied, before anything starts or is stored."""
    import storyboards
    from storyboards.overrides import apply_overrides, merge

    board = _load(args)
    for shot_id in shot_ids or []:
        board.shot(shot_id)
    config = storyboards.ValidationConfig(asset_roots=tuple(Path(r) for r in args.asset_root or ()))
    fresh = apply_overrides(board, merge({}, overrides))
    storyboards.validate(fresh, config).raise_if_invalid(args.storyboard)  # before any store exists
    store = _store_if_any(args.db)
    if store is not None:
        store.check_identity(board)
        board = apply_overrides(board, merge(store.overrides(board.name), overrides))
        storyboards.validate(board, config).raise_if_invalid(args.storyboard)
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


def _farm_ready(args: argparse.Namespace, board) -> None:
    """Before anything is stored: a farm needs PostgreSQL, a real Prefect server and workers that see what we see."""
    from flows.farm import require_farm
    from flows.plan import DEFAULT_OUT, ensure_model, resolve_model_dir
    from storyboards.store.db import default_url

    model_dir = ensure_model(resolve_model_dir(args.model, board), explicit=bool(args.model))
    require_farm(args.farm, args.db or default_url(), Path(args.out or DEFAULT_OUT).resolve(),
                 str(Path(model_dir).resolve()), [str(Path(r).resolve()) for r in args.asset_root or ()])


def _render_flow(args: argparse.Namespace, board, **kwargs: Any) -> dict:
    """The render flow for the storyboard `_checked_board` loaded (`board`), on this host or on the farm."""
    from .prefect_server import prefect_api

    if args.farm:
        _farm_ready(args, board)
    with prefect_api():
        from flows.render import render_storyboard

        if args.farm:
            from prefect_dask import DaskTaskRunner

            render_storyboard = render_storyboard.with_options(task_runner=DaskTaskRunner(address=args.farm))
        return _run_interruptibly(lambda: render_storyboard(
            args.storyboard, model=args.model, out=args.out, db=args.db, devices=args.device or None,
            time_limit_s=args.time_limit, rate=args.rate, draft=args.draft, prompts=args.prompts,
            size=list(args.size) if args.size else None, asset_roots=args.asset_root or None,
            qa=args.qa.model_dump(), farm=args.farm, **kwargs))


def _render(args: argparse.Namespace) -> int:
    board, _ = _checked_board(args, (args.only or []) + ([args.from_shot] if args.from_shot else []))
    _report(_render_flow(args, board, only=args.only or None, from_shot=args.from_shot))
    return 0


def _rerender(args: argparse.Namespace) -> int:
    from storyboards.overrides import parse_assignments

    overrides = parse_assignments(args.set or [])
    board, _ = _checked_board(args, [args.from_shot], {args.from_shot: overrides} if overrides else None)
    _report(_render_flow(args, board, from_shot=args.from_shot,
                         overrides={args.from_shot: overrides} if overrides else None))
    return 0


def _report(result: dict) -> None:
    print(f"{result['storyboard']}: rendered {len(result['rendered'])} shot(s) {result['rendered']}, "
          f"kept {len(result['skipped'])} {result['skipped']}")
    for key in ("otio", "preview", "contact_sheet"):
        if result.get(key):
            print(f"  {key}: {result[key]}")
    if result.get("seams_flagged"):
        print(f"  seams flagged: {', '.join(result['seams_flagged'])} (`milimo qa` shows the metrics)")


def _validate(args: argparse.Namespace) -> int:
    import storyboards

    board, _ = _checked_board(args)
    graph = storyboards.ShotGraph.of(board)
    print(f"{args.storyboard}: ok, {len(board.shots)} shot(s) in {len(graph.chains)} chain(s) at {board.fps:g} fps")
    for chain in graph.chains:
        print(f"  chain {chain.index}: {' -> '.join(chain.shot_ids)}")
    overridden = [s.shot_id for s in board.shots if s.overridden]
    if overridden:
        print(f"  overrides from the store on: {', '.join(overridden)} (`milimo overrides` lists them)")
    return 0


def _board_name(args: argparse.Namespace) -> str:
    return _load(args).name


def _open_store(args: argparse.Namespace):
    """The store a reading command looks at; a SQLite file that is not there is an error, never created."""
    from storyboards.errors import ConfigError
    from storyboards.store.db import default_url

    store = _store_if_any(args.db)
    if store is None:
        raise ConfigError(f"no store at {args.db or default_url()} (nothing has rendered into it)",
                          f"render first (`milimo render {getattr(args, 'storyboard', 'STORYBOARD')}`), or give the "
                          "--db it rendered into")
    return store


def _status(args: argparse.Namespace) -> int:
    name = _board_name(args)  # a cut or sheet that does not load stops here, before any database is created
    store = _open_store(args)
    rows = store.status(name)
    from tasks.outputs import seam_notes

    seams = seam_notes(store, name, args.qa)
    if args.json:
        print(json.dumps([{**r.__dict__, "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                           "seams": seams.get(r.shot_id, [])} for r in rows], indent=2, default=str))
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
        notes += [f"seam {note}" for note in seams.get(r.shot_id, [])]
        prompt = (r.prompt or "-").replace("\n", " ")
        table.append((r.shot_id, str(r.chain_index), str(r.take_number or "-"), r.status, r.quality or "-",
                      (r.spec_hash or "-")[:12],
                      f"{r.seconds:.2f}" if r.seconds is not None else "-",
                      r.finished_at.strftime("%Y-%m-%d %H:%M:%S") if r.finished_at else "-",
                      prompt[:40] + ("…" if len(prompt) > 40 else ""), "; ".join(notes)))
    _print_table(table)
    return 0


def _takes(args: argparse.Namespace) -> int:
    name = _board_name(args)
    store = _open_store(args)
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
    name = _board_name(args)
    store = _open_store(args)
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
    name = _board_name(args)
    store = _open_store(args)
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


def _prompts(args: argparse.Namespace) -> int:
    import storyboards
    from storyboards.errors import ConfigError
    from storyboards.shotlist import cut_rows, write_shotlist

    board = storyboards.load(args.cut, rate=args.rate)
    target = Path(args.output) if args.output else Path(args.cut).with_suffix(".csv")
    if target.exists() and not args.force:
        raise ConfigError(f"{target} exists (a filled shot list is never overwritten)",
                          "give another -o, or --force to replace it")
    rows = cut_rows(board)
    write_shotlist(rows, target)
    filled = sum(1 for r in rows if r["prompt"])
    print(f"{target}: {len(rows)} shot(s) of {board.name!r} at {board.fps:g} fps, {filled} with a prompt from the cut; "
          f"fill the prompt column, then `milimo import {args.cut} --prompts {target}"
          + (f" --rate {args.rate:g}" if args.rate else "") + " -o STORYBOARD.otio`")
    return 0


def _import(args: argparse.Namespace) -> int:
    import storyboards
    from storyboards.load import write_timeline

    if not args.prompts:
        from storyboards.errors import ConfigError

        raise ConfigError("import needs the shot list", f"write one with `milimo prompts {args.storyboard}`, fill "
                          "its prompt column and give it with --prompts")
    board, _ = _checked_board(args)
    target = Path(args.output)
    write_timeline(board.timeline, target)
    graph = storyboards.ShotGraph.of(board)
    print(f"{target}: storyboard {board.name!r}, {len(board.shots)} shot(s) in {len(graph.chains)} chain(s) at "
          f"{board.fps:g} fps; render it with `milimo render {target}`")
    return 0


def _conform(args: argparse.Namespace) -> int:
    from flows.plan import DEFAULT_OUT
    from storyboards.conform import EXPORT_FORMATS, export
    from storyboards.fields import slug
    from storyboards.paths import OutputLayout

    board = _load(args)
    store = _open_store(args)
    rows = store.status(board.name)
    if not rows:
        from storyboards.errors import ConfigError

        raise ConfigError(f"{args.storyboard}: storyboard {board.name!r} has no shots in the store {store.engine.url!r}",
                          f"render it first (`milimo render {args.storyboard}`), or give the --db it rendered into")
    suffix = EXPORT_FORMATS[args.format][1]
    target = Path(args.output) if args.output else OutputLayout.at(args.out or DEFAULT_OUT).storyboard_dir(
        board.name) / f"{slug(board.name, 'storyboard')}.conformed{suffix}"
    path = export(board, store, args.format, target)
    missing = [r.shot_id for r in rows if not r.outputs.get("mp4")]
    print(f"{path}: {len(board.shots) - len(missing)} of {len(board.shots)} shot(s) relinked to their current take"
          + (f"; no take yet: {', '.join(missing)}" if missing else ""))
    return 0


def _qa(args: argparse.Namespace) -> int:
    from storyboards.seams import seam_verdict
    from tasks.seams import measure_seams

    name = _board_name(args)
    store = _open_store(args)
    seams = measure_seams(store, name, args.qa)
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
    table = [("seam", "kind", "pixel", "hist", "luma", "audio", "flux", "score", "")]
    for r in rows:
        cells = [f"{r[k]:.2f}" if r.get(k) is not None else "-"
                 for k in ("pixel_ratio", "histogram", "luma_jump", "audio_jump", "spectral_flux")]
        table.append((r["seam"], r["kind"], *cells, f"{r['score']:.2f}",
                      "FLAGGED" if r["flagged"] else ("hard cut" if r["kind"] == "hard" else "ok")))
    _print_table(table)
    flagged = sum(r["flagged"] for r in rows)
    print(f"{name}: {len(rows)} seam(s), {flagged} flagged (thresholds: "
          + ", ".join(f"{k} {v:g}" for k, v in args.qa.model_dump().items()) + ")")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from flows.farm import run_workers

    gpus = None if args.cpu else args.gpus or _all_gpus()
    return run_workers(args.scheduler, gpus, args.name)


def _all_gpus() -> list[int] | None:
    import torch

    return list(range(torch.cuda.device_count())) or None


def _farm(args: argparse.Namespace) -> int:
    from flows.farm import connect, run_scheduler

    if args.farm_command == "scheduler":
        return run_scheduler(args.host, args.port)
    from tasks.worker import warm_models

    client = connect(args.scheduler, "--scheduler")
    try:
        workers = client.scheduler_info()["workers"]
        processing = client.processing()
        warm = client.run(warm_models)
        queued = client.run_on_scheduler(_queued_on_scheduler)
    finally:
        client.close()
    table = [("worker", "address", "GPU", "model", "rendering")]
    for address, info in sorted(workers.items(), key=lambda kv: str(kv[1].get("name", ""))):
        models = warm.get(address) or []
        table.append((str(info.get("name")), address, str(info.get("resources", {}).get("GPU", "-")),
                      ", ".join(Path(m).name for m in models) + " (warm)" if models else "cold",
                      ", ".join(str(k) for k in processing.get(address, [])) or "-"))
    _print_table(table)
    print(f"{len(workers)} worker(s); {len(queued)} shot(s) queued" + (f": {', '.join(queued)}" if queued else ""))
    return 0


def _queued_on_scheduler(dask_scheduler=None) -> list[str]:
    """Runs on the scheduler: tasks waiting for a worker (queued, or no worker with a free GPU)."""
    waiting = list(getattr(dask_scheduler, "queued", ())) + list(getattr(dask_scheduler, "unrunnable", ()))
    return [str(getattr(ts, "key", ts)) for ts in waiting]


def _dashboard(args: argparse.Namespace) -> int:
    import uvicorn

    from dashboard import DashboardSettings, create_app
    from dashboard.security import resolve_token
    from flows.plan import DEFAULT_OUT
    from storyboards.store.db import default_url

    section = args.config_loaded.dashboard
    host, port = args.host or section.host, args.port or section.port
    token = resolve_token(host, section.token, args.token_file)
    app = create_app(DashboardSettings(db_url=args.db or default_url(), out_root=Path(args.out or DEFAULT_OUT),
                                       model=args.model, read_only=args.read_only, token=token, qa=args.qa))
    print(f"milimo dashboard on http://{host}:{port}/" + (" (read-only)" if args.read_only else "")
          + (" (token required)" if token else ""), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _serve(args: argparse.Namespace) -> int:
    from flows.serve import serve, with_cli

    config = args.config_loaded.model_copy(update={"paths": args.config_loaded.paths.model_copy(update={
        k: v for k, v in (("model", args.model), ("out", args.out), ("db", args.db)) if v})})
    serve(with_cli(config, storyboard=args.storyboard, cron=args.cron, watch=args.watch, interval_s=args.interval))
    return 0


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="milimo.toml (default: $MILIMO_CONFIG, else ./milimo.toml)")


def _add_storyboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("storyboard", help=".otio, .otioz, FCP XML or EDL")
    _add_cut_options(p)
    p.add_argument("--prompts", metavar="CSV", help="the shot list that makes an editor's cut a storyboard")
    p.add_argument("--size", type=_size, metavar="WxH", help="with --prompts: the shots' size, e.g. 768x512")
    p.add_argument("--asset-root", action="append", metavar="DIR",
                   help="where storyboard paths may point (repeat; default: [paths] asset_roots, else its folder)")
    p.add_argument("--db", help="store URL (default: [paths] db, MILIMO_DB_URL or sqlite:///renders/milimo.db)")


def _add_cut_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=_positive_float, metavar="FPS",
                   help="frame rate of an EDL's timecodes (EDLs carry none; default: [rates] edl, else 24)")
    _add_config(p)


def _gpu_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of GPU indices, e.g. 0,1")
    return [int(p) for p in parts]


def _size(text: str) -> tuple[int, int]:
    from storyboards.fields import check

    width, sep, height = text.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 768x512")
    for key, value in (("width", int(width)), ("height", int(height))):
        wrong = check(key, value)
        if wrong:
            raise argparse.ArgumentTypeError(f"{key} {wrong[0]}; {wrong[1]}")
    return int(width), int(height)


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
    p.add_argument("--farm", metavar="tcp://HOST:8786",
                   help="render on a Dask farm (default: [farm] scheduler in milimo.toml, else this host)")
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
    imp = model_sub.add_parser("import", help="Lightricks' files as downloaded -> a model folder (offline)")
    imp.add_argument("sources", nargs="+", metavar="SRC",
                     help="the checkpoint, upscalers, LoRAs and Gemma folder (or a folder holding them)")
    imp.add_argument("-o", "--output", required=True, metavar="DIR")
    imp.add_argument("--force", action="store_true", help="replace DIR if it exists")
    imp.add_argument("--model-id", help="the id takes and handoffs record (default: the version's, with the "
                     "checkpoint's hash)")
    imp.set_defaults(func=_model_import)
    info = model_sub.add_parser("info", help="what a model folder is: version, components, dtype, size, defaults")
    info.add_argument("dir")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_model_info)

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

    prompts = sub.add_parser("prompts", help="write the shot list (CSV) to fill beside an editor's cut")
    prompts.add_argument("cut", help="the cut: EDL, FCP 7 XML, .otio or .otioz")
    _add_cut_options(prompts)
    prompts.add_argument("-o", "--output", metavar="CSV", help="where to write it (default: beside the cut, .csv)")
    prompts.add_argument("--force", action="store_true", help="replace an existing CSV")
    prompts.set_defaults(func=_prompts)

    importer = sub.add_parser("import", help="an editor's cut + its filled shot list -> a milimo storyboard (.otio)")
    _add_storyboard(importer)
    importer.add_argument("-o", "--output", required=True, metavar="STORYBOARD.otio")
    importer.set_defaults(func=_import)

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

    conform = sub.add_parser("conform", help="the current takes as a timeline an editor opens (relinked)")
    _add_storyboard(conform)
    conform.add_argument("--format", required=True, choices=["otio", "otioz", "fcp_xml", "cmx_3600"])
    conform.add_argument("-o", "--output", metavar="FILE",
                         help="default: <out>/<storyboard>/<storyboard>.conformed.<ext>")
    conform.add_argument("--out", help="output root (default: [paths] out, else ./renders)")
    conform.set_defaults(func=_conform)

    qa = sub.add_parser("qa", help="seam QA: every handoff cut and segment boundary measured; flagged above [qa]")
    _add_storyboard(qa)
    qa.add_argument("--json", action="store_true")
    qa.set_defaults(func=_qa)

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

    dashboard = sub.add_parser("dashboard", help="the web dashboard: watch, compare and pin takes, rerun, cancel")
    dashboard.add_argument("--host", help="address to bind (default [dashboard] host, else 127.0.0.1)")
    dashboard.add_argument("--port", type=int, help="port (default [dashboard] port, else 8765)")
    dashboard.add_argument("--read-only", action="store_true", help="hide and refuse every action")
    dashboard.add_argument("--token-file", metavar="FILE",
                           help="the token every request must carry (else MILIMO_DASHBOARD_TOKEN); needed off loopback")
    dashboard.add_argument("--db")
    dashboard.add_argument("--out", help="the output root the renders write to (default [paths] out, else ./renders)")
    dashboard.add_argument("--model", help="model for renders started from the dashboard")
    _add_config(dashboard)
    dashboard.set_defaults(func=_dashboard)

    worker = sub.add_parser("worker", help="farm: one Dask worker per GPU (or one CPU worker) for a scheduler")
    worker.add_argument("--scheduler", required=True, metavar="tcp://HOST:8786")
    which = worker.add_mutually_exclusive_group()
    which.add_argument("--gpus", metavar="0,1", type=_gpu_list, help="the GPUs to serve (default: every visible GPU)")
    which.add_argument("--cpu", action="store_true", help="one CPU worker (tests, a machine without GPU)")
    worker.add_argument("--name", help="worker name (default: host/gpuN, host/cpu)")
    _add_config(worker)
    worker.set_defaults(func=_worker)

    farm = sub.add_parser("farm", help="farm: the Dask scheduler, and what the workers are doing")
    farm_sub = farm.add_subparsers(dest="farm_command", required=True)
    scheduler = farm_sub.add_parser("scheduler", help="run Dask's scheduler (loopback unless --host)")
    scheduler.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    scheduler.add_argument("--port", type=int, default=8786)
    scheduler.set_defaults(func=_farm)
    farm_status = farm_sub.add_parser("status", help="workers, their GPU and what each is rendering")
    farm_status.add_argument("--scheduler", required=True, metavar="tcp://HOST:8786")
    farm_status.set_defaults(func=_farm)

    serve = sub.add_parser("serve", help="serve Prefect deployments: scheduled renders, reruns, a watched folder")
    _add_config(serve)
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


def _apply_config(args: argparse.Namespace) -> None:
    """milimo.toml under the command line: an option given wins, the file fills what is left."""
    from flows.config import MilimoConfig

    config = MilimoConfig.find(getattr(args, "config", None))
    args.config_loaded = config
    args.qa = config.qa
    paths = config.paths
    for name, value in (("db", paths.db), ("out", paths.out), ("model", paths.model)):
        if hasattr(args, name) and not getattr(args, name) and value:
            setattr(args, name, str(value))
    if hasattr(args, "farm") and not args.farm and config.farm.scheduler:
        args.farm = config.farm.scheduler
    # The farm's Prefect server, for a render on the farm and for its workers (PREFECT_API_URL, when set, wins).
    if config.farm.prefect_api_url and not os.environ.get("PREFECT_API_URL") and (
            getattr(args, "farm", None) or args.command == "worker"):
        os.environ["PREFECT_API_URL"] = config.farm.prefect_api_url
    if hasattr(args, "asset_root") and not args.asset_root and paths.asset_roots:
        args.asset_root = [str(root) for root in paths.asset_roots]
    cut = getattr(args, "storyboard", None) or getattr(args, "cut", None)
    if hasattr(args, "rate") and not args.rate and config.rates.edl and str(cut or "").lower().endswith(".edl"):
        args.rate = config.rates.edl


def main(argv: list[str] | None = None) -> int:
    from milimo_engine.errors import HandoffError, InvalidRequestError, MissingComponentError, ModelFileError
    from storyboards.errors import MilimoError

    args = build_parser().parse_args(argv)
    try:
        _apply_config(args)
        return args.func(args)
    except MilimoError as exc:
        for line in exc.lines():
            print(f"milimo: {line}", file=sys.stderr)
        return exc.exit_code
    except ModelFileError as exc:
        print(f"milimo: {exc}", file=sys.stderr)
        return 2
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
