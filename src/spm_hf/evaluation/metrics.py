"""Unlearning metrics: UA / FA / RA / TA, MIA-efficacy, prediction gap to a retrained oracle, Avg. Gap.

Conventions (SalUn's and l1-sparse's, which the paper's tables follow; every number is a percentage unless
said otherwise):

| name | definition | direction |
| --- | --- | --- |
| FA (forget accuracy) | accuracy on the forget set D_f | lower = more forgetting |
| UA (unlearning accuracy) | 100 - FA (SalUn / l1-sparse convention) | target: the Retrain value |
| RA (retain accuracy) | accuracy on the retain set D_r | target: Retrain |
| TA (test accuracy) | accuracy on the test set (class-wise forgetting: test samples of the remaining classes) | target: Retrain |
| MIA (MIA-efficacy) | SalUn SVC "confidence" attack: % of D_f predicted non-member | target: Retrain |
| PG_H (hard gap) | % of samples whose argmax differs from the retrained oracle's | lower is better |
| PG_S (soft gap) | mean over samples of KL(p_oracle || p_unlearned), in nats | lower is better |
| Avg. Gap | mean over {UA, RA, TA, MIA} of abs(method - Retrain) (SalUn) | lower is better |

Scores: every function that takes "scores" accepts either raw logits (the parametric baseline) or
log-probabilities (the SPM, whose `logits` are log-probabilities with `-inf` for classes absent from its
memory). Scores are normalised with `log_softmax`, which leaves log-probabilities unchanged up to rounding,
so both kinds go through the same code. A row must have at least one finite score.

Ties in an argmax go to the lowest class index (`torch.argmax`).

Everything here is a pure function of tensors or arrays (numpy arrays and lists are accepted) except
`predict_logprobs`, which runs a model. scikit-learn (the `eval` extra) is imported only by `mia_efficacy`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..modeling_spm import SPMForImageClassification


# log(1e-8): the floor the authors' code puts under probabilities (`log(clamp(p, 1e-8))`).
LOG_PROB_FLOOR = math.log(1e-8)

# The four metrics SalUn's Avg. Gap averages over.
AVG_GAP_KEYS = ("UA", "RA", "TA", "MIA")

# SalUn's attacker: sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf") (Unlearn-Saliency evaluation/SVC_MIA.py).
MIA_SVC_PARAMS = {"C": 3, "gamma": "auto", "kernel": "rbf"}


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(np.asarray(x))


def _as_scores(scores) -> torch.Tensor:
    scores = _as_tensor(scores)
    if scores.dim() != 2:
        raise ValueError(f"scores must be (N, C) logits or log-probabilities, got shape {tuple(scores.shape)}")
    return scores


def log_probs(scores) -> torch.Tensor:
    """(N, C) logits or log-probabilities -> (N, C) float64 log-probabilities (`log_softmax`).

    `-inf` entries stay `-inf` (probability exactly 0); a row of all `-inf` raises `ValueError`.
    """
    scores = _as_scores(scores).double()
    if scores.shape[0] and bool(torch.isneginf(scores).all(dim=1).any()):
        raise ValueError("a row of scores is all -inf: no class has any probability")
    return torch.log_softmax(scores, dim=-1)


def _as_labels(labels, n: int) -> torch.Tensor:
    labels = _as_tensor(labels).reshape(-1)
    if labels.is_floating_point():
        raise ValueError("labels must be integer class indices")
    if labels.numel() != n:
        raise ValueError(f"got {n} predictions and {labels.numel()} labels")
    return labels.long()


def accuracy(predictions, labels) -> float:
    """Percentage of correct predictions, in [0, 100].

    Args:
        predictions: (N,) predicted class indices, or (N, C) logits / log-probabilities / probabilities
            (argmax over the last axis; ties go to the lowest index).
        labels: (N,) true class indices.

    Raises `ValueError` for an empty set or mismatched sizes.
    """
    predictions = _as_tensor(predictions)
    if predictions.dim() == 2:
        predictions = predictions.argmax(dim=-1)
    elif predictions.dim() != 1:
        raise ValueError(f"predictions must be (N,) or (N, C), got shape {tuple(predictions.shape)}")
    n = predictions.shape[0]
    labels = _as_labels(labels, n)
    if n == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return 100.0 * (predictions.long() == labels).double().mean().item()


def forget_accuracy(forget_scores, forget_labels) -> float:
    """FA = accuracy (%) on the forget set D_f. Lower = more forgetting. Scores: logits or log-probs."""
    return accuracy(forget_scores, forget_labels)


def unlearning_accuracy(forget_scores, forget_labels) -> float:
    """UA = 100 - accuracy (%) on the forget set D_f (SalUn / l1-sparse convention).

    Higher = more forgetting; the target is the Retrain model's UA (about 5 for random 10% forgetting on
    CIFAR-10, 100 for class-wise forgetting), not 100. A class-wise-forgetting SPM, whose forgotten class
    has probability exactly 0, gets UA = 100.
    """
    return 100.0 - accuracy(forget_scores, forget_labels)


def retain_accuracy(retain_scores, retain_labels) -> float:
    """RA = accuracy (%) on the retain set D_r (the training samples that were not forgotten)."""
    return accuracy(retain_scores, retain_labels)


def test_accuracy(test_scores, test_labels) -> float:
    """TA = accuracy (%) on the test set. For class-wise forgetting pass the test samples of the remaining
    classes only (SalUn convention); for random forgetting the full test set."""
    return accuracy(test_scores, test_labels)


test_accuracy.__test__ = False  # not a pytest test, even when imported into a test module


def true_class_probability(scores, labels) -> torch.Tensor:
    """(N,) float64 probability of the true class ("confidence", the MIA feature): softmax(scores)[i, y_i].

    Scores are logits or log-probabilities; a class at `-inf` has probability exactly 0.
    """
    logp = log_probs(scores)
    labels = _as_labels(labels, logp.shape[0])
    return logp.gather(1, labels[:, None]).squeeze(1).exp()


def mia_efficacy(retain_probs_true, test_probs_true, forget_probs_true, seed: int = 0) -> float:
    """MIA-efficacy (%) by SalUn's SVC "confidence" attack.

    Protocol (Unlearn-Saliency `evaluation/SVC_MIA.py`, the `confidence` entry that the papers report):

    1. Feature: the probability the model gives to the true class (`true_class_probability`), one scalar
       per sample, computed on non-augmented images.
    2. Shadow set: members (label 1) = `min(|retain|, |test|)` retain samples, drawn without replacement
       with `numpy.random.default_rng(seed)`; non-members (label 0) = the whole test set. (SalUn's code takes
       the first |test| samples of its retain set, whose order is itself a random split; a seeded random
       subset is the same in distribution and does not depend on how the caller ordered the retain set.)
    3. Attacker: `sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")` fitted on the shadow set
       (`gamma="auto"` = 1 / n_features = 1 for this single feature).
    4. MIA-efficacy = 100 * (fraction of forget samples the SVC predicts as non-member, label 0)
       = 100 * (1 - mean(predict(forget))).

    Higher = the forget set looks more like unseen data. The target is the Retrain model's value (about 13
    for random 10% forgetting on CIFAR-10 in SalUn's Table 3, 100 for class-wise forgetting), not 100.
    This is not "MIA-privacy" (attack accuracy on held-out halves) nor a MIA AUC: the numbers do not convert.

    Args:
        retain_probs_true: (N_r,) true-class probabilities on the retain set.
        test_probs_true: (N_t,) true-class probabilities on the test set.
        forget_probs_true: (N_f,) true-class probabilities on the forget set.
        seed: seed of the retain subset.

    Returns a float in [0, 100]. Deterministic for a given seed (the SVC itself has no randomness here).
    """
    from sklearn.svm import SVC

    retain = _as_tensor(retain_probs_true).double().reshape(-1).numpy()
    test = _as_tensor(test_probs_true).double().reshape(-1).numpy()
    forget = _as_tensor(forget_probs_true).double().reshape(-1).numpy()
    if len(retain) == 0 or len(test) == 0 or len(forget) == 0:
        raise ValueError(
            f"mia_efficacy needs non-empty retain, test and forget sets; got {len(retain)}, {len(test)}, {len(forget)}"
        )
    for name, arr in (("retain", retain), ("test", test), ("forget", forget)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} probabilities contain NaN or inf")
    rng = np.random.default_rng(seed)
    members = retain[np.sort(rng.choice(len(retain), size=min(len(retain), len(test)), replace=False))]
    x_shadow = np.concatenate([members, test]).reshape(-1, 1)
    y_shadow = np.concatenate([np.ones(len(members)), np.zeros(len(test))])
    clf = SVC(**MIA_SVC_PARAMS)
    clf.fit(x_shadow, y_shadow)
    predicted_member = clf.predict(forget.reshape(-1, 1))
    return float(100.0 * (1.0 - predicted_member.mean()))


class PredictionGap(NamedTuple):
    """Gap between an unlearned model and a reference (the retrained oracle) on one set of samples.

    hard: PG_H, % of samples whose argmax differs (= 100 - agreement).
    soft: PG_S, mean over samples of KL(p_reference || p_unlearned), in nats.
    """

    hard: float
    soft: float


def prediction_gap(logp_a, logp_b, floor: float = LOG_PROB_FLOOR) -> PredictionGap:
    """Hard and soft prediction gap between model `a` (unlearned) and model `b` (reference / retrained).

    * hard = 100 * mean[argmax a != argmax b] (%), i.e. 100 - the authors' `agreement` (our reading of the
      paper's PG_H). Ties go to the lowest class index.
    * soft = mean_i KL(p_b,i || p_a,i) = mean_i sum_c p_b[i,c] (log p_b[i,c] - log p_a[i,c]), in nats. This
      is the direction of the authors' `F.kl_div(log p_u, p_r, reduction="batchmean")`: the reference is the
      target distribution.

    Zero probabilities (`-inf` log-probs, e.g. an SPM class deleted from memory):

    * 0 * log 0 = 0: a class where p_b = 0 contributes nothing, whatever p_a is (even `-inf`).
    * Where p_b > 0 but log p_a < `floor` (in particular `-inf`), log p_a is clamped to `floor`
      (default log(1e-8) ~ -18.42, the floor of the authors' `log(clamp(p, 1e-8))`), so the KL stays finite.
      The clamp is applied to every log p_a below the floor; unlike the authors' code the clamped vector is
      not renormalised (a difference below C * 1e-8 in probability mass).

    Args:
        logp_a, logp_b: (N, C) logits or log-probabilities (normalised with `log_softmax` first).
        floor: lower clamp for log p_a.

    Returns `PredictionGap(hard, soft)`; never NaN for valid inputs.
    """
    a, b = log_probs(logp_a), log_probs(logp_b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError("prediction gap of an empty set is undefined")
    hard = 100.0 * (a.argmax(-1) != b.argmax(-1)).double().mean().item()
    p_b = b.exp()
    a_clamped = a.clamp_min(floor)
    terms = torch.where(p_b > 0, p_b * (b - a_clamped), torch.zeros_like(p_b))
    soft = terms.sum(-1).mean().item()
    return PredictionGap(hard=hard, soft=soft)


def _harmonic_mean(values: Sequence[float]) -> float:
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def per_split_gap(
    unlearned: Mapping[str, object], reference: Mapping[str, object], floor: float = LOG_PROB_FLOOR
) -> dict[str, dict[str, float]]:
    """`prediction_gap` on each split (e.g. "forget", "retain", "test") plus their means.

    Args:
        unlearned: split name -> (N_s, C) scores of the unlearned model.
        reference: split name -> (N_s, C) scores of the reference (retrained) model, same keys and rows.

    Returns `{split: {"hard", "soft"}, ..., "mean": {...}, "harmonic": {...}}`: "mean" is the arithmetic
    mean over splits (each split weighs the same, whatever its size) and "harmonic" the harmonic mean (0 if
    any split's gap is 0). The authors' code does not compute PG_H and we found no definition of its
    aggregate over splits: report the per-split numbers and say which aggregate a table uses.
    """
    if set(unlearned) != set(reference):
        raise ValueError(f"split names differ: {sorted(unlearned)} vs {sorted(reference)}")
    if not unlearned:
        raise ValueError("per_split_gap needs at least one split")
    reserved = {"mean", "harmonic"} & set(unlearned)
    if reserved:
        raise ValueError(f"split names {sorted(reserved)} are reserved for the aggregates")
    out: dict[str, dict[str, float]] = {}
    for split in unlearned:
        out[split] = prediction_gap(unlearned[split], reference[split], floor=floor)._asdict()
    names = list(unlearned)
    for agg, fn in (("mean", lambda v: sum(v) / len(v)), ("harmonic", _harmonic_mean)):
        out[agg] = {k: fn([out[s][k] for s in names]) for k in ("hard", "soft")}
    return out


def avg_gap(
    method_metrics: Mapping[str, float], oracle_metrics: Mapping[str, float], keys: Sequence[str] = AVG_GAP_KEYS
) -> float:
    """SalUn's Avg. Gap: mean over `keys` (default UA, RA, TA, MIA) of abs(method - oracle), in points.

    Both mappings hold percentages (as returned by `unlearning_metrics`); the oracle is the model retrained
    without the forget set. Example (SalUn Table 3): SalUn (2.85, 99.62, 93.93, 14.39) vs Retrain
    (5.24, 100.00, 94.26, 12.88) gives 1.1525.
    """
    missing = [k for k in keys if k not in method_metrics or k not in oracle_metrics]
    if missing:
        raise KeyError(f"avg_gap needs {list(keys)} in both mappings; missing {missing}")
    return sum(abs(float(method_metrics[k]) - float(oracle_metrics[k])) for k in keys) / len(keys)


def unlearning_metrics(forget, retain, test, seed: int = 0) -> dict[str, float]:
    """UA, FA, RA, TA and MIA (all %) of one model from its scores on the three splits.

    Args:
        forget, retain, test: `(scores (N, C), labels (N,))` pairs; scores are logits or log-probabilities.
        seed: seed of the MIA shadow-member subset (`mia_efficacy`).
    """
    (f_scores, f_labels), (r_scores, r_labels), (t_scores, t_labels) = forget, retain, test
    fa = forget_accuracy(f_scores, f_labels)
    return {
        "UA": 100.0 - fa,
        "FA": fa,
        "RA": retain_accuracy(r_scores, r_labels),
        "TA": test_accuracy(t_scores, t_labels),
        "MIA": mia_efficacy(
            true_class_probability(r_scores, r_labels),
            true_class_probability(t_scores, t_labels),
            true_class_probability(f_scores, f_labels),
            seed=seed,
        ),
    }


@torch.no_grad()
def predict_logprobs(model: torch.nn.Module, pixel_values: torch.Tensor, batch_size: int = 256, **forward_kwargs):
    """Run a classifier over `pixel_values` and return (N, C) float32 CPU log-probabilities.

    Works for both model kinds: an `SPMForImageClassification`, whose `logits` already are log-probabilities
    (`-inf` for classes absent from its memory; returned unchanged), and any other classifier returning raw
    `logits` (e.g. `ParametricForImageClassification`; `log_softmax` is applied). The model runs in eval mode
    under `no_grad` and its previous train/eval mode is restored.

    Args:
        model: the classifier.
        pixel_values: (N, C, H, W) normalised float images (moved batch by batch to the model's device).
        batch_size: images per forward pass.
        forward_kwargs: passed to every forward call (e.g. `support_embeddings=`, `support_labels=`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    is_spm = isinstance(model, SPMForImageClassification)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, pixel_values.shape[0], batch_size):
            batch = pixel_values[start : start + batch_size].to(device)
            logits = model(pixel_values=batch, **forward_kwargs).logits.float()
            chunks.append((logits if is_spm else torch.log_softmax(logits, dim=-1)).cpu())
    finally:
        model.train(was_training)
    if not chunks:
        num_labels = getattr(getattr(model, "config", None), "num_labels", 0)
        return torch.zeros(0, num_labels)
    return torch.cat(chunks)


__all__ = [
    "AVG_GAP_KEYS",
    "LOG_PROB_FLOOR",
    "MIA_SVC_PARAMS",
    "PredictionGap",
    "accuracy",
    "avg_gap",
    "forget_accuracy",
    "log_probs",
    "mia_efficacy",
    "per_split_gap",
    "predict_logprobs",
    "prediction_gap",
    "retain_accuracy",
    "test_accuracy",
    "true_class_probability",
    "unlearning_accuracy",
    "unlearning_metrics",
]
