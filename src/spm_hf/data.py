"""Datasets: resolve a name or path to a `datasets.DatasetDict` with `image`, `label` and `sample_id`.

"cifar10" and "mnist" resolve to a local copy when one exists (`$SPM_HF_DATA/<name>`, else
`../shared/data/<name>` beside the checkout) and to the Hub (`uoft-cs/cifar10`, `ylecun/mnist`)
otherwise. Any other argument is a local folder (parquet files `train-*.parquet` / `test-*.parquet` or
`train/*.parquet`, a `save_to_disk` folder, or an `imagefolder` tree `train/<class>/*.png`,
`test/<class>/*.png`) or a Hub dataset id. The image and label columns are found by name (`image` / `img`,
`label` / `labels`, else the only `ClassLabel` column) or given (`image_column`, `label_column`); a label
column of strings or integers becomes a `ClassLabel` whose names are its sorted values over all splits.
A dataset without a "test" split uses its "validation" split. Every sample gets a stable id
`"<split>/<row:05d>"`.

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
LABEL_COLUMNS = ("label", "labels")
TEST_SPLIT_FALLBACKS = ("validation", "valid", "val")  # read as "test" where a dataset has no test split
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes decoded as one channel


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


def _find_column(part, name_or_path: str, given: str | None, kind: str) -> str:
    """The `kind` ("image" or "label") column of a split: `given` if it exists, else the one conventional name
    present, else the single feature of the right type (`datasets.Image` / `datasets.ClassLabel`)."""
    import datasets

    names, feature_type, feature_name = {
        "image": (IMAGE_COLUMNS, datasets.Image, "Image"),
        "label": (LABEL_COLUMNS, datasets.ClassLabel, "ClassLabel"),
    }[kind]
    columns = part.column_names
    if given is not None:
        if given not in columns:
            raise ValueError(f"{kind}_column {given!r} (--{kind}-column) is not a column of {name_or_path}; "
                             f"its columns are {columns}")
        return given
    found = [c for c in names if c in columns] or [
        c for c, feature in part.features.items() if isinstance(feature, feature_type)]
    if len(found) == 1 or (found and found[0] in names):
        return found[0]
    raise ValueError(f"{name_or_path}: no {kind} column (one named {' or '.join(names)}, or a single "
                     f"{feature_name} feature) among {columns}; name it with {kind}_column (--{kind}-column)")



def _class_label_names(parts: dict, name_or_path: str) -> list[str] | None:
    """The class names of the label columns of `parts` (already renamed to "label"): a ClassLabel's own
    (the same in every split), else the sorted distinct values over all splits; None if already ClassLabel."""
    import datasets

    features = {split: part.features["label"] for split, part in parts.items()}
    if all(isinstance(f, datasets.ClassLabel) for f in features.values()):
        names = {split: list(f.names) for split, f in features.items()}
        first = next(iter(names.values()))
        if any(n != first for n in names.values()):
            raise ValueError(f"{name_or_path}: the splits' label names differ: {names}")
        return None
    values = set()
    for split, part in parts.items():
        if isinstance(features[split], datasets.ClassLabel):
            values.update(features[split].names)
            continue
        column = part["label"]
        if any(v is None for v in column):
            raise ValueError(f"{name_or_path}: the {split} split has rows without a label")
        if any(isinstance(v, (float, bool)) or not isinstance(v, (int, str)) for v in column):
            kinds = sorted({type(v).__name__ for v in column})
            raise ValueError(f"{name_or_path}: a label column holds class names (str) or class numbers (int), "
                             f"got {kinds} in the {split} split")
        values.update(column)
    if all(isinstance(v, int) for v in values):
        return [str(v) for v in sorted(values)]
    return sorted(str(v) for v in values)


def _as_class_label(part, names: list[str]):
    """`part` with its "label" column cast to `ClassLabel(names)` (values: names, or numbers named by str)."""
    import datasets

    feature = part.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        own = list(feature.names)
        if own == names:
            return part
        index = {name: names.index(name) for name in own}
        part = part.map(lambda batch: {"label": [index[own[v]] for v in batch["label"]]}, batched=True,
                        features=datasets.Features({**part.features, "label": datasets.Value("int64")}))
    else:
        index = {name: i for i, name in enumerate(names)}
        part = part.map(lambda batch: {"label": [index[str(v)] for v in batch["label"]]}, batched=True,
                        features=datasets.Features({**part.features, "label": datasets.Value("int64")}))
    return part.cast_column("label", datasets.ClassLabel(names=names))


def _read(source: str, name_or_path: str, splits: tuple[str, ...]):
    """The `DatasetDict` (or dict of splits) stored at `source`: a local folder or a Hub id."""
    import datasets

    if not os.path.isdir(source):
        if source.startswith(("/", ".", "~")) or source.count("/") > 1 or os.path.exists(source):
            raise FileNotFoundError(f"dataset {name_or_path!r}: no such folder (nor a Hub dataset id, user/name)")
        return datasets.load_dataset(source)
    if os.path.exists(os.path.join(source, "dataset_dict.json")):
        return datasets.load_from_disk(source)
    wanted = list(splits) + (list(TEST_SPLIT_FALLBACKS) if "test" in splits else [])
    files = {
        s: sorted(glob.glob(os.path.join(source, f"{s}-*.parquet")) + glob.glob(os.path.join(source, s, "*.parquet")))
        for s in wanted
    }
    found = {s: f for s, f in files.items() if f}
    if found:
        missing = [s for s in splits if s not in found
                   and not (s == "test" and any(v in found for v in TEST_SPLIT_FALLBACKS))]
        if missing:
            raise FileNotFoundError(f"no parquet files for split(s) {missing} in {source}")
        return datasets.load_dataset("parquet", data_files=found)
    if any(os.path.isdir(os.path.join(source, s)) for s in splits + TEST_SPLIT_FALLBACKS):
        return datasets.load_dataset("imagefolder", data_dir=source)
    raise FileNotFoundError(
        f"{name_or_path}: found no dataset in {source}: expected parquet files (train-*.parquet, test-*.parquet, "
        "or train/*.parquet), a save_to_disk folder (dataset_dict.json) or an imagefolder tree "
        "(train/<class>/<image>, test/<class>/<image>)"
    )


def load_image_dataset(name_or_path: str, splits: tuple[str, ...] = ("train", "test"),
                       image_column: str | None = None, label_column: str | None = None):
    """Load an image-classification dataset as a `DatasetDict` with `image`, `label` (a `ClassLabel`, whose
    names become the model's labels) and `sample_id`.

    Args:
        name_or_path: "cifar10", "mnist", a local folder or a Hub dataset id (see the module docstring).
        splits: the splits to return; "test" falls back to a "validation" split where there is no "test".
        image_column, label_column: the columns to read (default: found by name, see the module docstring).
    """
    import datasets

    source = resolve_dataset_path(name_or_path)
    ds = _read(source, name_or_path, splits)
    parts = {}
    for split in splits:
        stored = split
        if split not in ds and split == "test":
            stored = next((s for s in TEST_SPLIT_FALLBACKS if s in ds), split)
        if stored not in ds:
            raise ValueError(f"{name_or_path} has no split {split!r}; it has {list(ds)}")
        part = ds[stored]
        image = _find_column(part, name_or_path, image_column, "image")
        label = _find_column(part, name_or_path, label_column, "label")
        if image == label:
            raise ValueError(f"{name_or_path}: the image and label columns are both {image!r}")
        part = part.remove_columns([c for c in part.column_names if c not in (image, label, "sample_id")])
        part = part.rename_columns({k: v for k, v in ((image, "image"), (label, "label")) if k != v})
        if not isinstance(part.features["image"], datasets.Image):  # e.g. {bytes, path} structs, or file paths
            try:
                part = part.cast_column("image", datasets.Image())
            except (TypeError, ValueError) as error:
                raise ValueError(f"{name_or_path}: column {image!r} holds {part.features['image']}, not images "
                                 "(name the image column with image_column / --image-column)") from error
        if "sample_id" not in part.column_names:
            part = part.add_column("sample_id", [f"{stored}/{i:05d}" for i in range(len(part))])
        parts[split] = part
    names = _class_label_names(parts, name_or_path)
    if names is not None:
        parts = {split: _as_class_label(part, names) for split, part in parts.items()}
    return datasets.DatasetDict(parts)


def dataset_hub_id(name_or_path: str) -> str | None:
    """The Hub dataset a name stands for ("cifar10" -> "uoft-cs/cifar10", a Hub id -> itself), None for a
    local folder of the user's own."""
    if name_or_path in HUB_IDS:
        return HUB_IDS[name_or_path]
    return None if os.path.isdir(name_or_path) else name_or_path


def dataset_record(name_or_path: str, data, image_column: str | None = None, label_column: str | None = None) -> dict:
    """What a training summary keeps about its data: the name given, the Hub id it stands for, whether it was
    read from a local folder (no path: the summary is pushed with the model), the columns, the rows per
    split and each split's `datasets` fingerprint."""
    return {
        "name": name_or_path,
        "hub_id": dataset_hub_id(name_or_path),
        "local": os.path.isdir(resolve_dataset_path(name_or_path)),
        "image_column": image_column,
        "label_column": label_column,
        "rows": {split: len(part) for split, part in data.items()},
        "fingerprint": {split: getattr(part, "_fingerprint", None) for split, part in data.items()},
    }


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
    arrays, mode = [], None
    for row, image in enumerate(split["image"]):
        if mode is None:  # the first image decides: grayscale stays one channel, anything else becomes RGB
            mode = "L" if image.mode in GRAYSCALE_MODES else "RGB"
        if image.mode != mode:
            image = image.convert(mode)
        array = np.asarray(image)
        if arrays and array.shape[:2] != arrays[0].shape[:2]:
            first = arrays[0].shape
            raise ValueError(f"images of different sizes: {split['sample_id'][0]} is {first[1]}x{first[0]}, "
                             f"{split['sample_id'][row]} is {array.shape[1]}x{array.shape[0]}; the training code "
                             "needs one size (resize the dataset first)")
        arrays.append(array[:, :, None] if array.ndim == 2 else array)
    if not arrays:
        raise ValueError("the split has no rows")
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
