"""Generator training presets: `GeneratorTrainingConfig` and the named recipes of `spm-hf train-generator`.

Every name starts with `gen-`, so that no generator preset shares a name with a classifier preset
(`classifier_presets`). A preset names its UNet architecture explicitly (`unet_architecture`, a key of
`spm_hf.generation.unet_spm.UNET_ARCHITECTURES`); the runtime knows architectures, not presets. A trained
folder never depends on this table: loading reads the saved `unet/config.json`, and `training_config.json`
keeps the full configuration it was trained with.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from .commands import reproduce_command as command_line


@dataclass
class GeneratorTrainingConfig:
    """Hyper-parameters of one generator training run (a preset, then overrides)."""

    preset: str  # the preset's name, kept in `training_config.json` (the model card's reproduce command)
    unet_architecture: str  # a key of `UNET_ARCHITECTURES`; `unet_overrides` change single fields of it
    dataset: str | None = None  # "cifar10", "mnist", a local folder or a Hub dataset id (spm_hf.data)
    image_column: str | None = None  # the dataset's image / label columns (None: found by name)
    label_column: str | None = None
    train_limit: int | None = None
    exclude_classes: tuple[str, ...] = ()  # classes left out of training and memory (a retrained oracle)
    batch_size: int = 8
    support_size: int = 8
    max_steps: int = 4
    max_minutes: float | None = None  # stop early (and save) after this much training wall time, resumes included
    learning_rate: float = 1e-3
    warmup_steps: int = 0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    drop_prob: float = 0.1
    # Weight of the exemplar loss (UNets with `support_class_embedding` only; 0: off): each clean query image,
    # embedded by the exemplar encoder, is classified against the mean embeddings of the episode's support
    # items per (permuted) label, as in prototypical networks.
    exemplar_loss_weight: float = 0.0
    ema_decay: float = 0.999
    ema_power: float = 2 / 3
    hflip: bool = False
    permute_labels: bool = True
    eval_every: int = 0
    checkpoint_every: int = 0
    checkpoints_total_limit: int = 2
    samples_per_class: int = 4
    sample_steps: int = 25
    sample_support_size: int = 64
    guidance_scale: float = 1.3
    log_every: int = 50
    seed: int = 0
    mixed_precision: str = "no"
    unet_overrides: dict = field(default_factory=dict)


GENERATOR_PRESETS: dict[str, GeneratorTrainingConfig] = {
    # Unit tests and smoke checks: 4 steps on the first 2,000 MNIST digits (any size works, `sample_size`
    # follows the data; the tests pass 8x8 tensors of their own).
    "gen-tiny": GeneratorTrainingConfig(
        preset="gen-tiny", unet_architecture="unet-tiny", dataset="mnist", train_limit=2000, batch_size=8,
        support_size=8, max_steps=4,
        learning_rate=1e-3, samples_per_class=2, sample_steps=4, sample_support_size=8, log_every=1,
        exemplar_loss_weight=0.1,
    ),
    # Measured on the 2-core CPU box: gen-mnist-cpu 0.13 s per step with one torch thread (4,000 steps ~ 9 min).
    # gen-cifar10-cpu: 0.51 s per step with two threads and the box to itself (60 minutes = 6,987 steps), 0.9 s
    # per step with one thread beside another job (3,984 steps); two jobs of two threads each on the two cores
    # were ~10x slower. `max_minutes=60` stops and saves first on this box; `max_steps` bounds faster machines.
    "gen-mnist-cpu": GeneratorTrainingConfig(
        preset="gen-mnist-cpu", unet_architecture="unet-mnist-cpu", dataset="mnist", batch_size=32,
        support_size=32, max_steps=4000, learning_rate=2e-3, warmup_steps=100, eval_every=500,
        checkpoint_every=500, samples_per_class=8, sample_steps=25, exemplar_loss_weight=0.1,
    ),
    "gen-cifar10-cpu": GeneratorTrainingConfig(
        preset="gen-cifar10-cpu", unet_architecture="unet-cifar10-cpu", dataset="cifar10", batch_size=32,
        support_size=32, max_steps=8000, max_minutes=60, learning_rate=1e-3, warmup_steps=200, hflip=True,
        eval_every=1000, checkpoint_every=500, samples_per_class=8, sample_steps=25, exemplar_loss_weight=0.1,
    ),
    # The paper: 2,000 epochs of 50k / 256 (196 steps), 100 warm-up epochs, EMA 0.9993, validation grids
    # every 100 epochs with 10 samples per class, DDIM 50 steps, w = 0.3, support 1,024 at validation.
    "gen-cifar10-paper": GeneratorTrainingConfig(
        preset="gen-cifar10-paper", unet_architecture="unet-cifar10-paper", dataset="cifar10", batch_size=256,
        support_size=256, max_steps=2000 * 196, learning_rate=5e-4, warmup_steps=100 * 196, ema_decay=0.9993,
        hflip=True, eval_every=100 * 196, checkpoint_every=10 * 196, samples_per_class=10, sample_steps=50,
        sample_support_size=1024, log_every=196,
    ),
}


def get_generator_preset(name: str, **overrides) -> GeneratorTrainingConfig:
    """A copy of `GENERATOR_PRESETS[name]` with `overrides` (fields of `GeneratorTrainingConfig`; None: keep)."""
    if name not in GENERATOR_PRESETS:
        # The classifier's names (and the generator's before the `gen-` prefix) are the likely mistakes.
        hint = f" (did you mean 'gen-{name}'?)" if f"gen-{name}" in GENERATOR_PRESETS else ""
        raise ValueError(f"unknown generator preset {name!r}{hint}; choose one of {', '.join(GENERATOR_PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - (set(GeneratorTrainingConfig.__dataclass_fields__) - {"preset"}))
    if unknown:
        raise TypeError(f"unknown training options {unknown}; see GeneratorTrainingConfig")
    return replace(copy.deepcopy(GENERATOR_PRESETS[name]), **overrides)


# `spm-hf train-generator` options that set a field (the rest of the fields have no flag)
COMMAND_LINE_FIELDS = {
    "dataset": "--dataset", "image_column": "--image-column", "label_column": "--label-column",
    "max_steps": "--max-steps", "max_minutes": "--max-minutes", "batch_size": "--batch-size",
    "support_size": "--support-size", "learning_rate": "--learning-rate", "warmup_steps": "--warmup-steps",
    "eval_every": "--eval-every", "checkpoint_every": "--checkpoint-every", "train_limit": "--max-train-samples",
    "seed": "--seed", "mixed_precision": "--mixed-precision", "exclude_classes": "--exclude-classes",
}


def reproduce_command(config: GeneratorTrainingConfig, output_dir: str) -> str:
    """The `spm-hf train-generator` command that trains `config` (a registry preset with changed fields)."""
    return command_line("train-generator", config.preset, GENERATOR_PRESETS, config, output_dir,
                        flags=COMMAND_LINE_FIELDS, skip=("preset",), sidecar="training_config.json")


__all__ = ["GENERATOR_PRESETS", "GeneratorTrainingConfig", "get_generator_preset", "reproduce_command"]
