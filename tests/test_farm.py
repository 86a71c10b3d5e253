"""The render farm with real processes: a Dask scheduler, `milimo worker` processes, the PostgreSQL store and a
Prefect server (the session's test server). No mocks."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PG_SKIP_REASON, PG_URL, pg_schema
from tests.test_flows import copy_example

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pg_url():
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the farm on PostgreSQL: {PG_SKIP_REASON}")
        pytest.skip(PG_SKIP_REASON)
    with pg_schema() as url:
        yield url


class Farm:
    def __init__(self, tmp_path: Path, prefect_api: str):
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PREFECT_API_URL": prefect_api, "DO_NOT_TRACK": "1",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MILIMO_LEASE_TTL_S": "3",
                    "MILIMO_LOCK_DIR": str(tmp_path / "locks")}
        self.logs = tmp_path / "farm-logs"
        self.logs.mkdir()
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=self.env,
                                stdout=open(self.logs / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def workers(self) -> list[str]:
        from distributed import Client

        with Client(self.address, timeout=10) as client:
            return sorted(w.get("name") for w in client.scheduler_info()["workers"].values())

    def kill(self, name: str) -> None:
        """kill -9 every process of that worker (its nanny and the Dask worker process): a host gone."""
        try:
            os.killpg(self.procs[name].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.procs[name].wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


@pytest.fixture
def farm(tmp_path, prefect_api):
    farm = Farm(tmp_path, prefect_api)
    try:
        farm.start("scheduler", "farm", "scheduler", "--port", str(farm.port))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", farm.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        for name in ("w1", "w2"):
            farm.start(name, "worker", "--scheduler", farm.address, "--cpu", "--name", name)
        while time.monotonic() < deadline and farm.workers() != ["w1", "w2"]:
            time.sleep(0.5)
        assert farm.workers() == ["w1", "w2"], [p.read_text()[-2000:] for p in farm.logs.iterdir()]
        yield farm
    finally:
        farm.stop()


def _takes(url: str) -> list[tuple[str, int, str, str | None, str | None]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "select s.shot_id, t.number, t.status, t.worker, t.progress::text from takes t "
                "join shots s on s.id = t.shot_pk order by t.id"))]
    except Exception:  # noqa: BLE001 - not created yet
        return []
    finally:
        engine.dispose()


def _render(farm: Farm, board: Path, model: Path, db: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "render", str(board), "--farm", farm.address,
                             "--model", str(model), "--db", db, "--out", str(out), *extra], cwd=ROOT, env=farm.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_chains_render_on_two_workers_and_a_killed_worker_loses_no_shot(tmp_path, tiny_model_dir, farm, pg_url):
    board = copy_example(tmp_path, steps=12)
    out = tmp_path / "renders"
    refused = subprocess.run([sys.executable, "-m", "flows.cli", "render", str(board), "--farm", farm.address,
                              "--db", f"sqlite:///{tmp_path / 'x.db'}"], cwd=ROOT, env=farm.env, capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "not PostgreSQL" in refused.stderr and not (tmp_path / "x.db").exists()

    render = _render(farm, board, tiny_model_dir, pg_url, out)
    stdout, stderr = render.communicate(timeout=400)
    assert render.returncode == 0, stderr[-3000:]
    takes = _takes(pg_url)
    assert len(takes) == 5 and {t[2] for t in takes} == {"succeeded"}
    assert {t[3] for t in takes} == {"w1", "w2"}  # the two chains ran on two workers

    # Again, slower, and kill -9 the worker of the first shot that is mid-render.
    board = copy_example(tmp_path / "again", steps=40)
    with pg_schema() as url:
        render = _render(farm, board, tiny_model_dir, url, tmp_path / "renders2")
        victim = None
        deadline = time.monotonic() + 300
        while victim is None and time.monotonic() < deadline and render.poll() is None:
            time.sleep(0.1)
            for shot, _, status, worker, progress in _takes(url):
                if status == "running" and progress and '"stage1"' in progress:
                    victim = (shot, worker)
                    break
        assert victim, "no shot was seen mid-render"
        farm.kill(victim[1])
        stdout, stderr = render.communicate(timeout=400)
        assert render.returncode == 0, stderr[-3000:]
        takes = _takes(url)
        mine = [t for t in takes if t[0] == victim[0]]
        assert [t[2] for t in mine] == ["failed", "succeeded"], mine
        assert mine[1][3] != victim[1]  # finished by the other worker
        for shot in {t[0] for t in takes}:
            assert [t[2] for t in takes if t[0] == shot].count("succeeded") == 1, takes
