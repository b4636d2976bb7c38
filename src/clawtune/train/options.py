"""What `ft train` takes, each option declared once (see `clawtune.options`); cheap to import, since
`clawtune --help` builds the command from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clawtune.options import flag
from clawtune.problems import InputError

if TYPE_CHECKING:
    from clawtune.train.config import FTConfig


@dataclass
class TrainOptions:
    """Everything `ft train` takes: the config file (or, from Python, a loaded `config`) and how to run it."""

    config_file: Path | None = field(
        default=None, metadata=flag("--config", "The training config (see `clawtune ft init`).", required=True)
    )
    gpus: int | None = field(
        default=None, metadata=flag("--gpus", "GPUs to train on (N > 1: one DDP process per GPU).", min=1)
    )
    resume: Path | None = field(
        default=None,
        metadata=flag("--resume", "Continue exactly from this checkpoint (or the newest one in this folder)."),
    )
    data: Path | None = field(
        default=None,
        metadata=flag(
            "--data",
            "Train on this file (or a collect-failures folder: its corrected.jsonl, or its pairs.jsonl with "
            "objective: dpo) instead; with --resume, continue the weights on it into a new checkpoint "
            "(training.replay mixes in what it knew; DPO's reference is the resumed model).",
        ),
    )
    dry_run: bool = field(default=False, metadata=flag("--dry-run", "Print what the run would cost, then stop."))
    wandb: bool = field(default=False, metadata=flag("--wandb", "Also log to Weights & Biases."))
    project_name: str | None = field(default=None, metadata=flag("--project-name", "Run name and tracker project."))
    max_steps: int | None = field(
        default=None, metadata=flag("--max-steps", "Stop after this many optimizer steps.", min=1)
    )
    strict: bool = field(
        default=False, metadata=flag("--strict", "Fail on the first bad example instead of skipping it.")
    )
    force: bool = field(
        default=False,
        metadata=flag("--force", "Replace an earlier run's checkpoints in output_dir (with --resume: those after it)."),
    )  # replace an earlier run's checkpoints in output_dir (or those after the one resumed from)
    quiet: bool = False
    config: FTConfig = field(default=None)  # type: ignore[assignment]  # loaded from config_file when not given

    def __post_init__(self) -> None:
        if self.config is not None:
            return
        if self.config_file is None:
            raise InputError("--config: which training config? (clawtune ft init writes one)")
        from clawtune.train.config import load_config

        # --data replaces the config's training file, which then need not exist.
        self.config = load_config(self.config_file, check_files=self.data is None)


@dataclass
class InitOptions:
    """Everything `ft init` takes."""

    base_model: str = field(metadata=flag("--base-model", "A Hugging Face id, a local folder, or clawtune/tiny-agent."))
    method: str = field(default="lora", metadata=flag("--method", "lora | qlora | full."))
    output_dir: Path = field(
        default=Path("./fine-tuned-model/"),
        metadata=flag("--output-dir", "Where training writes checkpoints and the adapter."),
    )
    config: Path = field(default=Path("ft-config.yaml"), metadata=flag("--config", "The config file to write."))
    train: str = field(
        default="./ft-data/augmented.jsonl", metadata=flag("--train", "Training data path, as written into the config.")
    )
    validation: str = field(
        default="./ft-data/validation.jsonl",
        metadata=flag("--validation", "Validation data path, as written into the config."),
    )
    force: bool = field(default=False, metadata=flag("--force", "Overwrite an existing config."))
    preset: str = field(
        default="auto",
        metadata=flag(
            "--preset",
            "seed (the founding document's values, for a 7-8B base), tiny-agent (what trains the bundled "
            "model), or auto: tiny-agent for clawtune/tiny-agent, else seed.",
        ),
    )
