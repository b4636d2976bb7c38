"""Sticky arms for the real OpenClaw (2026.9.6): multi-turn sessions through `clawtune serve` while an experiment splits
the id the agent was registered with; every turn of a session is answered by one arm.

Two ways OpenClaw's requests name their session: registered by `clawtune openclaw register` (which opts the model into
`prompt_cache_key`, OpenClaw's session id), and registered by hand without that (the gateway reads the session id from
OpenClaw's runtime line in the first turn). Four headless agent turns, two per session (enough to see a switch):
6 min 47 s measured on the shared 2-core machine while other suites ran there (`pytest --durations=1`).
"""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml

from clawtune.cli import main
from clawtune.openclaw import json5

from ..integration.fake_openai import FakeOpenAI
from ..integration.openclaw_cli import OpenClaw, install_openclaw

pytestmark = pytest.mark.integration


def test_every_turn_of_a_real_openclaw_session_stays_on_one_arm(tmp_path, capsys):
    from clawtune.serve.app import Gateway, Server
    from clawtune.serve.config import load

    oc = OpenClaw(install_openclaw(), tmp_path / "home")
    oc.run("setup", "--baseline")
    with FakeOpenAI() as fake:
        models = {
            "models": [
                {"id": "agent-model", "provider": "openai", "model": "fake-model", "endpoint": fake.base_url},
                {"id": "agent-model-v2", "provider": "openai", "model": "fake-model", "endpoint": fake.base_url},
            ],
            "experiments": [{"id": "oc-ab", "model": "agent-model", "arms": {"agent-model": 1, "agent-model-v2": 1}}],
            "server": {"port": 0, "data_dir": str(tmp_path / "serve-data")},
        }
        (tmp_path / "models.yaml").write_text(yaml.safe_dump(models))
        with Server(Gateway(load(tmp_path / "models.yaml"))) as server:
            register = ["openclaw", "register", "--model-id", "agent-model", "--endpoint", server.url]
            register += ["--config", str(oc.state / "openclaw.json"), "--agent", "main", "--primary"]
            assert main(register) == 0, capsys.readouterr().err
            for text in ("Hello, I am Ann.", "What is two plus two?"):
                oc.turn(text, session_key="agent:main:keyed")
            # the same agent registered by hand, without the prompt-cache opt-in: no prompt_cache_key is sent
            config_file = oc.state / "openclaw.json"
            config = json5.loads(config_file.read_text())
            for provider in config["models"]["providers"].values():
                for model in provider.get("models", []):
                    model.pop("compat", None)
            config_file.write_text(json.dumps(config, indent=2))
            for text in ("Hi again, it is Bob.", "Tell me a joke."):
                oc.turn(text, session_key="agent:main:derived")
            server.gateway.log.flush()
            conn = sqlite3.connect(server.gateway.log.path)
            rows = conn.execute(
                "SELECT arm, unit, request_json FROM requests WHERE experiment = 'oc-ab' ORDER BY created"
            ).fetchall()
    keyed = [(arm, unit) for arm, unit, body in rows if "prompt_cache_key" in body]
    derived = [(arm, unit) for arm, unit, body in rows if "prompt_cache_key" not in body]
    assert len(keyed) >= 2 and len(derived) >= 2, rows
    for turns in (keyed, derived):
        assert len({arm for arm, _ in turns}) == 1, turns  # one arm for every turn
        assert len({unit for _, unit in turns}) == 1, turns  # one unit: the session
    assert not keyed[0][1].endswith(":0")  # OpenClaw's compaction count is not part of the unit
    assert derived[0][1].startswith("openclaw-")  # the session id from OpenClaw's runtime line
    assert keyed[0][1] != derived[0][1]
