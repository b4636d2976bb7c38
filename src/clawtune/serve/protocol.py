"""The gateway's wire format: pydantic models of the OpenAI chat-completions API with OpenAI's rules, its error shape,
and the safe reading of a request body.

What a request may hold is decided here, at the edge, so nothing behind it (routing, the engine's batch, the log)
ever sees a `top_p` that is a string or a `stop` that is a number: a bad field is a 400 naming it, as OpenAI answers.
Fields OpenAI defines that clawtune does not use are still checked (a client that sends them wrong is told), and
fields it does not define are kept and forwarded (remote engines such as vLLM and Ollama read their own extras).
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# ---- errors -------------------------------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def from_validation(exc: ValidationError) -> APIError:
    """OpenAI's 400 for the first problem pydantic found, naming the field as OpenAI does (`messages[1].content`)."""
    first = exc.errors(include_url=False)[0]
    param = param_name(first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        text = f"Missing required parameter: '{param}'."
    elif first["type"] == "extra_forbidden":
        text = f"Unrecognized request argument supplied: {param}"
    else:
        text = f"Invalid value for '{param}': {message}." if param else f"{message}."
    return APIError(400, text, param=param or None, code="invalid_value" if param else None)


_ROLES = {"system", "developer", "user", "assistant", "tool"}
_TYPES = {"str", "int", "float", "bool", "list", "dict"}


def param_name(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as OpenAI writes a parameter: union members and role tags dropped."""
    out = ""
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif (
            isinstance(part, str)
            and part not in _TYPES
            and not (isinstance(previous, int) and part in _ROLES)
            and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part)
        ):
            out += ("." if out else "") + part
        previous = part
    return out


# ---- reading a body -----------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def parse_json(raw: bytes) -> Any:
    """A request body as JSON: invalid UTF-8, NaN/Infinity, nesting deeper than 1,024 levels are a 400, never a crash.

    orjson first (fast, depth-limited, strict UTF-8). It also refuses the escape of a lone UTF-16 surrogate
    (`"\\ud800"`), which JavaScript clients produce when they cut a string in the middle of an emoji: those bodies are
    read again by the standard library and every lone surrogate becomes U+FFFD, so one broken character costs the
    agent nothing and cannot reach the log or the tokenizer.
    """
    if not raw.strip():
        raise APIError(400, "We could not parse the JSON body of your request: the body is empty.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        first = str(exc)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise APIError(
            400, f"We could not parse the JSON body of your request: it is not UTF-8 (byte {exc.start})."
        ) from None
    if "recursion limit" in first:
        raise APIError(400, "We could not parse the JSON body of your request: it is nested too deeply.")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise APIError(400, "We could not parse the JSON body of your request: it is nested too deeply.") from None
    except ValueError:
        raise APIError(400, f"We could not parse the JSON body of your request: {first}") from None
    return _without_surrogates(value)


def replace_surrogates(text: str) -> str:
    """Lone UTF-16 surrogates (which no UTF-8 encoder accepts) as U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return replace_surrogates(value)
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {replace_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


# ---- the chat-completions request ---------------------------------------------------------------------------------

Strict = ConfigDict(strict=True, extra="allow")
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class TextPart(BaseModel):
    model_config = Strict
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    model_config = Strict
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    model_config = Strict
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(BaseModel):
    model_config = Strict
    data: str
    format: str


class AudioPart(BaseModel):
    model_config = Strict
    type: Literal["input_audio"]
    input_audio: InputAudio


class FilePart(BaseModel):
    model_config = Strict
    type: Literal["file"]
    file: dict[str, Any]


class RefusalPart(BaseModel):
    model_config = Strict
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


class FunctionCall(BaseModel):
    model_config = Strict
    name: str
    arguments: str  # a JSON-encoded string, as OpenAI sends it


class ToolCall(BaseModel):
    model_config = Strict
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(BaseModel):
    model_config = Strict
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(BaseModel):
    model_config = Strict
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(BaseModel):
    model_config = Strict
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    refusal: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None

    @model_validator(mode="after")
    def _content_or_calls(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.refusal is None:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class ToolMessage(BaseModel):
    model_config = Strict
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionDefinition(BaseModel):
    model_config = Strict
    name: Name
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = Strict
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = Strict
    name: str


class NamedToolChoice(BaseModel):
    model_config = Strict
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(BaseModel):
    model_config = Strict
    include_usage: bool | None = None


class ResponseFormat(BaseModel):
    model_config = Strict
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


def _finite(value: float | None, name: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return value


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`, with the ranges and types OpenAI enforces."""

    model_config = Strict
    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=100_000)
    tools: list[Tool] | None = Field(None, max_length=512)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    user: str | None = Field(None, max_length=512)
    metadata: dict[str, str | list[str]] | None = Field(None, max_length=16)

    @field_validator("temperature", "top_p", "frequency_penalty", "presence_penalty")
    @classmethod
    def _no_nan(cls, value: float | None) -> float | None:
        return _finite(value, "the value")

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def max_output(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


def check_rules(request: ChatCompletionRequest) -> None:
    """OpenAI's rules between fields, each a 400 naming the parameter."""
    if request.stream_options is not None and not request.stream:
        raise APIError(400, "The 'stream_options' parameter is only allowed when 'stream' is true.", param="stream")
    if request.tool_choice is not None and request.tool_choice != "none" and not request.tools:
        raise APIError(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            param="tool_choice",
        )
    if isinstance(request.tool_choice, NamedToolChoice):
        name = request.tool_choice.function.name
        if name not in {t.function.name for t in request.tools or []}:
            raise APIError(
                400, f"Invalid value for 'tool_choice': no function named {name!r} in 'tools'.", param="tool_choice"
            )
    if request.top_logprobs is not None and not request.logprobs:
        raise APIError(400, "'top_logprobs' needs 'logprobs' to be true.", param="top_logprobs")
    check_tool_messages(request.messages)


def check_tool_messages(messages: list[Any]) -> None:
    """OpenAI's conversation rules for tools: a tool message answers a call of the assistant message before it, and
    every call is answered before the conversation moves on."""
    pending: list[str] = []
    for i, message in enumerate(messages):
        if isinstance(message, ToolMessage):
            if message.tool_call_id not in pending:
                raise APIError(
                    400,
                    f"Invalid parameter: messages with role 'tool' must be a response to a preceding message with "
                    f"'tool_calls' (messages[{i}].tool_call_id {message.tool_call_id!r} answers no call).",
                    param=f"messages[{i}].tool_call_id",
                )
            pending.remove(message.tool_call_id)
            continue
        if pending:
            raise APIError(
                400,
                f"An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}",
                param=f"messages[{i}].role",
            )
        if isinstance(message, AssistantMessage) and message.tool_calls:
            pending = [call.id for call in message.tool_calls]


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    """The validated request, or OpenAI's 400 naming the first bad parameter."""
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise from_validation(exc) from None
    check_rules(request)
    return request


# ---- other requests -----------------------------------------------------------------------------------------------


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    request_id: str = Field(min_length=1, max_length=200)
    rating: Literal["positive", "negative"]
    comment: str | None = Field(None, max_length=20_000)


ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class AdapterLoadRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str = Field(
        pattern=ADAPTER_NAME.pattern,
        description="The new model id: letters, digits, '.', '_', '-' (not 'auto').",
    )
    path: str = Field(min_length=1, max_length=4096)
    weight: float = Field(1.0, gt=0, le=4)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == "auto":
            raise ValueError("'auto' is reserved for routing by tags")
        return value

    @field_validator("path")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("a path cannot contain a NUL byte")
        return value


def parse_model(cls: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        raise from_validation(exc) from None


# ---- responses (documented in the OpenAPI schema; the handlers build them as plain dicts for speed) -------------


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class ResponseMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ResponseToolCall] | None = None


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: Any = None


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class ChatCompletion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class FeedbackResponse(BaseModel):
    request_id: str
    rating: str
    recorded: bool


class AdapterInfo(BaseModel):
    id: str
    path: str
    weight: float


class AdapterList(BaseModel):
    adapters: list[AdapterInfo]


class Deleted(BaseModel):
    deleted: str


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "degraded"]
    models: list[str]
    queued: int
