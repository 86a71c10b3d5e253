"""What a rendering shot shows while it runs: the take's step in the store, a Prefect progress artifact and a
log line per step (at most once a second), and "Waiting for device" as the task run's state while every device
is busy."""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from typing import Any

from prefect import get_run_logger

from milimo_engine.denoise import StepInfo
from storyboards.fields import slug

from .worker import LeaseKeeper, interrupted

# Each stage's share of a take's progress, in the order the engine runs them; the shares of the stages a take
# does not run go to the ones it does (a draft has no stage 2 weight to wait for).
STAGE_WEIGHTS = {"stage1": 0.75, "stage2": 0.15, "temporal_refine": 0.10}


def progress_fraction(stage: str, step: int, total: int, stages: tuple[str, ...] = tuple(STAGE_WEIGHTS)) -> float:
    """How far a take is, 0..1, after `step` of `total` steps of `stage`, when it runs `stages` in order."""
    weights = [STAGE_WEIGHTS.get(s, 0.05) for s in stages]
    if stage not in stages:
        return 1.0
    i = stages.index(stage)
    done = sum(weights[:i]) + weights[i] * (step / max(1, total))
    return min(1.0, done / sum(weights))


class ProgressWriter:
    """Writes a take's progress (the store's row, Prefect's progress artifact) from a thread of its own, the
    newest value only: the denoising loop never waits on a database or an HTTP call. `close` writes the last
    value and stops."""

    def __init__(self, store: Any, take_id: int, artifact_key: str, description: str, log: Any):
        self.store, self.take_id, self.log = store, take_id, log
        self.key, self.description = artifact_key, description
        self.artifact: Any = None
        self.stop_asked_by: str | None = None  # a person asked this take to stop (read back with each write)
        self.pending: dict[str, Any] | None = None
        self.done = False
        self.wake = threading.Condition()
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,),
                                       name=f"progress-{take_id}", daemon=True)
        self.thread.start()

    def put(self, progress: dict[str, Any]) -> None:
        with self.wake:
            self.pending = progress
            self.wake.notify()

    def close(self) -> None:
        with self.wake:
            self.done = True
            self.wake.notify()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        self._create_artifact()
        while True:
            with self.wake:
                while self.pending is None and not self.done:
                    self.wake.wait()
                progress, self.pending = self.pending, None
                done = self.done
            if progress is not None:
                self._write(progress)
            if done:
                return

    def _create_artifact(self) -> None:
        try:
            from prefect.artifacts import create_progress_artifact

            self.artifact = create_progress_artifact(0.0, key=self.key, description=self.description)
        except Exception as exc:  # noqa: BLE001 - progress is a convenience; a render never fails for it
            self.log.debug("no progress artifact: %s", exc)

    def _write(self, progress: dict[str, Any]) -> None:
        try:
            self.stop_asked_by = self.store.set_progress(self.take_id, progress) or self.stop_asked_by
        except Exception as exc:  # noqa: BLE001 - a dropped write is replaced by the next step's
            self.log.debug("progress not stored: %s", exc)
        if self.artifact is not None:
            try:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(self.artifact, round(100 * progress["fraction"], 1))
            except Exception:  # noqa: BLE001
                self.artifact = None


class StepReporter:
    """The engine's step callback for one take. Returns False (stop at this step) once the process is
    interrupted, the shot's lease was taken over, or a person asked this take to stop (`stop_asked_by`).
    Progress never goes backwards, across stages or the segments
    of a long take; it is written by a `ProgressWriter` (call `close` when the take ends)."""

    def __init__(self, shot_id: str, store: Any, take_id: int, lease: LeaseKeeper | None, storyboard: str,
                 stages: tuple[str, ...], every_s: float = 1.0):
        self.shot_id, self.lease, self.every_s = shot_id, lease, every_s
        self.stages = stages
        self.last = 0.0
        self.shown = 0.0
        self.log = get_run_logger()
        self.writer = ProgressWriter(store, take_id, slug(f"progress-{storyboard}-{shot_id}"),
                                     f"shot {shot_id}: denoising", self.log)

    @property
    def stop_asked_by(self) -> str | None:
        return self.writer.stop_asked_by

    def __call__(self, info: StepInfo) -> bool:
        if interrupted() or (self.lease is not None and self.lease.lost) or self.stop_asked_by:
            return False
        now = time.monotonic()
        if now - self.last < self.every_s and info.step != info.total:
            return True
        self.last = now
        self.shown = max(self.shown, progress_fraction(info.stage, info.step, info.total, self.stages))
        self.log.info("shot %s: %s step %d/%d", self.shot_id, info.stage, info.step, info.total)
        self.writer.put({"stage": info.stage, "step": info.step, "total": info.total,
                         "fraction": round(self.shown, 3)})
        return True

    def close(self) -> None:
        self.writer.close()


class TaskRunState:
    """The task run shows "Waiting for device" in Prefect while every device is busy, and Running again
    once one is free. A label only: if the server refuses it, the render goes on. Running is sent from a thread
    of its own (the shot starts rendering meanwhile); `close` waits for it, so it never lands after the task
    run's final state."""

    def __init__(self, shot_id: str):
        self.shot_id, self.log, self.waiting = shot_id, get_run_logger(), False
        self.sending: threading.Thread | None = None

    def _set(self, state: Any) -> None:
        from prefect.client.orchestration import get_client
        from prefect.runtime import task_run

        if not task_run.id:
            return
        try:
            with get_client(sync_client=True) as client:
                client.set_task_run_state(uuid.UUID(str(task_run.id)), state, force=True)
        except Exception as exc:  # noqa: BLE001 - a label must never fail a render
            self.log.debug("task run state not set: %s", exc)

    def enter(self) -> None:
        from prefect.states import Running

        self.waiting = True
        self.log.info("shot %s: waiting for a free device", self.shot_id)
        self._set(Running(name="Waiting for device"))

    def leave(self) -> None:
        from prefect.states import Running

        if self.waiting:
            self.waiting = False
            self.sending = threading.Thread(target=contextvars.copy_context().run, args=(self._set, Running()),
                                            name=f"state-{self.shot_id}", daemon=True)
            self.sending.start()

    def close(self) -> None:
        if self.sending is not None:
            self.sending.join(timeout=30)
