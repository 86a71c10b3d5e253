"""What every page and action of one dashboard shares: its settings, the process's store and output layout
(through `milimo.context`), the render jobs it started, its templates. Handed to the routers as a FastAPI
dependency (`board_state`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from milimo.context import Context
from storyboards.paths import OutputLayout
from storyboards.seams import SeamThresholds, seam_verdict
from storyboards.store import Store, TakeView

from .jobs import Jobs
from .security import CSRF_COOKIE, FLASH_COOKIE, LOOPBACK_NAMES, USER_COOKIE, display_name, new_csrf

HERE = Path(__file__).parent


@dataclass(frozen=True)
class DashboardSettings:
    db_url: str
    out_root: Path
    model: str | None = None
    read_only: bool = False
    token: str | None = None
    qa: SeamThresholds = field(default_factory=SeamThresholds)
    hosts: tuple[str, ...] | None = LOOPBACK_NAMES  # what `Host` may name (security.served_names); None: any
    users: dict[str, str] = field(default_factory=dict)  # a person -> their token's hash ([dashboard.users])
    farm: str | None = None  # the farm's Dask scheduler ([farm] scheduler, --farm): its workers on the queue page


class DashboardState:
    def __init__(self, settings: DashboardSettings, context: Context):
        self.settings = settings
        self.store: Store = context.store(settings.db_url, settings.out_root)
        self.layout: OutputLayout = context.layout(settings.out_root)
        self.jobs = Jobs(settings.db_url, self.layout, settings.model)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on for .html
        self.templates.env.filters["running_words"] = running_words
        self.farm_seen: tuple[float | None, Any, str | None] = (None, None, None)  # the queue page's (routers.queue)

    def page(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        csrf = request.cookies.get(CSRF_COOKIE) or new_csrf()
        flash = unquote(request.cookies.get(FLASH_COOKIE, ""))
        response = self.templates.TemplateResponse(
            request, name, {"message": flash or None, **context, "csrf": csrf, "read_only": self.settings.read_only,
                            "user": self.user_of(request), "user_by_token": _token_user(request) is not None,
                            "here": here(request)}, status_code=status)
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        if flash:
            response.delete_cookie(FLASH_COOKIE)
        return response

    @staticmethod
    def user_of(request: Request) -> str | None:
        """Who is acting: the person whose own token the request carries, else the display name this browser gave
        (asked once, kept in a cookie)."""
        return _token_user(request) or display_name(unquote(request.cookies.get(USER_COOKIE, "")))

    def acting_user(self, request: Request) -> str:
        user = self.user_of(request)
        if user is None:
            raise HTTPException(400, "say who you are first: give your name at the top of the page; every "
                                     "decision records who made it")
        return user

    @staticmethod
    def done(url: str, said: str) -> RedirectResponse:
        """After an action: back to a page, which shows what the action said once."""
        response = RedirectResponse(url, status_code=303)
        response.set_cookie(FLASH_COOKIE, quote(said[:500], safe=""), httponly=True, samesite="strict")
        return response

    async def form_of(self, request: Request) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not form.get("csrf") or form.get("csrf") != request.cookies.get(CSRF_COOKIE):
            raise HTTPException(403, "the form's CSRF token does not match; reload the page")
        return form

    def known(self, name: str) -> tuple[str, int | None, str | None]:
        """(name, revision, source) of a storyboard in the store; 404 otherwise."""
        for row in self.store.storyboards():
            if row[0] == name:
                return row
        raise HTTPException(404, f"no storyboard {name!r}")

    def source_of(self, name: str, source: str | None) -> str:
        """The file a render reads: a cut imported with its shot list renders from the storyboard it became."""
        imported = self.layout.imported_storyboard(name)
        if imported.is_file():
            return str(imported)
        if not source:
            raise HTTPException(409, f"storyboard {name!r} has no source file on record")
        return source

    def seams_of(self, name: str) -> dict[str, dict[str, Any]]:
        """The cut after each shot, scored on this dashboard's thresholds."""
        out = {}
        for seam in self.store.seams(name):
            if seam.kind == "segment":
                continue
            score, flagged = seam_verdict(seam, self.settings.qa)
            out[seam.left_shot_id] = {"score": round(score, 2), "flagged": flagged, "kind": seam.kind}
        return out


def _token_user(request: Request) -> str | None:
    """Set by the app's guard when the request's token is a person's own."""
    return getattr(request.state, "user", None)


MAX_ROW_ID = 2**63 - 1  # the largest id a store's integer key holds (SQLite and PostgreSQL BIGINT)


def row_id(value: object, what: str) -> int:
    """An id from a URL or a form that can name a stored row; 404 for anything else (text, 0, or a number too
    large for the database, which would reach it as an overflow and come back as a 500)."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_ROW_ID:
        raise HTTPException(404, f"no {what} {text[:40]!r}")
    return int(text)


PAGE_PARAMETERS = ("a", "b", "note_frame", "only", "q")  # what a page's URL may carry back after "change name"


def here(request: Request) -> str:
    """This page's path and its own parameters (no other text from the URL is ever written into a page)."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k in PAGE_PARAMETERS]
    return request.url.path + (f"?{urlencode(kept)}" if kept else "")


def running_words(take: TakeView) -> str:
    """A rendering take in words: stage and step, how long it has run, the time left at its pace so far, who asked
    for it, and a stop someone asked for."""
    p = take.progress or {}
    where = f"{p.get('stage')} step {p.get('step')} of {p.get('total')}" if p.get("total") else "starting"
    said = f"{where}, {duration(take.seconds_running)} in"
    if take.eta_s is not None:
        said += f", about {duration(take.eta_s)} left"
    if take.requested_by:
        said += f", asked by {take.requested_by}"
    if take.cancel_requested_by:
        said += f"; {take.cancel_requested_by} asked it to stop"
    return said


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60:02d} s" if whole >= 60 else f"{whole} s"


def board_state(request: Request) -> DashboardState:
    """The FastAPI dependency: this app's shared state."""
    return request.app.state.dashboard


def quoted(text: object) -> str:
    return quote(str(text), safe="")
