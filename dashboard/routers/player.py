"""The cut player: the storyboard's preview with its shots marked on a timeline, record timecode, frame stepping
and J/K/L, and from any frame a note on the take under it. The parts come from the preview's own plan
(`milimo.preview.parts_of`), so the marks are where the preview put each shot, gaps and all."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

import storyboards
from milimo.preview import parts_of
from milimo_engine.media import rational_fps
from storyboards.editorial import counts_drop_frame, timecode
from storyboards.errors import MilimoError
from storyboards.markers import cut_markers, note_markers

from ..state import DashboardState, board_state

router = APIRouter()


def player_context(state: DashboardState, name: str) -> dict[str, Any]:
    _, revision, source = state.known(name)
    if not state.layout.preview(name).is_file():
        raise HTTPException(404, f"{name!r} has no preview yet; render it first")
    try:
        board = storyboards.load(state.source_of(name, source))
    except (MilimoError, OSError) as exc:
        raise HTTPException(409, f"the storyboard file of {name!r} cannot be read now: {exc}") from None
    rows = state.store.status(name)
    by_id = {r.shot_id: r for r in rows}
    start = board.record_start
    parts: list[dict[str, Any]] = []
    for part in parts_of(board, rows):
        row = by_id.get(part.shot_id or "")
        parts.append({"at": part.record_in - start, "frames": part.frames, "label": part.label, "shot": part.shot_id,
                      "take": row.take_number if row is not None and part.take_id else None,
                      "head": part.span.start if part.span else 0, "speed": part.span.speed if part.span else 1.0})
    total = sum(int(p["frames"]) for p in parts)
    rate = rational_fps(board.fps)
    markers: list[dict[str, Any]] = [{"frame": m.frame, "name": m.name, "colour": m.colour.lower(),
                                      "comment": m.comment, "shot_id": m.shot_id, "kind": "marker"}
                                     for m in cut_markers(board)]
    markers += [{"frame": n.record_in - start, "name": f"{n.author}: {n.text}", "colour": "cyan",
                 "comment": f"take {n.take} {n.where}", "shot_id": n.shot_id, "kind": "note"}
                for n in note_markers(board, rows, state.store.reviews(name)) if n.text]
    markers = sorted((dict(m, tc=timecode(start + int(m["frame"]), board.fps, board.drop_frame)) for m in markers
                      if 0 <= int(m["frame"]) < max(1, total)), key=lambda m: int(m["frame"]))
    return {"name": name, "revision": revision, "parts": parts, "total": max(1, total), "markers": markers,
            "rate_num": rate.numerator, "rate_den": rate.denominator, "record_start": start,
            "drop_frame": counts_drop_frame(board.fps, board.drop_frame)}


@router.get("/s/{name}/play", response_class=HTMLResponse)
def play(request: Request, name: str, state: DashboardState = Depends(board_state)) -> HTMLResponse:  # noqa: B008
    return state.page(request, "play.html", player_context(state, name))
