"""`milimo render` and `milimo rerender`: the flags become one `RenderRequest`, checked once (exit 2, nothing
stored, before Prefect starts), then the render flow runs it, here or on the farm, while this thread owns
Ctrl-C and SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from milimo.context import Context
from milimo.prepare import CheckedBoard, check, remember
from milimo.request import RenderRequest

from .args import add_config, add_render_options, render_request


def run_interruptibly(work: Callable[[], Any]) -> Any:
    """Run `work` (a flow) in a thread while the main thread owns SIGINT and SIGTERM: the first signal
    asks every running shot to stop at its next step and no new shot to start; a second one quits now."""
    from tasks.worker import clear_interrupt, interrupted, request_interrupt

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc

    def on_signal(signum: int, _frame: object) -> None:
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


def _farm_ready(checked: CheckedBoard, context: Context) -> None:
    """Before anything is stored: a farm needs PostgreSQL, a real Prefect server and workers that see what we see."""
    from flows.farm import require_farm

    request = checked.request
    assert request.farm is not None
    require_farm(request.farm, checked.db_url, context.layout(request.out).root,
                 str(Path(checked.model_dir).resolve()), [str(Path(r).resolve()) for r in request.asset_roots or ()])


def run_render(request: RenderRequest, context: Context) -> dict[str, Any]:
    """Check the request (once: the flow in this process takes this check), then run the flow."""
    checked = remember(check(request, context))
    if request.farm:
        _farm_ready(checked, context)
    from flows.prefect_server import prefect_api

    with prefect_api(meanwhile=lambda: _import_ahead(checked)):
        from flows.render import flow_for

        flow = flow_for(request)
        return run_interruptibly(lambda: flow(request))


def _import_ahead(checked: CheckedBoard) -> None:
    """What the render imports anyway, while its temporary Prefect server starts: the flow, and the model's
    classes when the shots render in this process (the first shot then starts ~3-5 s sooner on a CPU host)."""
    import flows.render  # noqa: F401

    if not checked.request.farm:
        from milimo_engine.ledger import import_model_classes

        with contextlib.suppress(Exception):  # the shot reports a model it cannot load
            import_model_classes(checked.model_dir)


def render(args: argparse.Namespace, context: Context) -> int:
    request = render_request(args, context, only=args.only or None, from_shot=args.from_shot)
    report(run_render(request, context))
    return 0


def rerender(args: argparse.Namespace, context: Context) -> int:
    from storyboards.overrides import parse_assignments

    overrides = parse_assignments(args.set or [])
    request = render_request(args, context, from_shot=args.from_shot,
                             overrides={args.from_shot: overrides} if overrides else None)
    report(run_render(request, context))
    return 0


def run_request(args: argparse.Namespace, context: Context) -> int:
    """A render asked for as a `RenderRequest` in JSON (what the dashboard starts): the same check and flow."""
    from pydantic import ValidationError

    from storyboards.errors import ConfigError

    try:
        text = sys.stdin.read() if args.request == "-" else Path(args.request).read_text()
        request = RenderRequest.model_validate_json(text)
    except (OSError, ValidationError) as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{args.request}: not a render request ({' '.join(first[:3])})",
                          "write it with RenderRequest(...).model_dump_json()") from None
    report(run_render(request, context))
    return 0


def report(result: dict[str, Any]) -> None:
    print(f"{result['storyboard']}: rendered {len(result['rendered'])} shot(s) {result['rendered']}, "
          f"kept {len(result['skipped'])} {result['skipped']}")
    for shot_id, why in (result.get("stopped") or {}).items():
        print(f"  stopped: {shot_id}: {why}")
    for key in ("otio", "preview", "contact_sheet"):
        if result.get(key):
            print(f"  {key}: {result[key]}")
    for name, folder in (result.get("deliveries") or {}).items():
        print(f"  delivery {name}: {folder}")
    if result.get("seams_flagged"):
        print(f"  seams flagged: {', '.join(result['seams_flagged'])} (`milimo qa` shows the metrics)")


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render every shot of a storyboard that is not done")
    add_render_options(p)
    p.add_argument("--only", nargs="+", metavar="ID", help="only these shots (and what they need upstream)")
    p.add_argument("--from-shot", metavar="ID", help="re-render this shot and the rest of its chain")
    p.set_defaults(func=render, renders=True)

    p = sub.add_parser("rerender", help="re-render a shot (new settings with --set) and the rest of its chain")
    add_render_options(p)
    p.add_argument("--from-shot", metavar="ID", required=True)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override for that shot: prompt, negative_prompt, seed, steps, guidance, width, height, ...")
    p.set_defaults(func=rerender, renders=True)

    p = sub.add_parser("run", help="run a render request (JSON: milimo.request.RenderRequest; - for stdin)")
    p.add_argument("request", metavar="REQUEST.json")
    add_config(p)
    p.set_defaults(func=run_request, renders=True)
