"""Orchestration overhead: the 5-shot example through `render_storyboard` (Prefect + store) vs a
plain loop over the engine in the same process doing the same work (same requests, handoffs,
QuickTime deliverables, mp4 previews, thumbnails, handoff files).

Both run warm (weights loaded once, in the same process, through the same ledger cache), so the
difference is what Prefect, the store and the planning cost. Prefect's server start-up is
reported on its own; the flow's after-render outputs (conform, preview, contact sheet), which the
plain loop does not make, are timed separately and subtracted.

    python bench/orchestration.py [--repeats 3] [--steps N]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import storyboards  # noqa: E402
from milimo_engine import TwoStagePipeline, build_tiny_model  # noqa: E402
from milimo_engine.manifest import ModelManifest  # noqa: E402
from tasks.render import write_thumbnail  # noqa: E402
from tasks.worker import ledger_for, on_device_thread  # noqa: E402

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
            result = pipe(specs[sid].request(handoff))
            folder = out / sid
            result.save_mov(folder / "shot.mov", timecode="00:00:00:00", reel="ML000001")
            result.save_mp4(folder / "shot.mp4")
            assert result.frames is not None
            write_thumbnail(result.frames[len(result.frames) // 2], folder / "thumb.png")
            handoff = None
            if sid != chain.shot_ids[-1]:
                assert result.handoff is not None
                handoff = dataclasses.replace(result.handoff, source_shot=sid)
                handoff.save(folder / "handoff.safetensors")
            seconds.append(time.perf_counter() - t0)
    return seconds


class Timers:
    """Wall time per name, summed over every thread (Prefect runs each shot in a thread of its own)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def wrap(self, owner: object, attribute: str, name: str) -> None:
        real = getattr(owner, attribute)

        @functools.wraps(real)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                with self.lock:
                    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
                    self.calls[name] = self.calls.get(name, 0) + 1

        setattr(owner, attribute, timed)
        self.restore.append((owner, attribute, real))

    restore: list = []


def profile_one_render(board_path: Path, model_dir: Path, work: Path) -> tuple[Timers, float]:
    """One more render with timers on what the flow does besides the engine: the store's calls (by method),
    artifact hashing, lease waits, writing the take's files, prepare and the output tasks."""
    import flows.render as flow_module
    import milimo.outputs as outputs_module
    import storyboards.store.artifacts as artifacts_module
    import storyboards.store.reads as reads_module
    import tasks.outputs as output_tasks
    import tasks.render as render_module
    from milimo.request import RenderRequest
    from milimo_engine import ICLoraPipeline
    from milimo_engine.result import ShotResult
    from storyboards.store import Store

    timers = Timers()
    timers.restore = []
    timers.wrap(TwoStagePipeline, "__call__", "engine: the pipeline")
    timers.wrap(ICLoraPipeline, "__call__", "engine: the pipeline")
    timers.wrap(ShotResult, "save_mp4", "take files: mp4")
    timers.wrap(ShotResult, "save_mov", "take files: mov")
    timers.wrap(render_module, "write_thumbnail", "take files: thumbnail")
    timers.wrap(render_module, "_wait_for_lease", "lease: acquire / wait")
    timers.wrap(artifacts_module, "file_sha256", "hashing: artifacts recorded")
    timers.wrap(reads_module, "take_problem", "hashing: artifacts checked")
    timers.wrap(flow_module, "prepare", "prepare (load, validate, import, plan)")
    for name in ("rendered_timeline", "contact_sheet"):
        timers.wrap(outputs_module, name, f"outputs: {name}")
    timers.wrap(output_tasks, "preview", "outputs: preview")
    timers.wrap(output_tasks, "measure_seams", "outputs: seam QA")
    import prefect.artifacts as artifacts

    import tasks.progress as progress_module

    timers.wrap(progress_module.TaskRunState, "_set", "prefect: task run state (waiting for device)")
    timers.wrap(progress_module.StepReporter, "__init__", "prefect: progress artifact created")
    timers.wrap(artifacts, "update_progress_artifact", "prefect: progress artifact updated")
    timers.wrap(flow_module, "_name_flow_run", "prefect: flow run renamed")
    timers.wrap(flow_module, "create_table_artifact", "prefect: summary artifacts")
    timers.wrap(flow_module, "create_markdown_artifact", "prefect: summary artifacts")
    timers.wrap(render_module, "_on_a_device", "task: from the lease to the end of the take")
    for name in sorted(n for n in dir(Store) if not n.startswith("_") and callable(getattr(Store, n))
                       and n not in ("open", "session")):
        timers.wrap(Store, name, f"store: {name}")
    db = f"sqlite:///{work / 'profiled.db'}"
    t0 = time.perf_counter()
    flow_module.render_storyboard(
        RenderRequest(storyboard=str(board_path), model=str(model_dir), out=str(work / "profiled"), db=db)
    )
    total = time.perf_counter() - t0
    for owner, attribute, real in timers.restore:
        setattr(owner, attribute, real)
    return timers, total


def print_breakdown(timers: Timers, total: float, shots: int) -> None:
    """Where one profiled render's wall time went. Shots render in threads, so names overlap in time (the store's
    calls happen during the engine's wall time of another chain); the flow's own time is what is left."""
    print(f"\nbreakdown of one profiled render ({total:.2f}s wall, {shots} shots; thread time summed per name):")
    for name, seconds in sorted(timers.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<44} {seconds:7.3f}s  {timers.calls[name]:4d} calls  {seconds / shots * 1000:7.1f} ms/shot")


def example_board(work: Path, steps: int | None) -> Path:
    """The 5-shot example in a folder of its own, with `steps` stage-1 steps when given."""
    board_dir = work / "board"
    shutil.copytree(EXAMPLE, board_dir)
    board_path = board_dir / "lighthouse.otio"
    if steps:
        import opentimelineio as otio

        timeline = otio.adapters.read_from_file(str(board_path))
        defaults = dict(timeline.metadata["milimo"]["defaults"])
        defaults["steps"] = steps
        timeline.metadata["milimo"]["defaults"] = defaults
        otio.adapters.write_to_file(timeline, str(board_path))
    return board_path


def outputs_seconds(board_path: Path, db: str, work: Path, i: int) -> float:
    """What the flow makes after the shots, which the plain loop does not (conform, preview, contact sheet, seam
    QA), made again one after another from the flow's store and timed."""
    from milimo.outputs import SheetCell, draw_contact_sheet
    from milimo.preview import preview
    from milimo.qa import measure_seams
    from storyboards.conform import conform
    from storyboards.paths import OutputLayout
    from storyboards.store import Store

    store = Store.open(db)
    rows = store.status("lighthouse")
    t0 = time.perf_counter()
    layout = OutputLayout.at(work / f"outputs-{i}")
    board = storyboards.load(board_path)
    conform(board, store, layout)
    preview(layout, board, rows)
    draw_contact_sheet(
        [SheetCell(r.shot_id, r.take_number, r.status, None, r.outputs.thumbnail) for r in rows],
        layout.contact_sheet("lighthouse"),
    )
    seconds = time.perf_counter() - t0
    # Seam QA, measured again on a copy of the store with its seams removed.
    copy = work / f"qa-{i}.db"
    shutil.copy(db.removeprefix("sqlite:///"), copy)
    qa_store = Store.open(f"sqlite:///{copy}")
    with qa_store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM seams")
    t0 = time.perf_counter()
    measure_seams(qa_store, "lighthouse")
    return seconds + time.perf_counter() - t0


def alternating_runs(board_path: Path, model_dir: Path, work: Path, repeats: int, shots: int):
    """(plain, flow, outputs) seconds of each run, plain loop and flow alternating."""
    from flows.render import render_storyboard
    from milimo.request import RenderRequest

    plain, flow, outputs = [], [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        on_device_thread("cpu", functools.partial(plain_loop, board_path, model_dir, work / f"plain-{i}"))
        plain.append(time.perf_counter() - t0)

        db = f"sqlite:///{work / f'flow-{i}.db'}"
        t0 = time.perf_counter()
        request = RenderRequest(storyboard=str(board_path), model=str(model_dir), out=str(work / f"flow-{i}"), db=db)
        result = render_storyboard(request)
        flow.append(time.perf_counter() - t0)
        assert isinstance(result, dict) and len(result["rendered"]) == shots
        outputs.append(outputs_seconds(board_path, db, work, i))
    return plain, flow, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, help="override the storyboard's stage-1 steps")
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                    help="skip the profiled render that says where the orchestration time goes")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="milimo-bench-"))
    model_dir = build_tiny_model(work / "model")
    board_path = example_board(work, args.steps)
    shots = len(storyboards.load(board_path).shots)

    # Weights loaded once for both sides; both run their torch work on the CPU device's one thread, as the render
    # task does (`tasks.worker.on_device_thread`), so neither pays for the other's idle CPU thread team.
    on_device_thread("cpu", lambda: plain_loop(board_path, model_dir, work / "warm"))

    from prefect.testing.utilities import prefect_test_harness

    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        server_s = time.perf_counter() - t0
        plain, flow, outputs = alternating_runs(board_path, model_dir, work, args.repeats, shots)
        breakdown = profile_one_render(board_path, model_dir, work) if args.breakdown else None

    p, f, o = statistics.median(plain), statistics.median(flow), statistics.median(outputs)
    overhead = (f - o - p) / shots
    print(f"{shots} shots, tiny model on CPU, {args.repeats} alternating runs (medians)")
    print(f"Prefect server start-up (temporary server): {server_s:.2f}s (once per process, not per render)")
    print(f"plain engine loop        {p:.2f}s   runs {[round(x, 2) for x in plain]}")
    print(f"milimo render (flow)     {f:.2f}s   runs {[round(x, 2) for x in flow]}")
    print(f"  of which outputs       {o:.2f}s   (conform + preview.mp4 + contact sheet + seam QA, one after another)")
    print(f"per-shot orchestration overhead: {overhead:.3f}s  (target <= 0.3s)")
    print(f"ratio flow-without-outputs / plain loop = {(f - o) / p:.3f}")
    if breakdown:
        print_breakdown(*breakdown, shots)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
