"""The queue: what renders now in every storyboard of the store (the takes rendering, where, how far, who asked,
their logs), the shots waiting for a device, the renders this dashboard started, and the workers: those the store
saw render in the last day, and, with a farm (`[farm] scheduler` or `milimo dashboard --farm`), what its
scheduler says of each worker now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from storyboards.errors import ConfigError

from ..state import DashboardState, board_state

router = APIRouter()
SEEN_WITHIN = timedelta(hours=24)  # the workers listed: those that rendered within this time
FARM_TIMEOUT_S = 3.0  # a farm scheduler that does not answer in this time is said to be unreachable


def queue_context(state: DashboardState) -> dict[str, Any]:
    jobs = sorted(((name, job) for name, started in state.jobs.started.items() for job in started),
                  key=lambda item: item[1].at, reverse=True)
    farm, farm_problem = None, None
    if state.settings.farm:
        from flows.farm import farm_view

        try:
            farm = farm_view(state.settings.farm, "--farm", FARM_TIMEOUT_S)
        except ConfigError as exc:
            farm_problem = str(exc)
    running = state.store.rendering_now()
    logs = {(r.storyboard, r.take.shot_id, r.take.number) for r in running
            if state.layout.take_log(r.storyboard, r.take.shot_id, r.take.number).is_file()}
    return {"running": running, "logs": logs, "waiting": state.store.waiting_for_device(), "jobs": jobs[:50],
            "workers": state.store.workers(datetime.now(UTC) - SEEN_WITHIN), "farm": farm,
            "farm_address": state.settings.farm, "farm_problem": farm_problem, "now": datetime.now(UTC)}


@router.get("/queue", response_class=HTMLResponse)
def queue(request: Request, state: DashboardState = Depends(board_state)) -> HTMLResponse:  # noqa: B008
    return state.page(request, "queue.html", queue_context(state))
