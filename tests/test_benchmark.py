"""The unlearning benchmark: scenarios, oracle data exclusion, and the command end to end on `tiny`."""

import json
import os

import pytest
import torch

from spm_hf.cli import main
from spm_hf.data import load_image_dataset
from spm_hf.evaluation.benchmark import (
    SCENARIOS,
    ModelSpec,
    Scenario,
    cache_root,
    required_models,
)
from spm_hf.training.classifier import exclude_training_rows, get_preset

NAMES = ["airplane", "automobile", "bird", "cat", "deer"]


def test_class_scenario_selects_exactly_that_class():
    labels = torch.tensor([0, 3, 3, 1, 4, 3])
    assert Scenario("x", classes=("cat",)).forget_indices(labels, NAMES).tolist() == [1, 2, 5]
    assert Scenario("x", classes=("cat", "airplane")).forget_indices(labels, NAMES).tolist() == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="'dog'"):
        Scenario("x", classes=("dog",)).forget_indices(labels, NAMES)


def test_random_scenario_is_seeded_sorted_and_sized():
    labels = torch.zeros(1000, dtype=torch.long)
    a = SCENARIOS["random-10"].forget_indices(labels, NAMES)
    b = SCENARIOS["random-10"].forget_indices(labels, NAMES)
    assert len(a) == 100 and torch.equal(a, b) and torch.equal(a, a.sort().values) and len(a.unique()) == 100
    assert len(SCENARIOS["random-50"].forget_indices(labels, NAMES)) == 500
    other = Scenario("r", fraction=0.1, seed=1).forget_indices(labels, NAMES)
    assert not torch.equal(a, other)


def test_required_models_are_originals_then_two_oracle_seeds_per_family():
    specs = required_models(["cat"])
    assert [s.name for s in specs] == [
        "spm-original-seed0", "parametric-original-seed0",
        "spm-retrain-cat-seed0", "parametric-retrain-cat-seed0",
        "spm-retrain-cat-seed1", "parametric-retrain-cat-seed1",
    ]
    assert ModelSpec("spm", None, 0) in specs


def test_cache_folder_changes_with_the_preset_settings_but_not_the_seed(tmp_path):
    a = cache_root(str(tmp_path), "tiny")
    assert a == cache_root(str(tmp_path), "tiny", {"seed": 5})
    assert a != cache_root(str(tmp_path), "tiny", {"epochs": 1})


def test_excluding_rows_removes_them_from_training_and_memory_subset():
    data = load_image_dataset("cifar10")
    preset = get_preset("tiny", max_train_samples=50, memory_samples=50)
    out, new_preset, count = exclude_training_rows(data, preset, [0, 7, 7, 49])
    assert count == 3 and len(out["train"]) == 47
    assert new_preset.max_train_samples is None and new_preset.memory_samples is None
    kept_ids = out["train"]["sample_id"]
    assert data["train"][0]["sample_id"] not in kept_ids and data["train"][49]["sample_id"] not in kept_ids
    assert kept_ids[:6] == data["train"].select(range(1, 7))["sample_id"]
    assert len(data["train"]) == 50000  # the input is not modified
    with pytest.raises(IndexError, match=r"\[0, 50\)"):
        exclude_training_rows(data, preset, [50])
    with pytest.raises(ValueError, match="same training and memory subsets"):
        exclude_training_rows(data, get_preset("tiny", max_train_samples=50, memory_samples=60), [1])


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    argv = ["benchmark", "unlearning", "--preset", "tiny", "--scenario", "cat", "--epochs", "1",
            "--max-train-samples", "200", "--max-test-samples", "60", "--output-dir", str(root / "out"),
            "--cache-dir", str(root / "cache"), "--no-progress"]
    assert main(argv) == 0
    return root, argv


def test_benchmark_command_writes_every_row_metric_and_check(benchmark_run):
    root, _ = benchmark_run
    report = json.loads((root / "out" / "cat" / "results.json").read_text())
    assert report["sizes"]["forget"] + report["sizes"]["retain"] == 200 and report["sizes"]["test"] == 60
    methods = [r["method"] for r in report["rows"]]
    assert methods == [
        "SPM: no unlearning", "SPM: delete from memory", "SPM: retrain (oracle, seed 0)", "SPM: retrain (seed 1)",
        "Parametric: no unlearning", "Parametric: FT", "Parametric: GA", "Parametric: RL", "Parametric: l1_sparse",
        "Parametric: SalUn", "Parametric: retrain (oracle, seed 0)", "Parametric: retrain (seed 1)",
    ]
    by = {r["method"]: r for r in report["rows"]}
    for row in report["rows"]:
        assert {"UA", "RA", "TA", "MIA", "gap", "gap_per_split", "avg_gap", "seconds"} <= set(row)
        assert set(row["gap_per_split"]) == {"forget", "retain", "test", "mean", "harmonic"}
    # An SPM with "cat" deleted cannot predict cat: every forget sample is misclassified.
    assert by["SPM: delete from memory"]["UA"] == 100.0
    assert by["SPM: delete from memory"]["removed"] == report["sizes"]["forget"]
    assert 0 < by["SPM: delete from memory"]["seconds"] < 1
    assert 0 < by["SPM: delete from memory"]["seconds_first_call"] < 1
    # Each oracle is its own reference; its seed-1 twin's gap is the floor reported in the checks.
    for family in ("SPM", "Parametric"):
        assert by[f"{family}: retrain (oracle, seed 0)"]["gap"] == 0.0
        assert by[f"{family}: retrain (oracle, seed 0)"]["avg_gap"] == 0.0
    assert report["checks"]["spm_seed_gap"] == by["SPM: retrain (seed 1)"]["gap"]
    assert report["checks"]["spm_gap_within_seed_gap_plus_1"] == (
        by["SPM: delete from memory"]["gap"] <= by["SPM: retrain (seed 1)"]["gap"] + 1)
    table = (root / "out" / "cat" / "results.md").read_text()
    assert "| SPM: delete from memory | 100.00 |" in table and "Seed-gap floor" in table
    assert (root / "out" / "cat" / "gap_vs_time.png").stat().st_size > 10_000
    assert (root / "out" / "summary.md").read_text().startswith("### cat (tiny)")


def test_benchmark_rerun_reuses_the_cached_models(benchmark_run, capsys):
    root, argv = benchmark_run
    cache = next(p for p in (root / "cache").iterdir())
    stamps = {p.name: os.path.getmtime(p / "model.safetensors") for p in cache.iterdir()}
    assert len(stamps) == 6 and not any(".tmp" in name for name in stamps)
    capsys.readouterr()
    assert main(argv) == 0
    assert "training" not in capsys.readouterr().out
    assert {p.name: os.path.getmtime(p / "model.safetensors") for p in cache.iterdir()} == stamps


def test_benchmark_rejects_unknown_scenarios_and_methods(tmp_path):
    with pytest.raises(SystemExit, match="unknown scenarios") as exit_info:  # spm-hf: one line, exit status 2
        main(["benchmark", "unlearning", "--scenario", "dogs", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and isinstance(exit_info.value.__cause__, ValueError)
    from spm_hf.evaluation.benchmark import run_scenario

    with pytest.raises(ValueError, match="unknown unlearning methods"):
        run_scenario("tiny", "cat", str(tmp_path), methods=["FT", "magic"])


def test_generator_oracle_is_trained_without_the_class_and_has_no_memory_of_it(tmp_path):
    from spm_hf.training.generator import train_generator

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(24) % 3
    ids = [f"train/{i:05d}" for i in range(24)]
    pipe = train_generator("gen-tiny", str(tmp_path / "g"), images=images, labels=labels, ids=ids,
                           label_names=["ant", "bee", "cow"], max_steps=2, exclude_classes=("bee",),
                           show_progress=False)
    counts = pipe.memory.class_counts()
    assert counts == {"ant": 8, "bee": 0, "cow": 8}
    assert pipe.unet.config.num_class_embeds == 3  # the class keeps its (untrained) embedding
    with pytest.raises(ValueError, match="'dog' is not one of"):
        train_generator("gen-tiny", str(tmp_path / "h"), images=images, labels=labels, ids=ids,
                        label_names=["ant", "bee", "cow"], max_steps=1, exclude_classes=("dog",),
                        show_progress=False)


# ---------------------------------------------------------------------- exact forgetting by design (core split)
def test_core_scenarios_forget_memory_only_rows():
    ids = [f"train/{i:05d}" for i in range(1000)]
    labels = torch.arange(1000) % 5
    scenario = SCENARIOS["memory-only-random-10"]
    core = scenario.core_rows(labels, NAMES, ids)
    forget = scenario.forget_indices(labels, NAMES, ids)
    assert len(forget) == 100 and not core[forget].any() and torch.equal(forget, forget.sort().values)
    assert torch.equal(forget, scenario.forget_indices(labels, NAMES, ids))  # seeded
    with pytest.raises(ValueError, match="pass ids="):
        scenario.forget_indices(labels, NAMES)
    unseen = SCENARIOS["unseen-cat"]
    assert unseen.core_label == "core without cat" and scenario.core_label == "core 50 %"
    assert not unseen.core_rows(labels, NAMES, ids)[unseen.forget_indices(labels, NAMES)].any()
    with pytest.raises(ValueError, match="must be excluded from the core"):
        Scenario("x", classes=("cat",), core_fraction=0.5)
    with pytest.raises(ValueError, match="only 0 are not core"):
        Scenario("x", fraction=0.1, core_fraction=1.0).forget_indices(labels, NAMES, ids)


def test_core_scenarios_add_the_core_spm_and_its_oracles_and_old_caches_stay_valid(tmp_path):
    names = [s.name for s in required_models(["unseen-cat"])]
    assert names[-3:] == ["spm-core-unseen-cat-original-seed0", "spm-core-unseen-cat-retrain-seed0",
                          "spm-core-unseen-cat-retrain-seed1"]
    assert names[:6] == [s.name for s in required_models(["cat"])][:2] + names[2:6]
    # settings added to the preset after models were cached change the cache folder only when set
    root = cache_root(str(tmp_path), "tiny")
    assert root == cache_root(str(tmp_path), "tiny", {"core_fraction": None, "fusion": "relation"})
    assert root != cache_root(str(tmp_path), "tiny", {"fusion": "cosine_prototype"})


@pytest.fixture(scope="module")
def memory_only_run(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("bench-core")
    argv = ["benchmark", "unlearning", "--preset", "tiny", "--scenario", "memory-only-random-10", "--methods", "FT",
            "--epochs", "1", "--max-train-samples", "200", "--max-test-samples", "60",
            "--output-dir", str(root / "out"), "--cache-dir", str(root / "cache"), "--no-progress"]
    assert main(argv) == 0
    return json.loads((root / "out" / "memory-only-random-10" / "results.json").read_text()), root


def test_memory_only_deletion_equals_its_oracle_beside_the_trained_on_rows(memory_only_run):
    report, root = memory_only_run
    assert report["sizes"]["forget"] == 20 and report["sizes"]["forget"] + report["sizes"]["retain"] == 200
    by = {r["method"]: r for r in report["rows"]}
    assert list(by)[:4] == ["SPM core 50 %: no unlearning", "SPM core 50 %: delete from memory (memory-only)",
                            "SPM core 50 %: retrain (oracle, seed 0)", "SPM core 50 %: retrain (seed 1)"]
    assert {"SPM: delete from memory", "Parametric: FT", "Parametric: retrain (oracle, seed 0)"} <= set(by)
    core = by["SPM core 50 %: delete from memory (memory-only)"]
    assert core["gap"] == 0.0 and core["avg_gap"] == 0.0 and core["exact"] and core["memory_only"] == 20
    assert all(split["hard"] == 0.0 for name, split in core["gap_per_split"].items() if name in ("forget", "retain", "test"))
    assert not by["SPM: delete from memory"]["exact"]  # the same rows, trained on by the full-data SPM
    exactness = report["exactness"]
    assert exactness["weights_equal"] and exactness["memory_digest_equal"] and exactness["max_abs_logprob_diff"] == 0.0
    assert report["checks"]["core_exact"] and report["checks"]["core_gap"] == 0.0
    # the probe audit: every row has one, and the core model's encoder is its oracle's
    assert all(set(r["probe"]) == {"forget", "reference"} for r in report["rows"])
    assert core["probe"] == by["SPM core 50 %: retrain (oracle, seed 0)"]["probe"]
    assert report["checks"]["probe_forget"]["Parametric: FT"] == by["Parametric: FT"]["probe"]["forget"]
    table = (root / "out" / "memory-only-random-10" / "results.md").read_text()
    assert "weights bitwise equal True, memory digest equal True" in table and "probe forget / reference" in table


def test_a_run_may_keep_the_core_family_alone_and_the_oracle_seed_alone():
    names = [s.name for s in required_models(["unseen-cat"], families=["spm-core"], oracle_seeds=[0])]
    assert names == ["spm-core-unseen-cat-original-seed0", "spm-core-unseen-cat-retrain-seed0"]
    names = [s.name for s in required_models(["cat"], families=["parametric", "spm"], oracle_seeds=[1, 0])]
    assert names == ["spm-original-seed0", "parametric-original-seed0", "spm-retrain-cat-seed0",
                     "parametric-retrain-cat-seed0", "spm-retrain-cat-seed1", "parametric-retrain-cat-seed1"]
    assert required_models(["cat"]) == required_models(["cat"], families=["spm-core", "spm", "parametric"])
    with pytest.raises(ValueError, match=r"unknown model families \['spm-cor'\]"):
        required_models(["cat"], families=["spm-cor"])
    with pytest.raises(ValueError, match="must include 0"):
        required_models(["cat"], oracle_seeds=[1])
    with pytest.raises(ValueError, match=r"scenarios \['cat'\] have no core split"):
        required_models(["cat", "unseen-cat"], families=["spm-core"])


def test_core_family_alone_on_the_cached_models_reports_exactness_without_the_others(memory_only_run, capsys):
    _, root = memory_only_run
    out = root / "core-only"
    argv = ["benchmark", "unlearning", "--preset", "tiny", "--scenario", "memory-only-random-10",
            "--families", "spm-core", "--oracle-seeds", "0", "--epochs", "1", "--max-train-samples", "200",
            "--max-test-samples", "60", "--output-dir", str(out), "--cache-dir", str(root / "cache"), "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 0
    assert "training" not in capsys.readouterr().out  # every model it needs was cached by the full run
    report = json.loads((out / "memory-only-random-10" / "results.json").read_text())
    assert [r["method"] for r in report["rows"]] == [
        "SPM core 50 %: no unlearning", "SPM core 50 %: delete from memory (memory-only)",
        "SPM core 50 %: retrain (oracle, seed 0)"]
    assert report["families"] == ["spm-core"] and report["oracle_seeds"] == [0]
    checks = report["checks"]
    assert checks["core_exact"] and checks["core_gap"] == 0.0 and checks["core_avg_gap"] == 0.0
    assert not {"spm_gap", "spm_seed_gap", "parametric_seed_gap", "core_seed_gap", "best_parametric_gap"} & set(checks)
    table = (out / "memory-only-random-10" / "results.md").read_text()
    assert "No seed-1 oracle in this run" in table and "weights bitwise equal True" in table
    assert (out / "memory-only-random-10" / "gap_vs_time.png").stat().st_size > 0
    with pytest.raises(SystemExit) as exit_info:
        main(argv[:4] + ["--scenario", "cat", "--families", "spm-core", "--output-dir", str(out)])
    assert exit_info.value.code == 2 and "no core split" in str(exit_info.value.__cause__)
