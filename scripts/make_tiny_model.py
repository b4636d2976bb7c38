"""Rebuild the bundled `clawtune/tiny-agent` model: tokenizer, weights, general pre-training (about 23 minutes on
2 CPU cores; run once, the result is committed). A build script, not part of the package: it drives the trainer and
reads the GGUF exporter's pre-tokenizer split, which no library module below them may import.

Build `clawtune/tiny-agent`: a 4-layer Llama, its byte-level BPE tokenizer, pre-trained as a general assistant.

1. The tokenizer is trained on the very conversations the model is pre-trained on (`general.py`, plus the chat
   template's scaffolding), so every token it has is one the model learns to read and write. (An earlier build also
   trained it on sample-agent sessions: 1,742 of its 4,102 tokens never occurred in pre-training, their tied
   embeddings stayed untrained, and a LoRA fine-tune, which leaves embeddings alone, could not make the model write
   them.) It splits as Qwen2 does: every digit is a token.
2. The model starts from seeded random weights and is then pre-trained (full fine-tuning with clawtune's own trainer,
   loss on every token as a base model learns) on general-assistant conversations only: it learns to talk and to call
   an offered tool, and knows nothing of the sample agent's finance tools, data or wording. Fine-tuning must teach
   those, which is what the demo's baseline-versus-fine-tuned evaluation measures.

Deterministic for a given torch build.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clawtune.models import BUNDLED, TINY_AGENT, default_chat_template

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOOL_TAGS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<tools>", "</tools>"]
PRETRAIN_SEED = 0  # the general conversations pre-trained on (the forgetting set uses another seed)


def general_texts(n: int, seed: int = PRETRAIN_SEED) -> Iterator[str]:
    """General-assistant conversations rendered with the default template (by default the pre-training ones)."""
    from clawtune.models.general import conversations

    render = _renderer()
    for example in conversations(n, seed=seed):
        yield render(messages=example["messages"], tools=example["tools"], add_generation_prompt=False)


def _renderer() -> Any:
    """The default chat template as a plain function (the same Jinja settings transformers uses)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda value, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    template = env.from_string(default_chat_template())

    def render(messages: list[dict[str, Any]], **kwargs: Any) -> str:
        from clawtune.artifacts.render import template_messages

        return template.render(messages=template_messages(messages), **kwargs)  # arguments as objects, as in training

    return render


def train_tokenizer(texts: Iterator[str], vocab_size: int, chat_template: str | None) -> Any:
    """A byte-level BPE tokenizer wrapped for transformers, split as Qwen2 splits (llama.cpp's `qwen2`): every digit
    is a token of its own, so a number is copied, or written with thousands separators, digit by digit."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from clawtune.export.gguf import QWEN2_SPLIT

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    scaffolding = ["<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_start|>tool\n"]
    tokenizer.train_from_iterator([*scaffolding, *texts], trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    wrapped.add_tokens(TOOL_TAGS)
    if chat_template is not None:
        wrapped.chat_template = chat_template
    return wrapped


def build(
    out: Path,
    *,
    hidden_size: int = 192,
    layers: int = 4,
    heads: int = 6,
    kv_heads: int = 2,
    intermediate_size: int = 512,
    vocab_size: int = 4096,
    chat_template: str | None = "default",
    seed: int = 0,
    pretrain: int = 0,
    pretrain_epochs: float = 2,
) -> Path:
    """Write a tiny Llama model folder (config, bf16 safetensors, tokenizer with template) to `out`, pre-trained on
    `pretrain` general-assistant conversations when that is more than 0."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    template = default_chat_template() if chat_template == "default" else chat_template
    tokenizer = train_tokenizer(general_texts(max(pretrain, 2000)), vocab_size, template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=32768,  # RoPE: takes an OpenClaw prompt (about 19K tokens) whole
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).bfloat16()
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if pretrain:
        pretrain_general(out, pretrain, pretrain_epochs)
        untie_output(out)
    return out


def untie_output(folder: Path) -> None:
    """Give the model its own output layer, a copy of the tied embeddings (the same logits). A 192-wide model cannot
    learn to write a new domain's words with LoRA on its hidden layers alone (its output layer is the bottleneck), and
    a LoRA on a tied output layer would, once merged, change the input embeddings too."""
    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.save_pretrained(folder)


def pretrain_general(folder: Path, n: int, epochs: float) -> None:
    """Full fine-tuning of the model in `folder` on `n` general conversations, written back to `folder` in bf16."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from clawtune.models.general import conversations
    from clawtune.train.config import FTConfig
    from clawtune.train.options import TrainOptions
    from clawtune.train.run import run_training

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "general.jsonl"
        data.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in conversations(n, seed=PRETRAIN_SEED)))
        config = FTConfig.model_validate(
            {
                "base_model": str(folder),
                "method": "full",
                "data": {"train": str(data)},
                "training": {
                    "batch_size": 8,
                    "epochs": epochs,
                    "learning_rate": 3e-3,
                    "warmup_steps": 50,
                    "max_seq_length": 1024,
                    "save_steps": 100_000,
                    "gradient_checkpointing": False,
                    "weight_decay": 0.01,
                    "logging_steps": 50,
                    "train_on_inputs": True,  # pre-training: every token, as a base model learns
                },
                "use_unsloth": False,
                "output_dir": str(Path(tmp) / "out"),
                "tracking": {"tensorboard": False},
            }
        )
        summary = run_training(TrainOptions(config=config))
        model = AutoModelForCausalLM.from_pretrained(Path(tmp) / "out", dtype=torch.bfloat16)
        model.config.use_cache = True  # training turned it off; generation wants it
        model.save_pretrained(folder)
        (folder / "pretraining.json").write_text(
            json.dumps(
                {
                    "conversations": n,
                    "epochs": epochs,
                    "train_on_inputs": True,
                    "steps": summary["steps"],
                    "tokens_seen": summary["tokens_seen"],
                    "final_train_loss": summary["final_train_loss"],
                    "losses": summary["losses"],
                },
                indent=2,
            )
        )
        shutil.rmtree(Path(tmp) / "out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=BUNDLED[TINY_AGENT])
    parser.add_argument("--pretrain", type=int, default=10000, help="general conversations to pre-train on")
    parser.add_argument("--epochs", type=float, default=2)
    args = parser.parse_args()
    out = build(args.output, pretrain=args.pretrain, pretrain_epochs=args.epochs)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
