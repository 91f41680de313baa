"""The sample memory: the deletable store of training samples that every SPM reads at prediction time.

One `SampleMemory` serves both model kinds. Per sample it keeps a stable string id (the user's name for
it), a stable integer *key* (the memory's own handle, like a faiss id: it never changes while the sample
is in memory and is never reused), an integer label, a value tensor (an embedding for the classifier, an
image for the generator) and a `trained_on` flag that says whether the model's parameters saw the sample
during training. It owns the label names.

Forgetting contract (pinned by `tests/test_memory.py`; `docs/contract.md` says it in prose):

1. `forget(classes, ids=...)` returns a `ForgetReceipt`: counts per class, digest before and after, time
   taken, and per removed sample (keyed by its keyed id hash) whether it was `trained_on` or
   `memory_only`.
2. Aggregates are downdated exactly: per-class sums (float64) and counts lose exactly the removed rows,
   so class means equal those of a memory built from the retained samples.
3. Physical removal: rows are deleted by moving kept rows from the tail into the holes and zeroing the
   vacated tail, so no tensor of the object (not even storage past the live rows) holds a forgotten value,
   and the forgotten ids leave every Python structure. Saved files hold only the live rows.
4. Idempotent and order-independent: the digest is a multiset hash of the rows, so `forget(A); forget(B)`
   and `forget(A | B)` give the same digest; forgetting an already-forgotten id is a no-op.
5. Ledger (`spm_hf.ledger`): every forget event is recorded with counts, digests and HMACs of the ids
   under the owner's ledger key, which never enters the saved folder; `add()` refuses an id the ledger
   shows as forgotten unless `allow_reingest=True`. The saved JSON is sealed (a SHA-256 over ids, labels
   names, ledger and file hashes) and signed with the owner's key, so edits are detected on load.
6. Bad requests raise a clear error and change nothing (validation happens before any mutation).
7. Persistence is safetensors + JSON only; `save` replaces both files in one atomic step
   (`spm_hf.files.atomic_directory`), and `load` reads under the folder's shared lock.
8. Threads: every public method holds the memory's lock, so one memory may be shared between threads.
   `values` / `labels` / `trained_on` are views of live storage that a concurrent `forget` rewrites: read
   through `class_means()`, `nearest()` or `copy()` for a consistent picture.

Deletion cost is O(removed rows), not O(N): this is what makes forgetting a class from a 50k memory a
matter of milliseconds.

This module has no dependency beyond torch, numpy and safetensors, so that it can travel with the
classifier's remote code (transformers copies sibling modules imported with a single-dot import).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .files import atomic_directory, reading_directory, write_json
from .ledger import MEMORY_ONLY, TRAINED_ON, ForgetReceipt, LedgerKey, LedgerKeyError, seal, seal_message
from .memory_index import FaissNeighborIndex, MemoryListener


MEMORY_WEIGHTS_NAME = "sample_memory.safetensors"
MEMORY_CONFIG_NAME = "sample_memory.json"
MEMORY_FORMAT_VERSION = 2
# Version 1 kept a salt beside salted id hashes (enumerable); it still loads, its events stay as they were.
_READABLE_FORMATS = (1, 2)

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


class UnknownKeyError(MemoryError_, KeyError):
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


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _legacy_hash_id(sample_id: str, salt: str) -> str:
    """The salted SHA-256 that format-1 ledgers stored (kept to read them)."""
    return hashlib.sha256(f"{salt}\x00{sample_id}".encode()).hexdigest()


def _as_id_list(ids, argument: str = "ids") -> list[str]:
    """Validate a collection of sample ids: strings (or integers, written in decimal)."""
    if isinstance(ids, (bytes, bytearray)):
        raise TypeError(f"{argument} must be a list of strings; got a bytes object (decode it first)")
    if isinstance(ids, str):
        return [ids]
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    try:
        items = list(ids)
    except TypeError:
        raise TypeError(f"{argument} must be a list of strings; got {type(ids).__name__}") from None
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            out.append(str(int(item)))
        else:
            raise TypeError(f"{argument} must hold strings; got {item!r} ({type(item).__name__})")
    return out


def _as_labels(labels, n: int, num_classes: int, label_names: list[str]) -> torch.Tensor:
    """(n,) int64 labels, refusing fractions, booleans and out-of-range values."""
    tensor = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    tensor = tensor.reshape(-1).cpu()
    if tensor.dtype == torch.bool:
        raise TypeError("labels must be integer class indices; got booleans")
    if tensor.is_floating_point():
        if not bool(torch.isfinite(tensor).all()) or not bool((tensor == tensor.round()).all()):
            bad = tensor[~torch.isfinite(tensor) | (tensor != tensor.round())][:3].tolist()
            raise TypeError(f"labels must be integer class indices; got non-integer values {bad}")
    elif tensor.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"labels must be integer class indices; got dtype {tensor.dtype}")
    tensor = tensor.to(torch.long)
    if tensor.numel() != n:
        raise MemoryShapeError(f"add() got {n} ids and {tensor.numel()} labels")
    if n and (tensor.min() < 0 or tensor.max() >= num_classes):
        raise UnknownClassError(
            f"labels must lie in 0..{num_classes - 1} ({label_names}); got {int(tensor.min())}..{int(tensor.max())}"
        )
    return tensor


def squared_distances(queries: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B, N) squared L2 distances between queries (B, D) and values (N, D): the exact search's metric."""
    return queries.pow(2).sum(1, keepdim=True) - 2.0 * queries @ values.T + values.pow(2).sum(1).unsqueeze(0)


class Neighbours(NamedTuple):
    """What `SampleMemory.nearest` returns: for each query its k nearest memory entries, nearest first."""

    distances: torch.Tensor  # (B, k) squared L2 distances
    keys: torch.Tensor  # (B, k) int64 stable keys
    values: torch.Tensor  # (B, k, D) the entries' values
    labels: torch.Tensor  # (B, k) int64 their labels


class SampleMemory:
    """A deletable memory of training samples.

    Args:
        label_names: class names; labels are indices into this list.
        value_shape: shape of one value, e.g. `(512,)` for embeddings or `(3, 32, 32)` for images.
        dtype: value dtype (`torch.float32` for embeddings, `torch.uint8` for images).
        ledger_key: the `spm_hf.ledger.LedgerKey` this memory's forget events are hashed and signed with
            (default: the user's key, `LedgerKey.default()`, looked up when first needed).

    Values live in one tensor with spare capacity (like a vector); `values` is a view of the live rows.
    """

    def __init__(
        self,
        label_names: Sequence[str],
        value_shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        ledger_key: LedgerKey | None = None,
    ):
        if isinstance(label_names, (str, bytes)):
            raise TypeError(f"label_names must be a list of class names, not one string {label_names!r}")
        label_names = [str(n) for n in label_names]
        if not label_names:
            raise ValueError("label_names must name at least one class")
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names must be unique, got {label_names}")
        shape = tuple(int(s) for s in value_shape)
        if not shape or any(s <= 0 for s in shape):
            raise MemoryShapeError(f"value_shape must be positive sizes, e.g. (512,); got {tuple(value_shape)}")
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype (e.g. torch.float32); got {dtype!r}")
        self.label_names: list[str] = label_names
        self.value_shape: tuple[int, ...] = shape
        self.dtype = dtype
        self._key = ledger_key
        self.ledger: list[dict] = []
        self._lock = threading.RLock()
        self._forgotten_by_key: dict[str, set[str]] = {}  # key id (or "salt:<salt>") -> hashes
        self._event_keys: dict[str, LedgerKey] = {}  # ledger keys of other events, found in the key store
        self._next_key = 0
        self._init_storage(0, torch.device("cpu"))

    # ------------------------------------------------------------------ storage
    def _init_storage(self, capacity: int, device: torch.device) -> None:
        self._n = 0
        self._values = torch.zeros((capacity, *self.value_shape), dtype=self.dtype, device=device)
        self._labels = torch.zeros(capacity, dtype=torch.long, device=device)
        self._trained_on = torch.zeros(capacity, dtype=torch.bool, device=device)
        self._row_hashes = np.zeros((capacity, _LANES), dtype=np.uint64)
        # Per-row id, key and keyed id hash, moved with the row (object arrays: moves are pointer copies).
        self._ids = np.empty(capacity, dtype=object)
        self._keys = np.zeros(capacity, dtype=np.int64)
        self._id_hashes = np.empty(capacity, dtype=object)
        self._row_of: dict[str, int] | None = {}  # id -> row; None = stale, rebuilt on the next lookup
        self._row_of_key = np.full(0, -1, dtype=np.int64)  # key -> row, -1 for keys no longer in memory
        self._digest_lanes = np.zeros(_LANES, dtype=np.uint64)
        self._class_sums: torch.Tensor | None = None  # (C, D) float64, built lazily for 1-D values
        self._class_counts = torch.zeros(len(self.label_names), dtype=torch.long)
        self._listeners: list[MemoryListener] = []

    def _grow(self, needed: int) -> None:
        capacity = self._values.shape[0]
        if needed <= capacity:
            return
        new_capacity = max(needed, int(capacity * 1.5) + 16)
        dev = self._values.device
        n = self._n
        values = torch.zeros((new_capacity, *self.value_shape), dtype=self.dtype, device=dev)
        values[:n] = self._values[:n]
        labels = torch.zeros(new_capacity, dtype=torch.long, device=dev)
        labels[:n] = self._labels[:n]
        trained = torch.zeros(new_capacity, dtype=torch.bool, device=dev)
        trained[:n] = self._trained_on[:n]
        hashes = np.zeros((new_capacity, _LANES), dtype=np.uint64)
        hashes[:n] = self._row_hashes[:n]
        ids = np.empty(new_capacity, dtype=object)
        ids[:n] = self._ids[:n]
        keys = np.zeros(new_capacity, dtype=np.int64)
        keys[:n] = self._keys[:n]
        id_hashes = np.empty(new_capacity, dtype=object)
        id_hashes[:n] = self._id_hashes[:n]
        # Scrub the old buffers before letting them go: they hold the same rows, and a stale copy must
        # not outlive a later forget.
        self._values.zero_()
        self._ids, self._keys, self._id_hashes = ids, keys, id_hashes
        self._values, self._labels, self._trained_on, self._row_hashes = values, labels, trained, hashes

    @property
    def ledger_key(self) -> LedgerKey:
        """The key this memory hashes and signs with (the user's default key unless one was given)."""
        if self._key is None:
            try:
                self._key = LedgerKey.default()
            except OSError as e:  # a read-only home: the proofs live only as long as this process
                warnings.warn(f"could not store a ledger key ({e}); using a key that dies with this process",
                              stacklevel=2)
                self._key = LedgerKey.generate()
        return self._key

    @property
    def values(self) -> torch.Tensor:
        """(N, *value_shape) live values (a view: see the module docstring, point 8)."""
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
        with self._lock:
            return self._ids[: self._n].tolist()

    @property
    def keys(self) -> torch.Tensor:
        """(N,) int64 stable keys of the live samples, in row order (a copy)."""
        with self._lock:
            return torch.from_numpy(self._keys[: self._n].copy())

    def _row_index(self) -> dict[str, int]:
        if self._row_of is None:
            self._row_of = {sample_id: row for row, sample_id in enumerate(self._ids[: self._n].tolist())}
        return self._row_of

    def _rows_of_keys(self, keys: torch.Tensor | np.ndarray) -> np.ndarray:
        flat = np.asarray(keys.cpu() if isinstance(keys, torch.Tensor) else keys, dtype=np.int64)
        in_range = (flat >= 0) & (flat < len(self._row_of_key))
        rows = np.full(flat.shape, -1, dtype=np.int64)
        rows[in_range] = self._row_of_key[flat[in_range]]
        if (rows < 0).any():
            missing = np.unique(flat[rows < 0])[:5].tolist()
            raise UnknownKeyError(f"keys {missing} are not in memory (forgotten, or never issued)")
        return rows

    def gather(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(values (*keys.shape, *value_shape), labels keys.shape)` of the samples with these keys."""
        with self._lock:
            rows = torch.from_numpy(self._rows_of_keys(keys)).to(self.device)
            return self._values[rows], self._labels[rows]  # indexing with a tensor copies

    def ids_of(self, keys: torch.Tensor | Sequence[int]) -> list[str]:
        """The sample ids of these keys (flattened, in order)."""
        with self._lock:
            rows = self._rows_of_keys(torch.as_tensor(keys).reshape(-1))
            return self._ids[rows].tolist()

    def key_of(self, sample_id: str) -> int:
        """The stable key of a sample id in memory."""
        with self._lock:
            row = self._row_index().get(str(sample_id))
            if row is None:
                raise UnknownIdError(f"id {sample_id!r} is not in memory")
            return int(self._keys[row])

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def device(self) -> torch.device:
        return self._values.device

    def __len__(self) -> int:
        return self._n

    def __contains__(self, sample_id: str) -> bool:
        with self._lock:
            return sample_id in self._row_index()

    def __repr__(self) -> str:
        return (
            f"SampleMemory({self._n} samples, {self.num_classes} classes, value_shape={self.value_shape}, "
            f"dtype={self.dtype}, digest={self.digest()[:12]})"
        )

    def class_counts(self) -> dict[str, int]:
        """Label name -> number of samples currently in memory."""
        with self._lock:
            return dict(zip(self.label_names, self._class_counts.tolist()))

    def to(self, device: torch.device | str) -> SampleMemory:
        """Move the values (in place) to `device`; returns self."""
        device = torch.device(device)
        with self._lock:
            if device != self._values.device:
                self._values = self._values.to(device)
                self._labels = self._labels.to(device)
                self._trained_on = self._trained_on.to(device)
                for listener in self._listeners:
                    listener.on_device_change(self)
        return self

    def add_listener(self, listener: MemoryListener) -> None:
        """Register an aggregate kept in step with the memory (a `spm_hf.memory_index.MemoryListener`)."""
        if not isinstance(listener, MemoryListener):
            raise TypeError(f"listeners must subclass spm_hf.memory_index.MemoryListener; got {type(listener).__name__}")
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    def remove_listener(self, listener: MemoryListener) -> None:
        """Detach an aggregate registered with `add_listener` (no error if it is not attached)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def copy(self) -> SampleMemory:
        """An independent memory with the same rows, keys, ledger and key; listeners are not copied
        (aggregates such as a faiss index are rebuilt on the copy when first needed)."""
        with self._lock:
            other = SampleMemory(self.label_names, self.value_shape, self.dtype, ledger_key=self._key)
            n = self._n
            other._init_storage(0, self.device)
            other._n = n
            other._values = self._values[:n].clone()
            other._labels = self._labels[:n].clone()
            other._trained_on = self._trained_on[:n].clone()
            other._row_hashes = self._row_hashes[:n].copy()
            other._ids = self._ids[:n].copy()
            other._keys = self._keys[:n].copy()
            other._id_hashes = self._id_hashes[:n].copy()
            other._row_of = None
            other._row_of_key = self._row_of_key.copy()
            other._digest_lanes = self._digest_lanes.copy()
            other._class_sums = None if self._class_sums is None else self._class_sums.clone()
            other._class_counts = self._class_counts.clone()
            other._next_key = self._next_key
            other.ledger = json.loads(json.dumps(self.ledger))
            other._forgotten_by_key = {k: set(v) for k, v in self._forgotten_by_key.items()}
            other._event_keys = dict(self._event_keys)
            return other

    def __deepcopy__(self, memo) -> SampleMemory:
        return self.copy()

    # ------------------------------------------------------------------ hashing
    @staticmethod
    def _row_hash(sample_id: str, label: int, trained_on: bool, value: torch.Tensor) -> np.ndarray:
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
        two memories with the same rows in any order have the same digest. Keys and the ledger are not
        part of it (a memory built from the retained samples has the same digest); the saved file's seal
        covers them.
        """
        with self._lock:
            return self._digest_of(self._digest_lanes)

    def _digest_of(self, lanes: np.ndarray) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.label_names, list(self.value_shape), str(self.dtype)]).encode())
        h.update(lanes.tobytes())
        return h.hexdigest()

    def recompute_digest(self) -> str:
        """Digest recomputed from the values themselves (O(N)); `verify()` compares it to `digest()`."""
        with self._lock:
            lanes = np.zeros(_LANES, dtype=np.uint64)
            values, labels, trained = self.values, self.labels.tolist(), self.trained_on.tolist()
            for row, sample_id in enumerate(self._ids[: self._n].tolist()):
                lanes += self._row_hash(sample_id, labels[row], trained[row], values[row])
            return self._digest_of(lanes)

    def verify(self) -> None:
        """Raise `MemoryIntegrityError` if the stored rows no longer match the running digest and counts."""
        with self._lock:
            if self.recompute_digest() != self.digest():
                raise MemoryIntegrityError("the memory's values do not match its digest (modified in place?)")
            counts = torch.bincount(self.labels.cpu(), minlength=self.num_classes)
            ids = self._ids[: self._n].tolist()
            if not torch.equal(counts, self._class_counts) or any(i is None for i in ids) or len(set(ids)) != len(ids):
                raise MemoryIntegrityError("the memory's rows, ids and class counts disagree")
            rows = self._rows_of_keys(self._keys[: self._n])
            if not np.array_equal(rows, np.arange(self._n)):
                raise MemoryIntegrityError("the memory's key index disagrees with its rows")

    # ------------------------------------------------------------------ class resolution
    def class_index(self, cls: str | int) -> int:
        """Resolve a class name or index; unknown ones raise `UnknownClassError` listing valid names."""
        if isinstance(cls, (bool, np.bool_)):
            raise UnknownClassError(f"class {cls!r} is neither a name nor an index; valid: {self.label_names}")
        if isinstance(cls, torch.Tensor) and cls.dim() == 0 and not cls.is_floating_point():
            cls = int(cls)
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
        raise UnknownClassError(
            f"class {cls!r} ({type(cls).__name__}) is neither a name nor an integer index; valid: {self.label_names}"
        )

    def _class_list(self, classes) -> list[int]:
        if isinstance(classes, (str, int, np.integer)) and not isinstance(classes, (bool, np.bool_)):
            classes = [classes]
        elif isinstance(classes, torch.Tensor):
            if classes.is_floating_point():
                raise UnknownClassError(f"classes must be names or integer indices; got a {classes.dtype} tensor")
            classes = classes.reshape(-1).tolist()
        elif isinstance(classes, (bytes, bytearray, float)) or not isinstance(classes, Iterable):
            raise UnknownClassError(
                f"classes must be a list of class names or integer indices; got {classes!r} "
                f"({type(classes).__name__}); valid: {self.label_names}"
            )
        return sorted({self.class_index(c) for c in classes})

    # ------------------------------------------------------------------ add
    def add(
        self,
        ids: Sequence[str],
        labels: Sequence[int] | torch.Tensor,
        values: torch.Tensor,
        trained_on: bool | Sequence[bool] | torch.Tensor = True,
        allow_reingest: bool = False,
        _keys: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Append samples; returns their (n,) int64 keys. Validates everything first: on any error nothing
        is added (no row, no id, no aggregate changes).

        Args:
            ids: unique string ids, none already in memory.
            labels: (n,) integer class indices (fractions such as 1.7 are refused, not rounded).
            values: (n, *value_shape) values (cast to the memory's dtype); NaN / Inf / values too large for
                float32 are refused.
            trained_on: whether the parameters were trained on these samples (one flag or one per sample).
            allow_reingest: accept ids that the ledger shows as forgotten (a deliberate re-ingestion).
        """
        ids = _as_id_list(ids)
        n = len(ids)
        if not isinstance(values, torch.Tensor):
            values = torch.as_tensor(np.asarray(values))
        if values.dim() == 0 or values.shape[0] != n:
            raise MemoryShapeError(f"add() got {n} ids and values of shape {tuple(values.shape)}")
        if tuple(values.shape[1:]) != self.value_shape:
            raise MemoryShapeError(
                f"values of shape {tuple(values.shape[1:])} do not fit this memory's value_shape {self.value_shape}"
            )
        if values.is_floating_point() and self.dtype == torch.uint8:
            raise MemoryShapeError("this memory stores uint8 images; got floating-point values")
        if values.is_complex() or values.dtype == torch.bool:
            raise MemoryShapeError(f"values must be real numbers; got dtype {values.dtype}")
        labels = _as_labels(labels, n, self.num_classes, self.label_names)
        if isinstance(trained_on, (bool, np.bool_)):
            flags = torch.full((n,), bool(trained_on), dtype=torch.bool)
        else:
            flags = torch.as_tensor(trained_on).reshape(-1)
            if flags.dtype != torch.bool:
                if not bool(((flags == 0) | (flags == 1)).all()):
                    raise TypeError("trained_on must be booleans (or 0/1)")
                flags = flags.to(torch.bool)
            if flags.numel() != n:
                raise MemoryShapeError(f"trained_on has {flags.numel()} flags for {n} ids")
        cast = values.detach().to(dtype=self.dtype)
        if cast.is_floating_point() and n:
            finite = torch.isfinite(cast).reshape(n, -1).all(1)
            if not bool(finite.all()):
                bad = [ids[i] for i in torch.nonzero(~finite).flatten()[:3].tolist()]
                raise MemoryShapeError(
                    f"values must be finite; {int((~finite).sum())} samples hold NaN/Inf or overflow "
                    f"{self.dtype} (e.g. {bad})"
                )
        elif not values.is_floating_point() and self.dtype == torch.uint8 and n:
            if int(values.min()) < 0 or int(values.max()) > 255:
                raise MemoryShapeError(f"uint8 images must lie in 0..255; got {int(values.min())}..{int(values.max())}")
        if len(set(ids)) != n:
            seen, dup = set(), []
            for i in ids:
                if i in seen:
                    dup.append(i)
                seen.add(i)
            raise ValueError(f"duplicate ids in add(): {dup[:5]}")
        with self._lock:
            row_of = self._row_index()
            clash = [i for i in ids if i in row_of]
            if clash:
                raise ValueError(f"{len(clash)} ids are already in memory, e.g. {clash[:5]}")
            key = self.ledger_key
            id_hashes = [key.hash_id(i) for i in ids]
            if not allow_reingest and self.ledger:
                found, missing = self._ledger_lookup(ids, id_hashes)
                if found:
                    again = [i for i in ids if i in found]
                    raise ReingestionError(
                        f"{len(again)} ids were forgotten earlier (the ledger holds their hashes), e.g. "
                        f"{again[:3]}; pass allow_reingest=True to add them back deliberately"
                    )
                if missing:
                    raise LedgerKeyError(
                        f"the ledger holds forget events hashed under keys {missing}, which this user does not "
                        "hold, so re-ingestion of a forgotten id cannot be ruled out; set SPM_HF_LEDGER_KEY to "
                        "that key, or pass allow_reingest=True"
                    )
            if _keys is None:
                keys = np.arange(self._next_key, self._next_key + n, dtype=np.int64)
            else:
                keys = np.asarray(_keys, dtype=np.int64).reshape(-1)
                if len(keys) != n or (n and keys.min() < 0) or len(np.unique(keys)) != n:
                    raise MemoryIntegrityError("stored keys must be n distinct non-negative integers")
                if n and keys.max() < len(self._row_of_key) and (self._row_of_key[keys[keys < len(self._row_of_key)]] >= 0).any():
                    raise MemoryIntegrityError("stored keys collide with keys in memory")
            cpu_values = cast.cpu()
            labels_list, flags_list = labels.tolist(), flags.tolist()
            row_hashes = np.stack(
                [self._row_hash(ids[k], labels_list[k], flags_list[k], cpu_values[k]) for k in range(n)]
            ) if n else np.zeros((0, _LANES), dtype=np.uint64)
            if n == 0:
                return torch.zeros(0, dtype=torch.long)

            # Everything is validated and computed: from here on nothing can fail half-way.
            start = self._n
            self._grow(start + n)
            self._values[start : start + n] = cast.to(self.device)
            self._labels[start : start + n] = labels.to(self.device)
            self._trained_on[start : start + n] = flags.to(self.device)
            self._row_hashes[start : start + n] = row_hashes
            self._ids[start : start + n] = ids
            self._id_hashes[start : start + n] = id_hashes
            self._keys[start : start + n] = keys
            top = int(keys.max()) + 1
            if top > len(self._row_of_key):
                grown = np.full(max(top, int(len(self._row_of_key) * 1.5) + 16), -1, dtype=np.int64)
                grown[: len(self._row_of_key)] = self._row_of_key
                self._row_of_key = grown
            self._row_of_key[keys] = np.arange(start, start + n)
            self._next_key = max(self._next_key, top)
            for k, sample_id in enumerate(ids):
                row_of[sample_id] = start + k
            self._digest_lanes += row_hashes.sum(axis=0, dtype=np.uint64)
            self._n += n
            self._class_counts += torch.bincount(labels, minlength=self.num_classes)
            if self._class_sums is not None:
                self._class_sums.index_add_(0, labels, cpu_values.reshape(n, -1).double())
            for listener in self._listeners:
                listener.on_add(self, keys, self._values[start : start + n])
            return torch.from_numpy(keys.copy())

    # ------------------------------------------------------------------ aggregates
    def class_sums(self) -> torch.Tensor:
        """(C, D) float64 per-class sums of the values (flattened), downdated exactly on forget."""
        with self._lock:
            if self._class_sums is None:
                flat = self.values.detach().cpu().reshape(self._n, -1).double()
                sums = torch.zeros(self.num_classes, flat.shape[1], dtype=torch.float64)
                sums.index_add_(0, self.labels.cpu(), flat)
                self._class_sums = sums
            return self._class_sums

    def class_counts_tensor(self) -> torch.Tensor:
        """(C,) int64 number of samples per class (a copy)."""
        with self._lock:
            return self._class_counts.clone()

    def class_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(means (C, D) float32, present (C,) bool)`; absent classes have a zero mean."""
        with self._lock:
            counts = self._class_counts
            present = counts > 0
            means = self.class_sums() / counts.clamp_min(1).unsqueeze(1).double()
            return means.float(), present.clone()

    # ------------------------------------------------------------------ forget
    def resolve(self, classes: Iterable[str | int] | None = None, *, ids: Iterable[str] | None = None):
        """Rows selected by a forget request, validated. Returns `(rows (sorted), already_forgotten)`.

        Raises `UnknownClassError` / `UnknownIdError` naming the offending entries, and
        `ForgetRequestError` if the request would leave the memory empty. Changes nothing.
        """
        if ids is None and classes is None:
            raise ForgetRequestError("forget() needs ids=[...] and/or classes=[...] (names or indices)")
        class_idx = self._class_list(classes) if classes is not None else []
        id_list = _as_id_list(ids) if ids is not None else []
        with self._lock:
            # numpy on the CPU: these are small serial operations, and torch's thread pool stalls them when
            # the cores are busy.
            mask = np.zeros(self._n, dtype=bool)
            already = 0
            if class_idx:
                labels = self.labels.cpu().numpy()
                for c in class_idx:
                    mask |= labels == c
            if id_list:
                row_of = self._row_index()
                id_rows = [row_of[i] for i in id_list if i in row_of]
                absent = [i for i in id_list if i not in row_of]
                # one ledger lookup for all absent ids: an id forgotten earlier is a no-op, not an error
                forgotten = self._ledger_lookup(absent)[0] if absent else set()
                already = sum(i in forgotten for i in absent)
                unknown = [i for i in absent if i not in forgotten]
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
        self, classes: Iterable[str | int] | str | int | None = None, *, ids: Iterable[str] | None = None
    ) -> ForgetReceipt:
        """Delete whole classes (names or indices) and/or samples by id. See the module docstring.

        `forget(["cat"])` and `forget(classes=["cat"])` forget classes; `forget(ids=[...])` forgets samples.
        """
        with self._lock:
            start = time.perf_counter()
            digest_before = self.digest()
            rows, already = self.resolve(classes, ids=ids)
            key = self.ledger_key
            per_class = {name: 0 for name in self.label_names}
            hashes: list[str] = []
            flags = np.zeros(0, dtype=bool)
            if len(rows):
                hashes, flags, per_class = self._delete_rows(rows)
                self._forgotten_by_key.setdefault(key.key_id, set()).update(hashes)
            digest_after = self.digest()
            seconds = time.perf_counter() - start
            receipt = ForgetReceipt(
                removed_per_class=per_class,
                removed_hashes=hashes,
                removed_trained_on=flags,
                digest_before=digest_before,
                digest_after=digest_after,
                seconds=seconds,
                key_id=key.key_id,
                already_forgotten=already,
                _key=key,
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
                        "key_id": key.key_id,
                        # row order here; `save` writes them sorted (sorting 5k hashes costs ~1 ms, a fifth
                        # of a whole-class forget), so the file reveals nothing of the rows' order
                        "id_hashes": hashes,
                    }
                )
            return receipt

    def _delete_rows(self, rows: np.ndarray) -> tuple[list[str], np.ndarray, dict[str, int]]:
        """Remove `rows` (sorted, unique) in O(len(rows)): fill holes from the tail, zero the tail.

        Returns the removed rows' keyed id hashes, their `trained_on` flags and counts per class.
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
        removed_keys = self._keys[rows].copy()

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
        self._row_of_key[removed_keys] = -1
        if len(holes):
            for table in (values, labels, trained):
                table[index(holes)] = table[index(movers)]
            for table in (self._row_hashes, self._ids, self._id_hashes, self._keys):
                table[holes] = table[movers]
            self._row_of_key[self._keys[holes]] = holes
        # Scrub the vacated tail: no storage of this object keeps a forgotten value or id.
        values[new_n:n] = 0
        labels[new_n:n] = 0
        trained[new_n:n] = False
        self._row_hashes[new_n:n] = 0
        self._ids[new_n:n] = None
        self._id_hashes[new_n:n] = None
        self._keys[new_n:n] = 0
        self._n = new_n
        for listener in self._listeners:
            listener.on_delete(self, removed_keys)
        return hashes, removed_flags, per_class

    def _event_key(self, key_id: str) -> LedgerKey | None:
        """The key a ledger event was hashed under, if this user holds it (looked up once, then kept)."""
        if self._key is not None and self._key.key_id == key_id:
            return self._key
        if key_id not in self._event_keys:
            key = LedgerKey.find(key_id)
            if key is None:
                return None  # not cached: the key may be installed later in this process
            self._event_keys[key_id] = key
        return self._event_keys[key_id]

    def _ledger_lookup(self, ids: list[str], current_hashes: list[str] | None = None) -> tuple[set[str], list[str]]:
        """`(the ids of ids the ledger shows as forgotten, the key ids of events whose key this user does not
        hold)`: for those events the answer cannot be known. `current_hashes` are the ids' hashes under this
        memory's own key, when the caller has them already."""
        found: set[str] = set()
        missing: list[str] = []
        for key_id, hashes in self._forgotten_by_key.items():
            if not hashes:
                continue
            if key_id.startswith("salt:"):  # a format-1 event: salted SHA-256
                salt = key_id[5:]
                found.update(i for i in ids if _legacy_hash_id(i, salt) in hashes)
                continue
            key = self._event_key(key_id)
            if key is None:
                missing.append(key_id)
            elif current_hashes is not None and key is self._key:
                found.update(i for i, h in zip(ids, current_hashes) if h in hashes)
            else:
                found.update(i for i in ids if key.hash_id(i) in hashes)
        return found, missing

    def is_forgotten(self, sample_id: str) -> bool:
        """True if the ledger shows `sample_id` as forgotten. Needs the ledger key the event was hashed
        under (`spm_hf.ledger`): raises `LedgerKeyError` when an event's key is missing and the id was not
        found under the keys at hand."""
        sample_id = _as_id_list([sample_id], "sample_id")[0]
        with self._lock:
            found, missing = self._ledger_lookup([sample_id])
            if found:
                return True
            if missing:
                raise LedgerKeyError(
                    f"cannot tell: forget events were hashed under keys {missing} that this user does not hold"
                )
            return False

    # ------------------------------------------------------------------ persistence
    def _saved_meta(self, weights_sha: str) -> dict:
        key = self.ledger_key
        meta = {
            "format_version": MEMORY_FORMAT_VERSION,
            "num_items": self._n,
            "label_names": self.label_names,
            "value_shape": list(self.value_shape),
            "dtype": str(self.dtype).replace("torch.", ""),
            "ids": self._ids[: self._n].tolist(),
            "next_key": int(self._next_key),
            "digest": self.digest(),
            "files": {MEMORY_WEIGHTS_NAME: {"sha256": weights_sha}},
            "ledger": [{**event, "id_hashes": sorted(event.get("id_hashes", []))} for event in self.ledger],
            "signature_key_id": key.key_id,
        }
        meta["seal"] = seal(meta)
        meta["signature"] = key.sign(seal_message(meta))
        return meta

    def save(self, directory: str | os.PathLike) -> None:
        """Write `sample_memory.safetensors` + `sample_memory.json` as one atomic step (other files in
        `directory` are kept).

        The JSON names the weights file's SHA-256 and is sealed and signed (module docstring, point 5).
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        with self._lock:
            tensors = {
                "values": self.values.detach().cpu().contiguous().clone(),
                "labels": self.labels.cpu().clone(),
                "trained_on": self.trained_on.cpu().to(torch.uint8).clone(),
                "keys": torch.from_numpy(self._keys[: self._n].copy()),
            }
            # Both files change as one: they are written into a staging folder that replaces `directory`
            # in one step (inside a model's own atomic save, straight into its staging folder).
            with atomic_directory(directory, owned=(MEMORY_WEIGHTS_NAME, MEMORY_CONFIG_NAME)) as staging:
                weights_path = os.path.join(staging, MEMORY_WEIGHTS_NAME)
                save_file(tensors, weights_path)
                meta = self._saved_meta(_sha256_file(weights_path))
                write_json(os.path.join(staging, MEMORY_CONFIG_NAME), meta)

    @classmethod
    def load(cls, directory: str | os.PathLike, verify: bool = True, ledger_key: LedgerKey | None = None) -> SampleMemory:
        """Load a memory written by `save`; checks the file hash, the seal, the signature where the key is at
        hand and (with `verify`) the content digest."""
        directory = os.fspath(directory)
        with reading_directory(directory):  # never half of one save and half of the next
            if not os.path.isdir(directory):
                raise FileNotFoundError(f"no sample memory folder {directory}")
            return cls.from_files(
                os.path.join(directory, MEMORY_CONFIG_NAME), os.path.join(directory, MEMORY_WEIGHTS_NAME), verify,
                ledger_key=ledger_key,
            )

    @classmethod
    def from_files(cls, config_path: str, weights_path: str, verify: bool = True,
                   ledger_key: LedgerKey | None = None) -> SampleMemory:
        for path in (config_path, weights_path):
            if not os.path.exists(path):
                raise FileNotFoundError(f"sample memory file missing: {path}")
        name = os.path.basename(config_path)
        try:
            with open(config_path, encoding="utf-8") as f:
                meta = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MemoryIntegrityError(f"{config_path} is not valid JSON: {e}") from e
        if not isinstance(meta, dict):
            raise MemoryIntegrityError(f"{config_path} is not a sample-memory description (not a JSON object)")
        version = meta.get("format_version")
        if version not in _READABLE_FORMATS:
            raise MemoryIntegrityError(f"{config_path}: unsupported sample-memory format {version!r}")
        required = ["num_items", "label_names", "value_shape", "dtype", "ids", "digest", "files"]
        required += ["seal", "signature", "signature_key_id", "next_key"] if version >= 2 else ["salt"]
        missing = [k for k in required if k not in meta]
        if missing:
            raise MemoryIntegrityError(f"{config_path} lacks the fields {missing}: not a complete sample memory")
        if version >= 2 and seal(meta) != meta["seal"]:
            raise MemoryIntegrityError(
                f"{config_path} was modified after it was saved: its seal does not match its content "
                "(ids, label names, ledger or file hashes were edited)"
            )
        try:
            expected_sha = meta["files"][MEMORY_WEIGHTS_NAME]["sha256"]
        except (KeyError, TypeError):
            raise MemoryIntegrityError(f"{config_path} does not record the sha256 of {MEMORY_WEIGHTS_NAME}") from None
        actual_sha = _sha256_file(weights_path)
        if actual_sha != expected_sha:
            raise MemoryIntegrityError(
                f"{weights_path} is corrupted or was replaced: sha256 {actual_sha[:16]}… does not match "
                f"{expected_sha[:16]}… recorded in {name}"
            )
        try:
            tensors = load_file(weights_path)
        except SafetensorError as e:
            raise MemoryIntegrityError(f"{weights_path} cannot be read as safetensors: {e}") from e
        dtype = getattr(torch, str(meta["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise MemoryIntegrityError(f"{config_path}: unknown dtype {meta['dtype']!r}")
        if version >= 2:
            signer = ledger_key if ledger_key is not None and ledger_key.key_id == meta["signature_key_id"] else \
                LedgerKey.find(meta["signature_key_id"])
            if signer is not None and signer.sign(seal_message(meta)) != meta["signature"]:
                raise MemoryIntegrityError(
                    f"{config_path}: the signature under ledger key {meta['signature_key_id']} does not match: "
                    "the file was rewritten by someone without that key"
                )
        memory = cls(meta["label_names"], meta["value_shape"], dtype=dtype, ledger_key=ledger_key)
        ids = meta["ids"]
        if not isinstance(ids, list) or len(ids) != meta["num_items"] or tensors["values"].shape[0] != len(ids):
            raise MemoryIntegrityError(
                f"{config_path} lists {len(ids) if isinstance(ids, list) else '?'} ids for "
                f"{tensors['values'].shape[0]} rows in {weights_path}"
            )
        keys = tensors["keys"].numpy() if "keys" in tensors else np.arange(len(ids), dtype=np.int64)
        memory.add(ids, tensors["labels"], tensors["values"], tensors["trained_on"].bool(), allow_reingest=True,
                   _keys=keys)
        memory._next_key = max(memory._next_key, int(meta.get("next_key", len(ids))))
        memory.ledger = list(meta.get("ledger", []))
        for event in memory.ledger:
            key_id = event.get("key_id") or f"salt:{meta.get('salt', '')}"
            memory._forgotten_by_key.setdefault(key_id, set()).update(event.get("id_hashes", []))
        if verify and memory.digest() != meta["digest"]:
            raise MemoryIntegrityError(
                f"{weights_path}: content digest {memory.digest()[:16]}… does not match {meta['digest'][:16]}… "
                f"recorded in {name}"
            )
        return memory

    def ledger_summary(self) -> dict:
        """Counts, dates and digests of the forget events; never ids or id hashes."""
        with self._lock:
            return {
                "num_events": len(self.ledger),
                "num_forgotten": sum(e["num_removed"] for e in self.ledger),
                "events": [{k: v for k, v in e.items() if k != "id_hashes"} for e in self.ledger],
            }

    # ------------------------------------------------------------------ neighbours
    def knn(self, queries: torch.Tensor, k: int, backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
        """Exact k nearest entries by squared L2 distance. Returns `(distances (B, k'), keys (B, k'))`,
        k' = min(k, N), nearest first; keys are the samples' stable keys (`gather` reads their values).
        `backend` is `"torch"` or `"faiss"` (extra `index`)."""
        neighbours = self.nearest(queries, k, backend=backend, with_values=False)
        return neighbours.distances, neighbours.keys

    @contextlib.contextmanager
    def reading(self):
        """Hold the memory's lock across several reads (`with memory.reading(): ...`), so that a forget or an
        add in another thread lands before all of them or after all of them, never in between."""
        with self._lock:
            yield self

    def nearest(self, queries: torch.Tensor, k: int, backend: str = "torch", with_values: bool = True) -> Neighbours:
        """The k nearest entries of each query with their values and labels, read under one lock (so a
        concurrent forget cannot remove an entry between the search and the read)."""
        if len(self.value_shape) != 1:
            raise MemoryShapeError("nearest() needs a memory of 1-D values (embeddings)")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}")
        if backend not in ("torch", "faiss"):
            raise ValueError(f"unknown knn backend {backend!r}; use 'torch' or 'faiss'")
        if queries.dim() != 2 or queries.shape[1] != self.value_shape[0]:
            raise MemoryShapeError(f"queries must be (B, {self.value_shape[0]}); got {tuple(queries.shape)}")
        with self._lock:
            k = min(int(k), self._n)
            if backend == "torch":
                d2 = squared_distances(queries, self.values.to(queries.dtype))
                dist, rows = torch.topk(d2, k, dim=1, largest=False, sorted=True)
                # keys live in a numpy array: one copy of the (B, k) rows to the CPU and the keys back
                keys = torch.from_numpy(self._keys[rows.cpu().numpy()]).to(queries.device)
                rows = rows.to(self.device)
            else:
                index = self._faiss_index()
                dist_np, keys_np = index.search(queries.detach().float().cpu().contiguous().numpy(), k)
                dist, keys = torch.from_numpy(dist_np).to(queries.device), torch.from_numpy(keys_np).to(queries.device)
                rows = torch.from_numpy(self._rows_of_keys(keys_np)).to(self.device)
            if not with_values:
                return Neighbours(dist, keys, None, None)
            # advanced indexing copies: the result does not change when a later forget moves rows
            return Neighbours(dist, keys, self._values[rows], self._labels[rows])

    def _faiss_index(self) -> FaissNeighborIndex:
        for listener in self._listeners:
            if isinstance(listener, FaissNeighborIndex):
                return listener
        index = FaissNeighborIndex(self)
        self.add_listener(index)
        return index


def hash_id(sample_id: str, key: LedgerKey) -> str:
    """The ledger's keyed hash of a sample id (HMAC-SHA256 under `key`)."""
    return key.hash_id(str(sample_id))


__all__ = [
    "FaissNeighborIndex",
    "ForgetReceipt",
    "ForgetRequestError",
    "LedgerKey",
    "LedgerKeyError",
    "MEMORY_CONFIG_NAME",
    "MEMORY_ONLY",
    "MEMORY_WEIGHTS_NAME",
    "MemoryIntegrityError",
    "MemoryListener",
    "MemoryShapeError",
    "Neighbours",
    "ReingestionError",
    "SampleMemory",
    "TRAINED_ON",
    "UnknownClassError",
    "UnknownIdError",
    "UnknownKeyError",
    "hash_id",
]
