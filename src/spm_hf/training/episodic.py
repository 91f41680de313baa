"""Episodic support sampling, shared by the classifier and the generator (docs/method.md, "Episodic training").

Per batch of queries:
1. a support set balanced over the batch's labels: each label present gets `support_size // |U|`
   samples (the first `support_size % |U|` labels, in sorted order, one more), drawn from the training
   samples of that label **excluding the batch's own samples**, without replacement when there are
   enough candidates and with replacement otherwise (a label with no candidates gets none);
2. a random label permutation, applied to query and support labels alike (switchable), so no parameter
   can bind to a fixed class identity;
3. everything drawn from one `torch.Generator`, so a seed fixes every episode.

`EpisodicCollator` turns a list of dataset indices into a model batch for `transformers.Trainer`; the
images live in one uint8 tensor decoded once (see `spm_hf.data.as_uint8_tensors`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Episode:
    """One batch's episode: support indices into the training set and the label permutation."""

    support_indices: torch.Tensor  # (S,) int64
    permutation: torch.Tensor  # (num_classes,) int64; new_label = permutation[old_label]


class EpisodicSupportSampler:
    """Draws balanced, self-excluding supports and label permutations.

    Args:
        labels: (N,) int64 labels of the training set (index i is sample i).
        num_classes: number of classes.
        support_size: support samples per batch (0: no separate support).
        permute_labels: draw a random label permutation per batch.
        seed: seed of the sampler's generator.
    """

    def __init__(
        self, labels: torch.Tensor, num_classes: int, support_size: int, permute_labels: bool = True, seed: int = 0
    ):
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.num_classes = num_classes
        self.support_size = support_size
        self.permute_labels = permute_labels
        self.generator = torch.Generator().manual_seed(seed)
        self.indices_by_label = [torch.nonzero(self.labels == c).flatten() for c in range(num_classes)]

    def sample(self, batch_indices: torch.Tensor) -> Episode:
        batch_indices = torch.as_tensor(batch_indices, dtype=torch.long)
        batch_labels = self.labels[batch_indices]
        unique = torch.unique(batch_labels).tolist()  # sorted
        chosen = []
        if self.support_size > 0 and unique:
            per_label, extra = divmod(self.support_size, len(unique))
            for rank, label in enumerate(unique):
                want = per_label + (1 if rank < extra else 0)
                pool = self.indices_by_label[label]
                candidates = pool[~torch.isin(pool, batch_indices)]
                if want == 0 or candidates.numel() == 0:
                    continue
                if candidates.numel() >= want:
                    pick = torch.randperm(candidates.numel(), generator=self.generator)[:want]
                else:
                    pick = torch.randint(candidates.numel(), (want,), generator=self.generator)
                chosen.append(candidates[pick])
        support = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)
        if self.permute_labels:
            permutation = torch.randperm(self.num_classes, generator=self.generator)
        else:
            permutation = torch.arange(self.num_classes)
        return Episode(support, permutation)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """The paper's CIFAR augmentation on a uint8 or float batch (B, C, H, W): RandomCrop(H, pad 4) + HFlip."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    rows = (dy.view(-1, 1) + torch.arange(height)).view(batch, 1, height, 1)
    cols = (dx.view(-1, 1) + torch.arange(width)).view(batch, 1, 1, width)
    flip = torch.rand(batch, generator=generator) < 0.5
    cols = torch.where(flip.view(-1, 1, 1, 1), cols.flip(-1), cols)
    batch_idx = torch.arange(batch).view(-1, 1, 1, 1)
    channel_idx = torch.arange(images.shape[1]).view(1, -1, 1, 1)
    return padded[batch_idx, channel_idx, rows, cols]


class IndexDataset(torch.utils.data.Dataset):
    """A dataset of indices: the collator fetches the images, so the Trainer's sampler only shuffles ints."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"index": i}


class EpisodicCollator:
    """Builds SPM training batches for `transformers.Trainer` from a list of `{"index": i}` items.

    Args:
        images: (N, C, H, W) uint8 training images.
        labels: (N,) int64 labels.
        normalize: uint8 batch -> normalised float batch (see `spm_hf.image_processing_spm.normalize_uint8`).
        support: `"separate"` (the paper: a separate support of `support_size` images per batch, encoded
            with gradients), `"batch"` (the batch itself as leave-one-out support: no extra encoder cost)
            or `"none"` (plain batches, for the parametric baseline).
        support_size, permute_labels, seed: see `EpisodicSupportSampler`.
        augment: apply random crop + flip to queries and support.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        normalize,
        support: str = "batch",
        support_size: int = 1024,
        permute_labels: bool = True,
        augment: bool = True,
        seed: int = 0,
    ):
        if support not in ("separate", "batch", "none"):
            raise ValueError(f"support must be 'separate', 'batch' or 'none', got {support!r}")
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.long)
        self.normalize, self.support, self.augment = normalize, support, augment
        self.sampler = EpisodicSupportSampler(
            self.labels,
            num_classes,
            support_size if support == "separate" else 0,
            permute_labels=permute_labels and support != "none",
            seed=seed,
        )
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed + 1)

    def _pixels(self, indices: torch.Tensor) -> torch.Tensor:
        batch = self.images[indices]
        if self.augment:
            batch = random_crop_flip(batch, self.generator)
        return self.normalize(batch)

    def __call__(self, items: list[dict]) -> dict:
        indices = torch.tensor([item["index"] for item in items], dtype=torch.long)
        # Each batch's randomness is a function of (seed, the batch's indices): the same episode whatever
        # the process, worker or resume point, so a resumed run continues exactly.
        batch_seed = zlib.crc32(indices.numpy().tobytes(), self.seed)
        self.sampler.generator.manual_seed(batch_seed)
        self.generator.manual_seed(batch_seed + 1)
        episode = self.sampler.sample(indices)
        out = {"pixel_values": self._pixels(indices), "labels": episode.permutation[self.labels[indices]]}
        if self.support == "separate":
            out["support_pixel_values"] = self._pixels(episode.support_indices)
            out["support_labels"] = episode.permutation[self.labels[episode.support_indices]]
        elif self.support == "batch":
            out["leave_one_out"] = True
        return out
