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
from dataclasses import asdict, replace

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoImageProcessor, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import TrainOutput

from ..baselines.parametric import ParametricForImageClassification
from ..configuration_spm import SPMConfig
from ..files import latest_complete_checkpoint, write_json
from ..data import as_uint8_tensors, dataset_record, label_names, load_image_dataset
from ..image_processing_spm import make_image_processor, normalization_statistics, normalize_uint8
from ..evaluation.classifier import evaluate_classifier
from ..modeling_spm import SPMForImageClassification
from .classifier_presets import ClassifierPreset, get_preset, reproduce_command
from .core_split import core_ids_digest, core_mask
from .episodic import EpisodicCollator, IndexDataset


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
    """The preset's model for a dataset of `num_channels` x `image_size` images. A transformers backbone
    (`preset.backbone`) keeps its own input size where its config has one (a ViT's 224: the image
    processor resizes to it), and takes the dataset's otherwise."""
    encoder = dict(encoder=preset.encoder, image_size=image_size)
    if preset.backbone is not None:
        backbone_config = AutoConfig.from_pretrained(preset.backbone)
        if getattr(backbone_config, "num_channels", num_channels) != num_channels:
            raise ValueError(f"backbone {preset.backbone!r} takes {backbone_config.num_channels}-channel images; "
                             f"the dataset {preset.dataset!r} has {num_channels} channel(s)")
        encoder = dict(backbone=preset.backbone, backbone_config=backbone_config,
                       use_pretrained_backbone=preset.use_pretrained_backbone,
                       image_size=None if getattr(backbone_config, "image_size", None) else image_size)
    config = SPMConfig(
        **encoder,
        num_channels=num_channels,
        freeze_encoder=preset.freeze_encoder,
        knn_k=preset.knn_k,
        knn_aggregation=preset.knn_aggregation,
        episode_reading=preset.episode_reading,
        fusion=preset.fusion,
        fusion_temperature=preset.fusion_temperature,
        fusion_similarity=preset.fusion_similarity,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    return (ParametricForImageClassification if parametric else SPMForImageClassification)(config)


def backbone_normalization(preset: ClassifierPreset) -> tuple[list[float], list[float]] | None:
    """`(image_mean, image_std)` of a pretrained backbone's own image processor (what its weights were
    trained on), or None: no pretrained backbone, or it ships no processor."""
    if preset.backbone is None or not preset.use_pretrained_backbone:
        return None
    try:
        processor = AutoImageProcessor.from_pretrained(preset.backbone)
    except (OSError, ValueError):
        return None
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    return (list(mean), list(std)) if mean is not None and std is not None else None


def make_optimizer(model: torch.nn.Module, preset: ClassifierPreset, steps_per_epoch: int):
    """`(optimizer, scheduler)` of a preset: SGD with Nesterov momentum, stepped per batch by a one-cycle
    schedule (peak `learning_rate` after 25 % of the steps) or a multistep one (x0.1 at `milestones`)."""
    # OneCycleLR needs a few steps per phase; tiny smoke runs can have fewer.
    total_steps = max(8, math.ceil(steps_per_epoch * preset.epochs))
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],  # a frozen encoder's parameters decay no weight
        lr=preset.learning_rate,
        momentum=preset.momentum,
        weight_decay=preset.weight_decay,
        nesterov=True,
    )
    if preset.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=preset.learning_rate, total_steps=total_steps, pct_start=0.25
        )
    else:  # "multistep"; ClassifierPreset rejects any other schedule
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[int(m * total_steps) for m in preset.milestones], gamma=0.1
        )
    return optimizer, scheduler


def train_classifier(
    preset: str | ClassifierPreset,
    output_dir: str,
    parametric: bool = False,
    resume: bool | str = False,
    show_progress: bool = True,
    evaluate: bool = True,
    exclude_indices=None,
    command: str | None = None,
    **overrides,
) -> dict:
    """Train, build the memory, evaluate and save. Returns the summary (also `training_summary.json`).

    Args:
        preset: a name in `CLASSIFIER_PRESETS` or a `ClassifierPreset`.
        output_dir: the final model folder; checkpoints go to `<output_dir>/checkpoints`.
        parametric: train the parametric baseline (same encoder + linear head, same recipe).
        resume: True to resume from the last checkpoint in `<output_dir>/checkpoints`, or a path.
        exclude_indices: training-split rows left out of both training and the memory (the retrained
            oracle of an unlearning benchmark); indices into the preset's training subset.
            With a core split (`core_fraction` / `core_ids` / `core_exclude_classes`, preset fields), the
            parameters train on the core rows of the training subset only and the memory holds every row,
            the others `memory_only`: everything the parameters depend on (initial weights, normalisation
            and BatchNorm statistics, the sampler's order, the head fit) is then a function of the core rows
            and the seed, so training without some non-core rows gives bit-identical parameters.
        command: the command line this run was started with, recorded in the summary and the model card
            (default: the equivalent `spm-hf train-classifier` command, `reproduce_command`).
        overrides: fields of `ClassifierPreset` to change (e.g. `epochs=1`, `dataset="user/pets"`).
    """
    preset = get_preset(preset, **overrides) if isinstance(preset, str) else replace(preset, **overrides)
    command = command or reproduce_command(preset, output_dir, parametric)
    torch.manual_seed(preset.seed)
    data = load_image_dataset(preset.dataset, image_column=preset.image_column, label_column=preset.label_column)
    excluded = 0
    if exclude_indices is not None:
        data, preset, excluded = exclude_training_rows(data, preset, exclude_indices)
        command += f"  # with {excluded} training rows excluded (an unlearning benchmark's retrained oracle)"
    names = label_names(data)
    train_images, train_labels, train_ids = as_uint8_tensors(data["train"], limit=preset.max_train_samples)
    # Below, only `train_images` / `train_labels` reach the parameters; with a core split they hold the core
    # rows only, in their order in the dataset, so removing a non-core row changes none of them.
    core = core_mask(train_ids, train_labels, names, core_fraction=preset.core_fraction, core_seed=preset.core_seed,
                     core_ids=preset.core_ids, exclude_classes=preset.core_exclude_classes)
    core_ids = [i for i, keep in zip(train_ids, core.tolist()) if keep]
    if not core.all():
        train_images, train_labels = train_images[core], train_labels[core]
    test_images, test_labels, _ = as_uint8_tensors(data["test"], limit=preset.max_test_samples)
    num_channels, image_size = train_images.shape[1], train_images.shape[2]
    if train_images.shape[3] != image_size:
        raise ValueError(f"dataset {preset.dataset!r}: square images only (the processor resizes to one size), "
                         f"got {train_images.shape[3]}x{image_size}")
    # a pretrained backbone's own statistics, else the (core) training images' (the usual constants on the
    # full CIFAR-10 / MNIST training splits)
    pretrained_statistics = backbone_normalization(preset)
    mean, std = pretrained_statistics or normalization_statistics(train_images)
    model = build_model(preset, names, num_channels, image_size, parametric)
    if pretrained_statistics is not None and not any(p.requires_grad for p in model.parameters()):
        # a frozen pretrained backbone, the parameter-free fusion, the backbone's own normalisation: nothing
        # of the model comes from the training rows, so every memory row is memory-only
        core_ids = []
    model.config.core_ids_digest, model.config.core_size = core_ids_digest(core_ids), len(core_ids) or None
    processor = make_image_processor(model.config.image_size, mean, std)

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
        bf16=preset.mixed_precision == "bf16",
        fp16=preset.mixed_precision == "fp16",
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = len(train_labels) // (preset.batch_size * world)
    # a frozen encoder with the parameter-free fusion has nothing to train: the memory is all it learns
    trainable = any(p.requires_grad for p in model.parameters())
    if trainable and steps_per_epoch == 0:
        raise ValueError(f"{len(train_labels)} training rows (the core's, with a core split) do not fill one batch of "
                         f"batch_size={preset.batch_size} x {world} process(es); use more rows or a smaller batch")
    optimizer, scheduler = make_optimizer(model, preset, steps_per_epoch) if trainable else (None, None)
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
        # not transformers' get_last_checkpoint: Trainer writes a checkpoint folder in place, trainer_state.json
        # last, and a kill during that save leaves a folder get_last_checkpoint would pick
        resume_from = (resume if isinstance(resume, str)
                       else latest_complete_checkpoint(checkpoint_dir, "trainer_state.json"))
        if resume_from is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {checkpoint_dir}")
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from) if trainable else TrainOutput(0, float("nan"), {})
    train_seconds = time.perf_counter() - start
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # DDP keeps parameters in step, but BatchNorm statistics of the last step are per rank: take rank 0's
        # (the model that is saved) everywhere, so every process holds the same model.
        for buffer in trainer.model.buffers():
            torch.distributed.broadcast(buffer, src=0)

    summary = {
        "preset": asdict(preset),
        "model": "parametric" if parametric else "spm",
        "command": command,
        "data": dataset_record(preset.dataset, data, preset.image_column, preset.label_column),
        "normalization": {"mean": mean, "std": std},
        "train_samples": len(train_labels),
        "excluded_samples": excluded,
        "core": {"fraction": preset.core_fraction, "seed": preset.core_seed, "ids_file": preset.core_ids,
                 "exclude_classes": preset.core_exclude_classes, "size": len(core_ids),
                 "ids_digest": model.config.core_ids_digest},
        "train_seconds": round(train_seconds, 1),
        "epoch_seconds": [round(s, 1) for s in timer.epoch_seconds],
        "train_loss": round(result.training_loss, 4) if trainable else None,
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
        summary.update(_evaluate_and_attach_memory(model, parametric, preset, data, processor, test_images, test_labels,
                                                   show_progress, set(core_ids)))
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

    Only the memory's `trained_on` rows take part, queries and class means alike: a memory-only row must
    not reach the parameters, or forgetting it would not be exact. Returns 0 for a fusion without
    parameters (`fusion="cosine_prototype"`).
    """
    if not any(p.requires_grad for p in model.fusion.parameters()):
        return 0.0
    memory = model.memory
    trained = memory.trained_on
    embeddings, labels = memory.values.detach()[trained].float(), memory.labels[trained]
    if not len(labels):
        raise ValueError("calibrate_fusion needs trained_on rows in the memory; this memory has only memory-only rows")
    num_classes = model.config.num_labels
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=torch.float64, device=embeddings.device)
    sums = sums.index_add(0, labels, embeddings.double()).float()
    counts = torch.bincount(labels, minlength=num_classes).float()

    def batch_loss(indices):
        q, y = embeddings[indices], labels[indices]
        own = F.one_hot(y, num_classes).to(q.dtype)
        prototypes = (sums.unsqueeze(0) - own.unsqueeze(-1) * q.unsqueeze(1)) / (counts - own).clamp_min(1).unsqueeze(-1)
        present = (counts - own) > 0
        return F.nll_loss(model.fusion(q, prototypes, present), y)

    return fit_head(model.fusion.parameters(), batch_loss, len(labels), steps, batch_size, lr, seed, show_progress)


def encode_for_head_fit(model, images: torch.Tensor, processor, batch_size: int = 1000,
                        show_progress: bool = True) -> torch.Tensor:
    """(N, D) eval-mode, non-augmented embeddings of (N, C, H, W) uint8 training images, batched, with a
    progress bar (the parametric baseline's counterpart of the SPM's `build_memory` encoding)."""
    from transformers.utils.logging import tqdm

    chunks = []
    with tqdm(total=len(images), desc="Encoding training set", unit="img", disable=not show_progress) as bar:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            chunks.append(model.encode(normalize_uint8(chunk, processor)))
            bar.update(len(chunk))
    return torch.cat(chunks)


def refit_linear_head(model: ParametricForImageClassification, embeddings: torch.Tensor, labels: torch.Tensor,
                      steps: int, batch_size: int = 1024, lr: float = 3e-3, seed: int = 0,
                      show_progress: bool = True) -> float:
    """The parametric baseline's counterpart of `calibrate_fusion`: refit the linear head on frozen
    eval-mode embeddings of the training set (`encode_for_head_fit`), same steps and optimizer (a fair
    comparison), with a progress bar unless `show_progress=False`."""

    def batch_loss(indices):
        return F.cross_entropy(model.classifier(embeddings[indices]), labels[indices])

    return fit_head(model.classifier.parameters(), batch_loss, len(labels), steps, batch_size, lr, seed, show_progress)


def _evaluate_and_attach_memory(model, parametric, preset, data, processor, test_images, test_labels, show_progress,
                                core_ids: set[str]):
    out = {}
    if parametric:
        out["test_before_head_fit"] = {"parametric": evaluate_classifier(model, test_images, test_labels, processor)}
        if preset.head_steps:
            start = time.perf_counter()
            train_images, train_labels, train_ids = as_uint8_tensors(data["train"], limit=preset.memory_samples)
            core = torch.tensor([i in core_ids for i in train_ids], dtype=torch.bool)
            train_images, train_labels = train_images[core], train_labels[core]  # the head fit reads core rows only
            embeddings = encode_for_head_fit(model, train_images, processor, show_progress=show_progress)
            refit_linear_head(model, embeddings, train_labels.to(embeddings.device), preset.head_steps,
                              preset.head_batch_size, preset.head_lr, preset.seed, show_progress)
            out["head_fit_seconds"] = round(time.perf_counter() - start, 1)
        out["test"] = {"parametric": evaluate_classifier(model, test_images, test_labels, processor)}
        return out
    # The memory holds every training sample (also when training used a subset: the parameters then
    # saw only part of it, which `trained_on` records).
    memory_split = data["train"]
    if preset.memory_samples is not None:
        memory_split = memory_split.select(range(min(preset.memory_samples, len(memory_split))))
    # trained_on: the core rows of the training subset (every row of it without a core split)
    trained = torch.tensor([i in core_ids for i in memory_split["sample_id"]], dtype=torch.bool)
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


