"""Prefect flows: render a storyboard, re-render from a shot. Both take one `RenderRequest`.

The flow prepares (`milimo.prepare`, once per process: the CLI checked the request already), then submits one
`render_shot` per shot that is not done. Within a chain each shot receives its predecessor's future, so it waits
for the handoff; chains run concurrently, and the GPU pool (one slot per visible GPU, one on CPU;
`tasks.worker.DevicePool`) keeps one shot per device across every process on the host. On a farm the same flow runs
on Dask's task runner, each shot asking for one GPU. Every future is waited on and its state checked; a failed shot
fails the flow, after the other chains have finished and the conform, preview and contact sheet show what there is.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.states import Cancelled, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from milimo import context as app_context
from milimo.errors import outcome
from milimo.notify import notify, render_events
from milimo.prepare import RenderPlan, prepare
from milimo.reports import summarise
from milimo.request import RenderRequest
from storyboards.errors import Interrupted, MilimoError, ShotsFailed
from storyboards.fields import slug
from storyboards.planner import plan as replan
from tasks.outputs import conform_task, contact_sheet_task, deliver_task, preview_task, seam_qa_task
from tasks.render import ShotJob, ShotOutcome, render_shot
from tasks.worker import holder_is_dead, interrupted, visible_devices

__all__ = ["RenderRequest", "ShotsFailed", "flow_for", "render_storyboard", "rerender"]


def _ended(exc: MilimoError) -> State:
    """A flow that ends on a domain error returns its state instead of raising: Prefect records it (Cancelled
    for an interrupt, Failed otherwise, as `milimo.errors` says) without logging a traceback, and the caller still
    gets `exc` raised."""
    if outcome(exc).state == "Cancelled":
        return Cancelled(message=str(exc), data=exc)
    return Failed(message=str(exc), data=exc)


def _run_name() -> str:
    """`<storyboard>` when the run is created (the CLI's check is in this process), else the file's stem."""
    from pathlib import Path

    from prefect.runtime import flow_run

    request = (flow_run.parameters or {}).get("request")
    if isinstance(request, dict):
        request = RenderRequest(**request)
    return Path(request.storyboard).stem if request is not None else "storyboard"


def _threads() -> Any:
    """Shots of different chains at once on this host (the GPU pool still runs one per device)."""
    return ThreadPoolTaskRunner(max_workers=8)


@flow(name="render-storyboard", flow_run_name=_run_name, task_runner=_threads(), log_prints=True)
def render_storyboard(request: RenderRequest) -> dict[str, Any] | State:
    """Render every shot of the request's storyboard that is not done; see the module docstring."""
    if request.farm and not _on_dask():  # a deployment's run (cron, watch): the farm's runner, as a subflow
        return on_farm(render_storyboard, request.farm)(request)
    try:
        return _render(request)
    except MilimoError as exc:
        return _ended(exc)


@flow(name="rerender-storyboard", flow_run_name=_run_name, task_runner=_threads(), log_prints=True)
def rerender(request: RenderRequest) -> dict[str, Any] | State:
    """A new spec for `request.from_shot` (its overrides), that shot and the rest of its chain re-rendered in
    order; every other shot keeps its takes."""
    if not request.from_shot:
        return Failed(message="a rerender needs from_shot")
    if request.farm and not _on_dask():
        return on_farm(rerender, request.farm)(request)
    try:
        return _render(request)
    except MilimoError as exc:
        return _ended(exc)


def flow_for(request: RenderRequest) -> Any:
    """The render flow for `request`: on Dask's task runner when it renders on a farm."""
    return on_farm(render_storyboard, request.farm)


def on_farm(chosen: Any, farm: str | None) -> Any:
    """`chosen` (a flow), on the farm whose scheduler is `farm` (each shot asks for one GPU), or as it is."""
    if not farm:
        return chosen
    from prefect_dask import DaskTaskRunner

    return chosen.with_options(task_runner=DaskTaskRunner(address=farm))


def _on_dask() -> bool:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context is not None and type(context.task_runner).__name__ == "DaskTaskRunner"


def _name_flow_run(name: str, revision: int) -> None:
    """`<storyboard>@r<revision>`, tagged with the storyboard: what someone scanning Prefect's runs looks for."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(uuid.UUID(str(flow_run.id)), name=f"{name}@r{revision}",
                                   tags=sorted({*(flow_run.tags or []), "milimo", f"storyboard:{name}"}))
    except Exception as exc:  # noqa: BLE001 - a name never fails a render
        get_run_logger().debug("flow run not renamed: %s", exc)


def _one_gpu(farm: str | None):
    """On a farm, a shot needs one GPU resource of its Dask worker; elsewhere nothing."""
    if not farm:
        return contextlib.nullcontext()
    import dask

    from .farm import GPU

    return dask.annotate(resources={GPU: 1})


def _submit(plan: RenderPlan, request: RenderRequest) -> dict[str, PrefectFuture]:
    settings = app_context.current().settings
    # On a farm each worker renders on its own device (one GPU resource per shot); here, on this host's pool.
    devices = None if request.farm else tuple(request.devices) if request.devices else tuple(visible_devices())
    task = render_shot.with_options(retries=settings.render_retries,
                                    retry_delay_seconds=exponential_backoff(backoff_factor=settings.retry_backoff_s))
    futures: dict[str, PrefectFuture] = {}
    name = plan.board.name
    memory = request.memory(settings.config)
    for shot in plan.shots:
        upstream: Any = None
        if shot.predecessor:
            upstream = futures.get(shot.predecessor) or _done_outcome(plan, shot.predecessor)
        cut = plan.board.shot(shot.shot_id)
        job = ShotJob(storyboard=name, shot_id=shot.shot_id, model_dir=plan.model_dir, out_root=str(plan.layout.root),
                      db_url=plan.db_url, needs_handoff=shot.needs_handoff, devices=devices,
                      time_limit_s=request.time_limit_s, timecode=cut.source_timecode, reel=cut.reel, clip=cut.name,
                      spec_hash=spec.spec_hash if (spec := plan.specs.get(shot.shot_id)) else None,
                      requested_by=request.requested_by, memory_mode=memory.mode, device_memory=memory.device_memory)
        # No tags on the shot tasks: Prefect asks its server for tag concurrency slots before every tagged task
        # run (1-2 s a shot, measured by bench/orchestration.py); the flow run carries the storyboard's tag.
        with _one_gpu(request.farm):
            futures[shot.shot_id] = task.submit(job, upstream=upstream)
    return futures


def _done_outcome(plan: RenderPlan, shot_id: str) -> ShotOutcome | None:
    """The current take of a shot that is not re-rendering, as the upstream of the next one."""
    take = plan.store.current_take(plan.board.name, shot_id)
    return ShotOutcome.of_take(take) if take is not None else None


def _render(request: RenderRequest) -> dict[str, Any]:
    log = get_run_logger()
    plan = prepare(request, app_context.current(), is_dead=holder_is_dead)
    name = plan.board.name
    _name_flow_run(name, plan.revision)
    if plan.abandoned:
        log.warning("takes %s were left running by a process that died; marked failed", plan.abandoned)
    log.info("%s: %d shot(s) to render %s, %d done already %s (model %s)", name, len(plan.shots),
             [s.shot_id for s in plan.shots], len(plan.skipped), plan.skipped, plan.model_id)
    futures = _submit(plan, request)
    failed: dict[str, str] = {}
    stopped: dict[str, str] = {}  # a person asked the shot's take to stop, or one before it in its chain
    rendered: list[str] = []
    kept = list(plan.skipped)
    for shot_id, future in futures.items():
        future.wait()
        state = future.state
        if state.is_completed():
            (rendered if state.result().rendered else kept).append(shot_id)
        elif state.is_cancelled() and not interrupted():
            stopped[shot_id] = state.message or "stopped"
        elif (before := plan.graph.predecessor(shot_id)) in stopped:
            stopped[shot_id] = f"not rendered: {before} before it was stopped"
        else:
            failed[shot_id] = state.message or state.name or "failed"
    for shot_id, why in stopped.items():
        log.warning("%s: shot %s %s", name, shot_id, why)
    signum = interrupted()
    if signum:
        shots, done = replan(plan.graph, plan.store.shot_states(name))
        log.warning("%s: interrupted; %d shot(s) done, %d left", name, len(done), len(shots))
        raise Interrupted(signum, len(done), len(shots))
    rows = plan.store.status(name)  # read once: every output and the summary use it
    try:
        otio_path = conform_task(plan, rows)
        preview = preview_task(plan, rows)
        seams = seam_qa_task(plan, rows, request.qa)
        sheet = contact_sheet_task(plan, rows, seams, request.qa)
        config = app_context.current().settings.config
        delivered = {name: deliver_task(plan, rows, name, config) for name in request.deliveries or ()}
    except Exception as exc:
        if not failed:
            raise
        # The shots' failures come first: a full disk fails the shot, then the preview; the shot's reason is
        # what a person acts on.
        log.error("%s: the timeline, preview or contact sheet were not written: %s", name, exc)
        raise ShotsFailed(name, failed, [f"the timeline, preview or contact sheet were not written "
                                         f"({type(exc).__name__}: {str(exc)[:200]})"]) from exc
    summary = summarise(rows, rendered, failed, stopped)
    create_table_artifact(summary.rows, key=_key(f"shots-{name}"), description=f"{name}: shots after this run")
    create_markdown_artifact(f"# {name}\n\n{summary.markdown}\n\nOutputs: `{otio_path}`, `{preview}`, `{sheet}`",
                             key=_key(f"render-{name}"), description=f"{name}: render summary")
    result = {"storyboard": name, "revision": plan.revision, "rendered": rendered, "skipped": kept,
              "failed": failed, "stopped": stopped, "abandoned": plan.abandoned, "otio": otio_path, "preview": preview,
              "contact_sheet": sheet, "out_dir": str(plan.out_dir), "deliveries": delivered,
              "seams_flagged": [s.label for s in seams if s.flagged]}
    hooks = app_context.current().settings.config.notify.webhooks
    if hooks:
        notify(hooks, render_events(name, result, {r.shot_id: r.take_number for r in rows if r.take_number}),
               warn=log.warning)
    if failed:
        raise ShotsFailed(name, failed)
    return result


def _key(text: str) -> str:
    return slug(text, fallback="storyboard")
