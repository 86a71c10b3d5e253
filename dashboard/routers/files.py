"""Files by take id or storyboard name, never by a path from the URL; with HTTP Range for seeking. Logs (a take's,
a job's this dashboard started) by the names the output layout gives them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from storyboards.errors import UnknownShot
from storyboards.store.records import PATH_KEYS

from ..files import inside, ranged_file, text_file
from ..state import DashboardState, board_state, row_id

router = APIRouter()


@router.get("/files/take/{take_id}/{kind}")
def take_file(request: Request, take_id: str, kind: str,
              state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    if kind not in PATH_KEYS:
        raise HTTPException(404, "no such file kind")
    try:
        take = state.store.take(row_id(take_id, "take"))
    except LookupError:
        raise HTTPException(404, f"no take {take_id}") from None
    path = getattr(take.outputs, kind)
    safe = inside(path, state.layout.root) if path else None
    if safe is None:
        raise HTTPException(404, f"take {take_id} has no {kind}")
    return ranged_file(request, safe)


@router.get("/files/storyboard/{name}/{kind}")
def board_file(request: Request, name: str, kind: str,
               state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    files = {"preview": state.layout.preview, "contact_sheet": state.layout.contact_sheet}
    if kind not in files:
        raise HTTPException(404, "no such file kind")
    state.known(name)
    return ranged_file(request, files[kind](name))


@router.get("/s/{name}/shot/{shot_id}/take/{number}/log")
def take_log(name: str, shot_id: str, number: str, state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    """What the render of the take said (`tasks.take_log`), as far as it got."""
    state.known(name)
    n = row_id(number, "take")
    try:
        known = any(t.number == n for t in state.store.takes(name, shot_id))
    except UnknownShot:
        known = False
    if not known:
        raise HTTPException(404, f"no take {n} of shot {shot_id!r} in {name!r}")
    return text_file(state.layout.take_log(name, shot_id, n),
                     f"take {n} of {shot_id} has no log (takes rendered before milimo kept them have none)")


@router.get("/s/{name}/jobs/{number}/log")
def job_log(name: str, number: str, state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    """The output of a `milimo` process this dashboard started."""
    n = row_id(number, "job")
    if not any(j.number == n and j.proc is not None for j in state.jobs.of(name)):
        raise HTTPException(404, f"no job {n} of {name!r} was started as a process by this dashboard")
    return text_file(state.layout.job_log(name, n), f"job {n} of {name!r} has no log")
