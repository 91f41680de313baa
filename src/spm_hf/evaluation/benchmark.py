"""The unlearning benchmark: SPM deletion vs retraining vs parametric unlearning, side by side.

`run_unlearning_benchmark(preset, scenarios, output_dir)` (CLI: `spm-hf benchmark unlearning`) trains or
loads from a cache every model a scenario needs, unlearns, and writes `results.json`, `results.md` and
`gap_vs_time.png` per scenario:

* the SPM and the parametric baseline trained on the whole training subset (seed 0);
* per scenario, each family's oracle: the same recipe retrained without the forget set, seed 0 (*the*
  oracle) and seed 1. The two oracles differ only in the seed; their mutual gap is the floor that any
  "gap to retraining" sits on, and every table prints it beside each method's gap;
* SPM unlearning = deleting the forget set from the memory (`model.forget`); parametric unlearning =
  FT, GA, RL, l1-sparse, SalUn (`spm_hf.baselines.unlearning`) on the parametric model;
* scenarios with a core (`memory-only-random-10`, `unseen-cat`) also train an SPM whose parameters saw only
  the core rows (`spm_hf.training.core_split`) and draw the forget set from the other, memory-only rows: its
  deletion is compared with its own oracle (the same core and seed, trained without the forget set), with
  which its weights, memory digest and logits must be identical (`exactness` in the report);
* every model with an encoder gets a linear-probe audit (`probe`): a logistic regression on its frozen
  embeddings, fitted on labelled training rows, scored on what was forgotten (see `probe_audit`).

Conventions (see `spm_hf.evaluation.metrics` for each metric's docstring):

* UA = 100 - accuracy on the forget set, RA on the retain set, TA on the test set, MIA-efficacy (SalUn's
  SVC on the true-class probability); all in %, on non-augmented images.
* gap = hard prediction gap (% of samples whose argmax differs) to the family's seed-0 oracle, on the
  full test set; `gap_per_split` adds forget / retain / test and the soft gap (KL(oracle || method), nats).
* Avg. Gap = mean |metric - oracle metric| over UA, RA, TA, MIA (SalUn's).
* time = wall time of the unlearning operation: the memory edit (median of 5 deletions on fresh copies of
  the memory; the first call in the process, which pays one-off costs, is `seconds_first_call`); the
  baseline's optimisation including SalUn's mask (one run); for oracles, training + memory + head fit.
* Each family is compared with its own oracle: the SPM with a retrained SPM, the parametric methods with a
  retrained parametric model, the core SPM with a core SPM retrained without the forget set.
* probe = linear-probe accuracy (%) on the encoder's embeddings: for a class scenario, fitted on training
  rows of every class and scored on the test images of the forgotten classes (`forget`) and of the others
  (`reference`); for a random scenario, fitted on retained rows and scored on the forgotten rows (`forget`)
  and on the test set (`reference`).

Trained models are cached in `<cache_dir>/<preset>-<hash of the preset's settings>/<model>/`, written
under a temporary name and renamed when complete, so an interrupted run never leaves a half model and a
rerun only unlearns and evaluates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ..baselines.parametric import ParametricForImageClassification
from ..baselines.unlearning import DEFAULTS, UNLEARNING_METHODS
from ..data import as_uint8_tensors, label_names, load_image_dataset
from ..files import atomic_directory, write_atomic, write_figure, write_json
from ..image_processing_spm import normalize_uint8
from ..modeling_spm import SPMForImageClassification
from ..training.classifier import get_preset, train_classifier
from ..training.classifier_presets import ClassifierPreset
from ..training.core_split import core_mask
from .metrics import avg_gap, per_split_gap, predict_logprobs, prediction_gap, unlearning_metrics

# The five classes of the "five-classes" scenario: every other CIFAR-10 class (indices 0, 2, 4, 6, 8),
# so that vehicles and animals are both hit.
FIVE_CLASSES = ("airplane", "bird", "deer", "frog", "ship")


@dataclass(frozen=True)
class Scenario:
    """What to forget: whole classes (by name) or a seeded random fraction of the training ids.

    With a core (`core_fraction` and / or `core_exclude_classes`, see `spm_hf.training.core_split`) the
    scenario also trains an SPM on the core rows only, and its forget set is memory-only in that model: a
    random fraction (of all rows) is drawn from the non-core rows, and a forgotten class must be one the
    core excludes.
    """

    name: str
    classes: tuple[str, ...] = ()
    fraction: float = 0.0
    seed: int = 0
    core_fraction: float | None = None
    core_seed: int = 0
    core_exclude_classes: tuple[str, ...] = ()

    def __post_init__(self):
        if self.classes and self.has_core and not set(self.classes) <= set(self.core_exclude_classes):
            raise ValueError(f"scenario {self.name!r}: a forgotten class with a core must be excluded from the core "
                             f"(core_exclude_classes={self.core_exclude_classes}, classes={self.classes})")

    @property
    def has_core(self) -> bool:
        return self.core_fraction is not None or bool(self.core_exclude_classes)

    @property
    def core_label(self) -> str:
        """How the tables name the core model: "SPM core 50 %", "SPM core without cat"."""
        parts = [f"{self.core_fraction * 100:g} %"] if self.core_fraction is not None else []
        if self.core_exclude_classes:
            parts.append("without " + ", ".join(self.core_exclude_classes))
        return "core " + " ".join(parts)

    def core_settings(self) -> dict:
        """The core split as `train_classifier` overrides."""
        return {"core_fraction": self.core_fraction, "core_seed": self.core_seed,
                "core_exclude_classes": list(self.core_exclude_classes) or None}

    def core_rows(self, labels: torch.Tensor, label_names: list[str], ids: list[str]) -> torch.Tensor:
        """(N,) bool: the core rows of the training subset (every row for a scenario without a core)."""
        return core_mask(ids, labels, label_names, core_fraction=self.core_fraction, core_seed=self.core_seed,
                         exclude_classes=list(self.core_exclude_classes) or None)

    def forget_indices(self, labels: torch.Tensor, label_names: list[str], ids: list[str] | None = None) -> torch.Tensor:
        """Sorted row indices (into the training subset) of the forget set (`ids`: the rows' sample ids, which a
        random scenario with a core needs to tell the non-core rows)."""
        if self.classes:
            unknown = [c for c in self.classes if c not in label_names]
            if unknown:
                raise ValueError(f"scenario {self.name!r}: classes {unknown} not in the dataset's {label_names}")
            wanted = torch.tensor([label_names.index(c) for c in self.classes])
            return torch.nonzero(torch.isin(labels, wanted)).flatten()
        count = int(round(self.fraction * len(labels)))
        generator = torch.Generator().manual_seed(self.seed)
        if not self.has_core:
            return torch.randperm(len(labels), generator=generator)[:count].sort().values
        if ids is None:
            raise ValueError(f"scenario {self.name!r} draws its forget set from the non-core rows: pass ids=")
        candidates = torch.nonzero(~self.core_rows(labels, label_names, ids)).flatten()
        if count > len(candidates):
            raise ValueError(f"scenario {self.name!r}: {count} rows to forget, but only {len(candidates)} are not core")
        return candidates[torch.randperm(len(candidates), generator=generator)[:count]].sort().values


SCENARIOS: dict[str, Scenario] = {
    "cat": Scenario("cat", classes=("cat",)),
    "five-classes": Scenario("five-classes", classes=FIVE_CLASSES),
    "random-10": Scenario("random-10", fraction=0.1),
    "random-50": Scenario("random-50", fraction=0.5),
    # exact forgetting by design: the forget set is memory-only in an SPM trained on a core
    "memory-only-random-10": Scenario("memory-only-random-10", fraction=0.1, core_fraction=0.5),
    "unseen-cat": Scenario("unseen-cat", classes=("cat",), core_exclude_classes=("cat",)),
}

# The linear probe of `probe_audit` is fitted on at most this many labelled training rows.
PROBE_TRAIN_SAMPLES = 5000

# Parametric baselines' hyper-parameters per classifier preset. The papers' CIFAR-10 commands (batch 256;
# FT/RL/SalUn 10 epochs at lr 0.01, GA 5 epochs at 1e-4; `PAPER_HYPERPARAMETERS`) unlearn a ResNet-18 trained
# for 182 epochs. `cifar10-cpu` trains 11 epochs, so the epochs over the retain set are scaled from 10 to 2
# (10 would be a fifth of a retrain); GA, which only reads the small forget set, keeps the paper's 5 epochs.
# Presets not listed use `DEFAULTS` (small subsets, batch 64).
BASELINE_HYPERPARAMETERS: dict[str, dict[str, dict]] = {
    "cifar10-cpu": {
        "FT": {"epochs": 2, "lr": 0.01, "batch_size": 256},
        "GA": {"epochs": 5, "lr": 1e-4, "batch_size": 256},
        "RL": {"epochs": 2, "lr": 0.01, "batch_size": 256},
        "l1_sparse": {"epochs": 2, "lr": 0.01, "batch_size": 256, "alpha": 5e-4},
        "SalUn": {"epochs": 2, "lr": 0.01, "batch_size": 256, "threshold": 0.5},
    },
}

ORACLE_SEEDS = (0, 1)

# The model families a scenario compares: the SPM trained on a core split (scenarios with a core only), the
# SPM trained on every row, and the parametric baseline with its unlearning methods. A run may keep a subset
# (`families=`), e.g. the core SPM alone on a CPU, where each family costs two or three trainings.
FAMILIES = ("spm-core", "spm", "parametric")


def check_families_and_seeds(scenarios, families=None, oracle_seeds=None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Validated `(families, oracle_seeds)`, defaults filled in; a one-line ValueError names what is wrong."""
    families = FAMILIES if families is None else tuple(dict.fromkeys(families))
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"unknown model families {unknown or list(families)}; choose from {list(FAMILIES)}")
    oracle_seeds = ORACLE_SEEDS if oracle_seeds is None else tuple(sorted(set(int(s) for s in oracle_seeds)))
    if 0 not in oracle_seeds:
        raise ValueError(f"oracle seeds {list(oracle_seeds)} must include 0, the seed of the oracle every gap is "
                         "measured to (a further seed adds the seed-gap floor)")
    if set(families) == {"spm-core"}:
        coreless = [s for s in scenarios if not SCENARIOS[s].has_core]
        if coreless:
            raise ValueError(f"scenarios {coreless} have no core split, so family 'spm-core' alone compares nothing "
                             "there; add 'spm' or 'parametric', or choose memory-only-random-10 / unseen-cat")
    return families, oracle_seeds


@dataclass(frozen=True)
class ModelSpec:
    """One cached model: which family, trained without which scenario's forget set (None: all data), seed,
    and whose core split it trains on (`core`: a scenario name; None: every training row)."""

    family: str  # "spm" | "parametric"
    scenario: str | None
    seed: int
    core: str | None = None

    @property
    def name(self) -> str:
        if self.core is not None:
            return f"{self.family}-core-{self.core}-{'original' if self.scenario is None else 'retrain'}-seed{self.seed}"
        return f"{self.family}-{'original' if self.scenario is None else 'retrain-' + self.scenario}-seed{self.seed}"


def _preset(preset: str, overrides: dict | None):
    return get_preset(preset, **(overrides or {}))


# Preset fields added after benchmark caches existed: left at their dataclass default they stay out of the
# cache digest, so a cache made before the field existed keeps its name.
_FIELDS_COUNTED_WHEN_SET = (
    "image_column", "label_column", "backbone", "use_pretrained_backbone", "freeze_encoder", "fusion",
    "fusion_temperature", "knn_aggregation", "core_fraction", "core_seed", "core_ids", "core_exclude_classes",
    "mixed_precision", "episode_reading",
)


def preset_digest(preset: ClassifierPreset, counted_when_set=(), left_out=()) -> str:
    """8 hex of a preset's settings, the name of a cache of models trained with them. The fields
    `counted_when_set` count only where they differ from their default: fields added to ClassifierPreset
    after models were cached, so that the caches of runs that predate them stay valid. The fields
    `left_out` never count."""
    settings = asdict(preset)
    defaults = {f.name: f.default for f in dataclasses.fields(ClassifierPreset)}
    for name in left_out:
        del settings[name]
    for name in counted_when_set:
        if settings.get(name) == defaults[name]:
            del settings[name]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def cache_root(cache_dir: str, preset: str, overrides: dict | None = None) -> str:
    """`<cache_dir>/<preset>-<8 hex of the preset's settings>`: another setting never reuses a model.
    (The seed and core split of a model are in its folder name, `ModelSpec.name`.)"""
    digest = preset_digest(replace(_preset(preset, overrides), seed=0), counted_when_set=_FIELDS_COUNTED_WHEN_SET)
    return os.path.join(cache_dir, f"{preset}-{digest}")


def required_models(scenarios, families=None, oracle_seeds=None) -> list[ModelSpec]:
    """Every model the scenarios need: the originals of `families` (default: all), then each scenario's oracles
    (`oracle_seeds`, default 0 and 1), and for a scenario with a core its core SPM and that one's oracles."""
    families, oracle_seeds = check_families_and_seeds(scenarios, families, oracle_seeds)
    full = [f for f in ("spm", "parametric") if f in families]
    specs = [ModelSpec(family, None, 0) for family in full]
    for scenario in scenarios:
        specs += [ModelSpec(family, scenario, seed) for seed in oracle_seeds for family in full]
        if SCENARIOS[scenario].has_core and "spm-core" in families:
            specs += [ModelSpec("spm", None, 0, core=scenario)]
            specs += [ModelSpec("spm", scenario, seed, core=scenario) for seed in oracle_seeds]
    return specs


def _is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "training_summary.json"))


def _train_spec(spec: ModelSpec, root: str, preset: str, overrides: dict | None, show_progress: bool,
                threads: int | None = None) -> str:
    """Train one model into the cache (temporary folder, renamed when complete). Returns its path."""
    if threads:
        torch.set_num_threads(threads)
    final = os.path.join(root, spec.name)
    if _is_complete(final):
        return final
    exclude = None
    if spec.scenario is not None:
        settings = _preset(preset, overrides)
        data = load_image_dataset(settings.dataset, splits=("train",), image_column=settings.image_column,
                                  label_column=settings.label_column)
        train = data["train"]
        n = len(train) if settings.max_train_samples is None else min(settings.max_train_samples, len(train))
        subset = train.select(range(n))
        labels = torch.tensor(subset["label"], dtype=torch.long)  # labels and ids only: no image decoding
        exclude = SCENARIOS[spec.scenario].forget_indices(labels, label_names(data), subset["sample_id"]).tolist()
    core = SCENARIOS[spec.core].core_settings() if spec.core is not None else {}
    # trained in a staging folder that replaces `final` in one step: a kill never leaves half a model there
    with atomic_directory(final, owned=("*",)) as staging:
        train_classifier(preset, staging, parametric=spec.family == "parametric", show_progress=show_progress,
                         exclude_indices=exclude, **{**(overrides or {}), **core, "seed": spec.seed})
        shutil.rmtree(os.path.join(staging, "checkpoints"), ignore_errors=True)  # the final weights are all we keep
    return final


def ensure_models(specs, root: str, preset: str, overrides: dict | None = None, workers: int = 1,
                  show_progress: bool = True) -> dict[ModelSpec, str]:
    """Train every spec missing from the cache; `workers` > 1 trains that many at once in spawned processes
    (for a GPU, or a machine with many cores: each gets cpu_count / workers torch threads)."""
    os.makedirs(root, exist_ok=True)
    missing = [s for s in specs if not _is_complete(os.path.join(root, s.name))]
    if missing:
        print(f"training {len(missing)} model(s) into {root}: {', '.join(s.name for s in missing)}", flush=True)
    if workers > 1 and len(missing) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(_train_spec, s, root, preset, overrides, False, threads) for s in missing]
            for future in futures:
                future.result()
    else:
        for spec in missing:
            _train_spec(spec, root, preset, overrides, show_progress)
    return {s: os.path.join(root, s.name) for s in specs}


def _load(path: str, family: str, device: str):
    cls = SPMForImageClassification if family == "spm" else ParametricForImageClassification
    return cls.from_pretrained(path).to(device).eval()


def _training_seconds(path: str) -> float:
    with open(os.path.join(path, "training_summary.json")) as f:
        summary = json.load(f)
    return float(summary["train_seconds"] + summary.get("memory_seconds", 0) + summary.get("head_fit_seconds", 0))


class _Splits:
    """The benchmark's data, decoded once: forget / retain / test images (uint8, and normalised by the
    original SPM's processor for the parametric unlearning methods) and labels, and the probe's rows."""

    def __init__(self, preset: str, overrides: dict | None, scenario: Scenario, processor):
        settings = _preset(preset, overrides)
        data = load_image_dataset(settings.dataset, image_column=settings.image_column,
                                  label_column=settings.label_column)
        self.label_names = label_names(data)
        train_images, train_labels, train_ids = as_uint8_tensors(data["train"], limit=settings.max_train_samples)
        test_images, test_labels, _ = as_uint8_tensors(data["test"], limit=settings.max_test_samples)
        forget = scenario.forget_indices(train_labels, self.label_names, train_ids)
        keep = torch.ones(len(train_labels), dtype=torch.bool)
        keep[forget] = False
        self.forget_ids = [train_ids[i] for i in forget.tolist()]
        self.processor = processor

        self.raw = {
            "forget": (train_images[forget], train_labels[forget]),
            "retain": (train_images[keep], train_labels[keep]),
            "test": (test_images, test_labels),
        }
        self.sets = {name: (self.normalized(x, processor), y) for name, (x, y) in self.raw.items()}
        # the probe: which rows it is fitted on, and which it is scored on (`probe_audit`)
        generator = torch.Generator().manual_seed(0)
        if scenario.classes:
            # every class, the forgotten ones included: can a probe still tell them apart on unseen images?
            pick = torch.randperm(len(train_labels), generator=generator)[:PROBE_TRAIN_SAMPLES].sort().values
            forgotten = torch.isin(test_labels, torch.tensor([self.label_names.index(c) for c in scenario.classes]))
            self.probe_fit = (train_images[pick], train_labels[pick])
            self.probe_eval = {"forget": (test_images[forgotten], test_labels[forgotten]),
                               "reference": (test_images[~forgotten], test_labels[~forgotten])}
        else:
            retain_images, retain_labels = self.raw["retain"]
            pick = torch.randperm(len(retain_labels), generator=generator)[:PROBE_TRAIN_SAMPLES].sort().values
            self.probe_fit = (retain_images[pick], retain_labels[pick])
            self.probe_eval = {"forget": self.raw["forget"], "reference": self.raw["test"]}

    @staticmethod
    def normalized(images: torch.Tensor, processor) -> torch.Tensor:
        if not len(images):
            return normalize_uint8(images, processor)
        return torch.cat([normalize_uint8(images[i : i + 2000], processor) for i in range(0, len(images), 2000)])

    def log_probs(self, model) -> dict[str, torch.Tensor]:
        """Every split's log-probabilities, the images normalised by the model's own processor (a model trained
        on other rows, such as an oracle or a core model, has its own normalisation statistics)."""
        processor = getattr(model, "image_processor", None) or self.processor
        out = {}
        for name, (images, _) in self.raw.items():
            chunks = [predict_logprobs(model, self.normalized(images[i : i + 2000], processor), batch_size=500)
                      for i in range(0, len(images), 2000)]
            out[name] = torch.cat(chunks) if chunks else torch.zeros(0, len(self.label_names))
        return out

    def metrics(self, logp: dict[str, torch.Tensor], seed: int = 0) -> dict[str, float]:
        return unlearning_metrics(*((logp[s], self.sets[s][1]) for s in ("forget", "retain", "test")), seed=seed)

    def probe_embeddings(self, model) -> dict:
        """The encoder's embeddings of the probe's rows, `{"fit": (X, y), "forget": (X, y), "reference": (X, y)}`."""
        processor = getattr(model, "image_processor", None) or self.processor
        sets = {"fit": self.probe_fit, **self.probe_eval}
        return {name: (model.encode(self.normalized(x, processor)).float().cpu().numpy(), y.numpy())
                for name, (x, y) in sets.items()}


def probe_audit(embeddings: dict, seed: int = 0) -> dict[str, float | None]:
    """Linear-probe accuracy (%): a logistic regression on standardised encoder embeddings, fitted on
    `embeddings["fit"]` and scored on `"forget"` (what was forgotten: its labels should be no more readable
    than from the oracle's encoder) and `"reference"`. Deleting from the memory leaves the encoder as it was,
    so for an SPM whose parameters trained on the forget set this measures what its features still hold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    fit_x, fit_y = embeddings["fit"]
    scaler = StandardScaler().fit(fit_x)
    probe = LogisticRegression(max_iter=2000, random_state=seed).fit(scaler.transform(fit_x), fit_y)
    out = {}
    for name in ("forget", "reference"):
        x, y = embeddings[name]
        out[name] = round(100.0 * float((probe.predict(scaler.transform(x)) == y).mean()), 2) if len(y) else None
    return out


def _row(method: str, family: str, logp, splits: _Splits, oracle_logp, oracle_metrics, seconds: float,
         metrics: dict | None = None, **extra) -> dict:
    metrics = splits.metrics(logp) if metrics is None else metrics
    row = {"method": method, "family": family, **{k: round(v, 2) for k, v in metrics.items()},
           "seconds": seconds, **extra}
    if oracle_logp is not None:
        row["gap"] = round(prediction_gap(logp["test"], oracle_logp["test"]).hard, 2)
        split_gaps = per_split_gap(logp, oracle_logp)
        row["gap_per_split"] = {s: {k: round(v, 4) for k, v in g.items()} for s, g in split_gaps.items()}
        row["avg_gap"] = round(avg_gap(metrics, oracle_metrics), 2)
    return row


def run_scenario(preset: str, scenario_name: str, output_dir: str, cache_dir: str = "outputs/benchmark-cache",
                 overrides: dict | None = None, methods=None, workers: int = 1, device: str | None = None,
                 show_progress: bool = True, families=None, oracle_seeds=None) -> dict:
    """Train/load every model of one scenario, unlearn with each method, evaluate, write the report.

    `families` (default `FAMILIES`) keeps a subset of the model families; `oracle_seeds` (default 0 and 1)
    the oracles' seeds: seed 0 is the oracle, a further seed adds the seed-gap floor row."""
    if scenario_name not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario_name!r}; choose from {sorted(SCENARIOS)}")
    methods = list(UNLEARNING_METHODS) if methods is None else list(methods)
    unknown = [m for m in methods if m not in UNLEARNING_METHODS]
    if unknown:
        raise ValueError(f"unknown unlearning methods {unknown}; choose from {sorted(UNLEARNING_METHODS)}")
    selected, oracle_seeds = check_families_and_seeds([scenario_name], families, oracle_seeds)
    scenario = SCENARIOS[scenario_name]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    root = cache_root(cache_dir, preset, overrides)
    paths = ensure_models(required_models([scenario_name], selected, oracle_seeds), root, preset, overrides, workers,
                          show_progress)

    def path(family, scenario=None, seed=0):
        if family == "spm-core":
            return paths[ModelSpec("spm", scenario, seed, core=scenario_name)]
        return paths[ModelSpec(family, scenario, seed)]

    def load(family, scenario=None, seed=0):
        return _load(path(family, scenario, seed), "parametric" if family == "parametric" else "spm", device)

    families = [f for f in FAMILIES if f in selected and (f != "spm-core" or scenario.has_core)]
    # the first family's original: its processor normalises the parametric methods' inputs
    first_original = load(families[0])
    splits = _Splits(preset, overrides, scenario, first_original.image_processor)
    print(f"[{scenario_name}] forget {len(splits.sets['forget'][1])}, retain {len(splits.sets['retain'][1])}, "
          f"test {len(splits.sets['test'][1])} samples", flush=True)

    # Predictions first (GPU / torch), metrics after: each row's MIA fits an SVC (seconds to tens of seconds on
    # 20k points), and libsvm releases the GIL, so the rows are scored in threads, the probes beside them.
    pending = []  # (method, family, log-probs, seconds, probe embeddings, extra)
    oracles, exactness = {}, None
    labels = {"spm-core": f"SPM {scenario.core_label}", "spm": "SPM", "parametric": "Parametric"}
    for family in families:
        label = labels[family]
        oracle_path = path(family, scenario_name, 0)
        oracle = load(family, scenario_name, 0)
        oracles[family] = splits.log_probs(oracle)
        original = first_original if family == families[0] else load(family)
        original_probe = splits.probe_embeddings(original)
        pending.append((f"{label}: no unlearning", family, splits.log_probs(original), 0.0, original_probe, {}))
        if family != "parametric":
            receipt, first_call, median = _timed_forget(original, scenario, splits.forget_ids)
            extra = {"removed": receipt.num_removed, "digest_after": receipt.digest_after,
                     "seconds_first_call": first_call, "memory_only": receipt.num_memory_only, "exact": receipt.exact}
            logp = splits.log_probs(original)
            if family == "spm-core":
                exactness = _exactness(original, oracle, logp, oracles[family], receipt)
            # deleting from the memory leaves the encoder as it was: the same probe as before the deletion
            method = f"{label}: delete from memory" + (" (memory-only)" if family == "spm-core" else "")
            pending.append((method, family, logp, median, original_probe, extra))
        else:
            forget_set, retain_set = splits.sets["forget"], splits.sets["retain"]
            hyper = BASELINE_HYPERPARAMETERS.get(preset, DEFAULTS)
            for method in methods:
                unlearned, seconds = UNLEARNING_METHODS[method](
                    original, forget=forget_set, retain=retain_set, seed=0, show_progress=show_progress,
                    **hyper.get(method, {}),
                )
                pending.append((f"Parametric: {method}", family, splits.log_probs(unlearned), seconds,
                                splits.probe_embeddings(unlearned),
                                {"hyperparameters": {**DEFAULTS[method], **hyper.get(method, {})}}))
                del unlearned
        pending.append((f"{label}: retrain (oracle, seed 0)", family, oracles[family],
                        _training_seconds(oracle_path), splits.probe_embeddings(oracle), {}))
        for seed in oracle_seeds[1:]:
            seed_path, seed_model = path(family, scenario_name, seed), load(family, scenario_name, seed)
            pending.append((f"{label}: retrain (seed {seed})", family, splits.log_probs(seed_model),
                            _training_seconds(seed_path), splits.probe_embeddings(seed_model), {}))
            del seed_model
        del oracle, original

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(len(pending), os.cpu_count() or 1))) as pool:
        oracle_metrics = {f: pool.submit(splits.metrics, logp) for f, logp in oracles.items()}
        oracle_metrics = {f: m.result() for f, m in oracle_metrics.items()}
        probes = [pool.submit(probe_audit, embeddings) for *_, embeddings, _ in pending]
        futures = [pool.submit(_row, method, family, logp, splits, oracles[family], oracle_metrics[family], seconds,
                               metrics=oracle_metrics[family] if logp is oracles[family] else None, **extra)
                   for method, family, logp, seconds, _, extra in pending]
        rows = [{**f.result(), "probe": probe.result()} for f, probe in zip(futures, probes)]

    report = {
        "preset": preset,
        "overrides": overrides or {},
        "families": families,
        "oracle_seeds": list(oracle_seeds),
        "scenario": asdict(scenario),
        "sizes": {k: len(v[1]) for k, v in splits.sets.items()},
        "machine": machine_description(device),
        "cache": root,
        "rows": rows,
        "exactness": exactness,
        "checks": _checks(rows, scenario, exactness),
        "conventions": __doc__.split("Conventions")[1].split("Trained models")[0].strip(),
    }
    out = os.path.join(output_dir, scenario_name)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "results.json"), report)
    write_atomic(os.path.join(out, "results.md"), results_markdown(report))
    plot_gap_vs_time(report, os.path.join(out, "gap_vs_time.png"))
    return report


def _timed_forget(spm, scenario: Scenario, forget_ids: list[str], repeats: int = 5):
    """Forget the scenario's samples; returns `(receipt, first call s, median s)`. The first deletion in a
    process pays one-off costs (on a GPU, loading kernels it has not used yet); the median of `repeats`
    more deletions, each on a fresh copy of the memory, is what a running service pays per request."""
    def forget():
        if scenario.classes:
            return spm.forget(classes=list(scenario.classes))
        return spm.forget(ids=forget_ids)

    pristine = spm.memory.copy()
    receipt = forget()
    first_call = receipt.seconds
    times = []
    for _ in range(repeats):
        spm.memory = pristine.copy()
        receipt = forget()
        times.append(receipt.seconds)
    return receipt, first_call, float(np.median(times))


def _exactness(unlearned, oracle, logp: dict, oracle_logp: dict, receipt) -> dict:
    """How the core SPM after deleting its memory-only forget set compares with its oracle, the same core and
    seed trained from scratch without the forget set: both must be the same model, bit for bit."""
    state, reference = unlearned.state_dict(), oracle.state_dict()
    weights_equal = state.keys() == reference.keys() and all(torch.equal(state[k], reference[k].to(state[k].device))
                                                              for k in state)
    same_zeros = all(torch.equal(torch.isinf(logp[s]), torch.isinf(oracle_logp[s])) for s in logp)
    finite = {s: torch.isfinite(logp[s]) & torch.isfinite(oracle_logp[s]) for s in logp}
    diffs = [float((logp[s] - oracle_logp[s])[finite[s]].abs().max()) for s in logp if finite[s].any()]
    return {"weights_equal": weights_equal, "memory_digest_equal": unlearned.memory.digest() == oracle.memory.digest(),
            "absent_classes_equal": same_zeros, "max_abs_logprob_diff": max(diffs) if diffs else 0.0,
            "receipt_exact": receipt.exact, "memory_only_removed": receipt.num_memory_only}


def _by_method(rows) -> dict[str, dict]:
    return {r["method"]: r for r in rows}


def _checks(rows, scenario: Scenario, exactness: dict | None = None) -> dict:
    """The issue's acceptance numbers, computed from the rows (not asserted: reported). A family or a seed-1
    oracle left out of the run leaves its checks out."""
    by = _by_method(rows)
    spm, spm_seed = by.get("SPM: delete from memory"), by.get("SPM: retrain (seed 1)")
    parametric_seed = by.get("Parametric: retrain (seed 1)")
    baselines = [r for r in rows if r["family"] == "parametric" and not r["method"].startswith("Parametric: retrain")
                 and r["method"] != "Parametric: no unlearning"]
    out = {}
    if spm is not None:
        out.update({"spm_gap": spm["gap"], "spm_avg_gap": spm["avg_gap"]})
    if spm_seed is not None:
        out["spm_seed_gap"] = spm_seed["gap"]
        out["spm_gap_within_seed_gap_plus_1"] = spm["gap"] <= spm_seed["gap"] + 1.0
    if parametric_seed is not None:
        out["parametric_seed_gap"] = parametric_seed["gap"]
    if baselines:
        best_gap = min(baselines, key=lambda r: r["gap"])
        best_avg = min(baselines, key=lambda r: r["avg_gap"])
        out["best_parametric_gap"] = {"method": best_gap["method"], "gap": best_gap["gap"]}
        out["best_parametric_avg_gap"] = {"method": best_avg["method"], "avg_gap": best_avg["avg_gap"]}
        if spm is not None:
            out["spm_gap_below_every_parametric_method"] = spm["gap"] < best_gap["gap"]
            out["spm_avg_gap_at_most_best_parametric"] = spm["avg_gap"] <= best_avg["avg_gap"]
            # "Comparable UA": within 5 points of the parametric oracle's UA.
            oracle_ua = by["Parametric: retrain (oracle, seed 0)"]["UA"]
            comparable = [r for r in baselines if r["UA"] >= oracle_ua - 5.0]
            if comparable and spm["seconds"] > 0:
                fastest = min(comparable, key=lambda r: r["seconds"])
                out["fastest_comparable_ua_method"] = {"method": fastest["method"], "seconds": fastest["seconds"],
                                                       "UA": fastest["UA"]}
                out["speedup_vs_fastest_comparable"] = round(fastest["seconds"] / spm["seconds"], 1)
            else:
                out["fastest_comparable_ua_method"] = None
    if exactness is not None:
        label = f"SPM {scenario.core_label}"
        core, core_seed = by[f"{label}: delete from memory (memory-only)"], by.get(f"{label}: retrain (seed 1)")
        out.update({
            "core_gap": core["gap"], "core_avg_gap": core["avg_gap"],
            "core_exact": all(exactness[k] for k in ("weights_equal", "memory_digest_equal", "absent_classes_equal",
                                                     "receipt_exact")) and exactness["max_abs_logprob_diff"] <= 1e-6,
            "core_max_abs_logprob_diff": exactness["max_abs_logprob_diff"],
            "core_no_unlearning_accuracy_TA": by[f"{label}: no unlearning"]["TA"],
        })
        if core_seed is not None:
            out["core_seed_gap"] = core_seed["gap"]
        if baselines:
            out["core_avg_gap_at_most_best_parametric"] = core["avg_gap"] <= out["best_parametric_avg_gap"]["avg_gap"]
    out["probe_forget"] = {r["method"]: r["probe"]["forget"] for r in rows if r.get("probe")}
    return out


def _seed_floor_text(checks: dict) -> str:
    """"SPM 13.07 %, parametric 12.88 %" for the families whose seed-1 oracle was trained ("" if none)."""
    parts = [(name, checks.get(key)) for name, key in
             (("SPM core", "core_seed_gap"), ("SPM", "spm_seed_gap"), ("parametric", "parametric_seed_gap"))]
    return ", ".join(f"{name} {gap:.2f} %" for name, gap in parts if gap is not None)


def machine_description(device: str) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt_seconds(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"{seconds * 1000:.2f} ms"
    return f"{seconds:.1f} s"


def results_markdown(report: dict) -> str:
    """The scenario's table: one row per method, every metric, the gap beside the seed-gap floor."""
    checks = report["checks"]
    seed_floor = _seed_floor_text(checks)
    lines = [
        f"### {report['scenario']['name']} ({report['preset']}): forget {report['sizes']['forget']}, "
        f"retain {report['sizes']['retain']}, test {report['sizes']['test']}",
        "",
        (f"Seed-gap floor (oracle seed 0 vs seed 1, full test set): {seed_floor}. "
         if seed_floor else "No seed-1 oracle in this run, so no seed-gap floor. ")
        + "Gaps are to the same family's seed-0 oracle.",
        "",
        "| method | UA | RA | TA | MIA | gap (test) | gap forget / retain / test | soft gap (test, nats) "
        "| Avg. Gap | time | probe forget / reference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        g = r["gap_per_split"]
        probe = r.get("probe") or {}
        probe_text = " / ".join("-" if probe.get(k) is None else f"{probe[k]:.2f}" for k in ("forget", "reference"))
        lines.append(
            f"| {r['method']} | {r['UA']:.2f} | {r['RA']:.2f} | {r['TA']:.2f} | {r['MIA']:.2f} | {r['gap']:.2f} "
            f"| {g['forget']['hard']:.2f} / {g['retain']['hard']:.2f} / {g['test']['hard']:.2f} "
            f"| {g['test']['soft']:.4f} | {r['avg_gap']:.2f} | {_fmt_seconds(r['seconds'])} | {probe_text} |"
        )
    probe_on = "the forgotten classes' test images / the other classes'" if report["scenario"]["classes"] else \
        "the forgotten rows / the test set"
    lines += ["", f"Probe: linear-probe accuracy (%) on the encoder's embeddings, scored on {probe_on}."]
    exactness = report.get("exactness")
    if exactness:
        lines += ["", f"Memory-only deletion vs its oracle (same core and seed, retrained without the forget set): "
                  f"weights bitwise equal {exactness['weights_equal']}, memory digest equal "
                  f"{exactness['memory_digest_equal']}, max |Δ log p| {exactness['max_abs_logprob_diff']:.3g}, "
                  f"receipt exact {exactness['receipt_exact']} ({exactness['memory_only_removed']} memory-only rows)."]
    machine = report["machine"]
    lines += ["", f"Machine: {machine.get('gpu', machine['processor'])}, {machine['cpu_count']} CPUs, "
              f"torch {machine['torch']}, device {machine['device']}."]
    return "\n".join(lines) + "\n"


def plot_gap_vs_time(report: dict, path: str) -> None:
    """Gap to the oracle (full test set) against unlearning time (log axis), one marker per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in report["rows"]:
        if r["seconds"] <= 0 or "(oracle, seed 0)" in r["method"]:  # the oracle is the reference: gap 0
            continue
        spm = r["family"] != "parametric"
        color = {"spm": "tab:blue", "spm-core": "tab:green"}.get(r["family"], "tab:orange")
        ax.scatter(r["seconds"], r["gap"], marker="o" if spm else "s", s=60, color=color, edgecolor="black", zorder=3)
        ax.annotate(r["method"].split(": ", 1)[1], (r["seconds"], r["gap"]), textcoords="offset points",
                    xytext=(5, 5) if spm else (5, -11), fontsize=8)
    checks = report["checks"]
    for key, color, style, label in (("core_seed_gap", "tab:green", "-.", "SPM core seed gap"),
                                     ("spm_seed_gap", "tab:blue", "--", "SPM seed gap"),
                                     ("parametric_seed_gap", "tab:orange", ":", "parametric seed gap")):
        if key in checks:
            ax.axhline(checks[key], color=color, linestyle=style, linewidth=1, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("unlearning time (s, log scale)")
    ax.set_ylabel("prediction gap to retrained oracle (% of test set)")
    ax.set_title(f"{report['preset']} / {report['scenario']['name']}: circles SPM, squares parametric")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    write_figure(fig, path)
    plt.close(fig)


def _scenario_names(scenarios) -> list[str]:
    names = list(SCENARIOS) if scenarios in (None, "all", ["all"]) else list(scenarios)
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; choose from {sorted(SCENARIOS)} or 'all'")
    return names


def train_benchmark_models(preset: str, scenarios, cache_dir: str = "outputs/benchmark-cache",
                           overrides: dict | None = None, workers: int = 1, show_progress: bool = True,
                           families=None, oracle_seeds=None) -> str:
    """Train (or find cached) every model the scenarios need; returns the cache folder."""
    settings = _preset(preset, overrides)  # fail on a bad preset before any work
    check_families_and_seeds(_scenario_names(scenarios), families, oracle_seeds)  # ... and on bad families / seeds
    # ... and on a class scenario the dataset lacks (the class scenarios name CIFAR-10 classes)
    names = label_names(load_image_dataset(settings.dataset, splits=("train",), image_column=settings.image_column,
                                           label_column=settings.label_column))
    for name in _scenario_names(scenarios):
        unknown = [c for c in SCENARIOS[name].classes if c not in names]
        if unknown:
            raise ValueError(f"scenario {name!r} forgets classes {unknown}, which dataset {settings.dataset!r} does "
                             f"not have (its classes: {names}); random-10 and random-50 fit any dataset")
    root = cache_root(cache_dir, preset, overrides)
    ensure_models(required_models(_scenario_names(scenarios), families, oracle_seeds), root, preset, overrides,
                  workers, show_progress)
    return root


def run_unlearning_benchmark(preset: str, scenarios, output_dir: str, cache_dir: str = "outputs/benchmark-cache",
                             overrides: dict | None = None, methods=None, workers: int = 1,
                             device: str | None = None, show_progress: bool = True, families=None,
                             oracle_seeds=None) -> dict[str, dict]:
    """Every scenario in turn (models of all scenarios are trained first, `workers` at a time); also writes
    `<output_dir>/summary.md` with every scenario's table. Returns scenario -> report."""
    scenarios = _scenario_names(scenarios)
    train_benchmark_models(preset, scenarios, cache_dir, overrides, workers, show_progress, families, oracle_seeds)
    reports = {}
    for name in scenarios:
        start = time.perf_counter()
        reports[name] = run_scenario(preset, name, output_dir, cache_dir, overrides, methods, 1, device, show_progress,
                                     families, oracle_seeds)
        print(f"[{name}] done in {time.perf_counter() - start:.0f} s; checks: {json.dumps(reports[name]['checks'])}",
              flush=True)
    write_atomic(os.path.join(output_dir, "summary.md"),
                  "\n".join(results_markdown(r) for r in reports.values()))
    return reports
