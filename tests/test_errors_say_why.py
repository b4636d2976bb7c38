"""Errors that say why: each mistake a new user makes ends in one message that names it (with a did-you-mean where one
helps), never a traceback, and never an exit code 0 that hides a failure."""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from clawtune.cli import main
from clawtune.export import run as export_run
from clawtune.export.run import ExportError, ExportOptions, _check_jinja, _Context
from clawtune.models import load_tokenizer
from clawtune.serve.config import ServeConfigError, load
from clawtune.train.config import load_config

from .conftest import export_sample, write_jsonl

# ---- ft init -----------------------------------------------------------------------------------------------------


def test_init_checks_the_base_model_exists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ft-config.yaml"
    assert main(["ft", "init", "--base-model", "clawtune/tiny-agnet", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "clawtune/tiny-agnet: no such bundled model" in err and "did you mean 'clawtune/tiny-agent'?" in err
    (tmp_path / "models" / "llama-8b").mkdir(parents=True)
    (tmp_path / "models" / "llama-8b" / "config.json").write_text("{}")
    assert main(["ft", "init", "--base-model", str(tmp_path / "models" / "llama-8c"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "llama-8c: no such folder; did you mean" in err and "llama-8b" in err
    assert main(["ft", "init", "--base-model", "meta-llama/Llama-3.1-8b", "--config", str(config)]) == 2
    assert "did you mean 'meta-llama/Llama-3.1-8B'?" in capsys.readouterr().err  # offline: not cached, not known
    assert not config.exists() and "Traceback" not in capsys.readouterr().err
    assert main(["ft", "init", "--base-model", str(tmp_path / "models" / "llama-8b"), "--config", str(config)]) == 0


def test_init_offers_the_bundled_models_preset_which_the_demo_uses(tmp_path: Path) -> None:
    from clawtune.demo import write_demo_config

    config = tmp_path / "ft-config.yaml"
    assert main(["ft", "init", "--base-model", "clawtune/tiny-agent", "--config", str(config)]) == 0
    written = load_config(config, check_files=False)
    assert (written.training.learning_rate, written.training.warmup_steps) == (5e-3, 10)
    assert "lm_head" in written.lora.target_modules and "tiny-agent" in config.read_text()
    demo = load_config(write_demo_config(tmp_path / "demo"), check_files=False)
    assert demo.training == written.training and demo.lora == written.lora, "the demo's values are the preset's"
    seed = tmp_path / "seed.yaml"
    assert main(["ft", "init", "--base-model", "clawtune/tiny-agent", "--preset", "seed", "--config", str(seed)]) == 0
    assert load_config(seed, check_files=False).training.warmup_steps == 100


# ---- ft evaluate -------------------------------------------------------------------------------------------------


def test_evaluate_checks_its_inputs_before_any_generation(
    tmp_path: Path, sample_state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from clawtune.evaluate import backends

    def no_generation(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model answered before every input was checked")

    monkeypatch.setattr(backends.LocalBackend, "generate", no_generation)
    monkeypatch.setattr(backends.EndpointBackend, "generate", no_generation)
    export_sample(tmp_path / "ft-data", sample_state)
    (tmp_path / "fine-tuned-model").mkdir()
    test = str(tmp_path / "ft-data" / "test.jsonl")
    seed_path = str(tmp_path / "fine-tuned-model" / "checkpoint-500")  # the founding document's path
    assert main(["ft", "evaluate", "--model-dir", seed_path, "--test-set", test]) == 2
    err = capsys.readouterr().err
    assert f"--model-dir {seed_path}: no such folder" in err and "no baseline" not in err
    base = ["ft", "evaluate", "--test-set", test, "--baseline", "clawtune/tiny-agent"]
    assert main([*base, "--model-dir", seed_path]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main([*base, "--model-dir", "clawtune/tiny-agent", "--baseline-system-prompt", "nope.txt"]) == 2
    assert "--baseline-system-prompt nope.txt: no such file" in capsys.readouterr().err
    assert main(["ft", "evaluate", "--test-set", test, "--model-dir", "clawtune/tiny-agent"]) == 2
    assert "no baseline" in capsys.readouterr().err
    assert main([*base, "--model-dir", "clawtune/tiny-agent", "--train-set", "missing.jsonl"]) == 2
    assert "--train-set missing.jsonl: no such file" in capsys.readouterr().err


# ---- ft export --chat-template -----------------------------------------------------------------------------------


def test_export_chat_template_missing_or_not_jinja(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ft", "export", "--model-dir", str(tmp_path / "ckpt"), "--output", str(tmp_path / "out")]
    assert main([*args, "--chat-template", str(tmp_path / "nope.jinja")]) == 2
    err = capsys.readouterr().err
    assert f"--chat-template {tmp_path / 'nope.jinja'}: cannot read it: No such file or directory" in err
    (tmp_path / "empty.jinja").write_text("  \n")
    assert main([*args, "--chat-template", str(tmp_path / "empty.jinja")]) == 2
    assert "the file is empty" in capsys.readouterr().err

    # A template that does not parse is refused by the parity check, with its line, before anything is written.
    tokenizer = load_tokenizer("clawtune/tiny-agent")[0]
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}\n{{ m.content }\n{% endfor %}")
    options = ExportOptions(model_dir=tmp_path, output=tmp_path / "out", chat_template=broken)
    ctx = _Context(
        options, tmp_path, {}, tokenizer, broken.read_text(), "x", [export_run.parity.SAMPLE], {}, None, None
    )
    with pytest.raises(ExportError, match=r"--chat-template .*broken\.jinja, line 2: not a usable Jinja chat template"):
        _check_jinja(copy.copy(ctx))


# ---- openclaw register -------------------------------------------------------------------------------------------


def test_register_refuses_an_endpoint_without_scheme_and_an_unknown_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "openclaw.json"
    config.write_text('{ agents: { entries: { main: {}, "my-agent": {} } } }\n')
    (tmp_path / "agents" / "ops-agent").mkdir(parents=True)  # an agent of the state folder, not in the config
    base = ["openclaw", "register", "--model-id", "m", "--config", str(config)]
    assert main([*base, "--endpoint", "127.0.0.1:8000/v1"]) == 2
    assert "did you mean 'http://127.0.0.1:8000/v1'?" in capsys.readouterr().err
    assert main([*base, "--endpoint", "http://127.0.0.1:8000/v1", "--agent", "my-agnet", "--primary"]) == 2
    err = capsys.readouterr().err
    assert "--agent 'my-agnet': no such agent" in err and "did you mean 'my-agent'?" in err
    assert config.read_text() == '{ agents: { entries: { main: {}, "my-agent": {} } } }\n', "nothing written"
    assert main([*base, "--endpoint", "http://127.0.0.1:8000/v1", "--agent", "ops-agent", "--primary"]) == 0


# ---- data-stats, teacher, help -----------------------------------------------------------------------------------


def test_data_stats_on_a_missing_or_empty_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ft", "data-stats", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["ft", "data-stats", str(tmp_path / "empty.jsonl")]) == 2
    captured = capsys.readouterr()
    assert "no examples (empty)" in captured.err and "matches the recipe" not in captured.out


def test_an_unreachable_teacher_stops_augmentation(
    tmp_path: Path, sample_state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_sample(tmp_path / "ft-data", sample_state)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    out = tmp_path / "ft-data" / "augmented.jsonl"
    args = ["ft", "augment-data", "--input", str(tmp_path / "ft-data" / "raw.jsonl"), "--output", str(out)]
    assert main([*args, "--teacher-endpoint", f"http://127.0.0.1:{port}/v1", "--teacher-model", "t"]) == 2
    err = capsys.readouterr().err
    assert "did not answer" in err and "Connection refused" in err and not out.exists()


def test_keep_images_help_keeps_its_placeholder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    main(["agent", "export-training-data", "--help"])
    assert "Keep an [image] placeholder where images were." in capsys.readouterr().out


# ---- serve -------------------------------------------------------------------------------------------------------


def test_serve_reports_a_port_in_use_before_loading_any_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from clawtune.serve import app

    def no_loading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("models were loaded before the port was checked")

    monkeypatch.setattr(app.Gateway, "__init__", no_loading)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "models.yaml"
        config.write_text(yaml.safe_dump({"models": [{"id": "a", "model": "clawtune/tiny-agent"}]}))
        assert main(["serve", "--config", str(config), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err


def test_models_yaml_unknown_keys_have_their_line_and_a_did_you_mean(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        "  - id: a\n"
        "    model: clawtune/tiny-agent\n"
        "    adapers:\n"
        "      x: {path: ./x}\n"
        "  - id: b\n"
        "    provider: openai\n"
        "    model: gpt\n"
        "    endpoint: http://h\n"
        "    tagz: [finance]\n"
        "server: {prot: 9000}\n"
    )
    with pytest.raises(ServeConfigError) as raised:
        load(path)
    message = str(raised.value)
    assert "line 4, key \"models[0].adapers\": unknown key; did you mean 'models[0].adapters'?" in message
    assert "line 10, key \"models[1].tagz\": unknown key; did you mean 'models[1].tags'?" in message
    assert "line 11, key \"server.prot\": unknown key; did you mean 'server.port'?" in message


def test_a_model_the_server_lacks_is_answered_with_the_ones_it_has(tmp_path: Path) -> None:
    import openai

    from clawtune.serve.app import Gateway, Server
    from clawtune.serve.config import parse

    from .conftest import chat_server

    with chat_server(lambda body: {"content": "hi"}) as (url, _):
        config = parse(
            {
                "models": [{"id": "general", "provider": "openai", "model": "g", "endpoint": url}],
                "experiments": [{"id": "ab", "arms": {"general": 1}}],
                "server": {"port": 0},
            },
            str(tmp_path / "models.yaml"),
        )
        with Server(Gateway(config, data_dir=tmp_path / "data")) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
            with pytest.raises(openai.NotFoundError, match=r"this server has: general, ab \(and auto\)"):
                client.chat.completions.create(
                    model="miaoquai-finance-agent", messages=[{"role": "user", "content": "x"}]
                )


def test_bad_jsonl_written_by_hand_still_reports(tmp_path: Path) -> None:
    """The line reader that replaced readline keeps every diagnosis: truncated, binary, not UTF-8, not an object."""
    from clawtune.logs.lines import iter_json_lines
    from clawtune.problems import Problems

    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n{"b": "cut\n\x00\x01\n\xff\xfe\n[1]\n{"c": 2}')
    problems = Problems()
    assert [obj for _, obj in iter_json_lines(path, problems)] == [{"a": 1}, {"c": 2}]
    assert [(p.line, p.reason) for p in problems.items] == [
        (3, "truncated-json"),
        (4, "binary"),
        (5, "not-utf8"),
        (6, "not-an-object"),
    ]
    write_jsonl(tmp_path / "ok.jsonl", [{"x": json.dumps({"y": 1})}])
    assert [o for _, o in iter_json_lines(tmp_path / "ok.jsonl", Problems())] == [{"x": '{"y": 1}'}]
