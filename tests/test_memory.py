"""The forgetting contract (docs/contract.md, `spm_hf.memory`), point by point, on SampleMemory itself."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import CLASSES, make_memory

from spm_hf import (
    ForgetRequestError,
    MemoryIntegrityError,
    MemoryShapeError,
    ReingestionError,
    SampleMemory,
    UnknownClassError,
    UnknownIdError,
)
from spm_hf.memory import MEMORY_CONFIG_NAME, MEMORY_WEIGHTS_NAME, hash_id


def retained_copy(memory: SampleMemory, forgotten: set[str]) -> SampleMemory:
    """A memory built from scratch from the rows that survive forgetting `forgotten`."""
    fresh = SampleMemory(memory.label_names, memory.value_shape, memory.dtype)
    keep = [r for r, i in enumerate(memory.ids) if i not in forgotten]
    fresh.add(
        [memory.ids[r] for r in keep], memory.labels[keep], memory.values[keep], memory.trained_on[keep]
    )
    return fresh


# 1. receipt ------------------------------------------------------------------------------------
def test_receipt_counts_digests_and_status():
    memory = make_memory(n=50)
    extra = torch.randn(5, 16)
    memory.add([f"extra/{i}" for i in range(5)], [3] * 5, extra, trained_on=False)
    before = memory.digest()
    receipt = memory.forget(classes=["cat"], ids=["train/00000"])
    assert receipt.removed_per_class == {"airplane": 1, "automobile": 0, "bird": 0, "cat": 15, "deer": 0}
    assert receipt.num_removed == 16
    assert receipt.digest_before == before and receipt.digest_after == memory.digest() != before
    assert receipt.num_trained_on == 11 and receipt.num_memory_only == 5
    assert receipt.status_of("extra/2") == "memory_only"
    assert receipt.status_of("train/00003") == "trained_on"
    assert receipt.status_of("train/00001") is None
    assert receipt.seconds > 0
    assert "extra/2" not in json.dumps(receipt.to_dict()) and "train/00003" not in str(receipt)


def test_forget_accepts_class_indices_and_names_alike():
    a, b = make_memory(), make_memory()
    a.forget(classes=[3])
    b.forget(classes=["cat"])
    assert a.digest() == b.digest()


# 2. equivalence / exact downdates --------------------------------------------------------------
def test_class_means_equal_a_memory_built_from_the_retained_samples():
    memory = make_memory(n=200, seed=3)
    memory.class_means()  # build the aggregate first so that forget has to downdate it
    rng = np.random.default_rng(0)
    forgotten = set(rng.choice(memory.ids, 37, replace=False).tolist())
    reference = retained_copy(memory, forgotten)
    memory.forget(ids=sorted(forgotten))
    means, present = memory.class_means()
    ref_means, ref_present = reference.class_means()
    assert torch.equal(present, ref_present)
    assert torch.allclose(memory.class_sums(), reference.class_sums(), rtol=0, atol=1e-12)
    assert (means - ref_means).abs().max() <= 1e-6
    assert memory.digest() == reference.digest()


def test_forgetting_a_whole_class_zeroes_its_aggregate_exactly():
    memory = make_memory()
    memory.class_means()
    memory.forget(classes=["bird"])
    means, present = memory.class_means()
    assert not present[2] and present.sum() == 4
    assert torch.count_nonzero(memory.class_sums()[2]) == 0
    assert memory.class_counts()["bird"] == 0


# 3. physical removal ---------------------------------------------------------------------------
def _bytes_of(memory: SampleMemory) -> bytes:
    return b"".join(
        t.detach().cpu().contiguous().numpy().tobytes()
        for t in (memory._values, memory._labels, memory._trained_on)  # the whole storage, past the live rows
    ) + memory._row_hashes.tobytes()


def test_no_tensor_or_structure_keeps_a_forgotten_value_or_id():
    memory = make_memory(n=40)
    doomed_rows = [r for r, label in enumerate(memory.labels.tolist()) if label == 3]
    doomed_values = [memory.values[r].numpy().tobytes() for r in doomed_rows]
    doomed_ids = [memory.ids[r] for r in doomed_rows] + ["train/00007"]
    doomed_values.append(memory.values[memory.ids.index("train/00007")].numpy().tobytes())
    memory.forget(classes=["cat"], ids=["train/00007"])
    raw = _bytes_of(memory)
    for value in doomed_values:
        assert value not in raw
    text = repr(memory.__dict__) + json.dumps(memory.ledger)
    for sample_id in doomed_ids:
        assert sample_id not in text
        assert sample_id not in memory


def test_saved_files_hold_no_forgotten_value_or_id(tmp_path):
    memory = make_memory(n=40)
    row = memory.ids.index("train/00011")
    value_bytes = memory.values[row].numpy().tobytes()
    cat_values = [memory.values[r].numpy().tobytes() for r in range(40) if memory.labels[r] == 3]
    memory.save(tmp_path)  # an earlier save must be replaced, not appended to
    memory.forget(ids=["train/00011"], classes=["cat"])
    memory.save(tmp_path)
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert value_bytes not in blob and all(v not in blob for v in cat_values)
    assert b"train/00011" not in blob and b"train/00003" not in blob
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MEMORY_WEIGHTS_NAME, MEMORY_CONFIG_NAME])


# 4. idempotent, order-independent --------------------------------------------------------------
def test_forget_twice_then_union_give_the_same_memory():
    a, b, c = make_memory(), make_memory(), make_memory()
    ids_a, ids_b = ["train/00001", "train/00010"], ["train/00010", "train/00022"]
    a.forget(ids=ids_a)
    a.forget(ids=ids_b, classes=["deer"])
    b.forget(ids=sorted(set(ids_a) | set(ids_b)), classes=["deer"])
    c.forget(classes=["deer"], ids=ids_b)
    c.forget(ids=ids_a)
    assert a.digest() == b.digest() == c.digest()
    assert sorted(a.ids) == sorted(b.ids) == sorted(c.ids)
    assert a._forgotten_by_key == b._forgotten_by_key


def test_forgetting_again_is_a_no_op():
    memory = make_memory()
    memory.forget(ids=["train/00004"], classes=["bird"])
    digest, n_events = memory.digest(), len(memory.ledger)
    receipt = memory.forget(ids=["train/00004"], classes=["bird"])
    assert receipt.num_removed == 0 and receipt.already_forgotten == 1
    assert memory.digest() == digest and len(memory.ledger) == n_events


def test_digest_is_order_independent_and_detects_tampering():
    a = make_memory(n=20)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(5))
    b = SampleMemory(CLASSES, (16,))
    b.add([a.ids[i] for i in perm], a.labels[perm], a.values[perm])
    assert a.digest() == b.digest() == a.recompute_digest()
    a.verify()
    a.values[3, 0] += 1.0  # silent in-place edit
    with pytest.raises(MemoryIntegrityError):
        a.verify()


# 5. ledger and re-ingestion guard --------------------------------------------------------------
def test_ledger_records_hashes_not_ids_and_survives_save(tmp_path):
    memory = make_memory()
    receipt = memory.forget(ids=["train/00002", "train/00003"])
    memory.save(tmp_path)
    saved = json.loads((tmp_path / MEMORY_CONFIG_NAME).read_text())
    event = saved["ledger"][0]
    assert event["num_removed"] == 2
    assert event["digest_before"] == receipt.digest_before and event["digest_after"] == receipt.digest_after
    assert event["id_hashes"] == sorted([hash_id("train/00002", memory.ledger_key), hash_id("train/00003", memory.ledger_key)])
    loaded = SampleMemory.load(tmp_path)
    assert loaded.is_forgotten("train/00002") and not loaded.is_forgotten("train/00004")
    assert loaded.ledger_summary()["num_forgotten"] == 2
    assert "id_hashes" not in json.dumps(loaded.ledger_summary())


def test_add_refuses_forgotten_ids_unless_told(tmp_path):
    memory = make_memory()
    value = memory.values[memory.ids.index("train/00002")].clone()
    memory.forget(ids=["train/00002"])
    memory.save(tmp_path)
    memory = SampleMemory.load(tmp_path)
    n, digest = len(memory), memory.digest()
    with pytest.raises(ReingestionError, match="forgotten earlier"):
        memory.add(["new/1", "train/00002"], [0, 2], torch.randn(2, 16))
    assert len(memory) == n and memory.digest() == digest  # nothing half-added
    memory.add(["train/00002"], [2], value[None], allow_reingest=True)
    assert "train/00002" in memory and len(memory) == n + 1


# 6. bad requests: clear errors, nothing changed ------------------------------------------------
@pytest.mark.parametrize(
    "request_kwargs, error, message",
    [
        (dict(classes=["unicorn"]), UnknownClassError, "unknown class 'unicorn'; valid names: \\['airplane'"),
        (dict(classes=[7]), UnknownClassError, "out of range"),
        (dict(classes=["cat"], ids=["nope/1"]), UnknownIdError, "nope/1"),
        (dict(classes=CLASSES), ForgetRequestError, "every sample"),
        (dict(), ForgetRequestError, "needs ids"),
    ],
)
def test_bad_forget_requests_raise_and_change_nothing(request_kwargs, error, message):
    memory = make_memory()
    memory.class_means()
    digest, ids, sums = memory.digest(), memory.ids, memory.class_sums().clone()
    with pytest.raises(error, match=message):
        memory.forget(**request_kwargs)
    assert memory.digest() == digest and memory.ids == ids and torch.equal(memory.class_sums(), sums)
    assert memory.ledger == []


def test_add_rejects_bad_shapes_labels_and_duplicates():
    memory = make_memory(n=10)
    digest = memory.digest()
    with pytest.raises(MemoryShapeError, match="value_shape"):
        memory.add(["x"], [0], torch.randn(1, 8))
    with pytest.raises(UnknownClassError):
        memory.add(["x"], [9], torch.randn(1, 16))
    with pytest.raises(ValueError, match="already in memory"):
        memory.add(["train/00001"], [0], torch.randn(1, 16))
    with pytest.raises(ValueError, match="duplicate"):
        memory.add(["y", "y"], [0, 0], torch.randn(2, 16))
    assert memory.digest() == digest and len(memory) == 10


def test_corrupted_files_are_named(tmp_path):
    memory = make_memory()
    memory.save(tmp_path)
    weights = tmp_path / MEMORY_WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(MemoryIntegrityError, match=MEMORY_WEIGHTS_NAME):
        SampleMemory.load(tmp_path)
    (tmp_path / MEMORY_CONFIG_NAME).write_text("{not json")
    with pytest.raises(MemoryIntegrityError, match=MEMORY_CONFIG_NAME):
        SampleMemory.load(tmp_path)


def test_save_is_atomic_no_temporary_files_left(tmp_path):
    memory = make_memory()
    memory.save(tmp_path)
    memory.forget(classes=["cat"])
    memory.save(tmp_path)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    assert SampleMemory.load(tmp_path).digest() == memory.digest()


# 7. formats ------------------------------------------------------------------------------------
def test_saved_memory_is_safetensors_and_json_only(tmp_path):
    memory = make_memory()
    memory.save(tmp_path)
    for path in tmp_path.iterdir():
        head = path.read_bytes()[:2]
        assert head not in (b"\x80\x04", b"\x80\x05", b"PK")  # no pickle, no torch zip
    json.loads((tmp_path / MEMORY_CONFIG_NAME).read_text())
    from safetensors import safe_open

    with safe_open(str(tmp_path / MEMORY_WEIGHTS_NAME), "pt") as f:
        assert sorted(f.keys()) == ["keys", "labels", "trained_on", "values"]


# growth, images, neighbours --------------------------------------------------------------------
def test_growth_keeps_rows_and_uint8_images_round_trip(tmp_path):
    memory = SampleMemory(["0", "1"], (1, 4, 4), dtype=torch.uint8)
    images = torch.randint(0, 256, (300, 1, 4, 4), dtype=torch.uint8)
    for start in range(0, 300, 7):  # many small adds force several reallocations
        stop = min(start + 7, 300)
        memory.add([f"i{k}" for k in range(start, stop)], torch.arange(start, stop) % 2, images[start:stop])
    assert torch.equal(memory.values, images)
    memory.forget(ids=["i5"])
    memory.save(tmp_path)
    loaded = SampleMemory.load(tmp_path)
    assert loaded.dtype == torch.uint8 and loaded.digest() == memory.digest()
    with pytest.raises(MemoryShapeError):
        memory.add(["f"], [0], torch.rand(1, 1, 4, 4))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_knn_matches_brute_force_before_and_after_forget(backend):
    memory = make_memory(n=300, seed=7)
    queries = torch.randn(9, 16, generator=torch.Generator().manual_seed(8))
    for step in range(2):
        dist, keys = memory.knn(queries, 12, backend=backend)
        ref = torch.cdist(queries.double(), memory.values.double()).pow(2)
        ref_dist, ref_rows = torch.sort(ref, dim=1)
        assert torch.equal(keys.long(), memory.keys[ref_rows[:, :12]])  # keys, not rows, come back
        assert torch.allclose(dist.double(), ref_dist[:, :12], atol=1e-3)
        memory.forget(classes=["cat"], ids=["train/00000"])  # second round: after a forget


def test_faiss_index_follows_forget_and_add():
    memory = make_memory(n=100)
    queries = torch.randn(4, 16)
    memory.knn(queries, 5, backend="faiss")  # builds the index
    memory.forget(ids=[f"train/{i:05d}" for i in range(0, 100, 3)])
    memory.add(["late/1"], [1], torch.randn(1, 16))
    index = memory._faiss_index()
    assert index.ntotal == len(memory)
    _, keys = memory.knn(queries, len(memory), backend="faiss")
    _, ref = memory.knn(queries, len(memory), backend="torch")
    assert torch.equal(keys.long()[:, :10], ref[:, :10])
