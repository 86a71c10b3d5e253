"""The storyboards: the index, one storyboard's cards, and their live state (polled by the page)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from storyboards.store import ShotStatus

from ..jobs import Job
from ..state import DashboardState, board_state

router = APIRouter()


def card_state(row: ShotStatus, leased: set[str], queued: dict[str, Job] | None = None) -> dict[str, Any]:
    """What a shot card says: queued (a job this dashboard started, not yet at the shot) / waiting for a GPU /
    rendering (stage, step k of n) / done / failed / cancelled / stale (and why, from the status of the shot's
    newest take) / missing."""
    if row.running:
        total = row.running.get("total") or 0
        detail = f"{row.running.get('stage')} step {row.running.get('step')} of {total}" if total else "starting"
        return {"state": "rendering", "label": f"rendering ({detail})", "worker": row.running.get("host")}
    if row.shot_id in leased:
        return {"state": "waiting", "label": "waiting for a GPU"}
    job = (queued or {}).get(row.shot_id)
    if job is not None:
        return {"state": "queued", "label": f"queued: rerender for {job.by}"}  # only a rerender names its shot
    if row.problem:
        return {"state": "missing", "label": f"missing: {row.problem}"}
    label = {"succeeded": "done", "not rendered": "queued"}.get(row.status, row.status)
    if row.status == "stale":
        return {"state": "stale", "label": stale_words(row)}
    return {"state": label, "label": label + (" (pinned)" if row.pinned else "")}


def stale_words(row: ShotStatus) -> str:
    """Why a shot's take is stale, and that it still plays: a rerender asked for it that was stopped or failed
    (its new take never replaced this one), or a change before it in its chain."""
    plays = f"take {row.take_number} still plays" if row.take_number else "nothing plays"
    latest = row.latest_status
    if latest == "cancelled":
        return f"stale: its rerender was stopped; {plays}"
    if latest == "failed":
        return f"stale: its rerender failed; {plays}"
    return f"stale: to render again; {plays}"


@router.get("/", response_class=HTMLResponse)
def index(request: Request, state: DashboardState = Depends(board_state)) -> HTMLResponse:  # noqa: B008
    boards = []
    for name, revision, _ in state.store.storyboards():
        rows = state.store.status(name)
        if not rows:
            continue
        seams = state.seams_of(name)
        finished = [r.finished_at for r in rows if r.finished_at]
        boards.append({"name": name, "revision": revision, "total": len(rows),
                       "done": sum(r.status == "succeeded" for r in rows),
                       "failed": sum(r.status in ("failed", "cancelled") for r in rows),
                       "missing": sum(bool(r.problem) for r in rows),
                       "flagged": sum(s["flagged"] for s in seams.values()),
                       "last": max(finished).strftime("%Y-%m-%d %H:%M") if finished else "-"})
    return state.page(request, "index.html", {"boards": boards})


FILTERS = {  # what the storyboard page's state filter keeps
    "failed": lambda c: c["state"]["state"] in ("failed", "cancelled", "missing"),
    "stale": lambda c: c["state"]["state"] == "stale",
    "flagged": lambda c: bool(c["seam"] and c["seam"]["flagged"]) or bool(c["seam_in"] and c["seam_in"]["flagged"]),
    "not-approved": lambda c: c["review"] is None or c["review"].state != "approved",
    "has-notes": lambda c: bool(c["review"] and c["review"].notes),
}


def board_context(state: DashboardState, name: str, only: str | None = None, text: str | None = None) -> dict[str, Any]:
    """The storyboard's cards, in edit order; `only` (a FILTERS key) and `text` (in the shot id or prompt) keep
    some of them."""
    _, revision, source = state.known(name)
    rows = state.store.status(name)
    leased = state.store.leased(name)
    queued = queued_shots(state, name)
    seams = state.seams_of(name)
    specs = state.store.specs_by_hash(h for r in rows for h in (r.take_spec_hash, r.spec_hash) if h)
    reviews = {r.shot_id: r for r in state.store.reviews(name) if r.current}
    cards: list[dict[str, Any]] = []
    for r in rows:
        spec = specs.get(r.take_spec_hash or r.spec_hash or "", {})  # what the card's take was made with
        cards.append({"row": r, "state": card_state(r, leased, queued), "seam": seams.get(r.shot_id),
                      "seam_in": seams.get(r.predecessor or ""),
                      "seconds": (r.outputs.frames or spec.get("num_frames") or 0) / (spec.get("fps") or 24),
                      "seed": spec.get("seed"), "prompt": spec.get("prompt") or r.prompt,
                      "continues": r.predecessor, "review": reviews.get(r.shot_id)})
    shown = [c for c in cards if (only not in FILTERS or FILTERS[only](c)) and _matches(c, text)]
    for before, card in zip([None, *shown], shown, strict=False):  # a link only between neighbours shown
        card["linked"] = before is not None and card["continues"] == before["row"].shot_id
    return {"name": name, "revision": revision, "source": source, "cards": shown, "total": len(cards),
            "only": only if only in FILTERS else "", "text": text or "", "filters": list(FILTERS),
            "now": now_context(state, name, rows, leased), "has_preview": state.layout.preview(name).is_file(),
            "has_sheet": state.layout.contact_sheet(name).is_file()}


def queued_shots(state: DashboardState, name: str) -> dict[str, Job]:
    """The shot each live rerender this dashboard started begins from: queued until its render reaches it."""
    return {j.shot_id: j for j in reversed(state.jobs.of(name)) if j.live and j.shot_id}


def now_context(state: DashboardState, name: str, rows: list[ShotStatus], leased: set[str]) -> dict[str, Any]:
    """What is happening to the storyboard: the takes rendering (step, time left, who asked), the shots waiting
    for a device, and the renders this dashboard started (queued, running, how they ended)."""
    running = [r.running_take for r in rows if r.running_take is not None]
    rendering = {t.shot_id for t in running}
    logs = {(t.shot_id, t.number) for t in running if state.layout.take_log(name, t.shot_id, t.number).is_file()}
    return {"running": running, "waiting": sorted(leased - rendering), "jobs": state.jobs.of(name)[:8], "logs": logs}


def _matches(card: dict[str, Any], text: str | None) -> bool:
    if not text:
        return True
    needle = text.casefold()
    return needle in card["row"].shot_id.casefold() or needle in (card["prompt"] or "").casefold()


@router.get("/s/{name}", response_class=HTMLResponse)
def storyboard(request: Request, name: str, only: str | None = None, q: str | None = None,
               state: DashboardState = Depends(board_state)) -> HTMLResponse:  # noqa: B008
    return state.page(request, "storyboard.html", board_context(state, name, only, q))


@router.get("/api/s/{name}/state")
def live_state(name: str, state: DashboardState = Depends(board_state)) -> JSONResponse:  # noqa: B008
    state.known(name)
    leased = state.store.leased(name)
    queued = queued_shots(state, name)
    return JSONResponse({r.shot_id: {**card_state(r, leased, queued), "take": r.take_number}
                         for r in state.store.status(name)})
