"""The transformers contracts a user relies on without reading our code: tuple outputs, loading info,
problem types, the loss after a forget (Trainer.evaluate), the image-classification pipeline on
1-channel models, and the parametric baseline's folder."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import CLASSES, HIDE_SPM_HF, make_config
from PIL import Image
from transformers import AutoImageProcessor, Trainer, TrainingArguments, pipeline

from spm_hf import SPMConfig, SPMForImageClassification, make_image_processor
from spm_hf.baselines.parametric import ParametricForImageClassification
from spm_hf.data import tensors_to_dataset
from spm_hf.image_processing_spm import MNIST_MEAN, MNIST_STD, SPMImageProcessorPil, images_to_tensor, normalize_uint8


CAT = CLASSES.index("cat")


# ---------------------------------------------------------------------- tuple outputs
def test_return_dict_false_gives_the_output_as_a_tuple(model, images):
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    with torch.no_grad():
        as_dict = model(images, labels=labels)
        as_tuple = model(images, labels=labels, return_dict=False)
        no_labels = model(images, return_dict=False)
    assert isinstance(as_tuple, tuple) and not isinstance(as_tuple, dict)
    # transformers' order: the loss first when there are labels, then the fields that are set
    assert len(as_tuple) == len(as_dict.to_tuple()) == 4  # loss, logits, embeddings, loss_mask
    for got, expected in zip(as_tuple, as_dict.to_tuple()):
        assert torch.equal(got, expected)
    assert torch.equal(as_tuple[0], as_dict.loss) and torch.equal(as_tuple[1], as_dict.logits)
    assert len(no_labels) == 2 and torch.equal(no_labels[0], as_dict.logits)


def test_config_return_dict_false_from_pretrained_gives_tuples(model, images, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = SPMForImageClassification.from_pretrained(tmp_path, return_dict=False).eval()
    assert loaded.config.return_dict is False and len(loaded.memory) == 60
    with torch.no_grad():
        out = loaded(images)
        explicit = loaded(images, return_dict=True)  # the argument wins over the config
    assert isinstance(out, tuple) and torch.equal(out[0], model(images).logits)
    assert torch.equal(explicit.logits, out[0])


def test_config_output_hidden_states_is_honoured(model, images):
    model.config.output_hidden_states = True
    with torch.no_grad():
        out = model(images)
        off = model(images, output_hidden_states=False)
    assert len(out.hidden_states) == 1 and torch.equal(out.hidden_states[0], out.embeddings)
    assert off.hidden_states is None


def test_output_loading_info_returns_the_model_with_its_memory_and_the_info(model, images, tmp_path):
    model.image_processor = make_image_processor()
    model.save_pretrained(tmp_path)
    loaded, info = SPMForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, SPMForImageClassification)
    assert {"missing_keys", "unexpected_keys", "mismatched_keys"} <= set(info)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert len(loaded.memory) == 60 and loaded.memory.digest() == model.memory.digest()
    assert loaded.image_processor is not None
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images).logits, model(images).logits)


# ---------------------------------------------------------------------- problem types
@pytest.mark.parametrize("problem_type", ["regression", "multi_label_classification"])
def test_problem_types_other_than_single_label_are_refused_at_config_time(problem_type, tmp_path):
    with pytest.raises(ValueError, match="problem_type") as refused:
        make_config(problem_type=problem_type)
    assert repr(problem_type) in str(refused.value) and "'single_label_classification'" in str(refused.value)
    # a config.json that asks for one is refused on loading too
    config = make_config()
    config.save_pretrained(tmp_path)
    payload = json.loads((tmp_path / "config.json").read_text())
    payload["problem_type"] = problem_type
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="problem_type"):
        SPMConfig.from_pretrained(tmp_path)


def test_single_label_problem_type_is_accepted_and_a_later_change_is_refused_by_the_loss(model, images):
    assert make_config(problem_type="single_label_classification").problem_type == "single_label_classification"
    assert make_config().problem_type is None
    model.config.problem_type = "multi_label_classification"
    with pytest.raises(ValueError, match="problem_type.*multi_label_classification"):
        model(images, labels=torch.zeros(6, dtype=torch.long))
    model(images)  # no labels, no loss: predictions do not depend on the problem type


# ---------------------------------------------------------------------- the loss after a forget
def test_loss_leaves_out_labels_of_a_forgotten_class_and_says_which(model, images):
    labels = torch.tensor([0, 1, 2, CAT, 4, CAT])
    model.forget(classes=["cat"])
    out = model(images, labels=labels)
    kept = labels != CAT
    assert torch.isfinite(out.loss)
    assert out.loss_mask.dtype == torch.long and torch.equal(out.loss_mask, kept.long())
    assert torch.isclose(out.loss, -out.logits[kept.nonzero().flatten(), labels[kept]].mean())
    # only forgotten labels: nothing to average, the loss is 0 and has no gradient
    only_cats = model(images[:2], labels=torch.tensor([CAT, CAT]))
    assert only_cats.loss.item() == 0.0 and not only_cats.loss_mask.any()


def test_loss_is_the_plain_nll_mean_when_every_label_has_a_prototype(model, images):
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    out = model(images, labels=labels)
    assert bool(out.loss_mask.all())
    assert torch.isclose(out.loss, torch.nn.functional.nll_loss(out.logits, labels))


def test_training_gradients_stay_finite_when_a_label_has_no_prototype(images):
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config()).train()
    # leave-one-out: classes 2 and 3 have one sample each, so those queries cannot see their own class
    out = model(images, labels=torch.tensor([0, 0, 1, 1, 2, 3]), leave_one_out=True)
    assert torch.isfinite(out.loss) and out.loss_mask.tolist() == [True] * 4 + [False] * 2
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


def test_trainer_evaluate_gives_a_finite_eval_loss_after_forget(model, images, tmp_path):
    labels = torch.tensor([0, 1, 2, CAT, 4, CAT])
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=6, report_to="none",
                             use_cpu=True, disable_tqdm=True)
    dataset = _ImageDataset(images, labels)
    trainer = Trainer(model=model, args=args, eval_dataset=dataset)
    # `labels` is the only target: a support set is an input (else no batch without one would get a loss)
    assert trainer.label_names == ["labels"]
    before = trainer.evaluate()["eval_loss"]
    model.forget(classes=["cat"])
    after = trainer.evaluate()["eval_loss"]
    assert np.isfinite(before) and np.isfinite(after)
    with torch.no_grad():
        logits = model(images).logits
    kept = (labels != CAT).nonzero().flatten()
    assert after == pytest.approx(float(-logits[kept, labels[kept]].mean()), rel=1e-5)
    # predictions are the logits alone, as compute_metrics expects, with the labels beside them
    predicted = trainer.predict(dataset)
    assert isinstance(predicted.predictions, np.ndarray) and predicted.predictions.shape == (6, len(CLASSES))
    np.testing.assert_array_equal(predicted.predictions, logits.numpy())
    np.testing.assert_array_equal(predicted.label_ids, labels.numpy())


def test_forward_documents_its_inputs_and_outputs_with_shapes():
    doc = SPMForImageClassification.forward.__doc__
    for phrase in ("pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`",
                   "labels (`torch.LongTensor` of shape `(batch_size,)`", "return_dict", "Returns:",
                   "`(batch_size, config.num_labels)`", "loss_mask", "support_embeddings"):
        assert phrase in doc, phrase


# ---------------------------------------------------------------------- 1-channel pipeline
def _mnist_like_model(seed: int = 0) -> SPMForImageClassification:
    """A tiny 1-channel 28 x 28 model with a memory and a grayscale processor, as MNIST's."""
    names = [str(d) for d in range(4)]
    torch.manual_seed(seed)
    config = SPMConfig(encoder="resnet-tiny", num_channels=1, image_size=28, id2label=dict(enumerate(names)),
                       label2id={n: i for i, n in enumerate(names)})
    model = SPMForImageClassification(config).eval()
    model.image_processor = make_image_processor(28, MNIST_MEAN, MNIST_STD)
    g = torch.Generator().manual_seed(seed)
    digits = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8, generator=g)
    model.build_memory(tensors_to_dataset(digits, torch.arange(16) % 4, names), show_progress=False)
    return model


def _rgb_and_gray(seed: int = 3):
    rgb = np.random.default_rng(seed).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    return Image.fromarray(rgb), Image.fromarray(rgb).convert("L")


def test_grayscale_processor_converts_any_image_to_one_channel():
    processor = make_image_processor(28, MNIST_MEAN, MNIST_STD)
    assert isinstance(processor, SPMImageProcessorPil)
    rgb, gray = _rgb_and_gray()
    from_rgb = processor(rgb, return_tensors="pt")["pixel_values"]
    from_gray = processor(gray, return_tensors="pt")["pixel_values"]
    from_array = processor(np.asarray(rgb), return_tensors="pt")["pixel_values"]
    assert from_rgb.shape == (1, 1, 28, 28)
    # the same luma as PIL's convert("L"), and as the fast path the memory was encoded with
    assert torch.equal(from_rgb, from_gray) and torch.equal(from_array, from_gray)
    torch.testing.assert_close(from_gray, images_to_tensor(processor, [gray]), rtol=0, atol=1e-6)
    # RGB models keep transformers' own processor (no custom code to load it)
    assert type(make_image_processor(32)).__name__ == "ViTImageProcessorPil"


def test_image_classification_pipeline_on_a_one_channel_model(tmp_path):
    model = _mnist_like_model()
    model.save_pretrained(tmp_path)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is SPMImageProcessorPil
    rgb, gray = _rgb_and_gray()
    clf = pipeline("image-classification", model=str(tmp_path))
    result = clf(rgb, top_k=4)
    assert sorted(r["label"] for r in result) == ["0", "1", "2", "3"]
    with torch.no_grad():
        expected = model(images_to_tensor(model.image_processor, [gray])).logits.exp()[0]
    scores = {r["label"]: r["score"] for r in result}
    np.testing.assert_allclose([scores[str(d)] for d in range(4)], expected.numpy(), atol=1e-5)
    assert clf(gray, top_k=1) == clf(rgb, top_k=1)


def test_one_channel_pipeline_where_spm_hf_is_not_importable(tmp_path):
    model = _mnist_like_model()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    rgb, _ = _rgb_and_gray()
    rgb.save(tmp_path / "digit.png")
    script = HIDE_SPM_HF + textwrap.dedent(
        f"""
        import json, sys
        from PIL import Image
        from transformers import pipeline
        clf = pipeline("image-classification", model={str(folder)!r}, trust_remote_code=True)
        result = clf(Image.open({str(tmp_path / "digit.png")!r}), top_k=4)
        print(json.dumps({{"processor": type(clf.image_processor).__module__, "result": result}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    payload = json.loads(run.stdout.strip().splitlines()[-1])
    assert payload["processor"].startswith("transformers_modules.")
    with torch.no_grad():
        expected = model(images_to_tensor(model.image_processor, [rgb])).logits.exp()[0]
    scores = {r["label"]: r["score"] for r in payload["result"]}
    np.testing.assert_allclose([scores[str(d)] for d in range(4)], expected.numpy(), atol=1e-5)


# ---------------------------------------------------------------------- the parametric baseline's folder
def test_parametric_baseline_saves_and_loads_its_image_processor(images, tmp_path):
    torch.manual_seed(0)
    model = ParametricForImageClassification(make_config()).eval()
    model.image_processor = make_image_processor()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = ParametricForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.image_processor.to_dict() == model.image_processor.to_dict()
    loaded_with_info, info = ParametricForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert loaded_with_info.image_processor is not None and not info["missing_keys"]
    with torch.no_grad():
        assert torch.equal(loaded(images).logits, model(images).logits)
        as_tuple = loaded(images, labels=torch.zeros(6, dtype=torch.long), return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[1], model(images).logits)
    # without a processor the folder has none (and loads with none)
    bare = ParametricForImageClassification(make_config())
    bare.save_pretrained(tmp_path / "bare")
    assert not (tmp_path / "bare" / "preprocessor_config.json").exists()
    assert ParametricForImageClassification.from_pretrained(tmp_path / "bare").image_processor is None


def test_parametric_head_refit_shows_progress_unless_disabled(capsys):
    from spm_hf.training.classifier import encode_for_head_fit, refit_linear_head

    torch.manual_seed(0)
    model = ParametricForImageClassification(make_config()).eval()
    processor = make_image_processor()
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(12) % len(CLASSES)
    for show_progress in (True, False):
        embeddings = encode_for_head_fit(model, images, processor, batch_size=5, show_progress=show_progress)
        refit_linear_head(model, embeddings, labels, steps=3, batch_size=4, show_progress=show_progress)
        err = capsys.readouterr().err
        assert ("Encoding training set" in err) is show_progress and ("Fitting head" in err) is show_progress
    assert embeddings.shape == (12, 16)
    with torch.no_grad():
        torch.testing.assert_close(embeddings, model.encoder(normalize_uint8(images, processor)))

