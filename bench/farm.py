"""Farm scaling: shots of fixed cost on 1, 2 and 4 loopback workers, against the single-host runner.

    .venv/bin/python bench/farm.py [--shots 8] [--workers 1 2 4] [--steps 8]

Every shot is the same (the tiny model, 256x256, 25 frames, 30 steps, independent chains), so the figures are about
orchestration and scaling, not content. For each worker count: a Dask scheduler and N `milimo worker --cpu`
processes (one torch thread each), a warm-up render (each worker loads the model once, as a farm keeps it
warm), then a timed render into a fresh PostgreSQL schema. The single-host runner renders the same storyboard
with no farm. Reports shots per second, scaling efficiency (shots/s with N workers / (N x shots/s with 1)),
the machine's core count, and per-shot time against the single-host runner. Needs PostgreSQL
(MILIMO_TEST_POSTGRES_URL or the tests' default, as tests/conftest.py finds it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import opentimelineio as otio  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from milimo_engine.tiny import build_tiny_model  # noqa: E402
from tests.conftest import PG_SKIP_REASON, PG_URL, free_port, pg_schema  # noqa: E402 - the tests' PostgreSQL schemas


def storyboard(folder: Path, shots: int, steps: int, size: int) -> Path:
    timeline = otio.schema.Timeline(name="farm-bench")
    timeline.metadata["milimo"] = {"schema": 1, "defaults": {"width": size, "height": size, "steps": steps}}
    track = otio.schema.Track(name="shots")
    for i in range(shots):
        clip = otio.schema.Clip(name=f"shot {i}", source_range=otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, 24), otio.opentime.RationalTime(25, 24)))
        clip.metadata["milimo"] = {"shot_id": f"s{i:02d}", "prompt": f"shot {i}", "seed": i}
        track.append(clip)
    timeline.tracks.append(track)
    path = folder / "farm-bench.otio"
    otio.adapters.write_to_file(timeline, str(path))
    return path


def milimo(*args: str, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def render(board: Path, model: Path, env: dict, out: Path, farm: str | None) -> tuple[float, float]:
    """(wall seconds of `milimo render`, seconds from the first take's start to the last one's end)."""
    from sqlalchemy import create_engine

    with pg_schema() as db:
        t0 = time.perf_counter()
        args = ["render", str(board), "--model", str(model), "--db", db, "--out", str(out)]
        proc = subprocess.run([sys.executable, "-m", "flows.cli", *args, *(["--farm", farm] if farm else [])],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"render failed: {proc.stderr[-2000:]}")
        engine = create_engine(db)
        with engine.connect() as conn:
            first, last = conn.exec_driver_sql("select min(started_at), max(finished_at) from takes").one()
        engine.dispose()
        return seconds, (last - first).total_seconds()


def on_farm(workers: int, board: Path, model: Path, env: dict, work: Path) -> tuple[float, float]:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [milimo("farm", "scheduler", "--port", str(port), env=env)]
    try:
        time.sleep(3)
        for i in range(workers):
            procs.append(milimo("worker", "--scheduler", address, "--cpu", "--name", f"bench-{i}", env=env))
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=120)
        render(board, model, env, work / f"warm-{workers}", address)  # every worker loads the model once
        return render(board, model, env, work / f"timed-{workers}", address)
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    if not PG_URL:
        raise SystemExit(f"bench/farm.py needs PostgreSQL: {PG_SKIP_REASON}")
    work = Path(tempfile.mkdtemp(prefix="milimo-farm-bench-"))
    model = build_tiny_model(work / "model")
    board = storyboard(work, args.shots, args.steps, args.size)

    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "DO_NOT_TRACK": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "MILIMO_LOCK_DIR": str(work / "locks")}
        single = render(board, model, env, work / "single", None)
        results = {n: on_farm(n, board, model, env, work) for n in args.workers}

    cores = os.cpu_count()
    base = args.shots / results[min(results)][1] if results else 0
    print(f"{args.shots} shots of fixed cost (tiny model, {args.size}x{args.size}, 25 frames, {args.steps} steps), "
          f"{cores} CPU cores (the client, Prefect server and scheduler share them with the workers)")
    print(f"single-host runner (no farm): wall {single[0]:.2f}s, shots {single[1]:.2f}s, "
          f"{args.shots / single[1]:.3f} shots/s, {single[1] / args.shots:.2f}s per shot")
    for n, (wall, span) in results.items():
        rate = args.shots / span
        print(f"{n} worker(s): wall {wall:.2f}s, shots {span:.2f}s, {rate:.3f} shots/s, "
              f"efficiency {rate / (base * n):.2f} (target >= 0.9 with >= {n} free cores), "
              f"{span / args.shots:.2f}s per shot ({(span - single[1]) / args.shots:+.2f}s vs single host)")


if __name__ == "__main__":
    main()
