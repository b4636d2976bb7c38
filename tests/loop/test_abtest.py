"""`ft ab-test` and the gateway's experiments: admin endpoints, persistence across a restart (arms still sticky), the
conversation key for clients that name no session, the seed's command against a running gateway with simulated users
and compressed durations, `status`, the fixed-horizon mode, the reports.

The gateway runs a scripted engine (the HTTP stack, routing and log are real; no model is loaded), so these are fast.
"""

from __future__ import annotations

import _thread
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from clawtune.cli import main
from clawtune.loop import abtest
from clawtune.serve.app import Server
from clawtune.serve.config import parse
from clawtune.serve.experiments import Conversations, turn_text
from clawtune.serve.gateway import Gateway

from ..serve_fakes import AdapterEngine, ScriptedEngine, config, post

ADMIN = "admin-secret"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _gateway(tmp_path: Path, **extra: Any) -> Gateway:
    server = {"admin_keys": [ADMIN], **extra.pop("server", {})}
    return Gateway(config(tmp_path, server=server, **extra), engine=ScriptedEngine())  # type: ignore[arg-type]


def _chat(url: str, model: str, messages: list[dict[str, Any]], **extra: Any) -> tuple[int, Any, dict[str, str]]:
    import urllib.request

    body = json.dumps({"model": model, "messages": messages, "max_tokens": 8, **extra}).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return reply.status, json.loads(reply.read()), {k.lower(): v for k, v in reply.headers.items()}


def _create(url: str, **body: Any) -> tuple[int, Any]:
    return post(url, "/admin/experiments", body, AUTH)


def test_admin_endpoints_create_split_and_stop(tmp_path: Path) -> None:
    with Server(_gateway(tmp_path)) as server:
        url = server.url
        # refused without the admin key, and with bad input (each a 4xx that names the field)
        assert post(url, "/admin/experiments", {"model": "finance", "arms": {"finance": 1}})[0] == 401
        assert _create(url, model="finance", arms={"finance": 1, "ghost": 1})[0] == 400
        assert _create(url, model="finance", arms={"finance": -1, "general": 1})[0] == 400
        assert _create(url, model="finance", arms={"finance": 1}, colour="red")[0] == 400
        assert _create(url, id="../x", model="finance", arms={"finance": 1})[0] == 400
        status, created = _create(url, id="fin-test", model="finance", arms={"finance": 50, "general": 50})
        assert status == 201, created
        assert created["splits"] == "finance" and created["status"] == "running"
        assert _create(url, id="fin-test2", model="finance", arms={"finance": 1, "general": 1})[0] == 409
        assert _create(url, id="fin-test", model="general", arms={"general": 1})[0] == 409

        # the requests for finance's id are now split, each answer names its arm, the log records it
        arms = {}
        for n in range(40):
            status, body, headers = _chat(url, "finance", [{"role": "user", "content": f"question {n}"}])
            assert headers["x-clawtune-experiment"] == "fin-test"
            assert body["model"] == "finance"  # the agent sees the id it asked for
            arms[n] = headers["x-clawtune-arm"]
        assert set(arms.values()) == {"finance", "general"}
        # the same conversation, a turn later, stays on its arm
        for n in range(10):
            messages = [
                {"role": "user", "content": f"question {n}"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "and then?"},
            ]
            assert _chat(url, "finance", messages)[2]["x-clawtune-arm"] == arms[n]
        server.gateway.log.flush()
        conn = sqlite3.connect(server.gateway.log.path)
        logged = conn.execute("SELECT arm, unit, experiment FROM requests WHERE requested_model = 'finance'").fetchall()
        assert len(logged) == 50 and all(a and u and e == "fin-test" for a, u, e in logged)

        status, units = post(url, "/admin/experiments/fin-test/units", None, AUTH, method="GET")
        assert status == 200 and sum(u["requests"] for u in units["units"]) == 50
        assert len(units["units"]) == 40  # ten conversations had two turns: 40 units
        status, _refresh = post(url, "/admin/experiments/fin-test/refreshes", {"figures": {"n": 1}}, AUTH)
        assert status == 201
        assert post(url, "/admin/experiments/fin-test/refreshes", {"figures": 3}, AUTH)[0] == 400
        assert post(url, "/admin/experiments/nope", None, AUTH, method="GET")[0] == 404

        status, stopped = post(url, "/admin/experiments/fin-test/stop", {"result": {"verdict": "B better"}}, AUTH)
        assert status == 200 and stopped["status"] == "stopped"
        assert post(url, "/admin/experiments/fin-test/stop", None, AUTH)[0] == 200  # safe twice
        headers = _chat(url, "finance", [{"role": "user", "content": "question 1"}])[2]
        assert "x-clawtune-arm" not in headers and headers["x-clawtune-model"] == "finance"
        actions = [a for (a,) in conn.execute("SELECT action FROM admin_actions")]
        assert actions.count("experiment-create") >= 2 and "experiment-stop" in actions


@pytest.mark.slow
def test_experiments_survive_a_restart_with_sticky_arms(tmp_path: Path) -> None:
    models_yaml = {"experiments": [{"id": "cfg-ab", "model": "general", "arms": {"general": 1, "finance-v2": 1}}]}
    conversations = [[{"role": "user", "content": f"conversation {n}"}] for n in range(30)]
    with Server(_gateway(tmp_path, **models_yaml)) as server:
        assert _create(server.url, id="adm-ab", model="finance", arms={"finance": 1, "general": 1})[0] == 201
        before = {
            model: [_chat(server.url, model, c)[2]["x-clawtune-arm"] for c in conversations]
            for model in ("general", "finance")
        }
        post(server.url, "/admin/experiments/adm-ab/refreshes", {"figures": {"at": "first"}}, AUTH)
    with Server(_gateway(tmp_path, **models_yaml)) as server:
        status, listed = post(server.url, "/admin/experiments", None, AUTH, method="GET")
        assert status == 200
        assert {e["id"]: (e["status"], e["source"]) for e in listed["experiments"]} == {
            "cfg-ab": ("running", "config"),
            "adm-ab": ("running", "admin"),
        }
        after = {
            model: [_chat(server.url, model, c)[2]["x-clawtune-arm"] for c in conversations]
            for model in ("general", "finance")
        }
        assert after == before and len(set(before["general"])) == 2
        _status, refreshes = post(server.url, "/admin/experiments/adm-ab/refreshes", None, AUTH, method="GET")
        assert [r["figures"] for r in refreshes["refreshes"]] == [{"at": "first"}]


def test_the_conversation_key_survives_timestamps_and_compaction() -> None:
    assert turn_text("[Wed 2026-12-02 14:50 UTC] Hello there") == "Hello there"
    assert turn_text([{"type": "text", "text": "[Mon 2026-01-05 09:03 GMT+8]  Hi\n you"}]) == "Hi you"
    keys = Conversations()
    first = keys.key([{"role": "user", "content": "[Wed 2026-12-02 14:50 UTC] Plan my trip"}])
    history = [
        {"role": "user", "content": "Plan my trip"},  # the history as OpenClaw sends it: without the prefix
        {"role": "assistant", "content": "Where to?"},
        {"role": "user", "content": "[Wed 2026-12-02 14:51 UTC] Lisbon"},
    ]
    assert keys.key(history) == first
    compacted = [
        {"role": "user", "content": "<summary>The user plans a trip to Lisbon.</summary>"},
        {"role": "user", "content": "Lisbon"},
        {"role": "assistant", "content": "When?"},
        {"role": "user", "content": "[Wed 2026-12-02 15:30 UTC] In May"},
    ]
    assert keys.key(compacted) == first
    assert keys.key([{"role": "user", "content": "Another conversation"}]) != first
    # OpenClaw's runtime line names the session: that is the key while the first turn is in the history
    opening = "[Wed 2026-12-02 14:38 UTC] Hi\n\nRuntime: agent=main | session=agent:main:x | sessionId=abcd-1234-ef | x"
    assert keys.key([{"role": "user", "content": opening}]) == "openclaw-abcd-1234-ef"
    later = [
        {"role": "user", "content": opening},
        {"role": "user", "content": "[Wed 2026-12-02 14:40 UTC] Plan my trip"},
    ]
    assert keys.key(later) == "openclaw-abcd-1234-ef"  # a later turn that another conversation also had
    assert keys.key([{"role": "system", "content": "only a system prompt"}]) is None


def test_prompt_cache_key_and_session_header_name_the_unit(tmp_path: Path) -> None:
    with Server(_gateway(tmp_path)) as server:
        _create(server.url, id="keyed", model="finance", arms={"finance": 1, "general": 1})
        seen = set()
        for n in range(12):  # different conversations, one prompt_cache_key: one arm
            seen.add(
                _chat(server.url, "finance", [{"role": "user", "content": f"q{n}"}], prompt_cache_key="s-1")[2][
                    "x-clawtune-arm"
                ]
            )
        assert len(seen) == 1
        # OpenClaw's key is "<session id>:<compactions>": a compaction does not move the session to another arm
        for boundary in range(3):
            key = f"b971d74f-64d1-475d-87ad-f209b577fd63:{boundary}"
            _chat(server.url, "finance", [{"role": "user", "content": "q"}], prompt_cache_key=key)
        server.gateway.log.flush()
        conn = sqlite3.connect(server.gateway.log.path)
        # a user id is personal data: the unit is its hash, and the same user stays on one arm
        arms = {_chat(server.url, "finance", [{"role": "user", "content": f"u{n}"}], user="ann@example.com")[2][
            "x-clawtune-arm"] for n in range(6)}  # fmt: skip
        assert len(arms) == 1
        server.gateway.log.flush()
        units = {u for (u,) in conn.execute("SELECT unit FROM requests WHERE experiment = 'keyed'")}
        assert len(units) == 3 and {"s-1", "b971d74f-64d1-475d-87ad-f209b577fd63"} < units
        assert not any("example.com" in u for u in units)


def _seed_run(tmp_path: Path, rates: dict[str, float], extra: list[str], sessions_turns: int = 2) -> tuple[int, Any]:
    with Server(_gateway(tmp_path)) as server:
        with abtest.SimulatedUsers(
            server.url,
            "finance",
            abtest.coin_rater(rates, seed=3),
            [{"messages": [{"role": "user", "content": "How is revenue?"}]}],
            turns=sessions_turns,
            workers=4,
            seed=1,
        ) as users:
            args = ["ft", "ab-test", "--model-a", "finance", "--model-b", "finance-v2", "--traffic-split", "50:50"]
            args += ["--metrics", "user_satisfaction,accuracy,latency", "--endpoint", server.url, "--admin-key", ADMIN]
            args += ["--refresh", "0.5", "--output", str(tmp_path / "report"), "--id", "seed-ab", *extra]
            code = main(args)
        assert not users.errors, users.errors[:3]
        # a session that began before the experiment or ended after it has turns on no arm: the others are on one
        sticky = [[a for a in arms if a] for arms in users.arms_seen.values()]
        sticky = [arms for arms in sticky if len(arms) > 1]
        assert sticky and all(len(set(a)) == 1 for a in sticky), "a simulated session switched arms"
        _status, experiment = post(server.url, "/admin/experiments/seed-ab", None, AUTH, method="GET")
        assert experiment["status"] == "stopped"
        return code, experiment


class TwoModels(AdapterEngine):
    """The scripted engine, but the fine-tune (a model with an adapter) calls tools with arguments that fit their
    schema, and the base model does not: B is more accurate."""

    def submit(self, request: Any) -> None:
        if request.adapter is None:
            super().submit(request)  # {"q": "x<y"}: not the integer the schema asks for
            return
        self.record(request)
        request.events.put(("text", 'Let me look.<tool_call>\n{"name": "lookup", "arguments": {"q": 1}}\n</tool_call>'))
        request.events.put(("done", "stop", 9))


@pytest.mark.slow
def test_the_seed_command_as_written(tmp_path: Path, monkeypatch, capsys) -> None:
    """`clawtune ft ab-test --model-a "llama-3.1-8b-base" --model-b "miaoquai-finance-agent" --traffic-split "50:50"
    --duration "2h" --metrics "accuracy,latency,user_satisfaction"`, word for word, against a running gateway (its
    address and admin key from the environment); it ends early, decided on accuracy (the first metric)."""
    (tmp_path / "lora").mkdir()
    models = [
        {"id": "llama-3.1-8b-base", "provider": "clawtune", "model": "scripted"},
        {
            "id": "miaoquai-finance-agent",
            "provider": "clawtune",
            "model": "scripted",
            "adapters": {"finance": {"path": str(tmp_path / "lora")}},
        },
    ]
    settings = {"port": 0, "data_dir": str(tmp_path / "data"), "admin_keys": [ADMIN]}
    gateway = Gateway(parse({"models": models, "server": settings}, str(tmp_path / "models.yaml")), engine=TwoModels())
    schema = {"type": "object", "properties": {"q": {"type": "integer"}}, "required": ["q"]}
    script = {
        "messages": [{"role": "user", "content": "call lookup"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": schema}}],
    }
    monkeypatch.chdir(tmp_path)
    with Server(gateway) as server:
        monkeypatch.setenv("CLAWTUNE_ENDPOINT", server.url + "/v1")
        monkeypatch.setenv("CLAWTUNE_ADMIN_KEY", ADMIN)
        with abtest.SimulatedUsers(server.url, "llama-3.1-8b-base", lambda *a: None, [script], turns=1, seed=2):
            started = time.monotonic()
            # should it never decide, the test must not wait two hours: an interrupt stops it (and it fails below)
            watchdog = threading.Timer(300, _thread.interrupt_main)
            watchdog.start()
            code = main(
                ["ft", "ab-test", "--model-a", "llama-3.1-8b-base", "--model-b", "miaoquai-finance-agent",
                 "--traffic-split", "50:50", "--duration", "2h", "--metrics", "accuracy,latency,user_satisfaction"]
            )  # fmt: skip
            took = time.monotonic() - started
            watchdog.cancel()
    out = capsys.readouterr().out
    assert code == 0, out
    assert took < 300  # not the two hours: decided
    reports = list((tmp_path / "ab-tests").glob("*/ab-test-report.json"))
    assert len(reports) == 1
    result = json.loads(reports[0].read_text())["result"]
    assert result["primary"] == "accuracy" and result["verdict"] == "B better"
    assert result["arms"]["A"]["accuracy"] == 0 and result["arms"]["B"]["accuracy"] == 1
    assert "B better" in out


def test_the_seed_command_calls_the_better_arm_and_writes_reports(tmp_path: Path, capsys) -> None:
    code, experiment = _seed_run(tmp_path, {"finance": 0.25, "finance-v2": 0.9}, ["--duration", "40s"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert experiment["result"]["verdict"] == "B better", experiment["result"]["reason"]
    assert experiment["result"]["ended"] == "decided"  # before the 40 s were over
    assert "verdict: B better" in out
    report = json.loads((tmp_path / "report" / "ab-test-report.json").read_text())
    assert report["result"]["verdict"] == "B better"
    assert len(report["refreshes"]) >= 1 and "tests" in report["refreshes"][-1]["figures"]
    arms = report["result"]["arms"]
    assert arms["A"]["rated"] > 0 and arms["B"]["rated"] > 0
    assert arms["B"]["user_satisfaction"] > arms["A"]["user_satisfaction"]
    assert arms["A"]["latency_p50_ms"] is not None
    page = (tmp_path / "report" / "ab-test-report.html").read_text()
    assert "B better" in page and "<script" not in page and "http" not in page.split("<body>")[1]
    assert "| user satisfaction (primary) |" in (tmp_path / "report" / "ab-test-report.md").read_text()


@pytest.mark.slow
def test_equal_arms_run_to_the_duration_without_a_winner(tmp_path: Path, capsys) -> None:
    code, experiment = _seed_run(tmp_path, {"finance": 0.6, "finance-v2": 0.6}, ["--duration", "6s"])
    assert code == 0
    result = experiment["result"]
    assert result["ended"] == "duration"
    assert result["verdict"] in ("not enough data", "equivalent within margin")
    if result["verdict"] == "not enough data":
        assert result["more_units_needed"] > 0 and "more sessions" in result["reason"]


@pytest.mark.slow
def test_fixed_horizon_gives_no_verdict_before_its_size(tmp_path: Path, capsys) -> None:
    args = ["--duration", "4s", "--min-effect", "0.05", "--power", "0.8"]
    code, experiment = _seed_run(tmp_path, {"finance": 0.2, "finance-v2": 0.9}, args)
    assert code == 0
    result = experiment["result"]
    planned = abtest.fixed_sample_size(abtest.Settings("a", "b", min_effect=0.05), None)
    assert result["planned_units"] == planned > 1000
    assert result["verdict"] == "not enough data" and "no verdict before" in result["reason"]


def test_status_lists_and_shows_experiments(tmp_path: Path, capsys) -> None:
    with Server(_gateway(tmp_path)) as server:
        _create(server.url, id="st-ab", model="finance", arms={"finance": 1, "finance-v2": 1})
        for n in range(6):
            _, body, _ = _chat(server.url, "finance", [{"role": "user", "content": f"x{n}"}])
            post(server.url, "/v1/feedback", {"request_id": body["id"], "rating": "positive"})
        base = ["--endpoint", server.url, "--admin-key", ADMIN]
        assert main(["ft", "ab-test", "status", *base]) == 0
        out = capsys.readouterr().out
        assert "st-ab" in out and "running" in out
        assert main(["ft", "ab-test", "status", "st-ab", *base]) == 0
        out = capsys.readouterr().out
        assert "user satisfaction" in out and "verdict" in out
        assert main(["ft", "ab-test", "status", "nope", *base]) == 2
        assert "no experiment named 'nope'" in capsys.readouterr().err
        assert main(["ft", "ab-test", "status", "--endpoint", server.url, "--admin-key", "wrong"]) == 2
        assert "401" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--traffic-split", "50-50"], "--traffic-split"),
        (["--duration", "two hours"], "--duration"),
        (["--metrics", "accuracy,vibes"], "unknown metric 'vibes'"),
        (["--primary", "vibes"], "--primary"),
    ],
)
def test_bad_options_say_which(args: list[str], message: str, capsys) -> None:
    code = main(["ft", "ab-test", "--model-a", "a", "--model-b", "b", "--endpoint", "http://127.0.0.1:9", *args])
    assert code == 2 and message in capsys.readouterr().err


def test_an_unreachable_gateway_is_a_clear_error(capsys) -> None:
    code = main(["ft", "ab-test", "--model-a", "a", "--model-b", "b", "--endpoint", "http://127.0.0.1:9"])
    assert code == 2 and "cannot reach the gateway" in capsys.readouterr().err


def test_durations_and_splits() -> None:
    assert abtest.parse_duration("2h") == 7200 and abtest.parse_duration("1h30m") == 5400
    assert abtest.parse_duration("20s") == 20
    assert abtest.parse_split("90:10") == (90, 10)
    with pytest.raises(abtest.ABTestError):
        abtest.parse_split("0:100")


def test_decide_on_units() -> None:
    """The verdicts, on units built by hand: B better, A better for a lower-is-better metric, equivalence."""
    settings = abtest.Settings("a", "b", metrics=["user_satisfaction", "latency"], primary="user_satisfaction")

    def unit(arm: str, positive: int, negative: int, latency: float) -> dict[str, Any]:
        return {
            "arm": arm, "propensity_b": 0.5, "requests": 1, "errors": 0, "latency_ms": [latency], "prompt_tokens": 1,
            "completion_tokens": 1, "tool_calls": 0, "tool_calls_invalid": 0, "graded": 0, "correct": 0,
            "positive": positive, "negative": negative,
        }  # fmt: skip

    better_b = [unit("A" if i % 2 else "B", int(i % 2 == 0 or i % 6 == 1), int(i % 2 == 1 and i % 6 != 1), 100)
                for i in range(400)]  # fmt: skip
    assert abtest.decide(better_b, settings)["verdict"] == "B better"
    slower_b = [unit("A" if i % 2 else "B", 1, 0, 100 + (i % 2 == 0) * 50 + i % 7) for i in range(400)]
    latency = abtest.Settings("a", "b", metrics=["latency"], primary="latency")
    assert abtest.decide(slower_b, latency)["verdict"] == "A better"
    same = [unit("A" if i % 2 else "B", 1, 0, 100) for i in range(400)]
    assert abtest.decide(same, settings)["verdict"] == "not enough data"  # [-3.5, +3.8] pts: wider than 2 pts
    wide = abtest.Settings("a", "b", metrics=["user_satisfaction"], primary="user_satisfaction", margin=0.05)
    assert abtest.decide(same, wide)["verdict"] == "equivalent within margin"
    decided = abtest.decide([unit("A" if i % 2 else "B", i % 3 == 0, i % 3 != 0, 100) for i in range(6)], settings)
    assert decided["verdict"] == "not enough data" and decided["more_units_needed"] > 0


def test_forwarded_answers_are_graded_for_accuracy(tmp_path: Path) -> None:
    """A remote engine's tool calls are checked as the local ones are, so `accuracy` grades forwarded arms too."""
    from clawtune.serve.config import parse

    from ..integration.fake_openai import FakeOpenAI

    read = {"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}
    schema = {"type": "object", "properties": {"path": {"type": "integer"}}, "required": ["path"]}
    strict_read = {"type": "function", "function": {"name": "read", "parameters": schema}}
    with FakeOpenAI() as fake:
        models = [{"id": m, "provider": "openai", "model": "fake-model", "endpoint": fake.base_url} for m in ("a", "b")]
        settings = {"port": 0, "data_dir": str(tmp_path / "data"), "admin_keys": [ADMIN]}
        gateway = Gateway(parse({"models": models, "server": settings}, str(tmp_path / "models.yaml")))
        with Server(gateway) as server:
            _create(server.url, id="fwd", model="a", arms={"a": 1, "b": 1})
            ask = [{"role": "user", "content": "read notes.txt"}]
            _chat(server.url, "a", ask, tools=[read])  # a call to an offered tool, JSON arguments: right
            _chat(server.url, "a", ask, tools=[read], tool_choice="none")  # a call to a tool not on offer: wrong
            _chat(server.url, "a", ask, tools=[strict_read])  # arguments the tool's schema refuses: wrong
            _chat(server.url, "a", [{"role": "user", "content": "hello"}])  # no call: not graded
            status, body = post(server.url, "/admin/experiments/fwd/units", None, AUTH, method="GET")
    assert status == 200
    units = body["units"]
    assert sum(u["graded"] for u in units) == 3 and sum(u["correct"] for u in units) == 1
    assert sum(u["tool_calls_invalid"] for u in units) == 2


def test_local_answers_are_graded_against_the_tools_schemas(tmp_path: Path) -> None:
    """The in-process engine's tool calls (the scripted one calls with {"q": "x<y"}) against each offered schema."""
    loose = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    schema = {"type": "object", "properties": {"q": {"type": "integer"}}}
    strict = {"type": "function", "function": {"name": "lookup", "parameters": schema}}
    with Server(_gateway(tmp_path)) as server:
        _create(server.url, id="local", model="finance", arms={"finance": 1, "general": 1})
        _chat(server.url, "finance", [{"role": "user", "content": "call lookup"}], tools=[loose])
        _chat(server.url, "finance", [{"role": "user", "content": "call lookup"}], tools=[strict])
        status, body = post(server.url, "/admin/experiments/local/units", None, AUTH, method="GET")
    assert status == 200
    units = body["units"]
    assert sum(u["graded"] for u in units) == 2 and sum(u["correct"] for u in units) == 1


def test_offline_mode_compares_both_models_on_the_same_turns(tmp_path: Path, capsys) -> None:
    """--test-set: the two models answer the same held-out turns through the gateway, paired (McNemar, bootstrap)."""
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x<y"}'}}
    rows = []
    for n in range(6):
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": "call lookup" if n % 2 else f"echo {n}"},
                    {"role": "assistant", "tool_calls": [call]}
                    if n % 2
                    else {"role": "assistant", "content": f"You said: echo {n}"},
                ],
                "tools": tools,
            }
        )
    test_set = tmp_path / "test.jsonl"
    test_set.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with Server(_gateway(tmp_path)) as server:
        args = ["ft", "ab-test", "--model-a", "general", "--model-b", "finance", "--test-set", str(test_set)]
        code = main([*args, "--endpoint", server.url, "--output", str(tmp_path / "offline")])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "offline" / "eval-report.json").read_text())
    assert report["items"] == 6
    assert "general" in report["baseline"]["name"] and "finance" in report["fine_tuned"]["name"]
    assert report["baseline"]["accuracy"]["value"] == report["fine_tuned"]["accuracy"]["value"] > 0.5
    comparison = report["comparison"]
    assert comparison["accuracy_difference"]["method"].startswith("paired bootstrap")
    assert comparison["accuracy_difference"]["value"] == 0  # the same scripted model behind both ids
    assert "offline verdict: no significant difference" in out


def test_models_yaml_experiment_on_an_unknown_model_is_named(tmp_path: Path) -> None:
    from clawtune.serve.config import ServeConfigError

    with pytest.raises(ServeConfigError) as caught:
        config(tmp_path, experiments=[{"id": "x", "model": "ghost", "arms": {"finance": 1, "general": 1}}])
    assert "experiments[0].model: no model with id 'ghost'" in str(caught.value)
    with pytest.raises(ServeConfigError) as caught:
        config(
            tmp_path,
            experiments=[
                {"id": "x", "model": "finance", "arms": {"finance": 1, "general": 1}},
                {"id": "y", "model": "finance", "arms": {"finance": 1, "finance-v2": 1}},
            ],
        )
    assert "experiments[1].model: another experiment already splits 'finance'" in str(caught.value)


@pytest.mark.slow
def test_a_running_test_rides_through_a_gateway_restart(tmp_path: Path, capsys) -> None:
    """The experiment is in the gateway's database: the command waits while the gateway restarts, then carries on,
    and the sessions keep their arms across the restart."""
    from clawtune.serve.app import bind

    first = Server(_gateway(tmp_path)).start()
    host, port = first.socket.getsockname()[:2]
    url = first.url
    outcome: dict[str, Any] = {}

    def run() -> None:
        args = [
            "ft",
            "ab-test",
            "--model-a",
            "finance",
            "--model-b",
            "general",
            "--duration",
            "10s",
            "--refresh",
            "0.5",
        ]
        args += ["--endpoint", url, "--admin-key", ADMIN, "--output", str(tmp_path / "report"), "--id", "restart-ab"]
        outcome["code"] = main(args)

    conversations = [[{"role": "user", "content": f"restart {n}"}] for n in range(12)]
    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while "restart-ab" not in first.gateway.lab.all and time.monotonic() < deadline:
            time.sleep(0.05)
        before = [_chat(url, "finance", c)[2]["x-clawtune-arm"] for c in conversations]
    finally:
        first.close()
    time.sleep(1.5)  # the command finds nobody there, and says so
    second = Server(_gateway(tmp_path), sock=bind(host, port)).start()
    try:
        after = [_chat(url, "finance", c)[2]["x-clawtune-arm"] for c in conversations]
        thread.join(timeout=60)
    finally:
        second.close()
    assert outcome.get("code") == 0, capsys.readouterr()
    assert after == before
    out = capsys.readouterr().out
    assert "cannot reach the gateway" in out and "retrying" in out
    report = json.loads((tmp_path / "report" / "ab-test-report.json").read_text())
    assert sum(report["result"]["arms"][arm]["requests"] for arm in "AB") == 24
