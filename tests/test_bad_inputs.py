"""Bad input is a clear error where it enters (config, model inputs, image processing, sampling parameters,
the command line): each case names the argument, its value and what is allowed, and leaves the memory as it
was (same digest). The memory's own entry points (add, forget, knn, a JSON missing a field) are covered in
tests/test_memory_keys_and_ledger.py."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLASSES, make_config, make_memory
from spm_hf import SPMForImageClassification
from spm_hf.cli import CommandError, main
from spm_hf.generation import ImageSampleMemory, SPMDiffusionPipeline, SPMUNet2DModel, make_pipeline
from spm_hf.image_processing_spm import images_to_tensor, make_image_processor, normalize_uint8
from spm_hf.memory import (
    MEMORY_CONFIG_NAME,
    MEMORY_WEIGHTS_NAME,
    ForgetRequestError,
    MemoryIntegrityError,
    SampleMemory,
    UnknownClassError,
    UnknownIdError,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_refused(call, error, fragments, digest_of):
    """`call()` raises `error` whose message holds every fragment; `digest_of()` is the same after."""
    before = digest_of()
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert digest_of() == before
    return message


# ---------------------------------------------------------------------- SPMConfig
@pytest.mark.parametrize(
    "overrides, error, fragments",
    [
        (dict(knn_k=0), ValueError, ["knn_k", "got 0", ">= 1"]),
        (dict(knn_k=-3), ValueError, ["knn_k", "got -3"]),
        (dict(knn_k=2.5), TypeError, ["knn_k", "2.5", "integer"]),
        (dict(knn_k=True), TypeError, ["knn_k", "True", "integer"]),
        (dict(memory_mode="nearest"), ValueError, ["memory_mode", "'nearest'", "class_mean", "knn"]),
        (dict(knn_backend="annoy"), ValueError, ["knn_backend", "'annoy'", "faiss"]),
        (dict(num_experts=0), ValueError, ["num_experts", "got 0"]),
        (dict(num_experts=1.5), TypeError, ["num_experts", "1.5"]),
        (dict(num_channels=0), ValueError, ["num_channels", "got 0"]),
        (dict(image_size="32"), TypeError, ["image_size", "'32'", "integer"]),
        (dict(encoder="resnet99"), ValueError, ["encoder", "'resnet99'", "resnet-tiny"]),
        (dict(encoder="custom", encoder_depths=[1, 0], encoder_widths=[8, 16]), ValueError,
         ["encoder_depths[1]", "got 0"]),
        (dict(fusion_hidden_dim=-1), ValueError, ["fusion_hidden_dim", "got -1"]),
        (dict(fusion_similarity="l2"), ValueError, ["fusion_similarity", "'l2'", "cosine"]),
    ],
)
def test_bad_config_values_are_refused(memory, overrides, error, fragments):
    assert_refused(lambda: make_config(**overrides), error, fragments, memory.digest)


def test_a_saved_config_with_a_bad_value_is_refused_on_load(model, tmp_path):
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["knn_k"] = 0
    path.write_text(json.dumps(config))
    on_disk = SampleMemory.load(tmp_path).digest
    assert_refused(lambda: SPMForImageClassification.from_pretrained(tmp_path), ValueError, ["knn_k", "got 0"],
                   on_disk)


# ---------------------------------------------------------------------- SPMForImageClassification.forward
def _call(model, *args, **kwargs):
    return lambda: model(*args, **kwargs)


def _forward_cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 32, 32, generator=g)
    nan, inf = x.clone(), x.clone()
    nan[2, 1, 5, 5] = float("nan")
    inf[0, 0, 0, 0] = float("inf")
    support = torch.randn(4, 3, 32, 32, generator=g)
    return [
        ("uint8", dict(pixel_values=(x * 40 + 128).clamp(0, 255).to(torch.uint8)), TypeError,
         ["pixel_values", "torch.uint8", "image processor"]),
        ("one channel", dict(pixel_values=x[:, :1]), ValueError, ["pixel_values", "(6, 1, 32, 32)", "num_channels=3"]),
        ("1x1", dict(pixel_values=x[:, :, :1, :1]), ValueError, ["pixel_values", "(6, 3, 1, 1)", "image_size=32"]),
        ("64x64", dict(pixel_values=torch.randn(2, 3, 64, 64)), ValueError, ["(2, 3, 64, 64)", "(B, 3, 32, 32)"]),
        ("no batch dim", dict(pixel_values=x[0]), ValueError, ["(3, 32, 32)", "batch dimension"]),
        ("empty batch", dict(pixel_values=x[:0]), ValueError, ["(0, 3, 32, 32)", "B >= 1"]),
        ("nan", dict(pixel_values=nan), ValueError, ["pixel_values", "1 NaN or infinite"]),
        ("inf", dict(pixel_values=inf), ValueError, ["pixel_values", "1 NaN or infinite"]),
        ("numpy", dict(pixel_values=x.numpy()), TypeError, ["pixel_values", "ndarray"]),
        ("none", dict(pixel_values=None), ValueError, ["pixel_values is required"]),
        ("label out of range", dict(pixel_values=x, labels=torch.tensor([0, 1, 2, 3, 4, 7])), ValueError,
         ["labels", "[7]", "0..4"]),
        ("float labels", dict(pixel_values=x, labels=torch.zeros(6)), TypeError, ["labels", "torch.float32"]),
        ("labels length", dict(pixel_values=x, labels=torch.zeros(3, dtype=torch.long)), ValueError,
         ["labels", "(6,)", "(3,)"]),
        ("support size", dict(pixel_values=x, support_pixel_values=support[:, :, :8, :8],
                              support_labels=torch.arange(4)), ValueError, ["support_pixel_values", "(4, 3, 8, 8)"]),
        ("support labels", dict(pixel_values=x, support_pixel_values=support, support_labels=torch.arange(3)),
         ValueError, ["support_labels", "(4,)", "(3,)"]),
        ("support without labels", dict(pixel_values=x, support_pixel_values=support), ValueError,
         ["support_pixel_values needs support_labels"]),
        ("support embeddings", dict(pixel_values=x, support_embeddings=torch.randn(4, 3), support_labels=torch.arange(4)),
         ValueError, ["support_embeddings", "(S, 16)", "(4, 3)"]),
        ("leave one out", dict(pixel_values=x, leave_one_out=True), ValueError, ["leave_one_out=True needs labels"]),
    ]


@pytest.mark.parametrize("name, kwargs, error, fragments", _forward_cases(), ids=[c[0] for c in _forward_cases()])
def test_bad_model_inputs_are_refused(model, name, kwargs, error, fragments):
    assert_refused(_call(model, **kwargs), error, fragments, model.memory.digest)


@pytest.mark.parametrize(
    "setting, value, error, fragments",
    [
        ("knn_k", 0, ValueError, ["knn_k", "got 0"]),
        ("memory_mode", "nearest", ValueError, ["memory_mode", "'nearest'"]),
        ("knn_backend", "annoy", ValueError, ["knn_backend", "'annoy'"]),
    ],
)
def test_memory_settings_changed_on_a_model_are_checked_before_reading(model, images, setting, value, error,
                                                                       fragments):
    model.config.memory_mode = "knn"
    model.config.knn_k = 5
    ok = model(images).logits
    assert torch.isfinite(ok).any(-1).all()
    setattr(model.config, setting, value)
    assert_refused(_call(model, images), error, fragments, model.memory.digest)


def test_good_inputs_still_work(model, images):
    out = model(images, labels=torch.tensor([0, 1, 2, 3, 4, 0]))
    assert out.logits.shape == (6, len(CLASSES)) and torch.isfinite(out.loss)
    embeddings = torch.randn(5, 16)
    out = model(images, support_embeddings=embeddings, support_labels=torch.arange(5))
    assert torch.isfinite(out.logits).all()


# ---------------------------------------------------------------------- image processing
def _processor_cases():
    processor = make_image_processor(8)
    pil = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    return [
        ("image_size 0", lambda: make_image_processor(0), ValueError, ["image_size", "got 0"]),
        ("two means", lambda: make_image_processor(8, [0.5, 0.5], [0.2, 0.2]), ValueError, ["mean", "1 (grayscale) or 3"]),
        ("zero std", lambda: make_image_processor(8, [0.5], [0.0]), ValueError, ["std", "> 0", "[0.0]"]),
        ("nan mean", lambda: make_image_processor(8, [float("nan")], [0.3]), ValueError, ["mean", "finite", "nan"]),
        ("mean/std lengths", lambda: make_image_processor(8, [0.5], [0.2, 0.2, 0.2]), ValueError,
         ["mean=[0.5]", "std=[0.2, 0.2, 0.2]"]),
        ("float to normalize_uint8", lambda: normalize_uint8(torch.rand(2, 3, 8, 8), processor), TypeError,
         ["normalize_uint8", "uint8", "torch.float32"]),
        ("channels to normalize_uint8", lambda: normalize_uint8(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), processor),
         ValueError, ["(N, 3, H, W)", "(2, 1, 8, 8)"]),
        ("one image, not a list", lambda: images_to_tensor(processor, pil), TypeError, ["list", "pass [image]"]),
        ("float array", lambda: images_to_tensor(processor, [np.random.rand(8, 8, 3)]), ValueError,
         ["images[0]", "float64", "(8, 8, 3)"]),
        ("no images", lambda: images_to_tensor(processor, []), ValueError, ["images is empty"]),
        ("a path", lambda: images_to_tensor(processor, ["cat.png"]), TypeError, ["images[0]", "str"]),
    ]


@pytest.mark.parametrize("name, call, error, fragments", _processor_cases(), ids=[c[0] for c in _processor_cases()])
def test_bad_image_processing_inputs_are_refused(name, call, error, fragments):
    assert_refused(call, error, fragments, lambda: None)  # no memory is involved: only type, message


def test_good_images_still_convert():
    processor = make_image_processor(8)
    pil = Image.fromarray(np.full((8, 8, 3), 255, dtype=np.uint8))
    out = images_to_tensor(processor, [pil, np.zeros((8, 8, 3), dtype=np.uint8)])
    assert out.shape == (2, 3, 8, 8)
    assert torch.allclose(out, normalize_uint8(torch.stack([torch.full((3, 8, 8), 255), torch.zeros(3, 8, 8)])
                                               .to(torch.uint8), processor))


# ---------------------------------------------------------------------- SPMDiffusionPipeline.__call__
# the tiny pipeline of tests/test_generation.py
NAMES = ["ant", "bee", "cow"]


def make_pipe() -> SPMDiffusionPipeline:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8, generator=g)
    memory = ImageSampleMemory.from_images(images, torch.arange(24) % 3, [f"train/{i:05d}" for i in range(24)], NAMES)
    torch.manual_seed(0)
    pipe = make_pipeline(SPMUNet2DModel.from_architecture("unet-tiny", num_class_embeds=len(NAMES)).eval(), memory)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return make_pipe()


@pytest.mark.parametrize(
    "overrides, error, fragments",
    [
        (dict(num_inference_steps=0), ValueError, ["num_inference_steps", "1..1000", "got 0"]),
        (dict(num_inference_steps=-1), ValueError, ["num_inference_steps", "got -1"]),
        (dict(num_inference_steps=2.5), TypeError, ["num_inference_steps", "2.5", "integer"]),
        (dict(num_inference_steps=True), TypeError, ["num_inference_steps", "True"]),
        (dict(num_inference_steps=1001), ValueError, ["num_inference_steps", "1..1000", "1001"]),
        (dict(guidance_scale=float("nan")), ValueError, ["guidance_scale", "finite", "nan"]),
        (dict(guidance_scale=float("inf")), ValueError, ["guidance_scale", "inf"]),
        (dict(guidance_scale=-1.0), ValueError, ["guidance_scale", ">= 0.0", "-1.0"]),
        (dict(guidance_scale="2"), TypeError, ["guidance_scale", "'2'"]),
        (dict(eta=float("nan")), ValueError, ["eta", "[0.0, 1.0]", "nan"]),
        (dict(eta=1.5), ValueError, ["eta", "[0.0, 1.0]", "1.5"]),
        (dict(eta=-0.1), ValueError, ["eta", "-0.1"]),
        (dict(support_size=-1), ValueError, ["support_size", ">= 0", "-1"]),
        (dict(support_size=2.5), TypeError, ["support_size", "2.5"]),
        (dict(class_labels=b"ant"), TypeError, ["class_labels", "b'ant'", "bytes"]),
        (dict(class_labels=[]), ValueError, ["class_labels is empty"]),
        (dict(class_labels=[1.0]), TypeError, ["class_labels[0]", "1.0", "float"]),
        (dict(class_labels=["ant", None]), TypeError, ["class_labels[1]", "None"]),
        (dict(class_labels=torch.tensor([0.5])), TypeError, ["class_labels", "torch.float32"]),
        (dict(class_labels=torch.zeros(2, 2, dtype=torch.long)), ValueError, ["class_labels", "(2, 2)"]),
        (dict(class_labels="unicorn"), UnknownClassError, ["'unicorn'", "ant"]),
        (dict(class_labels=[5]), UnknownClassError, ["5", "0..2"]),
        (dict(output_type="latent"), ValueError, ["output_type", "'latent'", "'pt'"]),
        (dict(generator=0), TypeError, ["generator", "torch.Generator", "got 0"]),
        (dict(generator=[torch.Generator()]), ValueError, ["1 generators for 3 images"]),
        (dict(strict="yes"), TypeError, ["strict", "'yes'", "True or False"]),
        (dict(forget_policy="nearest"), ValueError, ["forget_policy", "'nearest'", "substitute"]),
    ],
)
def test_bad_sampling_parameters_are_refused(pipe, overrides, error, fragments):
    kwargs = dict(class_labels=["ant", "bee", "cow"], num_inference_steps=2, support_size=4, output_type="np",
                  generator=torch.Generator().manual_seed(0))
    kwargs.update(overrides)
    generator = kwargs["generator"]
    rng_state = generator.get_state() if isinstance(generator, torch.Generator) else None
    cached = len(pipe.support_cache)
    assert_refused(lambda: pipe(**kwargs), error, fragments, pipe.memory.digest)
    assert len(pipe.support_cache) == cached  # refused before any support was encoded
    if rng_state is not None:
        assert torch.equal(generator.get_state(), rng_state)  # and before any random draw


def test_edge_values_the_pipeline_allows(pipe):
    out = pipe(torch.tensor([0, 2]), num_inference_steps=np.int64(1), guidance_scale=0, support_size=0, eta=1.0,
               output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (2, 8, 8, 3) and np.isfinite(out).all()
    out = pipe([np.int64(1)], num_inference_steps=1, support_size=None, output_type="pt").images
    assert out.shape == (1, 3, 8, 8)


# ---------------------------------------------------------------------- spm-hf (the command line)
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "model"
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config()).eval()
    model.set_memory(make_memory())
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def folder(saved_model, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(saved_model, copy)
    return copy


def memory_files(folder):
    """The saved memory: its digest and the hashes of both of its files."""
    if not os.path.exists(os.path.join(folder, MEMORY_CONFIG_NAME)):
        return None
    hashes = [hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest()
              for n in (MEMORY_CONFIG_NAME, MEMORY_WEIGHTS_NAME)]
    try:
        return SampleMemory.load(folder).digest(), hashes
    except MemoryIntegrityError:
        return "unreadable", hashes


def run_cli(capsys, argv, folder, error, fragments):
    """`main(argv)` exits with status 2 after one line `spm-hf <command>: error: ...` naming the problem (no
    traceback); the memory files in `folder` are unchanged; the library's exception is the cause."""
    capsys.readouterr()
    before = memory_files(folder)
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    assert info.value.code == 2 and isinstance(info.value, CommandError)
    assert isinstance(info.value.__cause__, error), repr(info.value.__cause__)
    assert_one_error_line(captured.err, argv[0], fragments)
    assert captured.out == ""
    assert memory_files(folder) == before


def assert_one_error_line(stderr, command, fragments):
    """The error is the last line of stderr and the only one from spm-hf (transformers' loading progress bar
    may precede it); no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and sum("spm-hf" in line for line in lines) == 1, stderr
    assert lines[-1].startswith(f"spm-hf {command}: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[-1], f"{fragment!r} not in {lines[-1]!r}"


def test_cli_forget_takes_an_index_that_is_not_a_class_name(folder, capsys):
    assert main(["forget", "--model", str(folder), "--classes", "3"]) == 0
    assert "cat: 12" in capsys.readouterr().out
    assert SampleMemory.load(folder).class_counts()["cat"] == 0


def _bad_cli_cases():
    return [
        ("index out of range", lambda f, t: ["forget", "--model", f, "--classes", "99"], UnknownClassError,
         ["class index 99", "0..4"]),
        ("unknown class", lambda f, t: ["forget", "--model", f, "--classes", "unicorn"], UnknownClassError,
         ["unknown class 'unicorn'", "airplane"]),
        ("every class", lambda f, t: ["forget", "--model", f, "--classes", *CLASSES], ForgetRequestError,
         ["every"]),
        ("missing model", lambda f, t: ["forget", "--model", os.path.join(t, "no", "such", "model"), "--classes", "cat"],
         FileNotFoundError, ["--model", "no such folder", "not a Hub repo id"]),
        ("model is a file", lambda f, t: ["forget", "--model", os.path.join(f, "config.json"), "--classes", "cat"],
         NotADirectoryError, ["--model", "config.json", "is a file"]),
        ("not a model folder", lambda f, t: ["forget", "--model", t, "--classes", "cat", "--output-dir", t],
         FileNotFoundError, ["--model", "neither config.json nor model_index.json"]),
        ("output dir is a file", lambda f, t: ["forget", "--model", f, "--classes", "cat", "--output-dir",
                                               os.path.join(f, "config.json")],
         NotADirectoryError, ["--output-dir", "config.json", "existing file"]),
        ("output dir under a file", lambda f, t: ["forget", "--model", f, "--classes", "cat", "--output-dir",
                                                  os.path.join(f, "config.json", "out")],
         NotADirectoryError, ["--output-dir", "is a file, not a folder"]),
        ("missing ids file", lambda f, t: ["forget", "--model", f, "--ids-file", os.path.join(t, "ids.txt")],
         FileNotFoundError, ["--ids-file", "ids.txt", "no such file"]),
        ("unknown id", lambda f, t: ["forget", "--model", f, "--ids-file", _ids_file(t, ["train/99999"])],
         UnknownIdError, ["train/99999"]),
        ("nothing to forget", lambda f, t: ["forget", "--model", f, "--ids-file", _ids_file(t, [])], ValueError,
         ["give --classes and/or --ids-file"]),
        ("no memory", lambda f, t: ["forget", "--model", _strip_memory(f), "--classes", "cat"], ValueError,
         ["no sample memory"]),
        ("memory json missing a field", lambda f, t: ["forget", "--model", _drop_field(f, "digest"), "--classes", "cat"],
         MemoryIntegrityError, ["lacks the fields ['digest']"]),
        ("push a missing folder", lambda f, t: ["push", os.path.join(t, "a", "b", "c"), "user/repo"],
         FileNotFoundError, ["model_dir", "no such folder"]),
    ]


def _ids_file(tmp, ids):
    path = os.path.join(tmp, "ids.txt")
    with open(path, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))
    return path


def _strip_memory(folder):
    for name in (MEMORY_CONFIG_NAME, MEMORY_WEIGHTS_NAME):
        os.unlink(os.path.join(folder, name))
    return str(folder)


def _drop_field(folder, field):
    path = os.path.join(folder, MEMORY_CONFIG_NAME)
    meta = json.load(open(path))
    del meta[field]
    with open(path, "w") as f:
        json.dump(meta, f)
    return str(folder)


@pytest.mark.parametrize("name, argv, error, fragments", _bad_cli_cases(), ids=[c[0] for c in _bad_cli_cases()])
def test_cli_bad_input_is_one_line_and_exit_2(folder, tmp_path, capsys, name, argv, error, fragments):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = argv(str(folder), str(empty))
    run_cli(capsys, argv, folder, error, fragments)


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["forget", "--model", "outputs/no/such/model", "--classes", "cat"], ["--model", "no such folder"]),
        (["forget", "--model", "MODEL", "--classes", "cat", "--output-dir", "README.md"], ["--output-dir", "existing file"]),
    ],
)
def test_cli_errors_from_the_console_script(saved_model, tmp_path, argv, fragments):
    """The installed entry point: exit status 2, one line on stderr, no traceback."""
    (tmp_path / "README.md").write_text("a file, not a folder")
    argv = [str(saved_model) if a == "MODEL" else a for a in argv]
    before = memory_files(saved_model)
    code = "import sys; from spm_hf.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr
    assert_one_error_line(result.stderr, "forget", fragments)
    assert memory_files(saved_model) == before
