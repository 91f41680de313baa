"""What listens to a `SampleMemory`: the listener protocol and the exact faiss neighbour index.

Aggregates that must stay in step with the memory (a faiss index, the generator's support-feature cache)
subclass `MemoryListener` and are registered with `SampleMemory.add_listener`. They are told about samples by
their stable integer *key*, never by row: rows move on every forget (kept rows fill the holes), keys do not,
so an index keyed by them needs only `remove_ids` on a forget.
"""

from __future__ import annotations

import numpy as np
import torch


class MemoryListener:
    """Base class of the aggregates kept in step with a `SampleMemory`. Every hook defaults to a no-op.

    Hooks run while the memory holds its lock, after the change is complete.
    """

    def on_add(self, memory, keys: np.ndarray, values: torch.Tensor) -> None:
        """`keys` (n,) int64 were added with `values` (n, *value_shape) (on the memory's device)."""

    def on_delete(self, memory, keys: np.ndarray) -> None:
        """`keys` (k,) int64 were removed."""

    def on_device_change(self, memory) -> None:
        """The memory's tensors moved to `memory.device`."""


class FaissNeighborIndex(MemoryListener):
    """An exact faiss index (`IndexIDMap2(IndexFlatL2)`) over a memory's values, keyed by the samples'
    stable keys: an add is `add_with_ids`, a forget is `remove_ids` of the removed keys only, and a search
    returns keys. Requires the `index` extra (faiss-cpu), imported when the first index is built."""

    def __init__(self, memory):
        try:
            import faiss  # noqa: PLC0415  (optional dependency, the `index` extra)
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("the faiss backend needs faiss-cpu: pip install 'spm_hf[index]'") from e
        self._faiss = faiss
        dim = int(np.prod(memory.value_shape))
        self.index = faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
        if len(memory):
            self.on_add(memory, memory.keys.numpy(), memory.values)

    def on_add(self, memory, keys: np.ndarray, values: torch.Tensor) -> None:
        vectors = values.detach().float().cpu().reshape(len(keys), -1).numpy()
        self.index.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(keys, dtype=np.int64))

    def on_delete(self, memory, keys: np.ndarray) -> None:
        self.index.remove_ids(self._faiss.IDSelectorBatch(np.ascontiguousarray(keys, dtype=np.int64)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`(squared distances (B, k), keys (B, k))`, nearest first."""
        return self.index.search(queries, k)

    @property
    def ntotal(self) -> int:
        return self.index.ntotal


__all__ = ["FaissNeighborIndex", "MemoryListener"]
