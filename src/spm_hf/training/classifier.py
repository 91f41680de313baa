"""Train an SPM classifier (or its parametric baseline) through `transformers.Trainer`.

`train_classifier(preset, output_dir)` trains episodically, builds the memory over the whole training
split (no augmentation), evaluates on the test split in both memory modes and saves a folder that
`SPMForImageClassification.from_pretrained` loads. Runs unchanged under `torchrun` /
`accelerate launch` (the Trainer handles DDP; only rank 0 writes).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ..baselines.parametric import ParametricForImageClassification
from ..configuration_spm import SPMConfig
from ..files import write_json
from ..data import as_uint8_tensors, label_names, load_image_dataset
from ..image_processing_spm import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD, make_image_processor
from ..image_processing_spm import normalize_uint8
from ..evaluation.classifier import evaluate_classifier
from ..modeling_spm import SPMForImageClassification
from .episodic import EpisodicCollator, IndexDataset


@dataclass
class ClassifierPreset:
    """Everything that defines a training run (saved as `training_args.json` beside the model)."""

    name: str
    dataset: str = "cifar10"
    encoder: str = "resnet-small"
    epochs: float = 6
    batch_size: int = 256
    learning_rate: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "onecycle"  # "onecycle" | "multistep" (the paper: x0.1 at 36% and 91% of training)
    support: str = "batch"  # "batch" (leave-one-out) | "separate" (the paper's 1024-image support)
    support_size: int = 1024
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


PRESETS: dict[str, ClassifierPreset] = {
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
    # the paper's recipe (paper-spec §2.5), for a GPU
    "cifar10-paper": ClassifierPreset(
        name="cifar10-paper", encoder="resnet18", epochs=100, schedule="multistep", support="separate",
        support_size=1024, knn_k=256, fusion_similarity="dot", head_steps=0,
    ),
}


def get_preset(name: str, **overrides) -> ClassifierPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **overrides)


def _normalizer(processor):
    return lambda images: normalize_uint8(images, processor)


class EpochTimer(TrainerCallback):
    """Records wall time per epoch (the benchmark compares budgets, not epochs)."""

    def __init__(self):
        self.epoch_seconds: list[float] = []
        self._start = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epoch_seconds.append(time.perf_counter() - self._start)


def build_model(preset: ClassifierPreset, names: list[str], num_channels: int, image_size: int, parametric: bool):
    config = SPMConfig(
        encoder=preset.encoder,
        num_channels=num_channels,
        image_size=image_size,
        knn_k=preset.knn_k,
        fusion_similarity=preset.fusion_similarity,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    return (ParametricForImageClassification if parametric else SPMForImageClassification)(config)


def train_classifier(
    preset: str | ClassifierPreset,
    output_dir: str,
    parametric: bool = False,
    resume: bool | str = False,
    show_progress: bool = True,
    evaluate: bool = True,
    exclude_indices=None,
    **overrides,
) -> dict:
    """Train, build the memory, evaluate and save. Returns the summary (also `training_summary.json`).

    Args:
        preset: a name in `PRESETS` or a `ClassifierPreset`.
        output_dir: the final model folder; checkpoints go to `<output_dir>/checkpoints`.
        parametric: train the parametric baseline (same encoder + linear head, same recipe).
        resume: True to resume from the last checkpoint in `<output_dir>/checkpoints`, or a path.
        exclude_indices: training-split rows left out of both training and the memory (the retrained
            oracle of an unlearning benchmark); indices into the preset's training subset.
        overrides: fields of `ClassifierPreset` to change (e.g. `epochs=1`).
    """
    preset = get_preset(preset, **overrides) if isinstance(preset, str) else replace(preset, **overrides)
    torch.manual_seed(preset.seed)
    data = load_image_dataset(preset.dataset)
    excluded = 0
    if exclude_indices is not None:
        data, preset, excluded = exclude_training_rows(data, preset, exclude_indices)
    names = label_names(data)
    train_images, train_labels, _ = as_uint8_tensors(data["train"], limit=preset.max_train_samples)
    test_images, test_labels, _ = as_uint8_tensors(data["test"], limit=preset.max_test_samples)
    num_channels, image_size = train_images.shape[1], train_images.shape[2]
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if num_channels == 3 else (MNIST_MEAN, MNIST_STD)
    processor = make_image_processor(image_size, mean, std)
    model = build_model(preset, names, num_channels, image_size, parametric)

    collator = EpisodicCollator(
        train_images,
        train_labels,
        len(names),
        _normalizer(processor),
        support="none" if parametric else preset.support,
        support_size=preset.support_size,
        permute_labels=preset.permute_labels,
        augment=preset.augment,
        seed=preset.seed,
    )
    checkpoint_dir = os.path.join(output_dir, "checkpoints")
    args = TrainingArguments(
        output_dir=checkpoint_dir,
        per_device_train_batch_size=preset.batch_size,
        num_train_epochs=preset.epochs,
        learning_rate=preset.learning_rate,
        weight_decay=preset.weight_decay,
        save_strategy="epoch",
        save_total_limit=2,
        logging_steps=max(1, len(train_labels) // preset.batch_size // 10),
        report_to="none",
        remove_unused_columns=False,
        dataloader_drop_last=True,
        seed=preset.seed,
        data_seed=preset.seed,
        disable_tqdm=not show_progress,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = len(train_labels) // (preset.batch_size * world)
    # OneCycleLR needs a few steps per phase; tiny smoke runs can have fewer.
    total_steps = max(8, math.ceil(steps_per_epoch * preset.epochs))
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=preset.learning_rate,
        momentum=preset.momentum,
        weight_decay=preset.weight_decay,
        nesterov=True,
    )
    if preset.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=preset.learning_rate, total_steps=total_steps, pct_start=0.25
        )
    elif preset.schedule == "multistep":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[int(m * total_steps) for m in preset.milestones], gamma=0.1
        )
    else:
        raise ValueError(f"unknown schedule {preset.schedule!r}")
    timer = EpochTimer()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=IndexDataset(len(train_labels)),
        data_collator=collator,
        optimizers=(optimizer, scheduler),
        callbacks=[timer],
    )
    resume_from = None
    if resume:
        resume_from = resume if isinstance(resume, str) else get_last_checkpoint(checkpoint_dir)
        if resume_from is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {checkpoint_dir}")
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - start
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # DDP keeps parameters in step, but BatchNorm statistics of the last step are per rank: take rank 0's
        # (the model that is saved) everywhere, so every process holds the same model.
        for buffer in trainer.model.buffers():
            torch.distributed.broadcast(buffer, src=0)

    summary = {
        "preset": asdict(preset),
        "model": "parametric" if parametric else "spm",
        "train_samples": len(train_labels),
        "excluded_samples": excluded,
        "train_seconds": round(train_seconds, 1),
        "epoch_seconds": [round(s, 1) for s in timer.epoch_seconds],
        "train_loss": round(result.training_loss, 4),
        "global_step": trainer.state.global_step,
        "world_size": world,
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "weights_sha256": state_dict_sha256(trainer.model.state_dict()),
    }
    if not trainer.is_world_process_zero():
        return summary

    model = trainer.model
    model.image_processor = processor
    if evaluate:
        summary.update(_evaluate_and_attach_memory(model, parametric, preset, data, processor, test_images, test_labels, show_progress))
    model.training_summary = summary  # the model card written by save_pretrained reads it
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, "training_summary.json"), summary)
    model.save_pretrained(output_dir)
    return summary


def exclude_training_rows(data, preset: ClassifierPreset, indices):
    """`(data, preset, count)` with rows `indices` of the preset's training subset removed from `data["train"]`.

    The preset's subset (`max_train_samples`) must be the memory's too (`memory_samples`), so that "trained
    without these samples" means the same for the parameters and the memory. The returned preset has both
    limits cleared: they are applied here, before the rows are dropped.
    """
    if preset.max_train_samples != preset.memory_samples:
        raise ValueError(
            "excluding samples needs the same training and memory subsets; got max_train_samples="
            f"{preset.max_train_samples} and memory_samples={preset.memory_samples}"
        )
    train = data["train"]
    n = len(train) if preset.max_train_samples is None else min(preset.max_train_samples, len(train))
    drop = torch.as_tensor(list(indices), dtype=torch.long).unique()
    if drop.numel() and (drop.min() < 0 or drop.max() >= n):
        raise IndexError(f"exclude_indices must lie in [0, {n}); got min {int(drop.min())}, max {int(drop.max())}")
    keep = torch.ones(n, dtype=torch.bool)
    keep[drop] = False
    if not keep.any():
        raise ValueError("exclude_indices removes every training sample")
    data = type(data)({**data, "train": train.select(torch.nonzero(keep).flatten().tolist())})
    return data, replace(preset, max_train_samples=None, memory_samples=None), int(drop.numel())


def fit_head(parameters, batch_loss, num_samples: int, steps: int, batch_size: int, lr: float, seed: int,
             show_progress: bool = True) -> float:
    """Adam on `parameters` for `steps` minibatches of `batch_loss(indices)`; returns the wall time."""
    from transformers.utils.logging import tqdm

    parameters = list(parameters)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with torch.enable_grad():
        for _ in tqdm(range(steps), desc="Fitting head", disable=not show_progress):
            loss = batch_loss(torch.randint(0, num_samples, (batch_size,), generator=generator))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def calibrate_fusion(model: SPMForImageClassification, steps: int, batch_size: int = 1024, lr: float = 3e-3,
                     seed: int = 0, show_progress: bool = True) -> float:
    """Fit the fusion head, encoder frozen, in the configuration it is used in at test time.

    Queries are the memory's own (eval-mode, non-augmented) embeddings; prototypes are the exact class
    means of the memory with each query's own sample left out. The head has no class-indexed parameter,
    so this stays a semi-parametric model: it learns the metric, the memory still supplies the classes.
    Episodic training with ~25 samples per class per batch leaves the head fitted to noisy prototypes;
    this step (seconds) is what closes most of the gap to the parametric baseline at CPU budgets.
    """
    memory = model.memory
    embeddings, labels = memory.values.detach().float(), memory.labels
    sums, counts = memory.class_sums().float().to(embeddings.device), memory.class_counts_tensor().float()
    counts = counts.to(embeddings.device)
    num_classes = model.config.num_labels

    def batch_loss(indices):
        q, y = embeddings[indices], labels[indices]
        own = F.one_hot(y, num_classes).to(q.dtype)
        prototypes = (sums.unsqueeze(0) - own.unsqueeze(-1) * q.unsqueeze(1)) / (counts - own).clamp_min(1).unsqueeze(-1)
        present = (counts - own) > 0
        return F.nll_loss(model.fusion(q, prototypes, present), y)

    return fit_head(model.fusion.parameters(), batch_loss, len(memory), steps, batch_size, lr, seed, show_progress)


def refit_linear_head(model: ParametricForImageClassification, embeddings: torch.Tensor, labels: torch.Tensor,
                      steps: int, batch_size: int = 1024, lr: float = 3e-3, seed: int = 0,
                      show_progress: bool = True) -> float:
    """The parametric baseline's counterpart of `calibrate_fusion`: refit the linear head on frozen
    eval-mode embeddings of the training set, same steps and optimizer (a fair comparison)."""

    def batch_loss(indices):
        return F.cross_entropy(model.classifier(embeddings[indices]), labels[indices])

    return fit_head(model.classifier.parameters(), batch_loss, len(labels), steps, batch_size, lr, seed, show_progress)


def _evaluate_and_attach_memory(model, parametric, preset, data, processor, test_images, test_labels, show_progress):
    out = {}
    if parametric:
        out["test_before_head_fit"] = {"parametric": evaluate_classifier(model, test_images, test_labels, processor)}
        if preset.head_steps:
            start = time.perf_counter()
            train_images, train_labels, _ = as_uint8_tensors(data["train"], limit=preset.memory_samples)
            embeddings = torch.cat([
                model.encode(normalize_uint8(train_images[i : i + 1000], processor))
                for i in range(0, len(train_labels), 1000)
            ])
            refit_linear_head(model, embeddings, train_labels.to(embeddings.device), preset.head_steps,
                              preset.head_batch_size, preset.head_lr, preset.seed, show_progress)
            out["head_fit_seconds"] = round(time.perf_counter() - start, 1)
        out["test"] = {"parametric": evaluate_classifier(model, test_images, test_labels, processor)}
        return out
    # The memory holds every training sample (also when training used a subset: the parameters then
    # saw only part of it, which `trained_on` records).
    memory_split = data["train"]
    if preset.memory_samples is not None:
        memory_split = memory_split.select(range(preset.memory_samples))
    trained = torch.zeros(len(memory_split), dtype=torch.bool)
    trained[: (preset.max_train_samples or len(memory_split))] = True
    start = time.perf_counter()
    memory = model.build_memory(
        memory_split, image_processor=processor, batch_size=1000, trained_on=trained, show_progress=show_progress
    )
    out["memory_seconds"] = round(time.perf_counter() - start, 1)
    out["memory_size"] = len(memory)
    if preset.head_steps:
        out["test_before_head_fit"] = {"class_mean": evaluate_classifier(model, test_images, test_labels, processor)}
        out["head_fit_seconds"] = round(calibrate_fusion(
            model, preset.head_steps, preset.head_batch_size, preset.head_lr, preset.seed, show_progress
        ), 1)
    results = {}
    for mode in ("class_mean", "knn"):
        model.config.memory_mode = mode
        results[mode] = evaluate_classifier(model, test_images, test_labels, processor)
    model.config.memory_mode = "class_mean"
    out["test"] = results
    return out


def state_dict_sha256(state_dict: dict) -> str:
    """SHA-256 over a state dict's names and bytes (to compare weights across processes or runs)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


