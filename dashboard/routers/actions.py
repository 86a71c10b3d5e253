"""What a director does: say who they are, rerender from a shot with new settings, pin, approve, ask for changes
or reject a take, note a frame, render, stop one take, cancel the storyboard's renders. Each behind the CSRF token
and the app's guard (token, same origin, not read-only); every action records who (the name this browser gave, or
the person's own token); a decision is refused, not applied, when another was made since the page was shown; a
stop or a cancel is asked on a page that says what it stops, then confirmed. Renders start through `Jobs`, as one
`RenderRequest`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from milimo.errors import outcome
from storyboards.errors import DecisionChanged, NotRunning, ReviewError, UnknownShot
from storyboards.fields import check
from storyboards.overrides import OverrideError, parse_assignments
from storyboards.store import VERDICTS, ReviewState
from storyboards.store.records import frame_span

from ..security import USER_COOKIE, display_name
from ..state import DashboardState, board_state, quoted, row_id, running_words
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


def _shot_url(name: str, shot_id: str) -> str:
    return f"/s/{quoted(name)}/shot/{quoted(shot_id)}"


@router.post("/whoami")
async def whoami(request: Request, state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    """The display name this browser acts under, asked once and kept in a cookie."""
    form = await state.form_of(request)
    name = display_name(form.get("name"))
    back = form.get("next", "/")
    back = back if back.startswith("/") and not back.startswith("//") else "/"
    if name is None:
        return state.done(back, "give a name of 1 to 60 printable characters")
    response = state.done(back, f"you are {name} here; your decisions record that name")
    response.set_cookie(USER_COOKIE, quoted(name), httponly=True, samesite="strict", max_age=400 * 86400)
    return response


@router.post("/s/{name}/shot/{shot_id}/rerender")
async def rerender(request: Request, name: str, shot_id: str,
                   state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    form = await state.form_of(request)
    _, _, source = state.known(name)
    user = state.acting_user(request)
    values = {k: form.get(k, "").strip() for k in RERENDER_FIELDS}
    overrides, errors = _overrides(values, state.store.spec_data(name, shot_id))
    if not errors and not overrides:
        errors = {"form": "nothing changed; edit a field first"}
    if errors:
        return state.page(request, "shot.html", shot_context(state, name, shot_id, errors=errors, values=values),
                          status=422)
    job = state.jobs.rerender(name, state.source_of(name, source), shot_id, overrides, user)
    return state.done(_shot_url(name, shot_id), f"rerender of {shot_id} for {user}: {job.said}")


def _refused(request: Request, state: DashboardState, name: str, shot_id: str, exc: Exception,
             errors: dict[str, str] | None = None) -> Response:
    """The shot page again, as it is now, saying why nothing was changed."""
    return state.page(request, "shot.html", shot_context(state, name, shot_id, errors=errors, message=str(exc)),
                      status=outcome(exc).http_status)


async def _decision(request: Request, state: DashboardState, name: str) -> tuple[dict[str, str], str]:
    """A decision's form (its CSRF token checked) and who makes it, on a storyboard that exists."""
    form = await state.form_of(request)
    state.known(name)
    return form, state.acting_user(request)


@router.post("/s/{name}/shot/{shot_id}/pin")
async def pin(request: Request, name: str, shot_id: str,
              state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    form, user = await _decision(request, state, name)
    try:
        stale = state.store.pin_take(name, shot_id, row_id(form.get("take", ""), "take"), by=user,
                                     seen=form.get("seen") or None)
    except DecisionChanged as exc:
        return _refused(request, state, name, shot_id, exc)
    except (UnknownShot, ValueError) as exc:
        raise HTTPException(404 if isinstance(exc, UnknownShot) else 409, str(exc)) from None
    note = f"{user} pinned {shot_id} take {form.get('take')}" + (f"; now stale: {', '.join(stale)}" if stale else "")
    return state.done(f"/s/{quoted(name)}", f"{note}; {_refresh(state, name, user, f'{shot_id} pinned')}")


def _refresh(state: DashboardState, name: str, user: str, why: str) -> str:
    """The storyboard's preview and contact sheet built again, now that another take is chosen."""
    _, _, source = state.known(name)
    return state.jobs.refresh_outputs(name, state.source_of(name, source), user, why).said


@router.post("/s/{name}/shot/{shot_id}/review")
async def review(request: Request, name: str, shot_id: str,
                 state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    form, user = await _decision(request, state, name)
    verdict = VERDICTS.get(form.get("verdict", ""))
    if verdict is None:
        raise HTTPException(422, f"no verdict {form.get('verdict', '')[:40]!r}; approve, needs-changes or reject")
    number = row_id(form.get("take", ""), "take")
    try:
        stale = state.store.review_take(name, shot_id, number, verdict, user, note=form.get("note", "").strip() or None,
                                        seen=form.get("seen") or None)
    except ReviewError as exc:
        return _refused(request, state, name, shot_id, exc)
    except UnknownShot:
        raise HTTPException(404, f"no shot {shot_id!r} in {name!r}") from None
    said = f"{user} marked {shot_id} take {number} {verdict.value}"
    if verdict is ReviewState.approved:
        said += "; it is the shot's chosen take" + (f"; now stale: {', '.join(stale)}" if stale else "")
        said += f"; {_refresh(state, name, user, f'{shot_id} take {number} approved')}"
    return state.done(_shot_url(name, shot_id), said)


@router.post("/s/{name}/shot/{shot_id}/note")
async def note(request: Request, name: str, shot_id: str,
               state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    form, user = await _decision(request, state, name)
    number = row_id(form.get("take", ""), "take")
    frame: tuple[int | None, int | None] = (None, None)  # the whole take
    try:
        if form.get("frame", "").strip():
            try:
                frame = frame_span(form["frame"])
            except ValueError as exc:
                raise ReviewError(str(exc), "give a frame N or a range A-B of the take, or leave it empty") from None
        added = state.store.add_note(name, shot_id, number, form.get("text", ""), user, frame=frame[0],
                                     frame_end=frame[1])
    except ReviewError as exc:
        return _refused(request, state, name, shot_id, exc, errors={f"note-{number}": str(exc)})
    except UnknownShot:
        raise HTTPException(404, f"no shot {shot_id!r} in {name!r}") from None
    return state.done(_shot_url(name, shot_id), f"{user} noted {shot_id} take {number} at {added.where}")


@router.post("/s/{name}/render")
async def render(request: Request, name: str, state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    await state.form_of(request)
    _, _, source = state.known(name)
    user = state.acting_user(request)
    job = state.jobs.render(name, state.source_of(name, source), user)
    return state.done(f"/s/{quoted(name)}", f"render for {user}: {job.said}")


@router.get("/s/{name}/shot/{shot_id}/stop", response_class=HTMLResponse)
def stop_page(request: Request, name: str, shot_id: str, take: str = "",
              state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    """What stopping this take means, asked before it is done."""
    state.known(name)
    number = row_id(take, "take")
    try:
        running = state.store.running_take(name, shot_id, number)
    except NotRunning as exc:
        return state.done(_shot_url(name, shot_id), str(exc))
    return state.page(request, "confirm.html", {
        "name": name, "title": f"Stop take {number} of {shot_id}?",
        "lines": [f"It stops at its next step and is kept as cancelled, with your name; take "
                  f"{running.number} of {shot_id} is {running_words(running)}.",
                  "The shot's current take stays current. The rest of its render goes on; the shots after it in "
                  "its chain are not rendered this time."],
        "action": f"{_shot_url(name, shot_id)}/stop", "fields": {"take": str(number)}, "confirm": "Stop it",
        "back": _shot_url(name, shot_id), "keep": "Keep rendering"})


@router.post("/s/{name}/shot/{shot_id}/stop")
async def stop(request: Request, name: str, shot_id: str,
               state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    form, user = await _decision(request, state, name)
    number = row_id(form.get("take", ""), "take")
    if form.get("confirm") != "yes":
        return state.done(f"{_shot_url(name, shot_id)}/stop?take={number}", "confirm the stop first")
    try:
        state.store.request_cancel(name, shot_id, number, user)
    except NotRunning as exc:
        return state.done(_shot_url(name, shot_id), str(exc))
    except UnknownShot:
        raise HTTPException(404, f"no take {number} of {shot_id!r} in {name!r}") from None
    return state.done(_shot_url(name, shot_id), f"{user} asked {shot_id} take {number} to stop at its next step")


@router.get("/s/{name}/cancel", response_class=HTMLResponse)
def cancel_page(request: Request, name: str, state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    state.known(name)
    running = state.store.running_takes(name)
    jobs = [j for j in state.jobs.of(name) if j.live]
    if not running and not jobs:
        return state.done(f"/s/{quoted(name)}", "nothing is rendering")
    lines = [f"{t.shot_id} take {t.number}: {running_words(t)}" for t in running]
    lines += [f"job {j.number}: {j.what} for {j.by}, {j.state}" for j in jobs]
    return state.page(request, "confirm.html", {
        "name": name, "title": f"Cancel every render of {name} on this host?",
        "intro": "Each render stops at its next step; what it finished stays. This stops:", "lines": lines,
        "action": f"/s/{quoted(name)}/cancel", "fields": {}, "confirm": "Cancel them",
        "back": f"/s/{quoted(name)}", "keep": "Keep rendering"})


@router.post("/s/{name}/cancel")
async def cancel(request: Request, name: str, state: DashboardState = Depends(board_state)) -> Response:  # noqa: B008
    form, user = await _decision(request, state, name)
    if form.get("confirm") != "yes":
        return state.done(f"/s/{quoted(name)}/cancel", "confirm the cancel first")
    running = state.store.running_takes(name)
    for take in running:  # who asked, on each take it stops (the render names them when it settles the take)
        try:
            state.store.request_cancel(name, take.shot_id, take.number, user)
        except NotRunning:
            continue
    pids = state.jobs.cancel(name, [t.host for t in running])
    note = (f"{user} asked {len(pids)} render(s) to stop at their next step" if pids
            else "nothing was rendering on this host")
    return state.done(f"/s/{quoted(name)}", note)

