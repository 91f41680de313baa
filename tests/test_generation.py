"""The semi-parametric diffusion generator: UNet, memory component, pipeline, support cache, training.

Everything runs the `gen-tiny` preset (`unet-tiny` UNet) on small synthetic uint8 images (8x8, three classes).
"""

import glob
import json
import math
import os
import shutil
import warnings

import numpy as np
import pytest
import torch

from spm_hf.generation import (
    ForgottenClassError,
    ForgottenClassWarning,
    ImageSampleMemory,
    SPMDiffusionPipeline,
    SPMUNet2DModel,
    UNET_ARCHITECTURES,
    make_pipeline,
)
from spm_hf.cli import build_parser
from spm_hf.training.generator import train_generator
from spm_hf.generation.pipeline_spm import FORGET_POLICIES
from spm_hf.training.generator import latest_checkpoint
from spm_hf.memory import (
    ForgetRequestError,
    MemoryIntegrityError,
    MemoryShapeError,
    ReingestionError,
    UnknownClassError,
    UnknownIdError,
)


NAMES = ["ant", "bee", "cow"]
N = 48


def make_data(n: int = N, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % len(NAMES)
    ids = [f"train/{i:05d}" for i in range(n)]
    return images, labels, ids


def make_memory(n: int = N, seed: int = 0) -> ImageSampleMemory:
    images, labels, ids = make_data(n, seed)
    return ImageSampleMemory.from_images(images, labels, ids, NAMES)


def make_unet(seed: int = 0) -> SPMUNet2DModel:
    torch.manual_seed(seed)
    return SPMUNet2DModel.from_architecture("unet-tiny", num_class_embeds=len(NAMES)).eval()


def make_pipe(memory=None, unet=None) -> SPMDiffusionPipeline:
    pipe = make_pipeline(unet or make_unet(), memory or make_memory())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, labels=("ant", "bee", "cow"), seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 4)
    kwargs.setdefault("support_size", 6)
    return pipe(list(labels), generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs).images


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's barriers made
    this file 35x slower with 2 threads than with 1; restored after the module."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A tiny pipeline trained for a few steps with a checkpoint, saved by `train_generator`."""
    out = str(tmp_path_factory.mktemp("gen") / "tiny")
    images, labels, ids = make_data()
    train_generator("gen-tiny", out, images=images, labels=labels, ids=ids, label_names=NAMES, max_steps=4,
                    checkpoint_every=2, eval_every=4, show_progress=False)
    return out


def load(path) -> SPMDiffusionPipeline:
    pipe = SPMDiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def copy_of(path, tmp_path) -> str:
    dst = str(tmp_path / "copy")
    shutil.copytree(path, dst)
    return dst


# ---------------------------------------------------------------------- end to end
def test_tiny_end_to_end(trained_dir, tmp_path):
    files = set(os.listdir(trained_dir))
    assert {"model_index.json", "unet", "scheduler", "memory", "samples", "checkpoints", "train_log.jsonl"} <= files
    assert glob.glob(os.path.join(trained_dir, "samples", "step-*.png"))
    log = [json.loads(line) for line in open(os.path.join(trained_dir, "train_log.jsonl"))]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in log)

    pipe = load(copy_of(trained_dir, tmp_path))
    assert isinstance(pipe.unet, SPMUNet2DModel) and isinstance(pipe.memory, ImageSampleMemory)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert len(pipe.memory) == N and pipe.memory.trained_on.all()
    a = generate(pipe, seed=3)
    b = generate(pipe, seed=3)
    c = generate(pipe, seed=4)
    assert a.shape == (3, 8, 8, 3) and np.array_equal(a, b) and not np.allclose(a, c)

    receipt = pipe.forget(["bee"])
    assert receipt.removed_per_class == {"ant": 0, "bee": 16, "cow": 0} and receipt.num_trained_on == 16
    with pytest.warns(ForgottenClassWarning, match="'bee'.*forgotten"):
        after = generate(pipe, labels=("bee", "ant"), seed=3)
    assert after.shape == (2, 8, 8, 3) and np.isfinite(after).all()
    with pytest.raises(ForgottenClassError, match="'bee'.*strict"):
        generate(pipe, labels=("bee",), strict=True)
    with pytest.raises(UnknownClassError, match="valid names"):
        generate(pipe, labels=("horse",))
    # the default policy reads the first remaining class's support; "empty" none; "all_remaining" every sample
    with pytest.warns(ForgottenClassWarning, match="first class with samples left"):
        default = generate(pipe, labels=("bee",), seed=3)
    with pytest.warns(ForgottenClassWarning, match="first class with samples left"):
        substitute = generate(pipe, labels=("bee",), seed=3, forget_policy="substitute")
    with pytest.warns(ForgottenClassWarning, match="without support"):
        empty = generate(pipe, labels=("bee",), seed=3, forget_policy="empty")
    with pytest.warns(ForgottenClassWarning, match="all remaining samples"):
        remaining = generate(pipe, labels=("bee",), seed=3, forget_policy="all_remaining")
    assert np.array_equal(default, substitute)
    assert not np.allclose(default, empty) and not np.allclose(default, remaining) and not np.allclose(empty, remaining)
    with pytest.raises(ValueError, match="forget_policy must be one of"):
        generate(pipe, labels=("bee",), forget_policy="nearest")
    # a kept class is unaffected by generating alongside a forgotten one (no cross-query leakage)
    with pytest.warns(ForgottenClassWarning):
        mixed = generate(pipe, labels=("ant", "bee"), seed=5)
    alone = generate(pipe, labels=("ant",), seed=5)
    np.testing.assert_allclose(mixed[0], alone[0], atol=1e-5)


def test_substitute_policy_reads_the_first_remaining_class_relabelled():
    """The paper's evaluation protocol: a forgotten class reads class 0's support (class 1's when 0 is gone)."""
    pipe = make_pipe()
    memory_labels = pipe.memory.labels
    pipe.forget(["bee"])
    with pytest.warns(ForgottenClassWarning):
        rows, labels = pipe.select_support([1], 6, seed=0, strict=False, forget_policy="substitute")
    assert len(rows) == 6 and labels.tolist() == [1] * 6
    assert set(pipe.memory.labels[rows].tolist()) == {0}  # ant's samples, relabelled as bee
    pipe.forget(["ant"])
    with pytest.warns(ForgottenClassWarning):
        rows, labels = pipe.select_support([0, 1], None, seed=0, strict=False, forget_policy="substitute")
    cows = int((memory_labels == 2).sum())
    assert set(pipe.memory.labels[rows].tolist()) == {2} and sorted(labels.tolist()) == [0] * cows + [1] * cows


def test_resume_continues_exactly(trained_dir, tmp_path):
    """Train 4 steps straight vs 2 steps + resume from the step-2 checkpoint: identical weights."""
    images, labels, ids = make_data()
    ckpt = os.path.join(trained_dir, "checkpoints", "checkpoint-0000002")
    assert latest_checkpoint(trained_dir).endswith("checkpoint-0000004") and os.path.isdir(ckpt)
    saved = {os.path.relpath(p, ckpt) for p in glob.glob(os.path.join(ckpt, "**", "*"), recursive=True) if os.path.isfile(p)}
    assert all(p.endswith((".json", ".safetensors")) for p in saved), saved  # no pickle in checkpoints
    resumed = train_generator("gen-tiny", str(tmp_path / "r"), images=images, labels=labels, ids=ids, label_names=NAMES,
                              max_steps=4, resume=ckpt, save_pipeline=False, show_progress=False)
    straight = load(trained_dir)
    for (name, p), q in zip(straight.unet.named_parameters(), resumed.unet.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def test_resume_rewinds_the_log_and_counts_earlier_time(trained_dir, tmp_path):
    """A resumed run logs each step once, its seconds go on from the checkpoint's, and max_minutes counts them."""
    images, labels, ids = make_data()
    common = dict(images=images, labels=labels, ids=ids, label_names=NAMES, max_steps=4, save_pipeline=False,
                  show_progress=False)
    out = tmp_path / "r"
    shutil.copytree(trained_dir, out)  # its log already holds steps 1-4
    ckpt = out / "checkpoints" / "checkpoint-0000002"
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    seconds_at_2 = meta["train_state"]["seconds"]
    assert seconds_at_2 > 0
    train_generator("gen-tiny", str(out), resume=str(ckpt), **common)
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    # the log keeps seconds rounded to 0.01
    assert records[1]["seconds"] <= round(seconds_at_2, 2) <= records[2]["seconds"] <= records[3]["seconds"]

    # a checkpoint that already used an hour: a 30-minute budget stops the resumed run before any step
    meta["train_state"]["seconds"] = 3600.0
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    train_generator("gen-tiny", str(out), resume=str(ckpt), max_minutes=30, **common)
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]


def test_save_load_gives_identical_images(tmp_path):
    pipe = make_pipe()
    before = generate(pipe, seed=7)
    pipe.save_pretrained(tmp_path / "p")
    loaded = load(tmp_path / "p")
    assert loaded.memory.digest() == pipe.memory.digest() and loaded.memory.ids == pipe.memory.ids
    assert np.array_equal(generate(loaded, seed=7), before)
    cfg = json.load(open(tmp_path / "p" / "memory" / "config.json"))
    assert cfg["num_items"] == N and cfg["label_names"] == NAMES and cfg["value_shape"] == [3, 8, 8]


# ---------------------------------------------------------------------- the support cache
def count_support_path(unet):
    calls = []
    original = unet.encode_support_patches

    def counting(images):
        calls.append(images.shape[0])
        return original(images)

    unet.encode_support_patches = counting
    return calls


def test_cache_gives_same_images_as_no_cache():
    pipe = make_pipe()
    cached = generate(pipe, seed=1, guidance_scale=2.0)
    uncached = generate(pipe, seed=1, guidance_scale=2.0, use_support_cache=False)
    np.testing.assert_allclose(cached, uncached, atol=1e-4)
    assert np.abs(cached - generate(pipe, seed=1, guidance_scale=2.0, support_size=0)).max() > 1e-3  # support matters


def test_support_path_runs_at_most_once_per_call():
    pipe = make_pipe()
    calls = count_support_path(pipe.unet)
    generate(pipe, labels=["ant"] * 4 + ["cow"] * 2, seed=0, num_inference_steps=5, guidance_scale=2.0, support_size=6)
    assert calls == [12]  # one pass over 6 + 6 supports: not per step (5), branch (2) or sample (6)
    generate(pipe, labels=["ant", "cow"], seed=0, num_inference_steps=5, guidance_scale=2.0, support_size=6)
    assert calls == [12]  # warm cache: the same supports are not encoded again
    calls.clear()
    generate(pipe, labels=["ant"], seed=0, num_inference_steps=5, guidance_scale=2.0, support_size=6,
             use_support_cache=False)
    assert calls == [12] * 5  # the reference's path: every step, support duplicated for both branches


def test_cache_invalidated_by_weights_and_pruned_by_forget():
    pipe = make_pipe()
    before = generate(pipe, seed=2, support_size=None)
    assert len(pipe.support_cache) == N
    with torch.no_grad():
        pipe.unet.mid.relation.to_k.weight.mul_(1.5)
    changed = generate(pipe, seed=2, support_size=None)
    np.testing.assert_allclose(changed, generate(pipe, seed=2, support_size=None, use_support_cache=False), atol=1e-4)
    assert not np.allclose(before, changed)
    forgotten = [i for i, y in zip(pipe.memory.ids, pipe.memory.labels.tolist()) if y == 1]
    pipe.forget(classes=["bee"])
    assert len(pipe.support_cache) == N - len(forgotten)
    assert not set(forgotten) & set(pipe.support_cache.cached_ids)


# ---------------------------------------------------------------------- the memory contract
def test_receipt_config_and_forget_by_id():
    pipe = make_pipe()
    ids = pipe.memory.ids
    receipt = pipe.forget(["cow"], ids=[ids[0]])  # positional: classes; samples by ids=
    assert receipt.removed_per_class == {"ant": 1, "bee": 0, "cow": 16}
    assert receipt.status_of(ids[0]) == "trained_on" and receipt.digest_after == pipe.memory.digest()
    assert receipt.digest_before != receipt.digest_after and receipt.seconds >= 0
    assert pipe.memory.config.num_items == N - 17 == len(pipe.memory)
    assert pipe.memory.config.digest == pipe.memory.digest()
    assert ids[0] not in pipe.memory and pipe.memory.is_forgotten(ids[0])


def test_forget_equivalence_to_retained_only_memory():
    """Same weights, forget(U) vs a memory built from the retained samples only: identical images."""
    unet = make_unet()
    pipe = make_pipe(unet=unet)
    images, labels, ids = make_data()
    forget_ids = ids[::5]
    pipe.forget(ids=forget_ids)
    pipe.forget(classes=["cow"])
    keep = [k for k in range(N) if ids[k] not in set(forget_ids) and labels[k] != 2]
    retained = ImageSampleMemory.from_images(images[keep], labels[keep], [ids[k] for k in keep], NAMES)
    fresh = make_pipe(memory=retained, unet=unet)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForgottenClassWarning)
        for kwargs in ({}, {"support_size": None}, {"use_support_cache": False}):
            a = generate(pipe, labels=("ant", "bee", "cow"), seed=9, **kwargs)
            b = generate(fresh, labels=("ant", "bee", "cow"), seed=9, **kwargs)
            np.testing.assert_array_equal(a, b)


def test_forget_idempotent_and_order_independent():
    a, b = make_memory(), make_memory()
    ids = a.ids
    a.forget(ids=ids[:5])
    a.forget(classes=["bee"])
    a.forget(ids=ids[:5])  # again: a no-op
    b.forget(ids=ids[:5], classes=["bee"])
    assert a.digest() == b.digest() and sorted(a.ids) == sorted(b.ids)
    assert a.config.num_items == b.config.num_items == len(b)


def test_ledger_refuses_reingestion_and_bad_requests_change_nothing():
    memory = make_memory()
    images, labels, ids = make_data()
    memory.forget(ids=ids[:2])
    with pytest.raises(ReingestionError):
        memory.add(ids[:1], labels[:1], images[:1])
    digest, cfg = memory.digest(), dict(memory.config)
    with pytest.raises(UnknownClassError, match="valid names"):
        memory.forget(classes=["horse"])
    with pytest.raises(UnknownIdError):
        memory.forget(ids=["train/99999"])
    with pytest.raises(ForgetRequestError):
        memory.forget(classes=NAMES)
    assert memory.digest() == digest and dict(memory.config) == cfg
    summary = memory.ledger_summary()
    assert summary["num_forgotten"] == 2 and ids[0] not in json.dumps(memory.ledger)


def test_memory_that_does_not_fit_the_unet_is_refused():
    unet = make_unet()
    g = torch.Generator().manual_seed(0)
    wrong_size = ImageSampleMemory.from_images(torch.randint(0, 255, (3, 3, 16, 16), dtype=torch.uint8, generator=g),
                                               [0, 1, 2], ["a", "b", "c"], NAMES)
    with pytest.raises(MemoryShapeError, match="shape"):
        make_pipe(memory=wrong_size, unet=unet)
    wrong_classes = ImageSampleMemory.from_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 1], ["a", "b"], ["x", "y"])
    with pytest.raises(MemoryShapeError, match="classes"):
        make_pipe(memory=wrong_classes, unet=unet)


def test_saved_files_hold_no_forgotten_bytes_or_ids_and_no_pickle(tmp_path):
    pipe = make_pipe()
    images, labels, ids = make_data()
    generate(pipe, support_size=None)  # fill the cache with every sample's features
    forgotten = [k for k in range(N) if labels[k] == 0] + [1, 4]
    pipe.forget(classes=["ant"], ids=None)
    pipe.forget(ids=[ids[1], ids[4]])
    pipe.save_pretrained(tmp_path / "p")
    blobs = {}
    for path in glob.glob(str(tmp_path / "p" / "**" / "*"), recursive=True):
        if os.path.isfile(path):
            # weights, configs, the memory, the card, and the remote code diffusers loads without spm_hf
            assert path.endswith((".json", ".safetensors", ".py")) or os.path.basename(path) == "README.md", path
            blobs[path] = open(path, "rb").read()
            assert not blobs[path].startswith(b"\x80") and b"PK\x03\x04" not in blobs[path][:4]  # no pickle / zip
    everything = b"".join(blobs.values())
    for k in forgotten:
        assert images[k].numpy().tobytes() not in everything, f"forgotten image {k} on disk"
        assert ids[k].encode() not in everything, f"forgotten id {ids[k]} on disk"
    kept = next(k for k in range(N) if k not in forgotten)
    assert images[kept].numpy().tobytes() in everything and ids[kept].encode() in everything  # the scan can fail
    loaded = load(tmp_path / "p")
    assert loaded.memory.digest() == pipe.memory.digest() and len(loaded.memory) == N - len(forgotten)
    assert loaded.memory.is_forgotten(ids[1]) and loaded.memory.config.num_items == len(loaded.memory)


def test_corrupted_memory_file_is_named(tmp_path):
    pipe = make_pipe()
    pipe.save_pretrained(tmp_path / "p")
    path = tmp_path / "p" / "memory" / "sample_memory.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MemoryIntegrityError, match="sample_memory.safetensors"):
        load(tmp_path / "p")
    # a config from another save is caught too
    pipe.save_pretrained(tmp_path / "q")
    pipe.forget(classes=["cow"])
    pipe.memory.save_pretrained(tmp_path / "r")
    shutil.copy(tmp_path / "q" / "memory" / "config.json", tmp_path / "r" / "config.json")
    with pytest.raises(MemoryIntegrityError, match="config.json"):
        ImageSampleMemory.from_pretrained(tmp_path / "r")


# ---------------------------------------------------------------------- UNet semantics
def test_unet_reads_only_label_matched_support():
    unet = make_unet()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g)
    sup = torch.randn(6, 3, 8, 8, generator=g)
    sup_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.no_grad():
        out = unet(x, 500, torch.tensor([0, 1]), support_images=sup, support_labels=sup_labels).sample
        sup2 = sup.clone()
        sup2[4:] = torch.randn(2, 3, 8, 8, generator=g)  # class 2 supports: nobody asked for class 2
        same = unet(x, 500, torch.tensor([0, 1]), support_images=sup2, support_labels=sup_labels).sample
        sup2[0] = -sup2[0]  # a class 0 support: only query 0 may change
        diff = unet(x, 500, torch.tensor([0, 1]), support_images=sup2, support_labels=sup_labels).sample
        none = unet(x, 500, torch.tensor([0, 1])).sample
        empty_match = unet(x, 500, torch.tensor([0, 1]), support_images=sup[4:], support_labels=sup_labels[4:]).sample
        dropped = unet(x, 500, torch.tensor([0, 1]), support_images=sup, support_labels=sup_labels,
                       class_dropout_mask=torch.tensor([True, True])).sample
    torch.testing.assert_close(out, same)
    assert not torch.allclose(diff[0], out[0]) and torch.allclose(diff[1], out[1])
    torch.testing.assert_close(none, empty_match)  # no matching support == no support: zero fused features
    assert not torch.allclose(dropped, out)  # guidance dropout changes the class embedding only


def test_guidance_branches_share_the_support():
    pipe = make_pipe()
    seen = []
    original = pipe.unet.forward

    def spy(x, t, labels, class_dropout_mask=None, support=None, **kwargs):
        seen.append((labels.tolist(), None if class_dropout_mask is None else class_dropout_mask.tolist(), support))
        return original(x, t, labels, class_dropout_mask=class_dropout_mask, support=support, **kwargs)

    pipe.unet.forward = spy
    generate(pipe, labels=("ant", "cow"), guidance_scale=3.0, num_inference_steps=2)
    labels, mask, support = seen[0]
    assert labels == [0, 2, 0, 2] and mask == [True, True, False, False]  # [uncond, cond]
    assert sorted(set(support.labels.tolist())) == [0, 2] and len(support) == 12  # one support, both branches
    seen.clear()
    generate(pipe, labels=("ant",), guidance_scale=1.0, num_inference_steps=2)
    assert seen[0][0] == [0] and seen[0][1] is None  # no guidance: a single branch


def test_ddpm_scheduler_and_output_types(tmp_path):
    from diffusers import DDPMScheduler

    pipe = make_pipe()
    ddpm = SPMDiffusionPipeline(pipe.unet, DDPMScheduler.from_config(pipe.scheduler.config), pipe.memory)
    ddpm.set_progress_bar_config(disable=True)
    a = generate(ddpm, seed=0, num_inference_steps=3)
    assert np.array_equal(a, generate(ddpm, seed=0, num_inference_steps=3))
    pil = pipe(["ant"], num_inference_steps=2, generator=torch.manual_seed(0)).images
    assert pil[0].size == (8, 8)
    pt = pipe(["ant", 2], num_inference_steps=2, generator=torch.manual_seed(0), output_type="pt").images
    assert pt.shape == (2, 3, 8, 8) and 0 <= pt.min() and pt.max() <= 1


def test_architectures_build_and_shapes():
    assert set(UNET_ARCHITECTURES) == {"unet-tiny", "unet-mnist-cpu", "unet-cifar10-cpu", "unet-cifar10-paper"}
    unet = SPMUNet2DModel.from_architecture("unet-mnist-cpu", num_class_embeds=10)
    with torch.no_grad():
        out = unet(torch.randn(1, 1, 28, 28), 10, torch.tensor([3]), support_images=torch.randn(2, 1, 28, 28),
                   support_labels=torch.tensor([3, 3])).sample
    assert out.shape == (1, 1, 28, 28)


def test_unet_architectures_are_named_apart_from_presets():
    with pytest.raises(ValueError, match="unet-tiny, unet-mnist-cpu, unet-cifar10-cpu, unet-cifar10-paper"):
        SPMUNet2DModel.from_architecture("gen-tiny")


def test_a_folder_trained_under_a_former_preset_name_still_loads(trained_dir, tmp_path):
    """Loading reads the saved configs, never the preset table: a folder whose training_config.json names a
    preset that no longer exists (and lacks `unet_architecture`) loads, generates the same images and saves."""
    old = copy_of(trained_dir, tmp_path)
    config_path = os.path.join(old, "training_config.json")
    config = json.load(open(config_path))
    assert config["preset"] == "gen-tiny" and config["unet_architecture"] == "unet-tiny"
    config["preset"] = "tiny"
    del config["unet_architecture"]
    with open(config_path, "w") as f:
        json.dump(config, f)
    pipe = load(old)
    assert np.array_equal(generate(pipe, seed=3), generate(load(trained_dir), seed=3))
    pipe.save_pretrained(tmp_path / "resaved")
    assert "--preset tiny" in (tmp_path / "resaved" / "README.md").read_text()


def test_cli_commands_register_and_train(tmp_path):
    from spm_hf.data import tensors_to_dataset

    images, labels, _ = make_data(24)
    tensors_to_dataset(images, labels, NAMES, split="train").save_to_disk(str(tmp_path / "ds" / "train"))
    import datasets

    datasets.DatasetDict({"train": datasets.load_from_disk(str(tmp_path / "ds" / "train"))}).save_to_disk(str(tmp_path / "data"))
    parser = build_parser()
    args = parser.parse_args(["train-generator", "--preset", "gen-tiny", "--output-dir", str(tmp_path / "out"),
                              "--dataset", str(tmp_path / "data"), "--max-steps", "2", "--no-progress"])
    assert args.func(args) == 0
    pipe = load(tmp_path / "out")
    assert len(pipe.memory) == 24 and pipe.memory.ids[0] == "train/00000"
    args = parser.parse_args(["evaluate-generator", "--model", "m", "--output-dir", "o", "--forget", "cat"])
    assert args.forget == ["cat"] and callable(args.func)


# ---------------------------------------------------------------------- evaluation: judge, FID, report
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_judge_loads_strict_and_classifies_cifar10():
    from spm_hf.data import as_uint8_tensors, load_image_dataset
    from spm_hf.evaluation.judge import judge_predict, load_judge

    judge = load_judge()
    assert judge.depth == 56
    test = load_image_dataset("cifar10", splits=("test",))["test"]
    images, labels, _ = as_uint8_tensors(test, limit=40)
    accuracy = (judge_predict(judge, images) == labels).float().mean().item()
    assert accuracy >= 0.8, accuracy
    assert (judge_predict(judge, torch.zeros(4, 3, 32, 32, dtype=torch.uint8)) == labels[:4]).float().mean() < 1


def test_frechet_distance_and_offline_inception():
    from spm_hf.evaluation.fid import InceptionFeatures, frechet_distance

    a = np.random.RandomState(0).randn(64, 8)
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-6)  # mean shift of 1 in 8 dims
    feats = InceptionFeatures()(torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8))
    assert feats.shape == (1, 2048) and torch.isfinite(feats).all() and feats.abs().sum() > 0


class _TinyFeatures(torch.nn.Module):
    num_features = 6

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3)

    @torch.no_grad()
    def forward(self, images):
        return self.conv(images.float() / 255).mean(dim=(2, 3))


def test_evaluate_generator_report_and_grids(tmp_path, capsys):
    from spm_hf.evaluation.generator import evaluate_generator

    torch.manual_seed(0)
    unet = SPMUNet2DModel.from_architecture("unet-tiny", sample_size=32, num_class_embeds=10).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(30) % 10
    ids = [f"train/{i:05d}" for i in range(30)]
    pipe = make_pipe(ImageSampleMemory.from_images(images, labels, ids, CIFAR), unet)
    oracle = make_pipe(ImageSampleMemory.from_images(images[labels != 3], labels[labels != 3],
                                                     [i for i, y in zip(ids, labels) if y != 3], CIFAR), unet)
    report = evaluate_generator(pipe, str(tmp_path / "eval"), forget_classes=["cat"], retrained_model=oracle,
                                samples_per_class=3, num_inference_steps=2, support_size=2,
                                fid_extractor=_TinyFeatures(), real_images=(images, labels), progress=True)
    shown = capsys.readouterr().err
    for name in ("before", "after forgetting", "retrained"):
        assert f"generate ({name})" in shown and "10/10" in shown
    for grid in ("before", "after", "retrained"):
        assert os.path.exists(tmp_path / "eval" / f"grid_{grid}.png")
    assert set(report["before"]["judge_accuracy"]) == set(CIFAR)
    assert report["after"]["ua"]["cat"] == pytest.approx(100 - report["after"]["judge_accuracy"]["cat"])
    assert report["receipt"]["removed_per_class"]["cat"] == 3 == report["receipt"]["num_removed"]
    for key in ("fid_r", "fid_o"):
        assert np.isfinite(report["after"][key])
    # same weights, same remaining memory: the unlearned model generates the forgotten class as the oracle,
    # and the kept classes too (the same seeds), so its judge accuracy and FID_R equal the oracle's
    assert report["after"]["fid_o"] == pytest.approx(0.0, abs=1e-6)
    assert report["retrained"]["judge_accuracy"] == report["after"]["judge_accuracy"]
    assert report["retrained"]["fid_r"] == pytest.approx(report["after"]["fid_r"], abs=1e-9)
    before_kept = [v for k, v in report["before"]["judge_accuracy"].items() if k != "cat"]
    assert report["before"]["judge_accuracy_remaining_mean"] == pytest.approx(np.mean(before_kept))
    assert json.load(open(tmp_path / "eval" / "report.json"))["forget_classes"] == ["cat"]


def test_fid_from_saved_images_equals_in_process_fid(tmp_path):
    """`images.npz` holds every generated image; FID recomputed from it equals the in-process numbers."""
    from spm_hf.evaluation.generator import evaluate_generator, fid_from_images

    unet = make_unet()
    images, labels, ids = make_data()
    pipe = make_pipe(unet=unet)
    keep = labels != 1
    oracle = make_pipe(ImageSampleMemory.from_images(images[keep], labels[keep], [i for i, k in zip(ids, keep) if k],
                                                     NAMES), unet)
    kwargs = dict(samples_per_class=4, num_inference_steps=2, support_size=2, real_images=(images, labels))
    report = evaluate_generator(pipe, str(tmp_path / "a"), forget_classes=["bee"], retrained_model=oracle,
                                fid_extractor=_TinyFeatures(), **kwargs)
    assert report["judge"].startswith("not applicable")
    with np.load(tmp_path / "a" / "images.npz", allow_pickle=False) as saved:
        assert list(saved["label_names"]) == NAMES and saved["before_images"].dtype == np.uint8
        assert saved["before_images"].shape == (12, 3, 8, 8)
        assert saved["after_labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
        assert saved["retrained_labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4  # every class, for FID_R
    assert not glob.glob(str(tmp_path / "a" / "*.tmp"))
    kept = {"fake": 8, "real": 32}
    assert report["fid_samples"] == {"fid": {"fake": 12, "real": N}, "fid_r_before": kept, "fid_r": kept,
                                     "fid_r_retrained": kept, "fid_o": {"unlearned": 4, "retrained": 4}}

    # no FID in process (a machine without Inception weights), then FID from the saved images
    pipe, oracle = make_pipe(unet=unet), make_pipe(oracle.memory, unet)
    plain = evaluate_generator(pipe, str(tmp_path / "b"), forget_classes=["bee"], retrained_model=oracle, fid=False,
                               **kwargs)
    assert "fid" not in plain["before"] and "fid_samples" not in plain
    later = fid_from_images(str(tmp_path / "b"), real_images=(images, labels), fid_extractor=_TinyFeatures())
    for section, key in (("before", "fid"), ("before", "fid_r"), ("after", "fid_r"), ("after", "fid_o"),
                         ("retrained", "fid_r")):
        assert later[section][key] == report[section][key], key  # exactly
    assert later["fid_samples"] == report["fid_samples"]
    assert json.load(open(tmp_path / "b" / "report.json"))["after"]["fid_o"] == later["after"]["fid_o"]
    with pytest.raises(FileNotFoundError, match="images.npz"):
        os.unlink(tmp_path / "b" / "images.npz")
        fid_from_images(str(tmp_path / "b"), real_images=(images, labels), fid_extractor=_TinyFeatures())

    parser = build_parser()
    args = parser.parse_args(["evaluate-generator", "--fid-from", str(tmp_path / "a")])
    policy_flag = next(a for a in parser._subparsers._group_actions[0].choices["evaluate-generator"]._actions
                       if a.dest == "forget_policy")
    assert tuple(policy_flag.choices) == FORGET_POLICIES and policy_flag.default == FORGET_POLICIES[0]
    with pytest.raises(ValueError, match="forget_policy must be one of"):
        evaluate_generator(pipe, str(tmp_path / "c"), forget_policy="nearest", **kwargs)
    assert not os.path.exists(tmp_path / "c" / "images.npz")  # refused before generating anything
    assert args.fid_from == str(tmp_path / "a") and args.model is None
    with pytest.raises(SystemExit, match="--model"):
        args.func(parser.parse_args(["evaluate-generator", "--output-dir", "o"]))


def save_spm_judge(path, names, image_size=8, num_channels=3, seed=0):
    """A tiny SPM classifier with a memory and an image processor, saved as a judge folder."""
    from spm_hf import SPMConfig, SPMForImageClassification, make_image_processor
    from spm_hf.data import tensors_to_dataset

    torch.manual_seed(seed)
    config = SPMConfig(encoder="resnet-tiny", num_channels=num_channels, image_size=image_size,
                       id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    model = SPMForImageClassification(config).eval()
    model.image_processor = make_image_processor(image_size, [0.5] * num_channels, [0.25] * num_channels)
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (12, num_channels, image_size, image_size), dtype=torch.uint8, generator=g)
    model.build_memory(tensors_to_dataset(images, torch.arange(12) % len(names), names), show_progress=False)
    model.save_pretrained(path)
    return str(path)


def test_spm_classifier_folder_as_judge(tmp_path):
    from spm_hf.evaluation.judge import open_judge
    from spm_hf.evaluation.generator import evaluate_generator, load_images

    judge_dir = save_spm_judge(tmp_path / "judge", NAMES)
    judge = open_judge(judge_dir)
    assert judge.class_names == NAMES and (judge.num_channels, judge.image_size) == (3, 8)
    report = evaluate_generator(make_pipe(), str(tmp_path / "eval"), forget_classes=["cow"], samples_per_class=4,
                                num_inference_steps=2, support_size=2, judge=judge_dir, fid=False)
    assert "SPMForImageClassification" in report["judge"]["source"] and report["judge"]["classes"] == NAMES
    sets, _ = load_images(str(tmp_path / "eval" / "images.npz"))
    for name, section in (("before", report["before"]), ("after", report["after"])):
        images, labels = sets[name]
        hits = judge.predict(images) == labels
        expected = {n: float(hits[labels == c].float().mean() * 100) for c, n in enumerate(NAMES)}
        assert section["judge_accuracy"] == pytest.approx(expected)
    assert report["after"]["ua"]["cow"] == pytest.approx(100 - report["after"]["judge_accuracy"]["cow"])

    # a judge that does not fit the generator is refused, naming the mismatch
    for kwargs, match in (({"names": ["ant", "bee", "cat"]}, "classes"),
                          ({"names": NAMES, "image_size": 16}, "3x16x16"), ({"names": NAMES, "num_channels": 1}, "1x8x8")):
        path = save_spm_judge(tmp_path / f"bad-{match}", **kwargs)
        with pytest.raises(ValueError, match=match):
            evaluate_generator(make_pipe(), str(tmp_path / "x"), samples_per_class=1, num_inference_steps=1,
                               judge=path, fid=False)
    with pytest.raises(FileNotFoundError, match="config.json"):
        open_judge(str(tmp_path))


def test_mnist_preset_trains_a_one_channel_judge(tmp_path):
    """The `mnist` classifier preset (a few hundred digits here) gives a 1x28x28 judge of MNIST's classes."""
    from spm_hf.evaluation.judge import open_judge
    from spm_hf.training.classifier import train_classifier
    from spm_hf.training.classifier_presets import CLASSIFIER_PRESETS

    assert CLASSIFIER_PRESETS["mnist"].dataset == "mnist" and not CLASSIFIER_PRESETS["mnist"].augment  # a flipped digit is another shape
    train_classifier("mnist", str(tmp_path / "judge"), show_progress=False, epochs=1, max_train_samples=256,
                     max_test_samples=64, memory_samples=256, head_steps=5)
    judge = open_judge(str(tmp_path / "judge"))
    assert (judge.num_channels, judge.image_size) == (1, 28) and judge.class_names == [str(d) for d in range(10)]
    predictions = judge.predict(torch.zeros(3, 1, 28, 28, dtype=torch.uint8))
    assert predictions.shape == (3,) and predictions.dtype == torch.long
    judge.check_fits(1, 28, [str(d) for d in range(10)])
    with pytest.raises(ValueError, match="3x32x32"):
        judge.check_fits(3, 32, [str(d) for d in range(10)])


def test_memory_derived_class_embedding_reads_only_the_label_matched_support():
    """`support_class_embedding`: every ResBlock sees the mean exemplar embedding of the support items carrying
    the query's label; other labels' items do not matter, and a dropped (unconditional) query gets the zero
    prototype."""
    torch.manual_seed(0)
    unet = SPMUNet2DModel.from_architecture("unet-tiny", num_class_embeds=3).eval()
    assert unet.support_embedding is not None
    with torch.no_grad():  # a visible contribution (the last layer of a fresh MLP is small)
        unet.support_embedding[-1].weight.mul_(50)
    images = torch.rand(6, 3, 8, 8) * 2 - 1
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    support = unet.encode_support(images, labels)
    proto = unet.support_prototypes(torch.tensor([1, 2]), support, torch.float32)
    emb = torch.nn.functional.normalize(support.embeddings, dim=-1)
    assert emb.shape == (6, unet.support_embedding[-1].in_features)
    expected = torch.nn.functional.normalize(torch.stack([emb[2:4].mean(0), emb[4:6].mean(0)]), dim=-1)
    torch.testing.assert_close(proto, expected * math.sqrt(emb.shape[1]))
    x = torch.randn(1, 3, 8, 8)
    t = torch.tensor([500])

    def eps(support_images, support_labels, drop=None):
        return unet(x, t, torch.tensor([0]), support=unet.encode_support(support_images, support_labels),
                    class_dropout_mask=drop).sample

    with torch.no_grad():
        base = eps(images, labels)
        other = images.clone()
        other[2:] = torch.rand(4, 3, 8, 8) * 2 - 1  # change only the items of labels 1 and 2
        torch.testing.assert_close(eps(other, labels), base)
        changed = images.clone()
        changed[:2] = torch.rand(2, 3, 8, 8) * 2 - 1  # change the query's own label's items
        assert (eps(changed, labels) - base).abs().max() > 1e-3
        dropped = torch.tensor([True])
        # unconditional (guidance-dropped): the prototype is zeroed, so the weights reading it do not matter
        before = eps(images, labels, dropped)
        unet.support_embedding[-1].weight.mul_(3)
        torch.testing.assert_close(eps(images, labels, dropped), before)
        assert (eps(images, labels) - base).abs().max() > 1e-3  # ...while the conditional branch moves


def test_exemplar_loss_is_prototypical_cross_entropy_and_skips_labels_without_support():
    from spm_hf.training.generator import EXEMPLAR_LOGIT_SCALE, exemplar_loss

    # 2-pixel images embedded as themselves: label 5 points along x, label 9 along y
    support = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]).reshape(3, 2, 1, 1)
    support_labels = torch.tensor([5, 5, 9])  # permuted labels need not be 0..L-1
    queries = torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]]).reshape(3, 2, 1, 1)
    query_labels = torch.tensor([5, 9, 7])  # 7 has no support item: skipped
    loss = exemplar_loss(torch.nn.Flatten(), queries, query_labels, support, support_labels)
    # each kept query has cosine 1 with its own prototype and 0 with the other
    expected = math.log1p(math.exp(-EXEMPLAR_LOGIT_SCALE))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    swapped = exemplar_loss(torch.nn.Flatten(), queries, torch.tensor([9, 5, 7]), support, support_labels)
    assert swapped.item() == pytest.approx(EXEMPLAR_LOGIT_SCALE + expected, abs=1e-5)
