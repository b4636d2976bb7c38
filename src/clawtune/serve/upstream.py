"""Forwarding to remote OpenAI-compatible engines (vLLM, Ollama, OpenAI) with httpx: async, streaming, timeouts.

No retries: the agent retries on its own, and a retried stream would repeat output the client already has. A
connection that cannot be made is a 502, an engine that does not answer in time a 504, an engine's 4xx goes back to
the client as it came (it is about the request), and an engine's 5xx is a 502 (it is about the engine).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from clawtune.openai_http import completions_url
from clawtune.serve.config import ModelEntry
from clawtune.serve.protocol import APIError


def upstream_model(entry: ModelEntry) -> str:
    """The model name to ask the engine for: for an Ollama entry with adapters, the model made from its Modelfile."""
    if entry.provider == "ollama" and entry.adapters:
        adapter = next(iter(entry.adapters.values()))
        manifest = Path(adapter.path).expanduser() / "clawtune-manifest.json"
        if manifest.is_file():
            return str(json.loads(manifest.read_text(encoding="utf-8")).get("name") or entry.id)
        return entry.id
    return str(entry.model)


def api_key(entry: ModelEntry) -> str | None:
    key = entry.api_key
    if key and key.startswith("${") and key.endswith("}"):
        return os.environ.get(key[2:-1])
    return key


class Upstream:
    """One pooled httpx client for every remote engine (keep-alive connections are reused across requests)."""

    def __init__(self, max_connections: int = 256) -> None:
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment is not the engine the config names
        )

    async def close(self) -> None:
        await self.client.aclose()

    def _request(self, entry: ModelEntry, body: dict[str, Any]) -> httpx.Request:
        payload = {**body, "model": upstream_model(entry)}
        payload.pop("metadata", None)
        headers = {"Content-Type": "application/json"}
        key = api_key(entry)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        timeout = httpx.Timeout(entry.timeout_s, connect=min(10.0, entry.timeout_s))
        return self.client.build_request(
            "POST",
            completions_url(entry.endpoint or ""),
            content=_dumps(payload),
            headers=headers,
            timeout=timeout,
        )

    async def open(self, entry: ModelEntry, body: dict[str, Any]) -> httpx.Response:
        """Send the request and return the response with its body unread (the caller streams or reads it, then
        closes it); an engine's error status is raised as an APIError here."""
        try:
            response = await self.client.send(self._request(entry, body), stream=True)
        except httpx.TimeoutException as exc:
            raise unreachable(entry, exc, 504) from None
        except httpx.HTTPError as exc:
            raise unreachable(entry, exc, 502) from None
        if response.status_code >= 400:
            try:
                detail = (await response.aread()).decode("utf-8", "replace")[:500]
            except httpx.HTTPError:
                detail = ""
            finally:
                await response.aclose()
            raise engine_error(entry, response.status_code, detail)
        return response

    async def json(self, entry: ModelEntry, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.open(entry, body)
        try:
            raw = await response.aread()
        except httpx.TimeoutException as exc:
            raise unreachable(entry, exc, 504) from None
        except httpx.HTTPError as exc:
            raise unreachable(entry, exc, 502) from None
        finally:
            await response.aclose()
        try:
            reply = _loads(raw)
        except ValueError:
            raise APIError(
                502, f"the {entry.provider} engine at {entry.endpoint} answered with invalid JSON", "upstream_error"
            ) from None
        if not isinstance(reply, dict):
            raise APIError(
                502, f"the {entry.provider} engine at {entry.endpoint} answered with a non-object", "upstream_error"
            )
        return reply

    @staticmethod
    async def lines(entry: ModelEntry, response: httpx.Response) -> AsyncIterator[str]:
        """The SSE `data:` payloads of a streamed answer, up to `[DONE]`."""
        try:
            async for line in response.aiter_lines():
                line = line.strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                if data:
                    yield data
        except httpx.TimeoutException as exc:
            raise unreachable(entry, exc, 504) from None
        except httpx.HTTPError as exc:
            raise unreachable(entry, exc, 502) from None


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson refuses what the standard library escapes (a lone surrogate)
        return json.dumps(value).encode()


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # the standard library also reads a lone surrogate's escape
        return json.loads(raw)


def unreachable(entry: ModelEntry, exc: BaseException, status: int) -> APIError:
    what = "did not answer in time" if status == 504 else "cannot be reached"
    return APIError(
        status, f"the {entry.provider} engine at {entry.endpoint} {what}: {type(exc).__name__}: {exc}", "upstream_error"
    )


def engine_error(entry: ModelEntry, status: int, detail: str) -> APIError:
    if entry.provider == "ollama" and status == 404 and entry.adapters:
        name = upstream_model(entry)
        return APIError(
            404,
            f"Ollama has no model {name!r} (made from the exported Modelfile). Create it: cd into the export's "
            f"ollama folder and run `ollama create {name} -f Modelfile` (or -f Modelfile.merged).",
            code="model_not_found",
        )
    message = f"the {entry.provider} engine at {entry.endpoint} answered {status}: {detail}"
    if status >= 500 or status in (401, 403, 407):  # the engine's fault, or clawtune's key for it: not the client's
        return APIError(502, message, "upstream_error")
    try:
        inner = json.loads(detail).get("error")
    except (ValueError, AttributeError):
        inner = None
    if not isinstance(inner, dict):
        return APIError(status, message)
    param, code = inner.get("param"), inner.get("code")
    return APIError(
        status,
        message,
        str(inner.get("type") or "invalid_request_error"),
        param if isinstance(param, str) else None,
        code if isinstance(code, str) else None,
    )
