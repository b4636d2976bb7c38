"""`clawtune serve` and `clawtune chat`, driven with the official `openai` client.

Protocol tests run against a scripted engine (deterministic replies, including tool calls); the engine tests run the
tiny model with real adapters (mixed-adapter batches equal one-at-a-time generation, weights, policies, limits).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from clawtune.cli import main
from clawtune.serve.app import Gateway, Server, choose_arm
from clawtune.serve.config import ServeConfigError, load, parse
from clawtune.serve.engine import Engine, GenRequest
from clawtune.serve.log import RequestLog

from ..conftest import copy_run, read_jsonl, train_tiny_lora
from ..integration.fake_openai import FakeOpenAI
from ..serve_fakes import ScriptedEngine
from ..serve_fakes import config as _config

SEED_MODELS = Path(__file__).parent.parent / "seed" / "models.yaml"


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[tuple[Server, openai.OpenAI]]:
    with Server(Gateway(_config(tmp_path), engine=ScriptedEngine())) as server:  # type: ignore[arg-type]
        yield server, openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)


def _db(server: Server) -> sqlite3.Connection:
    server.gateway.log.flush()
    return sqlite3.connect(server.gateway.log.path)


TOOLS = [
    {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
    }
]


# ---- config ------------------------------------------------------------------------------------------------------


def test_the_seed_models_file_is_accepted_as_written() -> None:
    config = load(SEED_MODELS)
    assert [m.id for m in config.models] == ["llama-3.1-8b-base", "miaoquai-finance-agent"]
    assert config.models[1].adapters["finance-lora"].weight == 1.0 and config.models[1].tags == ["finance", "domestic"]


def test_config_mistakes_are_listed_all_at_once(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "id": "a",
                        "provider": "clawtune",
                        "model": "m1",
                        "adapters": {"x": {"path": str(tmp_path / "nope")}},
                    },
                    {"id": "a", "provider": "clawtune", "model": "m2"},
                    {
                        "id": "o",
                        "provider": "ollama",
                        "model": "llama3.1:8b",
                        "adapters": {"l": {"path": "/p", "weight": 0.5}},
                    },
                    {"id": "v", "provider": "vllm"},
                ],
                "experiments": [{"id": "ab", "arms": {"a": 1, "ghost": 1}}],
                "default_model": "missing",
            }
        )
    )
    with pytest.raises(ServeConfigError) as info:
        load(path)
    message = str(info.value)
    for expected in (
        "models[0] (a).adapters.x.path",
        "models[1] (a).id: duplicate model id 'a'",
        "models[2] (o).adapters.l.weight: ollama applies an adapter at weight 1.0 only",
        "models[3] (v).endpoint",
        "holds one base model in memory",
        "experiments[0].arms.ghost: no model with this id",
        "default_model: no model with id 'missing'",
    ):
        assert expected in message
    path.write_text("models:\n  - id: a\n    provider: bogus\n    weight: [\n")
    with pytest.raises(ServeConfigError, match=r"models.yaml:\d+: not valid YAML"):
        load(path)
    path.write_text(yaml.safe_dump({"models": [{"id": "a", "provider": "bogus", "colour": 1}]}))
    with pytest.raises(
        ServeConfigError, match=r'models\[0\]\.provider": .*\n  line \d+, key "models\[0\]\.colour": unknown key'
    ):
        load(path)


# ---- the OpenAI protocol --------------------------------------------------------------------------------------


def test_plain_streaming_and_models(scripted: tuple[Server, openai.OpenAI]) -> None:
    _server, client = scripted
    raw = client.chat.completions.with_raw_response.create(
        model="general", messages=[{"role": "user", "content": "hi"}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "You said: hi" and reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0
    assert raw.headers["x-request-id"] == reply.id and raw.headers["x-clawtune-model"] == "general"

    chunks = list(
        client.chat.completions.create(
            model="general", messages=[{"role": "user", "content": "stream me"}], stream=True
        )
    )
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: stream me"
    assert chunks[-1].choices[0].finish_reason == "stop" and all(c.usage is None for c in chunks)
    with_usage = list(
        client.chat.completions.create(
            model="general",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens > 0
    assert [m.id for m in client.models.list()] == ["finance", "finance-v2", "general", "finance-ab"]


def test_tool_calls_plain_and_streamed(scripted: tuple[Server, openai.OpenAI]) -> None:
    _, client = scripted
    messages = [{"role": "user", "content": "call lookup"}]
    reply = client.chat.completions.create(model="general", messages=messages, tools=TOOLS)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me look."
    (call,) = choice.message.tool_calls
    assert (
        call.type == "function"
        and call.function.name == "lookup"
        and json.loads(call.function.arguments) == {"q": "x<y"}
    )
    assert call.id.startswith("call_")
    # The official stream helper accumulates tool-call deltas by index (it crashes without one).
    with client.chat.completions.stream(model="general", messages=messages, tools=TOOLS) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls" and message.tool_calls[0].function.name == "lookup"
    assert message.content == "Let me look." and "<tool_call>" not in (message.content or "")


def test_errors_have_the_openai_shape(scripted: tuple[Server, openai.OpenAI]) -> None:
    server, client = scripted
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found" and info.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError, match="Invalid value for 'max_tokens'"):
        client.chat.completions.create(model="general", messages=[{"role": "user", "content": "x"}], max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="only n=1"):
        client.chat.completions.create(model="general", messages=[{"role": "user", "content": "x"}], n=2)
    with pytest.raises(openai.BadRequestError, match="context length is 2000 tokens") as info:
        client.chat.completions.create(model="general", messages=[{"role": "user", "content": "x" * 9000}])
    assert info.value.code == "context_length_exceeded"
    for body, status in ((b"{not json", 400), (b'{"model": "general", "messages": []}', 400)):
        request = urllib.request.Request(
            server.url + "/v1/chat/completions", body, {"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as http:
            urllib.request.urlopen(request)
        assert http.value.code == status and set(json.loads(http.value.read())["error"]) == {
            "message",
            "type",
            "param",
            "code",
        }


def test_api_keys_and_body_limit(tmp_path: Path) -> None:
    config = _config(tmp_path, server={"api_keys": ["secret"], "max_body_bytes": 2048})
    with Server(Gateway(config, engine=ScriptedEngine())) as server:  # type: ignore[arg-type]
        bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="general", messages=[{"role": "user", "content": "x"}])
        good = openai.OpenAI(base_url=server.url + "/v1", api_key="secret", max_retries=0)
        assert good.chat.completions.create(model="general", messages=[{"role": "user", "content": "x"}]).choices
        with pytest.raises(openai.APIStatusError) as info:
            good.chat.completions.create(model="general", messages=[{"role": "user", "content": "x" * 5000}])
        assert info.value.status_code == 413


# ---- routing --------------------------------------------------------------------------------------------------


def test_routing_by_tags_default_and_sticky_experiments(scripted: tuple[Server, openai.OpenAI]) -> None:
    _server, client = scripted

    def served(**kwargs: Any) -> tuple[str, str | None]:
        raw = client.chat.completions.with_raw_response.create(messages=[{"role": "user", "content": "x"}], **kwargs)
        return raw.headers["x-clawtune-model"], raw.headers.get("x-clawtune-arm")

    assert served(model="auto", extra_headers={"X-Clawtune-Tags": "domestic, other"})[0] == "finance"
    assert served(model="auto", metadata={"tags": "general"})[0] == "general"
    assert served(model="auto", extra_headers={"X-Clawtune-Tags": "weather"})[0] == "general"  # the default
    first = served(model="finance-ab", extra_headers={"X-Clawtune-Session": "s-1"})
    assert first[0] == first[1] and all(
        served(model="finance-ab", extra_headers={"X-Clawtune-Session": "s-1"}) == first for _ in range(5)
    ), "sticky per session"
    arms = [choose_arm("finance-ab", f"session-{i}", {"finance": 70, "finance-v2": 30}) for i in range(2000)]
    assert 0.66 < arms.count("finance") / len(arms) < 0.74, "split by weight"
    reply = client.chat.completions.create(model="finance-ab", messages=[{"role": "user", "content": "x"}], user="u-9")
    assert reply.model == "finance-ab" and reply.model_extra["clawtune"]["arm"] in ("finance", "finance-v2")


def test_system_prompt_policy_replaces_the_agents_long_prompt(scripted: tuple[Server, openai.OpenAI]) -> None:
    server, client = scripted
    long_prompt = "You are OpenClaw. " + "Tool catalog and workspace files. " * 1400  # about 48,000 characters
    messages = [{"role": "system", "content": long_prompt}, {"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(model="finance-v2", messages=messages)
    engine = server.gateway.engine
    assert json.dumps(engine.messages_of(engine.seen[-1])).count("Short.") == 1  # type: ignore[union-attr]
    used = reply.usage.model_extra
    assert used["prompt_tokens_before_policy"] > 20 * reply.usage.prompt_tokens
    row = (
        _db(server)
        .execute("select prompt_tokens, prompt_tokens_original from requests where id = ?", (reply.id,))
        .fetchone()
    )
    assert row == (reply.usage.prompt_tokens, used["prompt_tokens_before_policy"])


# ---- the log and feedback -------------------------------------------------------------------------------------


def test_feedback_round_trip_into_the_log(scripted: tuple[Server, openai.OpenAI], tmp_path: Path) -> None:
    server, client = scripted
    raw = client.chat.completions.with_raw_response.create(
        model="finance", messages=[{"role": "user", "content": "call lookup"}], tools=TOOLS
    )
    request_id = raw.headers["x-request-id"]
    body = json.dumps({"request_id": request_id, "rating": "negative", "comment": "wrong table"}).encode()
    request = urllib.request.Request(server.url + "/v1/feedback", body, {"Content-Type": "application/json"})
    assert json.loads(urllib.request.urlopen(request).read())["recorded"] is True
    bad = urllib.request.Request(
        server.url + "/v1/feedback", json.dumps({"request_id": "nope", "rating": "negative"}).encode()
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(bad)
    assert info.value.code == 404
    row = (
        _db(server)
        .execute(
            "select r.model, r.tool_calls, r.tool_calls_valid, r.finish_reason, f.rating, f.comment, r.request_json "
            "from requests r join feedback f on f.request_id = r.id where r.id = ?",
            (request_id,),
        )
        .fetchone()
    )
    assert row[:6] == ("finance", 1, 1, "tool_calls", "negative", "wrong table")
    assert json.loads(row[6])["messages"][0]["content"] == "call lookup"
    # clawtune chat --message, then its /feedback
    assert main(["chat", "--model", "general", "--message", "hello there", "--endpoint", server.url]) == 0


def test_chat_interactive_commands(scripted: tuple[Server, openai.OpenAI]) -> None:
    import io

    from clawtune.serve.chat_client import interactive

    server, _ = scripted
    inputs = iter(["hello", "/feedback positive nice", "/model finance", "call lookup", "/reset", "/quit"])
    out = io.StringIO()
    interactive(server.url, "general", read=lambda _: next(inputs), out=out)
    text = out.getvalue()
    assert "You said: hello" in text and "(recorded positive feedback on chatcmpl-" in text
    assert "(now talking to finance)" in text and "(conversation reset)" in text
    assert '{"name": "lookup"' in text, "no tools offered: the call comes back as text, not as a call to run"
    ratings = _db(server).execute("select rating, comment from feedback").fetchall()
    assert ratings == [("positive", "nice")]


# ---- load: every request answered or refused, every answered one logged ---------------------------------------


class GatedEngine(ScriptedEngine):
    """The scripted engine, holding every reply until `gate` opens: the requests it was given stay in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def submit(self, request: GenRequest) -> None:
        self.record(request)

        def later() -> None:
            self.gate.wait(60)
            self.answer(request)

        threading.Thread(target=later, daemon=True).start()


def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    """Wait for a state (not for a moment): fails only if it never comes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_bounded_load(tmp_path: Path) -> None:
    """max_concurrency requests held in flight by the engine; 24 more at once are all refused (429, logged, counted),
    the held ones all answered once the engine lets them go, and the freed slots serve again. No timing: the test
    waits for states (the engine holding 4 requests, the slots freed), never for a moment."""
    config = _config(tmp_path, server={"max_concurrency": 4})
    engine = GatedEngine()
    server = Server(Gateway(config, engine=engine)).start()  # type: ignore[arg-type]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)

    def one(i: int) -> tuple[int, str | None]:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="general", messages=[{"role": "user", "content": f"n{i}"}]
            )
            return 200, raw.headers["x-request-id"]
        except openai.RateLimitError as exc:
            return 429, exc.response.headers["x-request-id"]

    try:
        with ThreadPoolExecutor(24) as pool:
            held = [pool.submit(one, i) for i in range(4)]
            wait_for(lambda: len(engine.seen) == 4, "the engine to hold 4 requests")
            refused = list(pool.map(one, range(4, 28)))
            assert [s for s, _ in refused] == [429] * 24
            assert not any(f.done() for f in held)
            engine.gate.set()
            answered = [f.result() for f in held]
            assert [s for s, _ in answered] == [200] * 4
            wait_for(lambda: server.gateway.in_flight == 0, "the slots to be freed")
            again = [one(i) for i in range(28, 32)]  # one at a time: a freed slot serves again
            assert [s for s, _ in again] == [200] * 4
    finally:
        server.close()  # finishes in-flight requests and flushes the log
    conn = sqlite3.connect(server.gateway.log.path)
    logged = dict(conn.execute("select id, status from requests").fetchall())
    assert len(logged) == 32
    assert all(logged[rid] == status for status, rid in answered + refused + again)
    assert "clawtune_rejected_total 24.0" in server.gateway.metrics.render().decode()


# ---- forwarding to remote engines ------------------------------------------------------------------------------


def test_forward_to_a_remote_engine(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        config = parse(
            {
                "models": [
                    {"id": "remote", "provider": "vllm", "model": "fake-model", "endpoint": fake.base_url},
                    {
                        "id": "down",
                        "provider": "openai",
                        "model": "m",
                        "endpoint": "http://127.0.0.1:9",
                        "timeout_s": 5,
                    },
                ],
                "server": {"port": 0, "data_dir": str(tmp_path / "data")},
            },
            str(tmp_path / "m.yaml"),
        )
        with Server(Gateway(config)) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
            reply = client.chat.completions.create(
                model="remote",
                messages=[{"role": "user", "content": "please read a.txt"}],
                tools=[
                    {
                        "type": "function",
                        "function": {"name": "read", "parameters": {"type": "object", "properties": {}}},
                    }
                ],
            )
            assert reply.choices[0].message.tool_calls[0].function.name == "read"
            chunks = list(
                client.chat.completions.create(
                    model="remote",
                    messages=[{"role": "user", "content": "hello"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            assert "Hello from the fake model" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert fake.requests[-1]["model"] == "fake-model" and chunks[-1].usage.total_tokens == 15
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(model="down", messages=[{"role": "user", "content": "x"}])
            assert info.value.status_code == 502 and "cannot be reached" in info.value.message
            rows = _db(server).execute("select model, provider, status from requests order by created").fetchall()
            assert rows == [("remote", "vllm", 200), ("remote", "vllm", 200), ("down", "openai", 502)]


# ---- token limits: published, and an over-large output request clamped (or refused when strict) ----------------


def test_model_limits_and_the_output_budget(tmp_path: Path) -> None:
    from clawtune.openai_http import ModelLimits, limits_of
    from clawtune.serve.limits import BudgetError, combined, forwarded_limits, output_budget, own_limits

    settings = _config(tmp_path).server  # max_tokens_limit 1000, default_max_tokens 512
    strict = _config(tmp_path, server={"strict_max_tokens": True}).server
    entry = parse(
        {"models": [{"id": "r", "provider": "vllm", "model": "m", "endpoint": "http://e", "context_window": 8192}]},
        "m.yaml",
    ).models[0]
    assert own_limits(32768, settings) == ModelLimits(32768, 1000) and own_limits(600, settings) == ModelLimits(
        600, 600
    )
    # The engine's own /v1/models wins over models.yaml; its output limit lowers the server's.
    assert forwarded_limits(entry, limits_of({"max_model_len": 4096, "max_completion_tokens": 700}), settings) == (
        ModelLimits(4096, 700)
    )
    assert forwarded_limits(entry, ModelLimits(), settings) == ModelLimits(8192, 1000)
    assert forwarded_limits(entry, None, settings) == ModelLimits(8192, 1000)
    assert limits_of({"context_length": 128000, "top_provider": {"max_completion_tokens": 16384}}) == ModelLimits(
        128000, 16384
    )
    assert combined([ModelLimits(32768, 1000), ModelLimits(8192, None), ModelLimits()]) == ModelLimits(8192, 1000)

    limits = ModelLimits(2000, 1000)
    assert output_budget(None, 100, limits, settings).max_tokens == 512  # the server's default
    assert output_budget(None, 1800, limits, settings).max_tokens == 200  # ... within what the context leaves
    assert output_budget(300, 100, limits, settings) == output_budget(300, 100, limits, strict)
    assert output_budget(300, 100, limits, settings).clamp is None
    over_limit = output_budget(5000, 100, limits, settings, "max_completion_tokens")
    assert over_limit.max_tokens == 1000 and over_limit.requested == 5000
    assert over_limit.clamp == "max_completion_tokens 5000 -> 1000: the server's output limit is 1000"
    over_room = output_budget(900, 1500, limits, settings)
    assert over_room.max_tokens == 500
    assert over_room.clamp == "max_tokens 900 -> 500: the context of 2000 tokens leaves 500 after the prompt of 1500"
    assert output_budget(5000, None, ModelLimits(None, None), settings).max_tokens == 1000  # forwarded, nothing known
    with pytest.raises(BudgetError, match="max_tokens is limited to 1000 on this server"):
        output_budget(5000, 100, limits, strict)
    with pytest.raises(BudgetError, match=r"you requested 2400 tokens \(1500 in the messages, 900 in the completion\)"):
        output_budget(900, 1500, limits, strict)
    for mode in (settings, strict):
        with pytest.raises(BudgetError, match="maximum context length is 2000 tokens") as info:
            output_budget(None, 2000, limits, mode)
        assert info.value.code == "context_length_exceeded" and info.value.param == "messages"


def test_models_publish_their_limits_and_over_large_requests_are_clamped_and_logged(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    with Server(Gateway(_config(tmp_path), engine=engine)) as server:  # type: ignore[arg-type]
        with urllib.request.urlopen(server.url + "/v1/models") as response:
            cards = {c["id"]: c for c in json.loads(response.read())["data"]}
        for model in ("general", "finance", "finance-ab"):
            assert cards[model]["context_window"] == cards[model]["max_model_len"] == 2000
            assert cards[model]["max_output_tokens"] == 1000
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
        asked = {"max_completion_tokens": 5000}
        reply = client.chat.completions.create(model="general", messages=[{"role": "user", "content": "hi"}], **asked)
        assert reply.choices[0].message.content == "You said: hi"
        long = "x" * 6000  # about 1,500 of the scripted engine's tokens
        client.chat.completions.create(model="general", messages=[{"role": "user", "content": long}], max_tokens=900)
        client.chat.completions.create(model="general", messages=[{"role": "user", "content": "ok"}], max_tokens=50)
        assert [r.max_new_tokens for r in engine.seen] == [1000, 2000 - len(engine.seen[1].prompt_ids), 50]
        rows = (
            _db(server)
            .execute("select max_tokens_requested, max_tokens, max_tokens_clamp from requests order by created")
            .fetchall()
        )
    assert rows[0] == (5000, 1000, "max_completion_tokens 5000 -> 1000: the server's output limit is 1000")
    assert rows[1][:2] == (900, engine.seen[1].max_new_tokens) and "leaves" in rows[1][2]
    assert rows[2] == (50, 50, None)

    strict = _config(tmp_path, server={"strict_max_tokens": True, "data_dir": str(tmp_path / "strict")})
    with Server(Gateway(strict, engine=ScriptedEngine())) as server:  # type: ignore[arg-type]
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="max_tokens is limited to 1000 on this server") as info:
            client.chat.completions.create(
                model="general", messages=[{"role": "user", "content": "x"}], max_completion_tokens=5000
            )
        assert info.value.body["param"] == "max_completion_tokens"
        with pytest.raises(openai.BadRequestError, match="However, you requested") as info:
            client.chat.completions.create(
                model="general", messages=[{"role": "user", "content": long}], max_tokens=900
            )
        assert info.value.code == "context_length_exceeded"
        status = _db(server).execute("select status, error from requests").fetchall()
    assert [s for s, _ in status] == [400, 400]


def test_forwarded_models_publish_the_engines_limits_or_the_configured_ones(tmp_path: Path) -> None:
    with FakeOpenAI(card={"max_model_len": 16384}) as vllm, FakeOpenAI() as ollama:
        config = parse(
            {
                "models": [
                    {"id": "stated", "provider": "vllm", "model": "fake-model", "endpoint": vllm.base_url},
                    {
                        "id": "configured",
                        "provider": "ollama",
                        "model": "fake-model",
                        "endpoint": ollama.base_url,
                        "context_window": 8192,
                    },
                    {"id": "unknown", "provider": "openai", "model": "other", "endpoint": ollama.base_url},
                ],
                "server": {"port": 0, "data_dir": str(tmp_path / "data"), "max_tokens_limit": 2048},
            },
            str(tmp_path / "m.yaml"),
        )
        with Server(Gateway(config)) as server:
            with urllib.request.urlopen(server.url + "/v1/models") as response:
                cards = {c["id"]: c for c in json.loads(response.read())["data"]}
            assert (cards["stated"]["max_model_len"], cards["stated"]["max_output_tokens"]) == (16384, 2048)
            assert (cards["configured"]["context_window"], cards["configured"]["max_output_tokens"]) == (8192, 2048)
            assert "context_window" not in cards["unknown"] and cards["unknown"]["max_output_tokens"] == 2048
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
            client.chat.completions.create(
                model="stated", messages=[{"role": "user", "content": "hi"}], max_tokens=9000
            )
            assert vllm.requests[-1]["max_tokens"] == 2048  # clamped before it reaches the engine
            rows = (
                _db(server)
                .execute("select max_tokens_requested, max_tokens, max_tokens_clamp from requests")
                .fetchall()
            )
    assert rows == [(9000, 2048, "max_tokens 9000 -> 2048: the server's output limit is 2048")]


def test_a_log_written_before_the_clamp_columns_gets_them(tmp_path: Path) -> None:
    from clawtune.serve.log import MIGRATIONS

    path = tmp_path / "requests.sqlite"
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS:  # the log as the release before the output budget wrote it (version 2)
        if migration.version <= 2:
            for statement in migration.statements:
                conn.execute(statement)
    conn.execute("pragma user_version = 2")
    conn.execute("insert into requests (id, created, model) values ('old', 1.0, 'm')")
    conn.commit()
    conn.close()
    log = RequestLog(path)
    log.request({"id": "new", "model": "m", "max_tokens_requested": 9, "max_tokens": 5, "max_tokens_clamp": "why"})
    log.close()
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "select id, max_tokens_requested, max_tokens, max_tokens_clamp from requests order by id"
    ).fetchall()
    assert rows == [("new", 9, 5, "why"), ("old", None, None, None)]


# ---- the real engine: tiny model, real adapters -----------------------------------------------------------------


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, sample_data: Path, tiny_lora: Path) -> dict[str, Path]:
    """Two LoRA adapters of the tiny model (different data and seeds), exported as openclaw-lora: alpha is the
    session's tiny LoRA run, beta is trained here."""
    folder = tmp_path_factory.mktemp("serve-adapters")
    rows = read_jsonl(sample_data / "raw.jsonl")
    runs = {"alpha": copy_run(tiny_lora, folder / "alpha-out").parent}
    runs["beta"] = train_tiny_lora(folder, "beta-out", rows[12:22], steps=3, seed=2)
    out = {}
    for name, run in runs.items():
        target = folder / "exports" / name
        assert main(["ft", "export", "--model-dir", str(run), "--output", str(target)]) == 0
        out[name] = target
    return out


@pytest.fixture(scope="module")
def engine(adapters: dict[str, Path]) -> Iterator[Engine]:
    engine = Engine("clawtune/tiny-agent", device="cpu", batch_size=8)
    engine.add_adapter("alpha", str(adapters["alpha"]))
    engine.add_adapter("beta", str(adapters["beta"]))
    yield engine
    engine.close()


def _generate(engine: Engine, requests: list[GenRequest]) -> list[tuple[str, str, int]]:
    for request in requests:
        engine.submit(request)
    out = []
    for request in requests:
        text = ""
        while True:
            event = request.events.get(timeout=120)
            if event[0] == "text":
                text += event[1]
            elif event[0] == "done":
                out.append((text, event[1], event[2]))
                break
            else:
                raise AssertionError(event)
    return out


@pytest.mark.slow
def test_mixed_adapter_batches_equal_one_at_a_time(engine: Engine) -> None:
    prompts = [
        [{"role": "user", "content": "What was revenue in Q3 for EMEA?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Find the contact for Lisbon."}],
    ]
    jobs = [(adapter, messages) for adapter in (None, "alpha", "beta") for messages in prompts]
    single = []
    for adapter, messages in jobs:
        single += _generate(engine, [GenRequest(engine.render(adapter, messages, TOOLS), adapter, 24)])
    before = engine.batches
    mixed = _generate(engine, [GenRequest(engine.render(a, m, TOOLS), a, 24) for a, m in jobs])
    assert engine.batches - before <= 2, "the six requests ran together"
    assert mixed == single
    assert len({text for text, _, _ in single}) >= 3, "base and adapters answer differently"


@pytest.mark.slow
def test_stacked_adapters_equal_peft_and_weights_scale(
    engine: Engine, adapters: dict[str, Path], tmp_path: Path
) -> None:
    """The serving engine's gathered LoRA gives PEFT's logits, per row of a mixed batch, and a weight scales it."""
    import shutil

    import torch
    from peft import PeftModel

    from clawtune.models import load_model

    rows = [engine.render(None, [{"role": "user", "content": text}], None) for text in ("Revenue in Q3?", "Hello")]
    width = min(len(r) for r in rows)
    ids = torch.tensor([r[:width] for r in rows])

    def served(names: list[str | None]) -> Any:
        with torch.no_grad(), engine.lora.rows(names, "cpu"):
            return engine.model(input_ids=ids).logits

    reference = PeftModel.from_pretrained(
        load_model("clawtune/tiny-agent", dtype=torch.float32), str(adapters["alpha"])
    )
    reference.load_adapter(str(adapters["beta"]), adapter_name="beta")
    with torch.no_grad():
        peft_alpha = reference(input_ids=ids).logits
        peft_mixed = reference(input_ids=ids, adapter_names=["beta", "__base__"]).logits
        with reference.disable_adapter():
            base = reference(input_ids=ids).logits
    assert torch.allclose(served(["alpha", "alpha"]), peft_alpha, atol=1e-5)
    assert torch.allclose(served(["beta", None]), peft_mixed, atol=1e-5)
    assert (peft_alpha - base).abs().max() > 0.5, "the adapter matters, so the comparison means something"

    engine.add_adapter("alpha-half", str(adapters["alpha"]), weight=0.5)
    try:
        for module in reference.modules():
            if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling:
                module.scaling["default"] *= 0.5
        with torch.no_grad():
            peft_half = reference(input_ids=ids).logits
        assert torch.allclose(served(["alpha-half", "alpha-half"]), peft_half, atol=1e-5)
    finally:
        engine.remove_adapter("alpha-half")
    assert torch.allclose(served(["alpha", None]), torch.cat([peft_alpha[:1], base[1:]]), atol=1e-5)
    tampered = tmp_path / "tampered"
    shutil.copytree(adapters["beta"], tampered)
    with open(tampered / "adapter_config.json", "a") as f:
        f.write(" ")
    with pytest.raises(Exception, match="sha256 no longer matches"):
        engine.add_adapter("tampered", str(tampered))


@pytest.mark.slow
@pytest.mark.parametrize("source", ["export", "training output"])
def test_evaluation_asks_and_stops_as_serving_does(
    engine: Engine, adapters: dict[str, Path], tmp_path: Path, source: str
) -> None:
    """For the same checkpoint, `ft evaluate` and the gateway apply the same system-prompt policy (the one the training
    data was exported with), render the same prompt ids and stop at the same tokens: evaluation measures what is
    served. Either side drifting (its own policy copy, its own stop list) fails this test."""
    from clawtune.evaluate.backends import Item, LocalBackend
    from clawtune.generation import short_system_prompt
    from clawtune.models.checkpoint import load_for_inference
    from clawtune.serve.serving import _normalise_messages

    folder = adapters["alpha"] if source == "export" else adapters["alpha"].parent.parent / "alpha-out"
    name = f"parity-{source.replace(' ', '-')}"
    config = parse(
        {
            "models": [
                {
                    "id": name,
                    "provider": "clawtune",
                    "model": "clawtune/tiny-agent",
                    "adapters": {"a": {"path": str(folder)}},
                }
            ],
            "server": {"port": 0, "data_dir": str(tmp_path / "data")},
        },
        str(tmp_path / "m.yaml"),
    )
    gateway = Gateway(config, engine=engine)
    try:
        entry = gateway.entries[name]
        backend = LocalBackend(load_for_inference(str(folder), device="cpu", merge=True))
        trained = short_system_prompt("my-agent")  # the export's default policy: replace with the short prompt
        assert gateway.policies[name] == backend.policy
        assert (backend.policy.policy, backend.policy.prompt) == ("replace", trained)
        assert backend.stop_ids == engine.stop_ids and backend.stop_ids
        long_prompt = "You are OpenClaw. " + "Tool catalog and workspace files. " * 300
        prompts = [
            [
                {"role": "system", "content": long_prompt},
                {"role": "user", "content": "What was revenue in Q3 for EMEA?"},
            ],
            [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "Find the contact for Lisbon."},
            ],
            [{"role": "user", "content": "Hello"}],
        ]
        for messages in prompts:
            item = Item("x", "tool_call", messages, TOOLS, {"role": "assistant", "content": "ok"})
            evaluated = backend.loaded.tokenizer(backend.prompt_text(item), add_special_tokens=False)["input_ids"]
            served = engine.render(name, gateway.apply_policy(entry, _normalise_messages(messages)), TOOLS)
            assert list(evaluated) == served
            assert trained in backend.prompt_text(item) and "OpenClaw" not in backend.prompt_text(item)
    finally:
        engine.remove_adapter(name)
        gateway.log.close()


def test_evaluation_and_serving_stop_alike_where_the_model_configs_disagree(tmp_path: Path) -> None:
    """A model whose tokenizer and generation config name only `<|endoftext|>` while its chat template ends a turn
    with `<|im_end|>` (as many base models ship): evaluation and serving both stop at either (evaluation used to
    stop at `<|endoftext|>` alone, and so generated past the end of the turn that serving cut)."""
    import shutil

    from clawtune.evaluate.backends import LocalBackend
    from clawtune.models import resolve
    from clawtune.models.checkpoint import load_for_inference

    folder = tmp_path / "base-model"
    shutil.copytree(resolve("clawtune/tiny-agent"), folder)
    for name, key, value in (
        ("tokenizer_config.json", "eos_token", "<|endoftext|>"),
        ("generation_config.json", "eos_token_id", [0]),
        ("config.json", "eos_token_id", 0),
    ):
        settings = json.loads((folder / name).read_text())
        settings[key] = value
        (folder / name).write_text(json.dumps(settings))
    engine = Engine(str(folder), device="cpu")
    try:
        backend = LocalBackend(load_for_inference(str(folder), device="cpu"))
        tokens = engine.tokenizer.convert_ids_to_tokens(sorted(engine.stop_ids))
        assert backend.stop_ids == engine.stop_ids and tokens == ["<|endoftext|>", "<|im_end|>"]
    finally:
        engine.close()


@pytest.mark.slow
def test_server_on_the_tiny_model_with_admin_adapters(adapters: dict[str, Path], tmp_path: Path) -> None:
    config = parse(
        {
            "models": [
                {"id": "base", "provider": "clawtune", "model": "clawtune/tiny-agent"},
                {
                    "id": "alpha",
                    "provider": "clawtune",
                    "model": "clawtune/tiny-agent",
                    "adapters": {"a": {"path": str(adapters["alpha"])}},
                },
            ],
            "server": {
                "port": 0,
                "data_dir": str(tmp_path / "data"),
                "adapter_dirs": [str(adapters["beta"].parent)],
                "admin_keys": ["admin-secret"],
            },
        },
        str(tmp_path / "m.yaml"),
    )
    with Server(Gateway(config)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
        messages = [{"role": "user", "content": "What was revenue in Q3 for EMEA?"}]
        plain = client.chat.completions.create(model="alpha", messages=messages, tools=TOOLS, max_tokens=20)
        streamed = list(
            client.chat.completions.create(model="alpha", messages=messages, tools=TOOLS, max_tokens=20, stream=True)
        )
        assert plain.usage.completion_tokens > 0 and streamed[-1].choices[0].finish_reason in (
            "stop",
            "length",
            "tool_calls",
        )

        def admin(method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json", "Authorization": "Bearer admin-secret"}
            request = urllib.request.Request(server.url + path, data, headers, method=method)
            try:
                with urllib.request.urlopen(request) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        assert admin("POST", "/admin/adapters", {"name": "beta", "path": str(adapters["beta"])})[0] == 200
        assert client.chat.completions.create(model="beta", messages=messages, max_tokens=5).choices
        status, body = admin("POST", "/admin/adapters", {"name": "evil", "path": str(tmp_path)})
        assert status == 403 and "outside the folders" in body["error"]["message"]
        assert admin("DELETE", "/admin/adapters/beta")[0] == 200
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="beta", messages=messages, max_tokens=5)
        health = json.loads(urllib.request.urlopen(server.url + "/health").read())
        assert health["status"] == "ok" and health["models"] == ["alpha", "base"]
        metrics = urllib.request.urlopen(server.url + "/metrics").read().decode()
        assert 'clawtune_requests_total{model="alpha",status="200"} 2.0' in metrics


def test_log_is_capped_by_rotating_old_rows_into_an_archive(tmp_path: Path) -> None:
    from clawtune.serve.log import RequestLog

    log = RequestLog(tmp_path / "requests.sqlite", max_rows=100)
    for i in range(700):
        log.request({"id": f"r{i}", "created": 1000.0 + i, "model": "m", "status": 200, "request_json": {"i": i}})
    log.feedback("r5", "negative", "old but kept")
    log.close()
    live = sqlite3.connect(tmp_path / "requests.sqlite")
    (archive,) = tmp_path.glob("requests-*.sqlite")
    old = sqlite3.connect(archive)
    kept = live.execute("select count(*), min(created) from requests").fetchone()
    moved = old.execute("select count(*) from requests").fetchone()[0]
    assert kept == (100, 1600.0) and kept[0] + moved == 700, "capped, and nothing lost"
    assert old.execute("select rating, comment from feedback where request_id = 'r5'").fetchone() == (
        "negative",
        "old but kept",
    )
