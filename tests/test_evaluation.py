"""spm_hf.evaluation: metric conventions on hand-computed cases, MIA on constructed cases, -inf handling,
predict_logprobs on both model kinds, and the `evaluate` module."""

import math

import numpy as np
import pytest
import torch

import evaluate
from spm_hf import SampleMemory, SPMConfig, SPMForImageClassification
from spm_hf.baselines.parametric import ParametricForImageClassification
from spm_hf.evaluation import FORGET_METRIC_PATH
from spm_hf.evaluation import metrics as M


NEG_INF = float("-inf")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster (no thread-pool start-up) and leaves the other cores free."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
LOG = math.log


# ---------------------------------------------------------------------------------------------- accuracies
def test_accuracy_from_indices_and_scores():
    labels = [0, 1, 2, 1]
    assert M.accuracy([0, 1, 1, 1], labels) == pytest.approx(75.0)
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [5.0, 0.0, 4.9], [0.0, 1.0, 1.0]])
    # argmax: 0, 1, 0, 1 (the last row ties 1 and 2: the lowest index wins)
    assert M.accuracy(scores, labels) == pytest.approx(75.0)
    assert M.accuracy(np.asarray(scores), np.asarray(labels)) == pytest.approx(75.0)


def test_ua_fa_ra_ta_conventions():
    scores = torch.tensor([[0.0, -1.0], [0.0, -2.0], [-3.0, 0.0]])  # predicts 0, 0, 1
    labels = torch.tensor([0, 1, 1])
    assert M.forget_accuracy(scores, labels) == pytest.approx(200 / 3)
    assert M.unlearning_accuracy(scores, labels) == pytest.approx(100 / 3)  # UA = 100 - FA
    assert M.retain_accuracy(scores, labels) == pytest.approx(200 / 3)
    assert M.test_accuracy(scores, labels) == pytest.approx(200 / 3)


def test_accuracy_with_deleted_class_at_minus_inf():
    # An SPM whose class 0 was deleted: log-prob -inf; it can never be predicted, so UA on it is 100.
    logp = torch.tensor([[NEG_INF, LOG(0.7), LOG(0.3)], [NEG_INF, LOG(0.2), LOG(0.8)]])
    assert M.unlearning_accuracy(logp, [0, 0]) == 100.0
    assert M.accuracy(logp, [1, 2]) == 100.0


def test_accuracy_rejects_bad_input():
    with pytest.raises(ValueError):
        M.accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError):
        M.accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        M.accuracy([0, 1], [0.0, 1.0])


def test_true_class_probability_from_logits_and_logprobs():
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]])  # softmax rows: (1/4, 3/4), (1/2, 1/2)
    assert M.true_class_probability(logits, [1, 0]).tolist() == pytest.approx([0.75, 0.5])
    logp = torch.tensor([[NEG_INF, 0.0], [LOG(0.25), LOG(0.75)]])
    assert M.true_class_probability(logp, [0, 1]).tolist() == pytest.approx([0.0, 0.75])
    with pytest.raises(ValueError, match="all -inf"):
        M.true_class_probability(torch.tensor([[NEG_INF, NEG_INF]]), [0])


# ---------------------------------------------------------------------------------------------- MIA
def _mia_sets():
    members = np.linspace(0.90, 1.00, 300)  # the retain set: confident
    test = np.linspace(0.00, 0.50, 100)  # unseen data: far less confident, disjoint support
    return members, test


def test_mia_forget_like_test_set_is_all_non_members():
    members, test = _mia_sets()
    assert M.mia_efficacy(members, test, test.copy()) == 100.0
    assert M.mia_efficacy(members, test, np.linspace(0.05, 0.45, 37)) == 100.0


def test_mia_forget_like_retain_set_is_all_members():
    members, test = _mia_sets()
    assert M.mia_efficacy(members, test, members[:50]) == 0.0


def test_mia_mixed_forget_set_counts_non_members():
    members, test = _mia_sets()
    forget = np.concatenate([test[:30], members[:10]])  # 30 of 40 look unseen
    assert M.mia_efficacy(members, test, forget) == pytest.approx(75.0)
    as_torch = [torch.tensor(a) for a in (members, test, forget)]
    assert M.mia_efficacy(*as_torch, seed=3) == pytest.approx(75.0)


def test_mia_shadow_members_are_a_test_sized_retain_subset():
    # Members are a seeded random subset of min(|retain|, |test|) retain samples: rebuild the attacker by
    # hand from that rule and compare. (Using the whole retain set, or its first rows, gives other answers.)
    rng = np.random.default_rng(0)
    retain = np.concatenate([rng.uniform(0.95, 1.0, 100), rng.uniform(0.0, 0.5, 900)])
    test = rng.uniform(0.0, 0.5, 100)
    forget = rng.uniform(0.0, 1.0, 50)
    a = M.mia_efficacy(retain, test, forget, seed=1)
    assert a == M.mia_efficacy(torch.tensor(retain), torch.tensor(test), torch.tensor(forget), seed=1)
    # the fitted attacker only saw min(|retain|, |test|) = 100 members: compare against a hand-built fit
    from sklearn.svm import SVC

    members = retain[np.sort(np.random.default_rng(1).choice(1000, size=100, replace=False))]
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(
        np.concatenate([members, test]).reshape(-1, 1), np.r_[np.ones(100), np.zeros(100)]
    )
    assert a == pytest.approx(100 * (1 - clf.predict(forget.reshape(-1, 1)).mean()))


def test_mia_rejects_empty_or_nan():
    members, test = _mia_sets()
    with pytest.raises(ValueError):
        M.mia_efficacy(members, test, [])
    with pytest.raises(ValueError):
        M.mia_efficacy(members, np.r_[test, np.nan], test)


# ---------------------------------------------------------------------------------------------- gaps
def test_prediction_gap_hand_computed():
    a = torch.log(torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]]))
    b = torch.log(torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0]]))
    gap = M.prediction_gap(a, b)
    # argmax a: 0 (tie -> lowest), 1; argmax b: 0, 0 -> 1 of 2 differ
    assert gap.hard == pytest.approx(50.0)
    # KL(b || a): row 1 = 1 * log(1 / 0.5); row 2 = 0.6 log(0.6/0.2) + 0.4 log(0.4/0.8); 0 log 0 = 0
    kl1 = LOG(2.0)
    kl2 = 0.6 * LOG(3.0) + 0.4 * LOG(0.5)
    assert gap.soft == pytest.approx((kl1 + kl2) / 2)
    assert M.prediction_gap(b, b) == (0.0, pytest.approx(0.0, abs=1e-12))


def test_prediction_gap_clamps_minus_inf_where_reference_has_mass():
    # a deleted class 1 (-inf); the reference gives it 0.5: log p_a is clamped to log(1e-8)
    a = torch.tensor([[0.0, NEG_INF]])
    b = torch.log(torch.tensor([[0.5, 0.5]]))
    gap = M.prediction_gap(a, b)
    expected = 0.5 * (LOG(0.5) - 0.0) + 0.5 * (LOG(0.5) - LOG(1e-8))
    assert math.isfinite(gap.soft)
    assert gap.soft == pytest.approx(expected)
    assert gap.hard == 0.0  # both argmax 0 (b ties -> index 0)
    # a custom floor
    assert M.prediction_gap(a, b, floor=-5.0).soft == pytest.approx(0.5 * LOG(0.5) + 0.5 * (LOG(0.5) + 5.0))


def test_prediction_gap_zero_reference_mass_contributes_nothing():
    # both have -inf on class 2 (0 log 0 = 0): no NaN, KL exactly as if class 2 did not exist
    a = torch.tensor([[LOG(0.25), LOG(0.75), NEG_INF]])
    b = torch.tensor([[LOG(0.5), LOG(0.5), NEG_INF]])
    gap = M.prediction_gap(a, b)
    assert gap.soft == pytest.approx(0.5 * LOG(0.5 / 0.25) + 0.5 * LOG(0.5 / 0.75))
    assert gap.hard == 100.0
    # reference has -inf where a has mass: contributes 0 too
    assert M.prediction_gap(b, a).soft == pytest.approx(0.25 * LOG(0.25 / 0.5) + 0.75 * LOG(0.75 / 0.5))


def test_prediction_gap_accepts_raw_logits():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    logp = torch.log_softmax(logits, -1)
    assert M.prediction_gap(logits, logp + 0.0).soft == pytest.approx(0.0, abs=1e-12)
    assert M.prediction_gap(logits + 7.0, logp) == (0.0, pytest.approx(0.0, abs=1e-12))


def test_per_split_gap_means():
    a = {"forget": torch.tensor([[0.0, -9.0], [0.0, -9.0]]), "test": torch.tensor([[0.0, -9.0], [-9.0, 0.0]])}
    b = {"forget": torch.tensor([[-9.0, 0.0], [-9.0, 0.0]]), "test": torch.tensor([[0.0, -9.0], [0.0, -9.0]])}
    out = M.per_split_gap(a, b)
    assert out["forget"]["hard"] == 100.0
    assert out["test"]["hard"] == 50.0
    assert out["mean"]["hard"] == pytest.approx(75.0)
    assert out["harmonic"]["hard"] == pytest.approx(2 / (1 / 100 + 1 / 50))
    assert out["mean"]["soft"] == pytest.approx((out["forget"]["soft"] + out["test"]["soft"]) / 2)
    same = M.per_split_gap({"retain": b["test"]}, {"retain": b["test"]})
    assert same["harmonic"]["hard"] == 0.0
    with pytest.raises(ValueError):
        M.per_split_gap(a, {"forget": b["forget"]})
    with pytest.raises(ValueError):
        M.per_split_gap({"mean": a["test"]}, {"mean": b["test"]})


def test_avg_gap_salun_table3():
    # SalUn (Fan et al., ICLR 2024), Table 3, 10 % random forgetting: SalUn vs Retrain -> Avg. Gap 1.15
    salun = {"UA": 2.85, "RA": 99.62, "TA": 93.93, "MIA": 14.39}
    retrain = {"UA": 5.24, "RA": 100.00, "TA": 94.26, "MIA": 12.88}
    assert M.avg_gap(salun, retrain) == pytest.approx(1.1525)
    assert M.avg_gap(retrain, retrain) == 0.0
    with pytest.raises(KeyError):
        M.avg_gap({"UA": 1.0}, retrain)


def test_unlearning_metrics_bundle():
    f = (torch.tensor([[0.0, -1.0], [0.0, -1.0]]), torch.tensor([1, 0]))
    r = (torch.tensor([[5.0, 0.0]] * 4), torch.tensor([0, 0, 0, 0]))
    t = (torch.tensor([[0.0, 0.5]] * 4), torch.tensor([1, 1, 0, 0]))
    out = M.unlearning_metrics(f, r, t)
    assert out["FA"] == 50.0 and out["UA"] == 50.0 and out["RA"] == 100.0 and out["TA"] == 50.0
    assert 0.0 <= out["MIA"] <= 100.0


# ---------------------------------------------------------------------------------------------- models
LABELS = ["a", "b", "c"]


def _config():
    return SPMConfig(
        encoder="resnet-tiny", image_size=8, id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )


def test_predict_logprobs_parametric_applies_log_softmax():
    torch.manual_seed(0)
    model = ParametricForImageClassification(_config()).train()
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = M.predict_logprobs(model, x, batch_size=2)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        expected = torch.log_softmax(model(pixel_values=x).logits, -1)
    assert out.shape == (5, 3)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(out.exp().sum(-1), torch.ones(5), atol=1e-5)


def test_predict_logprobs_spm_returns_logits_unchanged():
    torch.manual_seed(0)
    model = SPMForImageClassification(_config()).eval()
    memory = SampleMemory(LABELS, (model.config.embed_dim,))
    g = torch.Generator().manual_seed(1)
    memory.add([f"m{i}" for i in range(9)], torch.arange(9) % 3, torch.randn(9, model.config.embed_dim, generator=g))
    model.set_memory(memory)
    model.forget(classes=["b"])
    x = torch.randn(4, 3, 8, 8, generator=g)
    out = M.predict_logprobs(model, x, batch_size=8)
    with torch.no_grad():
        expected = model(pixel_values=x).logits
    assert torch.equal(out, expected)  # returned as is: no second log_softmax
    assert torch.allclose(M.predict_logprobs(model, x, batch_size=3), expected, atol=1e-5)  # batched
    assert torch.isneginf(out[:, 1]).all()
    assert M.unlearning_accuracy(out, torch.ones(4, dtype=torch.long)) == 100.0


# ---------------------------------------------------------------------------------------------- evaluate module
def _split_data(seed=0):
    rng = np.random.default_rng(seed)
    n = 40
    scores = np.log(rng.dirichlet([1.0, 1.0, 1.0], size=n))
    scores[:10, 2] = -np.inf  # a deleted class on the forget rows
    oracle = np.log(rng.dirichlet([1.0, 1.0, 1.0], size=n))
    labels = rng.integers(0, 3, n)
    splits = np.array(["forget"] * 10 + ["retain"] * 15 + ["test"] * 15)
    return scores, oracle, labels, splits


def test_evaluate_module_matches_functions(tmp_path):
    scores, oracle, labels, splits = _split_data()
    metric = evaluate.load(FORGET_METRIC_PATH, "with_oracle", cache_dir=str(tmp_path))
    half = 20
    for sl in (slice(0, half), slice(half, None)):  # accumulate over batches
        metric.add_batch(
            predictions=scores[sl].tolist(),
            oracle_predictions=oracle[sl].tolist(),
            references=labels[sl].tolist(),
            splits=splits[sl].tolist(),
        )
    out = metric.compute(seed=2)
    parts = {s: (scores[splits == s], labels[splits == s]) for s in ("forget", "retain", "test")}
    oparts = {s: (oracle[splits == s], labels[splits == s]) for s in ("forget", "retain", "test")}
    expected = M.unlearning_metrics(parts["forget"], parts["retain"], parts["test"], seed=2)
    expected_oracle = M.unlearning_metrics(oparts["forget"], oparts["retain"], oparts["test"], seed=2)
    for k, v in expected.items():
        assert out[k] == pytest.approx(v), k
        assert out[f"oracle_{k}"] == pytest.approx(expected_oracle[k]), k
    assert out["avg_gap"] == pytest.approx(M.avg_gap(expected, expected_oracle))
    gaps = M.per_split_gap({s: parts[s][0] for s in parts}, {s: oparts[s][0] for s in oparts})
    for name in ("forget", "retain", "test", "mean", "harmonic"):
        assert out[f"PG_H_{name}"] == pytest.approx(gaps[name]["hard"])
        assert out[f"PG_S_{name}"] == pytest.approx(gaps[name]["soft"], rel=1e-5)  # float32 storage
        assert math.isfinite(out[f"PG_S_{name}"])


def test_evaluate_module_default_config_and_partial_splits(tmp_path):
    metric = evaluate.load(FORGET_METRIC_PATH, cache_dir=str(tmp_path))
    out = metric.compute(predictions=[[0.0, -1.0], [-1.0, 0.0]], references=[0, 0], splits=["forget", "test"])
    assert out == {"FA": 100.0, "UA": 0.0, "TA": 0.0}  # no retain split: no RA, no MIA
    with pytest.raises(ValueError, match="unknown split"):
        metric.compute(predictions=[[0.0, -1.0]], references=[0], splits=["train"])


# ---------------------------------------------------------------------------------------------- bench/toy2d.py
def test_toy2d_bench_runs_fast(tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "toy2d.py"
    spec = importlib.util.spec_from_file_location("toy2d", path)
    toy2d = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy2d)
    out = tmp_path / "toy.png"
    results = toy2d.main(["--steps", "40", "--grid", "40", "--n-per-class", "30", "--out", str(out)])
    assert [r["scenario"] for r in results] == ["class", "cluster"]
    assert out.stat().st_size > 10_000
    for r in results:
        assert r["kept_points"] + r["deleted_points"] == 3 * 30 + 7
        for key in ("disagreement_deletion_vs_retrain_pct", "disagreement_before_vs_retrain_pct"):
            assert 0.0 <= r[key] <= 100.0
    # deleting class C from memory removes it from every prediction
    assert results[0]["disagreement_before_vs_deletion_pct"] > 0.0
