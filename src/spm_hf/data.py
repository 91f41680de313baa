"""Datasets: resolve a name or path to a `datasets.DatasetDict` with `image`, `label` and `sample_id`.

"cifar10" and "mnist" resolve to a local copy when one exists (`$SPM_HF_DATA/<name>`, else
`../shared/data/<name>` beside the checkout) and to the Hub (`uoft-cs/cifar10`, `ylecun/mnist`)
otherwise. Any other argument is a local folder of parquet files (`train-*.parquet`, `test-*.parquet`),
a `save_to_disk` folder, or a Hub dataset id. Every sample gets a stable id `"<split>/<row:05d>"`.

Training code works on decoded uint8 tensors (`as_uint8_tensors`), decoded once: PNG decoding every
epoch would cost more than the small encoders themselves.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import torch


HUB_IDS = {"cifar10": "uoft-cs/cifar10", "mnist": "ylecun/mnist"}
IMAGE_COLUMNS = ("image", "img")


def local_data_root() -> Path | None:
    """`$SPM_HF_DATA`, else `../shared/data` beside the checkout (or beside the working directory)."""
    env = os.environ.get("SPM_HF_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    candidates = [parent.parent / "shared" / "data" for parent in here.parents] + [
        Path.cwd().parent / "shared" / "data"
    ]
    return next((c for c in candidates if c.is_dir()), None)


def resolve_dataset_path(name_or_path: str) -> str:
    """Where `load_image_dataset` will read `name_or_path` from (a folder or a Hub id)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    root = local_data_root()
    if name_or_path in HUB_IDS:
        if root is not None and (root / name_or_path).is_dir():
            return str(root / name_or_path)
        return HUB_IDS[name_or_path]
    return name_or_path


def _image_column(columns: list[str]) -> str:
    for c in IMAGE_COLUMNS:
        if c in columns:
            return c
    raise ValueError(f"no image column (one of {IMAGE_COLUMNS}) among {columns}")


def load_image_dataset(name_or_path: str, splits: tuple[str, ...] = ("train", "test")):
    """Load an image-classification dataset as a `DatasetDict` with `image`, `label`, `sample_id`.

    The label column must be a `ClassLabel` (its names become the model's labels).
    """
    import datasets

    source = resolve_dataset_path(name_or_path)
    if os.path.isdir(source):
        if os.path.exists(os.path.join(source, "dataset_dict.json")):
            ds = datasets.load_from_disk(source)
        else:
            files = {
                s: sorted(glob.glob(os.path.join(source, f"{s}-*.parquet")) + glob.glob(os.path.join(source, s, "*.parquet")))
                for s in splits
            }
            missing = [s for s, f in files.items() if not f]
            if missing:
                raise FileNotFoundError(f"no parquet files for split(s) {missing} in {source}")
            ds = datasets.load_dataset("parquet", data_files=files)
    else:
        ds = datasets.load_dataset(source)
    out = {}
    for split in splits:
        if split not in ds:
            raise KeyError(f"{name_or_path} has no split {split!r}; it has {list(ds)}")
        part = ds[split]
        image_column = _image_column(part.column_names)
        if image_column != "image":
            part = part.rename_column(image_column, "image")
        if not isinstance(part.features["label"], datasets.ClassLabel):
            raise ValueError(f"{name_or_path}: the label column must be a ClassLabel, got {part.features['label']}")
        if "sample_id" not in part.column_names:
            part = part.add_column("sample_id", [f"{split}/{i:05d}" for i in range(len(part))])
        out[split] = part
    return datasets.DatasetDict(out)


def label_names(dataset) -> list[str]:
    """Class names of a dataset (or split) produced by `load_image_dataset`."""
    split = dataset[next(iter(dataset))] if hasattr(dataset, "keys") else dataset
    return list(split.features["label"].names)


def as_uint8_tensors(split, limit: int | None = None, indices=None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode a split once: (N, C, H, W) uint8 images, (N,) int64 labels, N sample ids."""
    if indices is not None:
        split = split.select(indices)
    elif limit is not None and limit < len(split):
        split = split.select(range(limit))
    arrays = []
    for image in split["image"]:
        array = np.asarray(image)
        arrays.append(array[:, :, None] if array.ndim == 2 else array)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(split["label"], dtype=torch.long), list(split["sample_id"])


def tensors_to_dataset(images: torch.Tensor, labels: torch.Tensor, names: list[str], split: str = "train"):
    """A small `datasets.Dataset` (image, label ClassLabel, sample_id) from uint8 tensors: test fixtures."""
    import datasets
    from PIL import Image

    array = images.permute(0, 2, 3, 1).numpy()
    pil = [Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a) for a in array]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names), "sample_id": datasets.Value("string")}
    )
    return datasets.Dataset.from_dict(
        {"image": pil, "label": labels.tolist(), "sample_id": [f"{split}/{i:05d}" for i in range(len(pil))]},
        features=features,
    )
