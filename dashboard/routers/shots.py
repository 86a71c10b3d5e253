"""One shot: its takes (newest first), two of them side by side with what differs in their specs, and the
rerender form."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from milimo_engine.media import rational_fps
from storyboards.errors import UnknownShot

from ..state import DashboardState, board_state

router = APIRouter()
RERENDER_FIELDS = ("prompt", "negative_prompt", "seed", "steps", "quality")


def shot_context(state: DashboardState, name: str, shot_id: str, a: int | None = None, b: int | None = None,
                 errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
                 message: str | None = None, note_frame: int | None = None) -> dict[str, Any]:
    state.known(name)
    try:
        takes = state.store.takes(name, shot_id)
        current = state.store.current_take(name, shot_id)
        spec_now = state.store.spec_data(name, shot_id)
    except UnknownShot:
        raise HTTPException(404, f"no shot {shot_id!r} in {name!r}") from None
    specs = state.store.specs_by_hash(t.spec_hash for t in takes)
    rows: list[dict[str, Any]] = [
        {"take": t, "spec": specs.get(t.spec_hash, {}), "current": current is not None and current.id == t.id,
         "log": state.layout.take_log(name, shot_id, t.number).is_file()}
        for t in reversed(takes)]
    with_media = [r for r in rows if r["take"].outputs.mp4]
    by_number = {r["take"].number: r for r in with_media}
    left = by_number.get(a) or (with_media[1] if len(with_media) > 1 else None)
    right = by_number.get(b) or (with_media[0] if with_media else None)
    diff = []
    if left and right and left is not right:
        keys = sorted(set(left["spec"]) | set(right["spec"]))
        diff = [(k, left["spec"].get(k), right["spec"].get(k)) for k in keys
                if left["spec"].get(k) != right["spec"].get(k)]
    defaults = {k: spec_now.get(k, "") for k in RERENDER_FIELDS}
    reviews = {r.take_number: r for r in state.store.reviews(name, shot_id)}
    mark = state.store.decision_mark(name, shot_id)
    fps = (right or left or {"spec": {}})["spec"].get("fps") or spec_now.get("fps") or 24
    return {"name": name, "shot_id": shot_id, "takes": rows, "left": left, "right": right, "diff": diff,
            "ab_rate": rational_fps(float(fps)), "note_frame": note_frame,
            "errors": errors or {}, "values": {**defaults, **(values or {})},
            **({"message": message} if message else {}), "reviews": reviews,
            "seen": mark.token, "decided": mark.said}


@router.get("/s/{name}/shot/{shot_id}", response_class=HTMLResponse)
def shot(request: Request, name: str, shot_id: str, a: int | None = None, b: int | None = None,
         note_frame: int | None = None, state: DashboardState = Depends(board_state)) -> HTMLResponse:  # noqa: B008
    """`note_frame` (from the cut player's "Note this frame") fills the current take's note frame."""
    return state.page(request, "shot.html", shot_context(state, name, shot_id, a, b, note_frame=note_frame))
