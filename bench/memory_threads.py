"""Eight threads forgetting from and reading one `SampleMemory` at once, for a fixed time.

Half the threads forget disjoint batches of ids (each thread owns its ids, so every deletion is expected
to land), the other half read what a model reads (`class_means()`, `nearest()`). At the end `verify()`
recomputes the digest, the class counts and the key index from the rows, and the live ids must be exactly
the ones nobody forgot.

    python bench/memory_threads.py [--seconds 10] [--threads 8] [--out docs/bench/memory_threads.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time

import numpy as np
import torch

from spm_hf.files import write_json
from spm_hf.memory import SampleMemory


NAMES = [f"class{i}" for i in range(10)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5, help="ids per forget call")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    n = args.size
    rng = np.random.default_rng(0)
    memory = SampleMemory(NAMES, (64,))
    ids = [f"train/{i:05d}" for i in range(n)]
    memory.add(ids, torch.from_numpy(rng.integers(0, 10, n)), torch.from_numpy(rng.standard_normal((n, 64), dtype=np.float32)))
    writers = args.threads // 2
    # each writer owns every writers-th id, except one in five that nobody forgets
    owned = [[ids[i] for i in range(w, n, writers) if i % 5] for w in range(writers)]
    forgotten: list[list[str]] = [[] for _ in range(writers)]
    reads = [0] * (args.threads - writers)
    writer_seconds = [0.0] * writers
    errors: list[str] = []
    deadline = time.perf_counter() + args.seconds
    queries = torch.randn(16, 64)

    def writer(w: int) -> None:
        try:
            mine, begun = owned[w], time.perf_counter()
            for start in range(0, len(mine), args.batch):
                writer_seconds[w] = time.perf_counter() - begun
                if time.perf_counter() > deadline:
                    return
                batch = mine[start : start + args.batch]
                receipt = memory.forget(ids=batch)
                if receipt.num_removed != len(batch):
                    errors.append(f"writer {w}: {receipt.num_removed} of {len(batch)} removed")
                forgotten[w].extend(batch)
            writer_seconds[w] = time.perf_counter() - begun
        except Exception as e:
            errors.append(f"writer {w}: {type(e).__name__}: {e}")

    def reader(r: int) -> None:
        try:
            while time.perf_counter() < deadline:
                means, present = memory.class_means()
                neighbours = memory.nearest(queries, 8)
                if not bool(torch.isfinite(means).all()) or neighbours.values.shape != (16, 8, 64):
                    errors.append(f"reader {r}: inconsistent read")
                reads[r] += 1
        except Exception as e:
            errors.append(f"reader {r}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    threads += [threading.Thread(target=reader, args=(r,)) for r in range(args.threads - writers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start

    gone = {i for batch in forgotten for i in batch}
    expected_live = [i for i in ids if i not in gone]
    verify = "passed"
    try:
        memory.verify()
    except Exception as e:
        verify = f"FAILED: {e}"
    counts_match = sum(memory.class_counts().values()) == len(memory) == len(expected_live)
    ids_match = sorted(memory.ids) == sorted(expected_live)
    ledger_ok = sum(e["num_removed"] for e in memory.ledger) == len(gone)
    result = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, torch {torch.__version__}",
        "threads": args.threads, "writers": writers, "seconds": round(wall, 2), "memory_size": n,
        "writers_busy_seconds": round(min(writer_seconds), 2),
        "forgotten": len(gone), "forget_calls": len(memory.ledger), "reads": sum(reads),
        "verify": verify, "counts_match": counts_match, "ids_match": ids_match, "ledger_matches": ledger_ok,
        "errors": errors[:10],
    }
    print(f"\nSampleMemory under {args.threads} threads for {wall:.1f} s, {result['machine']}\n")
    print("| writers | readers | writers busy | forget calls | ids forgotten | reads | verify() | counts match | ids match | ledger | errors |")
    print("|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|")
    print(f"| {writers} | {args.threads - writers} | {min(writer_seconds):.1f} s | {len(memory.ledger):,} | {len(gone):,} | {sum(reads):,} | {verify} | "
          f"{counts_match} | {ids_match} | {ledger_ok} | {len(errors)} |")
    if args.out:
        write_json(args.out, result)
    return 0 if verify == "passed" and counts_match and ids_match and ledger_ok and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
