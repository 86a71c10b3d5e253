"""The dashboard's app (FastAPI + Jinja2, rendered on the server, a little hand-written JS): the guard every
request passes, the error pages, and the routers (`boards`, `shots`, `files`, `actions`) over one shared state.

Pages read the store. Actions (render, rerender, pin, cancel) change it only through the store's own operations
or a render started as a `RenderRequest`, behind the token (off loopback), the CSRF token and a same-origin check;
`--read-only` hides and refuses them. Files are served by take or storyboard id, never by a path from the URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from milimo import context as app_context
from milimo.context import Context

from .routers import actions, boards, files, player, queue, shots
from .routers.boards import card_state
from .security import TOKEN_COOKIE, host_ok, same_origin, token_ok, token_user
from .state import HERE, DashboardSettings, DashboardState

__all__ = ["DashboardSettings", "card_state", "create_app"]


def create_app(settings: DashboardSettings, context: Context | None = None) -> FastAPI:
    app = FastAPI(title="milimo dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    state = DashboardState(settings, context or app_context.current())
    app.state.dashboard = state

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        refused = _refused(request, settings)
        if refused is not None:
            return refused
        response = await call_next(request)
        given = request.query_params.get("token")
        if (settings.token or settings.users) and given and request.cookies.get(TOKEN_COOKIE) != given:
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")  # it passed the guard
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(("/files/", "/api/")) or exc.status_code in (401, 403, 416):
            return PlainTextResponse(str(exc.detail), status_code=exc.status_code)
        return state.templates.TemplateResponse(request, "error.html", {
            "status": exc.status_code, "detail": exc.detail, "bare": True}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        """A hand-made URL (`?note_frame=x`, a take that is not a number): 400 naming each parameter, on the same
        page as every other error, not FastAPI's JSON."""
        said = "; ".join(_parameter_problem(e) for e in exc.errors()[:5])
        return await http_error(request, StarletteHTTPException(400, said))

    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"internal error: {type(exc).__name__}", status_code=500)

    for router in (boards.router, shots.router, player.router, queue.router, files.router, actions.router):
        app.include_router(router)
    return app


def _parameter_problem(error: dict) -> str:
    where = error.get("loc") or ()
    name = str(where[-1]) if where else "request"
    given = error.get("input")
    shown = f" {str(given)[:40]!r}" if isinstance(given, (str, int, float)) else ""
    return f"{name}:{shown} {str(error.get('msg', 'is not valid')).lower()}"


def _refused(request: Request, settings: DashboardSettings) -> Response | None:
    """The host named, the token (the shared one, or a person's own: then the request acts as them), then, for
    anything that changes state: not read-only, same origin."""
    if not host_ok(request.headers.get("host"), settings.hosts):
        return PlainTextResponse("this dashboard is not served under that host name", status_code=403)
    if settings.token or settings.users:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or \
            request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
        person = token_user(given, settings.users)
        if person is not None:
            request.state.user = person  # their own token: they act as themselves, whatever name was typed
        elif not (settings.token and token_ok(given, settings.token)):
            return PlainTextResponse("a token is required", status_code=401)
    if request.method not in ("GET", "HEAD"):
        if settings.read_only:
            return PlainTextResponse("this dashboard is read-only", status_code=403)
        if not same_origin(request.headers.get("origin"), request.headers.get("referer"),
                           request.headers.get("host")):
            return PlainTextResponse("cross-origin request refused", status_code=403)
    return None
