"""`SupportFeatureCache`: per-sample support features, computed once and kept in step with the memory.

Because `SPMUNet2DModel` encodes a support image clean, at a fixed timestep and with the null class
embedding, a support item's projected keys/values depend only on its image and the UNet weights: not on the
query, its timestep, its guidance branch or its label. So:

* within one `SPMDiffusionPipeline.__call__`, the support path runs **at most once** (on the items not yet
  cached), then every denoising step, both guidance branches and every sample read the same features;
* across calls, features of items already seen are reused (a warm cache runs no support path at all).

The cache is keyed by sample id and invalidated as a whole when the weights change: a fingerprint of the
UNet (identity, device, dtype, train/eval mode and a checksum of every parameter, computed once per call)
is compared before use. It listens to the memory (`SampleMemory.add_listener`): a forget drops the
features of the removed ids at once, so no tensor of the pipeline keeps a forgotten sample's features
(forgetting contract, point 3). It holds at most `max_items` items (least recently used dropped first).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from ..memory import SampleMemory
from ..memory_index import MemoryListener


class SupportFeatureCache(MemoryListener):
    """Support keys/values per memory sample id. See the module docstring.

    Args:
        max_items: most items kept (LRU eviction); the largest support of one call is always served.
        encode_batch_size: support images encoded per forward of the support path.
    """

    def __init__(self, max_items: int = 16384, encode_batch_size: int = 256):
        self.max_items = max_items
        self.encode_batch_size = encode_batch_size
        self._entries: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._fingerprint = None
        self._memory: SampleMemory | None = None
        self.stats = {"hits": 0, "misses": 0, "support_path_calls": 0}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._entries

    @property
    def cached_ids(self) -> list[str]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._fingerprint = None

    # ------------------------------------------------------------------ memory listener
    def _attach(self, memory: SampleMemory) -> None:
        if self._memory is memory:
            return
        if self._memory is not None:
            self._memory.remove_listener(self)
        self.clear()
        self._memory = memory
        memory.add_listener(self)

    def on_delete(self, memory: SampleMemory, keys) -> None:
        # Entries are keyed by sample id; drop every one whose sample is gone, so no cached feature of a
        # forgotten image outlives the forget.
        for sample_id in [i for i in self._entries if i not in memory]:
            del self._entries[sample_id]

    # ------------------------------------------------------------------ weights fingerprint
    @staticmethod
    def fingerprint(unet: torch.nn.Module) -> tuple:
        with torch.no_grad():
            params = [p for p in unet.parameters()]
            sums = torch.stack([p.float().sum() for p in params])
            squares = torch.stack([p.float().pow(2).sum() for p in params])
            checksum = torch.cat([sums, squares]).cpu().double().numpy().tobytes()
        first = params[0]
        return (id(unet), str(first.device), str(first.dtype), unet.training, checksum)

    # ------------------------------------------------------------------ lookup
    def get(self, unet, memory: SampleMemory, rows: torch.Tensor):
        """`(keys, values, embeddings)` of the memory rows `rows`, encoding only the uncached items: keys and
        values `(S, P, D)`, exemplar embeddings `(S, E)` or None for a UNet without them."""
        self._attach(memory)
        fp = self.fingerprint(unet)
        if fp != self._fingerprint:
            self._entries.clear()
            self._fingerprint = fp
        rows_list = [int(r) for r in rows.tolist()]
        all_ids = memory.ids  # one O(N) copy of the ids per call (not per step)
        ids = [all_ids[r] for r in rows_list]
        missing_pos = [k for k, i in enumerate(ids) if i not in self._entries]
        # Duplicate rows (an item serving two label groups) are encoded once.
        missing_rows, seen = [], set()
        for k in missing_pos:
            if ids[k] not in seen:
                seen.add(ids[k])
                missing_rows.append(rows_list[k])
        self.stats["hits"] += len(ids) - len(missing_pos)
        self.stats["misses"] += len(missing_rows)
        if missing_rows:
            self.stats["support_path_calls"] += 1
            for start in range(0, len(missing_rows), self.encode_batch_size):
                chunk = missing_rows[start : start + self.encode_batch_size]
                images = images_to_model_input(memory.values[torch.tensor(chunk, device=memory.device)], unet)
                feats = unet.encode_support(images, torch.zeros(len(chunk), dtype=torch.long))
                for k, row in enumerate(chunk):
                    embedding = None if feats.embeddings is None else feats.embeddings[k].clone()
                    self._entries[all_ids[row]] = (feats.keys[k].clone(), feats.values[k].clone(), embedding)
        if not ids:
            p, d = unet.num_patches, unet.config.relation_dim
            z = torch.zeros(0, p, d, device=unet.device, dtype=unet.dtype)
            return z, z, None
        keys = torch.stack([self._entries[i][0] for i in ids])
        values = torch.stack([self._entries[i][1] for i in ids])
        embeddings = None if self._entries[ids[0]][2] is None else torch.stack([self._entries[i][2] for i in ids])
        for i in ids:
            self._entries.move_to_end(i)
        while len(self._entries) > max(self.max_items, len(set(ids))):
            self._entries.popitem(last=False)
        return keys, values, embeddings


def images_to_model_input(images: torch.Tensor, unet) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1] on the UNet's device and dtype."""
    return images.to(device=unet.device, dtype=unet.dtype) / 127.5 - 1.0
