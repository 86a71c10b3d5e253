"""`render_shot`: one take of one shot, from the store's spec to files on disk and a finished take.

The task receives ids and paths (a `ShotJob`, the upstream `ShotOutcome`) and returns a `ShotOutcome`; tensors
never cross a task boundary. Before rendering it takes the shot's lease in the store, so any number of renders of
one storyboard render each shot once: a render that waited for another one's take reuses it. The take renders the
spec it was started under (a re-import during the render does not change it). Only errors known to be transient
are retried (`is_transient`, with the settings' retries and backoff, given by the flow); invalid input and coding
errors fail the shot at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from milimo import context as app_context
from milimo_engine.atomic import atomic_path
from milimo_engine.errors import MilimoEngineError, RenderCancelled
from milimo_engine.limits import format_bytes
from milimo_engine.memory import ModePlan
from storyboards.editorial import media_start, take_reel
from storyboards.errors import Interrupted, MilimoError
from storyboards.paths import OutputLayout
from storyboards.spec import ShotSpec
from storyboards.store import Store, TakeOutputs, TakeStatus, TakeView, artifact_record

from .progress import StepReporter, TaskRunState
from .take_log import TakeLog
from .worker import (
    LeaseKeeper,
    device_pool,
    holder_id,
    holder_is_dead,
    interrupted,
    ledger_for,
    on_device_thread,
    stop_if_interrupted,
    worker_name,
)

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
    timecode: str | None = None  # the clip's source-in timecode: the take's start timecode, for relinking
    reel: str | None = None  # the clip's reel or tape name in the cut (the take has a reel of its own)
    clip: str | None = None  # the clip's name in the cut
    spec_hash: str | None = None  # the spec this render planned: a rerender asked for meanwhile is its own take
    requested_by: str | None = None  # who asked for the render (the take records it)
    memory_mode: str = "auto"  # `milimo_engine.memory`: auto picks the fastest mode that fits the device
    device_memory: int | None = None  # bytes the device has for a render (None: what it reports free)


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
    def of_take(cls, take: TakeView, rendered: bool = False) -> ShotOutcome:
        """A recorded take as the outcome a later shot continues from."""
        return cls(take.shot_id, take.id, take.number, take.outputs.mp4, take.outputs.thumbnail,
                   take.handoff_out_path, take.handoff_out_sha256, 0.0, rendered=rendered)


class StoppedByPerson(RenderCancelled):
    """A person asked this take to stop (the dashboard's or the CLI's stop): the shot ends Cancelled, not failed;
    the rest of the render goes on."""

    def __init__(self, stage: str, step: int, by: str):
        self.by = by
        super().__init__(stage, step, f"stopped by {by}")


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
    from storyboards.store.db import lost_connection

    if lost_connection(exc):
        return True
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: retry only what `is_transient_error` allows."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as inner:  # noqa: BLE001 - the state's own error is what we judge
        exc = inner
    return isinstance(exc, BaseException) and is_transient_error(exc)


def _wait_for_lease(store: Store, job: ShotJob, holder: str, ttl_s: float) -> None:
    """Block until this render holds the shot's lease (another render of it may be under way)."""
    waited = False
    while True:
        stop_if_interrupted()
        other = store.acquire_lease(job.storyboard, job.shot_id, holder, ttl_s, is_dead=holder_is_dead)
        if other is None:
            return
        if not waited:
            waited = True
            get_run_logger().info("shot %s: %s is rendering it; waiting for its take", job.shot_id, other)
        time.sleep(LEASE_POLL_S)


@task(name="render-shot", task_run_name="{job.shot_id}", retries=2, retry_jitter_factor=0.2,
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def render_shot(job: ShotJob, upstream: ShotOutcome | None = None) -> ShotOutcome | State:
    """Render one take: hold the shot's lease, reuse a take that is already done, else render on a free
    device, write mp4/thumbnail/handoff, record them with their hashes, finish the take. Interrupted
    (Ctrl-C, SIGTERM), the task ends Cancelled, without a traceback in the log."""
    from prefect.states import Cancelled

    log = get_run_logger()
    context = app_context.current()
    ttl_s = context.settings.lease_ttl_s
    try:
        store = context.store(job.db_url, job.out_root)  # records paths relative to the job's output root
        holder = holder_id()
        _wait_for_lease(store, job, holder, ttl_s)
        with LeaseKeeper(store, job.storyboard, job.shot_id, holder, ttl_s) as lease:
            lost = store.abandon_others(job.storyboard, job.shot_id, holder)
            if lost:
                log.warning("shot %s: takes %s were running where the lease was lost; marked abandoned",
                            job.shot_id, lost)
            done = store.done_take(job.storyboard, job.shot_id, upstream.handoff_sha256 if upstream else None,
                                   job.spec_hash)
            if done is not None and (done.handoff_out_path or not job.needs_handoff):
                log.info("shot %s: take %d is already done with this spec and upstream; kept", job.shot_id,
                         done.number)
                return ShotOutcome.of_take(done)
            return _on_a_device(job, upstream, store, holder, lease)
    except Exception as exc:
        signum = interrupted()
        if signum:
            return Cancelled(message=f"shot {job.shot_id}: interrupted", data=Interrupted(signum))
        if isinstance(exc, StoppedByPerson):
            return Cancelled(message=f"{exc.by} asked it to stop")
        raise


def _on_a_device(job: ShotJob, upstream: ShotOutcome | None, store: Store, holder: str,
                 lease: LeaseKeeper) -> ShotOutcome:
    """Wait for a device, open the take on it (so "running" in the store means rendering, not queued; Prefect
    shows the wait as its own state), render, and settle the take whatever happens."""
    from prefect.runtime import flow_run, task_run

    waiting = TaskRunState(job.shot_id)
    with device_pool(job.devices).take(on_wait=waiting.enter) as device, contextlib.closing(waiting):
        waiting.leave()
        stop_if_interrupted()
        take_id = store.start_take(
            job.storyboard, job.shot_id, handoff_in_take_id=upstream.take_id if upstream else None,
            handoff_in_path=upstream.handoff_path if upstream else None,
            handoff_in_sha256=upstream.handoff_sha256 if upstream else None,
            flow_run_id=str(flow_run.id) if flow_run.id else None,
            task_run_id=str(task_run.id) if task_run.id else None, host=holder, worker=worker_name(device),
            spec_hash=job.spec_hash, requested_by=job.requested_by)
        lease.take_id = take_id
        take = store.take(take_id)
        log_path = OutputLayout.at(job.out_root).take_log(job.storyboard, job.shot_id, take.number)
        with TakeLog(log_path, str(task_run.id) if task_run.id else None) as take_log:
            take_log.said(f"{job.storyboard}: shot {job.shot_id} take {take.number} on {take.worker} ({holder}), "
                          f"asked by {job.requested_by or 'nobody named'}; Prefect flow run {take.flow_run_id}, "
                          f"task run {take.task_run_id}")
            try:
                return _render(job, upstream, store, take, lease, device)
            except BaseException as exc:
                _settle_failed_take(store, take, job.shot_id, exc)
                raise


def _handoff_in(upstream: ShotOutcome | None):
    """The upstream take's handoff, loaded and checked against the hash its take recorded."""
    from milimo_engine import Handoff, HandoffIntegrityError

    if upstream is None:
        return None
    if not upstream.handoff_path:
        raise HandoffIntegrityError(upstream.shot_id, "the previous shot's take has no handoff file")
    handoff = Handoff.load(upstream.handoff_path)
    if handoff.sha256() != upstream.handoff_sha256:
        raise HandoffIntegrityError(upstream.handoff_path, "holds another handoff than its take recorded")
    return handoff


def stages_of(spec: ShotSpec) -> tuple[str, ...]:
    """The denoising stages a take of `spec` runs, in order (its progress is weighted by them)."""
    return ("stage1", "stage2") + (("temporal_refine",) if spec.temporal_upsample else ())


def _run_engine(job: ShotJob, spec: ShotSpec, handoff: Any, device: str, reporter: StepReporter):
    from milimo_engine import ICLoraPipeline, LoraSpec, TwoStagePipeline

    engine = app_context.current().settings.config.engine  # this worker's own [engine] and flags
    ledger = ledger_for(job.model_dir, device, job.dtype, engine.speed())
    request = spec.request(handoff)
    memory = ledger.fit(request, job.memory_mode if job.memory_mode != "auto" else engine.memory_mode,
                        engine.device_memory or job.device_memory)
    get_run_logger().info("shot %s renders in %s mode: %s planned of %s", job.shot_id, memory.mode,
                          format_bytes(memory.peak),
                          format_bytes(memory.capacity) if memory.capacity else "no limit known")
    if spec.reference_video and spec.ic_lora:
        return ledger, ICLoraPipeline(ledger, progress=job.progress)(
            request, reference_video=spec.reference_video, ic_lora=LoraSpec(Path(spec.ic_lora), 1.0),
            callback_on_step_end=reporter, time_limit_s=job.time_limit_s)
    return ledger, TwoStagePipeline(ledger, progress=job.progress)(
        request, callback_on_step_end=reporter, time_limit_s=job.time_limit_s)


def _render(job: ShotJob, upstream: ShotOutcome | None, store: Store, take: TakeView, lease: LeaseKeeper,
            device: str) -> ShotOutcome:
    log = get_run_logger()
    t0 = time.perf_counter()
    spec = store.take_spec(take.id)
    handoff = _handoff_in(upstream)
    reporter = StepReporter(job.shot_id, store, take.id, lease, job.storyboard, stages_of(spec))

    def on_the_device() -> tuple[Any, Written, Any]:
        ledger, result = _run_engine(job, spec, handoff, device, reporter)
        log.info("shot %s take %d rendered on %s (%s)", job.shot_id, take.number, device, ledger.model_id)
        # the handoff is encoded here, on the device too
        return result, _write_outputs(job, take, result, spec.head), ledger

    try:
        result, written, ledger = on_device_thread(device, on_the_device)
        memory: ModePlan = ledger.memory_plan
    except RenderCancelled as exc:
        if reporter.stop_asked_by and not interrupted():
            raise StoppedByPerson(exc.stage, exc.step, reporter.stop_asked_by) from None
        raise
    finally:
        reporter.close()
    stop_if_interrupted()
    seconds = time.perf_counter() - t0
    summary = result.summary()
    outputs = TakeOutputs(
        mp4=str(written.mp4), mov=str(written.mov), thumbnail=str(written.thumbnail), frames=summary["frames"],
        fps=summary["fps"],
        rendered_frames=summary["rendered_frames"], audio_samples=summary["audio_samples"],
        sample_rate=summary["sample_rate"], device=device, loras=summary["loras"], model_id=summary["model_id"],
        memory_mode=memory.mode, memory_peak=memory.peak, device_memory=memory.capacity,
        speed={"attention": ledger.speed.attention, "compile": ledger.speed.compile, "fused": ledger.fused_last},
        recipe=summary["recipe"], segments=summary["segments"], segment_starts=tuple(summary["segment_starts"]),
        timecode=written.timecode, reel=written.reel, source_reel=job.reel, head=spec.head, tail=spec.tail)
    store.finish_take(
        take.id, handoff_out_path=written.handoff, handoff_out_sha256=written.handoff_sha256,
        outputs=outputs.as_dict(), timings={**summary["timings"], "task": seconds},
        artifacts=[artifact_record("mp4", written.mp4, summary["frames"], summary["fps"]),
                   artifact_record("mov", written.mov, summary["frames"], summary["fps"]),
                   artifact_record("thumbnail", written.thumbnail)]
        + ([artifact_record("handoff", written.handoff)] if written.handoff else []))
    log.info("shot %s take %d done in %.2fs -> %s", job.shot_id, take.number, seconds, written.mp4)
    return ShotOutcome(job.shot_id, take.id, take.number, str(written.mp4), str(written.thumbnail), written.handoff,
                       written.handoff_sha256, seconds)


@dataclass(frozen=True)
class Written:
    mp4: Path
    mov: Path
    thumbnail: Path
    handoff: str | None
    handoff_sha256: str | None
    reel: str
    timecode: str


def _write_outputs(job: ShotJob, take: TakeView, result: Any, head: int = 0) -> Written:
    """The take's files, each under its layout name (written atomically): the QuickTime an editor conforms
    (ProRes, a timecode track from the clip's source-in less the `head` handle, naming the take's own reel), the
    mp4 preview (the same timecode and reel in its tags), a thumbnail of the middle frame and, when the chain
    continues, the handoff."""
    layout = OutputLayout.at(job.out_root)

    def name(suffix: str) -> Path:
        return layout.take_file(job.storyboard, job.shot_id, take.number, suffix)

    reel, timecode = take_reel(take.id), media_start(job.timecode or "00:00:00:00", head, result.fps)
    source = f", source reel {job.reel}" if job.reel else ""
    tags = {"title": job.clip or job.shot_id, "reel_name": reel,
            "comment": f"milimo {job.storyboard} shot {job.shot_id} take {take.number}{source}"}
    mov = result.save_mov(name(".mov"), timecode=timecode, reel=reel, tags=tags)
    mp4 = result.save_mp4(name(".mp4"), timecode=timecode, tags=tags)
    thumb = write_thumbnail(result.frames[len(result.frames) // 2], name(".png"))
    if not (job.needs_handoff and result.handoff is not None):
        return Written(mp4, mov, thumb, None, None, reel, timecode)
    labelled = dataclasses.replace(result.handoff, source_shot=job.shot_id, source_take=str(take.id))
    return Written(mp4, mov, thumb, str(labelled.save(name(".handoff.safetensors"))), labelled.sha256(), reel,
                   timecode)


def write_thumbnail(frame: Any, path: Path, width: int = 256) -> Path:
    from PIL import Image

    img = Image.fromarray(frame)
    img.thumbnail((width, width))
    with atomic_path(path) as tmp:
        img.save(tmp)
    return path


def _settle_failed_take(store: Store, take: TakeView, shot_id: str, exc: BaseException) -> None:
    """Record why the take ended: cancelled (interrupt, time limit), failed with the message (input a person
    fixes), or failed with the traceback (anything else). Frees device memory before a retry of an OOM."""
    log = get_run_logger()
    if interrupted() or isinstance(exc, (Interrupted, KeyboardInterrupt)):
        asked = store.take(take.id).cancel_requested_by  # the dashboard's cancel names who, then signals
        store.fail_take(take.id, f"cancelled{f' by {asked}' if asked else ''}: interrupted by signal "
                                 f"{interrupted() or 'SIGINT'}", status=TakeStatus.cancelled)
        log.warning("shot %s take %d cancelled (interrupted)", shot_id, take.number)
        return
    if isinstance(exc, RenderCancelled):
        store.fail_take(take.id, f"cancelled: {exc}", status=TakeStatus.cancelled)
        log.warning("shot %s take %d cancelled: %s", shot_id, take.number, exc)
        return
    transient = is_transient_error(exc)
    fixable = isinstance(exc, (MilimoEngineError, MilimoError))  # its message says what to fix: no traceback
    error = f"{type(exc).__name__}: {exc}" if fixable else "".join(traceback.format_exception(exc))
    store.fail_take(take.id, error[-8000:])
    kind = "transient, will retry if attempts remain" if transient else "not retried"
    log.error("shot %s take %d failed (%s): %s", shot_id, take.number, kind, error)
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
