"""Training the semi-parametric generator with `accelerate` (episodic, like the classifier: docs/method.md).

`GeneratorTrainer(config, output_dir)` (`train()`, `save()`, `load()` to resume; `train_generator(preset,
output_dir, ...)` does all in one call, from a preset of `generator_presets`) runs unchanged on a CPU, one
GPU, or several GPUs / machines under `accelerate launch`. Per step:

1. a global batch of query indices is drawn (a seeded permutation per epoch; each process takes its
   slice), and an episode per process batch from `spm_hf.training.EpisodicSupportSampler`: a support
   balanced over the batch's labels that excludes the batch's own samples, and a random label
   permutation applied to query and support labels alike;
2. images in [0, 1] -> [-1, 1], random horizontal flips where the preset says so (CIFAR, as the paper);
3. queries get noise at t ~ U{0..T-1} (diffusers' `DDPMScheduler`, the paper's linear β 1e-4..0.02,
   T = 1000); the support is **clean** (see `unet_spm`, deviation 1);
4. guidance label dropout: with probability `drop_prob` (0.1) a query's class embedding becomes the null
   class; its label is still used to match the support (as the reference's `c_int`);
5. loss = MSE(ε̂, ε) on the queries; Adam, gradient clipping at 1.0, linear warm-up of the learning rate
   (per step; the reference warms up per epoch), EMA of the weights with diffusers' `EMAModel`.

Every `eval_every` steps the EMA weights draw a sample grid (one row per class) to
`<output_dir>/samples/step-XXXXXXX.png`. Every `checkpoint_every` steps a checkpoint is written to
`<output_dir>/checkpoints/checkpoint-XXXXXXX/` (safetensors + JSON only, no pickle: weights, EMA,
optimizer state, data-order and noise generators), and `resume="latest"` (or a path) continues exactly
where it stopped. At the end the EMA weights, a `DDIMScheduler` built from the training scheduler's config
and an `ImageSampleMemory` of the training images (`trained_on=True`) are saved as an
`SPMDiffusionPipeline` in `output_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, replace

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from diffusers import DDIMScheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..data import as_uint8_tensors, dataset_record, label_names, load_image_dataset
from ..evaluation.grids import sample_grid
from ..files import atomic_directory, checkpoint_folders, latest_complete_checkpoint, write_atomic, write_json
from ..generation.memory_component import ImageSampleMemory
from ..generation.pipeline_spm import SPMDiffusionPipeline, make_noise_scheduler
from ..generation.unet_spm import UNET_ARCHITECTURES, SPMUNet2DModel, label_directions
from .episodic import EpisodicSupportSampler
from .generator_presets import GENERATOR_PRESETS, GeneratorTrainingConfig, get_generator_preset, reproduce_command


# ---------------------------------------------------------------------- checkpoint state (no pickle)
class _TrainState:
    """Step counter, epoch permutation and every generator: everything `resume` needs besides weights."""

    def __init__(self, n: int, seed: int, sampler: EpisodicSupportSampler):
        self.n, self.step, self.pos = n, 0, 0
        self.seconds = 0.0  # training time before this process started (a resumed run's earlier time)
        self.data_gen = torch.Generator().manual_seed(seed)
        self.noise_gen = torch.Generator().manual_seed(seed + 1)
        self.sampler = sampler
        self.perm = torch.randperm(n, generator=self.data_gen)

    def next_indices(self, count: int) -> torch.Tensor:
        out = []
        while count > 0:
            if self.pos >= self.n:
                self.perm, self.pos = torch.randperm(self.n, generator=self.data_gen), 0
            take = self.perm[self.pos : self.pos + count]
            out.append(take)
            self.pos += take.numel()
            count -= take.numel()
        return torch.cat(out)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "perm": self.perm.clone(),
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "sampler_gen": self.sampler.generator.get_state(),
        }

    def meta(self) -> dict:
        return {"step": self.step, "pos": self.pos, "n": self.n, "seconds": self.seconds}

    def load(self, tensors: dict, meta: dict) -> None:
        if meta["n"] != self.n:
            raise ValueError(f"checkpoint was trained on {meta['n']} samples; this run has {self.n}")
        self.step, self.pos = meta["step"], meta["pos"]
        self.seconds = float(meta.get("seconds", 0.0))  # older checkpoints kept no time
        self.perm = tensors["perm"]
        self.data_gen.set_state(tensors["data_gen"])
        self.noise_gen.set_state(tensors["noise_gen"])
        self.sampler.generator.set_state(tensors["sampler_gen"])


def _save_checkpoint(path: str, unet, optimizer, ema, state: _TrainState, config: GeneratorTrainingConfig) -> None:
    # one step: a kill leaves the old folder (a re-save of the same step) or none, never half of one
    with atomic_directory(path, owned=("*",)) as tmp:
        _write_checkpoint(tmp, unet, optimizer, ema, state, config)


def _write_checkpoint(tmp: str, unet, optimizer, ema, state: _TrainState, config: GeneratorTrainingConfig) -> None:
    unet.save_pretrained(os.path.join(tmp, "unet"))
    ema_sd = ema.state_dict()
    shadow = {f"shadow.{i}": t.detach().cpu().contiguous() for i, t in enumerate(ema_sd.pop("shadow_params"))}
    save_file(shadow, os.path.join(tmp, "ema.safetensors"))
    opt_sd = optimizer.state_dict()
    opt_tensors = {}
    for idx, st in opt_sd["state"].items():
        for key, value in st.items():
            opt_tensors[f"state.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    save_file(opt_tensors, os.path.join(tmp, "optimizer.safetensors"))
    save_file(state.tensors(), os.path.join(tmp, "train_state.safetensors"))
    meta = {
        "train_state": state.meta(),
        "ema": {k: v for k, v in ema_sd.items() if isinstance(v, (int, float, bool, type(None)))},
        "optimizer_param_groups": opt_sd["param_groups"],
        "training_config": asdict(config),
    }
    with open(os.path.join(tmp, "checkpoint.json"), "w") as f:
        json.dump(meta, f, indent=1)


def _load_checkpoint(path: str, unet, optimizer, ema, state: _TrainState) -> None:
    with open(os.path.join(path, "checkpoint.json")) as f:
        meta = json.load(f)
    weights = SPMUNet2DModel.from_pretrained(os.path.join(path, "unet")).state_dict()
    unet.load_state_dict(weights)
    shadow = load_file(os.path.join(path, "ema.safetensors"))
    ema_sd = dict(meta["ema"])
    ema_sd["shadow_params"] = [shadow[f"shadow.{i}"] for i in range(len(shadow))]
    ema.load_state_dict(ema_sd)
    opt_tensors = load_file(os.path.join(path, "optimizer.safetensors"))
    opt_state: dict[int, dict] = {}
    for key, value in opt_tensors.items():
        _, idx, name = key.split(".", 2)
        opt_state.setdefault(int(idx), {})[name] = value
    groups = meta["optimizer_param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    state.load(load_file(os.path.join(path, "train_state.safetensors")), meta["train_state"])


def _truncate_train_log(log_path: str, step: int) -> None:
    """Drop the log records after `step`: a resumed run redoes those steps and logs them again."""
    if not os.path.exists(log_path):
        return
    with open(log_path) as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) < len(lines):
        write_atomic(log_path, "".join(kept))


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint in `<output_dir>/checkpoints` (one with its checkpoint.json), or None."""
    return latest_complete_checkpoint(os.path.join(output_dir, "checkpoints"), "checkpoint.json")


EXEMPLAR_LOGIT_SCALE = 10.0


def exemplar_loss(encoder, queries, query_labels, support, support_labels) -> torch.Tensor:
    """Prototypical-network cross-entropy: clean query images against per-label support prototypes, by cosine
    similarity (x `EXEMPLAR_LOGIT_SCALE`) of unit embeddings, the directions the UNet is conditioned on.

    Why: with labels permuted per batch, the diffusion loss alone teaches the exemplar encoder to tell classes
    apart only slowly (a 2 % loss difference between right and wrong support after 1,500 `mnist-cpu` steps,
    while a class-embedding table learns the classes in that time); this loss gives it the class signal
    directly. Queries whose label has no support item are skipped.
    """
    labels = torch.unique(support_labels)
    s_emb, q_emb = encoder(support), F.normalize(encoder(queries), dim=-1)  # (S, E), (B, E)
    prototypes = label_directions(labels, support_labels, s_emb)  # (L, E): the directions the UNet reads
    keep = torch.isin(query_labels, labels)
    if not keep.any():
        return s_emb.sum() * 0.0
    target = torch.searchsorted(labels, query_labels[keep])
    return F.cross_entropy(EXEMPLAR_LOGIT_SCALE * q_emb[keep] @ prototypes.T, target)


def _without_classes(images, labels, ids, label_names, classes):
    """Drop every sample of `classes` (names or indices). The class keeps its embedding row, untrained, and
    gets no memory: what a model retrained without the class looks like to the pipeline."""
    wanted = []
    for c in classes:
        if isinstance(c, str) and c.isdigit() and c not in label_names:
            c = int(c)
        if isinstance(c, int) and 0 <= c < len(label_names):
            wanted.append(c)
        elif c in label_names:
            wanted.append(label_names.index(c))
        else:
            raise ValueError(f"exclude_classes: {c!r} is not one of {label_names}")
    keep = ~torch.isin(labels, torch.tensor(wanted))
    if not keep.any():
        raise ValueError("exclude_classes removes every training sample")
    return images[keep], labels[keep], [i for i, k in zip(ids, keep.tolist()) if k]


def _training_data(config: GeneratorTrainingConfig, images, labels, ids, names):
    """`(images, labels, ids, names, record)`: the given tensors (record None), or the train split of
    `config.dataset` (record: `spm_hf.data.dataset_record`), without `config.exclude_classes`."""
    record = None
    if images is None:
        if config.dataset is None:
            raise ValueError(f"preset {config.preset!r} names no dataset: pass dataset=... (--dataset) or "
                             "images/labels/ids/label_names")
        ds = load_image_dataset(config.dataset, splits=("train",), image_column=config.image_column,
                                label_column=config.label_column)
        images, labels, ids = as_uint8_tensors(ds["train"], limit=config.train_limit)
        names, record = label_names(ds), dataset_record(config.dataset, ds, config.image_column, config.label_column)
    elif labels is None or ids is None or names is None:
        raise ValueError("images needs labels, ids and label_names")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if config.exclude_classes:
        images, labels, ids = _without_classes(images, labels, ids, names, config.exclude_classes)
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"square images only, got {images.shape[2]}x{images.shape[3]}")
    return images, labels, ids, names, record


# ---------------------------------------------------------------------- the trainer
class GeneratorTrainer:
    """Trains an `SPMUNet2DModel` episodically with `accelerate` (one step: the module docstring).

        trainer = GeneratorTrainer(get_generator_preset("gen-mnist-cpu"), "outputs/mnist-gen")
        trainer.load("latest")      # optional: continue from the last checkpoint
        trainer.train()             # until max_steps, or max_minutes of training in all
        pipe = trainer.save()       # the EMA weights as an SPMDiffusionPipeline in output_dir

    Args:
        config: the run's `GeneratorTrainingConfig` (`get_generator_preset(name, **overrides)`).
        output_dir: where checkpoints, sample grids, the log (`train_log.jsonl`) and the pipeline go.
        images, labels, ids, label_names: train on these uint8 tensors (N, C, H, W) instead of the train split
            of `config.dataset`.
        show_progress: a progress bar on the main process.
        command: the command line this run was started with, kept in `training_config.json` and the model
            card (default: the equivalent `spm-hf train-generator` command, `reproduce_command`).
    """

    def __init__(self, config: GeneratorTrainingConfig, output_dir: str, *, images: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, ids: list[str] | None = None,
                 label_names: list[str] | None = None, show_progress: bool = True, command: str | None = None):
        if config.unet_architecture not in UNET_ARCHITECTURES:
            raise ValueError(f"unet_architecture={config.unet_architecture!r}; choose one of "
                             f"{', '.join(UNET_ARCHITECTURES)}")
        if images is not None:  # the tensors are the data: the preset's dataset (and row limit) did not apply
            config = replace(config, dataset=None, train_limit=None)
        self.config, self.output_dir, self.show_progress = config, output_dir, show_progress
        self.log_path = os.path.join(output_dir, "train_log.jsonl")
        # accelerate's state is process-wide: an earlier run in this process (a classifier's Trainer, another
        # generator) may have set another mixed precision, which Accelerator refuses to change. Each run sets its
        # own, as transformers' TrainingArguments does; the process / device part of the state is kept.
        AcceleratorState._reset_state()
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision)
        self.is_main = self.accelerator.is_main_process
        self.images, self.labels, self.ids, self.label_names, self.data_record = _training_data(
            config, images, labels, ids, label_names)
        # no command line trains on tensors passed in Python: then only a given `command` is recorded
        self.command = command or (reproduce_command(config, output_dir) if images is None else None)
        _, channels, size, _ = self.images.shape
        if self.is_main:
            os.makedirs(output_dir, exist_ok=True)

        torch.manual_seed(config.seed)
        self.unet_model = SPMUNet2DModel.from_architecture(
            config.unet_architecture,
            **{**config.unet_overrides, "sample_size": size, "in_channels": channels,
               "num_class_embeds": len(self.label_names)},
        )
        self.noise_scheduler = make_noise_scheduler()
        optimizer = torch.optim.Adam(self.unet_model.parameters(), lr=config.learning_rate,
                                     betas=tuple(config.adam_betas))
        # `unet` is what the steps call (wrapped for DDP where there are several processes), `unet_model` the
        # module itself (checkpoints, EMA, the exemplar encoder).
        self.unet, self.optimizer = self.accelerator.prepare(self.unet_model, optimizer)
        self.unet_model = self.accelerator.unwrap_model(self.unet)
        self.ema = EMAModel(self.unet_model.parameters(), decay=config.ema_decay, use_ema_warmup=True,
                            power=config.ema_power, model_cls=SPMUNet2DModel, model_config=self.unet_model.config)
        self.ema.to(self.accelerator.device)
        self.sampler = EpisodicSupportSampler(self.labels, len(self.label_names), config.support_size,
                                              permute_labels=config.permute_labels, seed=config.seed + 2)
        self.state = _TrainState(len(self.labels), config.seed, self.sampler)
        self._memory = None  # every training image, built on first use (sample grids, the saved pipeline)

    # ------------------------------------------------------------------ checkpoints
    def load(self, checkpoint: str = "latest") -> str:
        """Continue from `checkpoint` (a checkpoint folder, or `"latest"` in `output_dir/checkpoints`): weights,
        EMA, optimizer, step, data order, generators and the training time so far. The log loses the records
        after the checkpoint's step (they are redone). Returns the checkpoint folder."""
        path = latest_checkpoint(self.output_dir) if checkpoint == "latest" else checkpoint
        if path is None:
            raise FileNotFoundError(f"resume='latest' but {self.output_dir}/checkpoints holds no checkpoint")
        _load_checkpoint(path, self.unet_model, self.optimizer, self.ema, self.state)
        if self.is_main:
            _truncate_train_log(self.log_path, self.state.step)
            print(f"resumed from {path} at step {self.state.step} after {self.state.seconds / 60:.1f} minutes "
                  "of training")
        return path

    def save_checkpoint(self, seconds: float) -> str:
        """Write `checkpoints/checkpoint-<step>` (after `seconds` of training in all) on the main process,
        keeping the newest `checkpoints_total_limit`. Every process must call it (it waits for all)."""
        self.accelerator.wait_for_everyone()
        ckpt_dir = os.path.join(self.output_dir, "checkpoints")
        path = os.path.join(ckpt_dir, f"checkpoint-{self.state.step:07d}")
        if self.is_main:
            self.state.seconds = seconds
            _save_checkpoint(path, self.unet_model, self.optimizer, self.ema, self.state, self.config)
            found = checkpoint_folders(ckpt_dir)
            for old in found[: -self.config.checkpoints_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    # ------------------------------------------------------------------ training
    def train(self) -> None:
        """Train from the current step to `max_steps`, or until `max_minutes` of training in all (earlier
        runs of a resumed training included), logging, drawing grids and checkpointing on the way; ends with
        a grid of the final weights (where grids are drawn and the last step drew none)."""
        config, state = self.config, self.state
        self.unet.train()
        # Time counts across resumes: max_minutes bounds the whole training, and the log's seconds add up.
        start_time, losses = time.perf_counter() - state.seconds, []
        bar = tqdm(total=config.max_steps, initial=state.step, disable=not (self.show_progress and self.is_main),
                   desc="train")
        while state.step < config.max_steps:
            if config.max_minutes is not None and time.perf_counter() - start_time > 60 * config.max_minutes:
                if self.is_main:
                    print(f"max_minutes={config.max_minutes} reached at step {state.step}: stopping")
                break
            loss, lr = self.training_step()
            losses.append(loss)
            bar.update(1)
            if self.is_main and (state.step % config.log_every == 0 or state.step == config.max_steps):
                record = {"step": state.step, "loss": float(np.mean(losses)), "lr": lr,
                          "seconds": round(time.perf_counter() - start_time, 2)}
                losses = []
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if config.eval_every and state.step % config.eval_every == 0 and self.is_main:
                self.evaluate()
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                self.save_checkpoint(time.perf_counter() - start_time)
        bar.close()
        self.accelerator.wait_for_everyone()
        if self.is_main and config.eval_every and state.step % config.eval_every:
            self.evaluate()

    def training_step(self) -> tuple[float, float]:
        """One optimisation step on the next global batch; returns `(loss, learning rate)`."""
        config, state, accelerator = self.config, self.state, self.accelerator
        world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
        images, labels = self.images, self.labels
        _, channels, height, width = images.shape
        global_idx = state.next_indices(config.batch_size * world)
        # Episodes and noise are drawn for the whole global batch on every process (identical generator
        # states everywhere, so one checkpoint restores all); each process keeps its own slice.
        episodes = [self.sampler.sample(global_idx[r::world]) for r in range(world)]
        idx, episode = global_idx[rank::world], episodes[rank]
        b, total = idx.numel(), global_idx.numel()
        noise_all = torch.randn((total, channels, height, width), generator=state.noise_gen)
        t_all = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (total,), generator=state.noise_gen)
        drop_all = torch.rand(total, generator=state.noise_gen) < config.drop_prob
        flip_all = torch.rand(total + sum(len(e.support_indices) for e in episodes), generator=state.noise_gen) < 0.5
        noise, timesteps, drop = noise_all[rank::world], t_all[rank::world], drop_all[rank::world]

        x0 = images[idx].float() / 127.5 - 1.0
        support = images[episode.support_indices].float() / 127.5 - 1.0
        if config.hflip:
            flips = flip_all[: b + len(support)]
            x0 = torch.where(flips[:b, None, None, None], x0.flip(-1), x0)
            support = torch.where(flips[b:, None, None, None], support.flip(-1), support)
        q_labels = episode.permutation[labels[idx]].to(device)
        s_labels = episode.permutation[labels[episode.support_indices]].to(device)
        x0, noise, timesteps, support = x0.to(device), noise.to(device), timesteps.to(device), support.to(device)
        noisy = self.noise_scheduler.add_noise(x0, noise, timesteps)

        lr = config.learning_rate * min(1.0, (state.step + 1) / max(1, config.warmup_steps))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with accelerator.autocast():
            pred = self.unet(noisy, timesteps, q_labels, support_images=support, support_labels=s_labels,
                             class_dropout_mask=drop.to(device)).sample
            loss = F.mse_loss(pred.float(), noise.float())
            if config.exemplar_loss_weight and self.unet_model.support_encoder is not None:
                loss = loss + config.exemplar_loss_weight * exemplar_loss(
                    self.unet_model.support_encoder, x0, q_labels, support, s_labels)
        accelerator.backward(loss)
        if config.grad_clip:
            accelerator.clip_grad_norm_(self.unet.parameters(), config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.unet_model.parameters())
        state.step += 1
        return loss.detach().item(), lr

    # ------------------------------------------------------------------ the EMA pipeline
    @property
    def memory(self) -> ImageSampleMemory:
        """Every training image (`trained_on=True`): what the grids read and the saved pipeline holds."""
        if self._memory is None:
            self._memory = ImageSampleMemory.from_images(self.images, self.labels, self.ids, self.label_names,
                                                         trained_on=True)
        return self._memory

    def pipeline(self) -> SPMDiffusionPipeline:
        """An `SPMDiffusionPipeline` of the EMA weights, a DDIM scheduler and `memory` (progress bar off)."""
        unet = SPMUNet2DModel.from_config(self.unet_model.config)
        self.ema.copy_to(unet.parameters())
        unet.to(self.accelerator.device).eval()
        pipe = SPMDiffusionPipeline(unet, DDIMScheduler.from_config(self.noise_scheduler.config), self.memory)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def evaluate(self) -> str:
        """Draw a grid of the EMA weights (one row per class) to `samples/step-<step>.png`; returns its path."""
        config = self.config
        grid = sample_grid(self.pipeline(), config.samples_per_class, config.sample_steps, config.sample_support_size,
                           config.guidance_scale, seed=config.seed)
        path = os.path.join(self.output_dir, "samples", f"step-{self.state.step:07d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        grid.save(path)
        return path

    def save(self, pipeline: SPMDiffusionPipeline | None = None) -> SPMDiffusionPipeline:
        """Save `pipeline` (default: the EMA pipeline) and `training_config.json` to `output_dir` on the main
        process; returns the pipeline, its progress bar on."""
        pipe = pipeline or self.pipeline()
        pipe.set_progress_bar_config(disable=False)
        # the model card written by save_pretrained reads it (the recipe and the command that reproduces it)
        pipe.training_config = {**asdict(self.config), "command": self.command, "data": self.data_record}
        if self.is_main:
            pipe.save_pretrained(self.output_dir)
            write_json(os.path.join(self.output_dir, "training_config.json"), pipe.training_config)
        return pipe


def train_generator(
    preset: str = "gen-tiny",
    output_dir: str = "outputs/generator",
    *,
    resume: str | None = None,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    ids: list[str] | None = None,
    label_names: list[str] | None = None,
    save_pipeline: bool = True,
    show_progress: bool = True,
    command: str | None = None,
    **overrides,
):
    """Train an `SPMUNet2DModel` episodically and save an `SPMDiffusionPipeline` to `output_dir`
    (`GeneratorTrainer` in one call).

    Args:
        preset: a name in `GENERATOR_PRESETS` (`gen-tiny`, `gen-mnist-cpu`, `gen-cifar10-cpu`, `gen-cifar10-paper`).
        output_dir: where checkpoints, sample grids, the log and the final pipeline go.
        resume: `"latest"` or a checkpoint folder to continue from.
        images, labels, ids, label_names: train on these uint8 tensors instead of the preset's dataset.
        save_pipeline: save the pipeline and `training_config.json` to `output_dir` (main process).
        command: the command line this run was started with (see `GeneratorTrainer`).
        overrides: any `GeneratorTrainingConfig` field (`max_steps`, `batch_size`, `dataset`, ...).

    Returns the pipeline with the EMA weights.
    """
    config = get_generator_preset(preset, **overrides)
    trainer = GeneratorTrainer(config, output_dir, images=images, labels=labels, ids=ids, label_names=label_names,
                               show_progress=show_progress, command=command)
    if resume:
        trainer.load(resume)
    trainer.train()
    pipe = trainer.pipeline()
    if save_pipeline:
        trainer.save(pipe)
    pipe.set_progress_bar_config(disable=False)
    trainer.accelerator.end_training()
    return pipe


__all__ = [
    "GENERATOR_PRESETS",
    "GeneratorTrainer",
    "GeneratorTrainingConfig",
    "exemplar_loss",
    "get_generator_preset",
    "latest_checkpoint",
    "train_generator",
]
