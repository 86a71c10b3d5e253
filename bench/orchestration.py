"""Orchestration overhead: the 5-shot example through `render_storyboard` (Prefect + store) vs a
plain loop over the engine in the same process doing the same work (same requests, handoffs,
mp4s, thumbnails, handoff files).

Both run warm (weights loaded once, in the same process, through the same ledger cache), so the
difference is what Prefect, the store and the planning cost. Prefect's server start-up is
reported on its own; the flow's after-render outputs (conform, preview, contact sheet), which the
plain loop does not make, are timed separately and subtracted.

    python bench/orchestration.py [--repeats 3] [--steps N]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import storyboards  # noqa: E402
from milimo_engine import TwoStagePipeline, build_tiny_model  # noqa: E402
from milimo_engine.manifest import ModelManifest  # noqa: E402
from storyboards.store.api import spec_json  # noqa: E402
from tasks.render import _write_thumbnail, request_for  # noqa: E402
from tasks.worker import ledger_for  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "storyboards" / "examples"


def plain_loop(board_path: Path, model_dir: Path, out: Path) -> list[float]:
    """The same shots, chain by chain, with handoffs, outputs written as the task writes them."""
    board = storyboards.load(board_path)
    manifest = ModelManifest.read(model_dir)
    specs = storyboards.resolve_specs(board, manifest.model_id, model_defaults=manifest.shot_defaults())
    graph = storyboards.ShotGraph.of(board)
    pipe = TwoStagePipeline(ledger_for(str(model_dir), "cpu"), progress=False)
    seconds = []
    for chain in graph.chains:
        handoff = None
        for sid in chain.shot_ids:
            t0 = time.perf_counter()
            result = pipe(request_for(spec_json(specs[sid]), handoff))
            folder = out / sid
            result.save_mp4(folder / "shot.mp4")
            _write_thumbnail(result.frames[len(result.frames) // 2], folder / "thumb.png")
            handoff = None
            if sid != chain.shot_ids[-1]:
                handoff = dataclasses.replace(result.handoff, source_shot=sid)
                handoff.save(folder / "handoff.safetensors")
            seconds.append(time.perf_counter() - t0)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, help="override the storyboard's stage-1 steps")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="milimo-bench-"))
    model_dir = build_tiny_model(work / "model")
    board_dir = work / "board"
    shutil.copytree(EXAMPLE, board_dir)
    board_path = board_dir / "lighthouse.otio"
    if args.steps:
        import opentimelineio as otio

        timeline = otio.adapters.read_from_file(str(board_path))
        defaults = dict(timeline.metadata["milimo"]["defaults"])
        defaults["steps"] = args.steps
        timeline.metadata["milimo"]["defaults"] = defaults
        otio.adapters.write_to_file(timeline, str(board_path))
    shots = len(storyboards.load(board_path).shots)

    plain_loop(board_path, model_dir, work / "warm")  # weights loaded once for both sides

    from prefect.testing.utilities import prefect_test_harness

    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        server_s = time.perf_counter() - t0
        from flows.render import render_storyboard
        from tasks.outputs import concat_mp4, contact_sheet
        from tasks.seams import measure_seams
        from storyboards.conform import conform
        from storyboards.store import Store

        plain, flow, outputs = [], [], []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            plain_loop(board_path, model_dir, work / f"plain-{i}")
            plain.append(time.perf_counter() - t0)

            db = f"sqlite:///{work / f'flow-{i}.db'}"
            t0 = time.perf_counter()
            result = render_storyboard(str(board_path), model=str(model_dir), out=str(work / f"flow-{i}"), db=db)
            flow.append(time.perf_counter() - t0)
            assert len(result["rendered"]) == shots

            # What the flow makes after the shots, which the plain loop does not: timed on its own.
            store = Store.open(db)
            rows = store.status("lighthouse")
            t0 = time.perf_counter()
            conform(storyboards.load(board_path), store, work / f"outputs-{i}")
            concat_mp4([Path(r.outputs["mp4"]) for r in rows], work / f"outputs-{i}" / "preview.mp4")
            contact_sheet([(r.shot_id, r.take_number, r.status, r.status, r.outputs["thumbnail"], []) for r in rows],
                          work / f"outputs-{i}" / "contact_sheet.png")
            outputs.append(time.perf_counter() - t0)
            # Seam QA, measured again on a copy of the store with its seams removed.
            shutil.copy(work / f"flow-{i}.db", work / f"qa-{i}.db")
            qa_store = Store.open(f"sqlite:///{work / f'qa-{i}.db'}")
            with qa_store.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM seams")
            t0 = time.perf_counter()
            measure_seams(qa_store, "lighthouse")
            outputs[-1] += time.perf_counter() - t0

    p, f, o = statistics.median(plain), statistics.median(flow), statistics.median(outputs)
    overhead = (f - o - p) / shots
    print(f"{shots} shots, tiny model on CPU, {args.repeats} alternating runs (medians)")
    print(f"Prefect server start-up (temporary server): {server_s:.2f}s (once per process, not per render)")
    print(f"plain engine loop        {p:.2f}s   runs {[round(x, 2) for x in plain]}")
    print(f"milimo render (flow)     {f:.2f}s   runs {[round(x, 2) for x in flow]}")
    print(f"  of which outputs       {o:.2f}s   (conform + preview.mp4 + contact sheet + seam QA, one after another)")
    print(f"per-shot orchestration overhead: {overhead:.3f}s  (target < 0.5s)")
    print(f"ratio flow-without-outputs / plain loop = {(f - o) / p:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
