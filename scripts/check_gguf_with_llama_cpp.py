"""Run an export's GGUF files in llama.cpp (llama-cpp-python) and compare them with Hugging Face on the same tokens.

    python scripts/check_gguf_with_llama_cpp.py --checkpoint fine-tuned-model/checkpoint-500 --export exports/NAME

`--export` is an `ft export --format all` folder (its `ollama/` holds model.gguf, base.gguf and adapter.gguf; its
`merged/` the merged model). Prints the largest absolute logit difference of the merged GGUF against the merged model,
of base.gguf + adapter.gguf against the adapter, how far the adapter moves the logits (so the differences mean
something), and whether llama.cpp tokenizes a rendered prompt to the same ids. Needs llama-cpp-python (optional: it
compiles llama.cpp).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()

    import torch
    from llama_cpp import Llama

    from clawtune.export import parity
    from clawtune.models import load_tokenizer
    from clawtune.models.checkpoint import load_for_inference

    tokenizer = load_tokenizer(str(args.checkpoint))[0]
    text = parity.training_renderer(tokenizer)(parity.SAMPLE["messages"][:6], parity.SAMPLE["tools"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: args.tokens]

    def hugging_face(name: str) -> np.ndarray:
        model = load_for_inference(name, device="cpu", dtype=torch.float32).model
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0].numpy()

    def llama_cpp(**kwargs: str) -> tuple[Llama, np.ndarray]:
        llm = Llama(n_ctx=max(512, len(ids) + 8), logits_all=True, verbose=False, n_threads=2, **kwargs)
        llm.eval(ids)
        return llm, np.array(llm.scores[: len(ids)])

    folder = args.export / "ollama"
    merged = hugging_face(str(args.export / "merged"))
    llm, scores = llama_cpp(model_path=str(folder / "model.gguf"))
    print(
        f"model.gguf vs the merged model: max |logit difference| {np.abs(scores - merged).max():.4f} over {len(ids)} tokens"
    )
    same = (
        llm.tokenize(text.encode(), add_bos=False, special=True)
        == tokenizer(text, add_special_tokens=False)["input_ids"]
    )
    print(f"llama.cpp tokenizes the rendered prompt to the same ids: {same}")
    adapter = hugging_face(str(args.checkpoint))
    base = hugging_face(str(load_for_inference(str(args.checkpoint), device="cpu").base_model))
    _, scores = llama_cpp(model_path=str(folder / "base.gguf"), lora_path=str(folder / "adapter.gguf"))
    print(f"base.gguf + adapter.gguf vs the adapter: max |logit difference| {np.abs(scores - adapter).max():.4f}")
    print(f"(the adapter itself moves the logits by up to {np.abs(adapter - base).max():.2f})")


if __name__ == "__main__":
    main()
