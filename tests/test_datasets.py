"""Datasets of the user's own: local imagefolder / parquet / save_to_disk folders with any column names,
normalisation statistics of the training rows, the recorded dataset and command, and a second dataset
through the command line alone (train, evaluate, forget, push to the test Hub, load in a clean process).

Every dataset here is written by the test itself: three classes told apart by their dominant colour, so
that a tiny model learns them in one epoch.
"""

import json
import os

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hub_server import FakeHub
from spm_hf.cli import main
from spm_hf.data import as_uint8_tensors, dataset_record, label_names, load_image_dataset
from spm_hf.image_processing_spm import CIFAR10_MEAN, normalization_statistics
from spm_hf.training.classifier_presets import get_preset, reproduce_command
from spm_hf.training.generator_presets import get_generator_preset
from spm_hf.training.generator_presets import reproduce_command as generator_command
from test_hub import run_client


COLOURS = ["red", "green", "blue"]  # class c has channel c raised
USER = "spm-tester"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def colour_images(n: int, size: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    arrays, labels = [], []
    for i in range(n):
        array = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        array[:, :, i % 3] += 150
        arrays.append(array)
        labels.append(i % 3)
    return arrays, labels


def write_imagefolder(root, train: int = 60, test: int = 15, size: int = 16) -> str:
    """`root/{train,test}/<colour>/<n>.png`, the layout of datasets' `imagefolder`."""
    for split, n, seed in (("train", train, 0), ("test", test, 1)):
        arrays, labels = colour_images(n, size, seed)
        for i, (array, label) in enumerate(zip(arrays, labels)):
            folder = os.path.join(root, split, COLOURS[label])
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(array).save(os.path.join(folder, f"{i:03d}.png"))
    return str(root)


def write_parquet(root, train: int = 150, test: int = 30, size: int = 8, names=("sun", "sea", "leaf")) -> str:
    """`root/{train,test}-00000-of-00001.parquet` with columns `photo` (images) and `kind` (class names as
    strings, not a ClassLabel) and a column the loader must drop."""
    os.makedirs(root, exist_ok=True)
    for split, n, seed in (("train", train, 0), ("test", test, 1)):
        arrays, labels = colour_images(n, size, seed)
        features = datasets.Features({"photo": datasets.Image(), "kind": datasets.Value("string"),
                                      "note": datasets.Value("string")})
        part = datasets.Dataset.from_dict(
            {"photo": [Image.fromarray(a) for a in arrays], "kind": [names[label] for label in labels],
             "note": ["x"] * n}, features=features)
        part.to_parquet(os.path.join(root, f"{split}-00000-of-00001.parquet"))
    return str(root)


# ---------------------------------------------------------------------- loading
def test_an_imagefolder_tree_loads_with_its_folder_names_as_classes(tmp_path):
    root = write_imagefolder(tmp_path / "colours", train=12, test=6, size=4)
    data = load_image_dataset(root)
    assert set(data) == {"train", "test"} and len(data["train"]) == 12 and len(data["test"]) == 6
    assert data["train"].column_names == ["image", "label", "sample_id"]
    assert label_names(data) == ["blue", "green", "red"]  # imagefolder sorts the class folders
    images, labels, ids = as_uint8_tensors(data["train"])
    assert images.shape == (12, 3, 4, 4) and ids[:2] == ["train/00000", "train/00001"]
    # the label is the folder: each image's raised channel is its class's colour
    raised = images.float().mean(dim=(2, 3)).argmax(dim=1)
    assert [COLOURS[c] for c in raised.tolist()] == [label_names(data)[y] for y in labels.tolist()]
    record = dataset_record(root, data)
    assert record["hub_id"] is None and record["local"] is True and record["rows"] == {"train": 12, "test": 6}


def test_parquet_with_other_column_names_and_string_labels(tmp_path):
    root = write_parquet(tmp_path / "pq", train=9, test=3, size=4)
    with pytest.raises(ValueError, match=r"no label column .* among \['photo', 'kind', 'note'\]; name it with "
                                         r"label_column \(--label-column\)"):
        load_image_dataset(root)
    with pytest.raises(ValueError, match=r"image_column 'picture' \(--image-column\) is not a column"):
        load_image_dataset(root, image_column="picture", label_column="kind")
    data = load_image_dataset(root, label_column="kind")  # the only Image feature is found without a name
    assert data["train"].column_names == ["image", "label", "sample_id"]  # `note` dropped
    assert label_names(data) == ["leaf", "sea", "sun"]  # the sorted distinct names, the same in every split
    assert data["train"]["label"][:3] == [2, 1, 0] and data["test"]["label"] == [2, 1, 0]  # sun, sea, leaf
    assert isinstance(data["test"].features["label"], datasets.ClassLabel)
    # parquet files of a "validation" split stand in for a missing "test" split
    os.rename(os.path.join(root, "test-00000-of-00001.parquet"), os.path.join(root, "validation-00000-of-00001.parquet"))
    data = load_image_dataset(root, label_column="kind")
    assert data["test"]["sample_id"] == ["validation/00000", "validation/00001", "validation/00002"]


def test_integer_labels_a_validation_split_and_save_to_disk(tmp_path):
    arrays, _ = colour_images(6, 4, 0)
    features = datasets.Features({"img": datasets.Image(), "labels": datasets.Value("int64")})
    make = lambda labels: datasets.Dataset.from_dict(  # noqa: E731
        {"img": [Image.fromarray(a) for a in arrays[: len(labels)]], "labels": labels}, features=features)
    datasets.DatasetDict({"train": make([7, 3, 9, 3]), "validation": make([9, 7])}).save_to_disk(str(tmp_path / "d"))
    data = load_image_dataset(str(tmp_path / "d"))
    assert label_names(data) == ["3", "7", "9"]  # numbers sort as numbers, named by their digits
    assert data["train"]["label"] == [1, 0, 2, 0] and data["test"]["label"] == [2, 1]
    assert data["test"]["sample_id"] == ["validation/00000", "validation/00001"]  # "test" read from validation


def test_bad_dataset_arguments_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset '\./nowhere': no such folder"):
        load_image_dataset("./nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="found no dataset in .*imagefolder tree"):
        load_image_dataset(str(tmp_path / "empty"))
    root = write_imagefolder(tmp_path / "c", train=3, test=3, size=4)
    with pytest.raises(ValueError, match=r"has no split 'extra'; it has \['train', 'test'\]"):
        load_image_dataset(root, splits=("train", "extra"))
    Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(os.path.join(root, "train", "red", "big.png"))
    with pytest.raises(ValueError, match="images of different sizes: .* is 4x4, .* is 5x5"):
        as_uint8_tensors(load_image_dataset(root)["train"])


def test_mixed_image_modes_follow_the_first_image(tmp_path):
    root = tmp_path / "modes"
    for folder in ("train/a", "train/b", "test/a", "test/b"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 200, dtype=np.uint8)).save(root / "train" / "a" / "0.png")  # L
    Image.fromarray(np.full((4, 4, 3), 100, dtype=np.uint8)).save(root / "train" / "b" / "1.png")  # RGB
    for name in ("a", "b"):
        Image.fromarray(np.full((4, 4), 9, dtype=np.uint8)).save(root / "test" / name / "0.png")
    images, _, _ = as_uint8_tensors(load_image_dataset(str(root))["train"])
    assert images.shape == (2, 1, 4, 4) and images[:, 0, 0, 0].tolist() == [200, 100]


# ---------------------------------------------------------------------- statistics and commands
def test_normalization_statistics_are_the_training_images_own():
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[:, 0] = 51  # 0.2 everywhere
    images[:2, 1] = 255  # half the pixels 1.0, half 0.0: mean 0.5, std 0.5
    mean, std = normalization_statistics(images, chunk_size=3)  # chunks of 3 + 1 images give the same sums
    assert mean == [0.2, 0.5, 0.0] and std == [0.0039, 0.5, 0.0039]  # a constant channel: std 1/255
    with pytest.raises(TypeError, match=r"\(N, C, H, W\) uint8 images, got a torch.float32 tensor"):
        normalization_statistics(images.float())


def test_reproduce_commands_name_every_changed_field():
    preset = get_preset("tiny", dataset="data/pets", image_column="photo", epochs=1, learning_rate=0.01)
    assert reproduce_command(preset, "out dir", parametric=True) == (
        "spm-hf train-classifier --preset tiny --output-dir 'out dir' --parametric --dataset data/pets "
        "--image-column photo --epochs 1  # and preset fields without a flag: {'learning_rate': 0.01}")
    assert reproduce_command(get_preset("tiny"), "o") == "spm-hf train-classifier --preset tiny --output-dir o"
    config = get_generator_preset("gen-tiny", dataset="user/pets", exclude_classes=("cat", "dog"), max_steps=9)
    assert generator_command(config, "g") == (
        "spm-hf train-generator --preset gen-tiny --output-dir g --dataset user/pets --max-steps 9 "
        "--exclude-classes cat dog")


def test_benchmark_takes_a_dataset_with_named_columns(tmp_path, capsys):
    root = write_parquet(tmp_path / "pq")
    common = ["benchmark", "unlearning", "--preset", "tiny", "--dataset", root, "--image-column", "photo",
              "--label-column", "kind", "--epochs", "1", "--methods", "FT", "--output-dir", str(tmp_path / "out"),
              "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    # a class scenario names CIFAR-10 classes: refused before any model is trained
    with pytest.raises(SystemExit) as refused:
        main([*common, "--scenario", "cat"])
    assert refused.value.code == 2 and "scenario 'cat' forgets classes ['cat']" in str(refused.value)
    assert "random-10 and random-50 fit any dataset" in str(refused.value)
    assert not (tmp_path / "cache").exists()
    assert main([*common, "--scenario", "random-10"]) == 0
    report = json.loads((tmp_path / "out" / "random-10" / "results.json").read_text())
    assert [report["sizes"][k] for k in ("forget", "retain", "test")] == [15, 135, 30]
    by = {row["method"]: row for row in report["rows"]}
    assert by["SPM: delete from memory"]["removed"] == 15
    summary = json.loads(next((tmp_path / "cache").glob("*/spm-original-seed0/training_summary.json")).read_text())
    assert summary["preset"]["dataset"] == root and summary["preset"]["label_column"] == "kind"
    assert summary["data"]["rows"] == {"train": 150, "test": 30}


# ---------------------------------------------------------------------- the whole path, command line only
@pytest.fixture(scope="module")
def hub():
    server = FakeHub(user=USER).start()
    yield server
    server.stop()


def cli(hub, home, *argv):
    return run_client(hub, "", home, argv=[str(a) for a in argv]).stdout


def test_a_dataset_of_ones_own_through_the_command_line_to_the_hub_and_back(hub, tmp_path):
    """train-classifier / train-generator on an imagefolder tree, evaluate-generator judged by that classifier,
    forget "red" from both, push both to the test Hub, and load them in fresh processes: the classifier where
    spm_hf is not installed (trust_remote_code)."""
    root = write_imagefolder(tmp_path / "colours")
    home = tmp_path / "home"
    clf, gen = tmp_path / "clf", tmp_path / "gen"
    train_argv = ["train-classifier", "--preset", "tiny", "--dataset", root, "--batch-size", "16", "--epochs", "1",
                  "--output-dir", clf]
    cli(hub, home, *train_argv)
    summary = json.loads((clf / "training_summary.json").read_text())
    assert summary["command"] == "spm-hf " + " ".join(map(str, train_argv))
    assert summary["data"] | {"fingerprint": None} == {
        "name": root, "hub_id": None, "local": True, "image_column": None, "label_column": None,
        "rows": {"train": 60, "test": 15}, "fingerprint": None}
    assert summary["test"]["class_mean"]["accuracy"] >= 80  # the colours are easy: evaluated on the test split
    train_images, _, _ = as_uint8_tensors(load_image_dataset(root)["train"])
    processor = json.loads((clf / "preprocessor_config.json").read_text())
    assert [processor["image_mean"], processor["image_std"]] == list(normalization_statistics(train_images))
    assert processor["image_mean"] != CIFAR10_MEAN and summary["normalization"]["mean"] == processor["image_mean"]
    assert processor["size"] == {"height": 16, "width": 16}

    cli(hub, home, "train-generator", "--preset", "gen-tiny", "--dataset", root, "--max-steps", "2", "--output-dir",
        gen, "--no-progress")
    report = json.loads(cli(hub, home, "evaluate-generator", "--model", gen, "--output-dir", tmp_path / "eval",
                            "--forget", "red", "--judge", clf, "--no-fid", "--samples-per-class", "2", "--steps", "2",
                            "--support-size", "4", "--device", "cpu"))
    assert report["receipt"]["removed_per_class"] == {"blue": 0, "green": 0, "red": 20}
    assert set(report["before"]["judge_accuracy"]) == set(COLOURS) and set(report["after"]["ua"]) == {"red"}

    for folder, kind in ((clf, "classifier"), (gen, "generator")):
        cli(hub, home, "forget", "--model", folder, "--classes", "red", "--output-dir", f"{folder}-nored")
        cli(hub, home, "push", f"{folder}-nored", f"{USER}/colour-{kind}")
    card = (tmp_path / "clf-nored" / "README.md").read_text()
    assert "spm-hf " + " ".join(map(str, train_argv)) in card  # the Reproduce block: the exact command
    assert f"spm-hf forget --model {clf} --classes red" in card and f"| dataset | {root} |" in card
    gen_card = (tmp_path / "gen-nored" / "README.md").read_text()
    assert f"spm-hf train-generator --preset gen-tiny --dataset {root} --max-steps 2 --output-dir {gen}" in gen_card

    test_images = [str(p) for p in sorted((tmp_path / "colours" / "test").glob("*/*.png"))]
    out = run_client(hub, f"""
        import json
        from PIL import Image
        from transformers import AutoModelForImageClassification, pipeline
        repo = {USER + "/colour-classifier"!r}
        model = AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True)
        clf = pipeline("image-classification", model=repo, trust_remote_code=True)
        paths = {test_images!r}
        top = [clf(Image.open(p), top_k=3)[0]["label"] for p in paths]
        print(json.dumps({{"module": type(model).__module__, "counts": model.memory.class_counts(), "top": top,
                          "truth": [p.split("/")[-2] for p in paths]}}))
        """, tmp_path / "home-clean", hide_spm_hf=True)
    assert out["module"].startswith("transformers_modules.")
    assert out["counts"] == {"blue": 20, "green": 20, "red": 0}
    assert "red" not in out["top"]
    kept = [(t, p) for t, p in zip(out["truth"], out["top"]) if t != "red"]
    assert sum(t == p for t, p in kept) >= 0.8 * len(kept)  # blue and green still recognised

    gen_out = run_client(hub, f"""
        import json
        from spm_hf import SPMDiffusionPipeline
        pipe = SPMDiffusionPipeline.from_pretrained({USER + "/colour-generator"!r})
        print(json.dumps({{"counts": pipe.memory.class_counts(), "size": pipe.unet.config.sample_size,
                          "events": len(pipe.memory.sample_memory.ledger)}}))
        """, tmp_path / "home-gen")
    assert gen_out == {"counts": {"blue": 20, "green": 20, "red": 0}, "size": 16, "events": 1}
