"""Prefect flows: render a storyboard, re-render from a shot.

The flow plans (flows.plan), then submits one `render_shot` per shot that is not done. Within a
chain each shot receives its predecessor's future, so it waits for the handoff; chains run
concurrently, and the GPU pool (one slot per visible GPU, one on CPU; `tasks.worker.DevicePool`)
keeps one shot per device across every process on the host.
Every future is waited on and its state checked; a failed shot fails the flow, after the other
chains have finished and the conform, preview and contact sheet show what there is.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.states import Cancelled, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from storyboards.errors import Interrupted, MilimoError, ShotsFailed
from storyboards.fields import slug
from storyboards.planner import plan as replan
from tasks.outputs import contact_sheet_task, conform_task, preview_task
from tasks.render import ShotJob, ShotOutcome, render_shot
from tasks.seams import seam_qa_task
from tasks.worker import holder_is_dead, interrupted, store_for, visible_devices

from .plan import RenderPlan, prepare

__all__ = ["ShotsFailed", "render_storyboard", "rerender"]


def _ended(exc: MilimoError) -> State:
    """A flow that ends on a domain error returns its state instead of raising: Prefect records it (Cancelled
    for an interrupt, Failed otherwise) without logging a traceback, and the caller still gets `exc` raised."""
    if isinstance(exc, Interrupted):
        return Cancelled(message=str(exc), data=exc)
    return Failed(message=str(exc), data=exc)


def _done_outcome(plan: RenderPlan, shot_id: str) -> ShotOutcome | None:
    """The current take of a shot that is not re-rendering, as the upstream of the next one."""
    take = store_for(plan.db_url).current_take(plan.board.name, shot_id)
    return ShotOutcome.of_take(take) if take is not None else None


@flow(name="render-storyboard", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True)
def render_storyboard(storyboard: str, model: str | None = None, out: str | None = None,
                      only: list[str] | None = None, from_shot: str | None = None,
                      overrides: dict[str, dict[str, Any]] | None = None, db: str | None = None,
                      devices: list[str] | None = None, time_limit_s: float | None = None,
                      rate: float | None = None, draft: bool = False, prompts: str | None = None,
                      size: list[int] | None = None, asset_roots: list[str] | None = None,
                      qa: dict[str, float] | None = None, farm: str | None = None) -> dict[str, Any]:
    """Render every shot of `storyboard` that is not done; see the module docstring. `draft`: this run renders
    every shot on the fast draft recipe (draft takes are their own specs, beside the final ones). `prompts`:
    the shot list that makes an editor's cut a storyboard (`size`: [width, height] for its shots). `qa`: seam
    thresholds (milimo.toml's [qa])."""
    try:
        return _render(storyboard, model=model, out=out, only=only, from_shot=from_shot, overrides=overrides, db=db,
                       devices=devices, time_limit_s=time_limit_s, rate=rate, draft=draft, prompts=prompts,
                       size=tuple(size) if size else None, asset_roots=asset_roots, qa=qa, farm=farm)
    except MilimoError as exc:
        return _ended(exc)


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


def _render(storyboard: str, *, model: str | None, out: str | None, only: list[str] | None, from_shot: str | None,
            overrides: dict[str, dict[str, Any]] | None, db: str | None, devices: list[str] | None,
            time_limit_s: float | None, rate: float | None, draft: bool, prompts: str | None,
            size: tuple[int, int] | None, asset_roots: list[str] | None, qa: dict[str, float] | None,
            farm: str | None) -> dict[str, Any]:
    log = get_run_logger()
    plan = prepare(storyboard, model=model, out=out, db=db, only=only, from_shot=from_shot, overrides=overrides,
                   rate=rate, draft=draft, is_dead=holder_is_dead, prompts=prompts, size=size, asset_roots=asset_roots)
    name = plan.board.name
    _name_flow_run(name, plan.revision)
    if plan.abandoned:
        log.warning("takes %s were left running by a process that died; marked failed", plan.abandoned)
    log.info("%s: %d shot(s) to render %s, %d done already %s (model %s)", name, len(plan.shots),
             [s.shot_id for s in plan.shots], len(plan.skipped), plan.skipped, plan.model_id)
    # On a farm each worker renders on its own device (one GPU resource per shot); here, on this host's pool.
    device_list = None if farm else tuple(devices) if devices else tuple(visible_devices())

    futures: dict[str, PrefectFuture] = {}
    for shot in plan.shots:
        upstream: Any = None
        if shot.predecessor:
            upstream = futures.get(shot.predecessor) or _done_outcome(plan, shot.predecessor)
        cut = plan.board.shot(shot.shot_id)
        job = ShotJob(storyboard=name, shot_id=shot.shot_id, model_dir=plan.model_dir, out_root=str(plan.layout.root),
                      db_url=plan.db_url, needs_handoff=shot.needs_handoff, devices=device_list,
                      time_limit_s=time_limit_s, timecode=cut.source_timecode, reel=cut.reel, clip=cut.name)
        with tags(f"storyboard:{name}"), _one_gpu(farm):
            futures[shot.shot_id] = render_shot.submit(job, upstream=upstream)

    failed: dict[str, str] = {}
    rendered: list[str] = []
    kept = list(plan.skipped)
    for shot_id, future in futures.items():
        future.wait()
        state = future.state
        if state.is_completed():
            (rendered if state.result().rendered else kept).append(shot_id)
        else:
            failed[shot_id] = state.message or state.name

    signum = interrupted()
    if signum:
        shots, done = replan(plan.graph, store_for(plan.db_url).shot_states(name))
        log.warning("%s: interrupted; %d shot(s) done, %d left", name, len(done), len(shots))
        raise Interrupted(signum, len(done), len(shots))
    otio_path = conform_task(str(plan.board.source_path), name, plan.db_url, str(plan.out_dir), rate, prompts,
                             list(size) if size else None)
    preview = preview_task(name, plan.db_url, str(plan.out_dir))
    seams = seam_qa_task(name, plan.db_url, qa)
    sheet = contact_sheet_task(name, plan.db_url, str(plan.out_dir), qa)
    summary = summarise(plan, rendered, failed)
    create_table_artifact(summary["table"], key=_key(f"shots-{name}"), description=f"{name}: shots after this run")
    create_markdown_artifact(summary["markdown"] + f"\n\nOutputs: `{otio_path}`, `{preview}`, `{sheet}`",
                             key=_key(f"render-{name}"), description=f"{name}: render summary")
    result = {"storyboard": name, "revision": plan.revision, "rendered": rendered, "skipped": kept,
              "failed": failed, "abandoned": plan.abandoned, "otio": otio_path, "preview": preview,
              "contact_sheet": sheet, "out_dir": str(plan.out_dir),
              "seams_flagged": [s["label"] for s in seams if s["flagged"]]}
    if failed:
        raise ShotsFailed(name, failed)
    return result


@flow(name="rerender-storyboard", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True)
def rerender(storyboard: str, from_shot: str, overrides: dict[str, Any] | None = None, model: str | None = None,
             out: str | None = None, db: str | None = None, devices: list[str] | None = None,
             time_limit_s: float | None = None, rate: float | None = None, draft: bool = False,
             prompts: str | None = None, size: list[int] | None = None, asset_roots: list[str] | None = None,
             qa: dict[str, float] | None = None, farm: str | None = None) -> dict[str, Any]:
    """A new spec for `from_shot` (its `overrides`), that shot and the rest of its chain re-rendered in
    order; every other shot keeps its takes."""
    try:
        return render_storyboard(storyboard, model=model, out=out, from_shot=from_shot,
                                 overrides={from_shot: dict(overrides)} if overrides else None, db=db, devices=devices,
                                 time_limit_s=time_limit_s, rate=rate, draft=draft, prompts=prompts, size=size,
                                 asset_roots=asset_roots, qa=qa, farm=farm)
    except MilimoError as exc:
        return _ended(exc)


def summarise(plan: RenderPlan, rendered: list[str], failed: dict[str, str]) -> dict[str, Any]:
    rows = []
    for r in store_for(plan.db_url).status(plan.board.name):
        this_run = "rendered" if r.shot_id in rendered else "failed" if r.shot_id in failed else "kept"
        rows.append({"shot": r.shot_id, "chain": r.chain_index, "take": r.take_number, "status": r.status,
                     "this run": this_run, "spec": (r.spec_hash or "")[:12],
                     "seconds": round(r.seconds, 2) if r.seconds is not None else None})
    header = "| shot | chain | take | status | this run | spec | seconds |\n|---|---|---|---|---|---|---|\n"
    lines = "".join(f"| {r['shot']} | {r['chain']} | {r['take']} | {r['status']} | {r['this run']} | "
                    f"`{r['spec']}` | {r['seconds']} |\n" for r in rows)
    return {"table": rows, "markdown": f"# {plan.board.name}\n\n{header}{lines}"}


def _key(text: str) -> str:
    return slug(text, fallback="storyboard")
