"""The training config: the seed's `ft-config.yaml` accepted exactly as written, plus what users of this field expect.

Every problem of a config file is reported at once, each with its key and line (an unknown key with the closest
known one, a wrong type, an impossible value, a missing data file); never a traceback. Paths are relative to the
config file's folder. `learning_rate: 2e-4` is a number: YAML 1.1 readers such as PyYAML take it for a string, so the
loader here resolves exponent floats without a dot too.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clawtune.configfile import key_lines, problem, problems_message, validation_problems
from clawtune.problems import InputError
from clawtune.train.options import InitOptions

DEFAULT_TARGET_MODULES = ["q_proj", "v_proj", "k_proj", "o_proj"]


class Strict(BaseModel):
    """Unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    train: Path = Field(description="Training examples, OpenAI chat JSONL (e.g. ./ft-data/augmented.jsonl).")
    validation: Path | None = Field(None, description="Validation examples, evaluated every eval_steps.")
    max_refused: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Largest share of examples the chat template's rules may refuse; above it the run stops "
        "before training (a biased remainder), saying which rule refused them and how to fix it.",
    )


class LoraConfig(Strict):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA path, against over-fitting.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES), description="Module names to adapt, or all-linear."
    )

    @field_validator("target_modules")
    @classmethod
    def _not_empty(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not value:
            raise ValueError("name at least one module (e.g. q_proj) or all-linear")
        return value


class QLoraConfig(Strict):
    bits: Literal[4, 8] = Field(4, description="Quantisation of the frozen base (bitsandbytes, CUDA only).")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too.")


class ReplayConfig(Strict):
    """Shares of the training mix replayed from what the model already knew (`clawtune.train.replay`)."""

    original: float = Field(
        0.0, ge=0, lt=1, description="Share of the resumed checkpoint's own training data (a retrain with --data)."
    )
    general: float = Field(0.0, ge=0, lt=1, description="Share of general-assistant conversations.")
    general_file: Path | None = Field(
        None, description="Those conversations (OpenAI chat JSONL); the bundled tiny model has its own."
    )
    seed: int = Field(7, description="Seed of the sampling and of the mix's order.")

    @model_validator(mode="after")
    def _below_one(self) -> ReplayConfig:
        if self.original + self.general >= 1:
            raise ValueError("original + general must stay below 1 (shares of the mix, beside the new data)")
        return self


class TrainingConfig(Strict):
    batch_size: int = Field(4, gt=0, description="Examples (or packed rows) per device per step.")
    epochs: float = Field(3, gt=0, description="Passes over the training data.")
    learning_rate: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate.")
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps.")
    max_seq_length: int = Field(4096, ge=16, description="Tokens per example (or packed row).")
    save_steps: int = Field(500, gt=0, description="Checkpoint every this many optimizer steps.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    packing: bool = Field(True, description="Pack examples into rows, each attending only to itself.")
    truncation: Literal["truncate", "drop"] = Field("truncate", description="What to do with over-long examples.")
    train_on_inputs: bool = Field(
        False,
        description="Also train on system, user and tool tokens (continued pre-training); default: assistant-only.",
    )
    seed: int = Field(42, description="Seed of shuffling, dropout and initialisation.")
    eval_steps: int | None = Field(None, gt=0, description="Evaluate on the validation set every this many steps.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="LR schedule."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    gradient_checkpointing: bool = Field(True, description="Recompute activations to save memory.")
    save_total_limit: int = Field(3, gt=0, description="Checkpoints kept (the oldest are deleted).")
    logging_steps: int = Field(10, gt=0, description="Log loss and throughput every this many steps.")
    distributed: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="With several processes: auto = FSDP for full fine-tuning, DDP for adapters."
    )
    attention: Literal["auto", "sdpa_varlen", "sdpa", "eager", "flex_attention"] = Field(
        "auto",
        description="Attention kernel. auto: sdpa_varlen with packing (sdpa on each packed example by itself), "
        "else sdpa. sdpa, eager and flex_attention keep packed examples apart with a document mask.",
    )
    replay: ReplayConfig | None = Field(
        None, description="Replay against forgetting: shares of original and general data mixed into the run."
    )


DPOLoss = Literal[
    "sigmoid", "hinge", "ipo", "robust", "exo_pair", "bco_pair", "nca_pair", "apo_zero", "apo_down", "sft"
]


class PreferenceConfig(Strict):
    """Direct preference optimisation (`objective: dpo`): TRL's DPOTrainer on preference pairs (`clawtune.train.dpo`)."""

    beta: float = Field(
        0.1, gt=0, description="How far the model may move from the reference (higher: closer to it; IPO's tau)."
    )
    loss_type: list[DPOLoss] = Field(
        default_factory=lambda: ["sigmoid"],  # type: ignore[arg-type,list-item]
        description="TRL's DPO losses (sigmoid: the DPO paper's); several are summed with loss_weights "
        "(e.g. [sigmoid, sft]: DPO plus the chosen answers' likelihood, as RPO).",
    )
    loss_weights: list[float] | None = Field(None, description="One weight per loss_type (default: 1 each).")
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Robust DPO / EXO: the assumed share of preference labels that are flipped."
    )

    @model_validator(mode="after")
    def _weights_match(self) -> PreferenceConfig:
        if not self.loss_type:
            raise ValueError("name at least one loss (sigmoid is DPO's)")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"{len(self.loss_weights)} loss_weights for {len(self.loss_type)} loss_type values")
        return self


class TrackingConfig(Strict):
    tensorboard: bool = Field(True, description="TensorBoard logs in the output folder.")
    wandb: bool = Field(False, description="Weights & Biases (offline with WANDB_MODE=offline).")
    project_name: str | None = Field(None, description="Project name for the trackers.")
    mlflow: bool = Field(False, description="MLflow, if installed.")


class FTConfig(Strict):
    """A fine-tuning run. The first block of fields is the seed's `ft-config.yaml`; the rest are additions."""

    base_model: str = Field(description="A Hugging Face id, a local folder, or clawtune/tiny-agent.")
    method: Literal["lora", "qlora", "full"] = Field("lora", description="LoRA, QLoRA (4-bit base, CUDA) or full.")
    objective: Literal["sft", "dpo"] = Field(
        "sft",
        description="What the run optimises: sft (next-token loss on the assistant turns of chat examples) or dpo "
        "(preference pairs, e.g. the pairs.jsonl of collect-failures, against the resumed model as the reference).",
    )
    data: DataConfig
    lora: LoraConfig = Field(default_factory=LoraConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    use_unsloth: bool = Field(
        False, description="Use Unsloth when installed on a CUDA GPU; otherwise train without it."
    )
    bfloat16: bool = Field(False, description="bf16 where the device supports it.")
    output_dir: Path = Field(Path("./fine-tuned-model"), description="Checkpoints, adapter, logs and summary.")
    qlora: QLoraConfig = Field(default_factory=QLoraConfig)
    dpo: PreferenceConfig = Field(default_factory=PreferenceConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    chat_template: str | None = Field(
        None,
        description="A Jinja chat template file, clawtune:NAME (a training template clawtune ships), or model (the "
        "model's own, as is). Default: the model's own, or clawtune's training template for it where its stock "
        "template cannot be trained on (`clawtune ft check-template`).",
    )

    @field_validator("method", mode="before")
    @classmethod
    def _dpo_is_an_objective(cls, value: Any) -> Any:
        if value == "dpo":
            raise ValueError(
                "dpo is an objective, not a method: keep method (lora, qlora or full: what is trained) and add "
                "`objective: dpo`"
            )
        return value


# --- loading -------------------------------------------------------------------------------------------------------


class ConfigError(InputError):
    """Every problem of one config file."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(problems_message(path, problems))


class _Loader(yaml.SafeLoader):
    """YAML 1.1 with the exponent floats of YAML 1.2 (`2e-4`), which PyYAML otherwise reads as strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_config(path: Path, check_files: bool = True) -> FTConfig:
    """Read and check a config file; raises `ConfigError` listing every problem with its key and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the config: {exc.strerror or exc}") from exc
    try:
        raw = yaml.load(text, Loader=_Loader)
        lines = key_lines(yaml.compose(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(path, ["expected a mapping of settings (base_model, method, data, ...)"])
    problems: list[str] = []
    config: FTConfig | None = None
    try:
        config = FTConfig.model_validate(raw)
    except ValidationError as exc:
        problems += validation_problems(exc, FTConfig, lines)
    if config is not None:
        config = _resolve(config, path.parent)
        if check_files:
            replay_file = config.training.replay.general_file if config.training.replay else None
            for key, file in (
                ("data.train", config.data.train),
                ("data.validation", config.data.validation),
                ("training.replay.general_file", replay_file),
            ):
                if file is not None and not file.is_file():
                    problems.append(problem(lines, tuple(key.split(".")), f"no such file {file}"))
    if problems:
        raise ConfigError(path, problems)
    assert config is not None
    return config


def _resolve(config: FTConfig, base: Path) -> FTConfig:
    """Paths relative to the config file's folder."""

    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    data = config.data.model_copy(update={"train": fix(config.data.train), "validation": fix(config.data.validation)})
    template = config.chat_template
    if template is not None and not template.startswith("clawtune:") and template != "model":
        template = str(fix(Path(template)))
    training = config.training
    if training.replay is not None and training.replay.general_file is not None:
        replay = training.replay.model_copy(update={"general_file": fix(training.replay.general_file)})
        training = training.model_copy(update={"replay": replay})
    return config.model_copy(
        update={"data": data, "output_dir": fix(config.output_dir), "chat_template": template, "training": training}
    )


# --- ft init -------------------------------------------------------------------------------------------------------

TEMPLATE = """\
# clawtune fine-tuning config (clawtune ft train --config {name}).
# Paths are relative to this file. `clawtune ft init --help` and the README list every setting.
# Preset: {preset}.
base_model: "{base_model}"   # a Hugging Face id, a local folder, or clawtune/tiny-agent
method: "{method}"           # lora | qlora (4-bit base, CUDA) | full
objective: "sft"             # sft | dpo (preference pairs: collect-failures' pairs.jsonl, continuing a checkpoint)
data:
  train: "{train}"
  validation: "{validation}"
lora:
  r: 16            # LoRA rank
  alpha: 32        # scaling (scale = alpha / r)
  dropout: {dropout}
  target_modules:{target_modules}
training:
  batch_size: 4
  epochs: 3
  learning_rate: {learning_rate}
  warmup_steps: {warmup_steps}
  max_seq_length: {max_seq_length}
  save_steps: {save_steps}
  gradient_accumulation_steps: 1
  gradient_checkpointing: {gradient_checkpointing}
  packing: true              # each example attends only to itself within a packed row
  scheduler: "cosine"
  seed: 42
{replay}# use Unsloth to accelerate fine-tuning (when installed and a CUDA GPU is present)
use_unsloth: true
bfloat16: true               # where the device supports it; otherwise float32, said in one line
output_dir: "{output_dir}"
"""

SEED_MODULES = "".join(f'\n    - "{m}"' for m in ("q_proj", "v_proj", "k_proj", "o_proj"))

# The values `ft init` writes. `seed`: the founding document's, for a 7-8B base on a GPU. `tiny-agent`: what trains
# the bundled 3.1M-parameter model on a few hundred examples on a CPU (the demo's, measured: loss 8.76 -> 0.18 over
# 384 steps); the seed's learning rate barely moves so small a model and its 100 warm-up steps outlast a short run.
PRESETS: dict[str, dict[str, str]] = {
    "seed": {
        "description": "the founding document's values",
        "learning_rate": "2e-4",
        "warmup_steps": "100",
        "dropout": "0.1     # against over-fitting",
        "max_seq_length": "4096",
        "save_steps": "500",
        "gradient_checkpointing": "true   # recompute activations in the backward pass: much less memory, ~1/3 more compute",
        "target_modules": SEED_MODULES,
        "replay": "  # replay:                     # against forgetting: shares of the mix (clawtune.train.replay)\n"
        "  #   original: 0.25             # a retrain (--data with --resume): the resumed checkpoint's own data\n"
        "  #   general: 0.1               # general-assistant conversations, from a file of yours:\n"
        "  #   general_file: general.jsonl\n",
    },
    "tiny-agent": {
        "description": "tiny-agent, the bundled model's working values (the seed's, changed where a line says so)",
        "learning_rate": "5e-3      # tiny-agent: a 3M-parameter model takes a larger step",
        "dropout": "0.0     # tiny-agent: replay guards it; dropout's random masks were a fifth of a CPU step",
        "warmup_steps": "10        # tiny-agent: a short run; 100 would outlast it",
        "max_seq_length": "1024   # tiny-agent: the sample agent's examples are under 700 tokens",
        "save_steps": "50",
        "gradient_checkpointing": "false  # tiny-agent: its activations are small; recomputing them cost 1.5x the time",
        "target_modules": " [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head]"
        "   # tiny-agent: every linear layer and the output layer (a 192-wide model learns new words only there)",
        "replay": "  replay:          # tiny-agent: against forgetting (without it the demo's general accuracy falls to 0)\n"
        "    original: 0.25   # a retrain (--data with --resume): a quarter the resumed checkpoint's own data\n"
        "    general: 0.25    # a quarter general conversations (the bundled model's replay set)\n",
    },
}


def preset_for(base_model: str, preset: str = "auto") -> str:
    """`auto`: the bundled model's own preset for it, the seed's values for any other base."""
    from clawtune.models import TINY_AGENT

    if preset == "auto":
        return "tiny-agent" if base_model == TINY_AGENT else "seed"
    if preset not in PRESETS:
        close = difflib.get_close_matches(preset, PRESETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"--preset {preset!r}: expected auto, {', '.join(PRESETS)}{hint}")
    return preset


def init_config(
    path: Path,
    base_model: str,
    method: str,
    output_dir: Path,
    train: str,
    validation: str,
    force: bool,
    preset: str = "auto",
) -> str:
    """Write a commented config with a preset's values (the seed's by default); refuses to overwrite without
    `force`. Returns the text."""
    if method not in ("lora", "qlora", "full"):
        raise InputError(f"--method {method!r}: expected lora, qlora or full")
    if path.exists() and not force:
        raise InputError(f"{path} exists; pass --force to overwrite it")
    chosen = preset_for(base_model, preset)
    values = PRESETS[chosen]
    text = TEMPLATE.format(
        name=path.name,
        preset=values["description"],
        base_model=base_model,
        method=method,
        train=train,
        validation=validation,
        output_dir=output_dir.as_posix().rstrip("/") + "/",
        **{k: v for k, v in values.items() if k != "description"},
    )
    FTConfig.model_validate(yaml.load(text, Loader=_Loader))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


def warmup_warning(config_path: Path) -> str | None:
    """At `ft init`: a line when the warm-up is longer than a run on the training file can be (packing only makes a
    run shorter than one row per example). `ft train` checks again with the exact number of steps."""
    try:
        config = load_config(config_path, check_files=False)
        with open(config.data.train, "rb") as f:
            examples = sum(1 for line in f if line.strip())
    except (InputError, OSError):
        return None
    t = config.training
    most = math.ceil(examples / t.batch_size / t.gradient_accumulation_steps) * t.epochs
    if examples == 0 or t.warmup_steps <= most:
        return None
    return (
        f"warmup_steps {t.warmup_steps} is longer than a run on {config.data.train} can be ({examples} examples: at "
        f"most {math.ceil(most)} steps); the learning rate would still be rising when it ends. Set "
        f"training.warmup_steps to about {max(int(most) // 10, 1)}"
    )


def config_help() -> list[tuple[str, str, Any]]:
    """(key, description, default) of every setting, for the README and `--help`."""
    rows: list[tuple[str, str, Any]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
            else:
                rows.append(
                    (
                        prefix + name,
                        field.description or "",
                        None if field.is_required() else field.get_default(call_default_factory=True),
                    )
                )

    walk(FTConfig, "")
    return rows


def init_command(options: InitOptions) -> None:
    """`ft init`: check the base model, write the config with the chosen preset, and say what was written."""
    import typer

    from clawtune.models import check_base_model

    note = check_base_model(options.base_model)
    chosen = preset_for(options.base_model, options.preset)
    init_config(
        options.config,
        options.base_model,
        options.method,
        options.output_dir,
        options.train,
        options.validation,
        options.force,
        chosen,
    )
    typer.echo(
        f"wrote {options.config} (base_model {options.base_model}, method {options.method}, output_dir "
        f"{options.output_dir}, preset {chosen})"
    )
    for line in (note, warmup_warning(options.config)):
        if line:
            typer.secho(f"note: {line}", fg="yellow", err=True)
