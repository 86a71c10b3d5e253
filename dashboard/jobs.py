"""Starting and stopping renders from the dashboard: the `rerun` deployment when `milimo serve` runs, else a
`milimo` process in the background. Cancel sends SIGINT to the render holding the storyboard's running takes,
which stops its shot at the next step (the take becomes cancelled), as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RERUN_DEPLOYMENT = "rerender-storyboard/rerun"


@dataclass
class Jobs:
    db_url: str
    out_root: Path
    model: str | None = None
    logs: Path | None = None
    running: dict[str, list[subprocess.Popen]] = field(default_factory=dict)

    def _common(self) -> list[str]:
        return ["--db", self.db_url, "--out", str(self.out_root)] + (["--model", self.model] if self.model else [])

    def _spawn(self, name: str, args: list[str]) -> str:
        folder = self.logs or (self.out_root / ".dashboard-logs")
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / f"{name.replace('/', '_')}-{len(self.running.get(name, [])) + 1}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args, *self._common()], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())
        self.running.setdefault(name, []).append(proc)
        return f"started (process {proc.pid})"

    def render(self, name: str, source: str) -> str:
        return self._spawn(name, ["render", source])

    def rerender(self, name: str, source: str, shot_id: str, overrides: dict[str, Any]) -> str:
        deployed = self._via_deployment(source, shot_id, overrides)
        if deployed:
            return deployed
        sets = [f"--set={k}={'null' if v is None else v}" for k, v in overrides.items()]
        return self._spawn(name, ["rerender", source, "--from-shot", shot_id, *sets])

    def _via_deployment(self, source: str, shot_id: str, overrides: dict[str, Any]) -> str | None:
        if not os.environ.get("PREFECT_API_URL"):
            return None
        try:
            from prefect.client.orchestration import get_client
            from prefect.deployments import run_deployment

            with get_client(sync_client=True) as client:
                client.read_deployment_by_name(RERUN_DEPLOYMENT)
            run = run_deployment(RERUN_DEPLOYMENT, timeout=0, parameters={
                "storyboard": source, "from_shot": shot_id, "overrides": overrides, "db": self.db_url,
                "out": str(self.out_root), **({"model": self.model} if self.model else {})})
            return f"queued on the rerun deployment (flow run {run.name})"
        except Exception:  # noqa: BLE001 - no deployment (milimo serve is not running): a process instead
            return None

    def cancel(self, name: str, running_hosts: list[str]) -> list[int]:
        """SIGINT to every process of this host rendering the storyboard (a take's host is host:pid)."""
        pids = set()
        for host in running_hosts:
            hostname, _, pid = (host or "").rpartition(":")
            if hostname == socket.gethostname() and pid.isdigit():
                pids.add(int(pid))
        pids |= {p.pid for p in self.running.get(name, []) if p.poll() is None}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        return sorted(pids)
