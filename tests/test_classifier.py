"""SPMForImageClassification: outputs, forgetting equivalence, persistence, HF integration."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import CLASSES, HIDE_SPM_HF, make_config, make_memory
from PIL import Image

from spm_hf import (
    MemoryShapeError,
    SampleMemory,
    SPMForImageClassification,
    make_image_processor,
)
from spm_hf.data import tensors_to_dataset
from spm_hf.memory import MEMORY_WEIGHTS_NAME
from spm_hf.modeling_spm import leave_one_out_neighbours, leave_one_out_prototypes, neighbour_softmax_log_probs


def assert_same_logprobs(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    assert torch.equal(torch.isinf(a), torch.isinf(b)), "the classes with probability 0 differ"
    finite = torch.isfinite(a)
    assert (a[finite] - b[finite]).abs().max() <= atol


def retained_memory(memory: SampleMemory, forgotten_ids: set[str], forgotten_classes: set[int]) -> SampleMemory:
    fresh = SampleMemory(memory.label_names, memory.value_shape)
    keep = [
        r
        for r, (i, y) in enumerate(zip(memory.ids, memory.labels.tolist()))
        if i not in forgotten_ids and y not in forgotten_classes
    ]
    fresh.add([memory.ids[r] for r in keep], memory.labels[keep], memory.values[keep])
    return fresh


def test_logits_are_log_probabilities_and_loss_is_nll(model, images):
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    out = model(images, labels=labels)
    assert out.logits.shape == (6, len(CLASSES)) and out.embeddings.shape == (6, 16)
    assert torch.allclose(out.logits.exp().sum(1), torch.ones(6), atol=1e-5)
    assert torch.isclose(out.loss, -out.logits[torch.arange(6), labels].mean())


def test_a_forgotten_class_gets_probability_exactly_zero(model, images):
    model.forget(classes=["cat"])
    logits = model(images).logits
    assert torch.all(logits[:, 3] == float("-inf")) and torch.all(logits.exp()[:, 3] == 0)
    assert torch.allclose(logits.exp().sum(1), torch.ones(6), atol=1e-5)
    assert not torch.any(logits.argmax(1) == 3)


@pytest.mark.parametrize(
    "mode, backend", [("class_mean", "torch"), ("knn", "torch"), ("knn", "faiss")]
)
def test_forget_equals_a_memory_built_from_the_retained_samples(mode, backend, images):
    torch.manual_seed(0)
    config = make_config(memory_mode=mode, knn_k=15, knn_backend=backend)
    model = SPMForImageClassification(config).eval()
    memory = make_memory(n=120, seed=2)
    reference = SPMForImageClassification(config).eval()
    reference.load_state_dict(model.state_dict())
    model.set_memory(memory)
    with torch.no_grad():
        model(images)  # builds aggregates / index before the deletion, so they must be downdated
    forgotten_ids = {"train/00000", "train/00011", "train/00042", "train/00097"}
    model.forget(ids=sorted(forgotten_ids), classes=["bird"])
    reference.set_memory(retained_memory(make_memory(n=120, seed=2), forgotten_ids, {2}))
    with torch.no_grad():
        assert_same_logprobs(model(images).logits, reference(images).logits)
        assert torch.all(model(images).logits[:, 2] == float("-inf"))


def test_knn_mode_uses_each_querys_own_neighbourhood(images):
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config(memory_mode="knn", knn_k=7,
                                                  knn_aggregation="neighbourhood_means")).eval()
    model.set_memory(make_memory(n=80))
    with torch.no_grad():
        out = model(images)
        rows = out.neighbor_keys  # keys equal rows in a memory that has forgotten nothing
        assert rows.shape == (6, 7)
        # recompute query 2 alone: its prototypes come from its own 7 neighbours only
        q = out.embeddings[2:3]
        d = ((model.memory.values - q) ** 2).sum(1)
        own = torch.topk(d, 7, largest=False).indices
        assert set(own.tolist()) == set(rows[2].tolist())
        labels = model.memory.labels[own]
        present = torch.zeros(5, dtype=torch.bool)
        present[labels] = True
        means = torch.stack([model.memory.values[own][labels == c].mean(0) if present[c] else torch.zeros(16) for c in range(5)])
        expected = model.fusion(q, means, present)
        assert_same_logprobs(out.logits[2:3], expected)


@pytest.mark.parametrize("fusion", ["relation", "cosine_prototype"])
def test_knn_neighbour_softmax_sums_each_classs_neighbours(images, fusion):
    """`knn_aggregation="neighbour_softmax"`: every neighbour is a prototype of its own; a class's probability is the sum
    of the fusion's probabilities of its neighbours; a class with no neighbour has probability exactly 0."""
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config(memory_mode="knn", knn_k=7, fusion=fusion,
                                                  knn_aggregation="neighbour_softmax")).eval()
    model.set_memory(make_memory(n=80))
    with torch.no_grad():
        out = model(images)
        for query in range(len(images)):
            q = out.embeddings[query : query + 1]
            own = torch.topk(((model.memory.values - q) ** 2).sum(1), 7, largest=False).indices
            assert set(own.tolist()) == set(out.neighbor_keys[query].tolist())
            values, labels = model.memory.values[own], model.memory.labels[own]
            per_neighbour = model.fusion(q, values[None], torch.ones(1, 7, dtype=torch.bool)).exp()[0]
            expected = torch.full((5,), float("-inf"))
            for c in labels.unique().tolist():
                expected[c] = per_neighbour[labels == c].sum().log()
            assert_same_logprobs(out.logits[query], expected)
        assert torch.allclose(out.logits.exp().sum(1), torch.ones(len(images)), atol=1e-5)



@pytest.mark.parametrize("fusion", ["relation", "cosine_prototype"])
def test_knn_default_reading_averages_the_neighbours_with_the_class_means(images, fusion):
    """The default `knn` reading, `class_mean_mixture`: p = (p_class_mean + p_neighbour_softmax) / 2, so a class
    with no neighbour keeps half its class-mean probability, and a forgotten class has probability exactly 0."""
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config(memory_mode="knn", knn_k=3, fusion=fusion)).eval()
    model.set_memory(make_memory(n=80))
    assert model.config.knn_aggregation == "class_mean_mixture"
    with torch.no_grad():
        mixed = model(images).logits
        model.config.memory_mode = "class_mean"
        class_mean = model(images).logits
        model.config.memory_mode, model.config.knn_aggregation = "knn", "neighbour_softmax"
        local = model(images).logits
    expected = torch.log((class_mean.exp() + local.exp()) / 2)
    torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-5)
    assert torch.isinf(local).any() and torch.isfinite(mixed).all()  # 3 neighbours miss some of the 5 classes
    model.config.knn_aggregation = "class_mean_mixture"
    model.forget(classes=[CLASSES[0]])
    with torch.no_grad():
        after = model(images).logits
    assert torch.isneginf(after[:, 0]).all() and torch.isfinite(after[:, 1:]).all()
    assert torch.allclose(after.exp().sum(1), torch.ones(len(images)), atol=1e-5)

def test_cosine_prototype_fusion_has_no_parameter_and_a_fixed_temperature(images):
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config(fusion="cosine_prototype", fusion_temperature=0.5)).eval()
    model.set_memory(make_memory())
    assert list(model.fusion.parameters()) == [] and not any(k.startswith("fusion.") for k in model.state_dict())
    with torch.no_grad():
        out = model(images)
        means, present = model.memory.class_means()
        cos = torch.nn.functional.normalize(out.embeddings, dim=-1) @ torch.nn.functional.normalize(means, dim=-1).T
        assert_same_logprobs(out.logits, torch.log_softmax(cos / 0.5, dim=-1))
        model.forget(classes=["cat"])
        assert torch.all(model(images).logits[:, 3] == float("-inf"))


def test_several_experts_are_gated_and_trainable(images):
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config(num_experts=3)).train()
    model.set_memory(make_memory())
    out = model(images, labels=torch.tensor([0, 1, 2, 3, 4, 0]))
    assert torch.allclose(out.logits.exp().sum(1), torch.ones(6), atol=1e-5)
    out.loss.backward()
    assert model.fusion.gate.weight.grad.abs().sum() > 0


def test_episodic_inputs_support_set_and_leave_one_out(images):
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config()).eval()
    support = torch.randn(10, 3, 32, 32)
    support_labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    with torch.no_grad():
        out = model(images, support_pixel_values=support, support_labels=support_labels)
        emb = model.encoder(support)
        means = torch.stack([emb[support_labels == c].mean(0) for c in range(5)])
        assert_same_logprobs(out.logits, model.fusion(model.encoder(images), means, torch.ones(5, dtype=torch.bool)))
    # leave-one-out: a query whose class has no other sample in the batch cannot see its own class
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    with torch.no_grad():
        loo = model(images, labels=labels, leave_one_out=True).logits
    assert loo[4, 2] == float("-inf") and loo[5, 3] == float("-inf")
    assert torch.isfinite(loo[0, 0]) and torch.isfinite(loo[0, 2])  # sample 0 sees sample 1 (class 0) and 4 (class 2)
    e = torch.randn(4, 3)
    protos, present = leave_one_out_prototypes(e, torch.tensor([0, 0, 0, 1]), 2)
    assert torch.allclose(protos[0, 0], (e[1] + e[2]) / 2) and not present[3, 1] and present[3, 0]


def test_training_in_knn_mode_reads_each_query_against_its_nearest_batch_mates(images):
    """`episode_reading="knn"`: a leave-one-out batch is read as `knn` mode reads the memory, with the batch
    (each query itself left out) as the memory."""
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    model = SPMForImageClassification(make_config(episode_reading="knn", knn_k=3,
                                                  knn_aggregation="neighbour_softmax")).eval()
    with torch.no_grad():
        out = model(images, labels=labels, leave_one_out=True)
        e = model.encoder(images)
        distances = torch.cdist(e, e) ** 2
        for i in range(len(images)):
            others = [j for j in distances[i].argsort().tolist() if j != i][:3]  # nearest first, never itself
            assert leave_one_out_neighbours(e, 3)[i].tolist() == others
            expected = neighbour_softmax_log_probs(model.fusion, e[i:i + 1], e[others].unsqueeze(0),
                                                   labels[others].unsqueeze(0), len(CLASSES))
            assert_same_logprobs(out.logits[i:i + 1], expected)
        # the mixture averages that with the batch's leave-one-out class means
        model.config.knn_aggregation = "class_mean_mixture"
        mixed = model(images, labels=labels, leave_one_out=True).logits
        class_mean = model.fusion(e, *leave_one_out_prototypes(e, labels, len(CLASSES)))
        assert_same_logprobs(mixed.exp(), (class_mean.exp() + out.logits.exp()) / 2)
        # k larger than the batch: every other sample; a batch of one: nothing to read, loss skips it
        model.config.knn_k = 64
        assert leave_one_out_neighbours(e, 64).shape == (6, 5)
        alone = model(images[:1], labels=labels[:1], leave_one_out=True)
        assert alone.loss == 0 and alone.loss_mask.tolist() == [0]
    model.train()
    loss = model(images, labels=labels, leave_one_out=True).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="episode_reading"):
        make_config(episode_reading="neighbours")
    model.config.episode_reading = "nearest"  # set on a loaded config: refused before the forward reads it
    with pytest.raises(ValueError, match="episode_reading"):
        model(images, labels=labels, leave_one_out=True)


def test_training_step_gives_finite_gradients_with_absent_classes(images):
    model = SPMForImageClassification(make_config()).train()
    out = model(images[:4], labels=torch.tensor([0, 0, 1, 1]), leave_one_out=True)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_memory_that_does_not_fit_the_model_is_refused(model):
    with pytest.raises(MemoryShapeError, match="shape \\(8,\\)"):
        model.set_memory(make_memory(dim=8))
    with pytest.raises(MemoryShapeError, match="classes"):
        model.set_memory(SampleMemory(["a", "b"], (16,)))
    assert len(model.memory) == 60  # the old memory is still attached


def test_no_memory_gives_a_clear_error(images):
    model = SPMForImageClassification(make_config()).eval()
    with pytest.raises(RuntimeError, match="no sample memory"):
        model(images)
    with pytest.raises(RuntimeError, match="no sample memory"):
        model.forget(classes=["cat"])


def _tiny_dataset(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return tensors_to_dataset(images, torch.arange(n) % 5, CLASSES)


def test_build_memory_encodes_a_datasets_split_without_augmentation():
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config()).eval()
    processor = make_image_processor()
    ds = _tiny_dataset()
    memory = model.build_memory(ds, image_processor=processor, batch_size=16, show_progress=False)
    assert len(memory) == 40 and memory.ids[:2] == ["train/00000", "train/00001"]
    assert memory.class_counts() == {name: 8 for name in CLASSES}
    pixel_values = processor(list(ds["image"][:3]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.encoder(pixel_values)
    assert torch.allclose(memory.values[:3], expected, atol=1e-4)
    assert model.memory is memory and bool(memory.trained_on.all())


def test_save_load_round_trip_gives_identical_logits(model, images, tmp_path):
    model.image_processor = make_image_processor()
    model.forget(ids=["train/00005"])
    model.save_pretrained(tmp_path)
    loaded = SPMForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(images).logits, model(images).logits)
    assert loaded.memory.digest() == model.memory.digest() and loaded.memory.is_forgotten("train/00005")
    assert loaded.image_processor is not None and loaded.image_processor.size["height"] == 32


def test_saved_model_folder_holds_no_forgotten_row_or_id(model, tmp_path):
    cat_rows = [r for r, y in enumerate(model.memory.labels.tolist()) if y == 3]
    cat_values = [model.memory.values[r].numpy().tobytes() for r in cat_rows]
    cat_ids = [model.memory.ids[r] for r in cat_rows]
    model.save_pretrained(tmp_path)  # a save before the forget, overwritten below
    model.forget(classes=["cat"])
    model.save_pretrained(tmp_path)
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert all(v not in blob for v in cat_values)
    assert all(i.encode() not in blob for i in cat_ids)


def test_corrupted_memory_file_fails_loading_with_its_name(model, tmp_path):
    model.save_pretrained(tmp_path)
    path = tmp_path / MEMORY_WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=MEMORY_WEIGHTS_NAME):
        SPMForImageClassification.from_pretrained(tmp_path)


def test_auto_classes_and_image_classification_pipeline(model, tmp_path):
    from transformers import AutoModelForImageClassification, pipeline

    model.image_processor = make_image_processor()
    model.save_pretrained(tmp_path)
    auto = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert type(auto) is SPMForImageClassification and len(auto.memory) == 60
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    clf = pipeline("image-classification", model=str(tmp_path))
    result = clf(image, top_k=5)
    assert sorted(r["label"] for r in result) == sorted(CLASSES)
    assert abs(sum(r["score"] for r in result) - 1) < 1e-4
    # after forgetting, "cat" is no longer a possible answer
    model.forget(classes=["cat"])
    model.save_pretrained(tmp_path)
    result = pipeline("image-classification", model=str(tmp_path))(image, top_k=4)
    assert "cat" not in [r["label"] for r in result]
    assert abs(sum(r["score"] for r in result) - 1) < 1e-4


def test_trust_remote_code_loads_where_spm_hf_is_not_importable(model, images, tmp_path):
    model.image_processor = make_image_processor()
    model.save_pretrained(tmp_path)
    torch.save({"images": images}, tmp_path.parent / "inputs.pt")  # test input only, not a saved artifact
    with torch.no_grad():
        expected = model(images).logits
    script = HIDE_SPM_HF + textwrap.dedent(
        f"""
        import json, sys
        try:
            import spm_hf
            raise SystemExit("spm_hf should not be importable here")
        except ImportError:
            pass
        import torch
        from transformers import AutoModelForImageClassification, pipeline
        model = AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        images = torch.load({str(tmp_path.parent / "inputs.pt")!r})["images"]
        with torch.no_grad():
            logits = model(images).logits
        model.forget(classes=["cat"])
        clf = pipeline("image-classification", model={str(tmp_path)!r}, trust_remote_code=True)
        from PIL import Image
        top = clf(Image.new("RGB", (32, 32), (120, 30, 200)), top_k=2)
        print(json.dumps({{"module": type(model).__module__, "logits": logits.tolist(),
                           "n": len(model.memory), "labels": [t["label"] for t in top]}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HOME"] = str(tmp_path.parent / "hf_home")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=str(tmp_path.parent)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["module"].startswith("transformers_modules.")
    assert payload["n"] == 48
    assert_same_logprobs(torch.tensor(payload["logits"]), expected)
    assert all(label in CLASSES for label in payload["labels"])


def test_a_rows_memory_value_does_not_depend_on_which_other_rows_share_its_batch():
    # Exact forgetting compares a memory with one built without the forgotten rows: the remaining rows must
    # encode to the same bits. oneDNN picks kernels by batch size (a batch of 1 differs from a batch of 4 in
    # the last bits), so build_memory pads a short final batch to the full size.
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config(encoder="resnet-small")).eval()
    processor = make_image_processor()
    ds = _tiny_dataset(n=9)  # batches of 4: [4, 4, 1]
    full = model.build_memory(ds, image_processor=processor, batch_size=4, show_progress=False)
    kept = [0, 1, 3, 5, 6, 8]  # batches [4, 2]: row 8 moves from a batch of 1 into one of 2
    part = model.build_memory(ds.select(kept), image_processor=processor, batch_size=4, show_progress=False)
    assert part.ids == [full.ids[i] for i in kept]
    assert torch.equal(part.values, full.values[kept])
