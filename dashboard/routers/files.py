"""Files by take id or storyboard name, never by a path from the URL; with HTTP Range for seeking."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from storyboards.store.records import PATH_KEYS

from ..files import inside, ranged_file
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
