"""The flow's output tasks: the rendered timeline, the preview, seam QA and the contact sheet, each a Prefect
task over `milimo.outputs` / `milimo.qa` (plain Python, which `milimo status`, `qa` and the dashboard use too).
Each receives the render's plan (its store, layout and storyboard) and the status rows read once after the
shots finished."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from milimo import outputs
from milimo.config import MilimoConfig
from milimo.delivery import chosen_profile, deliver
from milimo.prepare import RenderPlan
from milimo.preview import preview
from milimo.qa import measure_seams
from milimo.reports import verdict_labels
from storyboards.seams import SeamThresholds
from storyboards.store import SeamView, ShotStatus


@task(name="conform", cache_policy=NO_CACHE)
def conform_task(plan: RenderPlan, rows: list[ShotStatus]) -> str:
    """`<name>.rendered.otio`: the editor's cut with every take as a named media reference."""
    return str(outputs.rendered_timeline(plan.board, plan.store, plan.layout, rows))


@task(name="preview", cache_policy=NO_CACHE)
def preview_task(plan: RenderPlan, rows: list[ShotStatus]) -> str | None:
    path = preview(plan.layout, plan.board, rows, warn=get_run_logger().warning,
                   verdicts=verdict_labels(plan.store, plan.board.name))
    return str(path) if path else None


@task(name="seam-qa", cache_policy=NO_CACHE)
def seam_qa_task(plan: RenderPlan, rows: list[ShotStatus], thresholds: SeamThresholds) -> list[SeamView]:
    return measure_seams(plan.store, plan.board.name, thresholds, rows, warn=get_run_logger().warning)


@task(name="deliver", cache_policy=NO_CACHE)
def deliver_task(plan: RenderPlan, rows: list[ShotStatus], profile_name: str, config: MilimoConfig) -> str:
    """The chosen takes in a delivery profile's format and names (`milimo.delivery`); what is intact is kept."""
    log = get_run_logger()
    report = deliver(plan.layout, plan.store, plan.board, rows, profile_name, chosen_profile(config, profile_name),
                     say=log.info)
    log.info("%s: %s: %d take(s) delivered, %d kept", plan.board.name, profile_name, len(report.delivered),
             len(report.kept))
    return str(report.folder)


@task(name="contact-sheet", cache_policy=NO_CACHE)
def contact_sheet_task(plan: RenderPlan, rows: list[ShotStatus], seams: list[SeamView],
                       thresholds: SeamThresholds) -> str:
    return str(outputs.contact_sheet(plan.layout, plan.board.name, rows, seams, thresholds))
