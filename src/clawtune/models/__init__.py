"""Loading base models and tokenizers by Hugging Face id, local folder, or bundled name, and fingerprinting them.

`clawtune/tiny-agent` is a small Llama-architecture model shipped inside the package (built by
`scripts/make_tiny_model.py`) so the demo and the tests train, evaluate and serve a real model without a download.
A tokenizer without a chat template (a base model) gets clawtune's tool-capable default, which is then saved with
every checkpoint so serving renders exactly what training saw.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clawtune.artifacts.chat_templates import DEFAULT_NAME
from clawtune.problems import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

HERE = Path(__file__).parent
TINY_AGENT = "clawtune/tiny-agent"
BUNDLED = {TINY_AGENT: HERE / "tiny-agent"}
DEFAULT_TEMPLATE_NAME = DEFAULT_NAME


class ModelLoadError(InputError):
    """A model or tokenizer could not be found or loaded; says where clawtune looked."""


def default_chat_template() -> str:
    """clawtune's default template: ChatML turns with Hermes-style `<tool_call>` blocks."""
    return (HERE / "chatml_tools.jinja").read_text(encoding="utf-8")


def resolve(name: str, needs: str = "config.json") -> str:
    """The path or hub id to load `name` from: a bundled name, a local folder (holding `needs`), or a hub id."""
    if name in BUNDLED:
        path = BUNDLED[name]
        if not (path / needs).is_file():
            raise ModelLoadError(f"{name}: the bundled model is missing from {path}; run scripts/make_tiny_model.py")
        return str(path)
    local = Path(name).expanduser()
    if local.exists():
        if not (local / needs).is_file():
            raise ModelLoadError(f"{name}: a local model folder needs a {needs} (found none in {local})")
        return str(local)
    return name


# Base models people fine-tune agents on (the founding document's and the usual small ones), for `ft init`'s
# did-you-mean and for accepting a well-known id that is not downloaded yet. Any other id is checked on the hub.
KNOWN_BASES = (
    "meta-llama/Llama-3.1-8B",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B",
    "meta-llama/Llama-3.2-3B-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-7B",
    "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-1.7B",
    "Qwen/Qwen3-4B",
    "Qwen/Qwen3-8B",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "google/gemma-2-2b-it",
    "google/gemma-2-9b-it",
)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def check_base_model(name: str) -> str | None:
    """Refuse a base model that does not exist: a bundled name, a local folder with a config.json, a Hugging Face id
    in the local cache or on the hub (or a well-known one while offline). Returns a note when the id could not be
    checked or is not downloaded yet; raises `ModelLoadError` with a did-you-mean otherwise."""
    import difflib
    import os

    def close(candidates: list[str]) -> str:
        found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        if not found:
            found = difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=1, cutoff=0.6)
            found = [c for c in candidates if c.lower() in found]
        return f"; did you mean {found[0]!r}?" if found else ""

    if name in BUNDLED:
        resolve(name)
        return None
    if name.split("/", 1)[0] == TINY_AGENT.split("/", 1)[0]:
        raise ModelLoadError(
            f"{name}: no such bundled model (clawtune ships {', '.join(BUNDLED)}){close(list(BUNDLED))}"
        )
    local = Path(name).expanduser()
    if local.exists() or _looks_like_path(name):
        if not local.exists():
            parent = local.parent if local.parent.is_dir() else None
            siblings = [str(parent / p.name) for p in parent.iterdir() if p.is_dir()] if parent else []
            raise ModelLoadError(f"{name}: no such folder{close(siblings)}")
        resolve(name)
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repository id
        raise ModelLoadError(
            f"{name}: neither a local folder nor a Hugging Face id (org/name){close([*BUNDLED, *KNOWN_BASES])}"
        ) from None
    if isinstance(cached, str):
        return None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline:
        if name in KNOWN_BASES:
            return f"{name} is not in the Hugging Face cache yet; training downloads it (HF_HUB_OFFLINE is set here)"
        what = "not in the Hugging Face cache" if "/" in name else "no such folder, nor a Hugging Face id in the cache"
        raise ModelLoadError(
            f"{name}: {what}, and HF_HUB_OFFLINE=1 forbids a download{close([*BUNDLED, *KNOWN_BASES])}"
        )
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(name, timeout=10)
    except GatedRepoError:
        return f"{name} is gated on the hub: accept its licence and `hf auth login` before training"
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"{name}: no such model on the Hugging Face hub{close([*BUNDLED, *KNOWN_BASES])}"
        ) from None
    except Exception as exc:  # offline, proxy, rate limit: cannot tell, so do not refuse
        return f"{name}: could not check the hub ({type(exc).__name__}); training will need it downloaded" + close(
            [*BUNDLED, *KNOWN_BASES]
        )
    return None


def _load_error(name: str, what: str, exc: Exception) -> ModelLoadError:
    hint = ""
    if "/" in name and not Path(name).exists():
        hint = (
            " (a Hugging Face id needs network access or the hub cache; with HF_HUB_OFFLINE=1 only the cache is read)"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelLoadError(f"{name}: cannot load the {what}{hint}: {first}")


def load_tokenizer(
    name: str, chat_template: Path | str | None = None, training: bool = False
) -> tuple[PreTrainedTokenizerBase, str]:
    """The tokenizer of `name` with a chat template that handles tools, and where that template came from.

    `chat_template`: a Jinja file, `clawtune:NAME` (a shipped training template) or `model` (the model's own as is).
    With `training`, a recognised stock template that cannot be trained on as it is gets clawtune's training template
    for its family (see artifacts/chat_templates.py); the checkpoint then carries that template, and so does every export.
    """
    from transformers import AutoTokenizer

    from clawtune.artifacts import chat_templates

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve(name, "tokenizer_config.json"))
    except (OSError, ValueError) as exc:
        raise _load_error(name, "tokenizer", exc) from None
    if not tokenizer.is_fast:
        raise ModelLoadError(f"{name}: clawtune needs a fast (Rust) tokenizer for exact loss masks; found a slow one")
    reference = str(chat_template) if chat_template is not None else None
    if reference is not None and reference.startswith(chat_templates.PREFIX):
        tokenizer.chat_template = chat_templates.resolve(reference).text()
        source = reference
    elif reference is not None and reference != "model":
        path = Path(reference)
        try:
            tokenizer.chat_template = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelLoadError(f"chat_template {path}: cannot read it ({exc.strerror or exc})") from None
        source = str(path)
    elif getattr(tokenizer, "chat_template", None):
        source = "model"
        shipped = chat_templates.for_stock(tokenizer.chat_template) if training and reference is None else None
        if shipped is not None:
            tokenizer.chat_template = shipped.text()
            source = shipped.reference
    else:
        tokenizer.chat_template = default_chat_template()
        source = DEFAULT_TEMPLATE_NAME
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.clawtune_template_source = source  # names the template in messages (artifacts/template_profile.py)
    return tokenizer, source


def load_model(name: str, **kwargs: Any) -> Any:
    """`AutoModelForCausalLM.from_pretrained` on the resolved name, with load errors made readable."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(resolve(name), **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(name, "model", exc) from None


# Keys of a model config that say how it was loaded or saved, not what the model is.
_TRANSIENT_CONFIG_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache", "_commit_hash"}


def fingerprint(config: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 over what makes a base model itself: its architecture config and its vocabulary.

    An adapter trained on one base is refused on another with a different fingerprint (see the export manifest).
    """
    stable = {k: v for k, v in config.items() if k not in _TRANSIENT_CONFIG_KEYS and not k.startswith("_attn")}
    digest = hashlib.sha256()
    digest.update(json.dumps(stable, sort_keys=True, default=str).encode())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    digest.update(json.dumps(sorted(map(str, tokenizer.all_special_tokens))).encode())
    return "sha256:" + digest.hexdigest()
