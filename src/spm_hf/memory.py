"""The sample memory: the deletable store of training samples that every SPM reads at prediction time.

One `SampleMemory` serves both model kinds. Per sample it keeps a stable string id, an integer label, a
value tensor (an embedding for the classifier, an image for the generator) and a `trained_on` flag that
says whether the model's parameters saw the sample during training. It owns the label names.

Forgetting contract (pinned by `tests/test_memory.py`):

1. `forget(ids=..., classes=...)` returns a `ForgetReceipt`: counts per class, digest before and after,
   time taken, and per removed sample (keyed by its salted id hash) whether it was `trained_on` or
   `memory_only`.
2. Aggregates are downdated exactly: per-class sums (float64) and counts lose exactly the removed rows,
   so class means equal those of a memory built from the retained samples.
3. Physical removal: rows are deleted by moving kept rows from the tail into the holes and zeroing the
   vacated tail, so no tensor of the object (not even storage past the live rows) holds a forgotten value,
   and the forgotten ids leave every Python structure. Saved files hold only the live rows.
4. Idempotent and order-independent: the digest is a multiset hash of the rows, so `forget(A); forget(B)`
   and `forget(A | B)` give the same digest; forgetting an already-forgotten id is a no-op.
5. Ledger: every forget event is recorded with salted hashes of the ids (never the ids), counts and
   digests; `add()` refuses an id whose hash is in the ledger unless `allow_reingest=True`.
6. Bad requests raise a clear error and change nothing (validation happens before any mutation).
7. Persistence is safetensors + JSON only, written to temporary names and renamed into place.

Deletion cost is O(removed rows), not O(N): this is what makes forgetting a class from a 50k memory a
matter of milliseconds.

This module has no dependency beyond torch, numpy and safetensors, so that it can travel with the
classifier's remote code (transformers copies sibling modules imported with a single-dot import).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .files import atomic_path, write_json


MEMORY_WEIGHTS_NAME = "sample_memory.safetensors"
MEMORY_CONFIG_NAME = "sample_memory.json"
MEMORY_FORMAT_VERSION = 1

TRAINED_ON = "trained_on"
MEMORY_ONLY = "memory_only"

# The digest is a sum of per-row 256-bit hashes, kept as four uint64 lanes that wrap mod 2**64.
_LANES = 4


class MemoryError_(Exception):
    """Base class of the errors raised by `SampleMemory` (named with a trailing underscore to keep
    Python's builtin `MemoryError` intact)."""


class UnknownClassError(MemoryError_, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownIdError(MemoryError_, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class ForgetRequestError(MemoryError_, ValueError):
    """A forget request that cannot be honoured as asked (e.g. it would empty the memory)."""


class ReingestionError(MemoryError_, ValueError):
    """`add()` was given an id that the ledger says was forgotten."""


class MemoryShapeError(MemoryError_, ValueError):
    """Values whose shape or dtype does not fit the memory (or the memory does not fit a model)."""


class MemoryIntegrityError(MemoryError_, ValueError):
    """A saved memory whose bytes do not match the digests recorded beside them."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ForgetReceipt:
    """What one `forget` call did. Holds no id in clear: removed samples are keyed by salted id hash.

    Attributes:
        removed_per_class: label name -> number of samples removed.
        removed_hashes / removed_trained_on: per removed sample, its salted id hash and whether the
            parameters were trained on it; `status` maps one to the other.
        digest_before / digest_after: `SampleMemory.digest()` around the call.
        seconds: wall time of the call.
        already_forgotten: requested ids that the ledger shows as forgotten earlier (no-op for them).
    """

    removed_per_class: dict[str, int]
    removed_hashes: list[str]
    removed_trained_on: np.ndarray
    digest_before: str
    digest_after: str
    seconds: float
    salt: str
    already_forgotten: int = 0
    timestamp: str = field(default_factory=_now)
    _status: dict[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def num_removed(self) -> int:
        return sum(self.removed_per_class.values())

    @property
    def status(self) -> dict[str, str]:
        """Salted id hash -> `"trained_on"` (the parameters saw the sample: it is gone from the memory,
        and the remaining gap to a retrained model is measured, not zero) or `"memory_only"` (the
        parameters never saw it: deletion is exact)."""
        if self._status is None:
            flags = np.where(self.removed_trained_on, TRAINED_ON, MEMORY_ONLY).tolist()
            self._status = dict(zip(self.removed_hashes, flags))
        return self._status

    @property
    def num_trained_on(self) -> int:
        return int(np.count_nonzero(self.removed_trained_on))

    @property
    def num_memory_only(self) -> int:
        return len(self.removed_hashes) - self.num_trained_on

    def status_of(self, sample_id: str) -> str | None:
        """`"trained_on"`, `"memory_only"` or None (not removed by this call) for a clear-text id."""
        return self.status.get(hash_id(sample_id, self.salt))

    def to_dict(self) -> dict:
        return {
            "timestamp": self.timestamp,
            "num_removed": self.num_removed,
            "removed_per_class": dict(self.removed_per_class),
            "num_trained_on": self.num_trained_on,
            "num_memory_only": self.num_memory_only,
            "already_forgotten": self.already_forgotten,
            "digest_before": self.digest_before,
            "digest_after": self.digest_after,
            "milliseconds": round(self.seconds * 1e3, 3),
        }

    def __str__(self) -> str:
        per_class = ", ".join(f"{k}: {v}" for k, v in self.removed_per_class.items() if v) or "nothing"
        return (
            f"Forgot {self.num_removed} samples ({per_class}) in {self.seconds * 1e3:.2f} ms; "
            f"{self.num_trained_on} trained_on, {self.num_memory_only} memory_only; "
            f"digest {self.digest_before[:12]} -> {self.digest_after[:12]}"
        )


def hash_id(sample_id: str, salt: str) -> str:
    """Salted SHA-256 of a sample id, as stored in the ledger."""
    return hashlib.sha256(f"{salt}\x00{sample_id}".encode()).hexdigest()


class SampleMemory:
    """A deletable memory of training samples.

    Args:
        label_names: class names; labels are indices into this list.
        value_shape: shape of one value, e.g. `(512,)` for embeddings or `(3, 32, 32)` for images.
        dtype: value dtype (`torch.float32` for embeddings, `torch.uint8` for images).
        salt: hex salt for the ledger's id hashes (random if omitted).

    Values live in one tensor with spare capacity (like a vector); `values` is a view of the live rows.
    """

    def __init__(
        self,
        label_names: Sequence[str],
        value_shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        salt: str | None = None,
    ):
        label_names = [str(n) for n in label_names]
        if not label_names:
            raise ValueError("label_names must name at least one class")
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names must be unique, got {label_names}")
        self.label_names: list[str] = label_names
        self.value_shape: tuple[int, ...] = tuple(int(s) for s in value_shape)
        self.dtype = dtype
        self.salt = salt or secrets.token_hex(16)
        self.ledger: list[dict] = []
        self._forgotten_set: set[str] = set()
        self._forgotten_pending: list[list[str]] = []  # merged into the set on the first lookup
        self._init_storage(0, torch.device("cpu"))

    # ------------------------------------------------------------------ storage
    def _init_storage(self, capacity: int, device: torch.device) -> None:
        self._n = 0
        self._values = torch.zeros((capacity, *self.value_shape), dtype=self.dtype, device=device)
        self._labels = torch.zeros(capacity, dtype=torch.long, device=device)
        self._trained_on = torch.zeros(capacity, dtype=torch.bool, device=device)
        self._row_hashes = np.zeros((capacity, _LANES), dtype=np.uint64)
        # Per-row id and salted id hash, moved with the row (object arrays: moves are pointer copies).
        self._ids = np.empty(capacity, dtype=object)
        self._id_hashes = np.empty(capacity, dtype=object)
        self._row_of: dict[str, int] | None = {}  # id -> row; None = stale, rebuilt on the next lookup
        self._digest_lanes = np.zeros(_LANES, dtype=np.uint64)
        self._class_sums: torch.Tensor | None = None  # (C, D) float64, built lazily for 1-D values
        self._class_counts = torch.zeros(len(self.label_names), dtype=torch.long)
        self._listeners: list = []

    def _grow(self, needed: int) -> None:
        capacity = self._values.shape[0]
        if needed <= capacity:
            return
        new_capacity = max(needed, int(capacity * 1.5) + 16)
        dev = self._values.device
        values = torch.zeros((new_capacity, *self.value_shape), dtype=self.dtype, device=dev)
        values[: self._n] = self._values[: self._n]
        labels = torch.zeros(new_capacity, dtype=torch.long, device=dev)
        labels[: self._n] = self._labels[: self._n]
        trained = torch.zeros(new_capacity, dtype=torch.bool, device=dev)
        trained[: self._n] = self._trained_on[: self._n]
        hashes = np.zeros((new_capacity, _LANES), dtype=np.uint64)
        hashes[: self._n] = self._row_hashes[: self._n]
        ids = np.empty(new_capacity, dtype=object)
        ids[: self._n] = self._ids[: self._n]
        id_hashes = np.empty(new_capacity, dtype=object)
        id_hashes[: self._n] = self._id_hashes[: self._n]
        self._ids, self._id_hashes = ids, id_hashes
        # Scrub the old buffers before letting them go: they hold the same rows, and a stale copy must
        # not outlive a later forget.
        self._values.zero_()
        self._values, self._labels, self._trained_on, self._row_hashes = values, labels, trained, hashes

    @property
    def values(self) -> torch.Tensor:
        """(N, *value_shape) live values."""
        return self._values[: self._n]

    @property
    def labels(self) -> torch.Tensor:
        """(N,) int64 labels."""
        return self._labels[: self._n]

    @property
    def trained_on(self) -> torch.Tensor:
        """(N,) bool: whether the parameters were trained on each sample."""
        return self._trained_on[: self._n]

    @property
    def ids(self) -> list[str]:
        """Live sample ids, in row order (a copy)."""
        return self._ids[: self._n].tolist()

    def _row_index(self) -> dict[str, int]:
        if self._row_of is None:
            self._row_of = {sample_id: row for row, sample_id in enumerate(self._ids[: self._n].tolist())}
        return self._row_of

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def device(self) -> torch.device:
        return self._values.device

    def __len__(self) -> int:
        return self._n

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._row_index()

    def __repr__(self) -> str:
        return (
            f"SampleMemory({self._n} samples, {self.num_classes} classes, value_shape={self.value_shape}, "
            f"dtype={self.dtype}, digest={self.digest()[:12]})"
        )

    def class_counts(self) -> dict[str, int]:
        """Label name -> number of samples currently in memory."""
        return dict(zip(self.label_names, self._class_counts.tolist()))

    def to(self, device: torch.device | str) -> SampleMemory:
        """Move the values (in place) to `device`; returns self."""
        device = torch.device(device)
        if device != self._values.device:
            self._values = self._values.to(device)
            self._labels = self._labels.to(device)
            self._trained_on = self._trained_on.to(device)
            self._notify("moved")
        return self

    def add_listener(self, listener) -> None:
        """Register an aggregate kept in step with the memory (see `FaissNeighborIndex`)."""
        self._listeners.append(listener)

    def remove_listener(self, listener) -> None:
        """Detach an aggregate registered with `add_listener` (no error if it is not attached)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, event: str, **kwargs) -> None:
        for listener in self._listeners:
            listener.on_memory_change(self, event, **kwargs)

    # ------------------------------------------------------------------ hashing
    def _row_hash(self, sample_id: str, label: int, trained_on: bool, value: torch.Tensor) -> np.ndarray:
        h = hashlib.blake2b(digest_size=8 * _LANES)
        h.update(sample_id.encode())
        h.update(b"\x00")
        h.update(int(label).to_bytes(8, "little", signed=True))
        h.update(b"\x01" if trained_on else b"\x00")
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return np.frombuffer(h.digest(), dtype=np.uint64)

    def digest(self) -> str:
        """Order-independent digest of the live rows (ids, labels, flags, values) and the label names.

        A multiset hash: the sum of per-row BLAKE2b hashes, so it is updated in O(rows changed) and
        two memories with the same rows in any order have the same digest.
        """
        return self._digest_of(self._digest_lanes)

    def _digest_of(self, lanes: np.ndarray) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.label_names, list(self.value_shape), str(self.dtype)]).encode())
        h.update(lanes.tobytes())
        return h.hexdigest()

    def recompute_digest(self) -> str:
        """Digest recomputed from the values themselves (O(N)); `verify()` compares it to `digest()`."""
        lanes = np.zeros(_LANES, dtype=np.uint64)
        values, labels, trained = self.values, self.labels.tolist(), self.trained_on.tolist()
        for row, sample_id in enumerate(self.ids):
            lanes += self._row_hash(sample_id, labels[row], trained[row], values[row])
        return self._digest_of(lanes)

    def verify(self) -> None:
        """Raise `MemoryIntegrityError` if the stored values no longer match the running digest."""
        if self.recompute_digest() != self.digest():
            raise MemoryIntegrityError("the memory's values do not match its digest (modified in place?)")

    # ------------------------------------------------------------------ class resolution
    def class_index(self, cls: str | int) -> int:
        """Resolve a class name or index; unknown ones raise `UnknownClassError` listing valid names."""
        if isinstance(cls, bool):
            raise UnknownClassError(f"class {cls!r} is neither a name nor an index; valid: {self.label_names}")
        if isinstance(cls, (int, np.integer)):
            if 0 <= int(cls) < self.num_classes:
                return int(cls)
            raise UnknownClassError(
                f"class index {int(cls)} is out of range 0..{self.num_classes - 1}; valid names: {self.label_names}"
            )
        if isinstance(cls, str):
            if cls in self.label_names:
                return self.label_names.index(cls)
            raise UnknownClassError(f"unknown class {cls!r}; valid names: {self.label_names}")
        raise UnknownClassError(f"class {cls!r} is neither a name nor an index; valid: {self.label_names}")

    # ------------------------------------------------------------------ add
    def add(
        self,
        ids: Sequence[str],
        labels: Sequence[int] | torch.Tensor,
        values: torch.Tensor,
        trained_on: bool | Sequence[bool] | torch.Tensor = True,
        allow_reingest: bool = False,
    ) -> None:
        """Append samples. Validates everything first; on error nothing is added.

        Args:
            ids: unique string ids, none already in memory.
            labels: (n,) class indices.
            values: (n, *value_shape) values (cast to the memory's dtype).
            trained_on: whether the parameters were trained on these samples (one flag or one per sample).
            allow_reingest: accept ids that the ledger shows as forgotten (a deliberate re-ingestion).
        """
        ids = [str(i) for i in ids]
        n = len(ids)
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
        values = torch.as_tensor(values)
        if labels.numel() != n or values.shape[0] != n:
            raise MemoryShapeError(f"add() got {n} ids, {labels.numel()} labels and {values.shape[0]} values")
        if tuple(values.shape[1:]) != self.value_shape:
            raise MemoryShapeError(
                f"values of shape {tuple(values.shape[1:])} do not fit this memory's value_shape {self.value_shape}"
            )
        if values.is_floating_point() and self.dtype == torch.uint8:
            raise MemoryShapeError("this memory stores uint8 images; got floating-point values")
        if n and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise UnknownClassError(
                f"labels must lie in 0..{self.num_classes - 1} ({self.label_names}); got {labels.min()}..{labels.max()}"
            )
        if len(set(ids)) != n:
            seen, dup = set(), []
            for i in ids:
                if i in seen:
                    dup.append(i)
                seen.add(i)
            raise ValueError(f"duplicate ids in add(): {dup[:5]}")
        row_of = self._row_index()
        clash = [i for i in ids if i in row_of]
        if clash:
            raise ValueError(f"{len(clash)} ids are already in memory, e.g. {clash[:5]}")
        if not allow_reingest and self._forgotten_hashes:
            forgotten = self._forgotten_hashes
            again = [i for i in ids if hash_id(i, self.salt) in forgotten]
            if again:
                raise ReingestionError(
                    f"{len(again)} ids were forgotten earlier (the ledger holds their hashes), e.g. {again[:3]}; "
                    "pass allow_reingest=True to add them back deliberately"
                )
        if isinstance(trained_on, bool):
            flags = torch.full((n,), trained_on, dtype=torch.bool)
        else:
            flags = torch.as_tensor(trained_on, dtype=torch.bool).reshape(-1)
            if flags.numel() != n:
                raise MemoryShapeError(f"trained_on has {flags.numel()} flags for {n} ids")
        if n == 0:
            return

        values = values.to(device=self.device, dtype=self.dtype)
        start = self._n
        self._grow(start + n)
        self._values[start : start + n] = values
        self._labels[start : start + n] = labels.to(self.device)
        self._trained_on[start : start + n] = flags.to(self.device)
        cpu_values = values.cpu()
        labels_list, flags_list = labels.tolist(), flags.tolist()
        for k, sample_id in enumerate(ids):
            self._row_hashes[start + k] = self._row_hash(sample_id, labels_list[k], flags_list[k], cpu_values[k])
            self._id_hashes[start + k] = hash_id(sample_id, self.salt)
            row_of[sample_id] = start + k
        self._digest_lanes += self._row_hashes[start : start + n].sum(axis=0, dtype=np.uint64)
        self._ids[start : start + n] = ids
        self._n += n
        self._class_counts += torch.bincount(labels, minlength=self.num_classes)
        if self._class_sums is not None:
            self._class_sums.index_add_(0, labels, cpu_values.reshape(n, -1).double())
        self._notify("add", rows=torch.arange(start, start + n))

    # ------------------------------------------------------------------ aggregates
    def class_sums(self) -> torch.Tensor:
        """(C, D) float64 per-class sums of the values (flattened), downdated exactly on forget."""
        if self._class_sums is None:
            flat = self.values.detach().cpu().reshape(self._n, -1).double()
            sums = torch.zeros(self.num_classes, flat.shape[1], dtype=torch.float64)
            sums.index_add_(0, self.labels.cpu(), flat)
            self._class_sums = sums
        return self._class_sums

    def class_counts_tensor(self) -> torch.Tensor:
        """(C,) int64 number of samples per class."""
        return self._class_counts

    def class_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(means (C, D) float32, present (C,) bool)`; absent classes have a zero mean."""
        counts = self._class_counts
        present = counts > 0
        means = self.class_sums() / counts.clamp_min(1).unsqueeze(1).double()
        return means.float(), present

    # ------------------------------------------------------------------ forget
    def resolve(self, ids: Iterable[str] | None = None, classes: Iterable[str | int] | None = None):
        """Rows selected by a forget request, validated. Returns `(rows (sorted), already_forgotten)`.

        Raises `UnknownClassError` / `UnknownIdError` naming the offending entries, and
        `ForgetRequestError` if the request would leave the memory empty. Changes nothing.
        """
        if ids is None and classes is None:
            raise ForgetRequestError("forget() needs ids=[...] and/or classes=[...]")
        if isinstance(ids, str):
            ids = [ids]
        if isinstance(classes, (str, int)):
            classes = [classes]
        # numpy on the CPU: these are small serial operations, and torch's thread pool stalls them when
        # the cores are busy.
        mask = np.zeros(self._n, dtype=bool)
        already = 0
        if classes is not None:
            class_idx = sorted({self.class_index(c) for c in classes})
            labels = self.labels.cpu().numpy()
            for c in class_idx:
                mask |= labels == c
        if ids is not None:
            unknown, id_rows = [], []
            row_of = self._row_index()
            for sample_id in ids:
                sample_id = str(sample_id)
                row = row_of.get(sample_id)
                if row is not None:
                    id_rows.append(row)
                elif hash_id(sample_id, self.salt) in self._forgotten_hashes:
                    already += 1
                else:
                    unknown.append(sample_id)
            if unknown:
                raise UnknownIdError(
                    f"{len(unknown)} ids are not in memory and were never forgotten from it, e.g. {unknown[:5]}"
                )
            mask[id_rows] = True
        rows = np.flatnonzero(mask)  # sorted, unique
        if len(rows) and len(rows) == self._n:
            raise ForgetRequestError(
                "this request would forget every sample in the memory (every class); an SPM with an empty "
                "memory cannot predict. Forget fewer classes, or train a new model."
            )
        return rows, already

    def forget(
        self, ids: Iterable[str] | None = None, classes: Iterable[str | int] | None = None
    ) -> ForgetReceipt:
        """Delete samples by id and/or whole classes (names or indices). See the module docstring."""
        start = time.perf_counter()
        digest_before = self.digest()
        rows, already = self.resolve(ids=ids, classes=classes)
        per_class = {name: 0 for name in self.label_names}
        hashes: list[str] = []
        flags = np.zeros(0, dtype=bool)
        if len(rows):
            hashes, flags, per_class = self._delete_rows(rows)
            self._forgotten_pending.append(hashes)
        digest_after = self.digest()
        seconds = time.perf_counter() - start
        receipt = ForgetReceipt(
            removed_per_class=per_class,
            removed_hashes=hashes,
            removed_trained_on=flags,
            digest_before=digest_before,
            digest_after=digest_after,
            seconds=seconds,
            salt=self.salt,
            already_forgotten=already,
        )
        if len(rows):
            self.ledger.append(
                {
                    "event": "forget",
                    "timestamp": receipt.timestamp,
                    "num_removed": receipt.num_removed,
                    "removed_per_class": {k: v for k, v in per_class.items() if v},
                    "num_trained_on": receipt.num_trained_on,
                    "num_memory_only": receipt.num_memory_only,
                    "digest_before": digest_before,
                    "digest_after": digest_after,
                    # row order here; `save` writes them sorted (sorting 5k hashes costs ~1 ms, a fifth
                    # of a whole-class forget), so the file reveals nothing of the rows' order
                    "id_hashes": hashes,
                }
            )
        return receipt

    def _delete_rows(self, rows: np.ndarray) -> tuple[list[str], np.ndarray, dict[str, int]]:
        """Remove `rows` (sorted, unique) in O(len(rows)): fill holes from the tail, zero the tail.

        Returns the removed rows' salted id hashes, their `trained_on` flags and counts per class.
        """
        n, k = self._n, len(rows)
        new_n = n - k
        cpu = self._values.device.type == "cpu"
        # numpy views of the CPU storage (torch's per-op overhead and thread pool cost more than the work)
        labels = self._labels.numpy() if cpu else self._labels
        trained = self._trained_on.numpy() if cpu else self._trained_on
        values = self._values.numpy() if cpu else self._values
        index = (lambda a: a) if cpu else (lambda a: torch.from_numpy(a).to(self.device))
        removed_labels = torch.as_tensor(labels[index(rows)]).cpu()
        removed_flags = torch.as_tensor(trained[index(rows)]).cpu().numpy()

        # Receipt and downdates first, while the removed rows are still in place.
        per_class_counts = torch.from_numpy(np.bincount(removed_labels.numpy(), minlength=self.num_classes))
        per_class = dict(zip(self.label_names, per_class_counts.tolist()))
        hashes = self._id_hashes[rows].tolist()
        self._digest_lanes -= self._row_hashes[rows].sum(axis=0, dtype=np.uint64)
        self._class_counts -= per_class_counts
        if self._class_sums is not None:
            emptied = self._class_counts == 0
            # Classes with nothing left get an exact zero; the others lose exactly the removed rows.
            partial = ~emptied[removed_labels]
            if bool(partial.any()):
                sub = torch.from_numpy(rows)[partial]
                removed_values = self._values[sub.to(self.device)].detach().cpu().reshape(len(sub), -1).double()
                self._class_sums.index_add_(0, removed_labels[partial], removed_values, alpha=-1.0)
            self._class_sums[emptied] = 0.0

        # Holes below new_n are filled with kept rows from the tail [new_n, n).
        holes = rows[rows < new_n]
        tail_removed = np.zeros(n - new_n, dtype=bool)
        tail_removed[rows[rows >= new_n] - new_n] = True
        movers = np.nonzero(~tail_removed)[0] + new_n
        if self._row_of is not None:
            # Cheap to keep in step for a few rows; for many, rebuild lazily on the next id lookup.
            if k <= 64:
                for sample_id in self._ids[rows].tolist():
                    del self._row_of[sample_id]
                for dst, sample_id in zip(holes.tolist(), self._ids[movers].tolist()):
                    self._row_of[sample_id] = dst
            else:
                self._row_of = None
        if len(holes):
            for table in (values, labels, trained):
                table[index(holes)] = table[index(movers)]
            for table in (self._row_hashes, self._ids, self._id_hashes):
                table[holes] = table[movers]
        # Scrub the vacated tail: no storage of this object keeps a forgotten value or id.
        values[new_n:n] = 0
        labels[new_n:n] = 0
        trained[new_n:n] = False
        self._row_hashes[new_n:n] = 0
        self._ids[new_n:n] = None
        self._id_hashes[new_n:n] = None
        self._n = new_n
        if self._listeners:
            self._notify("delete", removed=rows.tolist(), moved=list(zip(movers.tolist(), holes.tolist())))
        return hashes, removed_flags, per_class

    @property
    def _forgotten_hashes(self) -> set[str]:
        """Salted hashes of every forgotten id (the ledger's), as a set for lookups."""
        for hashes in self._forgotten_pending:
            self._forgotten_set.update(hashes)
        self._forgotten_pending.clear()
        return self._forgotten_set

    def is_forgotten(self, sample_id: str) -> bool:
        """True if the ledger shows `sample_id` as forgotten (a proof that needs the clear id)."""
        return hash_id(sample_id, self.salt) in self._forgotten_hashes

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> None:
        """Write `sample_memory.safetensors` + `sample_memory.json` atomically (temp name, then rename)."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        tensors = {
            "values": self.values.detach().cpu().contiguous().clone(),
            "labels": self.labels.cpu().clone(),
            "trained_on": self.trained_on.cpu().to(torch.uint8).clone(),
        }
        weights_path = os.path.join(directory, MEMORY_WEIGHTS_NAME)
        with atomic_path(weights_path) as tmp_weights:
            save_file(tensors, tmp_weights)
            weights_sha = _sha256_file(tmp_weights)
            meta = {
                "format_version": MEMORY_FORMAT_VERSION,
                "num_items": self._n,
                "label_names": self.label_names,
                "value_shape": list(self.value_shape),
                "dtype": str(self.dtype).replace("torch.", ""),
                "ids": self.ids,
                "digest": self.digest(),
                "files": {MEMORY_WEIGHTS_NAME: {"sha256": weights_sha}},
                "salt": self.salt,
                "ledger": [{**event, "id_hashes": sorted(event.get("id_hashes", []))} for event in self.ledger],
            }
        write_json(os.path.join(directory, MEMORY_CONFIG_NAME), meta)

    @classmethod
    def load(cls, directory: str | os.PathLike, verify: bool = True) -> SampleMemory:
        """Load a memory written by `save`; checks the file hash and (with `verify`) the content digest."""
        directory = os.fspath(directory)
        return cls.from_files(
            os.path.join(directory, MEMORY_CONFIG_NAME), os.path.join(directory, MEMORY_WEIGHTS_NAME), verify
        )

    @classmethod
    def from_files(cls, config_path: str, weights_path: str, verify: bool = True) -> SampleMemory:
        for path in (config_path, weights_path):
            if not os.path.exists(path):
                raise FileNotFoundError(f"sample memory file missing: {path}")
        try:
            with open(config_path, encoding="utf-8") as f:
                meta = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MemoryIntegrityError(f"{config_path} is not valid JSON: {e}") from e
        if meta.get("format_version") != MEMORY_FORMAT_VERSION:
            raise MemoryIntegrityError(
                f"{config_path}: unsupported sample-memory format {meta.get('format_version')!r}"
            )
        expected_sha = meta["files"][MEMORY_WEIGHTS_NAME]["sha256"]
        actual_sha = _sha256_file(weights_path)
        if actual_sha != expected_sha:
            raise MemoryIntegrityError(
                f"{weights_path} is corrupted or was replaced: sha256 {actual_sha[:16]}… does not match "
                f"{expected_sha[:16]}… recorded in {os.path.basename(config_path)}"
            )
        try:
            tensors = load_file(weights_path)
        except SafetensorError as e:
            raise MemoryIntegrityError(f"{weights_path} cannot be read as safetensors: {e}") from e
        dtype = getattr(torch, meta["dtype"])
        memory = cls(meta["label_names"], meta["value_shape"], dtype=dtype, salt=meta["salt"])
        ids = meta["ids"]
        if len(ids) != meta["num_items"] or tensors["values"].shape[0] != len(ids):
            raise MemoryIntegrityError(
                f"{config_path} lists {len(ids)} ids for {tensors['values'].shape[0]} rows in {weights_path}"
            )
        memory.add(ids, tensors["labels"], tensors["values"], tensors["trained_on"].bool(), allow_reingest=True)
        memory.ledger = list(meta.get("ledger", []))
        for event in memory.ledger:
            memory._forgotten_pending.append(list(event.get("id_hashes", [])))
        if verify and memory.digest() != meta["digest"]:
            raise MemoryIntegrityError(
                f"{weights_path}: content digest {memory.digest()[:16]}… does not match {meta['digest'][:16]}… "
                f"recorded in {os.path.basename(config_path)}"
            )
        return memory

    def ledger_summary(self) -> dict:
        """Counts, dates and digests of the forget events; never ids."""
        return {
            "num_events": len(self.ledger),
            "num_forgotten": sum(e["num_removed"] for e in self.ledger),
            "events": [{k: v for k, v in e.items() if k != "id_hashes"} for e in self.ledger],
        }

    # ------------------------------------------------------------------ neighbours
    def knn(self, queries: torch.Tensor, k: int, backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
        """Exact k nearest rows by squared L2 distance. Returns `(distances (B, k'), rows (B, k'))`,
        k' = min(k, N), nearest first. `backend` is `"torch"` or `"faiss"` (extra `index`)."""
        if self._values.dim() != 2:
            raise MemoryShapeError("knn() needs a memory of 1-D values (embeddings)")
        k = min(k, self._n)
        if backend == "torch":
            values = self.values.to(queries.dtype)
            d2 = (
                queries.pow(2).sum(1, keepdim=True)
                - 2.0 * queries @ values.T
                + values.pow(2).sum(1).unsqueeze(0)
            )
            dist, rows = torch.topk(d2, k, dim=1, largest=False, sorted=True)
            return dist, rows
        if backend == "faiss":
            index = self._faiss_index()
            dist, rows = index.search(queries.detach().float().cpu().contiguous().numpy(), k)
            return torch.from_numpy(dist).to(queries.device), torch.from_numpy(rows).to(queries.device)
        raise ValueError(f"unknown knn backend {backend!r}; use 'torch' or 'faiss'")

    def _faiss_index(self):
        for listener in self._listeners:
            if isinstance(listener, FaissNeighborIndex):
                return listener
        index = FaissNeighborIndex(self)
        self.add_listener(index)
        return index


class FaissNeighborIndex:
    """An exact faiss index (`IndexIDMap2(IndexFlatL2)`) over a memory's rows, keyed by row number and
    kept in step with every add and forget: removed rows are `remove_ids`-ed, rows moved into holes are
    re-keyed. Requires the `index` extra (faiss-cpu); imported only when first used."""

    def __init__(self, memory: SampleMemory):
        try:
            import faiss  # noqa: PLC0415  (optional dependency)
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("the faiss backend needs faiss-cpu: pip install 'spm_hf[index]'") from e
        self._faiss = faiss
        dim = int(np.prod(memory.value_shape))
        self.index = faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
        if len(memory):
            self._add_rows(memory, np.arange(len(memory)))

    def _add_rows(self, memory: SampleMemory, rows: np.ndarray) -> None:
        vectors = memory.values[torch.as_tensor(rows)].detach().float().cpu().numpy()
        self.index.add_with_ids(np.ascontiguousarray(vectors), rows.astype(np.int64))

    def on_memory_change(self, memory: SampleMemory, event: str, **kwargs) -> None:
        if event == "add":
            self._add_rows(memory, kwargs["rows"].numpy())
        elif event == "delete":
            moved = kwargs["moved"]
            stale = np.array(list(kwargs["removed"]) + [src for src, _ in moved], dtype=np.int64)
            self.index.remove_ids(self._faiss.IDSelectorBatch(np.unique(stale)))
            if moved:
                self._add_rows(memory, np.array([dst for _, dst in moved], dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)

    @property
    def ntotal(self) -> int:
        return self.index.ntotal
