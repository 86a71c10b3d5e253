"""The dashboard's pages and actions (FastAPI + Jinja2, rendered on the server, a little hand-written JS).

Pages read the store. Actions (render, rerender, pin, cancel) change it only through the store's own operations
or the `milimo` command, behind the token (off loopback), the CSRF token and a same-origin check; `--read-only`
hides and refuses them. Files are served by take or storyboard id, never by a path from the URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from storyboards.errors import UnknownShot
from storyboards.fields import check, slug
from storyboards.overrides import OverrideError, parse_assignments
from storyboards.paths import OutputLayout
from storyboards.seams import SeamThresholds, seam_verdict
from storyboards.store import Store

from .files import inside, ranged_file
from .jobs import Jobs
from .security import CSRF_COOKIE, TOKEN_COOKIE, new_csrf, same_origin, token_ok

HERE = Path(__file__).parent
RERENDER_FIELDS = ("prompt", "negative_prompt", "seed", "steps", "quality")


@dataclass(frozen=True)
class DashboardSettings:
    db_url: str
    out_root: Path
    model: str | None = None
    read_only: bool = False
    token: str | None = None
    qa: SeamThresholds = SeamThresholds()


def card_state(row, leased: set[str]) -> dict[str, Any]:
    """What a shot card says: queued / waiting for a GPU / rendering (stage, step k of n) / done / failed /
    cancelled / stale / missing."""
    if row.running:
        total = row.running.get("total") or 0
        detail = f"{row.running.get('stage')} step {row.running.get('step')} of {total}" if total else "starting"
        return {"state": "rendering", "label": f"rendering ({detail})", "worker": row.running.get("host")}
    if row.shot_id in leased:
        return {"state": "waiting", "label": "waiting for a GPU"}
    if row.problem:
        return {"state": "missing", "label": f"missing: {row.problem}"}
    label = {"succeeded": "done", "not rendered": "queued"}.get(row.status, row.status)
    return {"state": label, "label": label + (" (pinned)" if row.pinned else "")}


def create_app(settings: DashboardSettings) -> FastAPI:
    app = FastAPI(title="milimo dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on for .html
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    store = Store.open(settings.db_url)
    layout = OutputLayout.at(settings.out_root)
    jobs = Jobs(settings.db_url, layout.root, settings.model)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if settings.token:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or \
                request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token")
            if not token_ok(given, settings.token):
                return PlainTextResponse("a token is required", status_code=401)
        if request.method not in ("GET", "HEAD"):
            if settings.read_only:
                return PlainTextResponse("this dashboard is read-only", status_code=403)
            if not same_origin(request.headers.get("origin"), request.headers.get("referer"),
                               request.headers.get("host")):
                return PlainTextResponse("cross-origin request refused", status_code=403)
        response = await call_next(request)
        if settings.token and request.query_params.get("token") and not request.cookies.get(TOKEN_COOKIE):
            response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict")
        return response

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        csrf = request.cookies.get(CSRF_COOKIE) or new_csrf()
        response = templates.TemplateResponse(request, name, {**context, "csrf": csrf,
                                                              "read_only": settings.read_only}, status_code=status)
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    async def form_of(request: Request) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not form.get("csrf") or form.get("csrf") != request.cookies.get(CSRF_COOKIE):
            raise HTTPException(403, "the form's CSRF token does not match; reload the page")
        return form

    def known(name: str) -> tuple[str, int | None, str | None]:
        for row in store.storyboards():
            if row[0] == name:
                return row
        raise HTTPException(404, f"no storyboard {name!r}")

    def source_of(name: str, source: str | None) -> str:
        """The file a render reads: a cut imported with its shot list renders from the storyboard it became."""
        imported = layout.storyboard_dir(name) / f"{slug(name, 'storyboard')}.storyboard.otio"
        if imported.is_file():
            return str(imported)
        if not source:
            raise HTTPException(409, f"storyboard {name!r} has no source file on record")
        return source

    def seams_of(name: str) -> dict[str, dict[str, Any]]:
        out = {}
        for seam in store.seams(name):
            if seam.kind == "segment":
                continue
            score, flagged = seam_verdict(seam, settings.qa)
            out[seam.left_shot_id] = {"score": round(score, 2), "flagged": flagged, "kind": seam.kind}
        return out

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if request.url.path.startswith(("/files/", "/api/")) or exc.status_code in (401, 403, 416):
            return PlainTextResponse(str(exc.detail), status_code=exc.status_code)
        return templates.TemplateResponse(request, "error.html", {"status": exc.status_code, "detail": exc.detail,
                                                                  "read_only": True}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception):
        return PlainTextResponse(f"internal error: {type(exc).__name__}", status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        boards = []
        for name, revision, _ in store.storyboards():
            rows = store.status(name)
            if not rows:
                continue
            seams = seams_of(name)
            finished = [r.finished_at for r in rows if r.finished_at]
            boards.append({"name": name, "revision": revision, "total": len(rows),
                           "done": sum(r.status == "succeeded" for r in rows),
                           "failed": sum(r.status in ("failed", "cancelled") for r in rows),
                           "missing": sum(bool(r.problem) for r in rows),
                           "flagged": sum(s["flagged"] for s in seams.values()),
                           "last": max(finished).strftime("%Y-%m-%d %H:%M") if finished else "-"})
        return page(request, "index.html", {"boards": boards})

    def board_context(name: str) -> dict[str, Any]:
        _, revision, source = known(name)
        rows = store.status(name)
        leased = store.leased(name)
        seams = seams_of(name)
        cards = []
        for r in rows:
            spec = store.spec_by_hash(r.spec_hash) if r.spec_hash else {}
            cards.append({"row": r, "state": card_state(r, leased), "seam": seams.get(r.shot_id),
                          "seconds": (r.outputs.get("frames") or spec.get("num_frames") or 0) / (spec.get("fps") or 24),
                          "seed": spec.get("seed"), "continues": r.predecessor})
        folder = layout.storyboard_dir(name)
        return {"name": name, "revision": revision, "source": source, "cards": cards,
                "has_preview": (folder / "preview.mp4").is_file(),
                "has_sheet": (folder / "contact_sheet.png").is_file()}

    @app.get("/s/{name}", response_class=HTMLResponse)
    def storyboard(request: Request, name: str, message: str | None = None):
        return page(request, "storyboard.html", {**board_context(name), "message": message})

    @app.get("/api/s/{name}/state")
    def state(name: str):
        known(name)
        leased = store.leased(name)
        return JSONResponse({r.shot_id: {**card_state(r, leased), "take": r.take_number}
                             for r in store.status(name)})

    @app.get("/s/{name}/shot/{shot_id}", response_class=HTMLResponse)
    def shot(request: Request, name: str, shot_id: str, a: int | None = None, b: int | None = None):
        return page(request, "shot.html", shot_context(name, shot_id, a, b))

    def shot_context(name: str, shot_id: str, a: int | None = None, b: int | None = None,
                     errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
                     message: str | None = None) -> dict[str, Any]:
        known(name)
        try:
            takes = store.takes(name, shot_id)
            current = store.current_take(name, shot_id)
        except UnknownShot:
            raise HTTPException(404, f"no shot {shot_id!r} in {name!r}") from None
        rows = []
        for t in reversed(takes):
            spec = store.spec_by_hash(t.spec_hash)
            rows.append({"take": t, "spec": spec, "current": current is not None and current.id == t.id})
        with_media = [r for r in rows if r["take"].outputs.get("mp4")]
        by_number = {r["take"].number: r for r in with_media}
        left = by_number.get(a) or (with_media[1] if len(with_media) > 1 else None)
        right = by_number.get(b) or (with_media[0] if with_media else None)
        diff = []
        if left and right and left is not right:
            keys = sorted(set(left["spec"]) | set(right["spec"]))
            diff = [(k, left["spec"].get(k), right["spec"].get(k)) for k in keys
                    if left["spec"].get(k) != right["spec"].get(k)]
        spec_now = store.spec_data(name, shot_id)
        defaults = {k: spec_now.get(k, "") for k in RERENDER_FIELDS}
        return {"name": name, "shot_id": shot_id, "takes": rows, "left": left, "right": right, "diff": diff,
                "errors": errors or {}, "values": {**defaults, **(values or {})}, "message": message,
                "pinned_at": store.pinned_at(name, shot_id)}

    @app.post("/s/{name}/shot/{shot_id}/rerender")
    async def rerender(request: Request, name: str, shot_id: str):
        form = await form_of(request)
        _, _, source = known(name)
        values = {k: form.get(k, "").strip() for k in RERENDER_FIELDS}
        spec_now = store.spec_data(name, shot_id)
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
        if errors:
            return page(request, "shot.html", shot_context(name, shot_id, errors=errors, values=values), status=422)
        if not overrides:
            return page(request, "shot.html", shot_context(name, shot_id, values=values,
                                                           errors={"form": "nothing changed; edit a field first"}),
                        status=422)
        said = jobs.rerender(name, source_of(name, source), shot_id, overrides)
        return RedirectResponse(f"/s/{_q(name)}/shot/{_q(shot_id)}?message=rerender+{_q(said)}", status_code=303)

    @app.post("/s/{name}/shot/{shot_id}/pin")
    async def pin(request: Request, name: str, shot_id: str):
        form = await form_of(request)
        known(name)
        try:
            stale = store.pin_take(name, shot_id, int(form.get("take", "0")))
        except (UnknownShot, ValueError) as exc:
            raise HTTPException(404 if isinstance(exc, UnknownShot) else 409, str(exc)) from None
        note = f"pinned {shot_id} take {form.get('take')}" + (f"; now stale: {', '.join(stale)}" if stale else "")
        return RedirectResponse(f"/s/{_q(name)}?message={_q(note)}", status_code=303)

    @app.post("/s/{name}/render")
    async def render(request: Request, name: str):
        await form_of(request)
        _, _, source = known(name)
        said = jobs.render(name, source_of(name, source))
        return RedirectResponse(f"/s/{_q(name)}?message={_q('render ' + said)}", status_code=303)

    @app.post("/s/{name}/cancel")
    async def cancel(request: Request, name: str):
        await form_of(request)
        known(name)
        hosts = [t.host for t in store.running_takes(name)]
        pids = jobs.cancel(name, hosts)
        note = f"asked {len(pids)} render(s) to stop at their next step" if pids else "nothing was rendering"
        return RedirectResponse(f"/s/{_q(name)}?message={_q(note)}", status_code=303)

    @app.get("/files/take/{take_id}/{kind}")
    def take_file(request: Request, take_id: int, kind: str) -> Response:
        if kind not in ("mp4", "thumbnail"):
            raise HTTPException(404, "no such file kind")
        try:
            take = store.take(take_id)
        except LookupError:
            raise HTTPException(404, f"no take {take_id}") from None
        path = take.outputs.get(kind)
        safe = inside(path, layout.root) if path else None
        if safe is None:
            raise HTTPException(404, f"take {take_id} has no {kind}")
        return ranged_file(request, safe)

    @app.get("/files/storyboard/{name}/{kind}")
    def board_file(request: Request, name: str, kind: str) -> Response:
        files = {"preview": "preview.mp4", "contact_sheet": "contact_sheet.png"}
        if kind not in files:
            raise HTTPException(404, "no such file kind")
        known(name)
        return ranged_file(request, layout.storyboard_dir(name) / files[kind])

    return app


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(str(text), safe="")
