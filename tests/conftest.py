"""What every test shares: an environment isolated from the user's (store, outputs, config, caches, locks), the
tiny model, one Prefect server, PostgreSQL when it answers, the oracle, and the helpers that copy the example and
run `milimo` as a user does."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs one xdist worker per core: a worker's torch, and the renders it starts, use one thread each, so the
# workers do not fight over the cores (the same four render tests: 106 s against 119 s with torch's default).
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "storyboards" / "examples"

# ------------------------------------------------------------------ isolation from the user's milimo
# Every test, and every `milimo` it starts, sees a default store, output root, config, cache and lock folder of the
# session's own: a test that forgets --db or --out never reads or writes the user's renders/milimo.db (which
# `make demo` fills), ./milimo.toml or ~/.cache/milimo. `pytest_sessionfinish` checks that nothing under the
# repository's renders/ changed.
# Once per session, however the module is imported (as `conftest` and as `tests.conftest`); under pytest-xdist the
# controller makes the folder and each worker works in its own part of it (store, outputs, cache, device locks).
SESSION = Path(os.environ.get("MILIMO_TEST_SESSION_DIR") or tempfile.mkdtemp(prefix="milimo-tests-"))
os.environ["MILIMO_TEST_SESSION_DIR"] = str(SESSION)
ISOLATED = SESSION / os.environ.get("PYTEST_XDIST_WORKER", "main")
ISOLATED.mkdir(parents=True, exist_ok=True)
(ISOLATED / "milimo.toml").write_text("# the test session's empty milimo.toml\n")
for _variable in [v for v in os.environ if v.startswith("MILIMO_") and v not in (
        "MILIMO_TEST_POSTGRES_URL", "MILIMO_REFERENCE_PYTHON", "MILIMO_PARITY_REPORT", "MILIMO_WRITE_SCREENSHOTS",
        "MILIMO_TEST_SESSION_DIR", "MILIMO_TEST_COLD_START")]:
    del os.environ[_variable]
os.environ.update({
    "MILIMO_DB_URL": f"sqlite:///{ISOLATED / 'default' / 'milimo.db'}",
    "MILIMO_OUT": str(ISOLATED / "default" / "renders"),
    "MILIMO_CONFIG": str(ISOLATED / "milimo.toml"),
    "MILIMO_CACHE_DIR": str(ISOLATED / "cache"),
    "MILIMO_LOCK_DIR": str(ISOLATED / "locks"),
    "MILIMO_RETRY_BACKOFF_S": "0.2",  # retries back off quickly in tests
    "PREFECT_HOME": str(ISOLATED / "prefect"),  # the Prefect servers' database too: not the user's ~/.prefect
})


def _user_files() -> dict[str, tuple[int, int]]:
    found = {}
    for base in (ROOT / "renders", ROOT / "milimo.toml"):
        paths = base.rglob("*") if base.is_dir() else [base] if base.exists() else []
        found.update({str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in paths if p.is_file()})
    return found


USER_FILES = _user_files()


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller checks, once every worker is done
    changed = sorted(set(USER_FILES.items()) ^ set(_user_files().items()))
    if changed:
        print(f"\nisolation check FAILED: tests changed the user's files: {sorted({p for p, _ in changed})}")
        session.exitstatus = 1
    shutil.rmtree(SESSION, ignore_errors=True)


import pytest  # noqa: E402


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """`xdist_group` for pytest 9: pytest-xdist 3.8's loadgroup appends a test's group to `item._nodeid`, which
    pytest 9 no longer reads (a node id is built from `item._id`), so groups were ignored and both workers set up
    each group's module fixtures (the oracle's checkpoints, the dashboard's render). The same suffix, where
    pytest reads it."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        if groups and "@" not in item.nodeid.rsplit("]", 1)[-1]:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")

from milimo_engine import ModelLedger, ShotRequest, TwoStagePipeline, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny random LTX-2 bundle, built once per test session through the public builder."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def ledger(tiny_model_dir):
    return ModelLedger.open(tiny_model_dir)


@pytest.fixture(scope="session")
def pipeline(ledger):
    return TwoStagePipeline(ledger, progress=False)


@pytest.fixture
def request_256():
    """Small and quick: 256x256 (stage 1 at 128x128), 25 frames, few steps."""
    return ShotRequest(prompt="a lighthouse on a cliff at dusk", negative_prompt="blurry", seed=7,
                       width=256, height=256, num_frames=25, fps=24.0, steps=4)


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect server for the whole session (start-up ~10 s), for the flows a test runs in its own process;
    yields its API URL, which the `milimo` runs of this worker use too."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        _SHARED_API.setdefault("url", PREFECT_API_URL.value())
        yield PREFECT_API_URL.value()
        _SHARED_API.pop("url", None)


_SHARED_API: dict[str, str] = {}
_FLOW_COMMANDS = {"render", "rerender", "run", "demo"}  # `serve` starts a server with a scheduler of its own
_SERVERS = contextlib.ExitStack()


def shared_prefect_api() -> str:
    """This worker's Prefect API for the `milimo` runs of its tests: the session fixture's server, else one
    started at first need (milimo's own temporary server, kept until the worker ends). A render that starts its
    own server spends ~10 s of CPU on it; the suite runs ~100 renders. A test about that server passes an
    `environ` without PREFECT_API_URL."""
    if "url" not in _SHARED_API:
        from flows.prefect_server import prefect_api as temporary_prefect_api

        _SHARED_API["url"] = _SERVERS.enter_context(temporary_prefect_api(log=ISOLATED / "prefect-server.log"))
        os.environ.pop("PREFECT_API_URL", None)  # for this worker's `milimo` runs, not its own Prefect
    return _SHARED_API["url"]


def pytest_unconfigure(config):
    _SERVERS.close()
    _WARM.close()


def pytest_runtest_setup(item):
    # A `fast` test's `milimo render` is refused before Prefect starts: no server for it (~10 s of a 60 s layer).
    _SHARED_API.pop("fast", None)
    if item.get_closest_marker("fast") is not None:
        _SHARED_API["fast"] = "yes"


# ------------------------------------------------------------------ PostgreSQL, whenever a server answers
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_url() -> tuple[str | None, str]:
    """(URL, "") when a PostgreSQL server answers at MILIMO_TEST_POSTGRES_URL or the documented default."""
    url = os.environ.get("MILIMO_TEST_POSTGRES_URL") or DEFAULT_PG_URL
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return url, ""
    except Exception as exc:  # noqa: BLE001 - any failure means: no server to test against
        return (
            None,
            f"no PostgreSQL server answers at {url} ({type(exc).__name__}); start one or set MILIMO_TEST_POSTGRES_URL",
        )


PG_URL, PG_SKIP_REASON = _postgres_url()


@contextlib.contextmanager
def pg_schema():
    """A URL into a fresh schema of the test server, dropped afterwards."""
    import uuid

    from sqlalchemy import create_engine

    schema = f"milimo_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def require_postgres() -> None:
    """Skip (saying why) without a PostgreSQL server; under CI, fail instead."""
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {PG_SKIP_REASON}")
        pytest.skip(PG_SKIP_REASON)


@pytest.fixture
def pg_url():
    """A fresh schema on the PostgreSQL test server."""
    require_postgres()
    with pg_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The store on SQLite, and on PostgreSQL whenever a server answers (CI starts one)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'milimo.db'}"
        return
    require_postgres()
    with pg_schema() as url:
        yield url


def free_port() -> int:
    """A TCP port free on loopback right now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_foreign_lora(path) -> None:
    """A well-formed safetensors LoRA for modules this transformer does not have: it passes validation
    (the header is fine) and fails in the engine, once, as invalid input (UnknownLoraKeysError)."""
    import numpy as np
    from safetensors.numpy import save_file

    save_file(
        {
            "diffusion_model.transformer_blocks.999.attn1.to_q.lora_A.weight": np.zeros((4, 8), np.float32),
            "diffusion_model.transformer_blocks.999.attn1.to_q.lora_B.weight": np.zeros((8, 4), np.float32),
        },
        str(path),
    )


def wait_for_takes(db_file, predicate, timeout: float = 240, while_alive=None) -> bool:
    """Poll a SQLite store read-only until `predicate([(status, progress), ...])` over its takes holds;
    False on timeout, or once `while_alive()` is False (the render it watches has ended)."""
    import sqlite3
    import time
    from pathlib import Path

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (while_alive is None or while_alive()):
        time.sleep(0.05)
        if not Path(db_file).exists():
            continue
        try:
            rows = (
                sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=1)
                .execute("select status, progress from takes")
                .fetchall()
            )
        except sqlite3.Error:
            continue
        if predicate(rows):
            return True
    return False


# ------------------------------------------------------------------ the oracle: Lightricks' own code, run
ORACLE_DIR = ROOT / "tests" / "oracle"


def reference_python():
    """The reference environment's interpreter (`make reference`), or None."""
    from pathlib import Path

    python = Path(os.environ.get("MILIMO_REFERENCE_PYTHON") or ROOT / ".venv-ref" / "bin" / "python")
    return python if python.is_file() else None


def require_reference() -> None:
    """Skip (saying why) without the reference environment; under CI, fail instead."""
    if reference_python() is None:
        reason = (
            "no reference environment (Lightricks' ltx-core and ltx-pipelines 1.0.0) at .venv-ref; run `make reference`"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the parity tests: {reason}")
        pytest.skip(reason)


class Oracle:
    """Lightricks' code in its own interpreter: builds the tiny official checkpoints, runs the official pipelines
    (tests/oracle/*.py, run as subprocesses; milimo never imports ltx-core)."""

    def __init__(self, python, workdir):
        self.python, self.workdir = python, workdir
        self.built: dict = {}

    def _call(self, *args) -> None:
        import subprocess

        proc = subprocess.run(
            [str(self.python), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        )
        if proc.returncode != 0:
            raise AssertionError(f"the reference environment failed ({args[0]}):\n{proc.stderr[-4000:]}")

    def build(self, version: str, seed: int = 0):
        """The tiny official files of `version`, built once per session by ltx-core's own configurators."""
        key = (version, seed)
        if key not in self.built:
            out = self.workdir / f"official-{version}-{seed}"
            self._call(ORACLE_DIR / "build_official.py", "--version", version, "--out", out, "--seed", seed)
            self.built[key] = out
        return self.built[key]

    def run(self, runs: list[dict]) -> dict:
        """Each run's recorded tensors and metadata, by run name."""
        import json
        import uuid

        from safetensors import safe_open

        batch = self.workdir / f"runs-{uuid.uuid4().hex[:8]}"
        batch.mkdir()
        request = batch / "request.json"
        request.write_text(json.dumps({"runs": runs}))
        self._call(ORACLE_DIR / "run_official.py", request, batch / "out")
        results = {}
        for item in runs:
            with safe_open(str(batch / "out" / f"{item['name']}.safetensors"), framework="pt") as f:
                results[item["name"]] = ({k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {}))
        return results


@pytest.fixture(scope="session")
def oracle(tmp_path_factory):
    require_reference()
    return Oracle(reference_python(), tmp_path_factory.mktemp("oracle"))


# ------------------------------------------------------------------ the helpers every test module uses
# The example's shots are 256 px as shipped; the tests render them at 128 (stage 1 at 64): a render's CPU 19.5 s ->
# 12.7 s. What a test checks of a render (frames, takes, handoffs, files) does not depend on the size.
TEST_SIZE = 128


def copy_example(folder: Path, steps: int | None = None, edit=None, name: str = "lighthouse.otio",
                 size: int | None = TEST_SIZE) -> Path:
    """The 5-shot example with its assets in a folder of its own (its own asset root), at the tests' size (`size=None`:
    as shipped), optionally with fewer steps (quick to render) or edited (`edit(timeline)`)."""
    import opentimelineio as otio

    if not folder.exists():
        shutil.copytree(EXAMPLES, folder)
    path = folder / name
    timeline = otio.adapters.read_from_file(str(EXAMPLES / "lighthouse.otio"))
    defaults = dict(timeline.metadata["milimo"]["defaults"])
    if steps is not None:
        defaults["steps"] = steps
    if size is not None:
        defaults.update(width=size, height=size)
    timeline.metadata["milimo"] = {**dict(timeline.metadata["milimo"]), "defaults": defaults}
    if edit is not None:
        edit(timeline)
    otio.adapters.write_to_file(timeline, str(path))
    return path


RENDERED_STEPS = 4
# The rendered example is rendered as on a device this small: every shot's `resident` peak is above it and its
# `release` peak below (the tiny model at TEST_SIZE: 12.6-14.3 MiB against 9.0-10.6 MiB), so each take renders,
# bit for bit as resident would, in `release` mode and records it (tests/test_memory.py reads them).
RENDERED_DEVICE_MEMORY = 13_000_000
# Every column of the store that holds a path under the folder the example was rendered in.
RECORDED_PATHS = {"storyboards": ["source_path"], "revisions": ["source_path"], "files_seen": ["path"],
                  "takes": ["outputs", "handoff_in_path", "handoff_out_path"], "artifacts": ["uri"]}


@pytest.fixture(scope="session")
def rendered_example_template(tmp_path_factory, tiny_model_dir, prefect_api) -> Path:
    """The example rendered once per worker (RENDERED_STEPS, on SQLite), for the tests that start from a rendered
    storyboard rather than test the first render: each gets a copy (`rendered_example`), not a render of its own."""
    folder = tmp_path_factory.mktemp("rendered-example")
    board = copy_example(folder / "b", steps=RENDERED_STEPS)
    proc = milimo("render", board, "--model", tiny_model_dir, "--db", f"sqlite:///{folder / 'm.db'}",
                  "--out", folder / "out", "--device-memory", RENDERED_DEVICE_MEMORY,
                  env={"PREFECT_API_URL": prefect_api}, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def copy_rendered_example(template: Path, folder: Path) -> tuple[Path, str, Path]:
    """(storyboard, store URL, output root) of a copy of the rendered example in `folder`, its store's recorded
    paths moved there as a user moving the whole folder would find them (the files, their sizes and hashes, as
    rendered)."""
    import sqlite3

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template / "b", folder / "b")
    shutil.copytree(template / "out", folder / "out")
    for db in template.glob("m.db*"):
        shutil.copy2(db, folder / db.name)
    with sqlite3.connect(folder / "m.db") as conn:
        for table, columns in RECORDED_PATHS.items():
            for column in columns:
                conn.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (str(template), str(folder)))
    return folder / "b" / "lighthouse.otio", f"sqlite:///{folder / 'm.db'}", folder / "out"


@pytest.fixture
def rendered_example(rendered_example_template):
    """`rendered_example(folder)`: a copy of the rendered example in `folder` (see `copy_rendered_example`)."""
    return lambda folder: copy_rendered_example(rendered_example_template, folder)


def ffprobe(path: Path, entries: str = "stream=codec_type,codec_name,sample_rate:stream_tags=timecode,reel_name:"
            "format_tags=reel_name,title,comment") -> dict:
    """What Debian's ffprobe reads of a file (JSON), as an editor's tools would; `make system` installs it."""
    import json

    exe = shutil.which("ffprobe")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("ffprobe is missing: `make system` installs Debian's ffmpeg")
        pytest.skip("ffprobe is not installed (`make system` installs Debian's ffmpeg as root)")
    proc = subprocess.run([exe, "-v", "error", "-show_entries", entries, "-of", "json", str(path)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def milimo(*args, env=None, environ=None, timeout=300, cwd=ROOT, **popen) -> subprocess.CompletedProcess:
    """`milimo ARGS` as a user runs it: this session's isolated environment (or `environ`), plus `env`. A command
    that renders or reads models starts warm (tests/warm_start.py: torch and the model libraries already imported,
    everything else fresh), unless MILIMO_TEST_COLD_START=1."""
    command = [sys.executable, "-m", "flows.cli", *map(str, args)]
    environment = _environment(args, environ, env)
    if not popen and _WARM.usable(args, environment):
        return _WARM.run(command, environment, Path(cwd), timeout)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout,
                          **popen)


class _WarmStart:
    """This worker's warm-start server (tests/warm_start.py), started at its first warm run and ended with it."""

    def __init__(self) -> None:
        self.server: subprocess.Popen | None = None
        self.socket = ISOLATED / "warm-start.sock"
        self.runs = 0

    def usable(self, args: tuple, environment: dict) -> bool:
        import warm_start

        return (bool(args) and str(args[0]) in _WARM_COMMANDS and environment.get("MILIMO_TEST_COLD_START") != "1"
                and warm_start.preloaded_environment_matches(environment, dict(os.environ)))

    def _start(self) -> None:
        if self.server is not None and self.server.poll() is None:
            return
        self.socket.unlink(missing_ok=True)
        self.server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("warm_start.py")),
                                        str(self.socket)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.server.stdout is not None and self.server.stdout.readline().strip() == "ready"

    def run(self, command: list[str], environment: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        import json
        import signal
        import socket

        self._start()
        self.runs += 1
        out, err = (ISOLATED / f"warm-{self.runs}.{name}" for name in ("out", "err"))
        request = {"args": command[3:], "env": environment, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(self.socket))
            conn.sendall(json.dumps(request).encode() + b"\n")
            replies = conn.makefile("r")
            pid = json.loads(replies.readline())["pid"]
            conn.settimeout(timeout)
            try:
                try:
                    returncode = json.loads(replies.readline())["returncode"]
                except TimeoutError:
                    os.kill(pid, signal.SIGKILL)
                    conn.settimeout(None)
                    replies.readline()
                    raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text()) from None
                return subprocess.CompletedProcess(command, returncode, out.read_text(), err.read_text())
            finally:  # a killed run's output files go too
                out.unlink(missing_ok=True)
                err.unlink(missing_ok=True)

    def close(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()


_WARM = _WarmStart()
_WARM_COMMANDS = _FLOW_COMMANDS | {"model"}  # the commands that import torch and the model libraries


def milimo_process(*args, env=None, environ=None, cwd=ROOT, **popen) -> subprocess.Popen:
    """`milimo ARGS` started in the background (a test waits for it, signals or kills it)."""
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=cwd,
                            env=_environment(args, environ, env), **popen)


def _environment(args: tuple, environ: dict | None, env: dict | None) -> dict:
    """`environ` as given (a test that sets up its own), else the session's environment, with the worker's Prefect
    server for the commands that run flows here; plus `env`."""
    if environ is not None:
        return {**environ, **(env or {})}
    extra = env or {}
    runs_flows = bool(args) and str(args[0]) in _FLOW_COMMANDS and "fast" not in _SHARED_API
    shared = {"PREFECT_API_URL": shared_prefect_api()} if runs_flows and not (
        "PREFECT_API_URL" in extra or os.environ.get("PREFECT_API_URL")) else {}
    return {**os.environ, **shared, **extra}
