"""Starting and stopping renders from the dashboard, each one `RenderRequest`: on the `rerun` deployment when
`milimo serve` runs, else in a `milimo run` process in the background (the request as a JSON file, never a string
of flags). Cancel sends SIGINT to the render holding the storyboard's running takes, which stops its shot at the
next step (the take becomes cancelled), as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from milimo.request import RenderRequest
from storyboards.paths import OutputLayout

RERUN_DEPLOYMENT = "rerender-storyboard/rerun"


@dataclass
class Jobs:
    db_url: str
    layout: OutputLayout
    model: str | None = None
    running: dict[str, list[subprocess.Popen]] = field(default_factory=dict)

    def request(self, source: str, **fields: Any) -> RenderRequest:
        return RenderRequest(storyboard=source, db=self.db_url, out=str(self.layout.root), model=self.model,
                             **fields)

    def render(self, name: str, source: str) -> str:
        return self.start(name, self.request(source))

    def rerender(self, name: str, source: str, shot_id: str, overrides: dict[str, Any]) -> str:
        request = RenderRequest.rerender(source, shot_id, overrides, db=self.db_url, out=str(self.layout.root),
                                         model=self.model)
        return self._via_deployment(request) or self.start(name, request)

    def start(self, name: str, request: RenderRequest) -> str:
        """`milimo run REQUEST.json` in the background, its output in the storyboard's job log."""
        number = len(self.running.get(name, [])) + 1
        log_path = self.layout.job_log(name, number)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        request_path = log_path.with_suffix(".request.json")
        request_path.write_text(request.model_dump_json(indent=2))
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(request_path)], stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())
        self.running.setdefault(name, []).append(proc)
        return f"started (process {proc.pid})"

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
        pids |= {p.pid for p in self.running.get(name, []) if p.poll() is None}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        return sorted(pids)
