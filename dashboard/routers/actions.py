"""What a director does: rerender from a shot with new settings, pin a take, render, cancel. Each behind the
CSRF token and the app's guard (token, same origin, not read-only); renders start through `Jobs`, as one
`RenderRequest`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from storyboards.errors import UnknownShot
from storyboards.fields import check
from storyboards.overrides import OverrideError, parse_assignments

from ..state import DashboardState, board_state, quoted, row_id
from .shots import RERENDER_FIELDS, shot_context

router = APIRouter()


def _overrides(values: dict[str, str], spec_now: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(overrides, errors by field) of the form's values that differ from the shot's spec now."""
    errors: dict[str, str] = {}
    overrides: dict[str, Any] = {}
    for key, text in values.items():
        if text == "" or text == str(spec_now.get(key, "")):
            continue
        try:
            value = parse_assignments([f"{key}={text}"])[key]  # the same parsing as --set
        except OverrideError as exc:
            errors[key] = str(exc)
            continue
        wrong = check(key, value)  # the same typed boundary as --set and the timeline
        if wrong:
            errors[key] = f"{wrong[0]}. Fix: {wrong[1]}"
        else:
            overrides[key] = value
    return overrides, errors


@router.post("/s/{name}/shot/{shot_id}/rerender")
async def rerender(request: Request, name: str, shot_id: str,
                   state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    form = await state.form_of(request)
    _, _, source = state.known(name)
    values = {k: form.get(k, "").strip() for k in RERENDER_FIELDS}
    overrides, errors = _overrides(values, state.store.spec_data(name, shot_id))
    if not errors and not overrides:
        errors = {"form": "nothing changed; edit a field first"}
    if errors:
        return state.page(request, "shot.html", shot_context(state, name, shot_id, errors=errors, values=values),
                          status=422)
    said = state.jobs.rerender(name, state.source_of(name, source), shot_id, overrides)
    return RedirectResponse(f"/s/{quoted(name)}/shot/{quoted(shot_id)}?message=rerender+{quoted(said)}",
                            status_code=303)


@router.post("/s/{name}/shot/{shot_id}/pin")
async def pin(request: Request, name: str, shot_id: str,
              state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    form = await state.form_of(request)
    state.known(name)
    try:
        stale = state.store.pin_take(name, shot_id, row_id(form.get("take", ""), "take"))
    except (UnknownShot, ValueError) as exc:
        raise HTTPException(404 if isinstance(exc, UnknownShot) else 409, str(exc)) from None
    note = f"pinned {shot_id} take {form.get('take')}" + (f"; now stale: {', '.join(stale)}" if stale else "")
    return RedirectResponse(f"/s/{quoted(name)}?message={quoted(note)}", status_code=303)


@router.post("/s/{name}/render")
async def render(request: Request, name: str, state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    await state.form_of(request)
    _, _, source = state.known(name)
    said = state.jobs.render(name, state.source_of(name, source))
    return RedirectResponse(f"/s/{quoted(name)}?message={quoted('render ' + said)}", status_code=303)


@router.post("/s/{name}/cancel")
async def cancel(request: Request, name: str, state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    await state.form_of(request)
    state.known(name)
    pids = state.jobs.cancel(name, [t.host for t in state.store.running_takes(name)])
    note = f"asked {len(pids)} render(s) to stop at their next step" if pids else "nothing was rendering"
    return RedirectResponse(f"/s/{quoted(name)}?message={quoted(note)}", status_code=303)
