"""The render farm: Dask distributed through prefect-dask, not a queue of our own.

- `milimo farm scheduler`: Dask's scheduler, bound to loopback unless told otherwise.
- `milimo worker --scheduler tcp://HOST:8786 [--gpus 0,1 | --cpu] [--name NAME]`: one Dask worker process per
  GPU (under a nanny), `nthreads=1`, resource `GPU=1`, `CUDA_VISIBLE_DEVICES` set per worker, named `host/gpuN`.
  Each keeps its model ledger warm for its life (`tasks.worker.ledger_for` is a per-process cache).
- `milimo render --farm tcp://HOST:8786`: the same flow on `DaskTaskRunner(address=...)`; each shot asks for
  one GPU. A shot depends on its predecessor's future, so Dask prefers the worker that rendered it.

`check_farm` runs before anything is stored: the store must be PostgreSQL, the Prefect API a real server, and
every worker must see the same output root, model folder and asset roots (a probe file the client writes and
each worker reads back) and run the same milimo and recipe version.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from milimo import settings as milimo_settings
from milimo.settings import ENGINE_VARIABLE
from storyboards.errors import ConfigError

GPU = "GPU"  # the Dask resource each shot needs one of


def versions() -> dict[str, str]:
    from milimo_engine.recipe import RECIPE_VERSION

    return {"milimo": version("milimo"), "recipe": str(RECIPE_VERSION)}


def _worker_view(probe: str, model_dir: str, asset_roots: list[str]) -> dict:
    """Runs on each worker: what it sees of the shared folders, and its versions."""
    path = Path(probe)
    return {"probe": path.read_text() if path.is_file() else None,
            "model": (Path(model_dir) / "milimo-model.json").is_file(),
            "asset_roots": {root: Path(root).is_dir() for root in asset_roots},
            "versions": versions(), "name": milimo_settings.current().worker_name}


def connect(address: str, option: str, timeout_s: float = 10):
    """A Dask client of the scheduler at `address`; ConfigError naming `option` (the flag that gave the address)
    when none answers."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout_s)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"no Dask scheduler answers at {address} ({exc})",
                          f"start `milimo farm scheduler` there, or give the right {option} address") from None


@dataclass(frozen=True)
class FarmWorker:
    """A worker as the farm's scheduler sees it now: its name and address, its GPU slots, the models it keeps
    warm, and the shots it renders."""

    name: str
    address: str
    gpus: str
    warm: tuple[str, ...]
    rendering: tuple[str, ...]


@dataclass(frozen=True)
class FarmView:
    address: str
    workers: tuple[FarmWorker, ...]
    queued: tuple[str, ...]  # shots waiting for a worker (queued, or no worker with a free GPU)


def farm_view(address: str, option: str = "--scheduler", timeout_s: float = 10) -> FarmView:
    """What the scheduler at `address` says of its workers and queue (`milimo farm status`, the dashboard's queue
    page); ConfigError naming `option` when no scheduler answers."""
    from tasks.worker import warm_models

    client = connect(address, option, timeout_s)
    try:
        workers = client.scheduler_info()["workers"]
        processing = client.processing()
        warm = client.run(warm_models)
        queued = client.run_on_scheduler(_queued_on_scheduler)
    finally:
        client.close()
    return FarmView(address, tuple(
        FarmWorker(str(info.get("name") or a), a, str(info.get("resources", {}).get(GPU, "-")),
                   tuple(Path(m).name for m in warm.get(a) or ()), tuple(str(k) for k in processing.get(a, ())))
        for a, info in sorted(workers.items(), key=lambda kv: str(kv[1].get("name", "")))), tuple(queued))


def _queued_on_scheduler(dask_scheduler: object = None) -> list[str]:
    """Runs on the scheduler: tasks waiting for a worker (queued, or no worker with a free GPU)."""
    waiting = list(getattr(dask_scheduler, "queued", ())) + list(getattr(dask_scheduler, "unrunnable", ()))
    return [str(getattr(ts, "key", ts)) for ts in waiting]


def check_farm(address: str, db_url: str, out_root: Path, model_dir: str, asset_roots: list[str]) -> list[str]:
    """Every reason this farm cannot render, each naming the fix; empty when it can (`require_farm` raises)."""
    from sqlalchemy import make_url

    problems: list[str] = []
    if make_url(db_url).get_backend_name() != "postgresql":
        problems.append(f"the store {db_url!r} is not PostgreSQL; every worker writes to it. Fix: give --db "
                        "postgresql+psycopg://USER@HOST/DB (or [paths] db in milimo.toml)")
    if not os.environ.get("PREFECT_API_URL"):
        problems.append("no Prefect server: a farm needs one every worker reports to. Fix: run `prefect server start` "
                        "and set PREFECT_API_URL=http://HOST:4200/api")
    if problems:
        return problems
    try:
        client = connect(address, "--farm")
    except ConfigError as exc:
        return [str(exc)]
    try:
        workers = client.scheduler_info()["workers"]
        if not workers:
            return [f"the scheduler at {address} has no workers. Fix: start `milimo worker --scheduler {address}` on "
                    "each GPU machine"]
        out_root.mkdir(parents=True, exist_ok=True)
        probe = out_root / f".milimo-probe-{secrets.token_hex(8)}"
        token = secrets.token_hex(16)
        probe.write_text(token)
        try:
            seen = client.run(_worker_view, str(probe), model_dir, asset_roots)
        finally:
            probe.unlink(missing_ok=True)
        ours = versions()
        for address_, view in seen.items():
            name = view.get("name") or workers.get(address_, {}).get("name") or address_
            if view["probe"] != token:
                problems.append(
                    f"worker {name} does not see the output root {out_root} (a probe file written there "
                    "is not there for it). Fix: mount the same output root at the same path on every worker"
                )
            if not view["model"]:
                problems.append(
                    f"worker {name} has no model at {model_dir}. Fix: make the model folder the same path "
                    "on every worker"
                )
            for root, ok in view["asset_roots"].items():
                if not ok:
                    problems.append(f"worker {name} does not see the asset root {root}. Fix: mount it at the same path")
            if view["versions"] != ours:
                problems.append(
                    f"worker {name} runs {view['versions']}, this client {ours}. Fix: install the same "
                    "milimo on every worker and restart it"
                )
    finally:
        client.close()
    return problems


def require_farm(address: str, db_url: str, out_root: Path, model_dir: str, asset_roots: list[str]) -> None:
    problems = check_farm(address, db_url, out_root, model_dir, asset_roots)
    if problems:
        raise FarmNotReady(problems)


class FarmNotReady(ConfigError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems), "see each line")

    def lines(self) -> list[str]:
        return [f"farm: {p}" for p in self.problems]


def run_scheduler(host: str, port: int) -> int:
    """Dask's scheduler in the foreground (it dies with this process)."""
    return subprocess.call(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host, "--port", str(port), "--no-dashboard"]
    )


def worker_commands(scheduler: str, gpus: list[int] | None, name: str | None,
                    engine: dict[str, Any] | None = None) -> list[tuple[list[str], dict]]:
    """One `dask worker` per GPU (or one CPU worker), each with its environment (`engine`: this command's [engine]
    settings, flags included, for the processes that render)."""
    host = socket.gethostname()
    slots = [f"gpu{g}" for g in gpus] if gpus else ["cpu"]
    out = []
    for i, slot in enumerate(slots):
        worker = f"{name or host}/{slot}" if len(slots) > 1 or not name else name
        env = {"MILIMO_WORKER_NAME": worker, "CUDA_VISIBLE_DEVICES": str(gpus[i]) if gpus else ""}
        if engine:
            env[ENGINE_VARIABLE] = json.dumps(engine)
        out.append(
            (
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    scheduler,
                    "--nthreads",
                    "1",
                    "--resources",
                    f"{GPU}=1",
                    "--name",
                    worker,
                    "--nanny",
                    "--no-dashboard",
                ],
                env,
            )
        )
    return out


def run_workers(scheduler: str, gpus: list[int] | None, name: str | None, engine: dict[str, Any] | None = None) -> int:
    """Start the workers and wait; SIGINT/SIGTERM stop them all (each finishes nothing new: Dask reschedules)."""
    procs = [subprocess.Popen(cmd, env={**os.environ, **env})
             for cmd, env in worker_commands(scheduler, gpus, name, engine)]

    def stop(signum, _frame) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    codes = [proc.wait() for proc in procs]
    return max(codes) if codes else 0
