"""`clawtune serve`: an OpenAI-compatible gateway for one base model and many adapters, and for remote engines.

Endpoints: `POST /v1/chat/completions` (plain and SSE streaming, tools, usage), `GET /v1/models`, `GET /health`,
`GET /metrics` (Prometheus), `POST /v1/feedback`, and `GET/POST/DELETE /admin/adapters` (with an admin key) for
loading adapters at run time from the folders the config allows; `GET /openapi.json` describes them. Every response
to a chat completion carries `X-Request-Id`, and says which model, adapter and experiment arm served it
(`X-Clawtune-*` headers and a `clawtune` object in the body).

The parts: `protocol` (the request and response models, OpenAI's rules and error shape), `gateway` (routing,
experiments, the system-prompt policy, keys, limits), `serving` (a chat completion, local or forwarded, logged once),
`upstream` (httpx to remote engines), `engine` (the batched in-process model), `log` (the request log and its
schema), `metrics` (Prometheus), `http` (the FastAPI app and uvicorn's protocol). This module runs them: uvicorn on
one event loop, with header, body and keep-alive timeouts and a bounded drain on shutdown.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from clawtune.serve.gateway import Gateway, Route, choose_arm
from clawtune.serve.http import create_app, protocol_class

__all__ = ["Gateway", "Route", "Server", "choose_arm"]


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use is an OSError here, before anything else starts."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Server:
    """The gateway behind uvicorn; `close()` drains requests in flight (at most `server.drain_s`), then stops the
    engine and flushes the log."""

    def __init__(
        self, gateway: Gateway, host: str | None = None, port: int | None = None, sock: socket.socket | None = None
    ) -> None:
        """`sock`: a socket `bind` gave before the gateway was built (`clawtune serve` claims its port before it
        loads a model, so a port in use is said at once, not after minutes of loading)."""
        self.gateway = gateway
        settings = gateway.settings
        host = host or settings.host
        self.socket = sock if sock is not None else bind(host, settings.port if port is None else port)
        gateway.bound_host = host
        self.app = create_app(gateway)  # `clawtune serve` mounts the dashboard on it (clawtune.ui sits above serve)
        self.config = uvicorn.Config(
            self.app,
            http=protocol_class(gateway),
            loop="uvloop",
            lifespan="on",
            log_level="warning",
            access_log=False,  # the request log is the record
            server_header=False,
            proxy_headers=False,  # X-Forwarded-For from any client would be believed; nothing here needs it
            timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]
            timeout_graceful_shutdown=settings.drain_s,  # type: ignore[arg-type]
            backlog=2048,
        )
        self.server = uvicorn.Server(self.config)
        self.thread: threading.Thread | None = None
        self._closed = False

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> Server:
        """Serve on a background thread (tests, the demo); returns once the server accepts connections."""
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="clawtune-http", daemon=True
        )
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the HTTP server did not start (see the log above)")
            time.sleep(0.01)
        if self.gateway.watchdog is not None:
            self.gateway.watchdog.start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until SIGINT/SIGTERM (uvicorn handles them: drain, then return)."""
        if self.gateway.watchdog is not None:
            self.gateway.watchdog.start()
        self.server.run(sockets=[self.socket])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.gateway.closing = True
        if self.gateway.watchdog is not None:
            self.gateway.watchdog.stop()
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=self.gateway.settings.drain_s + 30)
        self.socket.close()
        self.gateway.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
