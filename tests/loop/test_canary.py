"""Gray release (`ft ab-test --canary ... --promote-if-better`): guardrails that roll B back, the ramp's steps, the
promotion (the gateway, its models.yaml, OpenClaw's config), `rollback`, and a gateway restarted mid-ramp.

Simulated users talk to the real gateway app (HTTP stack, routing, log, admin API) in front of a scripted engine, with
durations compressed to seconds; the command under test is `clawtune ft ab-test` itself, in process.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from clawtune.cli import main
from clawtune.loop import abtest, canary
from clawtune.openclaw import json5
from clawtune.serve.app import Server
from clawtune.serve.config import load
from clawtune.serve.gateway import Gateway

from ..serve_fakes import ScriptedEngine, config, post

ADMIN = "admin-secret"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
SCRIPT = [{"messages": [{"role": "user", "content": "How is revenue?"}]}]


class FlakyB(ScriptedEngine):
    """The scripted engine, where B (finance-v2: the gateway gives it the system prompt "Short.") fails on the
    sessions whose opening turn's crc32 is 0 mod `every`: with `every=20`, B's error rate is 5 points above A's
    (A never fails). Deterministic, so a run is the same every time."""

    def __init__(self, every: int = 0) -> None:
        super().__init__()
        self.every = every

    def submit(self, request: Any) -> None:
        messages = self.messages_of(request)
        is_b = any(m.get("role") == "system" and m.get("content") == "Short." for m in messages)
        opening = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
        if is_b and self.every and zlib.crc32(opening.encode()) % self.every == 0:
            request.events.put(("error", "B failed"))
            return
        super().submit(request)


def _get(url: str, path: str) -> Any:
    status, body = post(url, path, None, AUTH, method="GET")
    assert status == 200, body
    return body


def _chat(url: str, model: str, text: str) -> tuple[dict[str, Any], dict[str, str]]:
    import urllib.request

    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8}).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read()), {k.lower(): v for k, v in reply.headers.items()}


def _args(url: str, experiment_id: str, tmp_path: Path, *extra: str) -> list[str]:
    args = ["ft", "ab-test", "--model-a", "finance", "--model-b", "finance-v2", "--metrics", "user_satisfaction"]
    args += ["--endpoint", url, "--admin-key", ADMIN, "--refresh", "1", "--id", experiment_id]
    return [*args, "--output", str(tmp_path / "report"), *extra]


@pytest.mark.slow
def test_a_guardrail_breach_rolls_b_back_before_the_second_step(tmp_path: Path, capsys) -> None:
    """B's error rate 5 points above A's, at a 10% canary: the error-rate guardrail stops B while the ramp is still
    on its first step (the step needs 300 of B's sessions; the breach comes well before)."""
    gateway = Gateway(config(tmp_path, server={"admin_keys": [ADMIN]}), engine=FlakyB(every=20))  # type: ignore[arg-type]
    with Server(gateway) as server:
        # no ratings (half the requests): the primary metric has nothing to say, the guardrail decides
        with abtest.SimulatedUsers(server.url, "finance", lambda *a: None, SCRIPT, turns=1, workers=6, seed=4) as users:
            args = _args(server.url, "guarded", tmp_path, "--canary", "10,50,100", "--promote-if-better")
            code = main([*args, "--step-sessions", "300", "--guardrails", "error_rate=0", "--duration", "120s"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert users.sessions > 100 and any("500" in e for e in users.errors)  # B did fail, A did not stop the users
        experiment = _get(server.url, "/admin/experiments/guarded")
        assert experiment["status"] == "rolled_back"
        events = _get(server.url, "/admin/experiments/guarded/events")["events"]
        assert [e["kind"] for e in events] == ["start", "rollback"]  # no step was taken
        assert events[0]["arms"] == {"finance": 90, "finance-v2": 10}
        rollback = events[-1]
        assert rollback["figures"]["cause"] == "guardrail"
        breach = rollback["figures"]["guardrail"]
        assert breach["metric"] == "error_rate" and breach["breached"] and breach["test"]["lower"] > 0
        assert breach["test"]["mean_a"] == 0 and 0.02 < breach["test"]["mean_b"] < 0.1
        assert "guardrail error_rate" in rollback["reason"] and "worse by more than" in rollback["reason"]
        assert experiment["result"]["ended"] == "guardrail"
        # every request for finance goes to A again, at once
        for n in range(20):
            headers = _chat(server.url, "finance", f"after the rollback {n}")[1]
            assert headers["x-clawtune-model"] == "finance" and "x-clawtune-arm" not in headers
        # `status` shows the breach and the decisions
        assert main(["ft", "ab-test", "status", "guarded", "--endpoint", server.url, "--admin-key", ADMIN]) == 0
        shown = capsys.readouterr().out
        assert "rolled_back" in shown and "breached" in shown and "rollback" in shown and "guardrail" in shown
    report = json.loads((tmp_path / "report" / "ab-test-report.json").read_text())
    assert [e["kind"] for e in report["events"]] == ["start", "rollback"]
    markdown = (tmp_path / "report" / "ab-test-report.md").read_text()
    assert "## Decisions" in markdown and "| rollback |" in markdown and "**breached**" in markdown
    assert "canary 10% -> 50% -> 100%, at step 1 (B 10%)" in markdown
    assert 'id="decisions"' in (tmp_path / "report" / "ab-test-report.html").read_text()


MODELS_YAML = """\
# the user's own notes: kept by a promotion
models:
  - id: finance          # the agent asks for this id
    provider: clawtune
    model: scripted
  - id: finance-v2
    provider: clawtune
    model: scripted
    system_prompt: replace
    system_prompt_text: Short.
server:
  port: 0
  data_dir: data        # relative to this file
  admin_keys: [admin-secret]
"""


@pytest.mark.slow
def test_a_better_b_ramps_to_100_and_the_agents_id_serves_it_until_rolled_back(tmp_path: Path, capsys) -> None:
    """B rated better: the canary steps 10% -> 50%, then promotes; requests for the agent's id are answered by B,
    models.yaml says so (comments kept, a backup beside it), OpenClaw's primary model is B; after a restart too.
    `ft ab-test rollback` undoes all three."""
    models = tmp_path / "models.yaml"
    models.write_text(MODELS_YAML)
    openclaw = tmp_path / "openclaw.json"
    openclaw.write_text('{\n  // my agent\n  agents: { defaults: { model: "clawtune/finance" } },\n}\n')
    with Server(Gateway(load(models), engine=FlakyB())) as server:  # type: ignore[arg-type]
        rater = abtest.coin_rater({"finance": 0.2, "finance-v2": 0.95}, seed=2)
        with abtest.SimulatedUsers(server.url, "finance", rater, SCRIPT, turns=1, workers=6, seed=5):
            args = _args(server.url, "ramp", tmp_path, "--canary", "10,50,100", "--promote-if-better")
            args += ["--step-sessions", "20", "--duration", "60s", "--register", "--openclaw-config", str(openclaw)]
            code = main(args)
        out = capsys.readouterr().out
        assert code == 0, out
        said = " ".join(out.split())  # the console wraps at 80 columns
        assert "canary step 1 of 3 (B 10%)" in said and "B takes 50%" in said and "promoted:" in said
        events = _get(server.url, "/admin/experiments/ramp/events")["events"]
        assert [e["kind"] for e in events] == ["start", "step", "promote"], [e["reason"] for e in events]
        assert [e["arms"] for e in events] == [
            {"finance": 90, "finance-v2": 10},
            {"finance": 50, "finance-v2": 50},
            {"finance-v2": 100},
        ]
        assert "step 1 (10%) passed" in events[1]["reason"] and events[1]["figures"]["sessions_b"] >= 20
        assert events[2]["figures"]["primary"]["verdict"] == "B better"
        experiment = _get(server.url, "/admin/experiments/ramp")
        assert experiment["status"] == "promoted" and experiment["result"]["verdict"] == "B better"
        for n in range(10):
            body, headers = _chat(server.url, "finance", f"after the promotion {n}")
            assert headers["x-clawtune-arm"] == "finance-v2" and body["model"] == "finance"
        text = models.read_text()
        assert "# the user's own notes: kept by a promotion" in text and "# the agent asks for this id" in text
        assert "promoted by `clawtune ft ab-test`" in text
        assert load(models).experiments[0].model_dump() == {
            "id": "ramp",
            "arms": {"finance-v2": 100},
            "sticky": "session",
            "model": "finance",
        }
        assert [p.read_text() for p in tmp_path.glob("models.yaml.clawtune-*.bak")] == [MODELS_YAML]
        primary = json5.loads(openclaw.read_text())["agents"]["defaults"]["model"]
        assert primary == {"primary": "clawtune/finance-v2", "fallbacks": ["clawtune/finance"]}
        assert "// my agent" in openclaw.read_text()
    # a restart: the agent's id still serves B (the database and models.yaml agree)
    with Server(Gateway(load(models), engine=FlakyB())) as server:  # type: ignore[arg-type]
        assert _chat(server.url, "finance", "after a restart")[1]["x-clawtune-arm"] == "finance-v2"
        base = ["--endpoint", server.url, "--admin-key", ADMIN]
        assert main(["ft", "ab-test", "status", "ramp", *base]) == 0
        shown = capsys.readouterr().out
        assert "promoted" in shown and "step" in shown and "promote" in shown
        assert main(["ft", "ab-test", "rollback", "ramp", *base]) == 0
        headers = _chat(server.url, "finance", "after the rollback")[1]
        assert headers["x-clawtune-model"] == "finance" and "x-clawtune-arm" not in headers
        assert main(["ft", "ab-test", "rollback", "ramp", *base]) == 0  # safe twice
        events = _get(server.url, "/admin/experiments/ramp/events")["events"]
        assert [e["kind"] for e in events] == ["start", "step", "promote", "rollback"]
        assert events[-1]["figures"]["cause"] == "manual"
    assert MODELS_YAML.replace("\n", "") in models.read_text().replace("\n", "")  # the file as the user wrote it
    assert "ramp" not in models.read_text()
    primary = json5.loads(openclaw.read_text())["agents"]["defaults"]["model"]
    assert primary["primary"] == "clawtune/finance"
    with Server(Gateway(load(models), engine=FlakyB())) as server:  # type: ignore[arg-type]
        headers = _chat(server.url, "finance", "after the rollback and a restart")[1]
        assert headers["x-clawtune-model"] == "finance" and "x-clawtune-arm" not in headers


@pytest.mark.slow
def test_a_gateway_restart_mid_ramp_resumes_where_it_was(tmp_path: Path, capsys) -> None:
    """The gateway is stopped and started again while the canary is at its second step: it comes back at that step
    (50%, not the first), the command waits for it, and the ramp carries on to the promotion."""
    settings = config(tmp_path, server={"admin_keys": [ADMIN]})
    first = Server(Gateway(settings, engine=FlakyB())).start()  # type: ignore[arg-type]
    url = first.url
    port = int(url.rsplit(":", 1)[1])
    codes: list[int] = []
    args = _args(url, "restart", tmp_path, "--canary", "10,50,100", "--promote-if-better", "--duration", "90s")
    args += ["--step-sessions", "20"]
    rater = abtest.coin_rater({"finance": 0.2, "finance-v2": 0.95}, seed=3)
    with abtest.SimulatedUsers(url, "finance", rater, SCRIPT, turns=1, workers=4, seed=6) as users:
        driver = threading.Thread(target=lambda: codes.append(main(args)), daemon=True)
        driver.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, events = post(url, "/admin/experiments/restart/events", None, AUTH, method="GET")
            if status == 200 and [e["kind"] for e in events["events"]] == ["start", "step"]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the canary never reached its second step")
        first.close()
        time.sleep(1.0)  # the command finds no gateway for a while
        second = Server(Gateway(config(tmp_path, server={"admin_keys": [ADMIN]}), engine=FlakyB()), port=port)  # type: ignore[arg-type]
        with second:
            experiment = _get(url, "/admin/experiments/restart")
            assert experiment["canary"]["step"] >= 1 and experiment["status"] in ("running", "promoted")
            driver.join(timeout=90)
            assert not driver.is_alive() and codes == [0]
            events = _get(url, "/admin/experiments/restart/events")["events"]
            assert [e["kind"] for e in events] == ["start", "step", "promote"]
            assert _chat(url, "finance", "after the promotion")[1]["x-clawtune-arm"] == "finance-v2"
    assert users.sessions > 0
    out = capsys.readouterr().out
    assert "cannot reach the gateway" in out and "retrying" in out


def test_the_admin_api_refuses_a_wrong_step_and_is_safe_to_call_twice(tmp_path: Path) -> None:
    with Server(Gateway(config(tmp_path, server={"admin_keys": [ADMIN]}), engine=FlakyB())) as server:  # type: ignore[arg-type]
        url = server.url
        body = {"id": "c", "model": "finance", "arms": {"finance": 1, "finance-v2": 1}}
        assert post(url, "/admin/experiments", {**body, "canary": {"steps": [50, 10]}}, AUTH)[0] == 400
        assert post(url, "/admin/experiments", {**body, "canary": {"steps": [100]}}, AUTH)[0] == 400
        assert post(url, "/admin/experiments", {**body, "canary": {"steps": [0, 10]}}, AUTH)[0] == 400
        assert post(url, "/admin/experiments", {**body, "canary": [10]}, AUTH)[0] == 400
        three = {**body, "arms": {"finance": 1, "finance-v2": 1, "general": 1}, "canary": {"steps": [10]}}
        assert post(url, "/admin/experiments", three, AUTH)[0] == 400
        status, created = post(url, "/admin/experiments", {**body, "canary": {"steps": [10, 50, 100]}}, AUTH)
        assert status == 201 and created["arms"] == {"finance": 90, "finance-v2": 10}
        assert post(url, "/admin/experiments/c/step", {"step": 2}, AUTH)[0] == 409  # skips a step
        assert post(url, "/admin/experiments/c/step", {"step": "1"}, AUTH)[0] == 400
        assert post(url, "/admin/experiments/c/step", {"step": 1}, None)[0] == 401
        for _ in range(2):  # safe twice
            status, stepped = post(url, "/admin/experiments/c/step", {"step": 1, "reason": "ok"}, AUTH)
            assert status == 200 and stepped["arms"] == {"finance": 50, "finance-v2": 50}
        assert post(url, "/admin/experiments/c/step", {"step": 2}, AUTH)[0] == 409  # 100% is the promotion
        assert post(url, "/admin/experiments/c/rollback", {"cause": "boredom"}, AUTH)[0] == 400
        assert post(url, "/admin/experiments/c/promote", {"figures": 3}, AUTH)[0] == 400
        for _ in range(2):
            status, promoted = post(url, "/admin/experiments/c/promote", None, AUTH)
            assert status == 200 and promoted["status"] == "promoted" and promoted["arms"] == {"finance-v2": 100}
        assert promoted["promotion"]["config"] is None  # no models.yaml on disk: the database holds it
        for _ in range(2):
            status, undone = post(url, "/admin/experiments/c/rollback", None, AUTH)
            assert status == 200 and undone["status"] == "rolled_back"
        assert undone["arms"] == {"finance": 50, "finance-v2": 50}
        assert post(url, "/admin/experiments/c/step", {"step": 2}, AUTH)[0] == 409
        kinds = [e["kind"] for e in _get(url, "/admin/experiments/c/events")["events"]]
        assert kinds == ["start", "step", "promote", "rollback"]
        # a plain stop is recorded too; a stopped test has nothing to roll back
        post(url, "/admin/experiments", {"id": "d", "model": "general", "arms": {"general": 1, "finance": 1}}, AUTH)
        assert post(url, "/admin/experiments/d/stop", {"result": {"verdict": "A better"}}, AUTH)[0] == 200
        assert post(url, "/admin/experiments/d/rollback", None, AUTH)[0] == 409
        assert [e["kind"] for e in _get(url, "/admin/experiments/d/events")["events"]] == ["start", "stop"]
        # a test that ended may still be promoted by hand; a rolled-back one may not
        status, promoted = post(url, "/admin/experiments/d/promote", {"reason": "a person decided"}, AUTH)
        assert status == 200 and promoted["status"] == "promoted" and promoted["arms"] == {"finance": 100}
        assert _chat(url, "general", "promoted after the end")[1]["x-clawtune-arm"] == "finance"
        assert post(url, "/admin/experiments/c/promote", None, AUTH)[0] == 409


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--canary", "10,50,100"], "--promote-if-better"),
        (["--canary", "50,10", "--promote-if-better"], "more traffic"),
        (["--canary", "100", "--promote-if-better"], "below 100"),
        (["--canary", "10,x"], "--canary"),
        (["--canary", "10,50", "--traffic-split", "90:10"], "replaces --traffic-split"),
        (["--guardrails", "vibes=0.1"], "--guardrails"),
        (["--guardrails", "error_rate=5"], "a share"),
        (["--register"], "--promote-if-better"),
    ],
)
def test_bad_canary_options_say_which(args: list[str], message: str, capsys) -> None:
    code = main(["ft", "ab-test", "--model-a", "a", "--model-b", "b", "--endpoint", "http://127.0.0.1:9", *args])
    assert code == 2 and message in capsys.readouterr().err


def test_guardrails_parse_and_default() -> None:
    assert canary.parse_guardrails("none") == {}
    assert canary.parse_guardrails("error_rate, slow_requests=0.1") == {"error_rate": 0.01, "slow_requests": 0.1}
    assert abtest.Settings("a", "b").guardrails == abtest.GUARDRAILS
    assert canary.parse_canary("10, 50,100") == [10, 50, 100]


def _unit(arm: str, errors: int = 0, invalid: int = 0, latencies: tuple[float, ...] = (100.0,)) -> dict[str, Any]:
    requests = len(latencies) + errors
    return {
        "arm": arm, "propensity_b": 0.5, "requests": requests, "errors": errors, "latency_ms": list(latencies),
        "prompt_tokens": 1, "completion_tokens": 1, "tool_calls": 1, "tool_calls_invalid": invalid, "graded": 1,
        "correct": 1 - invalid, "positive": 1, "negative": 0, "first": 0.0,
    }  # fmt: skip


def test_each_guardrail_is_breached_only_beyond_its_threshold() -> None:
    """Hand-built sessions: B with 30% slow requests and 10% invalid tool calls against A's none breaches both; the
    same error rate on both arms breaches nothing; 4% more slow requests stays inside a 5-point allowance."""
    settings = abtest.Settings("a", "b", metrics=["user_satisfaction"], slow_ms=1000.0)
    units = []
    for i in range(1200):
        if i % 2:
            units.append(_unit("A", errors=int(i % 40 == 1)))
        else:
            slow = (5000.0,) if i % 10 < 3 else (100.0,)
            units.append(_unit("B", errors=int(i % 40 == 0), invalid=int(i % 20 == 0), latencies=slow))
    found = abtest.check_guardrails(units, settings)
    assert found["slow_requests"]["breached"] and found["invalid_tool_calls"]["breached"]
    assert not found["error_rate"]["breached"]
    assert found["slow_requests"]["test"]["lower"] > 0.05
    gentle = [
        _unit(u["arm"], latencies=(5000.0,) if u["arm"] == "B" and i % 100 < 3 else (100.0,))
        for i, u in enumerate(units)
    ]
    assert not abtest.check_guardrails(gentle, settings)["slow_requests"]["breached"]
    # the decision: a breach comes first, whatever the primary metric says
    experiment = {"status": "running", "canary": None}
    result = {**abtest.analyse({"id": "x"}, [], settings), "guardrails": found}
    action = canary.next_action(experiment, result, settings, elapsed=0.0)
    assert action is not None and action.kind == "rollback" and action.cause == "guardrail"
    assert action.figures["guardrail"]["metric"] in ("invalid_tool_calls", "slow_requests")


@pytest.mark.slow
def test_resume_takes_over_a_ramp_whose_command_stopped(tmp_path: Path, capsys) -> None:
    """A canary left at its first step (its `ft ab-test` gone): `resume` drives it on with its stored settings."""
    settings = abtest.Settings(
        "finance", "finance-v2", split=(90, 10), metrics=["user_satisfaction"], primary="user_satisfaction",
        duration_s=60, canary=[10, 50, 100], step_sessions=20, promote_if_better=True,
    )  # fmt: skip
    with Server(Gateway(config(tmp_path, server={"admin_keys": [ADMIN]}), engine=FlakyB())) as server:  # type: ignore[arg-type]
        body = {"id": "left", "model": "finance", "arms": {"finance": 1, "finance-v2": 1}}
        body |= {"canary": {"steps": [10, 50, 100]}, "settings": asdict(settings)}
        assert post(server.url, "/admin/experiments", body, AUTH)[0] == 201
        rater = abtest.coin_rater({"finance": 0.2, "finance-v2": 0.95}, seed=7)
        with abtest.SimulatedUsers(server.url, "finance", rater, SCRIPT, turns=1, workers=4, seed=8):
            base = ["--endpoint", server.url, "--admin-key", ADMIN, "--refresh", "0.3"]
            code = main(["ft", "ab-test", "resume", "left", *base, "--output", str(tmp_path / "out")])
        assert code == 0, capsys.readouterr().out
        kinds = [e["kind"] for e in _get(server.url, "/admin/experiments/left/events")["events"]]
        assert kinds == ["start", "step", "promote"]
        assert main(["ft", "ab-test", "resume", "left", *base]) == 2  # promoted: nothing to resume
        assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_a_canary_session_keeps_its_arm_when_b_takes_more_and_after_a_restart(tmp_path: Path) -> None:
    """B's share goes from 10% to 50%: the sessions already under way stay where they began (A's too), new sessions
    are split at the new share; a restarted gateway remembers (from its log) where each session began."""

    def arms_of(url: str, sessions: range) -> dict[int, str]:
        import urllib.request
        from concurrent.futures import ThreadPoolExecutor

        body = json.dumps({"model": "finance", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})

        def arm(n: int) -> str:
            headers = {"Content-Type": "application/json", "X-Clawtune-Session": f"session-{n}"}
            request = urllib.request.Request(url + "/v1/chat/completions", body.encode(), headers)
            with urllib.request.urlopen(request, timeout=60) as reply:
                return str(reply.headers["X-Clawtune-Arm"])

        with ThreadPoolExecutor(4) as pool:
            return dict(zip(sessions, pool.map(arm, sessions), strict=True))

    def gateway() -> Gateway:
        return Gateway(config(tmp_path, server={"admin_keys": [ADMIN]}), engine=FlakyB())  # type: ignore[arg-type]

    with Server(gateway()) as server:
        body = {
            "id": "pins",
            "model": "finance",
            "arms": {"finance": 1, "finance-v2": 1},
            "canary": {"steps": [10, 50]},
        }
        assert post(server.url, "/admin/experiments", body, AUTH)[0] == 201
        before = arms_of(server.url, range(200))
        assert 5 <= sum(a == "finance-v2" for a in before.values()) <= 40  # about 10%
        assert post(server.url, "/admin/experiments/pins/step", {"step": 1}, AUTH)[0] == 200
        assert arms_of(server.url, range(200)) == before  # no session moved
        fresh = arms_of(server.url, range(200, 400))
        assert 70 <= sum(a == "finance-v2" for a in fresh.values()) <= 130  # about 50%
    with Server(gateway()) as server:
        assert arms_of(server.url, range(400)) == {**before, **fresh}


def test_a_rollback_is_sent_again_until_the_gateway_answers() -> None:
    import io

    from rich.console import Console

    calls: list[str] = []

    class Restarting:
        def __init__(self, fails: int) -> None:
            self.fails = fails

        def call(self, method: str, path: str, body: Any = None) -> Any:
            calls.append(path)
            if len(calls) <= self.fails:
                raise abtest.GatewayUnreachable("http://h: cannot reach the gateway")
            return {"status": "rolled_back"}

    action = canary.Action("rollback", "guardrail", "guardrail error_rate: ...", cause="guardrail")
    settings, console = abtest.Settings("a", "b"), Console(file=io.StringIO())
    done = canary.act(Restarting(2), "x", action, {}, settings, "http://h", console, sleep=lambda s: None)  # type: ignore[arg-type]
    assert done["status"] == "rolled_back" and calls == ["/admin/experiments/x/rollback"] * 3
    with pytest.raises(abtest.ABTestError, match="clawtune ft ab-test rollback x"):
        canary.act(Restarting(10**6), "x", action, {}, settings, "http://h", console, lambda s: None, 5.0, 20.0)  # type: ignore[arg-type]


def test_models_yaml_promotion_replaces_a_split_of_the_same_id_and_its_undo_puts_it_back(tmp_path: Path) -> None:
    from clawtune.serve import promotion

    path = tmp_path / "models.yaml"
    original = MODELS_YAML + (
        "experiments:\n"
        "  # an old test of the same id, stopped since\n"
        "  - id: old-test\n"
        "    model: finance\n"
        "    arms: {finance: 50, finance-v2: 50}\n"
        "  - id: virtual   # a model id of its own: untouched\n"
        "    arms: {finance: 1, finance-v2: 1}\n"
    )
    path.write_text(original)
    done = promotion.promote_in_config(path, "new", "finance", "finance-v2", "session")
    assert done["replaced"] == [{"id": "old-test", "model": "finance", "arms": {"finance": 50, "finance-v2": 50}}]
    text = path.read_text()
    assert "old-test" not in text and "# a model id of its own: untouched" in text and "id: new" in text
    assert Path(done["backup"]).read_text() == original
    again = promotion.promote_in_config(path, "new", "finance", "finance-v2", "session")
    assert again["backup"] is None and path.read_text() == text  # a retry writes nothing
    undone = promotion.undo_in_config(done)
    assert undone["removed"]["id"] == "new" and [e["id"] for e in undone["restored"]] == ["old-test"]
    restored = load(path)
    assert {e.id: e.model for e in restored.experiments} == {"virtual": None, "old-test": "finance"}
    assert promotion.undo_in_config(done)["backup"] is None  # undone already: nothing written
    path.write_text("- a list, not a mapping\n")
    with pytest.raises(promotion.PromotionError, match="not a mapping"):
        promotion.promote_in_config(path, "new", "finance", "finance-v2", "session")


@pytest.mark.slow
def test_the_gateways_watchdog_rolls_b_back_when_no_command_drives_the_test(tmp_path: Path) -> None:
    """An experiment started by `ft ab-test` whose command is gone: the guardrails still hold, in the gateway."""
    settings = abtest.Settings(
        "finance", "finance-v2", split=(90, 10), metrics=["user_satisfaction"], canary=[10, 50],
        guardrails={"error_rate": 0.0},
    )  # fmt: skip
    gateway = Gateway(config(tmp_path, server={"admin_keys": [ADMIN]}), engine=FlakyB(every=20))  # type: ignore[arg-type]
    gateway.watchdog = canary.Watchdog(gateway, interval_s=0.5)
    with Server(gateway) as server:
        body = {"id": "alone", "model": "finance", "arms": {"finance": 1, "finance-v2": 1}}
        body |= {"canary": {"steps": [10, 50]}, "settings": asdict(settings)}
        assert post(server.url, "/admin/experiments", body, AUTH)[0] == 201
        with abtest.SimulatedUsers(server.url, "finance", lambda *a: None, SCRIPT, turns=1, workers=6, seed=4):
            deadline = time.monotonic() + 120
            while _get(server.url, "/admin/experiments/alone")["status"] == "running":
                assert time.monotonic() < deadline, "the watchdog never stopped B"
                time.sleep(0.2)
        events = _get(server.url, "/admin/experiments/alone/events")["events"]
        assert [e["kind"] for e in events] == ["start", "rollback"]
        assert events[-1]["figures"]["cause"] == "guardrail" and events[-1]["figures"]["by"] == "gateway"
        assert "watchdog" in events[-1]["reason"]
        assert "x-clawtune-arm" not in _chat(server.url, "finance", "after the watchdog")[1]
    assert gateway.watchdog._thread is not None and not gateway.watchdog._thread.is_alive()  # stopped with the server


def test_the_canarys_decisions_in_order() -> None:
    """next_action on figures built by hand: hold, step, promote or stop at the last step, roll back, time out."""
    settings = abtest.Settings("a", "b", canary=[10, 50, 100], step_sessions=30, promote_if_better=True, duration_s=60)

    def figures(step: int, sessions_b: int, verdict: str) -> dict[str, Any]:
        test = {"metric": "user_satisfaction", "estimate": 0.1, "lower": 0.05, "upper": 0.2}
        canary_state = {"steps": [10.0, 50.0, 100.0], "step": step, "since": 0.0, "share_b": [10, 50][step]}
        canary_state |= {"sessions_b": sessions_b, "sessions_a": 9 * sessions_b, "needed_b": 30}
        return {
            "verdict": verdict, "reason": "because", "decided": verdict != "not enough data",
            "primary": "user_satisfaction", "tests": {"user_satisfaction": test}, "guardrails": {},
            "canary": canary_state,
        }  # fmt: skip

    running = {"id": "x", "status": "running"}
    assert canary.next_action(running, figures(0, 29, "B better"), settings, 1.0) is None  # not enough of B yet
    step = canary.next_action(running, figures(0, 30, "not enough data"), settings, 1.0)
    assert step is not None and step.kind == "step" and step.step == 1 and "B takes 50%" in step.reason
    assert canary.next_action(running, figures(1, 30, "not enough data"), settings, 1.0) is None  # waits to decide
    promote = canary.next_action(running, figures(1, 30, "B better"), settings, 1.0)
    assert promote is not None and promote.kind == "promote"
    stop = canary.next_action(running, figures(1, 30, "equivalent within margin"), settings, 1.0)
    assert stop is not None and stop.kind == "stop" and "not promoted" in stop.reason
    worse = canary.next_action(running, figures(0, 3, "A better"), settings, 1.0)
    assert worse is not None and worse.kind == "rollback" and worse.cause == "primary"
    late = canary.next_action(running, figures(0, 3, "not enough data"), settings, 61.0)
    assert late is not None and late.kind == "stop" and late.ended == "duration"
    ended = canary.next_action({"id": "x", "status": "rolled_back"}, figures(0, 3, "B better"), settings, 1.0)
    assert ended is not None and ended.kind == "none"
    # without --promote-if-better the ramp ends below 100: a better B is stopped with the command that promotes it
    manual = abtest.Settings("a", "b", canary=[10, 50], step_sessions=30, duration_s=60)
    told = canary.next_action(running, figures(1, 30, "B better"), manual, 1.0)
    assert told is not None and told.kind == "stop" and "clawtune ft ab-test promote x" in told.reason
