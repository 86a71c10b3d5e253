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
from conftest import PG_URL, copy_example, free_port, milimo, milimo_process, pg_schema, require_postgres

ROOT = Path(__file__).resolve().parents[1]


class Farm:
    def __init__(self, tmp_path: Path, prefect_api: str):
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PREFECT_API_URL": prefect_api, "DO_NOT_TRACK": "1",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MILIMO_LEASE_TTL_S": "3",
                    "MILIMO_LOCK_DIR": str(tmp_path / "locks")}
        self.logs = tmp_path / "farm-logs"
        self.logs.mkdir()
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
            proc = milimo_process(*args, environ=self.env, stdout=log, stderr=subprocess.STDOUT,
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
    return milimo_process("render", board, "--farm", farm.address, "--model", model, "--db", db, "--out", out, *extra,
                          environ=farm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_chains_render_on_two_workers_and_a_killed_worker_loses_no_shot(tmp_path, tiny_model_dir, farm, pg_url):
    board = copy_example(tmp_path / "board", steps=12)
    out = tmp_path / "renders"
    refused = milimo("render", board, "--farm", farm.address, "--db", f"sqlite:///{tmp_path / 'x.db'}",
                     environ=farm.env)
    assert refused.returncode == 2 and "not PostgreSQL" in refused.stderr and not (tmp_path / "x.db").exists()

    render = _render(farm, board, tiny_model_dir, pg_url, out)
    stdout, stderr = render.communicate(timeout=400)
    assert render.returncode == 0, stderr[-3000:]
    takes = _takes(pg_url)
    assert len(takes) == 5 and {t[2] for t in takes} == {"succeeded"}
    assert {t[3] for t in takes} == {"w1", "w2"}  # the two chains ran on two workers
    status = milimo("farm", "status", "--scheduler", farm.address, environ=farm.env)
    assert status.returncode == 0 and status.stdout.count("(warm)") == 2 and "0 shot(s) queued" in status.stdout, \
        status.stdout + status.stderr
    # The dashboard's queue page: the farm's workers as its scheduler sees them, and as the store saw them render
    from fastapi.testclient import TestClient

    from dashboard import DashboardSettings, create_app

    client = TestClient(create_app(DashboardSettings(db_url=pg_url, out_root=out, farm=farm.address)),
                        base_url="http://127.0.0.1:8765")
    queue = client.get("/queue")
    assert queue.status_code == 200 and queue.text.count('class="farm-worker"') == 2, queue.text
    assert queue.text.count("(warm)") == 2 and "2 worker(s) connected; 0 shot(s) waiting for one" in queue.text
    assert [w in queue.text for w in ('<tr class="worker" data-worker="w1">', '<tr class="worker" data-worker="w2">')] \
        == [True, True], queue.text

    # Again, slower, and kill -9 the worker of the first shot that is mid-render.
    board = copy_example(tmp_path / "again" / "board", steps=40)
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


# ------------------------------------------------------------------ two simulated hosts (network namespaces)
def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def two_hosts(tmp_path):
    """Two "hosts": network namespaces on a bridge, each process in its own UTS namespace with its own hostname.
    The root namespace has the bridge address; PostgreSQL is reached through its Unix socket."""
    import shutil

    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        pytest.skip("needs root with `ip` and `unshare` to create network namespaces (CI runs as root)")
    tag = f"{os.getpid() % 10000:04d}"
    subnet = f"10.231.{os.getpid() % 200 + 20}"
    bridge, names = f"mlb{tag}", {"hostA": f"mla{tag}", "hostB": f"mlc{tag}"}
    made: list[tuple[str, str]] = []
    try:
        _sh("ip", "link", "add", bridge, "type", "bridge")
        made.append(("link", bridge))
        _sh("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
        _sh("ip", "link", "set", bridge, "up")
        for i, ns in enumerate(names.values(), start=2):
            _sh("ip", "netns", "add", ns)
            made.append(("netns", ns))
            _sh("ip", "link", "add", f"{ns}h", "type", "veth", "peer", "name", f"{ns}n")
            made.append(("link", f"{ns}h"))
            _sh("ip", "link", "set", f"{ns}h", "master", bridge)
            _sh("ip", "link", "set", f"{ns}h", "up")
            _sh("ip", "link", "set", f"{ns}n", "netns", ns)
            _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{subnet}.{i}/24", "dev", f"{ns}n")
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", f"{ns}n", "up")
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield {"address": f"{subnet}.1", "namespaces": names}
    finally:
        for kind, name in reversed(made):
            subprocess.run(["ip", kind, "del", name] if kind == "netns" else ["ip", "link", "del", name],
                           capture_output=True)


def _socket_schema_url():
    """A fresh schema reached through PostgreSQL's Unix socket (network namespaces do not isolate it)."""
    import contextlib

    from sqlalchemy import create_engine, make_url

    @contextlib.contextmanager
    def schema():
        with pg_schema() as tcp_url:
            engine = create_engine(PG_URL)
            with engine.connect() as conn:
                folder = conn.exec_driver_sql("show unix_socket_directories").scalar().split(",")[0].strip()
            engine.dispose()
            url = make_url(tcp_url)
            yield url.set(host=None, port=None).update_query_dict({"host": folder}).render_as_string(
                hide_password=False)

    return schema()


def test_losing_a_whole_host_mid_render_loses_no_shot(tmp_path, tiny_model_dir, two_hosts):
    require_postgres()
    ip = two_hosts["address"]
    farm = Farm(tmp_path, "")
    farm.port = free_port()
    farm.address = f"tcp://{ip}:{farm.port}"
    prefect_port = free_port()
    farm.env.update({"PREFECT_API_URL": f"http://{ip}:{prefect_port}/api", "PREFECT_HOME": str(tmp_path / "prefect"),
                     "PREFECT_SERVER_API_HOST": ip})
    try:
        with open(farm.logs / "prefect.log", "w") as log:
            prefect = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", ip, "--port",
                                        str(prefect_port)], env=farm.env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        farm.procs["prefect"] = prefect
        farm.start("scheduler", "farm", "scheduler", "--host", ip, "--port", str(farm.port))
        for host, ns in two_hosts["namespaces"].items():
            command = f"hostname {host} && exec {sys.executable} -m flows.cli worker --scheduler {farm.address} --cpu"
            with open(farm.logs / f"{host}.log", "w") as log:
                farm.procs[host] = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c",
                                                     command], cwd=ROOT, env=farm.env, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
        import urllib.request

        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and not ready:
            time.sleep(0.5)
            try:
                urllib.request.urlopen(f"http://{ip}:{prefect_port}/api/health", timeout=2).read()
                ready = farm.workers() == ["hostA/cpu", "hostB/cpu"]
            except Exception:  # noqa: BLE001 - not up yet
                continue
        assert ready, [p.read_text()[-1500:] for p in farm.logs.iterdir()]

        board = copy_example(tmp_path / "board", steps=40)
        with _socket_schema_url() as url:
            render = _render(farm, board, tiny_model_dir, url, tmp_path / "renders")
            victim = None
            while victim is None and time.monotonic() < deadline + 300 and render.poll() is None:
                time.sleep(0.1)
                for shot, _, status, worker, progress in _takes(url):
                    if status == "running" and progress and '"stage1"' in progress:
                        victim = (shot, worker)
                        break
            assert victim, (render.poll(), render.stderr.read() if render.poll() is not None else "")
            farm.kill(victim[1].split("/")[0])  # every process of that host
            stdout, stderr = render.communicate(timeout=400)
            assert render.returncode == 0, stderr[-3000:]
            takes = _takes(url)
            mine = [t for t in takes if t[0] == victim[0]]
            assert [t[2] for t in mine] == ["failed", "succeeded"], mine
            assert mine[1][3] != victim[1]
            assert {t[3] for t in takes if t[2] == "succeeded"} <= {"hostA/cpu", "hostB/cpu"}
            for shot in {t[0] for t in takes}:
                assert [t[2] for t in takes if t[0] == shot].count("succeeded") == 1, takes
    finally:
        farm.stop()
