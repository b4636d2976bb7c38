"""`clawtune ft export`: a trained checkpoint leaves the training folder as something a user can ship.

Formats:
- `openclaw-lora`: the PEFT adapter, the chat template it was trained with, the tokenizer, a manifest (base id,
  revision and fingerprint, training config, evaluation summary, sha256 of every file) and a model card.
- `merged`: the adapter folded into the base weights, a whole Hugging Face model (refused if any weight is NaN/inf).
- `gguf`: the adapter as a GGUF LoRA (`adapter.gguf`) for llama.cpp, read back and checked tensor by tensor.
- `ollama`: Modelfiles for both routes: FROM a GGUF of the base + ADAPTER adapter.gguf, and FROM the merged model as
  one GGUF (for Ollama releases that refuse ADAPTER), each with a TEMPLATE proven to render training's tokens.
- `vllm`: the adapter and the `vllm serve` command, with the checks vLLM applies (rank, modules, no DoRA).

Every export is built in a staging folder next to the output and renamed into place: a crash leaves the old export
or none, never half of one; an existing output is replaced only with `force`. Before anything is written, the
checkpoint's manifest is checked (files unchanged, the base is the one it was trained on) and every template the
export ships is rendered against the training renderer (`parity.py`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.artifacts.adapter import FILES as ADAPTER_FILES
from clawtune.artifacts.adapter import Adapter, read_adapter
from clawtune.artifacts.chat_templates import without_markers
from clawtune.artifacts.files import staged_folder
from clawtune.data.provenance import trained_policy, training_examples
from clawtune.export import gguf as gguf_export
from clawtune.export import ollama, parity
from clawtune.export.gotemplate import render as render_go
from clawtune.export.options import ExportError, ExportOptions

ADAPTER_FORMATS = {"openclaw-lora", "gguf", "vllm"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted --max-lora-rank values
VLLM_MODULES = {
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "qkv_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "gate_up_proj",
    "lm_head",
}
VLLM_REFUSED = ("dora", "modules_to_save", "bias")


def source_folder(model_dir: Path) -> Path:
    """The checkpoint or final training output to export: a folder holding a clawtune manifest."""
    from clawtune.artifacts.manifest import MANIFEST, find_checkpoint

    if (model_dir / MANIFEST).is_file():
        return model_dir
    return find_checkpoint(model_dir)


def evaluation_summary(folder: Path) -> dict[str, Any] | None:
    """The headline of `clawtune ft evaluate`'s report for this checkpoint, if one was written."""
    for candidate in (folder / "eval" / "eval-report.json", folder.parent / "eval" / "eval-report.json"):
        if candidate.is_file():
            report = json.loads(candidate.read_text(encoding="utf-8"))
            comparison = report.get("comparison") or {}

            return {
                "report": str(candidate),
                "test_set": report.get("test_set"),
                "turns": report.get("items"),
                "metrics": {
                    metric: {side: _metric(report, side, metric) for side in ("baseline", "fine_tuned")}
                    for metric in ("accuracy", "f1", "tool_name_accuracy", "tool_call_accuracy", "hallucination_rate")
                },
                "significant": comparison.get("significant"),
                "verdict": comparison.get("verdict"),
            }
    return None


def _metric(report: dict[str, Any], side: str, metric: str) -> float | None:
    found = (report.get(side) or {}).get(metric)
    return found.get("value") if isinstance(found, dict) else found


def _parity_examples(trained: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The built-in sample plus a few training conversations (those with tools first)."""
    found = sorted(trained, key=lambda e: not e.get("tools"))
    return [parity.SAMPLE, *found[: max(0, limit)]]


@dataclass
class _Context:
    options: ExportOptions
    folder: Path
    manifest: dict[str, Any]
    tokenizer: Any
    template: str
    name: str
    examples: list[dict[str, Any]]
    base_config: dict[str, Any]
    # what every format's manifest records, worked out once: the training data's system-prompt policy, the evaluation
    system_prompt: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    parity: list[dict[str, Any]] = field(default_factory=list)
    merged_dir: Path | None = None
    work: Path | None = None


def export(options: ExportOptions) -> dict[str, Any]:
    """Write the export; return a summary (what was written where, parity results, commands to run next)."""
    from rich.console import Console

    from clawtune.artifacts.manifest import read_manifest
    from clawtune.models import load_tokenizer
    from clawtune.models.checkpoint import verify_base, verify_files

    console = Console(stderr=True)
    custom_template = read_chat_template(options.chat_template) if options.chat_template is not None else None
    folder = source_folder(options.model_dir)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    verify_base(folder, manifest, options.allow_base_mismatch)
    kind = manifest.get("kind", "lora")
    if kind == "full" and ADAPTER_FORMATS.intersection(options.formats):
        raise ExportError(
            f"{folder} is a full fine-tune, not an adapter: formats {', '.join(sorted(ADAPTER_FORMATS))} need an "
            "adapter; use merged (the model itself) or ollama"
        )
    tokenizer, _ = load_tokenizer(str(folder))
    template = custom_template if custom_template is not None else tokenizer.chat_template
    name = options.name or options.output.name
    trained = training_examples(manifest)  # read once: parity samples and the system-prompt policy
    ctx = _Context(
        options,
        folder,
        manifest,
        tokenizer,
        template,
        name,
        _parity_examples(trained, options.parity_examples),
        _base_config(manifest),
        policy.record() if (policy := trained_policy(manifest, trained)) else None,
        evaluation_summary(folder),
    )
    _check_jinja(ctx)

    output = options.output
    if output.exists() and not options.force:
        raise ExportError(f"{output} already exists; pass --force to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    ctx.work = Path(tempfile.mkdtemp(prefix=f".{output.name}.work-", dir=output.parent))
    written: dict[str, Any] = {}
    try:
        with staged_folder(output) as staging:
            for fmt in options.formats:
                target = staging if len(options.formats) == 1 else staging / fmt
                target.mkdir(parents=True, exist_ok=True)
                console.print(f"[bold]export[/] {fmt} -> {output if len(options.formats) == 1 else output / fmt}")
                written[fmt] = WRITERS[fmt](ctx, target)
            summary = {
                "source": str(folder),
                "output": str(output),
                "name": name,
                "formats": written,
                "parity": ctx.parity,
                "base_model": manifest.get("base_model"),
                "agent_id": _agent_of(trained),
            }
            (staging / "export-summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(ctx.work, ignore_errors=True)
    return summary


def _agent_of(examples: list[dict[str, Any]]) -> str | None:
    """The OpenClaw agent whose sessions the training data came from (the most common, if several)."""
    from collections import Counter

    agents = Counter(str(a) for e in examples if (a := (e.get("metadata") or {}).get("agent_id")))
    return agents.most_common(1)[0][0] if agents else None


# ---- checks -------------------------------------------------------------------------------------------------


def read_chat_template(path: Path) -> str:
    """`--chat-template FILE`, read before any model is loaded: a missing, unreadable or empty file is refused."""
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ExportError(f"--chat-template {path}: a folder; give the Jinja template file") from None
    except OSError as exc:
        raise ExportError(f"--chat-template {path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ExportError(f"--chat-template {path}: not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise ExportError(f"--chat-template {path}: the file is empty")
    return text


def _check_jinja(ctx: _Context) -> None:
    """The template shipped (as a Jinja file and in the tokenizer config) renders training's tokens."""
    import jinja2

    reference = parity.training_renderer(ctx.tokenizer)
    if ctx.template == ctx.tokenizer.chat_template:
        candidate = reference
    else:
        import copy

        shipped = copy.copy(ctx.tokenizer)
        shipped.chat_template = ctx.template

        def candidate(messages: list[Any], tools: list[dict[str, Any]] | None) -> str:
            try:
                return parity.training_renderer(shipped)(messages, tools)
            except jinja2.TemplateError as exc:
                line = getattr(exc, "lineno", None)
                raise ExportError(
                    f"--chat-template {ctx.options.chat_template}"
                    + (f", line {line}" if line else "")
                    + f": not a usable Jinja chat template: {type(exc).__name__}: {exc.message or exc}"
                ) from None

    report = parity.check("the exported chat template", ctx.tokenizer, reference, candidate, ctx.examples)
    ctx.parity.append(report.__dict__)


def _check_reloaded(ctx: _Context, folder: Path, fmt: str) -> None:
    """A tokenizer loaded from the export folder, as vLLM or transformers will load it, renders the same tokens."""
    from clawtune.models import load_tokenizer

    reloaded, _ = load_tokenizer(str(folder))
    report = parity.check(
        f"the tokenizer in the {fmt} export",
        ctx.tokenizer,
        parity.training_renderer(ctx.tokenizer),
        parity.training_renderer(reloaded),
        ctx.examples,
    )
    ctx.parity.append(report.__dict__)


# ---- shared pieces ------------------------------------------------------------------------------------------


def _copy_tokenizer(ctx: _Context, target: Path) -> None:
    for name in TOKENIZER_FILES:
        if (ctx.folder / name).is_file():
            shutil.copy2(ctx.folder / name, target / name)
    (target / "chat_template.jinja").write_text(ctx.template, encoding="utf-8")


def _base_config(manifest: dict[str, Any]) -> dict[str, Any]:
    from clawtune.models import resolve

    base = manifest["base_model"]
    path = Path(resolve(base))
    if path.is_dir():
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    from transformers import AutoConfig

    return dict(AutoConfig.from_pretrained(base).to_dict())


def _export_manifest(ctx: _Context, target: Path, fmt: str, kind: str, extra: dict[str, Any] | None = None) -> None:
    from clawtune.artifacts.manifest import write_manifest

    trained = ctx.manifest
    info = {
        "kind": kind,
        "export_format": fmt,
        "name": ctx.name,
        "exported_from": str(ctx.folder),
        "base_model": trained.get("base_model"),
        "base_model_path": trained.get("base_model_path"),
        "base_revision": trained.get("base_revision"),
        "base_fingerprint": trained.get("base_fingerprint"),
        "trained_as": trained.get("kind"),
        "chat_template": {"file": "chat_template.jinja", "source": (trained.get("chat_template") or {}).get("source")},
        "config": trained.get("config"),
        "evaluation": ctx.evaluation,
        "system_prompt": ctx.system_prompt,
        "parity": ctx.parity,
        "clawtune": trained.get("clawtune"),
        **(extra or {}),
    }
    (target / "README.md").write_text(model_card(ctx, fmt, info), encoding="utf-8")
    write_manifest(target, info)


def _merged(ctx: _Context) -> Path:
    """The adapter folded into the base, saved once per export (formats merged and ollama share it)."""
    if ctx.merged_dir is not None:
        return ctx.merged_dir
    assert ctx.work is not None
    target = ctx.work / "merged"
    target.mkdir()
    if ctx.manifest.get("kind") == "full":
        for path in ctx.folder.iterdir():
            if path.is_file() and (path.suffix in (".json", ".safetensors", ".jinja") or path.name.startswith("tok")):
                shutil.copy2(path, target / path.name)
    else:
        model = merge(ctx)
        model.save_pretrained(str(target), safe_serialization=True)
    _copy_tokenizer(ctx, target)
    for stray in ("clawtune-manifest.json", "training_args.bin", "trainer_state.json"):
        (target / stray).unlink(missing_ok=True)
    ctx.merged_dir = target
    return target


def merge(ctx: _Context) -> Any:
    """Base + adapter merged in the base's own dtype; refused if any weight is NaN or infinite."""
    import torch

    from clawtune.models.checkpoint import load_for_inference

    config = ctx.base_config
    name = ctx.options.merged_dtype or str(config.get("dtype") or config.get("torch_dtype") or "float32")
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ExportError(f"unknown dtype {name!r} for the merged model (float32, bfloat16, float16)")
    loaded = load_for_inference(
        str(ctx.folder), device="cpu", dtype=dtype, allow_base_mismatch=ctx.options.allow_base_mismatch, merge=True
    )
    check_finite(loaded.model)
    return loaded.model


def check_finite(model: Any) -> None:
    import torch

    broken = [name for name, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if broken:
        raise ExportError(
            f"the merged model has NaN or infinite values in {len(broken)} tensors ({', '.join(broken[:3])}...); "
            "refusing to write a broken model. The training diverged: lower the learning rate and retrain."
        )


# ---- formats ------------------------------------------------------------------------------------------------


def write_openclaw_lora(ctx: _Context, target: Path) -> dict[str, Any]:
    for name in ADAPTER_FILES:
        shutil.copy2(ctx.folder / name, target / name)
    _copy_tokenizer(ctx, target)
    _check_reloaded(ctx, target, "openclaw-lora")
    _export_manifest(ctx, target, "openclaw-lora", ctx.manifest.get("kind", "lora"))
    size = sum(p.stat().st_size for p in target.iterdir() if p.is_file())
    return {"folder": str(target.name), "bytes": size}


def write_merged(ctx: _Context, target: Path) -> dict[str, Any]:
    merged = _merged(ctx)
    for path in merged.iterdir():
        shutil.copy2(path, target / path.name)
    _check_reloaded(ctx, target, "merged")
    _export_manifest(ctx, target, "merged", "full", {"base_fingerprint": ctx.manifest.get("base_fingerprint")})
    return {"bytes": sum(p.stat().st_size for p in target.iterdir() if p.is_file())}


def write_gguf(ctx: _Context, target: Path) -> dict[str, Any]:
    info = gguf_export.write_lora_gguf(ctx.folder, ctx.base_config, target / "adapter.gguf", ctx.name)
    verify_lora_gguf(ctx, target / "adapter.gguf")
    (target / "chat_template.jinja").write_text(ctx.template, encoding="utf-8")
    _export_manifest(ctx, target, "gguf", "gguf-lora", {"gguf": info})
    return {**info, "file": "adapter.gguf", "bytes": (target / "adapter.gguf").stat().st_size}


def verify_lora_gguf(ctx: _Context, path: Path) -> None:
    """Read the GGUF back: metadata and every tensor must equal what was meant to be written."""
    import numpy as np

    expected, arch = gguf_export.lora_tensors(ctx.folder, ctx.base_config)
    fields, tensors = gguf_export.read_gguf(path)
    if fields.get("general.type") != "adapter" or fields.get("adapter.type") != "lora":
        raise ExportError(f"{path}: written without the adapter metadata")
    if fields.get("general.architecture") != arch:
        raise ExportError(f"{path}: architecture {fields.get('general.architecture')}, expected {arch}")
    if set(tensors) != set(expected):
        raise ExportError(f"{path}: tensors differ from the adapter's ({sorted(set(tensors) ^ set(expected))[:3]})")
    for name, array in expected.items():
        if not np.array_equal(tensors[name], array):
            raise ExportError(f"{path}: tensor {name} does not read back as written")


def write_ollama(ctx: _Context, target: Path) -> dict[str, Any]:
    if ctx.options.ollama_template is not None:
        go_template = ctx.options.ollama_template.read_text(encoding="utf-8")
        stops = ollama.CHATML_STOPS if "<|im_end|>" in go_template else []
    else:
        known = ollama.known_go_template(ctx.template)
        if known is None:
            raise ExportError(
                "clawtune has no Ollama TEMPLATE for this model's chat template (Ollama renders Go templates, not "
                "Jinja). Write one and pass --ollama-template FILE: the export checks that it renders the tokens "
                "training rendered."
            )
        go_template, stops = known
    report = parity.check(
        "the Ollama TEMPLATE",
        ctx.tokenizer,
        parity.training_renderer(ctx.tokenizer),
        lambda messages, tools: render_go(go_template, ollama.ollama_values(messages, tools)),
        ctx.examples,
    )
    ctx.parity.append(report.__dict__)
    (target / "template.gotmpl").write_text(go_template, encoding="utf-8")
    files: dict[str, Any] = {}
    merged = _merged(ctx)
    files["model.gguf"] = gguf_export.write_model_gguf(
        merged, target / "model.gguf", ctx.name, without_markers(ctx.template), ctx.options.gguf_f16
    )
    (target / "Modelfile.merged").write_text(ollama.modelfile("./model.gguf", None, go_template, stops), "utf-8")
    commands = [f"ollama create {ctx.name} -f Modelfile.merged"]
    if ctx.manifest.get("kind") != "full":
        files["adapter.gguf"] = gguf_export.write_lora_gguf(
            ctx.folder, ctx.base_config, target / "adapter.gguf", ctx.name
        )
        source = ctx.options.ollama_base
        if source is None:
            base_dir = _base_dir(ctx)
            files["base.gguf"] = gguf_export.write_model_gguf(
                base_dir,
                target / "base.gguf",
                ctx.manifest["base_model"],
                without_markers(ctx.template),
                ctx.options.gguf_f16,
            )
            source = "./base.gguf"
        (target / "Modelfile").write_text(ollama.modelfile(source, "./adapter.gguf", go_template, stops), "utf-8")
        commands.insert(0, f"ollama create {ctx.name} -f Modelfile")
    _export_manifest(ctx, target, "ollama", "ollama", {"ollama": {"commands": commands, "stops": stops}})
    return {"files": files, "commands": commands}


def _base_dir(ctx: _Context) -> Path:
    """The base model's folder with its tokenizer (for base.gguf); a hub id must be in the local cache."""
    from clawtune.models import resolve

    path = Path(resolve(ctx.manifest["base_model"]))
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(ctx.manifest["base_model"], allow_patterns=["*.json", "*.safetensors"]))


def vllm_check(adapter: Adapter) -> int:
    """The `--max-lora-rank` vLLM needs for this adapter; raises for what vLLM refuses (its PEFTHelper refuses DoRA,
    modules_to_save and biases)."""
    adapter.refuse(VLLM_REFUSED, "vLLM", "export the merged model instead", ExportError)
    rank = max([adapter.rank, *(int(r) for r in adapter.rank_pattern.values())])
    # a regex target ("all-linear" is expanded by PEFT when saving) names no module to check
    unknown = sorted({t.rsplit(".", 1)[-1] for t in adapter.targets} - VLLM_MODULES)
    if unknown:
        raise ExportError(
            f"vLLM applies LoRA only to attention and MLP projections and lm_head; this adapter also targets {unknown}"
        )
    allowed = [r for r in VLLM_RANKS if r >= rank]
    if not allowed:
        raise ExportError(f"rank {rank} is above vLLM's largest --max-lora-rank ({VLLM_RANKS[-1]})")
    return allowed[0]


def tool_call_parser(template: str) -> str:
    """vLLM's --tool-call-parser for the tool-call syntax a chat template teaches."""
    if "<tool_call>" in template:
        return "hermes"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|python_tag|>" in template or "<|eom_id|>" in template:
        return "llama3_json"
    return "hermes  # check: no known tool-call syntax found in the chat template"


def write_vllm(ctx: _Context, target: Path) -> dict[str, Any]:
    max_rank = vllm_check(read_adapter(ctx.folder))
    for name in ADAPTER_FILES:
        shutil.copy2(ctx.folder / name, target / name)
    _copy_tokenizer(ctx, target)
    _check_reloaded(ctx, target, "vllm")
    parser = tool_call_parser(ctx.template)
    command = (
        f"vllm serve {ctx.manifest['base_model']} --enable-lora --lora-modules {ctx.name}=$(pwd) "
        f"--max-lora-rank {max_rank} --chat-template $(pwd)/chat_template.jinja "
        f"--enable-auto-tool-choice --tool-call-parser {parser}"
    )
    (target / "serve.sh").write_text(
        f"#!/bin/sh\n# Serve {ctx.name} with vLLM (run from this folder).\n{command}\n", "utf-8"
    )
    (target / "serve.sh").chmod(0o755)
    _export_manifest(ctx, target, "vllm", ctx.manifest.get("kind", "lora"), {"vllm": {"command": command}})
    return {"command": command, "max_lora_rank": max_rank}


WRITERS = {
    "openclaw-lora": write_openclaw_lora,
    "merged": write_merged,
    "gguf": write_gguf,
    "ollama": write_ollama,
    "vllm": write_vllm,
}


# ---- model card ---------------------------------------------------------------------------------------------


def model_card(ctx: _Context, fmt: str, info: dict[str, Any]) -> str:
    config = info.get("config") or {}
    training = config.get("training") or {}
    lora = config.get("lora") or {}
    lines = [
        f"# {ctx.name}",
        "",
        f"A fine-tune of `{info.get('base_model')}` made with clawtune from an OpenClaw agent's own sessions "
        f"({info.get('trained_as')}), exported as `{fmt}`.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{info.get('base_model')}` (revision {info.get('base_revision') or 'local'}) |",
        f"| base fingerprint | `{(info.get('base_fingerprint') or '')[:23]}...` |",
        f"| method | {info.get('trained_as')}"
        + (f", r={lora.get('r')}, alpha={lora.get('alpha')}" if info.get("trained_as") in ("lora", "qlora") else "")
        + " |",
        f"| epochs / learning rate | {training.get('epochs')} / {training.get('learning_rate')} |",
        f"| training data | `{(config.get('data') or {}).get('train')}` |",
        f"| chat template | `chat_template.jinja` ({(info.get('chat_template') or {}).get('source')}) |",
    ]
    evaluation = info.get("evaluation")
    if evaluation:
        lines.append(f"| evaluation | {evaluation.get('turns')} held-out turns: {evaluation.get('verdict')} |")
        for metric, sides in (evaluation.get("metrics") or {}).items():
            if sides["baseline"] is not None and sides["fine_tuned"] is not None:
                lines.append(f"| {metric} | {sides['baseline']:.3f} (base) -> {sides['fine_tuned']:.3f} (fine-tuned) |")
    lines += [
        "",
        "## Train/serve parity",
        "",
        "Checked at export: each template shipped here renders, token for token, the prompts training rendered.",
        "",
    ]
    lines += [f"- {p['renderer']}: {p['prompts']} prompts, {p['tokens']} tokens, identical" for p in ctx.parity]
    lines += [
        "",
        "## Use",
        "",
        "The base model must be the one above: an adapter on another base (even a newer release of it) behaves "
        "erratically; retrain after a base upgrade. clawtune refuses a mismatched base unless told otherwise.",
        "",
        "```sh",
        *_use_commands(ctx, fmt, info),
        "```",
        "",
    ]
    return "\n".join(lines)


def _use_commands(ctx: _Context, fmt: str, info: dict[str, Any]) -> list[str]:
    """The commands that put this format to work, as the export's summary prints them (never an empty block)."""
    folder = ctx.options.output if len(ctx.options.formats) == 1 else ctx.options.output / fmt
    if fmt == "gguf":
        return [
            f"# base.gguf: {info.get('base_model')} as a GGUF (the ollama export writes one)",
            f"llama-server -m base.gguf --lora {folder / 'adapter.gguf'} --jinja",
        ]
    if fmt == "ollama":
        return [f"cd {folder}", *((info.get("ollama") or {}).get("commands") or [])]
    if fmt == "vllm":
        return [f"cd {folder}", (info.get("vllm") or {}).get("command") or "./serve.sh"]
    return [f"clawtune ft evaluate --model-dir {folder} --test-set test.jsonl"]


def print_summary(summary: dict[str, Any], register_endpoint: str | None = None) -> None:
    """What was written, the parity results, and the commands to run next (Ollama, vLLM, OpenClaw)."""
    from rich.console import Console

    console = Console()
    output = Path(summary["output"])
    console.print(f"[green]Exported[/] {summary['name']} to {output}", highlight=False)
    for fmt, info in summary["formats"].items():
        size = info.get("bytes") or sum(f.get("bytes", 0) for f in (info.get("files") or {}).values())
        console.print(f"  {fmt}: " + (f"{size / 1e6:.1f} MB" if size else ""), highlight=False)
        for command in info.get("commands") or ([info["command"]] if info.get("command") else []):
            console.print(f"    {command}", highlight=False)
    for check in summary["parity"]:
        console.print(
            f"  parity: {check['renderer']}: {check['prompts']} prompts, {check['tokens']:,} tokens identical",
            highlight=False,
        )
    endpoint = register_endpoint or "http://127.0.0.1:8000/v1"
    console.print(
        "Register it with OpenClaw once it is served:\n"
        f"  clawtune openclaw register --model-id {summary['name']} --endpoint {endpoint} "
        f"--agent {summary.get('agent_id') or 'main'} --primary",
        highlight=False,
    )
