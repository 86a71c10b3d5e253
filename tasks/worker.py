"""What a long-lived render worker keeps between shots: ledgers (warm weights), stores, devices.

Prefect runs shot tasks in threads of the worker process; everything here is process-wide and
thread-safe, so the second shot on a device finds its weights already loaded.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from milimo import settings as milimo_settings
from milimo_engine.atomic import pid_alive
from storyboards.errors import Interrupted
from storyboards.fields import slug

_lock = threading.Lock()
_interrupt = threading.Event()
_interrupt_signal: list[int] = []
_ledgers: dict[tuple[str, str, str, Any], object] = {}
_pools: dict[tuple[str, ...], DevicePool] = {}
_device_threads: dict[str, ThreadPoolExecutor] = {}
T = TypeVar("T")


def visible_devices() -> list[str]:
    """One entry per visible GPU, or ["cpu"]: the default size of the GPU pool."""
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def worker_name(device: str | None = None) -> str:
    """The worker a take names: `milimo worker` names each of its workers (`host/gpuN`); else host/device."""
    return milimo_settings.current().worker_name or f"{socket.gethostname()}/{(device or 'cpu').replace(':', '')}"


def device_lock_key(device: str) -> str:
    """The physical device behind `device`, for the per-device lock. With CUDA_VISIBLE_DEVICES set per worker,
    every worker sees cuda:0: the key is the GPU's UUID (else the index before remapping). A CPU slot is per
    worker (its name), so two CPU workers on one host render side by side; one plain host has one."""
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        try:
            import torch

            uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
            if uuid:
                return f"gpu-{uuid}"
        except Exception:  # noqa: BLE001 - fall back to the visible-devices mapping
            pass
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        return f"gpu-{visible[index] if index < len(visible) else index}"
    slot = milimo_settings.current().worker_name
    return f"{device}-{slot}" if slot else device


def holder_id() -> str:
    """Who runs a take: host and pid, so a resumed render can tell a dead process from a live one."""
    return f"{socket.gethostname()}:{os.getpid()}"


def request_interrupt(signum: int) -> None:
    """Ctrl-C or SIGTERM: running shots stop at their next step, no new shot starts (this process)."""
    if not _interrupt_signal:
        _interrupt_signal.append(signum)
    _interrupt.set()


def interrupted() -> int | None:
    """The signal that interrupted this process, or None."""
    return _interrupt_signal[0] if _interrupt.is_set() and _interrupt_signal else None


def stop_if_interrupted() -> None:
    """Raise `Interrupted` once this process was interrupted: where a shot checks before its next piece of work."""
    signum = interrupted()
    if signum:
        raise Interrupted(signum)


def clear_interrupt() -> None:
    _interrupt_signal.clear()
    _interrupt.clear()


class LeaseKeeper:
    """Holds a shot's lease while it renders: renews it from a thread every `ttl_s / 4`, releases it at the
    end. `lost` turns true when another render took the lease over (it judged this one dead)."""

    def __init__(self, store, storyboard: str, shot_id: str, holder: str, ttl_s: float):
        self.store, self.storyboard, self.shot_id, self.holder, self.ttl_s = store, storyboard, shot_id, holder, ttl_s
        self.lost = False
        self.take_id: int | None = None  # once a take runs, each renewal is also its heartbeat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{shot_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                if not self.store.renew_lease(self.storyboard, self.shot_id, self.holder, self.ttl_s):
                    self.lost = True
                    return
                if self.take_id is not None:
                    self.store.heartbeat(self.take_id)
            except Exception:  # a dropped connection: try again next beat; expiry is the safety net
                continue

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.store.release_lease(self.storyboard, self.shot_id, self.holder)


def holder_is_dead(host: str | None) -> bool:
    """True for a take whose process was on this host and no longer exists."""
    if not host or ":" not in host:
        return True  # an older take without a pid: nobody can be rendering it
    name, _, pid = host.rpartition(":")
    if name != socket.gethostname() or not pid.isdigit():
        return False  # another machine's take (or no pid we can judge)
    return not pid_alive(int(pid))


@dataclass
class DevicePool:
    """One shot per device, across every thread and process on this host.

    Each device is an exclusive `flock` on a file under the cache folder. The kernel drops the
    lock when its holder dies, even by kill -9, so a crashed render never leaves a device taken
    (a server-side slot with a lease would stay taken until the lease ran out).
    """

    devices: tuple[str, ...]
    poll_s: float = 0.02

    @contextlib.contextmanager
    def take(self, on_wait: Callable[[], None] | None = None) -> Iterator[str]:
        """A free device, held until the block ends; `on_wait` is called once if every device is busy."""
        import fcntl
        import time

        folder = lock_dir()
        # Named once: the key of a GPU asks CUDA for its UUID, too much for every 20 ms poll.
        locks = [(device, folder / f"{slug(device_lock_key(device), 'device')}.lock") for device in self.devices]
        first = True
        while True:
            stop_if_interrupted()
            for device, lock in locks:
                fh = open(lock, "a+")
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    fh.close()
                    continue
                try:
                    yield device
                    return
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
                    fh.close()
            if first and on_wait is not None:
                on_wait()
            first = False
            time.sleep(self.poll_s)


def lock_dir() -> Path:
    path = milimo_settings.current().locks
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_pool(devices: tuple[str, ...] | None = None) -> DevicePool:
    key = tuple(devices or visible_devices())
    with _lock:
        if key not in _pools:
            _pools[key] = DevicePool(key)
        return _pools[key]


def ledger_for(model_dir: str, device: str, dtype: str = "auto", speed: Any = None):
    """The process's ledger for this model on this device (and these `SpeedOptions`), opened once and kept warm."""
    from milimo_engine import ModelLedger
    from milimo_engine.ledger import render_dtype

    resolved = render_dtype(device, dtype)
    key = (str(Path(model_dir).resolve()), device, resolved, speed)
    with _lock:
        if key not in _ledgers:
            _ledgers[key] = ModelLedger.open(model_dir, device=device, dtype=resolved, speed=speed)
        return _ledgers[key]


def on_device_thread(device: str, work: Callable[[], T]) -> T:
    """Run `work` on the device's own thread and wait for it. Every shot's torch work on a device happens on one
    long-lived thread: torch keeps one CPU thread team per calling thread, and the idle team of the previous
    shot's thread spins against the next one's (a shot ran ~1.6x slower on CPU, bench/orchestration.py). The
    caller's context (Prefect's run context, settings) goes along."""
    with _lock:
        executor = _device_threads.get(device)
        if executor is None:
            executor = _device_threads[device] = ThreadPoolExecutor(1, thread_name_prefix=f"milimo-{slug(device)}")
    return executor.submit(contextvars.copy_context().run, work).result()


def warm_models() -> list[str]:
    """The model folders this process keeps loaded (`milimo farm status` asks each worker)."""
    return sorted({key[0] for key in _ledgers})
