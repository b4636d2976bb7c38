"""Chat templates as the models publish them (tests/fixtures/templates/) on the sample agent's data.

For each family the masks are checked against an oracle built from the *stock* template: every trained assistant
turn must be supervised as exactly the text the stock template renders for that turn at serving time (what follows
its generation prompt), nothing else may be supervised, and `weight: 0` turns stay untrained. Templates that cannot
express the data are refused up front with the rule, the reason and the fix.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from clawtune.artifacts import chat_templates
from clawtune.artifacts.render import IGNORE, TemplateError, render_example, template_messages
from clawtune.artifacts.template_profile import profile, raw_render
from clawtune.cli import main
from clawtune.messages import is_trained
from clawtune.models import load_tokenizer
from clawtune.models.toolcalls import parse_reply

from ..conftest import export_sample, read_jsonl, write_jsonl

FIXTURES = Path(__file__).parent.parent / "fixtures" / "templates"
CHATML = ["<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]
LLAMA = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"]
R1 = [
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>",
    "<｜tool▁outputs▁begin｜>",
    "<｜tool▁outputs▁end｜>",
    "<｜tool▁output▁begin｜>",
    "<｜tool▁output▁end｜>",
]
MISTRAL = ["<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"]
MISTRAL += ["[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[CALL_ID]", "[ARGS]"]
MISTRAL += ["[TOOL_CONTENT]"]
HARMONY = ["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>"]


@dataclass
class Family:
    stock: str  # the fixture file
    shipped: str | None  # the training template clawtune uses instead (None: the stock template trains as it is)
    special: list[str]
    eos: str
    bos: str | None = None
    anchors: tuple[str, ...] = ()  # where a turn starts in the stock rendering when that is not after its prompt
    fixup: Callable[[str, str, dict[str, Any], bool], str] = field(default=lambda prompt, turn, message, last: turn)
    tools: list[Any] | None = None  # what to pass the stock template for examples without tools


def _reasoning(prompt: str, turn: str, message: dict[str, Any], last: bool) -> str:
    """QwQ / R1: the prompt opens the think block the stock template's own final turn lacks; the model writes it."""
    return "\n</think>\n\n" + turn if prompt.endswith("<think>\n") else turn


def _r1(prompt: str, turn: str, message: dict[str, Any], last: bool) -> str:
    calls = message.get("tool_calls")
    if not calls:
        return _reasoning(prompt, turn, message, last)
    # The stock template cannot render a tool-call turn whole (it closes one only after a second call): its tokens.
    body = "\n".join(
        f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{c['function']['name']}\n```json\n"
        f"{c['function']['arguments']}\n```<｜tool▁call▁end｜>"
        for c in calls
    )
    think = "\n</think>\n\n" if prompt.endswith("<think>\n") else ""
    text = message.get("content") or ""  # text and calls share a turn, as in DeepSeek-V3's template
    return f"{think}{text}<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"


def _harmony(prompt: str, turn: str, message: dict[str, Any], last: bool) -> str:
    """An earlier final answer ends in <|end|> in the history; only its text is trained."""
    return turn if last or message.get("tool_calls") else turn.removesuffix("<|return|>")


FAMILIES = {
    "qwen2.5": Family("Qwen-Qwen2.5-7B-Instruct.jinja", None, CHATML, "<|im_end|>"),
    "qwen3": Family("Qwen-Qwen3-0.6B.jinja", "qwen3", CHATML + THINK, "<|im_end|>"),
    "qwq": Family(
        "Qwen-QwQ-32B.jinja", "qwq", CHATML + THINK, "<|im_end|>", None, ("<|im_start|>assistant\n",), _reasoning
    ),
    "r1-distill": Family(
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "deepseek-r1-distill",
        R1 + THINK,
        "<｜end▁of▁sentence｜>",
        "<｜begin▁of▁sentence｜>",
        ("<｜Assistant｜>",),
        _r1,
    ),
    "llama3.1": Family("meta-llama-Llama-3.1-8B-Instruct.jinja", None, LLAMA, "<|eot_id|>", "<|begin_of_text|>"),
    "llama3.2": Family("meta-llama-Llama-3.2-3B-Instruct.jinja", None, LLAMA, "<|eot_id|>", "<|begin_of_text|>"),
    "llama3.3": Family("meta-llama-Llama-3.3-70B-Instruct.jinja", None, LLAMA, "<|eot_id|>", "<|begin_of_text|>"),
    "mistral-nemo": Family(
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        "mistral-nemo",
        MISTRAL,
        "</s>",
        "<s>",
        ("[/INST]", "[/TOOL_RESULTS]"),
    ),
    "mistral-small-3.2": Family(
        "Mistral-Small-3.2-24B-Instruct-2506.jinja", "mistral-small-3.2", MISTRAL, "</s>", "<s>"
    ),
    "hermes-2-pro": Family(
        "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
        "hermes",
        CHATML,
        "<|im_end|>",
        "<|begin_of_text|>",
        ("<|im_start|>assistant\n",),
        tools=[],  # its tool_use template needs a list; Hermes' tokenizers pick their plain ChatML one without
    ),
    "hermes-3": Family(
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        "hermes",
        CHATML,
        "<|im_end|>",
        "<|begin_of_text|>",
        ("<|im_start|>assistant\n",),
        tools=[],
    ),
    "gpt-oss": Family(
        "openai-gpt-oss-120b.jinja", "gpt-oss", HARMONY, "<|return|>", None, ("<|start|>assistant",), _harmony
    ),
}


def family_tokenizer(base: Any, family: Family, template: str) -> Any:
    """The tests' tiny tokenizer with the family's special tokens, as the family's real tokenizer has them."""
    tokenizer = copy.deepcopy(base)
    tokenizer.add_special_tokens({"additional_special_tokens": family.special})
    tokenizer.eos_token = family.eos
    if family.bos:
        tokenizer.bos_token = family.bos
    tokenizer.chat_template = template
    return tokenizer


@pytest.fixture(scope="module")
def base() -> Any:
    return load_tokenizer("clawtune/tiny-agent")[0]


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory, sample_state: Path) -> list[dict[str, Any]]:
    """30 sample-agent examples: every weight-0 one, every one with text next to a tool call, every one without
    tools, the rest from the start of the export."""
    out = tmp_path_factory.mktemp("template-data")
    export_sample(out, sample_state)
    found = read_jsonl(out / "raw.jsonl")

    def special(e: dict[str, Any]) -> bool:
        messages = e["messages"]
        return (
            not e.get("tools")
            or any(m.get("weight") == 0 for m in messages)
            or any(m.get("tool_calls") and m.get("content") for m in messages)
        )

    picked = [e for e in found if special(e)][:15]
    picked += [e for e in found if not special(e)][: 30 - len(picked)]
    assert len(picked) == 30
    assert sum(sum(m["role"] == "user" for m in e["messages"]) > 1 for e in picked) >= 5, "multi-turn examples"
    return picked


def supervised_runs(tokenizer: Any, rendered: Any) -> list[str]:
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(rendered.input_ids, rendered.labels, strict=True):
        assert label in (IGNORE, token)
        if label != IGNORE:
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = label != IGNORE
    return [tokenizer.decode(run, clean_up_tokenization_spaces=False) for run in runs]


def served_turns(family: Family, stock: Any, trainer: Any, example: dict[str, Any]) -> list[str]:
    """What the stock template renders for each trained turn when it is the turn being generated."""
    messages, _ = profile(trainer).adapt(template_messages(example["messages"]))
    rules = copy.copy(profile(stock))
    rules.drop_text_with_calls = False  # the stock template's own turn as it is generated, text included if it can
    messages, _ = rules.adapt(messages)
    tools = example.get("tools") or family.tools
    turns = []
    for i, message in enumerate(example["messages"]):
        if not is_trained(message) or i == 0:
            continue
        prompt = stock.apply_chat_template(messages[:i], tools=tools, tokenize=False, add_generation_prompt=True)
        whole = stock.apply_chat_template(messages[: i + 1], tools=tools, tokenize=False)
        if whole.startswith(prompt):
            turn = whole[len(prompt) :]
        else:
            turn = whole[max(whole.rindex(a) + len(a) for a in family.anchors if a in whole) :]
        turns.append(family.fixup(prompt, turn.rstrip(), messages[i], i == len(messages) - 1))
    return [t for t in turns if t]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_masks_supervise_exactly_the_turns_the_stock_template_serves(
    name: str, base: Any, examples: list[dict[str, Any]]
) -> None:
    family = FAMILIES[name]
    stock_text = (FIXTURES / family.stock).read_text(encoding="utf-8")
    stock = family_tokenizer(base, family, stock_text)
    trained_with = chat_templates.for_stock(stock_text)
    assert (trained_with.name if trained_with else None) == family.shipped
    trainer = family_tokenizer(base, family, trained_with.text() if trained_with else stock_text)
    assert profile(trainer).markers == (trained_with is not None)
    untrained_seen = 0
    for number, example in enumerate(examples):
        rendered = render_example(trainer, example)
        runs = supervised_runs(trainer, rendered)
        assert runs == served_turns(family, stock, trainer, example), f"{name}, example {number}"
        for message in example["messages"]:
            if message.get("weight") == 0:
                untrained_seen += 1
                text = message.get("content") or ""
                assert text in trainer.decode(rendered.input_ids) and all(text not in run for run in runs)
    assert untrained_seen >= 3


def test_the_stock_templates_that_cannot_be_trained_as_published(base: Any, examples: list[dict[str, Any]]) -> None:
    """The issue's findings, each reproduced on the stock template, and each fixed by the shipped one."""
    expected = {
        "qwen3": "history-dependent",
        "qwq": "history-dependent",
        "r1-distill": "tools-not-shown",
        "hermes-3": "history-dependent",
        "gpt-oss": "history-dependent",
        "mistral-small-3.2": "history-dependent",
        "mistral-nemo": "no-system-role",
    }
    for name, rule in expected.items():
        family = FAMILIES[name]
        stock = family_tokenizer(base, family, (FIXTURES / family.stock).read_text(encoding="utf-8"))
        refused = []
        for example in examples:
            try:
                render_example(stock, example)
            except TemplateError as exc:
                refused.append(exc)
        assert refused and any(e.rule == rule for e in refused), name
        message = str(next(e for e in refused if e.rule == rule))
        assert f"the stock {chat_templates.for_stock(stock.chat_template).family} template" in message  # type: ignore[union-attr]
        assert f"chat_template: clawtune:{family.shipped}" in message, message


def test_data_adapts_to_mistral_ids_and_r1_empty_content(base: Any, examples: list[dict[str, Any]]) -> None:
    nemo = FAMILIES["mistral-nemo"]
    stock = family_tokenizer(base, nemo, (FIXTURES / nemo.stock).read_text(encoding="utf-8"))
    rules = profile(stock)
    assert rules.short_ids and rules.drop_text_with_calls
    example = next(e for e in examples if sum(bool(m.get("tool_calls")) for m in e["messages"]) >= 2)
    messages, changed = rules.adapt(template_messages(example["messages"]))
    assert "tool-call ids rewritten" in changed
    answered = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            assert re.fullmatch(r"[A-Za-z0-9]{9}", call["id"])
            answered[call["id"]] = call
        if message["role"] == "tool":
            assert message["tool_call_id"] in answered  # the same rewrite for a call and its result
    assert rules.adapt(messages)[0] == messages  # idempotent
    raw_render(stock, messages[:3], example["tools"], True)  # the stock template accepts the rewritten ids
    with pytest.raises(Exception, match="alphanumeric strings with length 9"):
        raw_render(stock, template_messages(example["messages"])[:3], example["tools"], True)

    r1 = FAMILIES["r1-distill"]
    stock = family_tokenizer(base, r1, (FIXTURES / r1.stock).read_text(encoding="utf-8"))
    rules = profile(stock)
    assert rules.none_content and rules.string_arguments  # "" loses the call; arguments are concatenated as text
    call = next(m for m in example["messages"] if m.get("tool_calls"))
    adapted, _ = rules.adapt(template_messages([call]))
    assert adapted[0]["content"] is None and isinstance(adapted[0]["tool_calls"][0]["function"]["arguments"], str)


def test_templates_that_cannot_express_the_data_are_refused_up_front(base: Any, examples: list[dict[str, Any]]) -> None:
    cases = {
        # stock template: (the rule for examples with tools, clawtune's template for it, the rule left there)
        "ibm-granite-granite-3.3-2B-Instruct.jinja": ("no-tool-calls", None, None),
        "microsoft-Phi-3.5-mini-instruct.jinja": ("no-tool-role", "phi-3.5", "no-tool-role"),
        "google-gemma-2-2b-it.jinja": ("no-system-role", "gemma-2", "no-tool-role"),
    }
    plain = Family("", None, ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<start_of_turn>"], "<|end|>")
    plain.special += ["<end_of_turn>", "<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>"]
    for stock_file, (rule, shipped, left) in cases.items():
        stock = family_tokenizer(base, plain, (FIXTURES / stock_file).read_text(encoding="utf-8"))
        with_tools = next(e for e in examples if any(m.get("tool_calls") for m in e["messages"]))
        refusal = profile(stock).refusal(with_tools)
        assert refusal is not None and refusal.rule == rule, stock_file
        assert "fix:" in str(refusal)
        assert (chat_templates.for_stock(stock.chat_template) or None) == (
            chat_templates.SHIPPED[shipped] if shipped else None
        )
        if shipped is None:
            continue
        trainer = family_tokenizer(base, plain, chat_templates.SHIPPED[shipped].text())
        refusal = profile(trainer).refusal(with_tools)
        assert refusal is not None and refusal.rule == left
        # Conversations without tools train, with the turns the stock template serves.
        for example in [e for e in examples if not any(m["role"] == "tool" for m in e["messages"])]:
            rendered = render_example(trainer, example)
            served = [
                m["content"].strip() + ("<end_of_turn>" if shipped == "gemma-2" else "<|end|>")
                for i, m in enumerate(example["messages"])
                if is_trained(m) and i
            ]
            assert supervised_runs(trainer, rendered) == served


def test_a_trained_turn_whose_calls_are_not_rendered_names_template_and_example(
    tmp_path: Path, base: Any, examples: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Granite renders tool results but never the assistant's calls: the run stops before training, per rule."""
    write_jsonl(tmp_path / "train.jsonl", examples)
    template = tmp_path / "granite.jinja"
    template.write_text((FIXTURES / "ibm-granite-granite-3.3-2B-Instruct.jinja").read_text(encoding="utf-8"))
    config = {
        "base_model": "clawtune/tiny-agent",
        "data": {"train": "train.jsonl"},
        "chat_template": "granite.jinja",
        "training": {"max_seq_length": 4096},
        "output_dir": "out",
    }
    (tmp_path / "ft-config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["ft", "train", "--config", str(tmp_path / "ft-config.yaml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    refused = sum(any(m.get("tool_calls") for m in e["messages"]) for e in examples)
    assert f"refused {refused} of 30 examples" in err and "more than data.max_refused 5%" in err
    assert "no-tool-calls" in err and "never renders the assistant's tool calls" in err
    assert "the stock Granite 3.3 template" in err and re.search(r"first, line \d+:", err)
    assert not (tmp_path / "out").exists()
    # Raised above the refused share, the run trains on the rest; the refusals stay in the counts.
    config["data"]["max_refused"] = 1.0  # type: ignore[index]
    (tmp_path / "ft-config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["ft", "train", "--config", str(tmp_path / "ft-config.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{30 - refused} used of 30" in out


def test_a_stock_template_is_replaced_for_training_and_the_checkpoint_carries_it(tmp_path: Path, base: Any) -> None:
    folder = tmp_path / "qwen3-like"
    tokenizer = copy.deepcopy(base)
    tokenizer.chat_template = (FIXTURES / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
    tokenizer.save_pretrained(str(folder))
    loaded, source = load_tokenizer(str(folder))
    assert source == "model" and loaded.chat_template == tokenizer.chat_template  # serving and evaluation: as is
    loaded, source = load_tokenizer(str(folder), training=True)
    assert source == "clawtune:qwen3" and loaded.chat_template == chat_templates.SHIPPED["qwen3"].text()
    loaded, source = load_tokenizer(str(folder), "model", training=True)
    assert source == "model" and loaded.chat_template == tokenizer.chat_template  # opted out
    loaded, source = load_tokenizer(str(folder), "clawtune:gpt-oss")
    assert source == "clawtune:gpt-oss"
    with pytest.raises(Exception, match="clawtune ships no such template; choose from clawtune:qwen3"):
        load_tokenizer(str(folder), "clawtune:nope")


def test_fixture_sources_are_recorded() -> None:
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    for path in FIXTURES.glob("*.jinja"):
        assert path.name in readme, path.name
        text = path.read_text(encoding="utf-8")
        assert chat_templates.stock_family(text), f"{path.name}: its sha256 is not in chat_templates.py"
    for shipped in chat_templates.SHIPPED.values():
        assert shipped.path.is_file() and chat_templates.shipped_name(shipped.text()) == shipped.reference
        assert "{% generation %}" in shipped.text().replace("{%- generation %}", "{% generation %}")


def test_check_template_prints_the_table_for_the_users_data(
    tmp_path: Path, examples: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", examples)
    qwen3, granite = FIXTURES / "Qwen-Qwen3-0.6B.jinja", FIXTURES / "ibm-granite-granite-3.3-2B-Instruct.jinja"
    args = ["ft", "check-template", "--base", str(qwen3), "--data", str(data)]
    assert main([*args, "--json"]) == 0
    stock, trained = json.loads(capsys.readouterr().out)
    assert (stock["template"], stock["used_for_training"], stock["masks"]) == (
        "the stock Qwen3 template",
        False,
        "prefixes",
    )
    assert stock["refused"]["history-dependent"] == 30 - stock["trained"] > 0
    assert (trained["template"], trained["used_for_training"], trained["masks"]) == (
        "clawtune:qwen3",
        True,
        "generation markers",
    )
    assert trained["trained"] == 30 and not trained["refused"]
    against = trained["against_stock"]
    # The measured difference: earlier turns keep their empty think block ("<think>\n\n</think>\n\n", 19 characters);
    # the turn being generated is the stock template's own.
    assert 0 < against["prompts_differing"] < against["prompts"] == trained["trained_turns"]
    assert against["characters_added"] % 19 == 0 and against["characters_added"] >= 19 * against["prompts_differing"]
    assert against["turns_identical"] == against["turns_compared"] == against["prompts"]

    assert main([*args, "--base", str(granite)]) == 1  # Granite's refusals stop training
    out = capsys.readouterr().out
    assert "clawtune:qwen3 (used for training)" in out and "the stock Granite 3.3 template" in out
    assert "no-tool-calls" in out and "would stop before training" in out
    assert "fix: train with clawtune's training template for this family (chat_template: clawtune:qwen3)" in out


def test_replies_of_reasoning_templates_are_read_after_their_think_block() -> None:
    qwen3 = parse_reply('<think>\n\n</think>\n\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>')
    assert qwen3.content is None and qwen3.reasoning is None and qwen3.tool_calls[0]["function"]["name"] == "f"
    qwq = parse_reply("The user wants Q3.\n</think>\n\nQ3 revenue was 1.2M.")  # the prompt opened the block
    assert (qwq.content, qwq.reasoning) == ("Q3 revenue was 1.2M.", "The user wants Q3.")
    assert parse_reply("No <think> here.").content == "No <think> here."


@pytest.mark.slow
def test_a_qwen3_training_template_exports_with_parity_and_serves_through_the_gateway(
    tmp_path: Path, examples: list[dict[str, Any]]
) -> None:
    """The bundled model trained with clawtune:qwen3: the checkpoint and every export carry the training template,
    the parity check passes for it, and the gateway renders a conversation exactly as training rendered it."""
    import openai

    from clawtune.export import parity
    from clawtune.serve.app import Gateway, Server
    from clawtune.serve.config import parse
    from clawtune.serve.engine import Engine

    short = sorted((e for e in examples if e.get("tools")), key=lambda e: len(json.dumps(e)))[:4]
    write_jsonl(tmp_path / "train.jsonl", short)
    config = {
        "base_model": "clawtune/tiny-agent",
        "chat_template": "clawtune:qwen3",
        "data": {"train": "train.jsonl"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "training": {"batch_size": 2, "epochs": 1, "learning_rate": 0.01, "warmup_steps": 0, "max_seq_length": 4096},
        "output_dir": "out",
        "tracking": {"tensorboard": False},
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["ft", "train", "--config", str(tmp_path / "ft.yaml"), "--max-steps", "1"]) == 0
    qwen3 = chat_templates.SHIPPED["qwen3"].text()
    assert (tmp_path / "out" / "chat_template.jinja").read_text(encoding="utf-8") == qwen3
    export = tmp_path / "export"
    formats = "openclaw-lora,vllm,merged"
    assert (
        main(["ft", "export", "--model-dir", str(tmp_path / "out"), "--output", str(export), "--format", formats]) == 0
    )
    summary = json.loads((export / "export-summary.json").read_text())
    assert len(summary["parity"]) == 4 and all(check["prompts"] > 0 for check in summary["parity"])
    for fmt in formats.split(","):
        assert (export / fmt / "chat_template.jinja").read_text(encoding="utf-8") == qwen3
    assert json.loads((export / "openclaw-lora" / "clawtune-manifest.json").read_text())["chat_template"]["source"] == (
        "clawtune:qwen3"
    )

    # The gateway renders the agent's next request (history with a tool call and its result) as training did.
    conversation = short[0]
    cut = max(i for i, m in enumerate(conversation["messages"]) if m["role"] == "assistant")
    request = conversation["messages"][:cut]
    engine = Engine("clawtune/tiny-agent", device="cpu")
    try:
        engine.add_adapter("agent", str(export / "openclaw-lora"))
        trained = load_tokenizer(str(export / "openclaw-lora"))[0]
        text = parity.training_renderer(trained)(request, conversation["tools"])
        assert "<|im_start|>assistant\n<think>\n\n</think>\n\n" in text  # history keeps its think blocks, as trained
        assert (
            engine.render("agent", request, conversation["tools"])
            == trained(text, add_special_tokens=False)["input_ids"]
        )
    finally:
        engine.close()
    models = {
        "models": [
            {
                "id": "agent",
                "provider": "clawtune",
                "model": "clawtune/tiny-agent",
                "adapters": {"agent": {"path": str(export / "openclaw-lora")}},
            }
        ],
        "server": {"port": 0, "data_dir": str(tmp_path / "gateway")},
    }
    with Server(Gateway(parse(models, str(tmp_path / "models.yaml")))) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
        reply = client.chat.completions.create(
            model="agent", messages=request, tools=conversation["tools"], max_tokens=8
        )
        assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls") and reply.usage.completion_tokens > 0
        assert reply.usage.prompt_tokens == len(trained(text, add_special_tokens=False)["input_ids"])


def test_training_templates_render_the_same_without_their_markers(base: Any, examples: list[dict[str, Any]]) -> None:
    """The GGUF carries the template without {% generation %} tags (llama.cpp's Jinja lacks them): same text."""
    for shipped in chat_templates.SHIPPED.values():
        marked = copy.deepcopy(base)
        marked.chat_template = shipped.text()
        plain = copy.deepcopy(base)
        plain.chat_template = chat_templates.without_markers(shipped.text())
        assert not re.search(r"\{%-?\s*(end)?generation", plain.chat_template)
        for example in examples[:10]:
            messages = template_messages(example["messages"])
            tools = example.get("tools")
            for generation in (False, True):
                try:
                    expected = raw_render(marked, messages, tools, generation)
                except Exception as exc:  # Phi and Gemma raise on tools: so must the plain one
                    with pytest.raises(type(exc)):
                        raw_render(plain, messages, tools, generation)
                    continue
                assert raw_render(plain, messages, tools, generation) == expected, shipped.name


def test_a_turn_whose_calls_the_template_drops_is_refused_not_trained_empty(base: Any) -> None:
    """gpt-oss writes one call per turn (the model stops at <|call|>): a turn with two is refused, by name."""
    from clawtune.export import parity

    family = FAMILIES["gpt-oss"]
    trainer = family_tokenizer(base, family, chat_templates.SHIPPED["gpt-oss"].text())
    with pytest.raises(TemplateError, match=r"clawtune:gpt-oss: dropped a trained turn's tool calls.*get_fx_rate"):
        render_example(trainer, parity.SAMPLE)
    twice = copy.deepcopy(parity.SAMPLE)
    first = twice["messages"][2]["tool_calls"][0]
    twice["messages"][2]["tool_calls"][1] = {**first, "id": "call_2"}
    with pytest.raises(TemplateError, match="2 calls of query_database") as refused:
        render_example(trainer, twice)
    assert refused.value.rule == "calls-dropped"
