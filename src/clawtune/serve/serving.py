"""Serving a chat completion, apart from HTTP: validate, route, run on the in-process engine or forward, build the
OpenAI answer (plain or SSE chunks), and log it exactly once.

A handler gets a `Reply`: a JSON body, or an async iterator of SSE events. Whatever happens (an error, a client that
goes away, a server that shuts down), `Call.close()` runs once: the generation is cancelled, the request is logged
with the status the client saw, and its concurrency slot is free at once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clawtune.models.toolcalls import parse_reply
from clawtune.serve.engine import EngineError, GenRequest
from clawtune.serve.gateway import Gateway, Route
from clawtune.serve.limits import BudgetError, OutputBudget, card_fields, output_budget
from clawtune.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    FeedbackRequest,
    parse_chat_request,
    parse_json,
    parse_model,
)

TOOL_MARKERS = ("<tool_call>", "[TOOL_CALLS]")
DISCONNECTED = 499  # the client went away before its answer was complete (nginx's convention)


@dataclass
class Reply:
    """What a handler answers: `body` (JSON) or `stream` (SSE event strings), and `close`, to call once at the end."""

    headers: dict[str, str]
    body: dict[str, Any] | None = None
    stream: AsyncIterator[str] | None = None
    close: Callable[[], None] = lambda: None


class Call:
    """One chat-completion request's bookkeeping: its log record, slot and generation."""

    def __init__(self, gateway: Gateway, request_id: str, body: Any) -> None:
        self.gateway = gateway
        self.started = time.monotonic()
        self.record: dict[str, Any] = {
            "id": request_id,
            "created": time.time(),
            "request_json": body if isinstance(body, dict) else None,
            "status": 200,
        }
        self.headers = {"X-Request-Id": request_id}
        self.logged = False
        self.slot = False
        self.cancel: Callable[[], None] | None = None

    def routed(self, route: Route, stream: bool) -> None:
        self.record.update(
            model=route.entry.id,
            requested_model=route.requested,
            provider=route.entry.provider,
            experiment=route.experiment,
            arm=route.arm,
            session=route.session,
            user=route.user,
            unit=route.unit,
            stream=int(stream),
        )
        self.headers["X-Clawtune-Model"] = route.entry.id
        if route.arm:
            self.headers["X-Clawtune-Arm"] = route.arm
            self.headers["X-Clawtune-Experiment"] = str(route.experiment)

    def commit(self, **fields: Any) -> None:
        """Log and count the request, once: called before the answer's last bytes go out, so a client that has its
        answer finds it in the log (feedback right after an answer must not miss it)."""
        if self.logged:
            return
        self.logged = True
        self.record.update(fields)
        latency = time.monotonic() - self.started
        self.record["latency_ms"] = round(latency * 1000, 2)
        record = self.record
        self.gateway.log.request(record)
        self.gateway.metrics.observe(
            record.get("model"),
            int(record.get("status") or 200),
            latency,
            int(record.get("prompt_tokens") or 0),
            int(record.get("completion_tokens") or 0),
        )

    def fail(self, error: APIError) -> None:
        self.commit(status=error.status, error=error.message)

    def close(self) -> None:
        """The end of the request, however it ended: cancel what still runs, log it if nothing did, free the slot."""
        if self.cancel is not None:
            self.cancel()
            self.cancel = None
        if not self.logged:
            if self.gateway.closing:
                self.commit(status=503, error="the server shut down before the answer was complete")
            else:
                self.commit(status=DISCONNECTED, error="the client disconnected before the answer was complete")
        if self.slot:
            self.slot = False
            self.gateway.release()


# ---- the engine's events, into the event loop --------------------------------------------------------------------


class Events:
    """A GenRequest's event sink: the engine's thread puts, the event loop awaits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def put(self, item: tuple[Any, ...]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop has closed (shutdown): nobody is waiting for this answer any more
            pass

    async def next(self, deadline: float) -> tuple[Any, ...]:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                event = await self.queue.get()
        except TimeoutError:
            raise APIError(504, "generation timed out", "timeout_error") from None
        if event[0] == "error":
            raise APIError(500, f"generation failed: {event[1]}", "server_error")
        return event


# ---- local completions --------------------------------------------------------------------------------------------


@dataclass
class Completion:
    request_id: str
    created: int
    route: Route
    adapter: str | None
    prompt_tokens: int
    prompt_tokens_original: int
    text: str = ""
    finish: str = "stop"
    completion_tokens: int = 0
    offered: set[str] = field(default_factory=set)  # tool names the request offered (none under tool_choice "none")
    tools: list[dict[str, Any]] | None = None  # the offered tools' definitions (their schemas grade the calls)

    def parsed(self) -> tuple[str | None, list[dict[str, Any]], int]:
        """(content, tool calls, invalid calls). A call that cannot be read (broken JSON, no name) or names a tool the
        request did not offer is not passed to the client as a call (an agent would try to run it): the raw text comes
        back as content, and the log counts it as an invalid tool call."""
        reply = parse_reply(self.text)
        calls: list[dict[str, Any]] = []
        for call in reply.tool_calls:
            name = call["function"]["name"]
            if name and name in self.offered and _is_json(call["function"]["arguments"]):
                calls.append({**call, "id": f"call_{self.request_id[-12:]}_{len(calls)}"})
        invalid = len(reply.tool_calls) - len(calls) + (len(reply.invalid) if not reply.tool_calls else 0)
        if reply.tool_calls and not calls:
            return self.text.strip() or None, [], invalid
        return reply.content, calls, invalid

    def body(self, model_name: str) -> dict[str, Any]:
        content, calls, _ = self.parsed()
        message: dict[str, Any] = {"role": "assistant", "content": content}
        finish = self.finish
        if calls:
            message["tool_calls"] = calls
            finish = "tool_calls"
        return {
            "id": self.request_id,
            "object": "chat.completion",
            "created": self.created,
            "model": model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": self.usage(),
            "clawtune": {
                "model": self.route.entry.id,
                "adapter": self.adapter,
                "experiment": self.route.experiment,
                "arm": self.route.arm,
            },
        }

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_before_policy": self.prompt_tokens_original,
        }

    def log_fields(self, response: dict[str, Any]) -> dict[str, Any]:
        _, calls, invalid = self.parsed()
        valid = invalid == 0 and not tool_call_problems({"tool_calls": calls}, self.tools)
        return {
            "completion_tokens": self.completion_tokens,
            "finish_reason": response["choices"][0]["finish_reason"],
            "tool_calls": len(calls),
            # 1: every call names an offered tool with arguments its JSON Schema accepts (the A/B test's accuracy)
            "tool_calls_valid": int(valid) if calls or invalid else None,
            "response_json": response,
        }


def tool_call_problems(message: dict[str, Any], tools: list[dict[str, Any]] | None) -> list[str]:
    """Why a message's tool calls break the offered tools' contract (the teacher's check: offered, a JSON object, valid
    against the tool's JSON Schema); empty when they keep it."""
    from clawtune.data.teacher import tool_call_problems as check

    return check(message, tools)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _normalise_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI request messages as clawtune's renderer expects them (developer -> system)."""
    return [{**m, "role": "system"} if m.get("role") == "developer" else m for m in messages]


def _partial_marker(text: str) -> int:
    """How many trailing characters could be the start of a tool-call marker (held back until known)."""
    for marker in TOOL_MARKERS:
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                return size
    return 0


def sse(data: Any) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class ChatService:
    """`POST /v1/chat/completions` and `POST /v1/feedback`, without HTTP."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self._render_lock = threading.Lock()  # a fast tokenizer must not be used by two threads at once

    # ---- chat completions --------------------------------------------------------------------------------------

    async def chat(self, raw: bytes | APIError, headers: Mapping[str, str], request_id: str) -> Reply:
        """The reply to a request body (or to the error reading it); every outcome is logged once (an APIError is
        raised after logging)."""
        call = Call(self.gateway, request_id, None)
        try:
            if isinstance(raw, APIError):
                raise raw
            body = parse_json(raw)
            call.record["request_json"] = body if isinstance(body, dict) else None
            request = parse_chat_request(body)
            route = self.gateway.route(request, headers)
            call.routed(route, bool(request.stream))
            if not self.gateway.acquire():
                raise APIError(
                    429,
                    "too many requests in flight on this server; retry shortly",
                    "rate_limit_error",
                    code="rate_limit_exceeded",
                )
            call.slot = True
            if route.entry.provider == "clawtune":
                reply = await self._local(call, route, request, body)
            else:
                reply = await self._remote(call, route, request, body)
        except APIError as error:
            error.headers = {**call.headers, **error.headers}
            call.fail(error)
            call.close()
            raise
        except BaseException:  # cancelled (the client went away, or shutdown), or a bug: logged, slot freed
            call.close()
            raise
        if reply.stream is None:
            call.close()
        return reply

    async def _local(self, call: Call, route: Route, request: ChatCompletionRequest, body: dict[str, Any]) -> Reply:
        engine = self.gateway.engine
        assert engine is not None
        entry = route.entry
        adapter = self.gateway.adapter_of(entry)
        if request.n not in (None, 1):
            raise APIError(400, "only n=1 is supported by the in-process engine", param="n")
        tools = body.get("tools") or None
        original = _normalise_messages(body["messages"])
        messages = self.gateway.apply_policy(entry, original)

        def render() -> tuple[int, list[int]]:
            with self._render_lock:
                # what the agent's own prompt would have cost, for the savings in usage and the log
                before = len(engine.render(adapter, original, tools)) if messages is not original else None
                ids = engine.render(adapter, messages, tools)
            return before or len(ids), ids

        try:
            before, ids = await asyncio.to_thread(render)
        except Exception as exc:
            raise APIError(
                400, f"the messages cannot be rendered with this model's chat template: {exc}", param="messages"
            ) from None
        allowed = await self.budget(call, request, len(ids), entry.id)
        events = Events(asyncio.get_running_loop())
        generation = GenRequest(
            prompt_ids=ids,
            adapter=adapter,
            max_new_tokens=allowed.max_tokens,
            temperature=request.temperature or 0.0,
            top_p=request.top_p if request.top_p is not None else 1.0,
            stop=[s for s in request.stops() if s],
            seed=request.seed,
            events=events,
        )
        completion = Completion(call.record["id"], int(time.time()), route, adapter, len(ids), before)
        if request.tool_choice != "none":
            completion.offered = {t.function.name for t in request.tools or []}
            completion.tools = tools
        if adapter:
            call.headers["X-Clawtune-Adapter"] = adapter
        call.record.update(adapter=adapter, prompt_tokens=len(ids), prompt_tokens_original=before)
        call.cancel = generation.cancelled.set
        try:
            engine.submit(generation)
        except EngineError as exc:
            raise APIError(503, str(exc), "server_error") from None
        model_name = route.requested if route.experiment else entry.id
        deadline = time.monotonic() + self.settings.timeout_s
        if not request.stream:
            while True:
                event = await events.next(deadline)
                if event[0] == "text":
                    completion.text += event[1]
                elif event[0] == "done":
                    completion.finish, completion.completion_tokens = event[1], event[2]
                    break
            response = completion.body(model_name)
            call.cancel = None
            call.commit(**completion.log_fields(response))
            return Reply(call.headers, body=response)
        return Reply(
            call.headers,
            stream=self._local_stream(call, completion, events, deadline, model_name, request),
            close=call.close,
        )

    async def _local_stream(
        self,
        call: Call,
        c: Completion,
        events: Events,
        deadline: float,
        model_name: str,
        request: ChatCompletionRequest,
    ) -> AsyncIterator[str]:
        """The SSE events of a local completion: text as it is decoded, tool calls once complete."""

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return sse(
                {
                    "id": c.request_id,
                    "object": "chat.completion.chunk",
                    "created": c.created,
                    "model": model_name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                }
            )

        try:
            yield chunk({"role": "assistant", "content": ""})
            sent = 0  # characters of c.text already streamed as content
            holding = False  # a tool-call marker started: buffer the rest
            try:
                while True:
                    event = await events.next(deadline)
                    if event[0] == "done":
                        c.finish, c.completion_tokens = event[1], event[2]
                        break
                    c.text += event[1]
                    if holding:
                        continue
                    marker = min((c.text.find(m) for m in TOOL_MARKERS if m in c.text), default=-1)
                    if marker >= 0:
                        holding = True
                        safe = marker
                    else:
                        safe = len(c.text) - _partial_marker(c.text)
                        if c.text.lstrip().startswith(("{", "[")):
                            safe = sent  # a Llama-3-style JSON call may be starting: hold it until the end
                    if safe > sent:
                        yield chunk({"content": c.text[sent:safe]})
                        sent = safe
            except APIError as error:  # the status line is gone already: the error goes in the stream
                call.fail(error)
                yield sse(error.body())
                yield sse("[DONE]")
                return
            call.cancel = None
            _, calls, _ = c.parsed()
            if calls:
                for i, tool_call in enumerate(calls):
                    function = {"name": tool_call["function"]["name"], "arguments": tool_call["function"]["arguments"]}
                    yield chunk(
                        {"tool_calls": [{"index": i, "id": tool_call["id"], "type": "function", "function": function}]}
                    )
                last = chunk({}, "tool_calls")
            else:
                if len(c.text) > sent:  # what was held back: a partial marker, or text that looked like a JSON call
                    yield chunk({"content": c.text[sent:]})
                last = chunk({}, "length" if c.finish == "length" else "stop")
            call.commit(**c.log_fields(c.body(model_name)))
            yield last
            if request.include_usage():
                final = json.loads(chunk({})[6:])
                final["choices"] = []
                final["usage"] = c.usage()
                yield sse(final)
            yield sse("[DONE]")
        finally:
            call.close()

    # ---- remote engines ------------------------------------------------------------------------------------------

    async def budget(
        self, call: Call, request: ChatCompletionRequest, prompt_tokens: int | None, model_id: str
    ) -> OutputBudget:
        """How many tokens this request may generate (`limits.output_budget`; its refusals are OpenAI's 400), put in
        the log's record with the reason it is less than asked."""
        field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        limits = await self.gateway.limits(model_id)
        try:
            allowed = output_budget(request.max_output(), prompt_tokens, limits, self.settings, field)
        except BudgetError as exc:
            raise APIError(400, exc.message, param=exc.param, code=exc.code) from None
        call.record.update(
            max_tokens_requested=allowed.requested, max_tokens=allowed.max_tokens, max_tokens_clamp=allowed.clamp
        )
        return allowed

    async def _remote(self, call: Call, route: Route, request: ChatCompletionRequest, body: dict[str, Any]) -> Reply:
        upstream = self.gateway.upstream
        entry = route.entry
        offered = (body.get("tools") or []) if request.tool_choice != "none" else []
        if request.max_output() is not None:  # without one, the engine's own default applies
            # The prompt is the engine's to count: the server's and the engine's output limits apply here.
            allowed = await self.budget(call, request, None, entry.id)
            if allowed.clamp:
                field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
                body = {**body, field: allowed.max_tokens}
        if not request.stream:
            response = await upstream.json(entry, body)
            call.commit(**_remote_log_fields(response, offered))
            return Reply(call.headers, body=response)
        opened = await upstream.open(entry, body)

        async def events() -> AsyncIterator[str]:
            text: list[str] = []
            calls: dict[int, dict[str, Any]] = {}
            usage: dict[str, Any] = {}
            finish = None
            try:
                try:
                    async for data in upstream.lines(entry, opened):
                        try:
                            chunk = json.loads(data)
                        except ValueError:
                            chunk = None
                        if isinstance(chunk, dict):
                            usage = chunk.get("usage") or usage
                            for choice in chunk.get("choices") or []:
                                if not isinstance(choice, dict):
                                    continue
                                delta = choice.get("delta") or {}
                                text.append(str(delta.get("content") or ""))
                                for tool_call in delta.get("tool_calls") or []:
                                    slot = calls.setdefault(tool_call.get("index", 0), {"name": "", "arguments": ""})
                                    function = tool_call.get("function") or {}
                                    slot["name"] += function.get("name") or ""
                                    slot["arguments"] += function.get("arguments") or ""
                                finish = choice.get("finish_reason") or finish
                        yield sse(data)
                except APIError as error:
                    call.fail(error)
                    yield sse(error.body())
                    yield sse("[DONE]")
                    return
                message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
                if calls:
                    message["tool_calls"] = [{"type": "function", "function": calls[i]} for i in sorted(calls)]
                response = {"choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}
                call.commit(**_remote_log_fields(response, offered))
                yield sse("[DONE]")
            finally:
                await opened.aclose()
                call.close()

        return Reply(call.headers, stream=events(), close=call.close)

    # ---- feedback ------------------------------------------------------------------------------------------------

    async def feedback(self, body: Any) -> dict[str, Any]:
        request: FeedbackRequest = parse_model(FeedbackRequest, body)
        log = self.gateway.log
        if not await asyncio.to_thread(log.has_request, request.request_id):
            raise APIError(404, f"no request with id {request.request_id!r} in the log", param="request_id")
        log.feedback(request.request_id, request.rating, request.comment)
        return {"request_id": request.request_id, "rating": request.rating, "recorded": True}

    async def models(self) -> dict[str, Any]:
        """The model cards, each with its context window and output limit (`limits.card_fields`)."""
        gateway = self.gateway
        owners: dict[str, str] = {m: gateway.entries[m].provider for m in sorted(gateway.entries)}
        owners.update({e: "clawtune-experiment" for e in gateway.experiments})
        data = [
            {
                "id": m,
                "object": "model",
                "created": gateway.created,
                "owned_by": owner,
                **card_fields(await gateway.limits(m)),
            }
            for m, owner in owners.items()
        ]
        return {"object": "list", "data": data}


def _remote_log_fields(response: dict[str, Any], offered: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the log keeps of a remote engine's answer; its tool calls are checked as the local ones are (a tool the
    request offered, arguments its JSON Schema accepts): `tool_calls_valid` is what the A/B test's grader reads."""
    used: dict[str, Any] = response["usage"] if isinstance(response.get("usage"), dict) else {}
    choices = response["choices"] if isinstance(response.get("choices"), list) else []
    choice: dict[str, Any] = choices[0] if choices and isinstance(choices[0], dict) else {}
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    calls = message.get("tool_calls")
    return {
        "prompt_tokens": used.get("prompt_tokens"),
        "completion_tokens": used.get("completion_tokens"),
        "response_json": response,
        "finish_reason": choice.get("finish_reason"),
        "tool_calls": len(calls) if isinstance(calls, list) else 0,
        "tool_calls_valid": int(not tool_call_problems(message, offered))
        if isinstance(calls, list) and calls
        else None,
    }
