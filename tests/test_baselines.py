"""spm_hf.baselines.unlearning: each method runs on a tiny parametric model, moves the weights it should, and
leaves its input untouched."""

import copy

import pytest
import torch
import torch.nn.functional as F

from spm_hf import SPMConfig
from spm_hf.baselines.parametric import ParametricForImageClassification
from spm_hf.baselines.unlearning import (
    DEFAULTS,
    UNLEARNING_METHODS,
    finetune,
    gradient_ascent,
    l1_norm,
    l1_sparse,
    random_labels,
    saliency_mask,
    salun,
)


LABELS = ["a", "b", "c"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster (no thread-pool start-up) and leaves the other cores free."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(seed: int = 0) -> ParametricForImageClassification:
    torch.manual_seed(seed)
    config = SPMConfig(
        encoder="resnet-tiny",
        image_size=8,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    return ParametricForImageClassification(config).eval()


def make_split(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.fixture
def data():
    return {"forget": make_split(12, 1), "retain": make_split(24, 2)}


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(a: dict, b: dict) -> list[str]:
    return [n for n in a if not torch.equal(a[n], b[n])]


def train_mode_loss(model, x, y) -> float:
    """CE with batch statistics (what a one-batch training step sees), on a copy: no buffer changes."""
    m = copy.deepcopy(model).train()
    with torch.no_grad():
        return F.cross_entropy(m(pixel_values=x).logits, y).item()


FAST = {"epochs": 2, "lr": 0.05, "batch_size": 8, "show_progress": False}


@pytest.mark.parametrize("name", sorted(UNLEARNING_METHODS))
def test_every_method_returns_a_new_model_and_leaves_the_input_untouched(name, data):
    model = make_model()
    before = snapshot(model)
    unlearned, seconds = UNLEARNING_METHODS[name](model, forget=data["forget"], retain=data["retain"], seed=0, **FAST)
    assert isinstance(unlearned, ParametricForImageClassification)
    assert unlearned is not model
    assert not unlearned.training
    assert isinstance(seconds, float) and seconds > 0
    assert changed(before, snapshot(model)) == []  # input untouched, buffers included
    assert changed(params(model), params(unlearned))  # the copy did move
    # same seed -> same result (data order and random labels come from the seed)
    again, _ = UNLEARNING_METHODS[name](model, forget=data["forget"], retain=data["retain"], seed=0, **FAST)
    assert changed(params(unlearned), params(again)) == []


def test_registry_and_defaults():
    assert set(UNLEARNING_METHODS) == {"FT", "GA", "RL", "l1_sparse", "SalUn"}
    assert set(DEFAULTS) == set(UNLEARNING_METHODS)
    assert DEFAULTS["GA"]["lr"] == 1e-4 and DEFAULTS["SalUn"]["threshold"] == 0.5


def test_ga_increases_the_forget_loss(data):
    model = make_model()
    x, y = data["forget"]
    # one full batch per step: plain gradient ascent on exactly the loss we measure
    unlearned, _ = gradient_ascent(
        model, data["forget"], data["retain"], epochs=3, lr=0.01, batch_size=12, show_progress=False
    )
    assert train_mode_loss(unlearned, x, y) > train_mode_loss(model, x, y) + 0.01


def test_ft_reads_only_the_retain_set(data):
    model = make_model()
    a, _ = finetune(model, data["forget"], data["retain"], **FAST)
    b, _ = finetune(model, make_split(12, 99), data["retain"], **FAST)
    assert changed(params(a), params(b)) == []  # forget data is not read
    c, _ = finetune(model, data["forget"], make_split(24, 98), **FAST)
    assert changed(params(a), params(c))
    # and it fits the retain set
    x, y = data["retain"]
    assert train_mode_loss(a, x, y) < train_mode_loss(model, x, y)


def test_rl_reads_the_forget_set_and_uses_random_labels(data):
    model = make_model()
    a, _ = random_labels(model, data["forget"], data["retain"], **FAST)
    b, _ = random_labels(model, make_split(12, 99), data["retain"], **FAST)
    assert changed(params(a), params(b))  # forget data matters
    ft, _ = finetune(model, data["forget"], data["retain"], **FAST)
    assert changed(params(a), params(ft))
    # the forget labels are not used: relabelling the forget set changes nothing
    x_f, y_f = data["forget"]
    c, _ = random_labels(model, (x_f, (y_f + 1) % 3), data["retain"], **FAST)
    assert changed(params(a), params(c)) == []
    # but the seed (which draws the random labels) does
    d, _ = random_labels(model, data["forget"], data["retain"], seed=1, **FAST)
    assert changed(params(a), params(d))


def test_l1_sparse_shrinks_the_weights(data):
    model = make_model()
    ft, _ = finetune(model, data["forget"], data["retain"], **FAST)
    l1, _ = l1_sparse(model, data["forget"], data["retain"], alpha=0.05, **FAST)
    with torch.no_grad():
        assert l1_norm(l1).item() < l1_norm(ft).item() - 1.0
    # alpha = 0 is exactly FT
    same, _ = l1_sparse(model, data["forget"], data["retain"], alpha=0.0, **FAST)
    assert changed(params(ft), params(same)) == []


def test_saliency_mask_keeps_the_largest_forget_gradients(data):
    model = make_model()
    before = snapshot(model)
    mask = saliency_mask(model, data["forget"], threshold=0.3, batch_size=5)
    assert changed(before, snapshot(model)) == []  # the model is not changed
    named = dict(model.named_parameters())
    assert set(mask) == set(named)
    total = sum(p.numel() for p in named.values())
    kept = sum(int(m.sum()) for m in mask.values())
    assert kept == int(0.3 * total)
    # recompute g = sum of per-batch gradients in eval mode
    model.eval()
    x, y = data["forget"]
    grads = {n: torch.zeros_like(p) for n, p in named.items()}
    for s in range(0, 12, 5):
        model.zero_grad()
        F.cross_entropy(model(pixel_values=x[s : s + 5]).logits, y[s : s + 5]).backward()
        for n, p in named.items():
            grads[n] += p.grad
    inside = torch.cat([grads[n].abs()[mask[n]] for n in named])
    outside = torch.cat([grads[n].abs()[~mask[n]] for n in named])
    assert inside.min() >= outside.max()
    assert inside.max() > outside.max()


def test_salun_changes_only_masked_weights(data):
    model = make_model()
    original = params(model)
    unlearned, _ = salun(model, data["forget"], data["retain"], **FAST)
    mask = saliency_mask(model, data["forget"], threshold=0.5, batch_size=FAST["batch_size"])
    after = params(unlearned)
    moved_inside = 0
    for n, m in mask.items():
        assert torch.equal(after[n][~m], original[n][~m]), n  # bit-identical outside the mask
        moved_inside += int((after[n][m] != original[n][m]).sum())
    assert moved_inside > 0.5 * sum(int(m.sum()) for m in mask.values())
    assert changed(original, params(model)) == []


def test_salun_with_a_given_mask(data):
    model = make_model()
    original = params(model)
    mask = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    mask["classifier.weight"][:] = True
    unlearned, _ = salun(model, data["forget"], data["retain"], mask=mask, **FAST)
    assert changed(original, params(unlearned)) == ["classifier.weight"]
    with pytest.raises(KeyError):
        salun(model, data["forget"], data["retain"], mask={"classifier.weight": mask["classifier.weight"]}, **FAST)


def test_uint8_images_are_accepted(data):
    model = make_model()
    g = torch.Generator().manual_seed(5)
    forget = (torch.randint(0, 256, (6, 3, 8, 8), generator=g, dtype=torch.uint8), torch.tensor([0, 1, 2, 0, 1, 2]))
    retain = (torch.randint(0, 256, (6, 3, 8, 8), generator=g, dtype=torch.uint8), torch.tensor([2, 1, 0, 2, 1, 0]))
    a, _ = random_labels(model, forget, retain, **FAST)
    b, _ = random_labels(model, (forget[0].float() / 255, forget[1]), (retain[0].float() / 255, retain[1]), **FAST)
    assert changed(params(a), params(b)) == []
    with pytest.raises(TypeError):
        finetune(model, (forget[0].long(), forget[1]), retain, **FAST)
