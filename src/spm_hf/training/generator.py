"""Training the semi-parametric generator with `accelerate` (paper-spec §3.2, episodic as in §2.2).

`train_generator(preset, output_dir, ...)` runs unchanged on a CPU, one GPU, or several GPUs / machines
under `accelerate launch`. Per step:

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

import glob
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..data import as_uint8_tensors, label_names, load_image_dataset
from ..evaluation.grids import sample_grid
from ..files import write_atomic, write_json
from ..generation.memory_component import ImageSampleMemory
from ..generation.pipeline_spm import SPMDiffusionPipeline, make_noise_scheduler
from ..generation.unet_spm import UNET_PRESETS, SPMUNet2DModel, label_directions
from .episodic import EpisodicSupportSampler


@dataclass
class GeneratorTrainingConfig:
    """Hyper-parameters of one generator training run (a preset, then overrides)."""

    preset: str = "tiny"
    dataset: str | None = None
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


TRAIN_PRESETS: dict[str, dict] = {
    "tiny": dict(batch_size=8, support_size=8, max_steps=4, learning_rate=1e-3, samples_per_class=2, sample_steps=4,
                 sample_support_size=8, log_every=1, exemplar_loss_weight=0.1),
    # Measured on the 2-core CPU box: mnist-cpu 0.13 s per step with one torch thread (4,000 steps ~ 9 min).
    # cifar10-cpu: 0.51 s per step with two threads and the box to itself (60 minutes = 6,987 steps), 0.9 s
    # per step with one thread beside another job (3,984 steps); two jobs of two threads each on the two cores
    # were ~10x slower. `max_minutes=60` stops and saves first on this box; `max_steps` bounds faster machines.
    "mnist-cpu": dict(dataset="mnist", batch_size=32, support_size=32, max_steps=4000, learning_rate=2e-3,
                      warmup_steps=100, eval_every=500, checkpoint_every=500, samples_per_class=8, sample_steps=25,
                      exemplar_loss_weight=0.1),
    "cifar10-cpu": dict(dataset="cifar10", batch_size=32, support_size=32, max_steps=8000, max_minutes=60,
                        learning_rate=1e-3, warmup_steps=200, hflip=True, eval_every=1000, checkpoint_every=500,
                        samples_per_class=8, sample_steps=25, exemplar_loss_weight=0.1),
    # The paper: 2,000 epochs of 50k / 256 (196 steps), 100 warm-up epochs, EMA 0.9993, validation grids
    # every 100 epochs with 10 samples per class, DDIM 50 steps, w = 0.3, support 1,024 at validation.
    "cifar10-paper": dict(dataset="cifar10", batch_size=256, support_size=256, max_steps=2000 * 196,
                          learning_rate=5e-4, warmup_steps=100 * 196, ema_decay=0.9993, hflip=True,
                          eval_every=100 * 196, checkpoint_every=10 * 196, samples_per_class=10, sample_steps=50,
                          sample_support_size=1024, log_every=196),
}


def make_training_config(preset: str, **overrides) -> GeneratorTrainingConfig:
    if preset not in TRAIN_PRESETS:
        raise KeyError(f"unknown generator preset {preset!r}; choose from {sorted(TRAIN_PRESETS)}")
    values = {**TRAIN_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(values) - set(GeneratorTrainingConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown training options {sorted(unknown)}")
    return GeneratorTrainingConfig(preset=preset, **values)


def load_training_data(dataset: str, limit: int | None = None):
    """(images uint8 (N, C, H, W), labels, ids, label_names) of a dataset's train split."""
    ds = load_image_dataset(dataset, splits=("train",))
    images, labels, ids = as_uint8_tensors(ds["train"], limit=limit)
    return images, labels, ids, label_names(ds)


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
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
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
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


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
    found = sorted(glob.glob(os.path.join(output_dir, "checkpoints", "checkpoint-*[0-9]")))
    return found[-1] if found else None


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


# ---------------------------------------------------------------------- the loop
def train_generator(
    preset: str = "tiny",
    output_dir: str = "outputs/generator",
    *,
    resume: str | None = None,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    ids: list[str] | None = None,
    label_names: list[str] | None = None,
    save_pipeline: bool = True,
    show_progress: bool = True,
    **overrides,
):
    """Train an `SPMUNet2DModel` episodically and save an `SPMDiffusionPipeline` to `output_dir`.

    Args:
        preset: `tiny`, `mnist-cpu`, `cifar10-cpu` or `cifar10-paper` (`TRAIN_PRESETS` x `UNET_PRESETS`).
        output_dir: where checkpoints, sample grids, the log and the final pipeline go.
        resume: `"latest"` or a checkpoint folder to continue from.
        images, labels, ids, label_names: train on these uint8 tensors instead of the preset's dataset.
        overrides: any `GeneratorTrainingConfig` field (`max_steps`, `batch_size`, `dataset`, ...).

    Returns the pipeline with the EMA weights (also saved to `output_dir` when `save_pipeline`).
    """
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel


    config = make_training_config(preset, **overrides)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    is_main = accelerator.is_main_process
    if images is None:
        if config.dataset is None:
            raise ValueError(f"preset {preset!r} names no dataset: pass dataset=... or images/labels/ids/label_names")
        images, labels, ids, label_names = load_training_data(config.dataset, config.train_limit)
    elif labels is None or ids is None or label_names is None:
        raise ValueError("images needs labels, ids and label_names")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if config.exclude_classes:
        images, labels, ids = _without_classes(images, labels, ids, label_names, config.exclude_classes)
    n, channels, height, width = images.shape
    if height != width:
        raise ValueError(f"square images only, got {height}x{width}")
    if is_main:
        os.makedirs(output_dir, exist_ok=True)

    torch.manual_seed(config.seed)
    unet_kwargs = {**config.unet_overrides, "sample_size": height, "in_channels": channels,
                   "num_class_embeds": len(label_names)}
    unet = SPMUNet2DModel.from_preset(preset if preset in UNET_PRESETS else "tiny", **unet_kwargs)
    noise_scheduler = make_noise_scheduler()
    optimizer = torch.optim.Adam(unet.parameters(), lr=config.learning_rate, betas=tuple(config.adam_betas))
    unet, optimizer = accelerator.prepare(unet, optimizer)
    raw_unet = accelerator.unwrap_model(unet)
    ema = EMAModel(raw_unet.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=config.ema_power,
                   model_cls=SPMUNet2DModel, model_config=raw_unet.config)
    ema.to(accelerator.device)

    sampler = EpisodicSupportSampler(labels, len(label_names), config.support_size,
                                     permute_labels=config.permute_labels, seed=config.seed + 2)
    state = _TrainState(n, config.seed, sampler)
    if resume:
        path = latest_checkpoint(output_dir) if resume == "latest" else resume
        if path is None:
            raise FileNotFoundError(f"resume='latest' but {output_dir}/checkpoints holds no checkpoint")
        _load_checkpoint(path, raw_unet, optimizer, ema, state)
        if is_main:
            _truncate_train_log(os.path.join(output_dir, "train_log.jsonl"), state.step)
            print(f"resumed from {path} at step {state.step} after {state.seconds / 60:.1f} minutes of training")

    memory = None  # the evaluation / final memory: every training image, built once, on the main process

    def get_memory():
        nonlocal memory
        if memory is None:
            memory = ImageSampleMemory.from_images(images, labels, ids, label_names, trained_on=True)
        return memory

    def ema_pipeline():
        from diffusers import DDIMScheduler

        eval_unet = SPMUNet2DModel.from_config(raw_unet.config)
        ema.copy_to(eval_unet.parameters())
        eval_unet.to(accelerator.device).eval()
        pipe = SPMDiffusionPipeline(eval_unet, DDIMScheduler.from_config(noise_scheduler.config), get_memory())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def evaluate(step: int) -> None:
        pipe = ema_pipeline()
        grid = sample_grid(pipe, config.samples_per_class, config.sample_steps, config.sample_support_size,
                           config.guidance_scale, seed=config.seed)
        os.makedirs(os.path.join(output_dir, "samples"), exist_ok=True)
        grid.save(os.path.join(output_dir, "samples", f"step-{step:07d}.png"))

    log_path = os.path.join(output_dir, "train_log.jsonl")
    world, rank = accelerator.num_processes, accelerator.process_index
    device = accelerator.device
    unet.train()
    # Time counts across resumes: max_minutes bounds the whole training, and the log's seconds add up.
    start_time, losses = time.perf_counter() - state.seconds, []
    from tqdm.auto import tqdm

    bar = tqdm(total=config.max_steps, initial=state.step, disable=not (show_progress and is_main), desc="train")
    while state.step < config.max_steps:
        if config.max_minutes is not None and time.perf_counter() - start_time > 60 * config.max_minutes:
            if is_main:
                print(f"max_minutes={config.max_minutes} reached at step {state.step}: stopping")
            break
        global_idx = state.next_indices(config.batch_size * world)
        # Episodes and noise are drawn for the whole global batch on every process (identical generator
        # states everywhere, so one checkpoint restores all); each process keeps its own slice.
        episodes = [sampler.sample(global_idx[r::world]) for r in range(world)]
        idx, episode = global_idx[rank::world], episodes[rank]
        b = idx.numel()
        noise_all = torch.randn((global_idx.numel(), channels, height, width), generator=state.noise_gen)
        t_all = torch.randint(0, noise_scheduler.config.num_train_timesteps, (global_idx.numel(),), generator=state.noise_gen)
        drop_all = torch.rand(global_idx.numel(), generator=state.noise_gen) < config.drop_prob
        flip_all = torch.rand(global_idx.numel() + sum(len(e.support_indices) for e in episodes), generator=state.noise_gen) < 0.5
        noise, timesteps, drop = noise_all[rank::world], t_all[rank::world], drop_all[rank::world]

        x0 = images[idx].float() / 127.5 - 1.0
        support = images[episode.support_indices].float() / 127.5 - 1.0
        if config.hflip:
            flips = flip_all[: b + len(support)]
            x0 = torch.where(flips[:b, None, None, None], x0.flip(-1), x0)
            support = torch.where(flips[b:, None, None, None], support.flip(-1), support)
        q_labels = episode.permutation[labels[idx]]
        s_labels = episode.permutation[labels[episode.support_indices]]
        x0, noise, timesteps = x0.to(device), noise.to(device), timesteps.to(device)
        noisy = noise_scheduler.add_noise(x0, noise, timesteps)

        lr = config.learning_rate * min(1.0, (state.step + 1) / max(1, config.warmup_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with accelerator.autocast():
            pred = unet(noisy, timesteps, q_labels.to(device), support_images=support.to(device),
                        support_labels=s_labels.to(device), class_dropout_mask=drop.to(device)).sample
            loss = F.mse_loss(pred.float(), noise.float())
            if config.exemplar_loss_weight and raw_unet.support_encoder is not None:
                loss = loss + config.exemplar_loss_weight * exemplar_loss(
                    raw_unet.support_encoder, x0, q_labels.to(device), support.to(device), s_labels.to(device))
        accelerator.backward(loss)
        if config.grad_clip:
            accelerator.clip_grad_norm_(unet.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(raw_unet.parameters())
        state.step += 1
        losses.append(loss.detach().item())
        bar.update(1)

        if is_main and (state.step % config.log_every == 0 or state.step == config.max_steps):
            record = {"step": state.step, "loss": float(np.mean(losses)), "lr": lr,
                      "seconds": round(time.perf_counter() - start_time, 2)}
            losses = []
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if config.eval_every and state.step % config.eval_every == 0 and is_main:
            evaluate(state.step)
        if config.checkpoint_every and state.step % config.checkpoint_every == 0:
            accelerator.wait_for_everyone()
            if is_main:
                state.seconds = time.perf_counter() - start_time
                ckpt_dir = os.path.join(output_dir, "checkpoints")
                _save_checkpoint(os.path.join(ckpt_dir, f"checkpoint-{state.step:07d}"), raw_unet, optimizer,
                                 ema, state, config)
                for old in sorted(glob.glob(os.path.join(ckpt_dir, "checkpoint-*[0-9]")))[: -config.checkpoints_total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
    bar.close()
    accelerator.wait_for_everyone()

    pipe = ema_pipeline()
    pipe.set_progress_bar_config(disable=False)
    if is_main:
        if config.eval_every and state.step % config.eval_every:
            evaluate(state.step)  # a grid of the final weights, unless the loop just drew one
        if save_pipeline:
            pipe.save_pretrained(output_dir)
            write_json(os.path.join(output_dir, "training_config.json"), asdict(config))
    accelerator.end_training()
    return pipe
