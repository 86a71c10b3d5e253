"""The queue: what renders now in every storyboard of the store (the takes rendering, where, how far, who asked,
their logs), the shots waiting for a device, the renders this dashboard started, and the workers: those the store
saw render in the last day, and, with a farm (`[farm] scheduler` or `milimo dashboard --farm`), what its
scheduler says of each worker now."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from storyboards.errors import ConfigError

from ..state import DashboardState, board_state

router = APIRouter()
SEEN_WITHIN = timedelta(hours=24)  # the workers listed: those that rendered within this time
FARM_TIMEOUT_S = 3.0  # a farm scheduler that does not answer in this time is said to be unreachable
FARM_FRESH_S = 10.0  # how long what the scheduler said serves the page's refreshes (every 2 s) before asking again


def queue_context(state: DashboardState) -> dict[str, Any]:
    jobs = sorted(((name, job) for name, started in state.jobs.started.items() for job in started),
                  key=lambda item: item[1].at, reverse=True)
    farm, farm_problem = farm_now(state)
    running = state.store.rendering_now()
    logs = {(r.storyboard, r.take.shot_id, r.take.number) for r in running
            if state.layout.take_log(r.storyboard, r.take.shot_id, r.take.number).is_file()}
    return {"running": running, "logs": logs, "waiting": state.store.waiting_for_device(), "jobs": jobs[:50],
            "workers": state.store.workers(datetime.now(UTC) - SEEN_WITHIN), "farm": farm,
            "farm_address": state.settings.farm, "farm_problem": farm_problem}


def farm_now(state: DashboardState) -> tuple[Any, str | None]:
    """(the farm's view, why there is none), asked of its scheduler at most once per FARM_FRESH_S: each ask opens a
    Dask client and runs a call on every worker, and an unreachable scheduler costs FARM_TIMEOUT_S."""
    if not state.settings.farm:
        return None, None
    asked_at, farm, problem = state.farm_seen
    if asked_at is None or time.monotonic() - asked_at >= FARM_FRESH_S:
        from flows.farm import farm_view

        farm, problem = None, None
        try:
            farm = farm_view(state.settings.farm, "--farm", FARM_TIMEOUT_S)
        except ConfigError as exc:
            problem = str(exc)
        state.farm_seen = (time.monotonic(), farm, problem)
    return farm, problem


@router.get("/queue", response_class=HTMLResponse)
def queue(request: Request, state: DashboardState = Depends(board_state)) -> HTMLResponse:  # noqa: B008
    return state.page(request, "queue.html", queue_context(state))
