"""Classifier training presets: `ClassifierPreset` and the named recipes of `spm-hf train-classifier`.

Generator presets live in `generator_presets` and all start with `gen-`, so a preset name says which kind
of model it trains. A trained folder never depends on these tables: loading reads the folder's own
`config.json`, and `training_summary.json` keeps the full preset it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .commands import reproduce_command as command_line
from ..configuration_spm import EPISODE_READINGS
from .core_split import check_core_settings


SCHEDULES = ("onecycle", "multistep")
SUPPORT_VARIANTS = ("batch", "separate")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class ClassifierPreset:
    """Everything that defines a training run (kept under "preset" in `training_summary.json` beside the model)."""

    name: str
    dataset: str = "cifar10"  # "cifar10", "mnist", a local folder or a Hub dataset id (spm_hf.data)
    image_column: str | None = None  # the dataset's image / label columns (None: found by name)
    label_column: str | None = None
    encoder: str = "resnet-small"
    epochs: float = 6
    batch_size: int = 256
    learning_rate: float = 0.1  # the peak of the one-cycle schedule, the start of the multistep one
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "onecycle"  # "onecycle" | "multistep" (the paper: x0.1 at 36% and 91% of training)
    support: str = "batch"  # "batch" (leave-one-out) | "separate" (the paper's 1024-image support)
    support_size: int = 1024
    # how a "batch" support is read in training: "class_mean" | "knn" (each query's knn_k nearest batch-mates,
    # read as knn_aggregation says), see SPMConfig.episode_reading
    episode_reading: str = "class_mean"
    permute_labels: bool = True
    augment: bool = True  # random crop + horizontal flip (CIFAR); off for digits, which a flip changes
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    memory_samples: int | None = None  # None: the whole training split
    knn_k: int = 64
    fusion_similarity: str = "cosine"  # "dot" is the paper's; see SPMConfig
    head_steps: int = 1500  # head fit on frozen eval-mode embeddings after training (0: off)
    head_lr: float = 3e-3
    head_batch_size: int = 1024
    seed: int = 0
    milestones: list[float] = field(default_factory=lambda: [0.36, 0.91])
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16": autocast of the training steps (Trainer's bf16/fp16)
    # the encoder: a transformers vision model (Hub id or folder) instead of `encoder`, see SPMConfig
    backbone: str | None = None
    use_pretrained_backbone: bool = True
    freeze_encoder: bool = False
    fusion: str = "relation"  # "relation" | "cosine_prototype" (no parameter), see SPMConfig
    fusion_temperature: float = 0.1
    knn_aggregation: str = "class_mean_mixture"  # | "neighbour_softmax" | "neighbourhood_means", see SPMConfig
    # the core split (spm_hf.training.core_split): the parameters train on the core rows only, the memory
    # holds every row; None / 0 / None / None: every training row is core
    core_fraction: float | None = None
    core_seed: int = 0
    core_ids: str | None = None  # a file of the core's sample ids, one a line
    core_exclude_classes: list[str] | None = None  # classes the parameters never see

    def __post_init__(self):
        for name, value, allowed in (
            ("schedule", self.schedule, SCHEDULES),
            ("support", self.support, SUPPORT_VARIANTS),
            ("mixed_precision", self.mixed_precision, MIXED_PRECISION),
            ("episode_reading", self.episode_reading, EPISODE_READINGS),
        ):
            if value not in allowed:
                raise ValueError(f"ClassifierPreset {self.name!r}: {name}={value!r}; choose one of {list(allowed)}")
        check_core_settings(self.core_fraction, self.core_seed, self.core_ids, self.core_exclude_classes)


CLASSIFIER_PRESETS: dict[str, ClassifierPreset] = {
    # tests and smoke checks: under a minute on 2 CPU cores
    "tiny": ClassifierPreset(
        name="tiny", encoder="resnet-mini", epochs=5, batch_size=64, learning_rate=0.05,
        max_train_samples=2000, max_test_samples=500, memory_samples=2000, knn_k=16, head_steps=300,
    ),
    # the README's main job: a few minutes on 2 CPU cores
    "quick": ClassifierPreset(name="quick", encoder="resnet-small", epochs=2),
    # full CIFAR-10, small encoder, <= 30 minutes of training on 2 CPU cores
    "cifar10-cpu": ClassifierPreset(name="cifar10-cpu", encoder="resnet-small", epochs=11),
    # MNIST, e.g. the judge of MNIST generations: a few minutes on 1 CPU thread
    "mnist": ClassifierPreset(
        name="mnist", dataset="mnist", encoder="resnet-mini", epochs=3, batch_size=128, learning_rate=0.05,
        augment=False, knn_k=16, head_steps=300,
    ),
    # The paper's model and episodes (ResNet-18, a separate 1,024-image support per batch, dot-product
    # fusion, kNN k = 256, no head fit), trained with a fast-CIFAR schedule instead of the paper's 100 epochs
    # of step decay, aiming at the paper's accuracy (SPM-C 94.5 %, parametric 94.9 %) in about ten minutes of
    # one GPU: 30 epochs of one-cycle SGD (Nesterov, peak learning rate 0.2 for batch 512 after 25 % of the
    # steps, momentum cycled 0.85-0.95, weight decay 5e-4), bf16 autocast. Every step encodes 512 queries +
    # 1,024 support images (50,000 // 512 = 97 steps per epoch). Its cost per epoch on a GPU and the accuracy
    # it reaches are NOT measured yet (no GPU was lent when it was written), so the ten minutes are a target.
    # No label smoothing: the SPM's logits are log-probabilities with -inf for a class without prototype,
    # and transformers' label smoother takes the labels away from the model, which the leave-one-out support
    # needs. No channels-last: `Trainer` has no option for it, and it is unmeasured here.
    # `schedule="multistep", epochs=100, batch_size=256, learning_rate=0.1` overrides give the paper's
    # original schedule.
    "cifar10-paper": ClassifierPreset(
        name="cifar10-paper", encoder="resnet18", epochs=30, batch_size=512, learning_rate=0.2,
        weight_decay=5e-4, schedule="onecycle", support="separate", support_size=1024, knn_k=256,
        fusion_similarity="dot", head_steps=0, mixed_precision="bf16",
    ),
}


def get_preset(name: str, **overrides) -> ClassifierPreset:
    """A copy of `CLASSIFIER_PRESETS[name]` with `overrides` (fields of `ClassifierPreset`; None: keep)."""
    if name not in CLASSIFIER_PRESETS:
        hint = " (generator presets start with 'gen-': spm-hf train-generator)" if name.startswith("gen-") else ""
        raise ValueError(f"unknown classifier preset {name!r}{hint}; choose one of {', '.join(CLASSIFIER_PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(ClassifierPreset.__dataclass_fields__))
    if unknown:
        raise TypeError(f"unknown classifier preset fields {unknown}; see ClassifierPreset")
    return replace(CLASSIFIER_PRESETS[name], **overrides)


# `spm-hf train-classifier` options that set a preset field (the rest of the fields have no flag)
COMMAND_LINE_FIELDS = {
    "dataset": "--dataset", "image_column": "--image-column", "label_column": "--label-column",
    "epochs": "--epochs", "batch_size": "--batch-size", "encoder": "--encoder", "support": "--support",
    "support_size": "--support-size", "episode_reading": "--episode-reading", "max_train_samples": "--max-train-samples",
    "max_test_samples": "--max-test-samples", "seed": "--seed",
    "backbone": "--backbone", "fusion": "--fusion", "core_fraction": "--core-fraction", "core_seed": "--core-seed",
    "core_ids": "--core-ids",
}
# boolean preset fields with a flag: (flag, the value the flag sets)
COMMAND_LINE_SWITCHES = {"freeze_encoder": ("--freeze-encoder", True),
                         "use_pretrained_backbone": ("--no-pretrained-backbone", False)}


def reproduce_command(preset: ClassifierPreset, output_dir: str, parametric: bool = False) -> str:
    """The `spm-hf train-classifier` command that trains `preset` (a registry preset with changed fields)."""
    return command_line(
        "train-classifier", preset.name, CLASSIFIER_PRESETS, preset, output_dir, flags=COMMAND_LINE_FIELDS,
        switches=COMMAND_LINE_SWITCHES, extra=("--parametric",) if parametric else (), skip=("name",),
        sidecar="training_summary.json", other_label="preset fields",
    )


__all__ = ["CLASSIFIER_PRESETS", "ClassifierPreset", "get_preset", "reproduce_command"]
