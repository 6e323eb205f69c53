"""The dashboard's actions: cancel, retry, fork from a step, send a message (POST forms with a CSRF token).

Every action is refused with 403 when the dashboard runs ``--read-only`` or
the form's CSRF token does not match the browser's cookie. The outcome shows
on the workflow's page (``?done=`` or ``?error=``), which the action redirects
to; a fork redirects to the new workflow's page.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ..client import Client
from ..errors import DurableError
from .security import CSRF_COOKIE, CSRF_FIELD

if TYPE_CHECKING:
    from .app import DashboardSettings


def _payload(text: str) -> Any:
    """The message payload typed into the form (JSON; empty: null). Raises ValueError with the reason."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the payload is not valid JSON ({exc})") from None


#: What an action returns: the line to show, and the workflow whose page shows it.
Done = tuple[str, str]


def _cancel(client: Client, workflow_id: str, form: dict[str, str]) -> Done:
    client.cancel(workflow_id)
    return "cancelled", workflow_id


def _retry(client: Client, workflow_id: str, form: dict[str, str]) -> Done:
    client.retry(workflow_id)
    return "retried: PENDING again", workflow_id


def _fork(client: Client, workflow_id: str, form: dict[str, str]) -> Done:
    step = form.get("from_step", "")
    new_id = client.fork(workflow_id, from_step=step, new_id=form.get("new_id", "").strip() or None)
    return f"forked from {workflow_id} at step {step}: PENDING", new_id


def _send(client: Client, workflow_id: str, form: dict[str, str]) -> Done:
    message_id = client.send(workflow_id, form.get("topic", ""), _payload(form.get("payload", "")),
                             key=form.get("key") or None)  # fmt: skip
    return f"sent message {message_id} on {form.get('topic', '')!r}", workflow_id


#: Action name -> what it does (see :data:`Done`).
ACTIONS: dict[str, Callable[[Client, str, dict[str, str]], Done]] = {
    "cancel": _cancel, "retry": _retry, "fork": _fork, "send": _send,
}  # fmt: skip


def action_routes(settings: "DashboardSettings") -> list[Route]:
    """``POST /workflows/{id}/{cancel|retry|fork|send}``."""
    guard = settings.guard

    async def act(request: Request) -> Response:
        if settings.read_only:
            return PlainTextResponse("the dashboard is read-only (--read-only): actions are refused", 403)
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not guard.csrf_ok(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
            return PlainTextResponse("form expired or forged (CSRF token mismatch): reload the page", 403)
        workflow_id, action = request.path_params["workflow_id"], request.path_params["action"]
        if action not in ACTIONS:
            return PlainTextResponse(f"no action {action!r}", 404)
        try:
            text, shown = await run_in_threadpool(ACTIONS[action], settings.client, workflow_id, form)
            outcome = {"done": text}
        except (DurableError, ValueError) as exc:
            outcome, shown = {"error": str(exc)}, workflow_id
        return RedirectResponse(f"/workflows/{quote(shown)}?{urlencode(outcome)}", 303)

    return [Route("/workflows/{workflow_id:path}/{action:str}", act, methods=["POST"], name="action")]
