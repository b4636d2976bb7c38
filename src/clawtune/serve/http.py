"""The HTTP layer: a FastAPI app whose routes only read, authorise and dispatch (the logic is in `serving` and
`gateway`), and uvicorn's HTTP protocol with the limits a gateway needs.

Every error is in OpenAI's shape, FastAPI's 422 and Starlette's plain-text 404/405 included. The Host header is
checked against an allow-list (DNS rebinding), CORS is off unless origins are configured, API keys and admin keys are
compared in constant time, and requests without a valid key are counted, never logged. Bodies are read here with a
size limit and a time limit; JSON is parsed by `protocol.parse_json` (never FastAPI's, which crashes on deep nesting).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from clawtune.serve import protocol as wire
from clawtune.serve.gateway import Gateway
from clawtune.serve.metrics import CONTENT_TYPE
from clawtune.serve.protocol import APIError, error_body
from clawtune.serve.serving import ChatService, Reply

logger = logging.getLogger("clawtune.serve")
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")


# ---- responses ----------------------------------------------------------------------------------------------------


def dump(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # a lone surrogate from a remote engine's reply: escaped by the standard library
        return json.dumps(value).encode()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dump(body), status, headers, media_type="application/json")


def error_response(error: APIError, headers: dict[str, str] | None = None) -> Response:
    return json_response(error.body(), error.status, {**(headers or {}), **error.headers})


class EventStream(StreamingResponse):
    """SSE. Starlette cancels the stream when the client disconnects; `close` then runs at once (the generation is
    cancelled, the request logged, its slot freed), and also when the stream never started."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str], headers: dict[str, str], close: Callable[[], None]) -> None:
        super().__init__(events, headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (ClientDisconnect, OSError):
            pass
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            self.close()


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def answer(request: Request, work: Coroutine[Any, Any, Reply]) -> Response:
    """Run the serving coroutine; if the client disconnects before it has an answer, cancel it (the generation stops
    and its slot is freed at once)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_gone(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return Response(status_code=499)  # nobody is listening
    try:
        reply = task.result()
    except APIError as error:
        return error_response(error)
    if reply.stream is not None:
        return EventStream(reply.stream, reply.headers, reply.close)
    return json_response(reply.body, 200, reply.headers)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, refused with 413 past `limit` bytes and 408 past `timeout` seconds (a slow body would hold a
    slot and delay shutdown)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body is larger than {limit} bytes", headers={"Connection": "close"})
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise APIError(
                        413, f"the request body is larger than {limit} bytes", headers={"Connection": "close"}
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise APIError(
            408,
            f"the request body did not arrive within {timeout:g} s",
            "timeout_error",
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise APIError(400, "the client disconnected while sending the body") from None
    return b"".join(chunks)


# ---- middleware ---------------------------------------------------------------------------------------------------


_HOST_OK = "clawtune.host_ok"


class HostCheck(TrustedHostMiddleware):
    """Starlette's Host allow-list, its plain-text refusal answered in OpenAI's shape and counted."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str], count: Callable[[], None]) -> None:
        async def passed(scope: Scope, receive: Receive, send: Send) -> None:
            scope[_HOST_OK] = True
            await app(scope, receive, send)

        super().__init__(passed, allowed_hosts=allowed_hosts, www_redirect=False)
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allow_any:
            await self.app(scope, receive, send)
            return

        async def refuse(message: Message) -> None:
            if scope.get(_HOST_OK):
                await send(message)
            elif message["type"] == "http.response.start":
                self.count()
                body = dump(error_body("this server does not answer for that Host header", "invalid_request_error"))
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})

        await super().__call__(scope, receive, refuse)


# ---- the app ------------------------------------------------------------------------------------------------------


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The request body in the OpenAPI schema (the handler reads and validates it itself)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


# One server-sent event: `data` is a chat.completion.chunk as JSON, an error object, or "[DONE]".
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
}

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": wire.ErrorResponse, "description": text}
    for status, text in {
        400: "Invalid request",
        401: "Missing or wrong API key",
        403: "Not allowed",
        404: "Not found",
        408: "The body did not arrive in time",
        409: "Conflict",
        413: "Body too large",
        415: "Not sent as application/json",
        429: "Too many requests in flight",
        502: "A remote engine failed",
        503: "Shutting down",
        504: "Timed out",
    }.items()
}


def create_app(gateway: Gateway) -> FastAPI:
    """The gateway's FastAPI app."""
    settings = gateway.settings
    service = ChatService(gateway)
    bearer = HTTPBearer(auto_error=False, description="An API key from server.api_keys (admin: server.admin_keys)")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        gateway.closing = True
        await gateway.aclose()

    app = FastAPI(
        title="clawtune gateway",
        description="OpenAI-compatible chat completions over fine-tuned adapters and remote engines.",
        version="1",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )

    # -- errors, all in OpenAI's shape --
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = wire.param_name(tuple(first.get("loc", ()))[1:])
        return error_response(APIError(400, f"Invalid value for '{param}': {first.get('msg')}.", param=param or None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else None
        text = f"no route for {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(APIError(exc.status_code, text, code=code), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(APIError(500, f"internal error: {type(exc).__name__}", "server_error"))

    # -- keys --
    async def api_key(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not gateway.authorized(request.headers.get("authorization")):
            gateway.metrics.unauthenticated.inc()
            raise APIError(401, "Incorrect API key provided", code="invalid_api_key")

    async def admin_key(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not settings.admin_keys:
            gateway.metrics.unauthenticated.inc()
            raise APIError(
                403, "the admin API is off: set server.admin_keys to use it", "permission_error", code="admin_disabled"
            )
        if not gateway.authorized(request.headers.get("authorization"), admin=True):
            gateway.metrics.unauthenticated.inc()
            raise APIError(401, "Incorrect admin key provided", code="invalid_api_key")

    async def body_of(request: Request) -> Any:
        return wire.parse_json(await read_body(request, settings.max_body_bytes, settings.body_timeout_s))

    # -- the OpenAI API --
    @app.post(
        "/v1/chat/completions",
        dependencies=[Depends(api_key)],
        openapi_extra=_body_doc(wire.ChatCompletionRequest),
        responses={
            200: {
                "model": wire.ChatCompletion,
                "description": "The completion, or with stream: true, server-sent chat.completion.chunk events",
                "content": {"text/event-stream": {"schema": SSE_EVENT}},
            },
            **ERRORS,
        },
        summary="Create a chat completion",
    )
    async def chat_completions(request: Request) -> Response:
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        try:
            raw: bytes | APIError = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        except APIError as error:
            raw = error
        return await answer(request, service.chat(raw, request.headers, request_id))

    app.add_api_route(
        "/chat/completions",
        chat_completions,
        methods=["POST"],
        dependencies=[Depends(api_key)],
        include_in_schema=False,
    )

    @app.get("/v1/models", dependencies=[Depends(api_key)], response_model=wire.ModelList, responses=ERRORS)
    async def models() -> Response:
        return json_response(await service.models())

    @app.post(
        "/v1/feedback",
        dependencies=[Depends(api_key)],
        openapi_extra=_body_doc(wire.FeedbackRequest),
        responses={200: {"model": wire.FeedbackResponse}, **ERRORS},
        summary="Rate an answer (joined to its request in the log)",
    )
    async def feedback(request: Request) -> Response:
        return json_response(await service.feedback(await body_of(request)))

    # -- operations --
    @app.get("/health", response_model=wire.Health, responses={503: {"model": wire.Health}})
    async def health() -> Response:
        status, body = gateway.health()
        return json_response(body, status)

    @app.get("/metrics", responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}})
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)

    # -- admin --
    @app.get("/admin/adapters", dependencies=[Depends(admin_key)], response_model=wire.AdapterList, responses=ERRORS)
    async def list_adapters() -> Response:
        return json_response({"adapters": gateway.adapters()})

    @app.post(
        "/admin/adapters",
        dependencies=[Depends(admin_key)],
        openapi_extra=_body_doc(wire.AdapterLoadRequest),
        responses={200: {"model": wire.AdapterInfo}, **ERRORS},
        summary="Load an adapter from server.adapter_dirs as a new model id",
    )
    async def load_adapter(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise APIError(415, "the body must be sent as application/json (Content-Type)")
        load: wire.AdapterLoadRequest = wire.parse_model(wire.AdapterLoadRequest, await body_of(request))
        try:
            loaded = await asyncio.to_thread(gateway.load_adapter, load.name, load.path, load.weight)
        except APIError as error:
            gateway.log.admin("load", load.name, load.path, error.status, error.message)
            raise
        gateway.log.admin("load", load.name, loaded["path"], 200)
        return json_response(loaded)

    @app.delete(
        "/admin/adapters/{name}", dependencies=[Depends(admin_key)], response_model=wire.Deleted, responses=ERRORS
    )
    async def unload_adapter(name: str) -> Response:
        if not wire.ADAPTER_NAME.fullmatch(name):
            raise APIError(400, f"{name!r} is not an adapter name (letters, digits, '.', '_', '-')", param="name")
        try:
            await asyncio.to_thread(gateway.unload_adapter, name)
        except APIError as error:
            gateway.log.admin("unload", name, None, error.status, error.message)
            raise
        gateway.log.admin("unload", name, None, 200)
        return json_response({"deleted": name})

    # -- experiments (A/B tests): the log's database holds them; `clawtune ft ab-test` drives these --
    lab = gateway.lab

    async def admin_call(action: str, name: str | None, work: Callable[[], Any]) -> Any:
        """Run a blocking experiments call off the event loop; every change is audited in the log."""
        try:
            result = await asyncio.to_thread(work)
        except APIError as error:
            if action:
                gateway.log.admin(action, name, None, error.status, error.message)
            raise
        if action:
            gateway.log.admin(action, name, None, 200)
        return result

    async def json_body(request: Request) -> Any:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise APIError(415, "the body must be sent as application/json (Content-Type)")
        return await body_of(request)

    @app.get("/admin/experiments", dependencies=[Depends(admin_key)], responses=ERRORS)
    async def list_experiments() -> Response:
        return json_response({"experiments": [e.public() for e in lab.all.values()]})

    @app.post(
        "/admin/experiments",
        dependencies=[Depends(admin_key)],
        responses=ERRORS,
        summary="Create an experiment: {id?, model?, arms: {model id: weight}, sticky?, settings?}",
    )
    async def create_experiment(request: Request) -> Response:
        body = await json_body(request)
        name = body.get("id") if isinstance(body, dict) and isinstance(body.get("id"), str) else None
        created = await admin_call("experiment-create", name, lambda: lab.create(body))
        return json_response(created.public(), 201)

    @app.get("/admin/experiments/{experiment_id}", dependencies=[Depends(admin_key)], responses=ERRORS)
    async def read_experiment(experiment_id: str) -> Response:
        experiment = lab.get(experiment_id)
        last = await asyncio.to_thread(lab.refreshes, experiment_id, 1)
        return json_response({**experiment.public(), "last_refresh": last[-1] if last else None})

    @app.get("/admin/experiments/{experiment_id}/units", dependencies=[Depends(admin_key)], responses=ERRORS)
    async def experiment_units(experiment_id: str) -> Response:
        lab.get(experiment_id)
        await asyncio.to_thread(gateway.log.flush, 10)  # what has been answered is counted
        return json_response({"experiment": experiment_id, "units": await asyncio.to_thread(lab.units, experiment_id)})

    @app.get("/admin/experiments/{experiment_id}/refreshes", dependencies=[Depends(admin_key)], responses=ERRORS)
    async def experiment_refreshes(experiment_id: str, limit: int | None = None) -> Response:
        if limit is not None and limit < 1:
            raise APIError(400, "limit must be at least 1", param="limit")
        refreshes = await asyncio.to_thread(lab.refreshes, experiment_id, limit)
        return json_response({"experiment": experiment_id, "refreshes": refreshes})

    @app.post("/admin/experiments/{experiment_id}/refreshes", dependencies=[Depends(admin_key)], responses=ERRORS)
    async def add_experiment_refresh(experiment_id: str, request: Request) -> Response:
        body = await json_body(request)
        return json_response(await admin_call("", experiment_id, lambda: lab.add_refresh(experiment_id, body)), 201)

    @app.post("/admin/experiments/{experiment_id}/stop", dependencies=[Depends(admin_key)], responses=ERRORS)
    async def stop_experiment(experiment_id: str, request: Request) -> Response:
        raw = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        body = wire.parse_json(raw) if raw.strip() else None
        stopped = await admin_call("experiment-stop", experiment_id, lambda: lab.stop(experiment_id, body))
        return json_response(stopped.public())

    async def optional_body(request: Request) -> Any:
        raw = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        return wire.parse_json(raw) if raw.strip() else None

    @app.get("/admin/experiments/{experiment_id}/events", dependencies=[Depends(admin_key)], responses=ERRORS)
    async def experiment_events(experiment_id: str) -> Response:
        """Every decision taken on the experiment (start, step, stop, rollback, promote), with its figures."""
        events = await asyncio.to_thread(lab.events, experiment_id)
        return json_response({"experiment": experiment_id, "events": events})

    @app.post(
        "/admin/experiments/{experiment_id}/step",
        dependencies=[Depends(admin_key)],
        responses=ERRORS,
        summary="The canary's next step: {step: index, reason?, figures?}",
    )
    async def step_experiment(experiment_id: str, request: Request) -> Response:
        body = await optional_body(request)
        stepped = await admin_call("experiment-step", experiment_id, lambda: lab.step(experiment_id, body))
        return json_response(stepped.public())

    @app.post(
        "/admin/experiments/{experiment_id}/promote",
        dependencies=[Depends(admin_key)],
        responses=ERRORS,
        summary="Serve B behind the experiment's model id from now on (models.yaml too): {reason?, figures?}",
    )
    async def promote_experiment(experiment_id: str, request: Request) -> Response:
        body = await optional_body(request)
        promoted = await admin_call("experiment-promote", experiment_id, lambda: lab.promote(experiment_id, body))
        return json_response(promoted.public())

    @app.post(
        "/admin/experiments/{experiment_id}/rollback",
        dependencies=[Depends(admin_key)],
        responses=ERRORS,
        summary="Every request back to the incumbent; undoes a promotion: {reason?, figures?, cause?, result?}",
    )
    async def rollback_experiment(experiment_id: str, request: Request) -> Response:
        body = await optional_body(request)
        undone = await admin_call("experiment-rollback", experiment_id, lambda: lab.rollback(experiment_id, body))
        return json_response(undone.public())

    _schema_with_models(app, [wire.ChatCompletionRequest, wire.FeedbackRequest, wire.AdapterLoadRequest])
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Clawtune-Tags", "X-Clawtune-Session", "X-Clawtune-User"],
        )
    app.add_middleware(HostCheck, allowed_hosts=gateway.allowed_hosts(), count=gateway.metrics.disallowed_host.inc)
    return app


def _schema_with_models(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """FastAPI documents only the bodies it parses; these are parsed by the handlers, so their schemas are added to
    the OpenAPI components by hand."""
    original: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(doc.pop("$defs", {}))
            components[model.__name__] = doc
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# ---- uvicorn's HTTP protocol, with a header timeout and OpenAI-shaped parse errors ------------------------------


def protocol_class(gateway: Gateway) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, plus: a request's line and headers must arrive within `header_timeout_s`
    (uvicorn has no such limit: a slow client could hold a connection forever), and a request the parser refuses
    (`Content-Length: abc`) is answered in OpenAI's error shape, counted, and logged when it was for the chat API and
    carried a valid key."""
    settings = gateway.settings

    class Protocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(settings.header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
                return
            gateway.metrics.invalid_http.labels("header_timeout").inc()
            self._write_error(
                408, f"the request line and headers did not arrive within {settings.header_timeout_s:g} s"
            )

        def send_400_response(self, msg: str) -> None:
            gateway.metrics.invalid_http.labels("unparsable").inc()
            _log_unparsable(gateway, getattr(self, "url", b""), self.headers or [], msg)
            self._write_error(400, "the request is not valid HTTP/1.1 (bad request line, header or Content-Length)")

        def _write_error(self, status: int, message: str) -> None:
            body = dump(error_body(message, "invalid_request_error"))
            reason = {400: b"Bad Request", 408: b"Request Timeout"}[status]
            head = (
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                % (status, reason, len(body))
            )
            self.transport.write(head + body)
            self.transport.close()

    return Protocol


def _log_unparsable(gateway: Gateway, url: bytes, headers: list[tuple[bytes, bytes]], message: str) -> None:
    path = url.split(b"?", 1)[0].decode("latin-1")
    if path not in CHAT_PATHS:
        return
    authorization = next((v.decode("latin-1") for k, v in headers if k == b"authorization"), None)
    if not gateway.authorized(authorization):
        gateway.metrics.unauthenticated.inc()
        return
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    gateway.log.request(
        {"id": request_id, "created": time.time(), "status": 400, "error": f"invalid HTTP request: {message}"}
    )
    gateway.metrics.observe(None, 400, 0.0, 0, 0)
