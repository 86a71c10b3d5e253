"""The `milimo` command line: one small module per family of commands, over the application layer (`milimo`).

    milimo prompts CUT [--rate FPS] [-o shots.csv]     (the shot list to fill beside an editor's cut)
    milimo import CUT --prompts shots.csv [--rate FPS] [--size WxH] -o STORYBOARD.otio
    milimo render STORYBOARD [--model DIR] [--out DIR] [--db URL] [--only ID ...] [--from-shot ID] [--rate FPS]
    milimo rerender STORYBOARD --from-shot ID [--set key=value ...]   (key=null removes an override)
    milimo validate STORYBOARD [--rate FPS]
    milimo conform STORYBOARD --format otio|otioz|fcp_xml|cmx_3600|ale [-o FILE]
    milimo qa STORYBOARD [--json]                 (seam QA at every handoff cut and segment boundary)
    milimo status STORYBOARD [--json]
    milimo takes STORYBOARD SHOT_ID [--json]
    milimo verify STORYBOARD                      (every artifact hashed again; exit 1 if anything is off)
    milimo markers STORYBOARD [--format edl|csv] [-o FILE]   (each shot as a marker for the editor's timeline)
    milimo preview STORYBOARD [--no-burn-ins]     (preview, contact sheet and timeline again from the current takes)
    milimo deliver STORYBOARD [--delivery NAME] [--only SHOT ...]   (the chosen takes in a studio's format and names)
    milimo overrides STORYBOARD [--clear SHOT ... | --all]
    milimo review STORYBOARD [--json]            (each take's review state and notes)
    milimo approve|needs-changes|reject STORYBOARD SHOT TAKE [--by NAME] [--note TEXT]
    milimo note STORYBOARD SHOT TAKE "text" [--frame N|A-B] [--by NAME]
    milimo stop STORYBOARD SHOT [TAKE] [--by NAME]   (a rendering take stops at its next step; the rest goes on)
    milimo model tiny DIR
    milimo model import SRC... -o DIR             (the official files as downloaded -> a model folder)
    milimo model info DIR [--json]
    milimo serve [--config FILE] [--storyboard PATH --cron EXPR] [--watch DIR]
    milimo demo

Every STORYBOARD argument may be an editor's cut with its shot list: `CUT --prompts shots.csv`.
Configuration: milimo.toml (`--config FILE`, $MILIMO_CONFIG or ./milimo.toml; see milimo.config) and the
MILIMO_* variables (`milimo.settings.ENVIRONMENT`), read once into the process's settings.

Exit codes: 0 done; 2 input, configuration or environment to fix (one line per problem, the fix
named, no traceback); 1 a shot failed while rendering; 130/143 interrupted (run it again to resume).
Defaults: the embedded tiny model, SQLite at renders/milimo.db, outputs under ./renders/, and
Prefect's local server with telemetry off. Prefect is imported only by the commands that run flows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import NoReturn

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from . import boards, deliver, models, reads, render, review, services  # noqa: E402
from .args import apply_config  # noqa: E402

__all__ = ["apply_config", "build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="milimo", description="Milimo: LTX-2 render pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    for family in (models, boards, render, reads, deliver, review, services):
        family.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; what an error means (exit code, message) comes from `milimo.errors`."""
    from milimo.errors import outcome

    args = build_parser().parse_args(argv)
    try:
        context = apply_config(args)
        return args.func(args, context)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every error leaves through the one table
        said = outcome(exc, rendering=getattr(args, "renders", False))
        for line in said.lines:
            print(f"milimo: {line}", file=sys.stderr)
        return said.exit_code


def run() -> NoReturn:
    """The `milimo` command (`python -m flows.cli`, the console script): `main`, then leave the process without
    tearing the interpreter down. A render has torch, diffusers, transformers and Prefect loaded, and freeing
    their objects one by one at exit took 3-4 s of CPU after the last line was printed (measured on the example
    render). What exit must still do is done first: threads joined and exit handlers run (Prefect sends its
    queued logs and events there, logging flushes its handlers), then the output streams flushed."""
    import atexit
    import threading

    code = main()
    threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads, as interpreter exit does
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing left to say to it
            stream.flush()
    os._exit(code)
