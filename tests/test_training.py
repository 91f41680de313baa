"""Episodic sampling, Trainer-based training, resume, the 2-process (gloo) run, presets and `GeneratorTrainer`."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from spm_hf import SPMForImageClassification, cli
from spm_hf.generation.unet_spm import UNET_ARCHITECTURES
from spm_hf.training import EpisodicCollator, EpisodicSupportSampler, random_crop_flip
from spm_hf.training.classifier import calibrate_fusion, make_optimizer, state_dict_sha256, train_classifier
from spm_hf.training.classifier_presets import CLASSIFIER_PRESETS, ClassifierPreset, get_preset
from spm_hf.training.generator import GeneratorTrainer, latest_checkpoint, train_generator
from spm_hf.training.generator_presets import GENERATOR_PRESETS, get_generator_preset


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
    # Crash again after epoch 1, this time during the next checkpoint's save: transformers writes a checkpoint
    # folder in place, trainer_state.json last, so the kill leaves a folder without it. resume=True must skip
    # that folder, not load half a checkpoint.
    shutil.rmtree(checkpoints[-1])
    (interrupted / "model.safetensors").unlink()
    half = interrupted / "checkpoints" / "checkpoint-99"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"")
    resumed = train_classifier("tiny", str(interrupted), epochs=2, resume=True, **common)
    assert resumed["global_step"] == straight["global_step"]
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


# ---------------------------------------------------------------------- presets


def test_preset_names_are_distinct_across_model_kinds():
    assert list(CLASSIFIER_PRESETS) == ["tiny", "quick", "cifar10-cpu", "mnist", "cifar10-paper"]
    assert list(GENERATOR_PRESETS) == ["gen-tiny", "gen-mnist-cpu", "gen-cifar10-cpu", "gen-cifar10-paper"]
    assert not set(CLASSIFIER_PRESETS) & set(GENERATOR_PRESETS)
    assert not set(UNET_ARCHITECTURES) & (set(CLASSIFIER_PRESETS) | set(GENERATOR_PRESETS))
    assert all(preset.name == name for name, preset in CLASSIFIER_PRESETS.items())
    assert all(preset.preset == name for name, preset in GENERATOR_PRESETS.items())
    # every generator preset names its UNet, and each architecture is some preset's
    assert {p.unet_architecture for p in GENERATOR_PRESETS.values()} == set(UNET_ARCHITECTURES)
    # the CLI spells the names out (so that --help imports no training module): they must stay the registries'
    assert cli.CLASSIFIER_PRESET_NAMES == tuple(CLASSIFIER_PRESETS)
    assert cli.GENERATOR_PRESET_NAMES == tuple(GENERATOR_PRESETS)


def test_an_unknown_preset_is_an_error_listing_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown classifier preset 'nope'; choose one of tiny, quick, cifar10-cpu, "
                                         "mnist, cifar10-paper$"):
        get_preset("nope")
    with pytest.raises(ValueError, match="generator presets start with 'gen-'"):
        get_preset("gen-tiny")
    valid = "choose one of gen-tiny, gen-mnist-cpu, gen-cifar10-cpu, gen-cifar10-paper$"
    with pytest.raises(ValueError, match=f"unknown generator preset 'nope'; {valid}"):
        get_generator_preset("nope")
    # the classifier's names are no generator presets (the generator trainer used to fall back to its tiny UNet)
    with pytest.raises(ValueError, match=rf"'cifar10-cpu' \(did you mean 'gen-cifar10-cpu'\?\); {valid}"):
        train_generator("cifar10-cpu", str(tmp_path / "g"))
    with pytest.raises(ValueError, match="unknown classifier preset 'gen-mnist-cpu'"):
        train_classifier("gen-mnist-cpu", str(tmp_path / "c"))
    assert not os.listdir(tmp_path)  # nothing was written
    with pytest.raises(TypeError, match=r"\['epoch'\]"):
        get_preset("tiny", epoch=3)
    with pytest.raises(TypeError, match=r"\['max_step'\]"):
        get_generator_preset("gen-tiny", max_step=3)


@pytest.mark.parametrize("command,names",
                         [("train-generator", GENERATOR_PRESETS), ("train-classifier", CLASSIFIER_PRESETS)])
def test_cli_rejects_an_unknown_preset_in_one_line(tmp_path, command, names):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "spm_hf.cli", command, "--preset", "nope", "--output-dir", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"spm-hf {command}: error: unknown"), result.stderr
    assert lines[0].endswith(", ".join(names))
    assert not out.exists()


def test_preset_fields_are_checked():
    with pytest.raises(ValueError, match=r"mixed_precision='fp8'; choose one of \['no', 'bf16', 'fp16'\]"):
        ClassifierPreset(name="x", mixed_precision="fp8")
    with pytest.raises(ValueError, match="schedule='cosine'"):
        get_preset("tiny", schedule="cosine")
    with pytest.raises(ValueError, match="unet_architecture='tiny'; choose one of unet-tiny,"):
        GeneratorTrainer(get_generator_preset("gen-tiny", unet_architecture="tiny"), "unused")
    # overrides change a copy, never the registry
    config = get_generator_preset("gen-tiny")
    config.unet_overrides["dropout"] = 0.5
    assert GENERATOR_PRESETS["gen-tiny"].unet_overrides == {}


def test_cifar10_paper_is_a_one_cycle_resnet18_recipe():
    preset = CLASSIFIER_PRESETS["cifar10-paper"]
    assert (preset.encoder, preset.fusion_similarity, preset.head_steps) == ("resnet18", "dot", 0)
    assert (preset.support, preset.support_size, preset.knn_k) == ("separate", 1024, 256)
    assert (preset.epochs, preset.batch_size, preset.learning_rate, preset.weight_decay) == (30, 512, 0.2, 5e-4)
    assert (preset.schedule, preset.mixed_precision) == ("onecycle", "bf16")
    steps_per_epoch = 50000 // preset.batch_size
    optimizer, scheduler = make_optimizer(torch.nn.Linear(2, 2), preset, steps_per_epoch)
    group = optimizer.param_groups[0]
    assert group["nesterov"] and group["weight_decay"] == 5e-4
    lrs = []
    for _ in range(steps_per_epoch * 30):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(0.2) and abs(peak - 0.25 * len(lrs)) <= 1
    assert lrs[0] == pytest.approx(0.2 / 25) and lrs[-1] < 1e-5


def test_mixed_precision_reaches_the_trainer(tmp_path, monkeypatch):
    import spm_hf.training.classifier as classifier

    seen = {}
    real = classifier.TrainingArguments

    def spy(*args, **kwargs):
        seen.update(bf16=kwargs["bf16"], fp16=kwargs["fp16"])
        return real(*args, **kwargs)

    monkeypatch.setattr(classifier, "TrainingArguments", spy)
    summary = train_classifier("tiny", str(tmp_path), epochs=1, max_train_samples=128, memory_samples=128,
                               max_test_samples=32, mixed_precision="bf16", show_progress=False, evaluate=False)
    assert seen == {"bf16": True, "fp16": False}
    assert summary["preset"]["mixed_precision"] == "bf16" and math.isfinite(summary["train_loss"])


def test_a_classifier_folder_loads_without_the_preset_fields_it_predates(tiny_run, tmp_path):
    """Loading reads config.json and the memory, not the preset: a folder whose summary lacks newer preset
    fields (and names a preset that is gone) loads and saves unchanged."""
    import shutil

    out, summary = tiny_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    saved = json.loads((old / "training_summary.json").read_text())
    del saved["preset"]["mixed_precision"]
    saved["preset"]["name"] = "retired-name"
    (old / "training_summary.json").write_text(json.dumps(saved))
    model = SPMForImageClassification.from_pretrained(old)
    assert len(model.memory) == summary["memory_size"]
    model.save_pretrained(tmp_path / "resaved")


# ---------------------------------------------------------------------- GeneratorTrainer
def _generator_data(n: int = 24):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return dict(images=images, labels=torch.arange(n) % 3, ids=[f"train/{i:05d}" for i in range(n)],
                label_names=["ant", "bee", "cow"])


@pytest.fixture
def one_thread():
    """Tiny UNets gain nothing from intra-op threads on a busy 2-core machine (see test_generation.py)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_generator_trainer_object_matches_the_wrapper_and_resumes(tmp_path, one_thread):
    data = _generator_data()
    config = get_generator_preset("gen-tiny", max_steps=4, checkpoint_every=2)
    trainer = GeneratorTrainer(config, str(tmp_path / "obj"), show_progress=False, **data)
    assert trainer.state.step == 0
    trainer.train()
    assert trainer.state.step == 4 and latest_checkpoint(str(tmp_path / "obj")).endswith("checkpoint-0000004")
    pipe = trainer.save()
    saved = json.loads((tmp_path / "obj" / "training_config.json").read_text())
    assert saved["preset"] == "gen-tiny" and saved["unet_architecture"] == "unet-tiny" and saved["max_steps"] == 4
    wrapped = train_generator("gen-tiny", str(tmp_path / "fn"), max_steps=4, checkpoint_every=2, show_progress=False,
                              **data)
    for p, q in zip(pipe.unet.parameters(), wrapped.unet.parameters()):
        assert torch.equal(p, q)

    resumed = GeneratorTrainer(config, str(tmp_path / "obj"), show_progress=False, **data)
    path = resumed.load(str(tmp_path / "obj" / "checkpoints" / "checkpoint-0000002"))
    assert path.endswith("checkpoint-0000002") and resumed.state.step == 2
    resumed.train()
    for p, q in zip(resumed.pipeline().unet.parameters(), pipe.unet.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        GeneratorTrainer(config, str(tmp_path / "empty"), show_progress=False, **data).load("latest")


def test_latest_checkpoint_skips_what_a_killed_save_left(tmp_path):
    """resume="latest" takes the newest *complete* checkpoint: a folder whose name only starts like one
    (`checkpoint-0000006.tmp-1234` also ends in a digit, which the old glob matched), one without
    checkpoint.json (written last) and a plain file are not checkpoints, and steps compare as numbers."""
    checkpoints = tmp_path / "checkpoints"
    for name in ("checkpoint-0000002", "checkpoint-0000004"):
        (checkpoints / name).mkdir(parents=True)
        (checkpoints / name / "checkpoint.json").write_text("{}")
    (checkpoints / "checkpoint-0000006.tmp-1234").mkdir()
    (checkpoints / "checkpoint-0000006.tmp-1234" / "checkpoint.json").write_text("{}")
    (checkpoints / "checkpoint-0000008").mkdir()  # half written: no checkpoint.json yet
    (checkpoints / "checkpoint-0000010").write_text("not a folder")
    assert latest_checkpoint(str(tmp_path)) == str(checkpoints / "checkpoint-0000004")
    # the step is a number, not a string: 10000000 sorts after 9999999 however the names are padded
    (checkpoints / "checkpoint-10000000").mkdir()
    (checkpoints / "checkpoint-10000000" / "checkpoint.json").write_text("{}")
    assert latest_checkpoint(str(tmp_path)) == str(checkpoints / "checkpoint-10000000")


def test_generator_trainer_sets_its_own_mixed_precision_after_another_run(tmp_path, one_thread):
    """accelerate's state is process-wide: a bf16 run before (e.g. a classifier's Trainer) must not stop a
    generator run in the same process from training in full precision."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # whatever an earlier test of this process left
    assert Accelerator(mixed_precision="bf16").mixed_precision == "bf16"
    trainer = GeneratorTrainer(get_generator_preset("gen-tiny", max_steps=1), str(tmp_path), show_progress=False,
                               **_generator_data())
    assert trainer.accelerator.mixed_precision == "no"
    trainer.train()
    assert trainer.state.step == 1
