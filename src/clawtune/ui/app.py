"""The dashboard's HTTP side: a FastAPI app served under `/ui`, by the gateway (`clawtune serve`) or on its own
(`clawtune ui`).

The page shows logged requests, so every data endpoint needs the admin key. The key is asked once (`POST
/ui/api/login`) and compared in constant time; the browser then holds only a random session token in an HttpOnly,
SameSite=Strict cookie scoped to /ui (the key never reaches a file or the page's scripts). Actions (a correction, an
experiment stopped, promoted or rolled back) also require a JSON body, which no cross-site form can send. Nothing is
loaded from the internet: the page, its script and styles and the charting library (uPlot, MIT) ship in the package.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import io
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from clawtune.problems import InputError
from clawtune.ui import sources

STATIC = Path(__file__).parent / "static"
COOKIE = "clawtune_ui"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1000
MAX_BODY = 1_000_000
# Wrong keys: each answer waits, and past this many in a minute (from anyone) sign-in pauses for the rest of it.
MAX_FAILED_LOGINS_PER_MINUTE = 30
logger = logging.getLogger("clawtune.ui")


@dataclass
class UISettings:
    """What the dashboard reads and who may read it."""

    root: Path  # runs, data, evaluation and failure folders are found under it
    log: Path  # the gateway's request log (requests.sqlite); its archives sit beside it
    admin_keys: list[str]  # none: the dashboard refuses every data request and says how to set one
    endpoint: str | None = None  # the running gateway, for actions (stop an experiment)
    sessions: dict[str, float] = field(default_factory=dict)  # token -> expiry
    session_keys: dict[str, str] = field(default_factory=dict)  # token -> the key it was opened with
    failed_logins: collections.deque[float] = field(default_factory=collections.deque)


class UIRefusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def create_ui(settings: UISettings) -> FastAPI:
    """The dashboard as an ASGI app; mount it at /ui."""
    ui = FastAPI(title="clawtune ui", docs_url=None, redoc_url=None, openapi_url=None)

    @ui.exception_handler(UIRefusal)
    async def _refused(request: Request, exc: UIRefusal) -> Response:
        return _json({"error": exc.message}, exc.status)

    @ui.exception_handler(sources.UIError)
    async def _bad(request: Request, exc: sources.UIError) -> Response:
        return _json({"error": str(exc)}, 400)

    @ui.exception_handler(sqlite3.Error)
    async def _log_unreadable(request: Request, exc: sqlite3.Error) -> Response:
        return _json({"error": f"cannot read the request log {settings.log}: {exc}"}, 503)

    @ui.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json({"error": f"internal error: {type(exc).__name__}"}, 500)

    @ui.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return _json({"error": f"no route for {request.method} {request.url.path}"}, exc.status_code)

    def session(request: Request) -> str:
        """The caller's session token, or a 401/403 that says what to do."""
        if not settings.admin_keys:
            raise UIRefusal(403, "the dashboard needs an admin key: set server.admin_keys (or --admin-key)")
        token = request.cookies.get(COOKIE, "")
        expiry = settings.sessions.get(token)
        if not token or expiry is None or expiry < time.time():
            settings.sessions.pop(token, None)
            settings.session_keys.pop(token, None)
            raise UIRefusal(401, "sign in with the admin key")
        return token

    async def json_body(request: Request) -> Any:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise UIRefusal(415, "send the body as application/json")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise UIRefusal(413, f"the body is larger than {MAX_BODY} bytes")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UIRefusal(400, "the body is not JSON") from None

    async def read(work: Any, *args: Any) -> Response:
        return _json(await asyncio.to_thread(work, *args))

    # -- the page --
    @ui.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    ui.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- the key --
    @ui.post("/api/login")
    async def login(request: Request) -> Response:
        body = await json_body(request)
        key = body.get("key") if isinstance(body, dict) else None
        if not settings.admin_keys:
            raise UIRefusal(403, "the dashboard needs an admin key: set server.admin_keys (or --admin-key)")
        now = time.time()
        failed = settings.failed_logins
        while failed and failed[0] < now - 60:
            failed.popleft()
        if len(failed) >= MAX_FAILED_LOGINS_PER_MINUTE:
            raise UIRefusal(429, "too many wrong keys in the last minute: try again in a minute")
        if not isinstance(key, str) or not any(
            hmac.compare_digest(key.encode(), k.encode()) for k in settings.admin_keys
        ):
            failed.append(now)
            await asyncio.sleep(0.5)  # a guesser gets two tries a second per connection
            raise UIRefusal(401, "that is not an admin key")
        for token, expiry in list(settings.sessions.items()):
            if expiry < now:
                settings.sessions.pop(token, None)
                settings.session_keys.pop(token, None)
        while len(settings.sessions) >= MAX_SESSIONS:
            oldest = min(settings.sessions, key=settings.sessions.__getitem__)
            settings.sessions.pop(oldest)
            settings.session_keys.pop(oldest, None)
        token = secrets.token_urlsafe(32)
        settings.sessions[token] = now + SESSION_TTL_S
        settings.session_keys[token] = key
        response = _json({"ok": True})
        path = request.scope.get("root_path", "") or "/"
        response.set_cookie(
            COOKIE,
            token,
            max_age=SESSION_TTL_S,
            path=path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",  # behind a TLS proxy; plain HTTP on loopback otherwise
        )
        return response

    @ui.post("/api/logout")
    async def logout(request: Request) -> Response:
        token = request.cookies.get(COOKIE, "")
        settings.sessions.pop(token, None)
        settings.session_keys.pop(token, None)
        response = _json({"ok": True})
        response.delete_cookie(COOKIE, path=request.scope.get("root_path", "") or "/")
        return response

    @ui.get("/api/session")
    async def whoami(request: Request) -> Response:
        session(request)
        return _json(
            {
                "root": str(settings.root),
                "log": str(settings.log),
                "endpoint": settings.endpoint,
                "eval_rows": sources.eval_rows(),
            }
        )

    # -- the views --
    @ui.get("/api/runs")
    async def runs(request: Request) -> Response:
        session(request)
        return await read(sources.find_runs, settings.root)

    @ui.get("/api/data")
    async def data(request: Request) -> Response:
        session(request)
        return await read(sources.find_data_reports, settings.root)

    @ui.get("/api/evaluations")
    async def evaluations(request: Request) -> Response:
        session(request)
        return await read(sources.find_evaluations, settings.root)

    @ui.get("/api/traffic")
    async def traffic(request: Request) -> Response:
        session(request)
        return await read(sources.traffic, settings.log)

    @ui.get("/api/requests")
    async def requests(
        request: Request, q: str | None = None, model: str | None = None, page: int = 1, size: int = 50
    ) -> Response:
        from clawtune.serve.log import search_requests

        session(request)
        if page < 1 or not 1 <= size <= 500:
            raise UIRefusal(400, "page must be at least 1 and size between 1 and 500")
        if (q and len(q) > 500) or (model and len(model) > 500):
            raise UIRefusal(400, "the search text is longer than 500 characters")
        if not settings.log.exists():
            return _json({"total": 0, "offset": 0, "limit": size, "requests": []})
        return await read(search_requests, settings.log, q or None, model or None, (page - 1) * size, size)

    @ui.get("/api/requests/{request_id}")
    async def one_request(request: Request, request_id: str) -> Response:
        from clawtune.serve.log import read_request

        session(request)
        found = await asyncio.to_thread(read_request, settings.log, request_id) if settings.log.exists() else None
        if found is None:
            raise UIRefusal(404, f"no request {request_id!r} in {settings.log} or its archives")
        return _json(sources._clean(found))

    @ui.get("/api/experiments")
    async def experiments(request: Request) -> Response:
        session(request)
        return await read(sources.experiments, settings.log)

    # Stop, Promote and Roll back go to the running gateway's admin API with the key this session signed in with,
    # through the code `clawtune ft ab-test` uses (the gateway records each decision in `experiment_events`).
    async def gateway_action(request: Request, experiment_id: str, verb: str) -> tuple[str, str, str | None, Any]:
        token = session(request)
        body = await json_body(request)
        if not isinstance(body, dict):
            raise UIRefusal(400, "the body must be a JSON object")
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or not 0 < len(reason.strip()) <= 500):
            raise UIRefusal(400, "reason: text of 1 to 500 characters")
        from clawtune.serve.experiments import EXPERIMENT_ID

        if not EXPERIMENT_ID.fullmatch(experiment_id):  # the gateway's rule: no other admin path is reached through it
            raise UIRefusal(400, "the experiment id holds letters, digits, '.', '_', '-' (up to 128)")
        if not settings.endpoint:
            raise UIRefusal(409, f"{verb} needs the running gateway: start `clawtune ui` with --endpoint URL")
        return settings.endpoint, experiment_id, settings.session_keys.get(token), reason

    async def on_gateway(work: Any, *args: Any) -> Any:
        from clawtune.loop.abtest import ABTestError

        try:
            return await asyncio.to_thread(work, *args)
        except ABTestError as exc:
            raise UIRefusal(502, str(exc)) from None

    @ui.post("/api/experiments/{experiment_id}/stop")
    async def stop_experiment(request: Request, experiment_id: str) -> Response:
        from clawtune.loop.abtest import AdminClient

        endpoint, experiment_id, key, reason = await gateway_action(request, experiment_id, "stopping")
        body = {"reason": reason or "stopped from the dashboard (clawtune ui)"}
        client = AdminClient(endpoint, key)
        return _json(await on_gateway(client.call, "POST", f"/admin/experiments/{experiment_id}/stop", body))

    @ui.post("/api/experiments/{experiment_id}/promote")
    async def promote_experiment(request: Request, experiment_id: str) -> Response:
        """`ft ab-test promote ID`: the gateway serves B behind the model's id (and its models.yaml says so). OpenClaw's
        config is left alone: making B its primary model is `ft ab-test promote ID --register`."""
        from clawtune.loop.canary import promote_now

        endpoint, experiment_id, key, reason = await gateway_action(request, experiment_id, "promoting")
        console, said = _recording_console()
        why = reason or "promoted from the dashboard (clawtune ui)"
        promoted = await on_gateway(promote_now, endpoint, key, experiment_id, None, console, why)
        return _json({**promoted, "said": said.getvalue().strip()})

    @ui.post("/api/experiments/{experiment_id}/rollback")
    async def rollback_experiment(request: Request, experiment_id: str) -> Response:
        """`ft ab-test rollback ID`: B stopped at once, or a promotion undone (the gateway, its models.yaml, and
        OpenClaw's config on this machine when the promotion registered B there)."""
        from clawtune.loop.canary import rollback

        endpoint, experiment_id, key, reason = await gateway_action(request, experiment_id, "rolling back")
        console, said = _recording_console()
        why = reason or "rolled back from the dashboard (clawtune ui)"
        try:
            undone = await on_gateway(rollback, endpoint, key, experiment_id, why, console)
        except InputError as exc:  # after the gateway's rollback: OpenClaw's config could not be set back
            raise UIRefusal(
                409,
                f"the gateway rolled {experiment_id} back, but OpenClaw's primary model was not set back: {exc} "
                f"(fix it, then run `clawtune ft ab-test rollback {experiment_id}` again)",
            ) from None
        return _json({**undone, "said": said.getvalue().strip()})

    @ui.get("/api/failures")
    async def failures(request: Request) -> Response:
        session(request)
        return await read(sources.find_failure_folders, settings.root)

    @ui.post("/api/failures/correction")
    async def correction(request: Request) -> Response:
        session(request)
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("folder"), str):
            raise UIRefusal(400, "expected {folder, failure_id, correction}")
        if not isinstance(body.get("failure_id"), str):
            raise UIRefusal(400, "failure_id: the review line's failure_id")
        return await read(
            sources.save_correction, settings.root, body["folder"], body["failure_id"], body.get("correction")
        )

    return ui


def _recording_console() -> tuple[Any, io.StringIO]:
    """A rich console that writes what the command would print into a string, for the page to show."""
    from rich.console import Console

    said = io.StringIO()
    return Console(file=said, width=200, color_system=None, soft_wrap=True), said


# The page's own scripts and styles only: no inline script, nothing from another origin, never framed.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def loopback_url(host: str, port: int) -> str:
    """The address a process on this machine reaches a server bound to `host` at (0.0.0.0 and :: are reached on
    loopback, which the gateway's Host allow-list always answers)."""
    import ipaddress

    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"http://{host}:{port}"
    if address.is_unspecified:
        return f"http://127.0.0.1:{port}" if address.version == 4 else f"http://[::1]:{port}"
    return f"http://[{address}]:{port}" if address.version == 6 else f"http://{address}:{port}"


def mount(app: FastAPI, settings: UISettings) -> None:
    """Serve the dashboard at /ui on an existing app (the gateway's)."""

    @app.get("/ui", include_in_schema=False)
    async def _slash() -> Response:
        return RedirectResponse("/ui/")

    app.mount("/ui", create_ui(settings))


def standalone(settings: UISettings, allowed_hosts: list[str]) -> FastAPI:
    """`clawtune ui`: the dashboard at /ui, `/` sending the browser there, Host checked against `allowed_hosts`."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", include_in_schema=False)
    async def _root() -> Response:
        return RedirectResponse("/ui/")

    mount(app, settings)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    return app
