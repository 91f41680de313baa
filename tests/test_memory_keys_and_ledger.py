"""Stable keys, typed listeners, copy(), one forget signature, the private ledger, the seal, validation
before mutation and thread safety of `SampleMemory` (issues 14 and 16)."""

import json
import os
import subprocess
import sys
import threading

import pytest
import torch
from conftest import make_config, make_memory

from spm_hf import SPMForImageClassification
from spm_hf.ledger import LEDGER_KEY_ENV, LedgerKey, LedgerKeyError
from spm_hf.memory import (
    MEMORY_CONFIG_NAME,
    MemoryIntegrityError,
    MemoryListener,
    MemoryShapeError,
    SampleMemory,
    UnknownClassError,
    UnknownKeyError,
)


# ---------------------------------------------------------------------- keys (issue 14, item 3)
def test_keys_are_stable_across_forget_save_and_load_and_never_reused(tmp_path):
    memory = make_memory(n=30)
    key_of = {i: memory.key_of(i) for i in memory.ids}
    assert sorted(key_of.values()) == list(range(30))
    memory.forget(ids=["train/00000", "train/00003"], classes=["bird"])
    assert all(memory.key_of(i) == key_of[i] for i in memory.ids)  # kept rows moved, keys did not
    memory.save(tmp_path)
    loaded = SampleMemory.load(tmp_path)
    assert all(loaded.key_of(i) == key_of[i] for i in loaded.ids)
    new_key = int(loaded.add(["late/1"], [0], torch.randn(1, 16))[0])
    assert new_key == 30  # a forgotten sample's key is never handed out again
    with pytest.raises(UnknownKeyError, match=r"\[0\]"):
        loaded.gather(torch.tensor([0]))


def test_gather_and_ids_of_read_by_key():
    memory = make_memory(n=20)
    memory.forget(ids=["train/00001"])
    keys = memory.keys[:4]
    values, labels = memory.gather(keys.reshape(2, 2))
    assert values.shape == (2, 2, 16) and labels.shape == (2, 2)
    assert torch.equal(values.reshape(4, 16), memory.values[:4])
    assert memory.ids_of(keys) == memory.ids[:4]


def test_knn_output_keys_survive_a_forget_of_other_samples():
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config(memory_mode="knn", knn_k=5)).eval()
    model.set_memory(make_memory(n=80))
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        keys = model(images).neighbor_keys
        used = set(model.memory.ids_of(keys))
        others = [i for i in model.memory.ids if i not in used][:10]
        model.forget(ids=others)
        again = model(images).neighbor_keys
    assert torch.equal(keys, again)  # same neighbours, same keys, although rows moved


def test_faiss_index_is_keyed_and_a_forget_only_removes():
    memory = make_memory(n=200)
    queries = torch.randn(5, 16, generator=torch.Generator().manual_seed(3))
    memory.knn(queries, 3, backend="faiss")
    index = memory._faiss_index()
    calls = []
    original_add = index.index.add_with_ids
    index.index.add_with_ids = lambda *a: calls.append(a) or original_add(*a)
    memory.forget(ids=[f"train/{i:05d}" for i in range(0, 200, 7)])
    assert calls == [] and index.ntotal == len(memory)  # nothing re-added: moved rows keep their keys
    _, faiss_keys = memory.knn(queries, 10, backend="faiss")
    _, torch_keys = memory.knn(queries, 10, backend="torch")
    assert torch.equal(faiss_keys.long(), torch_keys)


def test_listeners_are_typed_and_told_keys():
    memory = make_memory(n=20)

    class Recorder(MemoryListener):
        def __init__(self):
            self.added, self.deleted = [], []

        def on_add(self, memory, keys, values):
            self.added.append(keys.tolist())

        def on_delete(self, memory, keys):
            self.deleted.append(sorted(keys.tolist()))

    recorder = Recorder()
    memory.add_listener(recorder)
    gone = memory.key_of("train/00004")
    memory.forget(ids=["train/00004"])
    memory.add(["late/1"], [1], torch.randn(1, 16))
    assert recorder.deleted == [[gone]] and recorder.added == [[20]]
    with pytest.raises(TypeError, match="MemoryListener"):
        memory.add_listener(object())


def test_copy_is_independent_and_keeps_the_ledger():
    memory = make_memory(n=30)
    memory.knn(torch.randn(1, 16), 2, backend="faiss")  # a listener that must not be shared
    memory.forget(ids=["train/00002"])
    twin = memory.copy()
    assert twin.digest() == memory.digest() and twin.ledger == memory.ledger and twin._listeners == []
    assert twin.values.data_ptr() != memory.values.data_ptr()
    twin.forget(classes=["cat"])
    assert memory.class_counts()["cat"] == 6 and twin.class_counts()["cat"] == 0
    assert twin.is_forgotten("train/00002") and not memory.is_forgotten("train/00003")
    twin.verify()
    memory.verify()


# ---------------------------------------------------------------------- one forget signature (item 4)
def test_positional_argument_is_classes_for_memory_and_model(model):
    by_position, by_keyword = make_memory(), make_memory()
    by_position.forget(["cat"])
    by_keyword.forget(classes=["cat"])
    assert by_position.digest() == by_keyword.digest()
    receipt = model.forget(["deer"], ids=["train/00000"])
    assert receipt.removed_per_class["deer"] == 12 and receipt.removed_per_class["airplane"] == 1
    with pytest.raises(UnknownClassError, match="unknown class 'train/00001'"):
        model.forget(["train/00001"])  # an id given as a class is an unknown class, never guessed
    with pytest.raises(TypeError):
        model.forget(None, ["train/00001"])  # ids are keyword-only


# ---------------------------------------------------------------------- private ledger (issue 16, item 5)
def _forget_ten_percent(tmp_path, n=500):
    memory = make_memory(n=n)
    doomed = [f"train/{i:05d}" for i in range(0, n, 10)]
    memory.forget(ids=doomed)
    memory.save(tmp_path)
    return memory, doomed


def test_a_stranger_cannot_enumerate_forgotten_ids_from_the_folder(tmp_path):
    _, doomed = _forget_ten_percent(tmp_path)
    meta = json.loads((tmp_path / MEMORY_CONFIG_NAME).read_text())
    assert "salt" not in meta and not any("secret" in k for k in meta)
    stored = {h for event in meta["ledger"] for h in event["id_hashes"]}
    candidates = [f"train/{i:05d}" for i in range(500)]
    import hashlib

    guesses = set()
    for cid in candidates:  # what the old salted format allowed: every guessable hash of every candidate
        guesses.add(hashlib.sha256(cid.encode()).hexdigest())
        guesses.add(hashlib.sha256(f"\x00{cid}".encode()).hexdigest())
        for key_id in {e["key_id"] for e in meta["ledger"]}:
            guesses.add(hashlib.sha256(f"{key_id}\x00{cid}".encode()).hexdigest())
    assert not stored & guesses
    # a process without the key (another key dir) can load, count, but not prove
    code = (
        "import sys; from spm_hf.memory import SampleMemory; from spm_hf.ledger import LedgerKeyError\n"
        f"m = SampleMemory.load({str(tmp_path)!r})\n"
        "print(m.ledger_summary()['num_forgotten'])\n"
        "try:\n    m.is_forgotten('train/00010')\nexcept LedgerKeyError:\n    print('no key')\n"
    )
    env = {**os.environ, "SPM_HF_KEY_DIR": str(tmp_path / "stranger-keys")}
    env.pop(LEDGER_KEY_ENV, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["50", "no", "key"]


def test_the_key_holder_proves_every_forgotten_id(tmp_path):
    _, doomed = _forget_ten_percent(tmp_path)
    loaded = SampleMemory.load(tmp_path)
    assert all(loaded.is_forgotten(i) for i in doomed)
    assert not any(loaded.is_forgotten(i) for i in loaded.ids)


def test_key_from_the_environment_is_used_and_never_saved(tmp_path, monkeypatch):
    key = LedgerKey.generate()
    monkeypatch.setenv(LEDGER_KEY_ENV, key._secret.hex())
    memory = make_memory(n=20)
    memory.forget(ids=["train/00001"])
    memory.save(tmp_path)
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert key._secret.hex().encode() not in blob and key._secret not in blob
    assert memory.ledger[0]["key_id"] == key.key_id
    monkeypatch.delenv(LEDGER_KEY_ENV)
    monkeypatch.setenv("SPM_HF_KEY_DIR", str(tmp_path / "empty-keys"))
    stranger = SampleMemory.load(tmp_path)
    with pytest.raises(LedgerKeyError, match="does not hold"):
        stranger.add(["new/1"], [0], torch.randn(1, 16))  # re-ingestion cannot be ruled out without the key
    stranger.add(["new/1"], [0], torch.randn(1, 16), allow_reingest=True)


def test_key_file_is_private():
    key = LedgerKey.default()
    path = os.path.join(os.environ["SPM_HF_KEY_DIR"], f"{key.key_id}.key")
    assert os.stat(path).st_mode & 0o077 == 0 and repr(key).count(key._secret.hex()) == 0


# ---------------------------------------------------------------------- seal (issue 16, item 4)
@pytest.mark.parametrize("edit", ["drop_ledger_event", "change_hash", "rename_class", "drop_id_hashes"])
def test_edited_json_is_detected_on_load(tmp_path, edit):
    _forget_ten_percent(tmp_path, n=100)
    path = tmp_path / MEMORY_CONFIG_NAME
    meta = json.loads(path.read_text())
    if edit == "drop_ledger_event":
        meta["ledger"] = []
    elif edit == "change_hash":
        meta["ledger"][0]["id_hashes"][0] = "0" * 64
    elif edit == "rename_class":
        meta["label_names"][0] = "plane"
    else:
        meta["ledger"][0]["id_hashes"] = []
    path.write_text(json.dumps(meta))
    with pytest.raises(MemoryIntegrityError, match=f"{MEMORY_CONFIG_NAME} was modified"):
        SampleMemory.load(tmp_path)


def test_a_resealed_edit_is_caught_by_the_owners_signature(tmp_path):
    from spm_hf.ledger import seal

    _forget_ten_percent(tmp_path, n=100)
    path = tmp_path / MEMORY_CONFIG_NAME
    meta = json.loads(path.read_text())
    meta["ledger"] = []  # hide the forget so the ids could be re-ingested
    meta["seal"] = seal(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(MemoryIntegrityError, match="signature"):
        SampleMemory.load(tmp_path)


@pytest.mark.parametrize("field", ["ids", "digest", "files", "label_names", "seal"])
def test_a_json_missing_a_field_is_a_clear_error(tmp_path, field):
    make_memory(n=10).save(tmp_path)
    path = tmp_path / MEMORY_CONFIG_NAME
    meta = json.loads(path.read_text())
    del meta[field]
    path.write_text(json.dumps(meta))
    with pytest.raises(MemoryIntegrityError, match=f"lacks the fields \\['{field}'\\]"):
        SampleMemory.load(tmp_path)


# ---------------------------------------------------------------------- add validates first (item 3)
@pytest.mark.parametrize(
    "ids, labels, values, error, message",
    [
        (["a", "b"], [0, 1.7], torch.randn(2, 16), TypeError, "non-integer"),
        (["a", "b"], [0, 1], torch.tensor([[float("nan")] * 16, [0.0] * 16]), MemoryShapeError, "finite"),
        (["a", "b"], [0, 1], torch.tensor([[float("inf")] * 16, [0.0] * 16]), MemoryShapeError, "finite"),
        (["a", "b"], [0, 1], torch.full((2, 16), 1e300, dtype=torch.float64), MemoryShapeError, "finite"),
        (["a", "b"], [True, False], torch.randn(2, 16), TypeError, "booleans"),
        (b"ab", [0, 1], torch.randn(2, 16), TypeError, "bytes"),
        (["a", None], [0, 1], torch.randn(2, 16), TypeError, "None"),
        (["a", "b"], [0, 9], torch.randn(2, 16), UnknownClassError, "0..4"),
        (["a", "b"], [0, 1], torch.randn(2, 15), MemoryShapeError, "value_shape"),
    ],
)
def test_bad_adds_change_nothing(ids, labels, values, error, message):
    memory = make_memory(n=10)
    digest, n, counts = memory.digest(), len(memory), memory.class_counts()
    with pytest.raises(error, match=message):
        memory.add(ids, labels, values)
    assert memory.digest() == digest and len(memory) == n and memory.class_counts() == counts
    assert "a" not in memory
    memory.add(["a"], [0], torch.randn(1, 16))  # no phantom id left behind
    memory.forget(ids=["a"])
    memory.verify()


@pytest.mark.parametrize(
    "request_kwargs, message",
    [
        (dict(classes=3.0), "float"),
        (dict(classes=torch.tensor([3.0])), "float"),
        (dict(ids=b"train/00001"), "bytes"),
        (dict(classes=[True]), "neither a name nor an index"),
    ],
)
def test_odd_forget_requests_are_clear_errors(request_kwargs, message):
    memory = make_memory()
    digest = memory.digest()
    with pytest.raises((TypeError, UnknownClassError), match=message):
        memory.forget(**request_kwargs)
    assert memory.digest() == digest and memory.ledger == []


def test_integer_tensor_classes_work():
    a, b = make_memory(), make_memory()
    a.forget(classes=torch.tensor([3]))
    b.forget(classes=[3])
    assert a.digest() == b.digest()


def test_knn_rejects_bad_k():
    memory = make_memory()
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            memory.knn(torch.randn(1, 16), k)


# ---------------------------------------------------------------------- threads (issue 16, item 2)
def test_threads_forgetting_and_reading_keep_the_memory_consistent():
    n = 2000
    memory = make_memory(n=n)
    queries = torch.randn(4, 16)
    chunks = [[f"train/{i:05d}" for i in range(t, n, 8) if i % 5] for t in range(8)]  # disjoint per thread
    errors = []

    def writer(ids):
        try:
            for start in range(0, len(ids), 25):
                memory.forget(ids=ids[start : start + 25])
        except Exception as e:  # pragma: no cover - what the test is looking for
            errors.append(e)

    def reader(stop):
        try:
            while not stop.is_set():
                memory.class_means()
                neighbours = memory.nearest(queries, 7)
                assert neighbours.values.shape == (4, 7, 16)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    stop = threading.Event()
    readers = [threading.Thread(target=reader, args=(stop,)) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(c,)) for c in chunks]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    expected = n - sum(len(c) for c in chunks)
    assert len(memory) == expected and None not in memory.ids
    memory.verify()
    assert sum(memory.class_counts().values()) == expected
