"""`render_shot`: one take of one shot, from the store's spec to files on disk and a finished take.

The task receives ids and paths (a `ShotJob`, the upstream `ShotOutcome`) and returns a
`ShotOutcome`; tensors never cross a task boundary. Before rendering it takes the shot's lease in
the store, so any number of renders of one storyboard render each shot once: a render that waited
for another one's take reuses it. Only errors known to be transient are retried (`is_transient`);
invalid input and coding errors fail the shot at once.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from milimo_engine.atomic import atomic_path
from milimo_engine.errors import MilimoEngineError, RenderCancelled
from storyboards.errors import Interrupted, MilimoError
from storyboards.fields import slug
from storyboards.paths import OutputLayout
from storyboards.store import TakeStatus, artifact_record

from .worker import (
    LeaseKeeper, device_pool, holder_id, holder_is_dead, interrupted, ledger_for, store_for, worker_name,
)

RETRIES = int(os.environ.get("MILIMO_RENDER_RETRIES", "2"))
RETRY_BACKOFF_S = float(os.environ.get("MILIMO_RETRY_BACKOFF_S", "2"))
LEASE_TTL_S = float(os.environ.get("MILIMO_LEASE_TTL_S", "60"))
LEASE_POLL_S = 0.25


@dataclass(frozen=True)
class ShotJob:
    """Everything a worker needs to render one shot, as plain values."""

    storyboard: str  # the storyboard's name in the store
    shot_id: str
    model_dir: str
    out_root: str  # the output root; the layout under it is `storyboards.paths.OutputLayout`'s
    db_url: str
    needs_handoff: bool  # a later shot in the chain continues from this one
    devices: tuple[str, ...] | None = None
    dtype: str = "auto"
    time_limit_s: float | None = None
    progress: bool | None = None  # engine progress bar: None = when stderr is a terminal
    timecode: str | None = None  # the clip's source-in timecode: the mp4's start timecode, for relinking
    reel: str | None = None  # the clip's reel or tape name, written into the mp4
    clip: str | None = None  # the clip's name in the cut


@dataclass(frozen=True)
class ShotOutcome:
    shot_id: str
    take_id: int
    take_number: int
    mp4: str | None
    thumbnail: str | None
    handoff_path: str | None
    handoff_sha256: str | None
    seconds: float
    rendered: bool = True  # False: a take that was already done, passed on for its handoff

    @classmethod
    def of_take(cls, take, rendered: bool = False) -> "ShotOutcome":
        """A recorded take (`storyboards.store.TakeView`) as the outcome a later shot continues from."""
        return cls(take.shot_id, take.id, take.number, take.outputs.get("mp4"), take.outputs.get("thumbnail"),
                   take.handoff_out_path, take.handoff_out_sha256, 0.0, rendered=rendered)


class TransientRenderError(RuntimeError):
    """Raise (or wrap) a failure that a second try may not meet."""


_TRANSIENT_ERRNOS = {errno.ETIMEDOUT, errno.EAGAIN, errno.EBUSY, errno.ESTALE, errno.ECONNRESET, errno.ENOSPC}


def is_transient_error(exc: BaseException) -> bool:
    """The allow-list: device out-of-memory, a dropped database connection, I/O timeouts. Everything else,
    bad input and coding errors (TypeError, KeyError, AssertionError...) above all, fails at once."""
    if isinstance(exc, TransientRenderError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:
        pass
    from sqlalchemy.exc import DBAPIError, DisconnectionError

    if isinstance(exc, DisconnectionError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return True
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def is_transient(task, task_run, state) -> bool:
    """Prefect's retry_condition_fn: retry only what `is_transient_error` allows."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as inner:
        exc = inner
    return isinstance(exc, BaseException) and is_transient_error(exc)


def request_for(spec: dict[str, Any], handoff=None):
    """The engine request for a resolved storyboard spec (see storyboards.spec.ShotSpec)."""
    from milimo_engine import Guidance, ImageCondition, LoraSpec, ShotRequest

    return ShotRequest(
        prompt=spec["prompt"], negative_prompt=spec.get("negative_prompt", ""), seed=int(spec["seed"]),
        width=int(spec["width"]), height=int(spec["height"]), num_frames=int(spec["num_frames"]),
        fps=float(spec["fps"]), steps=int(spec["steps"]), guidance=Guidance().with_cfg(float(spec["guidance"])),
        loras=tuple(LoraSpec(lo["path"], float(lo["weight"])) for lo in spec.get("loras", ())),
        images=tuple(ImageCondition(im["path"], int(im["frame"]), float(im["strength"]))
                     for im in spec.get("images", ())),
        handoff=handoff, handoff_m=int(spec.get("handoff_overlap", 1)),
        temporal_upsample=bool(spec.get("temporal_upsample", False)), quality=spec.get("quality", "final"),
    )


class StepReporter:
    """Per-step progress: the take's progress in the store, a Prefect progress artifact and a log line, at
    most every `every_s` seconds. Returns False (stop at this step) once the process is interrupted or the
    shot's lease was taken over."""

    def __init__(self, shot_id: str, store=None, take_id: int | None = None, lease: LeaseKeeper | None = None,
                 every_s: float = 1.0, storyboard: str = ""):
        self.shot_id, self.store, self.take_id, self.lease, self.every_s = shot_id, store, take_id, lease, every_s
        self.last = 0.0
        self.artifact = None
        self.log = get_run_logger()
        try:
            from prefect.artifacts import create_progress_artifact

            key = slug(f"progress-{storyboard}-{shot_id}")
            self.artifact = create_progress_artifact(0.0, key=key, description=f"shot {shot_id}: denoising")
        except Exception as exc:  # progress is a convenience; a render never fails for it
            self.log.debug("no progress artifact: %s", exc)

    def __call__(self, info) -> bool:
        if interrupted() or (self.lease is not None and self.lease.lost):
            return False
        now = time.monotonic()
        if now - self.last < self.every_s and info.step != info.total:
            return True
        self.last = now
        weight = {"stage1": 0.0, "stage2": 0.85}.get(info.stage, 0.0)
        span = 0.85 if info.stage == "stage1" else 0.15
        pct = round(100 * (weight + span * info.step / info.total), 1)
        self.log.info("shot %s: %s step %d/%d", self.shot_id, info.stage, info.step, info.total)
        if self.store is not None and self.take_id is not None:
            try:
                self.store.set_progress(self.take_id, {"stage": info.stage, "step": info.step, "total": info.total})
            except Exception as exc:
                self.log.debug("progress not stored: %s", exc)
        if self.artifact is not None:
            try:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(self.artifact, pct)
            except Exception:
                self.artifact = None
        return True


def _write_thumbnail(frame, path: Path, width: int = 256) -> Path:
    from PIL import Image

    img = Image.fromarray(frame)
    img.thumbnail((width, width))
    with atomic_path(path) as tmp:
        img.save(tmp)
    return path


class TaskRunState:
    """The task run shows "Waiting for device" in Prefect while every device is busy, and Running again
    once one is free. A label only: if the server refuses it, the render goes on."""

    def __init__(self, shot_id: str, log):
        self.shot_id, self.log, self.waiting = shot_id, log, False

    def _set(self, state) -> None:
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
            self._set(Running())


def _wait_for_lease(store, job: ShotJob, holder: str, log) -> None:
    """Block until this render holds the shot's lease (another render of it may be under way)."""
    waited = None
    while True:
        if interrupted():
            raise Interrupted(interrupted())
        other = store.acquire_lease(job.storyboard, job.shot_id, holder, LEASE_TTL_S, is_dead=holder_is_dead)
        if other is None:
            return
        if waited is None:
            waited = time.monotonic()
            log.info("shot %s: %s is rendering it; waiting for its take", job.shot_id, other)
        time.sleep(LEASE_POLL_S)


@task(name="render-shot", task_run_name="{job.shot_id}", retries=RETRIES,
      retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BACKOFF_S), retry_jitter_factor=0.2,
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def render_shot(job: ShotJob, upstream: ShotOutcome | None = None) -> ShotOutcome:
    """Render one take: hold the shot's lease, reuse a take that is already done, else render on a free
    device, write mp4/thumbnail/handoff, record them with their hashes, finish the take. Interrupted
    (Ctrl-C, SIGTERM), the task ends Cancelled, without a traceback in the log."""
    from prefect.states import Cancelled

    log = get_run_logger()
    try:
        store = store_for(job.db_url)
        holder = holder_id()
        _wait_for_lease(store, job, holder, log)
        with LeaseKeeper(store, job.storyboard, job.shot_id, holder, LEASE_TTL_S) as lease:
            lost = store.abandon_others(job.storyboard, job.shot_id, holder)
            if lost:
                log.warning("shot %s: takes %s were running where the lease was lost; marked abandoned",
                            job.shot_id, lost)
            done = store.done_take(job.storyboard, job.shot_id, upstream.handoff_sha256 if upstream else None)
            if done is not None and (done.handoff_out_path or not job.needs_handoff):
                log.info("shot %s: take %d is already done with this spec and upstream; kept", job.shot_id,
                         done.number)
                return ShotOutcome.of_take(done)
            return _render(job, upstream, store, holder, lease, log)
    except Exception:
        if interrupted():
            return Cancelled(message=f"shot {job.shot_id}: interrupted", data=Interrupted(interrupted()))
        raise


def _render(job: ShotJob, upstream: ShotOutcome | None, store, holder: str, lease: LeaseKeeper, log) -> ShotOutcome:
    from prefect.runtime import flow_run, task_run

    from milimo_engine import Handoff, HandoffIntegrityError, ICLoraPipeline, LoraSpec, TwoStagePipeline

    spec = store.spec_data(job.storyboard, job.shot_id)
    # The take opens once a device is ours, so "running" in the store means rendering, not queued; Prefect
    # shows the wait as its own state.
    waiting = TaskRunState(job.shot_id, log)
    with device_pool(job.devices).take(on_wait=waiting.enter) as device:
        waiting.leave()
        if interrupted():
            raise Interrupted(interrupted())
        take_id = store.start_take(
            job.storyboard, job.shot_id, handoff_in_take_id=upstream.take_id if upstream else None,
            handoff_in_path=upstream.handoff_path if upstream else None,
            handoff_in_sha256=upstream.handoff_sha256 if upstream else None,
            flow_run_id=str(flow_run.id) if flow_run.id else None,
            task_run_id=str(task_run.id) if task_run.id else None, host=holder, worker=worker_name(device))
        lease.take_id = take_id
        take = store.take(take_id)
        t0 = time.perf_counter()
        try:
            handoff = None
            if upstream is not None:
                if not upstream.handoff_path:
                    raise HandoffIntegrityError(upstream.shot_id, "the previous shot's take has no handoff file")
                handoff = Handoff.load(upstream.handoff_path)
                if handoff.sha256() != upstream.handoff_sha256:
                    raise HandoffIntegrityError(upstream.handoff_path, "holds another handoff than its take recorded")
            request = request_for(spec, handoff)
            reporter = StepReporter(job.shot_id, store, take_id, lease, storyboard=job.storyboard)
            ledger = ledger_for(job.model_dir, device, job.dtype)
            log.info("shot %s take %d on %s (%s)", job.shot_id, take.number, device, ledger.model_id)
            if spec.get("reference_video") and spec.get("ic_lora"):
                result = ICLoraPipeline(ledger, progress=job.progress)(
                    request, reference_video=spec["reference_video"], ic_lora=LoraSpec(spec["ic_lora"], 1.0),
                    callback_on_step_end=reporter, time_limit_s=job.time_limit_s)
            else:
                result = TwoStagePipeline(ledger, progress=job.progress)(
                    request, callback_on_step_end=reporter, time_limit_s=job.time_limit_s)
            layout = OutputLayout.at(job.out_root)
            tags = {"title": job.clip or job.shot_id, "reel_name": job.reel or job.clip or job.shot_id,
                    "comment": f"milimo {job.storyboard} shot {job.shot_id} take {take.number}"}
            mp4 = result.save_mp4(layout.take_file(job.storyboard, job.shot_id, take.number, ".mp4"),
                                  timecode=job.timecode, tags=tags)
            thumb = _write_thumbnail(result.frames[len(result.frames) // 2],
                                     layout.take_file(job.storyboard, job.shot_id, take.number, ".png"))
            handoff_path = handoff_sha = None
            if job.needs_handoff and result.handoff is not None:
                labelled = dataclasses.replace(result.handoff, source_shot=job.shot_id, source_take=str(take_id))
                handoff_path = str(labelled.save(
                    layout.take_file(job.storyboard, job.shot_id, take.number, ".handoff.safetensors")))
                handoff_sha = labelled.sha256()
            if interrupted():
                raise Interrupted(interrupted())
            seconds = time.perf_counter() - t0
            summary = result.summary()
            store.finish_take(
                take_id, handoff_out_path=handoff_path, handoff_out_sha256=handoff_sha,
                outputs={"mp4": str(mp4), "thumbnail": str(thumb), "frames": summary["frames"],
                         "fps": summary["fps"], "rendered_frames": summary["rendered_frames"],
                         "audio_samples": summary["audio_samples"], "sample_rate": summary["sample_rate"],
                         "device": device, "loras": summary["loras"], "model_id": summary["model_id"],
                         "recipe": summary["recipe"], "segments": summary["segments"],
                         "segment_starts": summary["segment_starts"], "timecode": job.timecode, "reel": job.reel},
                timings={**summary["timings"], "task": seconds},
                artifacts=[artifact_record("mp4", mp4, summary["frames"], summary["fps"]),
                           artifact_record("thumbnail", thumb)]
                + ([artifact_record("handoff", handoff_path)] if handoff_path else []))
            log.info("shot %s take %d done in %.2fs -> %s", job.shot_id, take.number, seconds, mp4)
            return ShotOutcome(job.shot_id, take_id, take.number, str(mp4), str(thumb), handoff_path, handoff_sha,
                               seconds)
        except BaseException as exc:
            _settle_failed_take(store, take_id, take.number, job.shot_id, exc, log)
            raise


def _settle_failed_take(store, take_id: int, number: int, shot_id: str, exc: BaseException, log) -> None:
    """Record why the take ended: cancelled (interrupt, time limit), failed with the message (input a person
    fixes), or failed with the traceback (anything else). Frees device memory before a retry of an OOM."""
    if interrupted() or isinstance(exc, (Interrupted, KeyboardInterrupt)):
        store.fail_take(take_id, f"cancelled: interrupted by signal {interrupted() or 'SIGINT'}",
                        status=TakeStatus.cancelled)
        log.warning("shot %s take %d cancelled (interrupted)", shot_id, number)
        return
    if isinstance(exc, RenderCancelled):
        store.fail_take(take_id, f"cancelled: {exc}", status=TakeStatus.cancelled)
        log.warning("shot %s take %d cancelled: %s", shot_id, number, exc)
        return
    transient = is_transient_error(exc)
    fixable = isinstance(exc, (MilimoEngineError, MilimoError))  # its message says what to fix: no traceback
    error = f"{type(exc).__name__}: {exc}" if fixable else "".join(traceback.format_exception(exc))
    store.fail_take(take_id, error[-8000:])
    kind = "transient, will retry if attempts remain" if transient else "not retried"
    log.error("shot %s take %d failed (%s): %s", shot_id, number, kind, error)
    if transient:
        _free_device_memory()


def _free_device_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
