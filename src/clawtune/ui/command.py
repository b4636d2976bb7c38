"""`clawtune ui`: the dashboard on its own port, opened by a gateway's admin keys or a key made for the session."""

from __future__ import annotations

import secrets
from pathlib import Path

import uvicorn

from clawtune.loop.gateway import resolve_log
from clawtune.problems import InputError
from clawtune.serve.app import bind
from clawtune.ui.app import UISettings, loopback_url, standalone


def run_ui(
    runs: Path,
    log: Path | None,
    host: str,
    port: int,
    config: Path | None,
    admin_key: str | None,
    endpoint: str | None,
) -> None:
    """Serve the page until Ctrl-C; a key made here is shown once on the terminal, never written anywhere."""
    if not runs.is_dir():
        raise InputError(f"--runs {runs}: no such folder")
    keys = [admin_key] if admin_key else []
    log_path = resolve_log(log)
    if config is not None:
        from clawtune.serve.config import load, resolve_path

        served = load(config)
        keys += served.server.admin_keys
        if log is None:
            log_path = resolve_path(served.server.data_dir, config.parent) / "requests.sqlite"
        if served.server.port:  # port 0: the gateway's port is known only to it; --endpoint says it
            endpoint = endpoint or loopback_url(served.server.host, served.server.port)
    generated = not keys
    if generated:
        keys = [secrets.token_urlsafe(18)]  # shown once on the terminal, never written anywhere
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (--port)") from None
    bound = sock.getsockname()
    settings = UISettings(runs.resolve(), log_path.resolve(), keys, endpoint=endpoint)
    hosts = ["127.0.0.1", "localhost", "::1", "[::1]"] + ([host] if host not in ("0.0.0.0", "::") else ["*"])
    app = standalone(settings, hosts)
    url = f"http://{'[' + bound[0] + ']' if ':' in bound[0] else bound[0]}:{bound[1]}/ui/"
    print(f"clawtune ui on {url} (runs under {settings.root}, log {settings.log}); Ctrl-C stops", flush=True)
    if generated:
        print(f"admin key for this session: {keys[0]}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, server_header=False))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
