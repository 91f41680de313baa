#!/usr/bin/env python
"""What memory-only rows are worth to each way of reading the memory.

    python bench/knn_memory_gain.py --model CORE_100_DIR CORE_50_DIR [--k 16 64 256] [--scale 0.5 1 2] \
        [--out docs/bench/knn_memory_gain]

Each `--model` is a saved `SPMForImageClassification` trained on a core (`bench/exactness_price.py` caches them
under `outputs/exactness-price-cache/`). Every model is read with its memory as trained (every row) and, where
it has memory-only rows, with the memory cut to its core, in each of these readings (test accuracy, %):

* `class_mean`: the fusion over the memory's class means;
* `mixture w=W`: `(1 - W) * p_class_mean + W * p_neighbours` (the shipped `knn` reading,
  `knn_aggregation="class_mean_mixture"`, is W = 0.5 at the model's `knn_k` and scale 1);
* `neighbours`: `p_neighbours` alone (`"neighbour_softmax"`, W = 1);
* `vote`: the class with most of the k neighbours (ties to `class_mean`'s choice);

where `p_neighbours` spreads the query's probability over its k nearest memory entries with the fusion
head, its logit scale (or, for the cosine fusion, its inverse temperature) times `--scale`.

A row's `gain` is accuracy with every row minus accuracy with the core only, on the same test images, with
the standard error of that paired difference. The issue's target for `knn` is a gain of at least 1 point
at core 50 % while staying within 1 point of `class_mean` at core 100 %; the `meets both` column says which
readings do that (the first `--model` must then be a core-100 % model). `*` marks the readings no other
reading beats on both accuracy (every row, last model) and gain.

Writes `<out>/knn_memory_gain.md` (the table, also printed) and `.json`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
from contextlib import contextmanager

import torch


@contextmanager
def sharper(fusion, factor: float):
    """The fusion with its logit scale multiplied by `factor` (the cosine fusion: its temperature divided)."""
    if hasattr(fusion, "logit_scale"):
        saved = fusion.logit_scale.data.clone()
        fusion.logit_scale.data += math.log(factor)

        def restore():
            fusion.logit_scale.data = saved
    else:
        saved = fusion.temperature
        fusion.temperature = saved / factor

        def restore():
            fusion.temperature = saved
    try:
        yield
    finally:
        restore()


@torch.no_grad()
def correct_per_reading(model, queries, labels, memory, ks, scales, weights, batch: int = 500) -> dict:
    """reading name -> (N,) bool tensor: is each test image classified correctly."""
    from spm_hf.modeling_spm import neighbour_softmax_log_probs

    fusion, classes = model.fusion, model.config.num_labels
    means, present = memory.class_means()
    class_mean = torch.cat([fusion(queries[i:i + batch], means.to(queries), present)
                            for i in range(0, len(queries), batch)])
    out = {"class_mean": class_mean.argmax(1) == labels}
    neighbours = [memory.nearest(queries[i:i + batch], max(ks)) for i in range(0, len(queries), batch)]
    for k in ks:
        votes = torch.cat([torch.zeros(len(n.labels), classes).scatter_add(
            1, n.labels[:, :k], torch.ones(len(n.labels), k)) for n in neighbours])
        out[f"vote k={k}"] = (votes + 1e-3 * class_mean.softmax(1)).argmax(1) == labels
        for scale in scales:
            with sharper(fusion, scale):
                local = torch.cat([neighbour_softmax_log_probs(fusion, queries[j * batch:(j + 1) * batch],
                                                               n.values[:, :k].to(queries), n.labels[:, :k], classes)
                                   for j, n in enumerate(neighbours)])
            for weight in weights:
                name = f"{'neighbours' if weight == 1 else f'mixture w={weight:g}'} k={k} scale={scale:g}"
                mixed = local if weight == 1 else torch.logsumexp(
                    torch.stack([class_mean + math.log(1 - weight), local + math.log(weight)]), dim=0)
                out[name] = mixed.argmax(1) == labels
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", required=True, help="saved SPM folders, core 100 %% first")
    parser.add_argument("--k", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--scale", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                        help="factors on the fusion's logit scale for the neighbour reading")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0],
                        help="the neighbours' weight in the mixture (1: neighbours alone)")
    parser.add_argument("--dataset", default="cifar10", help="the dataset whose test split to read")
    parser.add_argument("--max-test-samples", type=int)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", default="docs/bench/knn_memory_gain")
    args = parser.parse_args(argv)
    if any(not 0 < w <= 1 for w in args.weights) or any(s <= 0 for s in args.scale) or any(k < 1 for k in args.k):
        parser.error("--weights must lie in (0, 1], --scale be positive and --k at least 1")

    from spm_hf.data import as_uint8_tensors, load_image_dataset
    from spm_hf.files import write_atomic, write_json
    from spm_hf.image_processing_spm import normalize_uint8
    from spm_hf.modeling_spm import SPMForImageClassification

    if args.threads:
        torch.set_num_threads(args.threads)
    images, labels, _ = as_uint8_tensors(load_image_dataset(args.dataset, splits=("test",))["test"],
                                         limit=args.max_test_samples)
    columns = []
    for folder in args.model:
        model = SPMForImageClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            queries = torch.cat([model.encode(normalize_uint8(images[i:i + 500], model.image_processor))
                                 for i in range(0, len(images), 500)])
        memory = model.memory
        memory_only = [i for i, trained in zip(memory.ids, memory.trained_on.tolist()) if not trained]
        core_share = f"core {round(100 * (len(memory) - len(memory_only)) / len(memory))} %"  # a hash split: ~F
        column = {"model": folder, "core": core_share,
                  "all rows": correct_per_reading(model, queries, labels, memory, args.k, args.scale, args.weights)}
        if memory_only:
            core = memory.copy()
            core.forget(ids=memory_only)
            column["core only"] = correct_per_reading(model, queries, labels, core, args.k, args.scale, args.weights)
        columns.append(column)
        print(f"read {folder} ({core_share}, {len(memory_only)} memory-only rows)", flush=True)

    def pct(correct):
        return round(100.0 * correct.float().mean().item(), 2)

    last = columns[-1]
    rows = []
    for name in last["all rows"]:
        row = {"reading": name}
        for column in columns:
            row[f"{column['core']} all rows"] = pct(column["all rows"][name])
        if "core only" in last:
            difference = last["all rows"][name].float() - last["core only"][name].float()
            row[f"{last['core']} core only"] = pct(last["core only"][name])
            row["gain"] = round(100.0 * difference.mean().item(), 2)
            row["gain se"] = round(100.0 * difference.std().item() / math.sqrt(len(difference)), 2)
        rows.append(row)
    first, accuracy_key = columns[0], f"{last['core']} all rows"
    if len(columns) > 1 and "core only" in last:
        floor = pct(first["all rows"]["class_mean"]) - 1.0
        for row in rows:
            row["meets both"] = row[f"{first['core']} all rows"] >= floor and row["gain"] >= 1.0
    if "gain" in rows[0]:
        for row in rows:
            row["frontier"] = not any(o[accuracy_key] > row[accuracy_key] and o["gain"] > row["gain"] for o in rows)
    rows.sort(key=lambda r: -r[accuracy_key])

    keys = [k for k in rows[0] if k not in ("reading", "frontier")]
    lines = ["### What memory-only rows are worth to each reading (test accuracy %)", "",
             "| reading | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for row in rows:
        star = " *" if row.get("frontier") else ""
        lines.append(f"| {row['reading']}{star} | " + " | ".join(
            ("yes" if row[k] else "no") if isinstance(row[k], bool) else f"{row[k]:.2f}" for k in keys) + " |")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads")
    lines += ["", f"{len(labels)} test images; models: " + ", ".join(f"{c['core']}: `{c['model']}`" for c in columns)
              + f". Machine: {machine}."]
    text = "\n".join(lines) + "\n"
    results = {"rows": rows, "models": [{"model": c["model"], "core": c["core"]} for c in columns],
               "test_images": len(labels), "machine": machine}
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "knn_memory_gain.json"), results)
    write_atomic(os.path.join(args.out, "knn_memory_gain.md"), text)
    print(text)
    return results


if __name__ == "__main__":
    main()
