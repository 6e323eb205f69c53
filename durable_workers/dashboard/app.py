"""The dashboard's ASGI application: routes, templates, the access and CSRF guards.

``create_app(DashboardSettings(client))`` returns a Starlette app. Pages are
rendered on the server; ``static/dashboard.js`` re-fetches the page every few
seconds and swaps its ``<main>`` in place (no other script, no CDN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..client import Client
from ..metrics import build_registry
from . import views
from .actions import action_routes
from .security import AUTH_COOKIE, CSRF_COOKIE, CSRF_FIELD, Guard, loopback_hosts

HERE = Path(__file__).resolve().parent
#: Seconds between two refreshes of a page by dashboard.js.
REFRESH_SECONDS = 5

#: Content-Security-Policy: this origin's own scripts and styles only; inline SVG needs nothing more.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")  # fmt: skip


@dataclass
class DashboardSettings:
    """How the dashboard runs: its client, whether actions are allowed, the access token, the bound host."""

    client: Client
    read_only: bool = False
    token: str | None = None
    host: str = "127.0.0.1"
    guard: Guard = field(init=False)

    def __post_init__(self) -> None:
        self.guard = Guard(token=self.token)


def _when(value: float | None) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SS`` UTC ('' for None)."""
    if value is None:
        return ""
    return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _age(value: float | None, now: float) -> str:
    """How long ago ``value`` was, e.g. ``4.2 s`` or ``3 min``."""
    if value is None:
        return "-"
    seconds = max(now - value, 0.0)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters.update(when=_when, query=urlencode)
    env.globals.update(age=_age, version=__version__, refresh=REFRESH_SECONDS)
    return env


class Pages:
    """Renders templates with what every page needs (the CSRF field, read-only, token mode)."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.env = _environment()

    def render(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        """The template ``name`` as a response (the CSRF nonce cookie is set by the middleware)."""
        nonce = request.state.csrf_nonce
        page = self.env.get_template(name).render(
            request=request, csrf_field=CSRF_FIELD, csrf_token=self.settings.guard.form_token(nonce),
            read_only=self.settings.read_only, token_mode=self.settings.token is not None, **context,
        )  # fmt: skip
        return HTMLResponse(page, status_code=status)


def _guard_middleware(settings: DashboardSettings) -> type[BaseHTTPMiddleware]:
    guard = settings.guard

    class GuardMiddleware(BaseHTTPMiddleware):
        """Refuse requests without the access token; give each browser a CSRF nonce; set safe headers."""

        async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            nonce = request.cookies.get(CSRF_COOKIE)
            fresh = not nonce
            request.state.csrf_nonce = nonce or guard.new_nonce()
            if not guard.is_open(request.url.path) and not guard.authorised(request):
                if request.method == "GET" and "bearer" not in request.headers.get("authorization", "").lower():
                    response: Response = RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", 303)
                else:
                    response = PlainTextResponse("access token required (or wrong)", 401)
            else:
                response = await call_next(request)
            if fresh:
                response.set_cookie(CSRF_COOKIE, request.state.csrf_nonce, httponly=True, samesite="strict")
            response.headers.update({"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                     "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"})  # fmt: skip
            return response

    return GuardMiddleware


def _page_routes(settings: DashboardSettings, pages: Pages) -> list[Route]:
    client = settings.client

    async def overview(request: Request) -> Response:
        return pages.render(request, "overview.html", await run_in_threadpool(views.overview, client))

    async def workflows(request: Request) -> Response:
        params = dict(request.query_params)
        statuses = request.query_params.getlist("status")
        context = await run_in_threadpool(views.workflow_list, client, params, statuses)
        return pages.render(request, "workflows.html", context)

    async def workflow(request: Request) -> Response:
        context = await run_in_threadpool(views.workflow_detail, client, request.path_params["workflow_id"])
        if context is None:
            return pages.render(request, "missing.html", {"workflow_id": request.path_params["workflow_id"]}, 404)
        return pages.render(request, "workflow.html", context)

    async def workers(request: Request) -> Response:
        context = await run_in_threadpool(views.workers, client, request.query_params.get("all") == "1")
        return pages.render(request, "workers.html", context)

    async def prometheus(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = await run_in_threadpool(lambda: generate_latest(build_registry(client.store, None)))
        return Response(body, media_type=CONTENT_TYPE_LATEST)  # the database's gauges (counters: the supervisor's)

    return [
        Route("/", overview, name="overview"),
        Route("/workflows", workflows, name="workflows"),
        Route("/workflows/{workflow_id:path}", workflow, name="workflow"),
        Route("/workers", workers, name="workers"),
        Route("/metrics", prometheus, name="metrics"),
    ]


def _login_routes(settings: DashboardSettings, pages: Pages) -> list[Route]:
    guard = settings.guard

    async def login(request: Request) -> Response:
        next_path = request.query_params.get("next", "/")
        if request.method == "GET":
            return pages.render(request, "login.html", {"next": next_path, "refused": False})
        form = await request.form()
        if not guard.csrf_ok(request.cookies.get(CSRF_COOKIE), str(form.get(CSRF_FIELD, ""))):
            return PlainTextResponse("form expired or forged (CSRF token mismatch): reload the page", 403)
        if not guard.token_matches(str(form.get("token", ""))):
            return pages.render(request, "login.html", {"next": next_path, "refused": True}, 403)
        target = next_path if next_path.startswith("/") and not next_path.startswith("//") else "/"
        response = RedirectResponse(target, 303)
        response.set_cookie(AUTH_COOKIE, guard.auth_cookie(), httponly=True, samesite="strict")
        return response

    return [Route("/login", login, methods=["GET", "POST"], name="login")]


def create_app(settings: DashboardSettings) -> Starlette:
    """The dashboard over ``settings.client``'s database (actions refused when ``read_only``)."""
    pages = Pages(settings)
    routes = [
        *action_routes(settings),
        *_login_routes(settings, pages),
        *_page_routes(settings, pages),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(_guard_middleware(settings))]
    hosts = loopback_hosts(settings.host)
    if hosts is not None:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=hosts))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.settings = settings
    return app
