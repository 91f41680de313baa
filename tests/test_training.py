"""Episodic sampling, Trainer-based training, resume and the 2-process (gloo) run."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from spm_hf import SPMForImageClassification
from spm_hf.training import EpisodicCollator, EpisodicSupportSampler, random_crop_flip
from spm_hf.training.classifier import calibrate_fusion, state_dict_sha256, train_classifier


LABELS = torch.arange(200) % 10


def test_support_is_balanced_over_the_batch_labels_and_excludes_the_batch():
    sampler = EpisodicSupportSampler(LABELS, 10, support_size=50, seed=0)
    batch = torch.tensor([0, 1, 2, 11, 12, 22, 3, 13])  # labels 0,1,2,1,2,2,3,3
    episode = sampler.sample(batch)
    support_labels = LABELS[episode.support_indices]
    counts = torch.bincount(support_labels, minlength=10)
    assert counts.tolist() == [13, 13, 12, 12, 0, 0, 0, 0, 0, 0]  # 50 over 4 labels, first ones +1
    assert not set(episode.support_indices.tolist()) & set(batch.tolist())
    assert len(set(episode.support_indices.tolist())) == 50  # enough candidates: no replacement


def test_support_falls_back_to_replacement_and_skips_empty_labels():
    labels = torch.tensor([0, 0, 0, 1])
    sampler = EpisodicSupportSampler(labels, 2, support_size=8, seed=0)
    episode = sampler.sample(torch.tensor([0, 3]))  # label 1's only sample is in the batch
    assert labels[episode.support_indices].tolist() == [0, 0, 0, 0]
    assert set(episode.support_indices.tolist()) <= {1, 2}


def test_the_same_seed_gives_the_same_episodes_and_permutations_differ_per_batch():
    a = EpisodicSupportSampler(LABELS, 10, 40, seed=3)
    b = EpisodicSupportSampler(LABELS, 10, 40, seed=3)
    batch = torch.arange(0, 30)
    ea1, ea2 = a.sample(batch), a.sample(batch)
    eb1 = b.sample(batch)
    assert torch.equal(ea1.support_indices, eb1.support_indices) and torch.equal(ea1.permutation, eb1.permutation)
    assert not torch.equal(ea1.permutation, ea2.permutation)
    assert sorted(ea1.permutation.tolist()) == list(range(10))
    fixed = EpisodicSupportSampler(LABELS, 10, 40, permute_labels=False, seed=3).sample(batch)
    assert fixed.permutation.tolist() == list(range(10))


def test_collator_applies_one_permutation_to_query_and_support_labels():
    images = torch.arange(200, dtype=torch.uint8).view(200, 1, 1, 1).expand(200, 3, 4, 4).contiguous()
    collator = EpisodicCollator(
        images, LABELS, 10, normalize=lambda x: x.float(), support="separate", support_size=30, augment=False, seed=1
    )
    items = [{"index": i} for i in (5, 17, 42, 63, 99)]
    batch = collator(items)
    # recover each image's index from its pixel value, then its original label
    query_index = batch["pixel_values"][:, 0, 0, 0].long()
    support_index = batch["support_pixel_values"][:, 0, 0, 0].long()
    assert query_index.tolist() == [5, 17, 42, 63, 99]
    mapping = {}
    for index, label in zip(torch.cat([query_index, support_index]).tolist(), torch.cat([batch["labels"], batch["support_labels"]]).tolist()):
        mapping.setdefault(int(LABELS[index]), set()).add(label)
    assert all(len(v) == 1 for v in mapping.values())  # one permuted label per original label
    assert len({next(iter(v)) for v in mapping.values()}) == len(mapping)  # a bijection
    assert not set(support_index.tolist()) & {5, 17, 42, 63, 99}
    assert torch.equal(collator(items)["support_labels"], batch["support_labels"])  # batch-seeded: reproducible
    assert collator(items).keys() == batch.keys()
    loo = EpisodicCollator(images, LABELS, 10, normalize=lambda x: x.float(), support="batch", seed=1)(items)
    assert loo["leave_one_out"] is True and "support_pixel_values" not in loo


def test_random_crop_flip_keeps_content_and_shape():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    # every output row is a shifted (maybe mirrored) window: with padding 0 its pixels come from the input
    same = random_crop_flip(images, torch.Generator().manual_seed(0), padding=0)
    assert all(torch.equal(s, i) or torch.equal(s, i.flip(-1)) for s, i in zip(same, images))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    summary = train_classifier("tiny", str(out), show_progress=False)
    return out, summary


def test_tiny_run_beats_chance_by_a_wide_margin_and_saves_a_loadable_folder(tiny_run):
    out, summary = tiny_run
    assert summary["test"]["class_mean"]["accuracy"] >= 25.0  # chance is 10%
    assert summary["test"]["knn"]["accuracy"] >= 15.0
    model = SPMForImageClassification.from_pretrained(out)
    assert len(model.memory) == summary["memory_size"] == 2000
    assert model.image_processor is not None
    saved = json.loads((out / "training_summary.json").read_text())
    assert saved["test"]["class_mean"]["accuracy"] == summary["test"]["class_mean"]["accuracy"]


def test_parametric_baseline_trains_with_the_same_recipe(tmp_path):
    summary = train_classifier("tiny", str(tmp_path), parametric=True, show_progress=False)
    assert summary["model"] == "parametric" and summary["test"]["parametric"]["accuracy"] >= 25.0
    assert not (tmp_path / "sample_memory.safetensors").exists()


def test_fusion_calibration_fits_the_head_only(tiny_run):
    out, _ = tiny_run
    model = SPMForImageClassification.from_pretrained(out)
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    fusion = {k: v.clone() for k, v in model.fusion.state_dict().items()}
    digest = model.memory.digest()
    x = torch.randn(4, 3, 32, 32)
    seconds = calibrate_fusion(model, steps=5, batch_size=64, show_progress=False)
    assert seconds > 0 and model.memory.digest() == digest
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder.items())
    assert any(not torch.equal(v, model.fusion.state_dict()[k]) for k, v in fusion.items())
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x).logits).all()


def _weights_digest(folder) -> str:
    return state_dict_sha256(load_file(os.path.join(folder, "model.safetensors")))


def test_resume_from_a_checkpoint_continues_exactly(tmp_path):
    common = dict(max_train_samples=512, max_test_samples=100, memory_samples=512, show_progress=False, evaluate=False)
    straight = train_classifier("tiny", str(tmp_path / "straight"), epochs=2, **common)
    interrupted = tmp_path / "interrupted"
    first = train_classifier("tiny", str(interrupted), epochs=2, **common)
    # drop the final checkpoint: the run "crashed" after epoch 1
    checkpoints = sorted((interrupted / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 2
    import shutil

    shutil.rmtree(checkpoints[-1])
    (interrupted / "model.safetensors").unlink()
    resumed = train_classifier("tiny", str(interrupted), epochs=2, resume=True, **common)
    assert resumed["global_step"] == straight["global_step"] == first["global_step"]
    assert _weights_digest(interrupted) == _weights_digest(tmp_path / "straight")


DIST_SCRIPT = r"""
import json, os, sys
from spm_hf.training.classifier import train_classifier
out = sys.argv[1]
summary = train_classifier("tiny", out, epochs=1, max_train_samples=512, max_test_samples=100,
                           memory_samples=512, show_progress=False)
with open(os.path.join(out, f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump({k: summary[k] for k in ("world_size", "global_step", "weights_sha256")}, f)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run_ends_with_identical_weights(tmp_path):
    script = tmp_path / "dist_train.py"
    script.write_text(DIST_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         str(script), str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["global_step"] == 512 // (64 * 2)
    model = SPMForImageClassification.from_pretrained(tmp_path / "out")
    assert len(model.memory) == 512
