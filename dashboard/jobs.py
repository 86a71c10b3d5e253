"""Starting and stopping renders from the dashboard, each one `RenderRequest` naming who asked: on the `rerun`
deployment when `milimo serve` runs, else in a `milimo run` process in the background (the request as a JSON file,
never a string of flags). Each start is a `Job` the storyboard page lists at once (queued, running, finished), before
its render has a take to show. Cancel sends SIGINT to the renders holding the storyboard's running takes, which stop
at their next step (their takes become cancelled), as Ctrl-C does; one take alone stops through the store
(`Store.request_cancel`), not here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from milimo.request import RenderRequest
from storyboards.paths import OutputLayout

RERUN_DEPLOYMENT = "rerender-storyboard/rerun"


@dataclass(frozen=True)
class Job:
    """One render this dashboard started: what, for whom, when, and its process (None on the deployment)."""

    number: int
    what: str  # "render" or "rerender from SHOT (key=value, ...)"
    shot_id: str | None
    by: str
    at: datetime
    proc: subprocess.Popen | None = None
    said: str = ""

    @property
    def state(self) -> str:
        """queued (on the deployment: its flow run shows the rest), running, finished, or exited N."""
        if self.proc is None:
            return "queued"
        code = self.proc.poll()
        return "running" if code is None else "finished" if code == 0 else f"exited {code}"

    @property
    def live(self) -> bool:
        return self.state in ("queued", "running")


@dataclass
class Jobs:
    db_url: str
    layout: OutputLayout
    model: str | None = None
    started: dict[str, list[Job]] = field(default_factory=dict)  # by storyboard, oldest first

    def _fields(self, by: str) -> dict[str, Any]:
        """What every request from this dashboard carries: its store, output root, model, and who asks."""
        return {"db": self.db_url, "out": str(self.layout.root), "model": self.model, "requested_by": by}

    def render(self, name: str, source: str, by: str) -> Job:
        return self.start(name, RenderRequest(storyboard=source, **self._fields(by)), "render")

    def rerender(self, name: str, source: str, shot_id: str, overrides: dict[str, Any], by: str) -> Job:
        request = RenderRequest.rerender(source, shot_id, overrides, **self._fields(by))
        what = f"rerender from {shot_id} ({', '.join(f'{k}={v}' for k, v in sorted(overrides.items()))[:200]})"
        queued = self._via_deployment(request)
        if queued:
            return self._keep(name, Job(self._next(name), what, shot_id, by, _now(), said=queued))
        return self.start(name, request, what, shot_id)

    def start(self, name: str, request: RenderRequest, what: str, shot_id: str | None = None) -> Job:
        """`milimo run REQUEST.json` in the background (the request beside the job's log)."""
        number = self._next(name)
        request_path = self.layout.job_log(name, number).with_suffix(".request.json")
        request_path.parent.mkdir(parents=True, exist_ok=True)
        request_path.write_text(request.model_dump_json(indent=2))
        return self._spawn(name, number, ["run", str(request_path)], what, shot_id, request.requested_by or "",
                           "started")

    def refresh_outputs(self, name: str, source: str, by: str, why: str) -> Job:
        """`milimo preview` in the background: the preview, contact sheet and rendered timeline again from the
        current takes (after a pin or an approval chose another take), reusing the parts that did not change."""
        return self._spawn(name, self._next(name), ["preview", source, "--db", self.db_url, "--out",
                                                    str(self.layout.root)],
                           f"preview and contact sheet again ({why})", None, by, "the preview is being built again")

    def _spawn(self, name: str, number: int, args: list[str], what: str, shot_id: str | None, by: str,
               said: str) -> Job:
        """`milimo ARGS` in a session of its own, its output in the storyboard's job log `number`."""
        log_path = self.layout.job_log(name, number)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=os.environ.copy())
        return self._keep(name, Job(number, what, shot_id, by, _now(), proc, f"{said} (process {proc.pid})"))

    def of(self, name: str) -> list[Job]:
        """The storyboard's jobs, newest first."""
        return list(reversed(self.started.get(name, [])))

    def _next(self, name: str) -> int:
        return len(self.started.get(name, [])) + 1

    def _keep(self, name: str, job: Job) -> Job:
        self.started.setdefault(name, []).append(job)
        return job

    def _via_deployment(self, request: RenderRequest) -> str | None:
        if not os.environ.get("PREFECT_API_URL"):
            return None
        try:
            from prefect.client.orchestration import get_client
            from prefect.deployments import run_deployment

            with get_client(sync_client=True) as client:
                client.read_deployment_by_name(RERUN_DEPLOYMENT)
            run: Any = run_deployment(RERUN_DEPLOYMENT, timeout=0,
                                      parameters={"request": request.model_dump(mode="json")})
            return f"queued on the rerun deployment (flow run {run.name})"
        except Exception:  # noqa: BLE001 - no deployment (milimo serve is not running): a process instead
            return None

    def cancel(self, name: str, running_hosts: list[str | None]) -> list[int]:
        """SIGINT to every process of this host rendering the storyboard (a take's host is host:pid)."""
        pids: set[int] = set()
        for host in running_hosts:
            hostname, _, number = (host or "").rpartition(":")
            if hostname == socket.gethostname() and number.isdigit():
                pids.add(int(number))
        pids |= {j.proc.pid for j in self.started.get(name, []) if j.proc is not None and j.proc.poll() is None}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        return sorted(pids)


def _now() -> datetime:
    return datetime.now(UTC)
