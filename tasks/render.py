"""`render_shot`: one take of one shot, from the store's spec to files on disk and a finished take.

The task receives ids and paths (a `ShotJob`, the upstream `ShotOutcome`) and returns a
`ShotOutcome`; tensors never cross a task boundary. Invalid input fails at once; anything else
(a CUDA hiccup, a full disk that got space back) is retried with exponential backoff.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from milimo_engine.errors import HandoffError, InvalidRequestError, RenderCancelled
from storyboards.validate import StoryboardInvalid

from .worker import device_pool, holder_id, ledger_for, store_for

RETRIES = int(os.environ.get("MILIMO_RENDER_RETRIES", "2"))
RETRY_BACKOFF_S = float(os.environ.get("MILIMO_RETRY_BACKOFF_S", "2"))


@dataclass(frozen=True)
class ShotJob:
    """Everything a worker needs to render one shot, as plain values."""

    storyboard: str  # the storyboard's name in the store
    shot_id: str
    model_dir: str
    out_dir: str  # the storyboard's output folder
    db_url: str
    needs_handoff: bool  # a later shot in the chain continues from this one
    devices: tuple[str, ...] | None = None
    dtype: str = "auto"
    time_limit_s: float | None = None
    progress: bool | None = None  # engine progress bar: None = when stderr is a terminal


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


PERMANENT = (InvalidRequestError, HandoffError, StoryboardInvalid, RenderCancelled, KeyError)


def is_transient(task, task_run, state) -> bool:
    """Retry only what may succeed on a second try; bad input fails the same way every time."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as inner:  # the result itself could not be read: treat as transient
        exc = inner
    return not isinstance(exc, PERMANENT)


def request_for(spec: dict[str, Any], handoff=None):
    """The engine request for a resolved storyboard spec (see storyboards.spec.ShotSpec)."""
    from milimo_engine import Guidance, ImageCondition, LoraSpec, ShotRequest

    return ShotRequest(
        prompt=spec["prompt"], negative_prompt=spec.get("negative_prompt", ""), seed=int(spec["seed"]),
        width=int(spec["width"]), height=int(spec["height"]), num_frames=int(spec["num_frames"]),
        fps=float(spec["fps"]), steps=int(spec["steps"]), guidance=Guidance(cfg=float(spec["guidance"])),
        loras=tuple(LoraSpec(lo["path"], float(lo["weight"])) for lo in spec.get("loras", ())),
        images=tuple(ImageCondition(im["path"], int(im["frame"]), float(im["strength"]))
                     for im in spec.get("images", ())),
        handoff=handoff, handoff_m=int(spec.get("handoff_overlap", 1)),
        temporal_upsample=bool(spec.get("temporal_upsample", False)),
    )


class StepReporter:
    """Per-step progress: a Prefect progress artifact and a log line, at most every `every_s` seconds."""

    def __init__(self, shot_id: str, every_s: float = 1.0):
        self.shot_id, self.every_s = shot_id, every_s
        self.last = 0.0
        self.artifact = None
        self.log = get_run_logger()
        try:
            from prefect.artifacts import create_progress_artifact

            key = "".join(c if c.isalnum() else "-" for c in f"progress-{shot_id}".lower())
            self.artifact = create_progress_artifact(0.0, key=key, description=f"shot {shot_id}: denoising")
        except Exception as exc:  # progress is a convenience; a render never fails for it
            self.log.debug("no progress artifact: %s", exc)

    def __call__(self, info) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and info.step != info.total:
            return
        self.last = now
        weight = {"stage1": 0.0, "stage2": 0.85}.get(info.stage, 0.0)
        span = 0.85 if info.stage == "stage1" else 0.15
        pct = round(100 * (weight + span * info.step / info.total), 1)
        self.log.info("shot %s: %s step %d/%d", self.shot_id, info.stage, info.step, info.total)
        if self.artifact is not None:
            try:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(self.artifact, pct)
            except Exception:
                self.artifact = None


def _write_thumbnail(frame, path: Path, width: int = 256) -> Path:
    from PIL import Image

    img = Image.fromarray(frame)
    img.thumbnail((width, width))
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}.png")
    img.save(tmp)
    os.replace(tmp, path)
    return path


def _artifact(kind: str, path: Path, frames: int | None = None, fps: float | None = None) -> dict[str, Any]:
    from milimo_engine.hashing import file_sha256

    return {"kind": kind, "uri": Path(path).resolve().as_uri(), "sha256": file_sha256(path), "frames": frames,
            "fps": fps, "bytes": Path(path).stat().st_size}


@task(name="render-shot", task_run_name="render {job.shot_id}", retries=RETRIES,
      retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BACKOFF_S), retry_jitter_factor=0.2,
      retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def render_shot(job: ShotJob, upstream: ShotOutcome | None = None) -> ShotOutcome:
    """Render one take: open it, render on a free device, write mp4/thumbnail/handoff, finish it."""
    from prefect.runtime import flow_run, task_run

    from milimo_engine import Handoff, HandoffIntegrityError, ICLoraPipeline, LoraSpec, TwoStagePipeline

    log = get_run_logger()
    store = store_for(job.db_url)
    spec = store.spec_data(job.storyboard, job.shot_id)
    # The take opens once a device is ours, so "running" in the store means rendering, not queued.
    with device_pool(job.devices).take() as device:
        take_id = store.start_take(
            job.storyboard, job.shot_id, handoff_in_take_id=upstream.take_id if upstream else None,
            handoff_in_path=upstream.handoff_path if upstream else None,
            handoff_in_sha256=upstream.handoff_sha256 if upstream else None,
            flow_run_id=str(flow_run.id) if flow_run.id else None,
            task_run_id=str(task_run.id) if task_run.id else None, host=holder_id())
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
            reporter = StepReporter(job.shot_id)
            ledger = ledger_for(job.model_dir, device, job.dtype)
            log.info("shot %s take %d on %s (%s)", job.shot_id, take.number, device, ledger.model_id)
            if spec.get("reference_video") and spec.get("ic_lora"):
                result = ICLoraPipeline(ledger, progress=job.progress)(
                    request, reference_video=spec["reference_video"], ic_lora=LoraSpec(spec["ic_lora"], 1.0),
                    callback_on_step_end=reporter, time_limit_s=job.time_limit_s)
            else:
                result = TwoStagePipeline(ledger, progress=job.progress)(
                    request, callback_on_step_end=reporter, time_limit_s=job.time_limit_s)
            take_dir = Path(job.out_dir) / job.shot_id / f"take-{take.number:03d}"
            mp4 = result.save_mp4(take_dir / "shot.mp4")
            thumb = _write_thumbnail(result.frames[len(result.frames) // 2], take_dir / "thumb.png")
            handoff_path = handoff_sha = None
            if job.needs_handoff and result.handoff is not None:
                labelled = dataclasses.replace(result.handoff, source_shot=job.shot_id, source_take=str(take_id))
                handoff_path = str(labelled.save(take_dir / "handoff.safetensors"))
                handoff_sha = labelled.sha256()
            seconds = time.perf_counter() - t0
            summary = result.summary()
            store.finish_take(
                take_id, handoff_out_path=handoff_path, handoff_out_sha256=handoff_sha,
                outputs={"mp4": str(mp4), "thumbnail": str(thumb), "frames": summary["frames"],
                         "fps": summary["fps"], "rendered_frames": summary["rendered_frames"],
                         "audio_samples": summary["audio_samples"], "sample_rate": summary["sample_rate"],
                         "device": device, "loras": summary["loras"], "model_id": summary["model_id"],
                         "segments": summary["segments"]},
                timings={**summary["timings"], "task": seconds},
                artifacts=[_artifact("mp4", mp4, summary["frames"], summary["fps"]), _artifact("thumbnail", thumb)]
                + ([_artifact("handoff", Path(handoff_path))] if handoff_path else []))
            log.info("shot %s take %d done in %.2fs -> %s", job.shot_id, take.number, seconds, mp4)
            return ShotOutcome(job.shot_id, take_id, take.number, str(mp4), str(thumb), handoff_path, handoff_sha,
                               seconds)
        except BaseException as exc:
            store.fail_take(take_id, f"{type(exc).__name__}: {exc}"[:4000])
            kind = "invalid input, not retried" if isinstance(exc, PERMANENT) else "will retry if attempts remain"
            log.error("shot %s take %d failed (%s): %s", job.shot_id, take.number, kind, exc)
            raise
