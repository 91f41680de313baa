"""Saving a model or pipeline folder is one atomic step, and concurrent writers never lose a deletion.

The kill checks reuse `bench/fault_injection.py` at a few kills instead of fifty: a forked child loads a
folder, forgets a class (or not) and saves in place while it is SIGKILLed, at random instants and right
before each of its renames and removals. Linux/macOS only (fork).
"""

import importlib.util
import os
import signal
import sys
import threading
import time

import pytest

from conftest import make_memory, make_model
from spm_hf import SampleMemory, SPMForImageClassification
from spm_hf.files import atomic_directory, folder_lock
from spm_hf.hub import FolderChangedError
from spm_hf.memory import MEMORY_CONFIG_NAME, MEMORY_WEIGHTS_NAME


pytestmark = [pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork"), pytest.mark.usefixtures("one_torch_thread")]

_spec = importlib.util.spec_from_file_location(
    "fault_injection", os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench", "fault_injection.py"))
fault_injection = sys.modules["fault_injection"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fault_injection)


@pytest.fixture(scope="module", params=["classifier", "generator"])
def kind(request):
    return (fault_injection.build_classifier if request.param == "classifier" else fault_injection.build_generator)("ci")


def test_a_save_killed_at_any_step_leaves_the_old_or_new_state_and_no_forgotten_bytes(kind, tmp_path):
    counts = fault_injection.step_kills(kind, str(tmp_path))
    assert counts.trials >= 4 and counts.killed == counts.trials
    assert (counts.unloadable, counts.mixed) == (0, 0), counts.failures
    assert counts.old + counts.new == counts.trials and counts.old > 0 and counts.new > 0  # the swap is the commit
    assert (counts.leaked_files, counts.stale_entries) == (0, 0), counts.failures


def test_a_save_killed_at_random_instants_leaves_a_whole_folder(kind, tmp_path):
    import random

    counts = fault_injection.random_kills(kind, str(tmp_path), kills=4, rng=random.Random(1))
    # trials go on until 4 kills landed mid-save (kills after the save finished test nothing), at most 16
    assert 4 <= counts.trials <= 16 and counts.old + counts.new == counts.trials, counts.failures
    assert counts.killed == 4 or counts.trials == 16, counts.failures
    assert (counts.unloadable, counts.mixed, counts.leaked_files, counts.stale_entries) == (0, 0, 0, 0), counts.failures


def test_two_writers_forgetting_different_classes_lose_no_deletion(kind, tmp_path):
    counts = fault_injection.races(kind, str(tmp_path), rounds=2)
    assert (counts.lost_deletions, counts.unloadable) == (0, 0), counts.failures
    assert counts.deletions_saved == 4  # both writers' deletions landed in every round...
    assert counts.refused_saves == 2  # ...because the later save of each round was refused once, then redone


# ---------------------------------------------------------------------- in-process checks
make_classifier = make_model  # conftest's tiny classifier


def test_a_save_refuses_when_the_folder_changed_since_it_was_loaded(tmp_path):
    folder = tmp_path / "model"
    make_classifier().save_pretrained(folder)
    first, second = (SPMForImageClassification.from_pretrained(folder) for _ in range(2))
    first.forget(classes=["cat"])
    first.save_pretrained(folder)
    first.forget(classes=["deer"])
    first.save_pretrained(folder)  # its own earlier save is not a change by someone else
    second.forget(classes=["bird"])
    with pytest.raises(FolderChangedError, match="changed since this model was loaded from it.*overwrite=True"):
        second.save_pretrained(folder)
    on_disk = SampleMemory.load(folder).class_counts()
    assert (on_disk["cat"], on_disk["deer"], on_disk["bird"]) == (0, 0, 12)  # the refused save changed nothing
    second.save_pretrained(folder, overwrite=True)  # explicit: the other writer's deletions are undone
    on_disk = SampleMemory.load(folder).class_counts()
    assert (on_disk["cat"], on_disk["deer"], on_disk["bird"]) == (12, 12, 0)


def test_an_in_place_save_keeps_the_users_files_and_drops_stale_ones(tmp_path):
    folder = tmp_path / "model"
    model = make_classifier()
    model.save_pretrained(folder)
    (folder / "NOTES.md").write_text("my notes")
    (folder / "extra").mkdir()
    (folder / "extra" / "data.txt").write_text("kept")
    cat_rows = model.memory.values[model.memory.labels == 3]
    (folder / ".tmp-killed").write_bytes(cat_rows.numpy().tobytes())  # what a killed per-file save left
    (tmp_path / ".model.tmp-abcd1234").mkdir()  # a killed folder save
    (tmp_path / ".model.tmp-abcd1234" / MEMORY_WEIGHTS_NAME).write_bytes(cat_rows.numpy().tobytes())
    model.forget(classes=["cat"])
    model.save_pretrained(folder)
    assert (folder / "NOTES.md").read_text() == "my notes" and (folder / "extra" / "data.txt").read_text() == "kept"
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert not (folder / ".tmp-killed").exists()
    blob = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert not any(row.numpy().tobytes() in blob for row in cat_rows)
    model.set_memory(None)
    model.save_pretrained(folder)  # weights saved without a memory: no stale memory beside them
    assert not (folder / MEMORY_WEIGHTS_NAME).exists() and not (folder / MEMORY_CONFIG_NAME).exists()
    assert (folder / "NOTES.md").exists()


def test_a_load_removes_stale_temporaries_and_recovers_a_folder_moved_away(tmp_path):
    folder = tmp_path / "model"
    model = make_classifier()
    model.save_pretrained(folder)
    (tmp_path / ".model.tmp-zz99yy88").mkdir()
    (tmp_path / ".model.tmp-zz99yy88" / "x").write_text("stale")
    SPMForImageClassification.from_pretrained(folder)
    assert sorted(os.listdir(tmp_path)) == ["model"]
    # A writer without RENAME_EXCHANGE died between moving the old folder away and moving the new one in.
    os.rename(folder, tmp_path / ".model.old-abcd1234")
    loaded = SPMForImageClassification.from_pretrained(folder)
    assert loaded.memory.digest() == model.memory.digest() and sorted(os.listdir(tmp_path)) == ["model"]


def test_the_rename_fallback_swaps_folders_too(tmp_path, monkeypatch):
    import spm_hf.files as files

    monkeypatch.setattr(files, "exchange_directories", None)
    folder = tmp_path / "model"
    model = make_classifier()
    model.save_pretrained(folder)
    (folder / "NOTES.md").write_text("kept")
    model.forget(classes=["cat"])
    model.save_pretrained(folder)
    assert SampleMemory.load(folder).class_counts()["cat"] == 0 and (folder / "NOTES.md").read_text() == "kept"
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_concurrent_writers_wait_for_the_folder_lock(tmp_path):
    folder = str(tmp_path / "model")
    model = make_classifier()
    model.save_pretrained(folder)
    with folder_lock(folder):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                model.forget(classes=["cat"])
                model.save_pretrained(folder)
                code = 0
            finally:
                os._exit(code)
        time.sleep(0.5)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # still waiting for the lock
        assert SampleMemory.load(folder).class_counts()["cat"] == 12
    assert os.waitpid(pid, 0)[1] == 0
    assert SampleMemory.load(folder).class_counts()["cat"] == 0
    assert sorted(os.listdir(tmp_path)) == ["model"]  # the lock file goes with its last holder
    loaded = []
    with folder_lock(folder):  # a reader waits for a writer too (a thread locks through its own descriptor)
        reader = threading.Thread(target=lambda: loaded.append(SPMForImageClassification.from_pretrained(folder)))
        reader.start()
        reader.join(0.3)
        assert reader.is_alive() and not loaded
    reader.join(30)
    assert loaded and loaded[0].memory.class_counts()["cat"] == 0


def test_atomic_directory_replaces_a_pair_of_files_as_one(tmp_path):
    """What `SampleMemory.save` builds on: the two files change together or not at all."""
    folder = tmp_path / "memory"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"old a")
    (folder / "b.json").write_text("old b")
    (folder / "other.txt").write_text("not ours")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_directory(folder, owned=("a.bin", "b.json")) as staging:
            with open(os.path.join(staging, "a.bin"), "wb") as f:
                f.write(b"new a")
            raise RuntimeError("writer failed")
    assert (folder / "a.bin").read_bytes() == b"old a" and sorted(os.listdir(tmp_path)) == ["memory"]
    pid = os.fork()
    if pid == 0:  # killed between the two files: nothing of the new pair is visible
        try:
            with atomic_directory(folder, owned=("a.bin", "b.json")) as staging:
                with open(os.path.join(staging, "a.bin"), "wb") as f:
                    f.write(b"new a")
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    assert (folder / "a.bin").read_bytes() == b"old a" and (folder / "b.json").read_text() == "old b"
    with atomic_directory(folder, owned=("a.bin", "b.json")) as staging:
        with open(os.path.join(staging, "a.bin"), "wb") as f:
            f.write(b"new a")
    assert sorted(os.listdir(folder)) == ["a.bin", "other.txt"]  # b.json is owned and was not rewritten
    assert (folder / "a.bin").read_bytes() == b"new a" and sorted(os.listdir(tmp_path)) == ["memory"]


def test_a_standalone_memory_save_killed_at_any_step_leaves_a_whole_pair(tmp_path):
    folder = str(tmp_path / "memory")
    memory = make_memory()
    old = memory.digest()
    after = memory.copy()
    after.forget(classes=["cat"])
    new, needles = after.digest(), [memory.values[r].numpy().tobytes() for r in range(3, 60, 5)]
    for die_at in range(1, 8):
        memory.save(folder)
        pid = os.fork()
        if pid == 0:
            try:
                fault_injection.install_step_killer(die_at, [0])
                after.save(folder)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert SampleMemory.load(folder).digest() in (old, new), f"killed before step {die_at}"
        after.save(folder)
        blob = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
        assert not any(needle in blob for needle in needles) and sorted(os.listdir(tmp_path)) == ["memory"]
