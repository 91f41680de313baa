"""What a saved memory's ledger gives away: a stranger enumerating every candidate id against a CIFAR-10
memory after a 10 % forget, versus the key holder proving each forgotten id.

The memory holds CIFAR-10's 50,000 training ids (`train/00000` ... `train/49999`, the ids `spm_hf.data`
gives) and labels (read from the Parquet copy when it is there, else drawn at random); the values are
random 16-d embeddings, since the ledger does not depend on them. 10 % of the ids are forgotten and the
memory saved. Then:

- the stranger (no ledger key) hashes every one of the 50,000 candidates in every unkeyed way a ledger
  could have used (SHA-256 of the id, with a NUL prefix, with each key id or digest found in the file as a
  salt, and the format-1 salted hash with the same values) and counts matches with the file's hashes;
- the key holder loads the folder and asks `is_forgotten` for every candidate: it must say yes for exactly
  the forgotten 5,000.

    python bench/ledger_privacy.py [--out docs/bench/ledger_privacy.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

from spm_hf.files import write_json
from spm_hf.ledger import KEY_DIR_ENV, LEDGER_KEY_ENV
from spm_hf.memory import MEMORY_CONFIG_NAME, SampleMemory


N, FRACTION = 50_000, 0.10
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar10_labels() -> tuple[np.ndarray, str]:
    try:
        from spm_hf.data import load_image_dataset

        train = load_image_dataset("cifar10", splits=("train",))["train"]
        return np.asarray(train["label"][:N]), "CIFAR-10 training labels (../shared copy)"
    except Exception as e:  # no local copy: the ledger does not depend on the labels either
        return np.random.default_rng(0).integers(0, 10, N), f"random labels ({type(e).__name__})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)

    labels, label_source = cifar10_labels()
    ids = [f"train/{i:05d}" for i in range(N)]
    rng = np.random.default_rng(1)
    forgotten = sorted(rng.choice(N, int(N * FRACTION), replace=False).tolist())
    forgotten_ids = [ids[i] for i in forgotten]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[KEY_DIR_ENV] = os.path.join(tmp, "owner-keys")
        os.environ.pop(LEDGER_KEY_ENV, None)
        memory = SampleMemory(NAMES, (16,))
        memory.add(ids, torch.from_numpy(labels), torch.from_numpy(rng.standard_normal((N, 16), dtype=np.float32)))
        start = time.perf_counter()
        memory.forget(ids=forgotten_ids)
        forget_s = time.perf_counter() - start
        folder = os.path.join(tmp, "model")
        memory.save(folder)
        with open(os.path.join(folder, MEMORY_CONFIG_NAME), encoding="utf-8") as f:
            meta = json.load(f)

        # the stranger: every unkeyed construction, salted with every public string of the file
        stored = {h for event in meta["ledger"] for h in event["id_hashes"]}
        salts = {"", meta.get("signature_key_id", ""), meta.get("digest", "")}
        salts |= {event.get("key_id", "") for event in meta["ledger"]}
        salts |= {event.get(k, "") for event in meta["ledger"] for k in ("digest_before", "digest_after")}
        start = time.perf_counter()
        recovered = set()
        for cid in ids:
            for salt in salts:
                for text in (f"{salt}{cid}", f"{salt}\x00{cid}", f"{cid}{salt}"):
                    if hashlib.sha256(text.encode()).hexdigest() in stored:
                        recovered.add(cid)
        stranger_s = time.perf_counter() - start
        # control: the same stranger against the format-1 ledger (a salt stored beside salted SHA-256s)
        legacy_salt = os.urandom(16).hex()
        legacy = {hashlib.sha256(f"{legacy_salt}\x00{cid}".encode()).hexdigest() for cid in forgotten_ids}
        legacy_recovered = {cid for cid in ids for salt in salts | {legacy_salt}
                            if hashlib.sha256(f"{salt}\x00{cid}".encode()).hexdigest() in legacy}

        # the key holder
        start = time.perf_counter()
        owner = SampleMemory.load(folder)
        proven = {cid for cid in ids if owner.is_forgotten(cid)}
        owner_s = time.perf_counter() - start
        key_in_folder = any(
            open(os.path.join(os.environ[KEY_DIR_ENV], name)).read().strip().encode() in
            b"".join(open(os.path.join(folder, f), "rb").read() for f in os.listdir(folder))
            for name in os.listdir(os.environ[KEY_DIR_ENV])
        )

    result = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, torch {torch.__version__}",
        "labels": label_source,
        "candidates": N,
        "forgotten": len(forgotten_ids),
        "forget_ms": round(forget_s * 1e3, 2),
        "stranger_guesses_per_candidate": 3 * len(salts),
        "stranger_recovered": len(recovered),
        "stranger_seconds": round(stranger_s, 2),
        "format1_control_recovered": len(legacy_recovered),
        "owner_proven": len(proven),
        "owner_correct": proven == set(forgotten_ids),
        "owner_seconds": round(owner_s, 2),
        "key_in_folder": key_in_folder,
    }
    print(f"\nLedger privacy, {result['machine']}\n")
    print("| who | candidates tried | forgotten ids recovered | right for all forgotten | time |")
    print("|---|---:|---:|---|---:|")
    print(f"| stranger (folder only, {result['stranger_guesses_per_candidate']} unkeyed hashes per id) | {N:,} | "
          f"{len(recovered):,} | no | {stranger_s:.1f} s |")
    print(f"| control: the same stranger against a format-1 ledger (salt in the file) | {N:,} | "
          f"{len(legacy_recovered):,} | yes | |")
    print(f"| key holder (`is_forgotten`) | {N:,} | {len(proven):,} of {len(forgotten_ids):,} | "
          f"{'yes' if result['owner_correct'] else 'NO'} | {owner_s:.1f} s |")
    print(f"\nledger key bytes in the saved folder: {'YES' if key_in_folder else 'none'}; labels: {label_source}")
    if args.out:
        write_json(args.out, result)
    return 0 if not recovered and result["owner_correct"] and not key_in_folder else 1


if __name__ == "__main__":
    sys.exit(main())
