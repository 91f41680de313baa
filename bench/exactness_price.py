#!/usr/bin/env python
"""The accuracy price of exact forgetting: an SPM trained on a core of the training rows, read with the
memory = the core only and = every row, in both memory modes.

    python bench/exactness_price.py --preset cifar10-cpu --out docs/bench/exactness_price

For each core fraction (default 100 %, 50 %, 20 %; `spm_hf.training.core_split`, core seed 0) it trains (or
finds in `--cache-dir`) one SPM with `train_classifier(preset, core_fraction=F)`: the parameters see the core
rows only, the memory holds every row of the training subset, the others memory-only. Then it measures test
accuracy (%)

* with the memory as trained (every row) and with the memory cut to the core (the memory-only rows
  forgotten, which for such a model is the same as never having had them);
* in `class_mean` mode, in `knn` mode (`knn_aggregation="class_mean_mixture"`, the default: the neighbours'
  distribution averaged with `class_mean`'s), in `knn` mode with the neighbours alone (`"neighbour_softmax"`)
  and with the authors' per-class means inside the neighbourhood (`"neighbourhood_means"`), for reference;

and the time to answer a batch of 256 test images (median of 5, the whole forward: encoder and memory read)
in each mode, memory = every row. It prints and writes `<out>/exactness_price.md` and `.json` with the
table and these checks (reported, not asserted): the better mode at the middle core fraction against
`--reference-accuracy` (the full-data `class_mean` accuracy the issue compares with); `knn` against
`class_mean` at core 100 %; `knn` with every row against `knn` with the core only, per core fraction; and
`knn`'s time per 256 queries against `class_mean`'s.

`--epochs`, `--max-train-samples` (also the memory subset) and `--max-test-samples` override the preset,
e.g. `--preset tiny --max-train-samples 10000 --max-test-samples 2000 --epochs 8` for a run of minutes.
With `--equal-steps` a core of fraction F trains `epochs / F` epochs: the same number of optimizer steps,
so about the same time budget, as the full-data model. `--episode-reading knn` trains in `knn` mode
(`SPMConfig.episode_reading`); at its default, `class_mean`, the cache folders are those of earlier runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from dataclasses import replace

import torch


MODES = (("class_mean", "class_mean", None), ("knn", "knn", "class_mean_mixture"),
         ("knn (neighbours only)", "knn", "neighbour_softmax"),
         ("knn (neighbourhood means)", "knn", "neighbourhood_means"))


# Preset fields that only say how a trained model reads its memory: they leave training alone, so they stay out
# of the cache digest (measure() sets the reading per mode anyway).
READING_FIELDS = ("knn_aggregation",)
# Preset fields added after this script's models were cached: they count only when set.
FIELDS_COUNTED_WHEN_SET = ("episode_reading",)


def model_folder(cache_dir: str, preset, fraction: float) -> str:
    from spm_hf.evaluation.benchmark import preset_digest

    digest = preset_digest(replace(preset, core_fraction=None), counted_when_set=FIELDS_COUNTED_WHEN_SET,
                           left_out=READING_FIELDS)
    return os.path.join(cache_dir, f"{preset.name}-{digest}", f"core-{fraction:g}")


def train_or_load(folder: str, preset_name: str, overrides: dict, fraction: float, core_seed: int, show_progress: bool):
    from spm_hf.files import atomic_directory
    from spm_hf.modeling_spm import SPMForImageClassification
    from spm_hf.training.classifier import train_classifier

    if not os.path.isfile(os.path.join(folder, "training_summary.json")):
        core = {} if fraction >= 1 else {"core_fraction": fraction, "core_seed": core_seed}
        with atomic_directory(folder, owned=("*",)) as staging:  # a kill never leaves half a model in the cache
            train_classifier(preset_name, staging, show_progress=show_progress, **overrides, **core)
            shutil.rmtree(os.path.join(staging, "checkpoints"), ignore_errors=True)
    with open(os.path.join(folder, "training_summary.json")) as f:
        summary = json.load(f)
    return SPMForImageClassification.from_pretrained(folder).eval(), summary


@torch.no_grad()
def seconds_per_batch(model, pixel_values: torch.Tensor, repeats: int = 5) -> float:
    model(pixel_values[:8])  # warm-up: builds class sums / kernels outside the clock
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(pixel_values)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model, test_images, test_labels) -> dict:
    from spm_hf.evaluation.classifier import evaluate_classifier
    from spm_hf.image_processing_spm import normalize_uint8

    full = model.memory
    memory_only = [i for i, trained in zip(full.ids, full.trained_on.tolist()) if not trained]
    memories = {"all rows": full}
    if memory_only:
        core = full.copy()
        core.forget(ids=memory_only)
        memories["core only"] = core
    batch = normalize_uint8(test_images[:256], model.image_processor)
    out = {}
    for memory_name, memory in memories.items():
        model.set_memory(memory)
        row = {"memory_rows": len(memory)}
        for name, mode, aggregation in MODES:
            model.config.memory_mode = mode
            if aggregation is not None:
                model.config.knn_aggregation = aggregation
            row[name] = evaluate_classifier(model, test_images, test_labels, model.image_processor)["accuracy"]
            if memory_name == "all rows":
                row[f"{name} seconds / 256 queries"] = round(seconds_per_batch(model, batch), 4)
        out[memory_name] = row
    model.set_memory(full)
    model.config.memory_mode, model.config.knn_aggregation = "class_mean", "class_mean_mixture"
    return out


def checks(results: dict, fractions: list[float], reference: float | None) -> dict:
    out = {}
    by = {r["core_fraction"]: r for r in results["rows"]}
    if 1.0 in by:
        full = by[1.0]["memory"]["all rows"]
        out["knn_minus_class_mean_at_core_100"] = round(full["knn"] - full["class_mean"], 2)
        out["knn_within_1_point_of_class_mean_at_core_100"] = full["knn"] >= full["class_mean"] - 1.0
        out["knn_time_over_class_mean_time"] = round(
            full["knn seconds / 256 queries"] / full["class_mean seconds / 256 queries"], 3)
    for fraction in fractions:
        memory = by[fraction]["memory"]
        if "core only" in memory:
            out[f"knn_all_rows_minus_core_only_at_core_{fraction:g}"] = round(
                memory["all rows"]["knn"] - memory["core only"]["knn"], 2)
            out[f"class_mean_all_rows_minus_core_only_at_core_{fraction:g}"] = round(
                memory["all rows"]["class_mean"] - memory["core only"]["class_mean"], 2)
    # the comparison is at core 50 %; without that row, the middle fraction
    middle = 0.5 if 0.5 in by else sorted(fractions)[len(fractions) // 2]
    best = max(by[middle]["memory"]["all rows"][m] for m in ("class_mean", "knn"))
    out[f"best_mode_at_core_{middle:g}"] = best
    if reference is not None:
        out[f"best_mode_at_core_{middle:g}_within_2_points_of_reference"] = best >= reference - 2.0
    return out


def markdown(results: dict) -> str:
    lines = [f"### The accuracy price of exactness ({results['preset']}, test accuracy %)", "",
             "| core | parameters trained on | epochs | memory | rows | class_mean | knn | knn (neighbours only) "
             "| knn (neighbourhood means) |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for row in results["rows"]:
        for memory_name, m in row["memory"].items():
            lines.append(f"| {row['core_fraction'] * 100:g} % | {row['core_size']} | {row['epochs']:g} | {memory_name} "
                         f"| {m['memory_rows']} "
                         f"| {m['class_mean']:.2f} | {m['knn']:.2f} | {m['knn (neighbours only)']:.2f} "
                         f"| {m['knn (neighbourhood means)']:.2f} |")
    lines += ["", "Seconds to answer 256 test images (whole forward, memory = every row): " + "; ".join(
        f"core {r['core_fraction'] * 100:g} %: class_mean {r['memory']['all rows']['class_mean seconds / 256 queries']}, "
        f"knn {r['memory']['all rows']['knn seconds / 256 queries']}" for r in results["rows"]) + ".", "",
        "Checks: " + json.dumps(results["checks"]), "",
        f"Machine: {results['machine']}; overrides {results['overrides']}; knn_k {results['knn_k']}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10-cpu")
    parser.add_argument("--cores", type=float, nargs="+", default=[1.0, 0.5, 0.2], help="core fractions")
    parser.add_argument("--core-seed", type=int, default=0)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--max-train-samples", type=int, help="the training and memory subset")
    parser.add_argument("--max-test-samples", type=int)
    parser.add_argument("--episode-reading", choices=["class_mean", "knn"],
                        help="how training reads a batch (default: the preset's, class_mean); knn: training in knn mode")
    parser.add_argument("--equal-steps", action="store_true",
                        help="train a core of fraction F for epochs / F epochs (the full model's number of steps)")
    parser.add_argument("--reference-accuracy", type=float, default=None,
                        help="the full-data class_mean accuracy to compare the middle core with (cifar10-cpu: 81.64)")
    parser.add_argument("--cache-dir", default="outputs/exactness-price-cache")
    parser.add_argument("--out", default="docs/bench/exactness_price")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from spm_hf.data import as_uint8_tensors, load_image_dataset
    from spm_hf.files import write_atomic, write_json
    from spm_hf.training.classifier_presets import get_preset

    if args.threads:
        torch.set_num_threads(args.threads)
    if any(not 0 < f <= 1 for f in args.cores):
        parser.error(f"--cores must be fractions in (0, 1], got {args.cores}")
    overrides = {k: v for k, v in {"epochs": args.epochs, "max_train_samples": args.max_train_samples,
                                   "memory_samples": args.max_train_samples,
                                   "max_test_samples": args.max_test_samples,
                                   "episode_reading": args.episode_reading}.items() if v is not None}
    preset = get_preset(args.preset, **overrides)
    data = load_image_dataset(preset.dataset, splits=("test",), image_column=preset.image_column,
                              label_column=preset.label_column)
    test_images, test_labels, _ = as_uint8_tensors(data["test"], limit=preset.max_test_samples)
    rows = []
    for fraction in args.cores:
        epochs = preset.epochs / fraction if args.equal_steps else preset.epochs
        if float(epochs).is_integer():  # 11 / 1.0 trains what 11 trains: the same cache folder
            epochs = int(epochs)
        folder = model_folder(args.cache_dir, replace(preset, epochs=epochs), fraction)
        print(f"core {fraction:g} ({epochs:g} epochs): {folder}", flush=True)
        model, summary = train_or_load(folder, args.preset, {**overrides, "epochs": epochs}, fraction, args.core_seed,
                                       not args.no_progress)
        rows.append({"core_fraction": fraction, "core_size": summary["core"]["size"], "epochs": epochs, "folder": folder,
                     "train_seconds": summary["train_seconds"], "memory": measure(model, test_images, test_labels)})
        print(json.dumps(rows[-1]["memory"]), flush=True)
    results = {"preset": args.preset, "overrides": overrides, "knn_k": preset.knn_k, "rows": rows,
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                          f"{torch.get_num_threads()} threads"}
    results["checks"] = checks(results, args.cores, args.reference_accuracy)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "exactness_price.json"), results)
    text = markdown(results)
    write_atomic(os.path.join(args.out, "exactness_price.md"), text)
    print(text)
    return results


if __name__ == "__main__":
    main()
