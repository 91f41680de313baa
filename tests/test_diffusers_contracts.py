"""The contracts diffusers' own pipeline tests check, for `SPMDiffusionPipeline` (diffusers' distributions
ship no tests to run against it): save/load with variants and dtypes, determinism, batch consistency, tuple
vs dict outputs, device and dtype moves; and loading a saved folder with diffusers alone
(`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`) where spm_hf is not installed.

Everything runs the `unet-tiny` UNet on 8x8 synthetic images (three classes), as tests/test_generation.py.
"""

import ast
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from spm_hf.generation import ImageSampleMemory, SPMDiffusionPipeline, SPMUNet2DModel, make_pipeline
from spm_hf.generation.remote_code import module_closure


SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
NAMES = ["ant", "bee", "cow"]
STEPS, SUPPORT = 3, 4
ROOT_CODE = {"pipeline_spm.py", "memory_component.py", "support_cache.py", "unet_spm.py", "remote_code.py",
             "files.py", "hub.py", "memory.py", "ledger.py", "memory_index.py"}
MEMORY_CODE = {"memory_component.py", "files.py", "memory.py", "ledger.py", "memory_index.py"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny tensors, busy cores


def make_pipe(seed: int = 0) -> SPMDiffusionPipeline:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8, generator=g)
    memory = ImageSampleMemory.from_images(images, torch.arange(24) % 3, [f"train/{i:05d}" for i in range(24)], NAMES)
    torch.manual_seed(seed)
    unet = SPMUNet2DModel.from_architecture("unet-tiny", num_class_embeds=len(NAMES)).eval()
    pipe = make_pipeline(unet, memory)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, labels=("ant", "bee", "cow"), seed=0, **kwargs):
    kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
    kwargs.setdefault("output_type", "np")
    return pipe(list(labels), num_inference_steps=STEPS, support_size=SUPPORT, **kwargs).images


def load(path, **kwargs) -> SPMDiffusionPipeline:
    pipe = SPMDiffusionPipeline.from_pretrained(path, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_without_spm_hf(code: str, home) -> dict:
    """Run `code` in a fresh interpreter where spm_hf cannot be imported (offline, its own HF_HOME, so the
    diffusers module cache starts empty); returns its last stdout line parsed as JSON."""
    prelude = textwrap.dedent(f"""
        import sys, os
        sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != {os.path.realpath(SRC)!r}]
        import importlib.util
        assert importlib.util.find_spec("spm_hf") is None, "spm_hf must not be importable here"
        """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    os.makedirs(home, exist_ok=True)
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                            env=env, cwd=str(home), timeout=300)
    assert result.returncode == 0, f"STDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pipeline, its folder and its images for seed 0."""
    folder = tmp_path_factory.mktemp("contracts") / "pipe"
    pipe = make_pipe()
    pipe.save_pretrained(folder)
    return pipe, folder, generate(pipe)


# ---------------------------------------------------------------------- dtypes and variants
@pytest.mark.parametrize("keyword", ["dtype", "torch_dtype"])
def test_dtype_after_loading_is_the_unets_not_the_memorys(saved, keyword):
    pipe, folder, _ = saved
    assert pipe.dtype == torch.float32
    half = load(folder, **{keyword: torch.float16})
    assert half.unet.dtype == torch.float16 and half.dtype == torch.float16
    assert half.memory.images.dtype == torch.uint8  # the memory holds images whatever the dtype
    assert torch.equal(half.memory.images, pipe.memory.images)


def test_variants_save_side_by_side_and_each_loads_with_its_dtype(tmp_path):
    full, half = make_pipe(), make_pipe()
    half.to(torch.float16)
    full.save_pretrained(tmp_path / "p")
    half.save_pretrained(tmp_path / "p", variant="fp16")  # keeps the fp32 weights, as diffusers does
    unet_files = set(os.listdir(tmp_path / "p" / "unet"))
    assert {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"} <= unet_files
    default = load(tmp_path / "p")
    fp16 = load(tmp_path / "p", variant="fp16", dtype=torch.float16)
    assert default.dtype == torch.float32 and fp16.dtype == torch.float16
    for name, value in full.unet.state_dict().items():
        assert torch.equal(default.unet.state_dict()[name], value), name
        assert torch.equal(fp16.unet.state_dict()[name], value.half()), name
    assert fp16.memory.digest() == default.memory.digest() == full.memory.digest()
    with pytest.raises(ValueError, match="variant=bf16"):
        load(tmp_path / "p", variant="bf16")
    # saving the default weights again keeps the fp16 variant; their memory is the one just saved
    full.forget(classes=["cow"])
    full.save_pretrained(tmp_path / "p")
    assert "diffusion_pytorch_model.fp16.safetensors" in os.listdir(tmp_path / "p" / "unet")
    assert load(tmp_path / "p", variant="fp16").memory.class_counts()["cow"] == 0


# ---------------------------------------------------------------------- determinism and batches
def test_same_seed_gives_the_same_images_and_another_seed_others(saved):
    pipe, _, images = saved
    assert np.array_equal(generate(pipe, seed=0), images)
    assert not np.allclose(generate(pipe, seed=1), images)


def test_an_image_of_a_batch_equals_the_same_request_alone():
    """With one generator per image (diffusers' batch tests), each image depends on its own generator: the
    first image of each class in a batch is the image that request alone gives."""
    pipe = make_pipe()

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = generate(pipe, ["ant", "bee", "cow", "ant"], generator=gens(10, 11, 12, 13))
    for position, (label, seed) in enumerate([("ant", 10), ("bee", 11), ("cow", 12)]):
        alone = generate(pipe, [label], generator=gens(seed))
        np.testing.assert_allclose(batch[position], alone[0], atol=1e-5, rtol=0)
    # the fourth image shares the first's support (one support per class and call), with its own noise
    alone = generate(pipe, ["ant"], generator=gens(13))
    assert not np.allclose(batch[3], alone[0], atol=1e-5)


def test_tuple_and_dict_outputs_hold_the_same_images(saved):
    pipe, _, images = saved
    as_tuple = pipe(["ant", "bee", "cow"], num_inference_steps=STEPS, support_size=SUPPORT,
                    generator=torch.Generator().manual_seed(0), output_type="np", return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1 and np.array_equal(as_tuple[0], images)
    out = pipe(["ant"], num_inference_steps=STEPS, support_size=SUPPORT, generator=torch.Generator().manual_seed(0),
               output_type="pt")
    assert out.images.shape == (1, 3, 8, 8) and out.images.dtype == torch.float32
    np.testing.assert_allclose(out.images.permute(0, 2, 3, 1).numpy(), images[:1], atol=1e-5)  # batch of 1 vs 3
    pil = pipe(["ant"], num_inference_steps=STEPS, support_size=SUPPORT, generator=torch.Generator().manual_seed(0))
    assert pil.images[0].size == (8, 8)


# ---------------------------------------------------------------------- device and dtype moves
def test_moves_to_cpu_and_float64_keep_the_memory_and_the_images(saved):
    _, folder, images = saved
    pipe = load(folder)
    assert pipe.to("cpu") is pipe and pipe.device == torch.device("cpu")
    assert np.array_equal(generate(pipe), images)
    pipe.to(torch.float64)
    assert pipe.dtype == torch.float64 and all(p.dtype == torch.float64 for p in pipe.unet.parameters())
    assert pipe.memory.images.dtype == torch.uint8 and pipe.memory.sample_memory.device == torch.device("cpu")
    np.testing.assert_allclose(generate(pipe), images, atol=1e-4)
    pipe.to(torch.float32)
    assert pipe.dtype == torch.float32
    np.testing.assert_allclose(generate(pipe), images, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_moves_to_cuda_take_the_memory_along(saved):
    _, folder, images = saved
    pipe = load(folder).to("cuda")
    assert pipe.device.type == "cuda" and pipe.memory.sample_memory.device.type == "cuda"
    assert pipe.memory.images.dtype == torch.uint8
    np.testing.assert_allclose(generate(pipe), images, atol=1e-3)
    half = load(folder, dtype=torch.float16).to("cuda")
    assert half.dtype == torch.float16
    np.testing.assert_allclose(generate(half), images, atol=5e-2)
    assert np.array_equal(generate(pipe.to("cpu")), images)


# ---------------------------------------------------------------------- remote code (diffusers alone)
def test_a_saved_folder_carries_its_code_and_names_it_in_model_index(saved):
    _, folder, _ = saved
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_spm", "SPMDiffusionPipeline"]
    assert index["unet"] == ["unet_spm", "SPMUNet2DModel"] and index["memory"] == ["memory_component", "ImageSampleMemory"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    # the memory's files are hidden from diffusers' download planning, which then fetches memory/ whole
    assert index["_ignore_files"] == ["memory/sample_memory.safetensors", "memory/sample_memory.json"]
    assert {p.name for p in folder.glob("*.py")} == ROOT_CODE
    assert {p.name for p in (folder / "memory").glob("*.py")} == MEMORY_CODE
    assert {p.name for p in (folder / "unet").glob("*.py")} == {"unet_spm.py"}
    entries = {folder / "pipeline_spm.py", folder / "memory" / "memory_component.py", folder / "unet" / "unet_spm.py"}
    for path in [*folder.glob("*.py"), *(folder / "memory").glob("*.py"), folder / "unet" / "unet_spm.py"]:
        tree = ast.parse(path.read_text())
        relative = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
        assert all(node.level <= 1 for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)), path
        assert relative <= {p.stem for p in path.parent.glob("*.py")}, path  # siblings only
        if path in entries:
            # diffusers copies only the files an entry module imports directly: it imports all it needs
            assert relative == set(module_closure(str(path))) - {path.stem}, path
    assert "from ." not in (folder / "unet" / "unet_spm.py").read_text()  # one file: the Hub sends only it


def test_the_installed_code_loads_the_folder_and_an_older_folder_still_loads(saved, tmp_path):
    import shutil

    pipe, folder, images = saved
    loaded = load(folder)
    assert type(loaded) is SPMDiffusionPipeline and type(loaded.unet) is SPMUNet2DModel
    assert type(loaded.memory) is ImageSampleMemory and np.array_equal(generate(loaded), images)
    # a folder saved before pipelines carried their code: model_index.json names spm_hf's modules
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    index = json.loads((old / "model_index.json").read_text())
    index.update(_class_name="SPMDiffusionPipeline", unet=["spm_hf.generation.unet_spm", "SPMUNet2DModel"],
                 memory=["spm_hf.generation.memory_component", "ImageSampleMemory"])
    del index["_ignore_files"]
    (old / "model_index.json").write_text(json.dumps(index))
    for path in [*old.glob("*.py"), *old.glob("*/*.py")]:
        path.unlink()
    assert np.array_equal(generate(load(old)), images)


def test_diffusers_loads_the_folder_where_spm_hf_is_not_installed(saved, tmp_path):
    pipe, folder, images = saved
    np.save(tmp_path / "expected.npy", images)
    out = run_without_spm_hf(f"""
        import json
        import numpy as np
        import torch
        from diffusers import DiffusionPipeline
        try:
            DiffusionPipeline.from_pretrained({str(folder)!r})
            refused = None
        except ValueError as e:
            refused = str(e)
        pipe = DiffusionPipeline.from_pretrained({str(folder)!r}, trust_remote_code=True)
        pipe.set_progress_bar_config(disable=True)
        images = pipe(["ant", "bee", "cow"], num_inference_steps={STEPS}, support_size={SUPPORT},
                      generator=torch.Generator().manual_seed(0), output_type="np").images
        half = DiffusionPipeline.from_pretrained({str(folder)!r}, trust_remote_code=True, dtype=torch.float16)
        receipt = pipe.forget(classes=["cow"])
        pipe.save_pretrained({str(tmp_path / "resaved")!r})
        print(json.dumps({{"refused": refused, "module": type(pipe).__module__, "unet": type(pipe.unet).__module__,
                          "memory": type(pipe.memory).__module__,
                          "same": bool(np.array_equal(images, np.load({str(tmp_path / "expected.npy")!r}))),
                          "half": str(half.dtype), "digest": pipe.memory.digest(), "removed": receipt.num_removed}}))
        """, tmp_path / "home")
    assert out["refused"] is not None and "trust_remote_code=True" in out["refused"]
    assert out["module"].startswith("diffusers_modules.") and out["unet"].startswith("diffusers_modules.")
    assert out["memory"].startswith("diffusers_modules.")
    assert out["same"] is True and out["half"] == "torch.float16"
    # what the remote copy forgot and saved, the installed code loads (and it carries the code again)
    resaved = load(tmp_path / "resaved")
    expected = make_pipe()
    expected.forget(classes=["cow"])
    assert out["removed"] == 8 and resaved.memory.digest() == out["digest"] == expected.memory.digest()
    assert {p.name for p in (tmp_path / "resaved").glob("*.py")} == ROOT_CODE
    assert "_name_or_path" not in json.loads((tmp_path / "resaved" / "model_index.json").read_text())  # a local path
    assert np.array_equal(generate(resaved, ["ant", "bee"]), generate(expected, ["ant", "bee"]))


def test_a_component_of_the_wrong_kind_is_refused_by_name(saved):
    pipe, _, _ = saved
    with pytest.raises(TypeError, match=r"unet must be an SPMUNet2DModel, got torch\.nn\.modules\.linear\.Linear"):
        SPMDiffusionPipeline(unet=torch.nn.Linear(1, 1), scheduler=pipe.scheduler, memory=pipe.memory)
    with pytest.raises(TypeError, match="memory must be an ImageSampleMemory"):
        SPMDiffusionPipeline(unet=pipe.unet, scheduler=pipe.scheduler, memory=pipe.memory.sample_memory)
