"""Any transformers vision backbone as the SPM's encoder, `freeze_encoder` and the parameter-free fusion.

Every backbone is a tiny random config built here (hidden sizes 8-16, one or two layers, 32x32 images):
nothing is downloaded."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import CLASSES, HIDE_SPM_HF
from PIL import Image
from transformers import AutoModel, ConvNextConfig, Dinov2Config, ResNetConfig, ViTConfig, ViTImageProcessor

from spm_hf import SampleMemory, SPMConfig, SPMForImageClassification, make_image_processor
from spm_hf.cli import main
from spm_hf.modeling_spm import TransformersBackboneEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BACKBONES = {
    "resnet": lambda: ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
    "convnext": lambda: ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32),
    "vit": lambda: ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             image_size=32, patch_size=8),
    "dinov2": lambda: Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                                   image_size=32, patch_size=8),
}


def spm_config(**kwargs) -> SPMConfig:
    return SPMConfig(id2label=dict(enumerate(CLASSES)), label2id={n: i for i, n in enumerate(CLASSES)}, **kwargs)


def with_memory(model: SPMForImageClassification, n: int = 40) -> SPMForImageClassification:
    g = torch.Generator().manual_seed(0)
    memory = SampleMemory(CLASSES, (model.config.embed_dim,))
    memory.add([f"train/{i:05d}" for i in range(n)], torch.arange(n) % len(CLASSES),
               model.encode(torch.randn(n, 3, model.config.image_size, model.config.image_size, generator=g)))
    model.set_memory(memory)
    return model


@pytest.mark.parametrize("name", list(BACKBONES))
def test_any_transformers_vision_model_is_an_encoder_and_round_trips(name, images, tmp_path):
    torch.manual_seed(0)
    config = spm_config(backbone_config=BACKBONES[name]())
    assert config.encoder == "backbone" and config.embed_dim == 16 and config.image_size == 32
    model = with_memory(SPMForImageClassification(config).eval())
    assert isinstance(model.encoder, TransformersBackboneEncoder)
    with torch.no_grad():
        out = model(images)
    assert out.embeddings.shape == (6, 16) and torch.allclose(out.logits.exp().sum(1), torch.ones(6), atol=1e-5)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["backbone_config"]["model_type"] == name and saved["backbone"] is None
    loaded = SPMForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded.config.backbone_config) is type(config.backbone_config)
    assert model.state_dict().keys() == loaded.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(loaded(images).logits, out.logits)
    # knn mode and forgetting read the memory the same way whatever the encoder
    loaded.config.memory_mode = "knn"
    loaded.forget(classes=["cat"])
    with torch.no_grad():
        assert torch.all(loaded(images).logits[:, 3] == float("-inf"))


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_a_frozen_encoder_keeps_its_weights_and_statistics_while_the_fusion_trains(name, images, tmp_path):
    torch.manual_seed(0)
    model = SPMForImageClassification(spm_config(backbone_config=BACKBONES[name](), freeze_encoder=True))
    model.save_pretrained(tmp_path)
    model = SPMForImageClassification.from_pretrained(tmp_path)  # loading hands the model new parameters
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}  # BatchNorm statistics included
    fusion = {k: v.clone() for k, v in model.fusion.state_dict().items()}
    model.train()
    assert not model.encoder.training and model.fusion.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        loss = model(images, labels=torch.tensor([0, 0, 1, 1, 2, 2]), leave_one_out=True).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder.items())
    assert any(not torch.equal(v, model.fusion.state_dict()[k]) for k, v in fusion.items())


def _save_backbone(folder, config, mean=(0.5, 0.25, 0.75), std=(0.2, 0.3, 0.4)):
    torch.manual_seed(1)
    AutoModel.from_config(config).save_pretrained(folder)
    ViTImageProcessor(image_mean=list(mean), image_std=list(std), size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_a_pretrained_backbone_is_loaded_once_and_its_weights_become_the_models_own(images, tmp_path):
    backbone = _save_backbone(tmp_path / "backbone", BACKBONES["vit"]())
    config = spm_config(backbone=str(backbone))
    model = SPMForImageClassification(config).eval()
    reference = AutoModel.from_pretrained(backbone).eval()
    assert all(torch.equal(v, model.encoder.model.state_dict()[k]) for k, v in reference.state_dict().items())
    assert model.config.use_pretrained_backbone is False  # a saved folder must never fetch the backbone again
    assert config.use_pretrained_backbone is True  # the caller's config builds the next model pretrained too
    again = SPMForImageClassification(config)
    assert all(torch.equal(v, again.encoder.model.state_dict()[k]) for k, v in reference.state_dict().items())
    with_memory(model).save_pretrained(tmp_path / "spm")
    shutil.rmtree(backbone)
    loaded = SPMForImageClassification.from_pretrained(tmp_path / "spm").eval()
    with torch.no_grad():
        assert torch.equal(loaded(images).logits, model(images).logits)
    with pytest.raises(ValueError, match="encoder='resnet18' and a backbone were both given"):
        spm_config(encoder="resnet18", backbone_config=BACKBONES["vit"]())
    with pytest.raises(ValueError, match="needs its 'model_type'"):
        spm_config(backbone_config={"hidden_size": 16})
    with pytest.raises(ValueError, match="backbone_pooling must be one of"):
        spm_config(backbone_config=BACKBONES["vit"](), backbone_pooling="max")
    with pytest.raises(ValueError, match="fusion_temperature must be a finite number > 0"):
        spm_config(fusion="cosine_prototype", fusion_temperature=0)


def test_remote_code_and_pipeline_with_backbones_where_spm_hf_is_not_importable(images, tmp_path):
    """A ViT that takes 48x48 images (the saved processor resizes the 32x32 inputs) and a ConvNeXt."""
    folders, expected = {}, {}
    for name, config in (("vit", ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=32, image_size=48, patch_size=8)),
                         ("convnext", BACKBONES["convnext"]())):
        torch.manual_seed(0)
        model = with_memory(SPMForImageClassification(spm_config(backbone_config=config)).eval())
        model.image_processor = make_image_processor(model.config.image_size)
        folders[name] = str(tmp_path / name)
        model.save_pretrained(folders[name])
        size = model.config.image_size
        pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(2))
        torch.save(pixels, tmp_path / f"{name}.pt")
        with torch.no_grad():
            expected[name] = model(pixels).logits
    script = HIDE_SPM_HF + textwrap.dedent(
        f"""
        import json, sys
        import torch
        from PIL import Image
        from transformers import AutoModelForImageClassification, pipeline
        out = {{}}
        for name, folder in {folders!r}.items():
            model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
            with torch.no_grad():
                logits = model(torch.load({str(tmp_path)!r} + f"/{{name}}.pt")).logits
            clf = pipeline("image-classification", model=folder, trust_remote_code=True)
            top = clf(Image.new("RGB", (32, 32), (120, 30, 200)), top_k=5)
            out[name] = {{"module": type(model).__module__, "encoder": type(model.encoder.model).__name__,
                          "logits": logits.tolist(), "labels": sorted(t["label"] for t in top),
                          "total": sum(t["score"] for t in top)}}
        print(json.dumps(out))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    for name, encoder in (("vit", "ViTModel"), ("convnext", "ConvNextModel")):
        assert payload[name]["module"].startswith("transformers_modules.") and payload[name]["encoder"] == encoder
        assert torch.allclose(torch.tensor(payload[name]["logits"]), expected[name], atol=1e-5)
        assert payload[name]["labels"] == sorted(CLASSES) and abs(payload[name]["total"] - 1) < 1e-4


def test_cli_backbone_with_a_core_split(tmp_path, capsys):
    backbone = _save_backbone(tmp_path / "backbone", BACKBONES["vit"]())
    out = tmp_path / "model"
    argv = ["train-classifier", "--preset", "tiny", "--backbone", str(backbone), "--epochs", "1",
            "--max-train-samples", "300", "--max-test-samples", "32", "--core-fraction", "0.5", "--core-seed", "1",
            "--output-dir", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "training_summary.json").read_text())
    assert "--backbone" in summary["command"] and "--core-fraction 0.5" in summary["command"]
    assert summary["normalization"] == {"mean": [0.5, 0.25, 0.75], "std": [0.2, 0.3, 0.4]}  # the backbone's own
    assert 110 < summary["core"]["size"] < 190 and summary["train_samples"] == summary["core"]["size"]
    model = SPMForImageClassification.from_pretrained(out)
    assert model.config.backbone_config.model_type == "vit" and model.config.backbone == str(backbone)
    assert int(model.memory.trained_on.sum()) == summary["core"]["size"] and len(model.memory) == 2000
    assert list(model.image_processor.image_mean) == [0.5, 0.25, 0.75]


def test_a_frozen_pretrained_backbone_with_the_parameter_free_fusion_trains_nothing(tmp_path):
    """Nothing of this model comes from the user's data: every memory row is memory-only, every forget exact."""
    from spm_hf.training.classifier import train_classifier

    backbone = _save_backbone(tmp_path / "backbone", BACKBONES["dinov2"]())
    summary = train_classifier("tiny", str(tmp_path / "model"), backbone=str(backbone), freeze_encoder=True,
                               fusion="cosine_prototype", max_train_samples=100, memory_samples=100,
                               max_test_samples=50, show_progress=False)
    assert summary["global_step"] == 0 and summary["train_loss"] is None and summary["core"]["size"] == 0
    model = SPMForImageClassification.from_pretrained(tmp_path / "model")
    assert len(model.memory) == 100 and not model.memory.trained_on.any()
    assert list(model.fusion.parameters()) == []
    reference = AutoModel.from_pretrained(backbone)
    assert all(torch.equal(v, model.encoder.model.state_dict()[k]) for k, v in reference.state_dict().items())
    cats = model.memory.class_counts()["cat"]
    receipt = model.forget(classes=["cat"])
    assert receipt.exact and receipt.num_removed == receipt.num_memory_only == cats > 0
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    with torch.no_grad():
        logits = model(**model.image_processor(image, return_tensors="pt")).logits
    assert logits[0, 3] == float("-inf")


@pytest.mark.parametrize(
    "overrides, error, fragments",
    [
        (dict(fusion="attention"), ValueError, ["fusion must be one of", "'attention'", "cosine_prototype"]),
        (dict(knn_aggregation="vote"), ValueError, ["knn_aggregation", "'vote'", "neighbour_softmax"]),
        (dict(fusion_temperature="0.1"), TypeError, ["fusion_temperature", "'0.1'"]),
        (dict(freeze_encoder=1), TypeError, ["freeze_encoder must be True or False", "1"]),
        (dict(use_pretrained_backbone="yes"), TypeError, ["use_pretrained_backbone", "'yes'"]),
        (dict(encoder="backbone"), ValueError, ["encoder='backbone' needs backbone_config= or backbone="]),
        (dict(backbone_config=3), TypeError, ["backbone_config must be", "int"]),
        (dict(backbone=""), TypeError, ["backbone must be a Hub model id or a local folder"]),
        (dict(core_ids_digest="abc"), ValueError, ["core_ids_digest", "64 hex", "'abc'"]),
        (dict(core_size=0), ValueError, ["core_size", "got 0"]),
    ],
)
def test_bad_backbone_fusion_and_core_settings_are_refused(overrides, error, fragments):
    with pytest.raises(error) as info:
        spm_config(**overrides)
    assert all(fragment in str(info.value) for fragment in fragments), str(info.value)
