"""clawtune's training templates: for families whose stock chat template cannot be trained as it is.

A stock template is unusable for training when it renders a turn differently once more messages follow (Qwen3's think
blocks, Hermes' tool results, Mistral's tool list and system prompt), when it renders no generation prompt that the
turn continues (QwQ and the R1 distills open a think block the final turn lacks), or when it cannot show what the
data holds (Gemma 2's system role, Phi-3.5's appended end-of-text). Each training template here renders the turn
being generated exactly as its stock template renders it at serving time, carries `{% generation %}` markers for the
loss mask, and says in its header comment how it differs from the stock template in earlier turns. The model is
trained with it and the export ships it, so every server renders what training rendered.

A stock template is recognised by the sha256 of its text as the model publishes it (the copies in
`tests/fixtures/templates/`); it is then replaced for training, and `clawtune ft check-template` shows both.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clawtune.problems import InputError

HERE = Path(__file__).parent / "templates"
PREFIX = "clawtune:"
DEFAULT_NAME = "clawtune chatml+tools"  # clawtune's default template for bases without one (models/chatml_tools.jinja)


@dataclass(frozen=True)
class TrainingTemplate:
    """A shipped training template and the stock templates it stands in for."""

    name: str
    family: str
    models: str
    stock: frozenset[str]  # sha256 of the stock template texts (stripped) it replaces

    @property
    def path(self) -> Path:
        return HERE / f"{self.name}.jinja"

    @property
    def reference(self) -> str:
        """How a config names it: `chat_template: clawtune:NAME`."""
        return PREFIX + self.name

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


SHIPPED: dict[str, TrainingTemplate] = {
    t.name: t
    for t in (
        TrainingTemplate(
            "qwen3",
            "Qwen3",
            "Qwen/Qwen3-0.6B ... Qwen3-235B-A22B (the hybrid thinking releases)",
            frozenset({"87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5"}),
        ),
        TrainingTemplate(
            "qwq",
            "QwQ",
            "Qwen/QwQ-32B",
            frozenset({"cb2d7aa140bed098f4ac8ab1a403980e6768d58ec95ef701668fc7dd017e0762"}),
        ),
        TrainingTemplate(
            "deepseek-r1-distill",
            "DeepSeek-R1 distills",
            "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B/7B/14B/32B, DeepSeek-R1-Distill-Llama-8B/70B",
            frozenset({"56a1447ad31926fdc21fb07e56e5642bd9c850c4f52d8c8af7bbe5f079a84f5f"}),
        ),
        TrainingTemplate(
            "gpt-oss",
            "gpt-oss",
            "openai/gpt-oss-20b, openai/gpt-oss-120b",
            frozenset({"a4c9919cbbd4acdd51ccffe22da049264b1b73e59055fa58811a99efbd7c8146"}),
        ),
        TrainingTemplate(
            "hermes",
            "Hermes tool use",
            "NousResearch/Hermes-2-Pro-*, NousResearch/Hermes-3-* (their tool_use template)",
            frozenset({"ce62e308475b364e1fc76699dccbddeb9ac08344f90d59719dba86a9922834d9"}),
        ),
        TrainingTemplate(
            "mistral-nemo",
            "Mistral Nemo",
            "mistralai/Mistral-Nemo-Instruct-2407",
            frozenset({"e7deee034838db2bfc7487788a3013d8a307ab69f72f3c54a85f06fd76007d4e"}),
        ),
        TrainingTemplate(
            "mistral-small-3.2",
            "Mistral Small 3.2",
            "mistralai/Mistral-Small-3.2-24B-Instruct-2506",
            frozenset({"d990bccdaaa20611e261434bf60bce767b03d8ee1f1d9b5cd0742b1cc96066b9"}),
        ),
        TrainingTemplate(
            "phi-3.5",
            "Phi-3.5",
            "microsoft/Phi-3.5-mini-instruct",
            frozenset({"78d976a442bcde2f0be15aafbb8e3050e1104f86732266f68403251b89982a90"}),
        ),
        TrainingTemplate(
            "gemma-2",
            "Gemma 2",
            "google/gemma-2-2b-it, gemma-2-9b-it, gemma-2-27b-it",
            frozenset({"ecd6ae513fe103f0eb62e8ab5bfa8d0fe45c1074fa398b089c93a7e70c15cfd6"}),
        ),
    )
}


# Stock templates clawtune trains as they are (their renderings extend each other), named in messages and tables.
KNOWN_STOCK: dict[str, str] = {
    "55b2f4a26ac9ee719330a61a0c39d9e538b0e9322212f048326318cff4f8674a": "Qwen2.5",
    "93c0e9aa3629bbd77e68dbc0f5621f6e6b23aa8d74b932595cdb8d64684526d7": "Llama 3.1/3.3",
    "d82792f95932f1c9cef5c4bd992f171225e3bf8c7b609b4557c9e1ec96be819f": "Llama 3.2",
    "d0657ba05651bd2134160e7a9fbe40f1aa51ecb6bc2724618e34b04466291f87": "Granite 3.3",
}


def digest(template: str) -> str:
    return hashlib.sha256(template.strip().encode("utf-8")).hexdigest()


def for_stock(template: Any) -> TrainingTemplate | None:
    """The training template that stands in for this stock template (a string, or a dict of named variants as some
    tokenizers carry: Hermes' `tool_use`), or None."""
    texts = template.values() if isinstance(template, dict) else [template]
    for text in texts:
        if isinstance(text, str):
            found = digest(text)
            for shipped in SHIPPED.values():
                if found in shipped.stock:
                    return shipped
    return None


def stock_family(template: Any) -> str | None:
    """The family of a recognised stock template (one clawtune replaces for training, or trains as is), or None."""
    shipped = for_stock(template)
    if shipped is not None:
        return shipped.family
    texts = template.values() if isinstance(template, dict) else [template]
    for text in texts:
        if isinstance(text, str) and digest(text) in KNOWN_STOCK:
            return KNOWN_STOCK[digest(text)]
    return None


def shipped_name(template: Any) -> str | None:
    """`clawtune:NAME` if `template` is one of the shipped training templates, else None."""
    if isinstance(template, str):
        found = digest(template)
        for shipped in SHIPPED.values():
            if digest(shipped.text()) == found:
                return shipped.reference
    return None


_MARKER = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


def without_markers(template: str) -> str:
    """The template without its `{% generation %}` tags, which only mark spans for the loss mask: the same text for
    engines whose Jinja has no such tag (llama.cpp reads the template from the GGUF)."""
    return _MARKER.sub("", template)


def resolve(reference: str) -> TrainingTemplate:
    """`clawtune:NAME` (or NAME) as a shipped template; an unknown name lists the known ones."""
    name = reference.removeprefix(PREFIX)
    if name not in SHIPPED:
        raise InputError(
            f"chat_template {reference!r}: clawtune ships no such template; choose from "
            + ", ".join(t.reference for t in SHIPPED.values())
        )
    return SHIPPED[name]
