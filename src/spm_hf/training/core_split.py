"""The core split: which training rows the parameters train on, decided per row from its id and a seed.

A model trained with a core split learns its parameters from the *core* rows only (data that will never be
deleted: public, licensed, consented), while its memory holds every row; the other rows are
`memory_only` in the memory and in every forget receipt. Deleting a memory-only row is then exact: the
model afterwards is, bit for bit, the model trained from scratch without that row (`tests/test_core_split.py`).

That holds only if nothing the parameters depend on can see a non-core row, so membership is a function of
the row's own id and the seed: a keyed hash of the id, compared with the fraction. Removing other rows
never changes whether a row is core, unlike a random permutation of the rows, which would reshuffle when
any row goes. The core is also cut down to `core_ids` (a file of ids, one a line) or by class
(`exclude_classes`: a class the parameters never see, known to the model only through its memory).

`core_ids_digest` is what the saved config records: a SHA-256 over the sorted core ids, which commits to
the core without listing it.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from collections.abc import Sequence

import torch


_HASH_KEY = b"spm_hf core split"


def core_hash_fraction(sample_id: str, seed: int) -> float:
    """A number in [0, 1) that depends on `sample_id` and `seed` only (keyed BLAKE2b of the id)."""
    digest = hashlib.blake2b(str(sample_id).encode(), digest_size=8, key=_HASH_KEY + b"\x00" + str(seed).encode())
    return int.from_bytes(digest.digest(), "big") / 2.0**64


def check_core_settings(core_fraction, core_seed, core_ids, exclude_classes) -> None:
    """Raise `ValueError` / `TypeError` naming the setting unless the core settings make sense together."""
    if core_fraction is not None:
        if isinstance(core_fraction, bool) or not isinstance(core_fraction, numbers.Real):
            raise TypeError(f"core_fraction must be a number in (0, 1], got {core_fraction!r}")
        if not math.isfinite(core_fraction) or not 0 < core_fraction <= 1:
            raise ValueError(f"core_fraction must be in (0, 1], got {core_fraction!r}")
        if core_ids is not None:
            raise ValueError("give core_fraction or core_ids, not both (--core-fraction / --core-ids)")
    if isinstance(core_seed, bool) or not isinstance(core_seed, numbers.Integral) or core_seed < 0:
        raise ValueError(f"core_seed must be an integer >= 0, got {core_seed!r}")
    if core_ids is not None and not isinstance(core_ids, (str, os.PathLike)):
        raise TypeError(f"core_ids must be the path of a file of sample ids (one a line), got {type(core_ids).__name__}")
    if exclude_classes is not None and (isinstance(exclude_classes, str) or not isinstance(exclude_classes, Sequence)):
        raise TypeError(f"core_exclude_classes must be a list of class names, got {exclude_classes!r}")


def read_core_ids(path) -> list[str]:
    """The ids in a `--core-ids` file: one sample id a line, blank lines ignored."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"core_ids {str(path)!r}: no such file (one sample id a line)")
    with open(path, encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f"core_ids {str(path)!r} holds no sample id")
    return ids


def core_mask(
    ids: Sequence[str],
    labels: torch.Tensor | None = None,
    label_names: Sequence[str] | None = None,
    *,
    core_fraction: float | None = None,
    core_seed: int = 0,
    core_ids=None,
    exclude_classes: Sequence[str] | None = None,
) -> torch.Tensor:
    """(N,) bool: which of the rows `ids` are core. Every row is core when no setting is given.

    Args:
        ids: the rows' sample ids.
        labels / label_names: the rows' class indices and the class names (needed with `exclude_classes`).
        core_fraction: keep a row when `core_hash_fraction(id, core_seed) < core_fraction`.
        core_ids: a file of the core's ids; every one must be among `ids`.
        exclude_classes: class names whose rows are never core.
    """
    check_core_settings(core_fraction, core_seed, core_ids, exclude_classes)
    ids = [str(i) for i in ids]
    if core_ids is not None:
        wanted = set(read_core_ids(core_ids))
        missing = wanted.difference(ids)
        if missing:
            raise ValueError(
                f"core_ids {str(core_ids)!r}: {len(missing)} of its {len(wanted)} ids are not training rows "
                f"(e.g. {sorted(missing)[:3]}); a core must be rows of the training subset"
            )
        mask = torch.tensor([i in wanted for i in ids], dtype=torch.bool)
    elif core_fraction is not None:
        mask = torch.tensor([core_hash_fraction(i, core_seed) < core_fraction for i in ids], dtype=torch.bool)
    else:
        mask = torch.ones(len(ids), dtype=torch.bool)
    if exclude_classes:
        if labels is None or label_names is None:
            raise ValueError("core_exclude_classes needs the rows' labels and the class names")
        unknown = [c for c in exclude_classes if c not in label_names]
        if unknown:
            raise ValueError(f"core_exclude_classes {unknown} are not classes of the dataset; "
                             f"choose from {list(label_names)}")
        excluded = torch.tensor([label_names.index(c) for c in exclude_classes])
        mask &= ~torch.isin(torch.as_tensor(labels), excluded)
    if not mask.any():
        raise ValueError(f"the core split selects none of the {len(ids)} training rows (core_fraction={core_fraction}, "
                         f"core_ids={core_ids}, core_exclude_classes={exclude_classes})")
    return mask


def core_ids_digest(ids: Sequence[str]) -> str:
    """SHA-256 (hex) of the sorted ids, one a line: what the saved config records instead of the ids."""
    h = hashlib.sha256()
    for sample_id in sorted(str(i) for i in ids):
        h.update(sample_id.encode())
        h.update(b"\n")
    return h.hexdigest()


__all__ = ["check_core_settings", "core_hash_fraction", "core_ids_digest", "core_mask", "read_core_ids"]
