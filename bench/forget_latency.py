#!/usr/bin/env python
"""Forget latency and read cost of the sample memory as the memory grows.

    python bench/forget_latency.py [--sizes 10000 100000 1000000] [--repeats N] [--out docs/bench]

For each memory size N (synthetic float32 embeddings of dimension 512 from a seeded generator, 10 classes,
ids "train/0000042") it times, median over repeats:

* forgetting one class, one id, 1000 random ids and 10% random ids, in three settings:
  - `class_mean`: `memory.forget(...)` plus the following `memory.class_means()` (the aggregate the
    model reads), with the class sums already built before the clock starts;
  - `knn / torch`: `memory.forget(...)` only (exact torch search has no index to update);
  - `knn / faiss`: `memory.forget(...)` with the memory's faiss index built beforehand, so the time
    includes keeping the index in step (`remove_ids` + re-adding the rows moved into holes);
* answering a batch of 256 query embeddings through the memory read path and the fusion head of an
  `SPMForImageClassification` whose embedding size is 512 (`class_mean`: `class_means()` + fusion;
  `knn`: `memory.knn` (k=64) + `neighbour_softmax_log_probs`, the fusion scoring every neighbour, torch
  and faiss backends).

Every repeat forgets from a fresh `SampleMemory.copy()` of one memory built once per N; the script checks that
the copy owns its storage and that forgetting on it leaves the original untouched.

It also checks the issue's targets at N = 50,000 x 512 (class_mean: forget one class <= 5 ms, one id
<= 1 ms) and the inference overhead of the memory: a batch of 256 32x32 images through a `resnet-small`
SPM (embedding size 128, so a 50,000 x 128 memory) against `ParametricForImageClassification` with the
same config (target: class_mean SPM <= 1.2x the parametric model; knn reported without a target).

Writes `<out>/forget_latency.md` (the tables, also printed), `<out>/forget_latency.json` (raw timings)
and `<out>/forget_latency.png` (log-log time vs N).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch

from spm_hf import SPMConfig, SPMForImageClassification
from spm_hf.baselines import ParametricForImageClassification
from spm_hf.files import write_atomic, write_figure
from spm_hf.files import write_json as write_json_file
from spm_hf.memory import SampleMemory
from spm_hf.modeling_spm import neighbour_softmax_log_probs


NUM_CLASSES = 10
LABEL_NAMES = [f"class_{i}" for i in range(NUM_CLASSES)]

# Order matters: the knn settings run on a memory whose class sums were never built (a knn model never
# builds them, so its forget has no sums to downdate); the sums are built before the class_mean setting.
SETTINGS = [("knn", "torch"), ("knn", "faiss"), ("class_mean", None)]
SETTING_LABELS = {
    ("knn", "torch"): "knn / torch",
    ("knn", "faiss"): "knn / faiss (incl. index update)",
    ("class_mean", None): "class_mean (forget + class_means())",
}
OPERATIONS = ["one_class", "one_id", "1000_ids", "10pct_ids"]
OPERATION_LABELS = {
    "one_class": "forget one class",
    "one_id": "forget one id",
    "1000_ids": "forget 1000 random ids",
    "10pct_ids": "forget 10% random ids",
}
QUERY_SETTINGS = [("class_mean", None), ("knn", "torch"), ("knn", "faiss")]

_T0 = time.perf_counter()


def log(message: str, end: str = "\n") -> None:
    print(message, end=end, flush=True)


def stamp() -> str:
    return f"[{time.perf_counter() - _T0:7.1f}s]"


def label_config(**kwargs) -> SPMConfig:
    return SPMConfig(
        num_labels=NUM_CLASSES,
        id2label=dict(enumerate(LABEL_NAMES)),
        label2id={name: i for i, name in enumerate(LABEL_NAMES)},
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------- machine
def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_threads"] = faiss.omp_get_max_threads()
    except ImportError:
        info["faiss"] = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


# ---------------------------------------------------------------------------------------------- helpers
def make_memory(n: int, dim: int, seed: int) -> SampleMemory:
    """A memory of n synthetic float32 embeddings (standard normal), uniform random labels over 10 classes."""
    rng = np.random.default_rng([seed, n, dim])
    values = torch.from_numpy(rng.standard_normal((n, dim), dtype=np.float32))
    labels = torch.from_numpy(rng.integers(0, NUM_CLASSES, size=n))
    ids = [f"train/{i:07d}" for i in range(n)]
    memory = SampleMemory(LABEL_NAMES, (dim,), torch.float32)
    memory.add(ids, labels, values, trained_on=True)
    return memory


def clone(memory: SampleMemory) -> SampleMemory:
    """An independent copy (listeners such as a faiss index are not copied: the copy builds its own)."""
    twin = memory.copy()
    if twin.values.data_ptr() == memory.values.data_ptr():
        raise RuntimeError("SampleMemory.copy() shares the value storage with the original")
    return twin


def values_fingerprint(memory: SampleMemory) -> tuple:
    """Cheap O(N) fingerprint of the stored rows (order-dependent), to check the original never changes."""
    v = memory.values
    return (len(memory), memory.digest(), float(v.double().sum()), float(v[::97].double().pow(2).sum()),
            memory.ids[:3] + memory.ids[-3:], int(memory.labels.sum()))


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_ms(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "–"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:,.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def requests_for(n: int, ids: list[str], repeats: int, seed: int) -> dict[str, list[dict]]:
    """The same forget requests for every setting: per operation, one request per repeat."""
    rng = np.random.default_rng([seed, n, 7])
    out: dict[str, list[dict]] = {op: [] for op in OPERATIONS}
    for r in range(repeats):
        out["one_class"].append({"classes": [LABEL_NAMES[r % NUM_CLASSES]]})
        out["one_id"].append({"ids": [ids[int(rng.integers(n))]]})
        out["1000_ids"].append({"ids": [ids[i] for i in rng.choice(n, size=min(1000, n - 1), replace=False)]})
        out["10pct_ids"].append({"ids": [ids[i] for i in rng.choice(n, size=n // 10, replace=False)]})
    return out


def expected_removed(memory: SampleMemory, request: dict) -> int:
    if "classes" in request:
        counts = memory.class_counts()
        return sum(counts[c] for c in request["classes"])
    return len(request["ids"])


# ---------------------------------------------------------------------------------------------- forget
def time_forget(
    base: SampleMemory, mode: str, backend: str | None, requests: list[dict], dim: int, check: bool
) -> dict:
    """Median wall time of one forget request on fresh copies of `base` (setup not timed)."""
    forget_s, aggregate_s, total_s = [], [], []
    probe = torch.from_numpy(np.random.default_rng(1).standard_normal((1, dim), dtype=np.float32))
    for r, request in enumerate(requests):
        memory = clone(base)
        if backend == "faiss":
            memory.knn(probe, 1, backend="faiss")  # builds the index listener before the clock starts
        want = len(memory) - expected_removed(memory, request)
        gc.collect()
        t0 = time.perf_counter()
        memory.forget(**request)
        t1 = time.perf_counter()
        if mode == "class_mean":
            memory.class_means()
        t2 = time.perf_counter()
        forget_s.append(t1 - t0)
        aggregate_s.append(t2 - t1)
        total_s.append(t2 - t0)
        if len(memory) != want:
            raise AssertionError(f"forget left {len(memory)} rows, expected {want}")
        if check and r == 0 and backend == "faiss":
            # the faiss index must have followed the deletion: same neighbours as an exact torch search
            _, rows_f = memory.knn(probe, 8, backend="faiss")
            _, rows_t = memory.knn(probe, 8, backend="torch")
            if not torch.equal(rows_f.cpu(), rows_t.cpu()):
                raise AssertionError("faiss index out of step with the memory after forget")
        log(".", end="")
        del memory
        gc.collect()
    return {
        "repeats": len(requests),
        "median_s": median(total_s),
        "forget_median_s": median(forget_s),
        "aggregate_median_s": median(aggregate_s),
        "min_s": min(total_s),
        "max_s": max(total_s),
        "all_s": total_s,
    }


# ---------------------------------------------------------------------------------------------- queries
@torch.no_grad()
def read_and_fuse(memory: SampleMemory, model: SPMForImageClassification, queries, mode, backend, k):
    if mode == "class_mean":
        means, present = memory.class_means()
        return model.fusion(queries, means, present)
    _, rows = memory.knn(queries, k, backend=backend)
    neighbor_values = memory.values[rows]
    neighbor_labels = memory.labels[rows]
    return neighbour_softmax_log_probs(model.fusion, queries, neighbor_values, neighbor_labels, NUM_CLASSES)


def time_queries(memory, model, queries, mode, backend, k, repeats, warmup) -> dict:
    for _ in range(warmup):
        read_and_fuse(memory, model, queries, mode, backend, k)
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        out = read_and_fuse(memory, model, queries, mode, backend, k)
        times.append(time.perf_counter() - t0)
        if not torch.isfinite(out.logsumexp(-1)).all():
            raise AssertionError("fusion returned no finite class for some query")
        log(".", end="")
    return {"repeats": repeats, "warmup": warmup, "median_s": median(times), "min_s": min(times),
            "max_s": max(times), "all_s": times}


def warm_up(args, model_512: SPMForImageClassification) -> None:
    """Run every timed code path once on a small memory (first calls pay for lazy initialisation)."""
    n, dim = 2_000, args.dim
    base = make_memory(n, dim, args.seed + 1)
    requests = requests_for(n, base.ids, 1, args.seed + 1)
    for mode, backend in SETTINGS:
        if mode == "class_mean":
            base.class_means()
        for op in OPERATIONS:
            time_forget(base, mode, backend, requests[op], dim, check=False)
    queries = torch.zeros(args.query_batch, dim).normal_(generator=torch.Generator().manual_seed(args.seed))
    for mode, backend in QUERY_SETTINGS:
        time_queries(base, model_512, queries, mode, backend, args.k, 2, 1)
    log("")


# ---------------------------------------------------------------------------------------------- targets
def run_targets(args, results: dict) -> None:
    n, dim = args.target_n, args.dim
    log(f"{stamp()} targets: building a {n:,} x {dim} memory ...")
    base = make_memory(n, dim, args.seed)
    base.class_means()
    ids = base.ids
    rng = np.random.default_rng([args.seed, n, 11])
    fingerprint = values_fingerprint(base)
    rows = {}
    for op, make_request in [
        ("one_class", lambda r: {"classes": [LABEL_NAMES[r % NUM_CLASSES]]}),
        ("one_id", lambda r: {"ids": [ids[int(rng.integers(n))]]}),
    ]:
        log(f"{stamp()} targets: class_mean {OPERATION_LABELS[op]} x{args.target_repeats} ", end="")
        requests = [make_request(r) for r in range(args.target_repeats)]
        rows[op] = time_forget(base, "class_mean", None, requests, dim, check=False)
        log(f" median {fmt_ms(rows[op]['median_s'])} ms (forget alone {fmt_ms(rows[op]['forget_median_s'])} ms)")
    if values_fingerprint(base) != fingerprint:
        raise AssertionError("forgetting on copies changed the original memory")
    rows["one_class"]["target_s"] = 5e-3
    rows["one_id"]["target_s"] = 1e-3
    for row in rows.values():
        row["pass"] = row["median_s"] <= row["target_s"]
        row["pass_forget_alone"] = row["forget_median_s"] <= row["target_s"]
    results["targets"] = {"n": n, "dim": dim, "rows": rows,
                          "loadavg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    del base
    gc.collect()


def run_inference_overhead(args, results: dict) -> None:
    n = args.target_n
    torch.manual_seed(args.seed)
    cfg = label_config(encoder="resnet-small", memory_mode="class_mean")
    dim = cfg.embed_dim
    log(f"{stamp()} inference: building a {n:,} x {dim} memory for resnet-small ...")
    memory = make_memory(n, dim, args.seed)
    spm = SPMForImageClassification(cfg).eval()
    spm.set_memory(memory)
    models = {"parametric": ParametricForImageClassification(cfg).eval(), "spm class_mean": spm}
    models["parametric"].encoder.load_state_dict(spm.encoder.state_dict())
    for backend in ("torch", "faiss"):
        knn_model = SPMForImageClassification(
            label_config(encoder="resnet-small", memory_mode="knn", knn_backend=backend, knn_k=args.k)
        ).eval()
        knn_model.load_state_dict(spm.state_dict())
        knn_model.set_memory(memory)  # the same memory object (read only here)
        models[f"spm knn / {backend} (k={args.k})"] = knn_model
    pixel_values = torch.from_numpy(
        np.random.default_rng([args.seed, 3]).standard_normal((args.query_batch, 3, 32, 32), dtype=np.float32)
    )
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():  # warm-up (also builds the class sums and the faiss index)
            model(pixel_values)
            model(pixel_values)
        log(f"{stamp()} inference: {len(models)} models x{args.inference_repeats}, interleaved ", end="")
        for _ in range(args.inference_repeats):
            for name, model in models.items():
                gc.collect()
                t0 = time.perf_counter()
                model(pixel_values)
                times[name].append(time.perf_counter() - t0)
            log(".", end="")
    log("")
    base_s = median(times["parametric"])
    rows = {}
    for name, ts in times.items():
        rows[name] = {"median_s": median(ts), "min_s": min(ts), "max_s": max(ts), "all_s": ts,
                      "ratio": median(ts) / base_s}
        log(f"{stamp()} inference: {name:28s} median {fmt_ms(median(ts))} ms  ({median(ts) / base_s:.2f}x)")
    rows["spm class_mean"]["target_ratio"] = 1.2
    rows["spm class_mean"]["pass"] = rows["spm class_mean"]["ratio"] <= 1.2
    results["inference"] = {
        "n": n, "dim": dim, "batch": args.query_batch, "encoder": "resnet-small",
        "repeats": args.inference_repeats, "rows": rows,
    }


# ---------------------------------------------------------------------------------------------- sizes
def run_size(args, n: int, model_512: SPMForImageClassification, results: dict) -> None:
    dim = args.dim
    repeats = args.repeats if n < args.large_n else min(args.repeats, args.large_repeats)
    query_repeats = args.repeats if n < args.large_n else min(args.repeats, args.large_query_repeats)
    entry: dict = {"n": n, "dim": dim, "repeats": repeats, "query_repeats": query_repeats}
    log(f"{stamp()} N={n:,}: building a {n:,} x {dim} memory (hashes every row) ...")
    t0 = time.perf_counter()
    base = make_memory(n, dim, args.seed)
    entry["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probe_copy = clone(base)
    entry["deepcopy_s"] = time.perf_counter() - t0
    del probe_copy
    gc.collect()
    log(f"{stamp()} N={n:,}: built in {entry['build_s']:.1f} s; one deepcopy takes {entry['deepcopy_s']:.2f} s")
    fingerprint = values_fingerprint(base)
    requests = requests_for(n, base.ids, repeats, args.seed)

    entry["forget"] = {}
    for mode, backend in SETTINGS:
        if mode == "class_mean":
            t0 = time.perf_counter()
            base.class_means()  # the class sums exist before any forget is timed (steady state)
            entry["class_sums_build_s"] = time.perf_counter() - t0
        setting = SETTING_LABELS[(mode, backend)]
        for op in OPERATIONS:
            log(f"{stamp()} N={n:,} {setting:36s} {OPERATION_LABELS[op]:24s} x{repeats} ", end="")
            row = time_forget(base, mode, backend, requests[op], dim, check=True)
            entry["forget"][f"{mode}/{backend or '-'}/{op}"] = {"mode": mode, "backend": backend, "op": op, **row}
            extra = f" (forget alone {fmt_ms(row['forget_median_s'])})" if mode == "class_mean" else ""
            log(f" median {fmt_ms(row['median_s'])} ms{extra}")
    if values_fingerprint(base) != fingerprint:
        raise AssertionError("forgetting on copies changed the original memory")

    queries = torch.from_numpy(
        np.random.default_rng([args.seed, n, 5]).standard_normal((args.query_batch, dim), dtype=np.float32)
    )
    warmup = 1 if n < args.large_n else 0
    entry["query"] = {}
    for mode, backend in QUERY_SETTINGS:
        if backend == "faiss":
            t0 = time.perf_counter()
            base.knn(queries[:1], 1, backend="faiss")  # build the index (last: base gets a listener)
            entry["faiss_index_build_s"] = time.perf_counter() - t0
        name = f"{mode}/{backend or '-'}"
        log(f"{stamp()} N={n:,} query batch {args.query_batch} {name:16s} x{query_repeats} ", end="")
        row = time_queries(base, model_512, queries, mode, backend, args.k, query_repeats, warmup)
        entry["query"][name] = {"mode": mode, "backend": backend, **row}
        log(f" median {fmt_ms(row['median_s'])} ms")
    if n <= args.verify_max_n:
        base.verify()  # the original's rows still match its digest, recomputed from scratch
    entry["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["sizes"].append(entry)
    del base, queries
    gc.collect()


# ---------------------------------------------------------------------------------------------- report
def markdown(results: dict) -> str:
    m = results["machine"]
    sizes = results["sizes"]
    lines = [
        "# Forget latency and memory read cost vs memory size",
        "",
        f"Generated by `bench/forget_latency.py` on {results['date']} "
        f"(command: `{results['command']}`, total {results['total_s']:.0f} s).",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {m['cpu']} |",
        f"| cores (os.cpu_count / usable) | {m['cpu_count']} / {m['cpus_usable']} |",
        f"| memory | {m.get('mem_total_gib', '?')} GiB |",
        f"| torch | {m['torch']} ({m['torch_threads']} threads) |",
        f"| faiss | {m.get('faiss')} ({m.get('faiss_threads', '?')} OpenMP threads) |",
        f"| numpy / python | {m['numpy']} / {m['python']} |",
        f"| load average (1 min) at start / end | {m['loadavg_start'][0]:.2f} / {m['loadavg_end'][0]:.2f} |",
        "",
        "Times are wall-clock medians in **milliseconds**. Each forget repeat runs on a fresh `SampleMemory.copy()` "
        "of one memory built per N (float32 standard-normal embeddings, 10 uniformly drawn classes); "
        "building the copy, the class sums and the faiss index is not timed.",
        "",
    ]
    loads = [m.get("loadavg_start"), m.get("loadavg_end"), *(e.get("loadavg_after") for e in sizes),
             results.get("targets", {}).get("loadavg_after")]
    peak_load = max((load[0] for load in loads if load), default=0.0)
    if peak_load > m["cpus_usable"] + 0.5:
        lines += [
            f"> **Shared machine.** The 1-minute load average reached {peak_load:.1f} on {m['cpus_usable']} usable "
            "cores during this run: other processes competed for the CPU, so every step was time-sliced and "
            "multi-threaded torch / faiss steps suffer most (a parallel region waits for a descheduled thread). "
            "Absolute times are inflated and noisy; compare settings and sizes within this run, and rerun on an "
            "idle machine (or with `--threads 1`) for absolute latencies.",
            "",
        ]
    reduced = [e for e in sizes if e["repeats"] < results["args"]["repeats"]]
    header = "| operation | setting | " + " | ".join(f"N = {e['n']:,} ({e['repeats']} reps)" for e in sizes) + " |"
    lines += ["## Forget", "", header, "|---|---|" + "---:|" * len(sizes)]
    for op in OPERATIONS:
        for mode, backend in SETTINGS:
            key = f"{mode}/{backend or '-'}/{op}"
            cells = [fmt_ms(e["forget"][key]["median_s"]) for e in sizes]
            lines.append(f"| {OPERATION_LABELS[op]} | {SETTING_LABELS[(mode, backend)]} | " + " | ".join(cells) + " |")
    lines += [""]
    if reduced:
        lines += [
            "Repeats were reduced to "
            + ", ".join(f"{e['repeats']} for N = {e['n']:,}" for e in reduced)
            + " (each faiss repeat rebuilds an index of the full memory; see `--large-repeats`).",
            "",
        ]
    lines += [
        "`class_mean` = `memory.forget(...)` + `memory.class_means()`; the `class_means()` part is "
        + ", ".join(
            f"{fmt_ms(e['forget']['class_mean/-/one_class']['aggregate_median_s'])} ms"
            for e in sizes
        )
        + " (one class, per N): the per-class sums are downdated inside `forget`.",
        "",
        "Setup costs (not in the times above): "
        + "; ".join(
            f"N = {e['n']:,}: build {e['build_s']:.1f} s, deepcopy {e['deepcopy_s']:.2f} s, "
            f"class sums {e.get('class_sums_build_s', float('nan')):.2f} s, faiss index "
            f"{e.get('faiss_index_build_s', float('nan')):.2f} s (1-min load average after: "
            f"{e['loadavg_after'][0]:.2f})"
            for e in sizes
        )
        + ".",
        "",
        f"## Answering a batch of {results['args']['query_batch']} query embeddings "
        f"(memory read + fusion head, dim {results['args']['dim']})",
        "",
        "| setting | " + " | ".join(f"N = {e['n']:,} ({e['query_repeats']} reps)" for e in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    query_labels = {
        "class_mean/-": "class_mean: `class_means()` + fusion",
        "knn/torch": f"knn / torch (k={results['args']['k']}): `knn` + `neighbour_softmax_log_probs`",
        "knn/faiss": f"knn / faiss (k={results['args']['k']}): `knn` + `neighbour_softmax_log_probs`",
    }
    for key, label in query_labels.items():
        lines.append(f"| {label} | " + " | ".join(fmt_ms(e["query"][key]["median_s"]) for e in sizes) + " |")
    lines.append("")

    if "targets" in results:
        t = results["targets"]
        lines += [
            f"## Issue targets at N = {t['n']:,} x {t['dim']} (class_mean)",
            "",
            "| operation | forget alone (ms) | forget + class_means() (ms) | best of repeats (ms) | target (ms) | result |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for op, row in t["rows"].items():
            lines.append(
                f"| {OPERATION_LABELS[op]} ({row['repeats']} reps) | {fmt_ms(row['forget_median_s'])} | "
                f"{fmt_ms(row['median_s'])} | {fmt_ms(row['min_s'])} | {row['target_s'] * 1e3:g} | "
                f"{'PASS' if row['pass'] else 'FAIL'} |"
            )
        lines += [
            "",
            "PASS/FAIL judges the median of forget + `class_means()` (medians; 'best of repeats' is the minimum, "
            f"for a machine shared with other work: 1-min load average after this step "
            f"{t['loadavg_after'][0]:.2f}).",
            "",
        ]
    if "inference" in results:
        inf = results["inference"]
        lines += [
            f"## Inference overhead: {inf['batch']} images 32x32, {inf['encoder']} encoder, "
            f"memory {inf['n']:,} x {inf['dim']} ({inf['repeats']} interleaved reps)",
            "",
            "| model | median (ms) | ratio to parametric | target | result |",
            "|---|---:|---:|---:|---|",
        ]
        for name, row in inf["rows"].items():
            target = f"≤ {row['target_ratio']}x" if "target_ratio" in row else "–"
            result = ("PASS" if row["pass"] else "FAIL") if "pass" in row else "–"
            lines.append(f"| {name} | {fmt_ms(row['median_s'])} | {row['ratio']:.2f}x | {target} | {result} |")
        lines += [
            "",
            "`parametric` = `ParametricForImageClassification` (same config: encoder + linear head); all models "
            "run `model(pixel_values)` in eval mode under `torch.no_grad()`.",
            "",
        ]
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"]
    ns = [e["n"] for e in sizes]
    colors = {"one_class": "tab:blue", "one_id": "tab:orange", "1000_ids": "tab:green", "10pct_ids": "tab:red"}
    styles = {("class_mean", None): ("-", "o"), ("knn", "torch"): ("--", "s"), ("knn", "faiss"): (":", "^")}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 8.5), gridspec_kw={"width_ratios": [1.25, 1]})
    for op in OPERATIONS:
        for mode, backend in SETTINGS:
            key = f"{mode}/{backend or '-'}/{op}"
            ys = [e["forget"][key]["median_s"] * 1e3 for e in sizes]
            ls, marker = styles[(mode, backend)]
            ax1.plot(ns, ys, ls, marker=marker, color=colors[op],
                     label=f"{OPERATION_LABELS[op]} — {SETTING_LABELS[(mode, backend)]}")
    if "targets" in results:
        ax1.axhline(5, color="grey", lw=0.8, alpha=0.6)
        ax1.text(ns[0], 5 * 1.1, "5 ms target (one class, 50k)", fontsize=7, color="grey")
        ax1.axhline(1, color="grey", lw=0.8, alpha=0.6)
        ax1.text(ns[0], 1 * 1.1, "1 ms target (one id, 50k)", fontsize=7, color="grey")
    ax1.set_title("Forget latency (median)")
    query_colors = {"class_mean/-": "tab:purple", "knn/torch": "tab:brown", "knn/faiss": "tab:olive"}
    for key, color in query_colors.items():
        ys = [e["query"][key]["median_s"] * 1e3 for e in sizes]
        ax2.plot(ns, ys, "-", marker="o", color=color, label=key.replace("/-", "").replace("/", " / "))
    ax2.set_title(f"Batch of {results['args']['query_batch']} queries: memory read + fusion (median)")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"memory size N (x {results['args']['dim']} float32)")
        ax.set_ylabel("time (ms)")
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    m = results["machine"]
    fig.suptitle(f"spm_hf SampleMemory — {m['cpu']}, {m['cpus_usable']} cores, torch {m['torch']} "
                 f"({m['torch_threads']} threads)", fontsize=10)
    fig.tight_layout()
    write_figure(fig, path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large-n", type=int, default=1_000_000,
                        help="sizes >= this use --large-repeats / --large-query-repeats")
    parser.add_argument("--large-repeats", type=int, default=3)
    parser.add_argument("--large-query-repeats", type=int, default=3)
    parser.add_argument("--query-batch", type=int, default=256)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--target-n", type=int, default=50_000)
    parser.add_argument("--target-repeats", type=int, default=21)
    parser.add_argument("--inference-repeats", type=int, default=11)
    parser.add_argument("--verify-max-n", type=int, default=100_000,
                        help="recompute the digest of the original memory from scratch up to this N")
    parser.add_argument("--skip-targets", action="store_true", help="skip the 50k targets and inference overhead")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's default, i.e. one per core)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the .md and .png from an existing <out>/forget_latency.json, timing nothing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/bench")
    args = parser.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    if args.render_only:
        with open(os.path.join(args.out, "forget_latency.json"), encoding="utf-8") as f:
            results = json.load(f)
        write_report(results, args.out, write_json=False)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/forget_latency.py", *(sys.argv[1:] if argv is None else argv)]),
        "args": vars(args),
        "machine": machine_info(),
        "sizes": [],
    }
    m = results["machine"]
    log(f"{stamp()} {m['cpu']}, {m['cpus_usable']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"faiss {m.get('faiss')}, load average {m['loadavg_start']}")

    torch.manual_seed(args.seed)
    model_512 = SPMForImageClassification(label_config(encoder="resnet18")).eval()
    if model_512.config.embed_dim != args.dim:
        model_512 = SPMForImageClassification(
            label_config(encoder="custom", encoder_depths=[1], encoder_widths=[args.dim])
        ).eval()

    log(f"{stamp()} warm-up: every timed code path once on a 2,000-entry memory ", end="")
    warm_up(args, model_512)
    for n in sorted(args.sizes):
        run_size(args, n, model_512, results)
    if not args.skip_targets:
        run_targets(args, results)
        run_inference_overhead(args, results)

    results["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["total_s"] = time.perf_counter() - _T0
    write_report(results, args.out, write_json=True)
    return 0


def write_report(results: dict, out: str, write_json: bool) -> None:
    md = markdown(results)
    md_path = os.path.join(out, "forget_latency.md")
    json_path = os.path.join(out, "forget_latency.json")
    png_path = os.path.join(out, "forget_latency.png")
    write_atomic(md_path, md + "\n")
    if write_json:
        write_json_file(json_path, results)
    plot(results, png_path)
    log("")
    log(md)
    log(f"{stamp()} wrote {md_path}{', ' + json_path if write_json else ''}, {png_path}")


if __name__ == "__main__":
    sys.exit(main())
