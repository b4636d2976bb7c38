"""Train/serve parity (export/parity.py): the Ollama TEMPLATE renders the tokens training rendered, and a template
that drifts is caught at the first differing prompt. Needs a tokenizer, not torch."""

from __future__ import annotations

from typing import Any

import pytest

from clawtune.export import gotemplate, ollama, parity
from clawtune.models import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer("clawtune/tiny-agent")[0]


def _ollama_renderer(template: str) -> parity.Renderer:
    return lambda messages, tools: gotemplate.render(template, ollama.ollama_values(messages, tools))


def test_ollama_template_renders_training_tokens(tokenizer: Any) -> None:
    go, stops = ollama.known_go_template(tokenizer.chat_template) or ("", [])
    report = parity.check(
        "ollama", tokenizer, parity.training_renderer(tokenizer), _ollama_renderer(go), [parity.SAMPLE]
    )
    assert report.prompts == 3 and report.tokens > 1000 and stops == ["<|im_end|>", "<|im_start|>"]


def test_parity_catches_a_different_template(tokenizer: Any) -> None:
    go, _ = ollama.known_go_template(tokenizer.chat_template) or ("", [])
    # The most common drift: tool-call arguments written with spaces (json.dumps) instead of the trained form.
    drifted = go.replace("{{ .Function.Arguments }}", "{{ json .Function.Name | print }}")
    with pytest.raises(parity.ParityError, match=r"prompt before message 5.*\n  training: .*arguments"):
        parity.check(
            "ollama", tokenizer, parity.training_renderer(tokenizer), _ollama_renderer(drifted), [parity.SAMPLE]
        )
    missing_newline = go.replace("</tools>\n\nFor each", "</tools>\nFor each")
    with pytest.raises(parity.ParityError, match="prompt before message 2"):
        parity.check(
            "ollama", tokenizer, parity.training_renderer(tokenizer), _ollama_renderer(missing_newline), [parity.SAMPLE]
        )
