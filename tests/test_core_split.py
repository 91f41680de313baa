"""Exact forgetting by design: the core split, and the exactness of forgetting memory-only rows.

Train on D with core C and seed s; separately train from scratch on D minus U (U memory-only rows) with the
same C and s: the parameters must be bitwise equal, and after `forget(U)` on the first model the memories
have the same digest and the logits are identical.
"""

import json

import pytest
import torch

from spm_hf import SPMForImageClassification
from spm_hf.ledger import MEMORY_ONLY
from spm_hf.training.classifier import train_classifier
from spm_hf.training.classifier_presets import ClassifierPreset, get_preset
from spm_hf.training.core_split import core_hash_fraction, core_ids_digest, core_mask

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 400
IDS = [f"train/{i:05d}" for i in range(N)]
CORE = dict(core_fraction=0.5, core_seed=3)
COMMON = dict(max_train_samples=N, memory_samples=N, max_test_samples=64, epochs=2, head_steps=60,
              show_progress=False, **CORE)


def test_core_membership_depends_on_each_rows_id_and_the_seed_only():
    mask = core_mask(IDS, **CORE)
    assert 0.4 < mask.float().mean() < 0.6
    # dropping rows never changes whether another row is core
    kept = [i for i in range(N) if i % 7]
    assert torch.equal(core_mask([IDS[i] for i in kept], **CORE), mask[kept])
    assert torch.equal(core_mask(IDS[::-1], **CORE), mask.flip(0))
    assert not torch.equal(core_mask(IDS, core_fraction=0.5, core_seed=4), mask)
    assert core_mask(IDS, core_fraction=1.0).all() and core_mask(IDS).all()
    assert all((core_hash_fraction(i, 3) < 0.5) == bool(m) for i, m in zip(IDS, mask.tolist()))
    # a class the parameters never see, on top of the fraction
    labels = torch.arange(N) % 4
    no_cat = core_mask(IDS, labels, ["ant", "bee", "cat", "dog"], exclude_classes=["cat"])
    assert torch.equal(no_cat, labels != 2)
    assert core_ids_digest(IDS) == core_ids_digest(IDS[::-1]) != core_ids_digest(IDS[1:])


def test_core_ids_file_and_bad_core_settings(tmp_path):
    path = tmp_path / "core.txt"
    path.write_text("train/00003\n\ntrain/00001\n")
    assert torch.nonzero(core_mask(IDS, core_ids=str(path))).flatten().tolist() == [1, 3]
    path.write_text("train/00003\nval/00001\n")
    with pytest.raises(ValueError, match=r"1 of its 2 ids are not training rows.*val/00001"):
        core_mask(IDS, core_ids=str(path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        core_mask(IDS, core_ids=str(tmp_path / "missing.txt"))
    for fraction in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"core_fraction must be in \(0, 1\]"):
            get_preset("tiny", core_fraction=fraction)
    with pytest.raises(ValueError, match="core_fraction or core_ids, not both"):
        ClassifierPreset(name="x", core_fraction=0.5, core_ids=str(path))
    with pytest.raises(ValueError, match="core_seed must be an integer >= 0"):
        get_preset("tiny", core_fraction=0.5, core_seed=-1)
    with pytest.raises(ValueError, match=r"core_exclude_classes \['dog'\] are not classes"):
        core_mask(IDS[:4], torch.zeros(4, dtype=torch.long), ["ant"], exclude_classes=["dog"])
    with pytest.raises(ValueError, match="selects none of the 4 training rows"):
        core_mask(IDS[:4], torch.zeros(4, dtype=torch.long), ["ant"], exclude_classes=["ant"])


@pytest.fixture(scope="module", params=["class_mean", "knn"])
def exact_pair(tmp_path_factory, request):
    """A model trained on D with a core, one trained from scratch on D minus U (memory-only rows), and a
    control trained without one core row; trained reading each batch by class means, and in knn mode."""
    root = tmp_path_factory.mktemp("core")
    core = core_mask(IDS, **CORE)
    forget = torch.nonzero(~core).flatten()[::3].tolist()
    common = {**COMMON, "episode_reading": request.param}
    full = train_classifier("tiny", str(root / "full"), **common)
    without = train_classifier("tiny", str(root / "without"), exclude_indices=forget, **common)
    one_core_row = torch.nonzero(core).flatten()[:1].tolist()
    control = train_classifier("tiny", str(root / "control"), exclude_indices=one_core_row, evaluate=False, **common)
    assert json.loads((root / "full" / "config.json").read_text())["episode_reading"] == request.param
    return root, forget, full, without, control


def _state_dicts_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_without_memory_only_rows_gives_bitwise_equal_parameters(exact_pair):
    root, forget, full, without, control = exact_pair
    a = SPMForImageClassification.from_pretrained(root / "full").eval()
    b = SPMForImageClassification.from_pretrained(root / "without").eval()
    assert _state_dicts_equal(a.state_dict(), b.state_dict())
    assert full["weights_sha256"] == without["weights_sha256"]
    # the test can fail: a model trained without one *core* row is another model
    assert control["weights_sha256"] != full["weights_sha256"]
    assert full["train_samples"] == without["train_samples"] == full["core"]["size"] == int(core_mask(IDS, **CORE).sum())
    assert a.config.core_ids_digest == b.config.core_ids_digest == full["core"]["ids_digest"]
    assert a.config.core_size == full["core"]["size"]
    config = json.loads((root / "full" / "config.json").read_text())
    assert config["core_ids_digest"] == full["core"]["ids_digest"] and "train/00000" not in json.dumps(config)
    # the memory holds every row; the non-core rows are memory-only
    assert len(a.memory) == N and len(b.memory) == N - len(forget)
    assert int(a.memory.trained_on.sum()) == full["core"]["size"]
    flags = dict(zip(a.memory.ids, a.memory.trained_on.tolist()))
    assert [flags[IDS[i]] for i in range(N)] == core_mask(IDS, **CORE).tolist()


def test_forgetting_memory_only_rows_is_retraining_without_them(exact_pair, images):
    root, forget, _, _, _ = exact_pair
    a = SPMForImageClassification.from_pretrained(root / "full").eval()
    b = SPMForImageClassification.from_pretrained(root / "without").eval()
    receipt = a.forget(ids=[IDS[i] for i in forget])
    assert receipt.exact and receipt.num_memory_only == receipt.num_removed == len(forget)
    assert set(receipt.status.values()) == {MEMORY_ONLY} and set(receipt.guarantees.values()) == {"exact"}
    assert receipt.to_dict()["exact"] is True and "exact" in str(receipt)
    assert a.memory.digest() == b.memory.digest()
    with torch.no_grad():
        for mode in ("class_mean", "knn"):
            a.config.memory_mode = b.config.memory_mode = mode
            assert torch.equal(a(images).logits, b(images).logits), mode
    # forgetting a trained-on row is not exact, and the receipt says so
    trained = next(i for i, t in zip(a.memory.ids, a.memory.trained_on.tolist()) if t)
    receipt = a.forget(ids=[trained])
    assert not receipt.exact and receipt.guarantees == {next(iter(receipt.status)): "measured"}
    assert receipt.to_dict()["exact"] is False


def test_exactness_price_bench_measures_both_memories_in_both_modes(tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "exactness_price.py"
    spec = importlib.util.spec_from_file_location("exactness_price", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--preset", "tiny", "--cores", "1.0", "0.5", "--epochs", "1", "--max-train-samples", "300",
            "--max-test-samples", "40", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
            "--no-progress"]
    results = bench.main(argv)
    full, half = results["rows"]
    assert list(full["memory"]) == ["all rows"] and list(half["memory"]) == ["all rows", "core only"]
    assert full["core_size"] == full["memory"]["all rows"]["memory_rows"] == 300
    core_size = int(core_mask(IDS[:300], core_fraction=0.5, core_seed=0).sum())
    assert half["memory"]["core only"]["memory_rows"] == half["core_size"] == core_size
    for memory in half["memory"].values():
        assert all(0 <= memory[m] <= 100 for m in ("class_mean", "knn", "knn (neighbourhood means)"))
    assert "knn_all_rows_minus_core_only_at_core_0.5" in results["checks"]
    assert "| 50 % |" in (tmp_path / "out" / "exactness_price.md").read_text()
    # a rerun finds the models in the cache
    again = bench.main(argv)["rows"][1]["memory"]
    assert all(again[m]["knn"] == half["memory"][m]["knn"] for m in again)


def test_knn_memory_gain_bench_reads_the_shipped_readings_as_the_model_does(tmp_path):
    """The sweep's `class_mean`, shipped `knn` (mixture w=0.5 at the model's k, scale 1) and neighbours-only rows
    must be the model's own accuracies (exactness_price reads them through the forward), and gain = all - core."""
    import importlib.util
    import pathlib

    def load(name):
        path = pathlib.Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    price = load("exactness_price").main(
        ["--preset", "tiny", "--cores", "1.0", "0.5", "--epochs", "1", "--max-train-samples", "300",
         "--max-test-samples", "40", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "price"),
         "--no-progress"])
    full, half = (row["memory"] for row in price["rows"])
    k = get_preset("tiny").knn_k
    gain = load("knn_memory_gain").main(
        ["--model", price["rows"][0]["folder"], price["rows"][1]["folder"], "--k", str(k), "32", "--scale", "1", "2",
         "--max-test-samples", "40", "--out", str(tmp_path / "gain")])
    rows = {row["reading"]: row for row in gain["rows"]}
    for reading, mode in (("class_mean", "class_mean"), (f"mixture w=0.5 k={k} scale=1", "knn"),
                          (f"neighbours k={k} scale=1", "knn (neighbours only)")):
        assert rows[reading]["core 100 % all rows"] == full["all rows"][mode], reading
        assert rows[reading]["core 50 % all rows"] == half["all rows"][mode], reading
        assert rows[reading]["core 50 % core only"] == half["core only"][mode], reading
        assert rows[reading]["gain"] == round(half["all rows"][mode] - half["core only"][mode], 2)
    assert len(rows) == 1 + 2 * (1 + 2 * 4)  # class_mean; per k: vote + 2 scales x 4 weights
    assert all(isinstance(row["meets both"], bool) and isinstance(row["frontier"], bool) for row in rows.values())
    assert "| class_mean" in (tmp_path / "gain" / "knn_memory_gain.md").read_text()
    with pytest.raises(SystemExit):
        load("knn_memory_gain").main(["--model", price["rows"][0]["folder"], "--weights", "0"])
