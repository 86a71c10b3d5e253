"""The temporary Prefect server a `milimo render` starts when no PREFECT_API_URL is set.

Prefect's own temporary server runs in milimo's process group, so Ctrl-C (SIGINT to the group)
kills it mid-render and milimo then retries the API for minutes; after a kill -9 of milimo it
keeps running. This one runs in a session of its own (the terminal's Ctrl-C does not reach it),
is told by the kernel to stop when milimo dies (PR_SET_PDEATHSIG), and is stopped when the
command ends, however it ends. Its own output goes to a log file, not milimo's: stopping it while a
request is in flight makes its database pool print a traceback that is the server's business.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from storyboards.errors import ConfigError

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drain_prefect_clients(timeout_s: float = 10.0) -> None:
    """Send Prefect's queued logs and events while the server still answers; after it stops, Prefect's
    exit hook would retry them for minutes."""
    if "prefect" not in sys.modules:
        return
    with contextlib.suppress(Exception):
        from prefect._internal.concurrency.services import _QueueServiceBase

        _QueueServiceBase.drain_all(timeout=timeout_s)


@contextlib.contextmanager
def prefect_api(timeout_s: float = 90.0, scheduler_s: float | None = None, log: Path | None = None,
                meanwhile: Callable[[], object] | None = None) -> Iterator[str]:
    """Yield the Prefect API URL: PREFECT_API_URL when set, else a temporary server's (stopped at exit).

    `scheduler_s`: run the server's scheduler, every that many seconds (`milimo serve`: an ephemeral server runs
    no scheduler, so its cron and interval deployments would never start a run). `log`: where the server's output
    is appended and kept (`milimo serve`); without it, a temporary file removed at exit. `meanwhile`: work for
    this process while a temporary server starts (~10 s of the server's own CPU here), run before waiting for it;
    `milimo render` imports the flow and the engine's model classes then, which it would otherwise do after."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    with _server_log(log) as output:
        yield from _temporary_server(timeout_s, scheduler_s, output, meanwhile)


@contextlib.contextmanager
def _server_log(log: Path | None) -> Iterator[Path]:
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        yield log
        return
    with tempfile.TemporaryDirectory(prefix="milimo-prefect-") as scratch:
        yield Path(scratch) / "server.log"


def _tail(log: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        said = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if said:
            return " (it said: " + " | ".join(said[-lines:])[-600:] + ")"
    return ""


def _temporary_server(timeout_s: float, scheduler_s: float | None, log: Path,
                      meanwhile: Callable[[], object] | None) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_FINAL": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    if scheduler_s is None:
        env["PREFECT__SERVER_EPHEMERAL"] = "1"
    else:
        env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = f"{scheduler_s:g}"
    parent = os.getpid()
    with open(log, "ab") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
            env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: _die_with_parent(parent))
    url = f"http://127.0.0.1:{port}/api"
    try:
        # Set before `meanwhile` runs: Prefect reads its settings when it is first imported, and a Prefect that
        # found no API URL starts an ephemeral server of its own (and leaves it running).
        os.environ["PREFECT_API_URL"] = url
        if meanwhile is not None:
            meanwhile()
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise ConfigError(f"the temporary Prefect server exited at start (code {proc.returncode})"
                                  + _tail(log),
                                  "set PREFECT_API_URL to a running Prefect server (`prefect server start`)")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                raise ConfigError(f"the temporary Prefect server did not answer within {timeout_s:g} s" + _tail(log),
                                  "set PREFECT_API_URL to a running Prefect server (`prefect server start`)")
            time.sleep(0.2)
        yield url
    finally:
        _drain_prefect_clients()
        os.environ.pop("PREFECT_API_URL", None)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
