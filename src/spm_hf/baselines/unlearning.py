"""Parametric unlearning baselines for `ParametricForImageClassification`: FT, GA, RL, l1-sparse, SalUn.

Every method has the same signature (see `UNLEARNING_METHODS`)::

    unlearned, seconds = fn(model, forget=(x_f, y_f), retain=(x_r, y_r), epochs=None, lr=None,
                            batch_size=None, seed=0, show_progress=True, **method_kwargs)

* `model` is never modified: the method works on a `copy.deepcopy` and returns it (in eval mode).
* `x` are (N, C, H, W) images: normalised float tensors as the model expects them, or uint8 tensors,
  which are only scaled to [0, 1] (no mean/std normalisation: pass floats for a normalised model).
  `y` are (N,) class indices. Both stay on their device; batches are moved to the model's device.
* `seconds` is the wall time of the unlearning itself (saliency mask included for SalUn), not of the copy.
* `None` hyper-parameters take the method's default from `DEFAULTS` (the table below).
* `seed` fixes the data order and the random labels (a local `torch.Generator`; the global RNG is untouched).
* All methods use SGD (momentum 0.9, weight decay 5e-4, constant learning rate: the reference code's
  MultiStepLR milestones 91/136 are never reached within 10 epochs) and train-mode BatchNorm, as the
  reference code (Unlearn-Saliency / Unlearn-Sparse, `unlearn/*.py`). Train-mode BatchNorm updates the
  running statistics (buffers) in every method, SalUn included.

Hyper-parameters. "Paper" = the reference commands for CIFAR-10 / ResNet-18 (Unlearn-Saliency
Classification/README.md, Unlearn-Sparse README); "default" = ours, scaled down for
small CPU runs (fewer epochs, smaller batches: the project's subsets have thousands, not 45k, images):

| method | what it optimises | paper epochs / lr / batch | default epochs / lr / batch | other |
| --- | --- | --- | --- | --- |
| FT | CE on D_r | 10 / 0.01 / 256 | 5 / 0.01 / 64 | |
| GA | -CE on D_f | 5 / 1e-4 / 256 | 5 / 1e-4 / 64 | |
| RL | CE on D_f with uniform random labels, then CE on D_r, each epoch | 10 / 0.01 [1] / 256 | 5 / 0.01 / 64 | |
| l1-sparse | CE on D_r + alpha_e * sum abs(theta), alpha_e = alpha (1 - e / E) | 10 / 0.01 / 256 | 5 / 0.01 / 64 | alpha 5e-4 [2] |
| SalUn | RL, updating only the weights in the saliency mask | 10 / 0.1 [3] / 256 | 5 / 0.01 / 64 | threshold 0.5 [4] |

[1] RL's own learning rate is not in the READMEs; 0.01 is the FT value.
[2] The README examples pass `--alpha 0.2`; alpha must be tuned (Unlearn-Sparse repro notes). 5e-4 is
    our default for a sum-of-abs penalty (the gradient is alpha * sign(theta) per weight), not a paper value.
[3] README 0.1; the authors report ~6e-3 in Unlearn-Saliency issue #7. Our default is 0.01 for both RL and
    SalUn, so that SalUn vs RL isolates the mask.
[4] Fraction of weights kept trainable: the top 50% by |gradient of the forget loss| (README mask file
    `with_0.5.pt`).

Deviations from the reference code, on purpose:
* The SalUn mask is computed from the gradient of the forget loss at the original weights, summed over the
  forget batches (the paper's g = grad l_f(theta_o)). The reference `generate_mask.py` also takes SGD steps
  between batches while it accumulates, which moves the point where the gradient is taken.
* The mask keeps exactly `int(threshold * n_params)` weights (ties broken by `torch.topk`), the *largest*
  |g|, as the paper says. (The versions of `generate_mask.py` that rank `-|g|` do the same; one stored
  version ranks `+|g|` and so keeps the smallest: we follow the paper.)
* Unmasked weights are restored bit-exactly after every step (`torch.where(mask, new, old)`) and their
  momentum is zeroed, as the reference `_restore_masked_params`; so weight decay cannot move them either.
* RL follows the reference's CIFAR-10 branch (a pass over D_f with random labels, then a pass over D_r,
  each epoch); random labels are uniform over all classes and may equal the true label, as there.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


Split = tuple[torch.Tensor, torch.Tensor]

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4

DEFAULTS: dict[str, dict[str, Any]] = {
    "FT": {"epochs": 5, "lr": 0.01, "batch_size": 64},
    "GA": {"epochs": 5, "lr": 1e-4, "batch_size": 64},
    "RL": {"epochs": 5, "lr": 0.01, "batch_size": 64},
    "l1_sparse": {"epochs": 5, "lr": 0.01, "batch_size": 64, "alpha": 5e-4},
    "SalUn": {"epochs": 5, "lr": 0.01, "batch_size": 64, "threshold": 0.5},
}

# The values of the reference commands (CIFAR-10, ResNet-18), for reports.
PAPER_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "FT": {"epochs": 10, "lr": 0.01, "batch_size": 256},
    "GA": {"epochs": 5, "lr": 1e-4, "batch_size": 256},
    "RL": {"epochs": 10, "lr": 0.01, "batch_size": 256},
    "l1_sparse": {"epochs": 10, "lr": 0.01, "batch_size": 256, "alpha": "tuned (README example 0.2)"},
    "SalUn": {"epochs": 10, "lr": 0.1, "batch_size": 256, "threshold": 0.5},
}


# ---------------------------------------------------------------------------------------------- helpers
def _prepare(split: Split, name: str) -> Split:
    x, y = split
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise TypeError(f"{name} images must be uint8 or floating point, got {x.dtype}")
    y = y.reshape(-1).long()
    if x.dim() != 4 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: expected (N, C, H, W) images and (N,) labels, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x, y


def _resolve(method: str, **given) -> dict[str, Any]:
    params = dict(DEFAULTS[method])
    params.update({k: v for k, v in given.items() if v is not None})
    if params["epochs"] < 0 or params["batch_size"] < 1 or params["lr"] < 0:
        raise ValueError(f"{method}: need epochs >= 0, batch_size >= 1, lr >= 0; got {params}")
    return params


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _num_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def _sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def _ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    device = _device(model)
    return F.cross_entropy(model(pixel_values=x.to(device)).logits, y.to(device))


def l1_norm(model: nn.Module) -> torch.Tensor:
    """Sum of abs of every parameter (the reference `l1_regularization`: all parameters, biases and BN too)."""
    return torch.cat([p.reshape(-1) for p in model.parameters()]).abs().sum()


def _progress(method: str, total: int, show: bool):
    return tqdm(total=total, desc=f"Unlearning ({method})", unit="step", disable=not show, leave=False)


# ---------------------------------------------------------------------------------------------- training loop
def _run(
    method: str,
    model: nn.Module,
    passes: list[tuple[Split, bool]],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    show_progress: bool,
    momentum: float,
    weight_decay: float,
    num_classes: int,
    sign: float = 1.0,
    l1_alpha: float = 0.0,
    mask: dict[str, torch.Tensor] | None = None,
) -> None:
    """Train `model` in place. Each epoch runs over each `(split, random_labels)` of `passes` in order.

    loss = sign * CE (+ alpha_e * l1_norm); with `mask`, gradients and updates are confined to the mask.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = _sgd(model, lr, momentum, weight_decay)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    theta0 = {n: p.detach().clone() for n, p in named} if mask is not None else None
    total = epochs * sum(_num_batches(len(split[1]), batch_size) for split, _ in passes)
    model.train()
    with _progress(method, total, show_progress) as bar:
        for epoch in range(epochs):
            alpha = l1_alpha * (1.0 - epoch / epochs) if l1_alpha else 0.0
            for (x, y), random_labels in passes:
                for idx in _batches(len(y), batch_size, generator):
                    target = y[idx]
                    if random_labels:
                        target = torch.randint(0, num_classes, target.shape, generator=generator)
                    loss = sign * _ce(model, x[idx], target)
                    if alpha:
                        loss = loss + alpha * l1_norm(model)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if mask is not None:
                        for name, param in named:
                            if param.grad is not None:
                                param.grad.mul_(mask[name].to(param.grad.dtype))
                    optimizer.step()
                    if mask is not None:
                        _restore_unmasked(named, mask, theta0, optimizer)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch)
    model.eval()


@torch.no_grad()
def _restore_unmasked(named, mask, theta0, optimizer) -> None:
    for name, param in named:
        keep = mask[name]
        param.copy_(torch.where(keep, param, theta0[name]))
        state = optimizer.state.get(param)
        if state and state.get("momentum_buffer") is not None:
            state["momentum_buffer"].mul_(keep.to(param.dtype))


def _start(model: nn.Module, forget: Split, retain: Split) -> tuple[nn.Module, Split, Split]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    forget, retain = _prepare(forget, "forget"), _prepare(retain, "retain")
    return copy.deepcopy(model), forget, retain


# ---------------------------------------------------------------------------------------------- methods
def finetune(
    model: nn.Module,
    forget: Split,
    retain: Split,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
    momentum: float = MOMENTUM,
    weight_decay: float = WEIGHT_DECAY,
) -> tuple[nn.Module, float]:
    """FT: fine-tune on the retain set only (catastrophic forgetting of D_f). `forget` is not read.

    Defaults: 5 epochs, lr 0.01, batch 64 (paper: 10 epochs, lr 0.01, batch 256). Returns (model, seconds).
    """
    p = _resolve("FT", epochs=epochs, lr=lr, batch_size=batch_size)
    model, _, retain = _start(model, forget, retain)
    start = time.perf_counter()
    _run("FT", model, [(retain, False)], p["epochs"], p["lr"], p["batch_size"], seed, show_progress,
         momentum, weight_decay, model.config.num_labels)
    return model, time.perf_counter() - start


def gradient_ascent(
    model: nn.Module,
    forget: Split,
    retain: Split,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
    momentum: float = MOMENTUM,
    weight_decay: float = WEIGHT_DECAY,
) -> tuple[nn.Module, float]:
    """GA: gradient ascent on the forget set (minimise -CE on D_f). `retain` is not read.

    Defaults: 5 epochs, lr 1e-4, batch 64 (paper: 5 epochs, lr 1e-4, batch 256). Returns (model, seconds).
    """
    p = _resolve("GA", epochs=epochs, lr=lr, batch_size=batch_size)
    model, forget, _ = _start(model, forget, retain)
    start = time.perf_counter()
    _run("GA", model, [(forget, False)], p["epochs"], p["lr"], p["batch_size"], seed, show_progress,
         momentum, weight_decay, model.config.num_labels, sign=-1.0)
    return model, time.perf_counter() - start


def random_labels(
    model: nn.Module,
    forget: Split,
    retain: Split,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
    momentum: float = MOMENTUM,
    weight_decay: float = WEIGHT_DECAY,
) -> tuple[nn.Module, float]:
    """RL: each epoch, CE on D_f with labels drawn uniformly from all classes (redrawn every batch), then
    CE on D_r with the true labels (reference `unlearn/RL.py`, CIFAR-10 branch).

    Defaults: 5 epochs, lr 0.01, batch 64 (paper: 10 epochs, batch 256; lr see the module table).
    Returns (model, seconds).
    """
    p = _resolve("RL", epochs=epochs, lr=lr, batch_size=batch_size)
    model, forget, retain = _start(model, forget, retain)
    start = time.perf_counter()
    _run("RL", model, [(forget, True), (retain, False)], p["epochs"], p["lr"], p["batch_size"], seed,
         show_progress, momentum, weight_decay, model.config.num_labels)
    return model, time.perf_counter() - start


def l1_sparse(
    model: nn.Module,
    forget: Split,
    retain: Split,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
    momentum: float = MOMENTUM,
    weight_decay: float = WEIGHT_DECAY,
    alpha: float | None = None,
) -> tuple[nn.Module, float]:
    """l1-sparse (Jia et al., NeurIPS 2023; reference `FT_prune` = `FT_l1`): FT on D_r with the penalty
    alpha_e * sum |theta| over all parameters, alpha_e = alpha * (1 - e / epochs) decaying linearly per epoch
    (the reference schedule with `no_l1_epochs = 0`). `forget` is not read.

    Defaults: 5 epochs, lr 0.01, batch 64, alpha 5e-4 (paper: 10 epochs, lr 0.01, batch 256, alpha tuned).
    Returns (model, seconds).
    """
    p = _resolve("l1_sparse", epochs=epochs, lr=lr, batch_size=batch_size, alpha=alpha)
    model, _, retain = _start(model, forget, retain)
    start = time.perf_counter()
    _run("l1-sparse", model, [(retain, False)], p["epochs"], p["lr"], p["batch_size"], seed, show_progress,
         momentum, weight_decay, model.config.num_labels, l1_alpha=p["alpha"])
    return model, time.perf_counter() - start


def saliency_mask(
    model: nn.Module, forget: Split, threshold: float = 0.5, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """SalUn weight saliency: name -> bool mask of the weights with the largest |grad of the forget loss|.

    g = sum over forget batches of grad CE(model(x_f), y_f), taken at the current weights with the model in
    eval mode (BatchNorm running statistics, as the reference `generate_mask.py`); the model is not changed.
    The mask holds exactly `int(threshold * n)` True entries over all n trainable weights (global ranking
    across tensors; a parameter without gradient counts as |g| = 0).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    x, y = _prepare(forget, "forget")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = {n: torch.zeros_like(p) for n, p in named}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(y), batch_size):
            model.zero_grad(set_to_none=True)
            _ce(model, x[start : start + batch_size], y[start : start + batch_size]).backward()
            for n, p in named:
                if p.grad is not None:
                    grads[n] += p.grad.detach()
        model.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    flat = torch.cat([g.abs().reshape(-1) for g in grads.values()])
    k = int(threshold * flat.numel())
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k:
        keep[torch.topk(flat, k, sorted=False).indices] = True
    mask, offset = {}, 0
    for n, g in grads.items():
        mask[n] = keep[offset : offset + g.numel()].reshape(g.shape)
        offset += g.numel()
    return mask


def salun(
    model: nn.Module,
    forget: Split,
    retain: Split,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
    momentum: float = MOMENTUM,
    weight_decay: float = WEIGHT_DECAY,
    threshold: float | None = None,
    mask: dict[str, torch.Tensor] | None = None,
) -> tuple[nn.Module, float]:
    """SalUn (Fan et al., ICLR 2024): `saliency_mask` (top `threshold` fraction of weights by forget-loss
    gradient magnitude), then RL (random labels on D_f, true labels on D_r) updating only the masked weights.

    Weights outside the mask come back bit-identical to the input model's (gradients masked, values and
    momentum restored after each step). A precomputed `mask` (name -> bool tensor) skips the mask step.
    Defaults: 5 epochs, lr 0.01, batch 64, threshold 0.5 (paper: 10 epochs, lr 0.1, batch 256, 0.5).
    `seconds` includes the mask computation. Returns (model, seconds).
    """
    p = _resolve("SalUn", epochs=epochs, lr=lr, batch_size=batch_size, threshold=threshold)
    model, forget, retain = _start(model, forget, retain)
    start = time.perf_counter()
    if mask is None:
        mask = saliency_mask(model, forget, p["threshold"], p["batch_size"])
    device = _device(model)
    mask = {n: m.to(device=device, dtype=torch.bool) for n, m in mask.items()}
    missing = [n for n, q in model.named_parameters() if q.requires_grad and n not in mask]
    if missing:
        raise KeyError(f"mask has no entry for parameters {missing[:5]}")
    _run("SalUn", model, [(forget, True), (retain, False)], p["epochs"], p["lr"], p["batch_size"], seed,
         show_progress, momentum, weight_decay, model.config.num_labels, mask=mask)
    return model, time.perf_counter() - start


UnlearningMethod = Callable[..., tuple[nn.Module, float]]

# Uniform signature: fn(model, forget=(x, y), retain=(x, y), *, epochs, lr, batch_size, seed, show_progress,
# **method_kwargs) -> (unlearned model, seconds).
UNLEARNING_METHODS: dict[str, UnlearningMethod] = {
    "FT": finetune,
    "GA": gradient_ascent,
    "RL": random_labels,
    "l1_sparse": l1_sparse,
    "SalUn": salun,
}


__all__ = [
    "DEFAULTS",
    "PAPER_HYPERPARAMETERS",
    "UNLEARNING_METHODS",
    "finetune",
    "gradient_ascent",
    "l1_norm",
    "l1_sparse",
    "random_labels",
    "salun",
    "saliency_mask",
]
