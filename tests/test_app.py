"""The Gradio demo (app/app.py) on tiny models: through gradio_client against a launched app, and in
headless Chromium (Debian's `chromium` driven by playwright; skipped where either is missing, unless
`SPM_HF_REQUIRE_BROWSER=1`, which `.ci/run` sets).

One app is launched for the module; every client is its own session, so the tests do not see each
other's forgetting (which is itself what the isolation test checks).
"""

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
gr = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import CLASSES, make_config, make_memory  # noqa: E402
from spm_hf import SPMForImageClassification, make_image_processor  # noqa: E402
from spm_hf.cli import load_app_module, main as cli_main  # noqa: E402
from spm_hf.generation import ImageSampleMemory, SPMUNet2DModel, make_pipeline  # noqa: E402


pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),  # pandas deprecations inside gradio
]
ROOT = Path(__file__).resolve().parents[1]
app = load_app_module()
IMAGES_PER_CLASS = 2
GEN_ITEMS = 40  # 8 per class


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny classifier (32x32 inputs, 12 samples per class) and a tiny generator (8x8 images, 8 per
    class) over the same five classes, and one test image per class."""
    root = tmp_path_factory.mktemp("app-models")
    torch.manual_seed(0)
    clf = SPMForImageClassification(make_config()).eval()
    clf.set_memory(make_memory())
    clf.image_processor = make_image_processor(32)
    clf.save_pretrained(root / "classifier")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (GEN_ITEMS, 3, 8, 8), dtype=torch.uint8, generator=g)
    ids = [f"train/{i:05d}" for i in range(GEN_ITEMS)]
    memory = ImageSampleMemory.from_images(images, torch.arange(GEN_ITEMS) % len(CLASSES), ids, CLASSES)
    unet = SPMUNet2DModel.from_architecture("unet-tiny", num_class_embeds=len(CLASSES)).eval()
    make_pipeline(unet, memory).save_pretrained(root / "generator")
    (root / "examples").mkdir()
    rng = np.random.default_rng(0)
    for name in CLASSES:
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "examples" / f"{name}-0.png")
    return root


@pytest.fixture(scope="module")
def models(folders):
    return app.load_models(str(folders / "classifier"), str(folders / "generator"), "cpu")


@pytest.fixture(scope="module")
def url(models, folders):
    examples = app.find_examples(models.label_names, str(folders / "examples"))
    demo = app.build_demo(models, examples, images_per_class=IMAGES_PER_CLASS, steps=2, support_size=4)
    _, local_url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.launch_options())
    yield local_url
    demo.close()


@pytest.fixture
def image(folders):
    return handle_file(str(folders / "examples" / "cat-0.png"))


def top5(label: dict) -> list[str]:
    return [c["label"] for c in label["confidences"]]


def table_classes(table: dict) -> dict[str, list[int]]:
    return {row[0]: row[1:] for row in table["data"]}


def grid_rows(gallery: list[dict]) -> list[tuple[str, np.ndarray]]:
    return [(item["caption"], np.asarray(Image.open(item["image"]))) for item in gallery]


# ---------------------------------------------------------------------- gradio_client
def test_forget_cat_leaves_top5_and_memory_table_and_marks_its_grid_row(url, image):
    client = Client(url, verbose=False)
    before, after = client.predict(image, api_name="/classify")
    assert "cat" in top5(before) and top5(after) == top5(before)
    pristine_grid, status = client.predict(0, api_name="/generate")
    assert "Nothing forgotten" in status

    receipt_md, receipt, table, choices, after = client.predict(["cat"], image, api_name="/forget")
    assert "cat" not in top5(after) and "cat" in top5(client.predict(image, api_name="/classify")[0])
    assert "cat" not in table_classes(table)
    assert table_classes(table)["total"] == [60 - 12, GEN_ITEMS - 8]
    assert receipt["classifier"]["removed_per_class"]["cat"] == 12 and receipt["generator"]["num_removed"] == 8
    assert "Forgot cat" in receipt_md and receipt["generator"]["digest_after"][:8] in receipt_md
    assert ["cat (forgotten)", "cat"] in choices["choices"]

    gallery, status = client.predict(0, api_name="/generate")
    assert len(gallery) == len(CLASSES) * IMAGES_PER_CLASS
    captions = [item["caption"] for item in gallery]
    assert captions == [f"{n} (forgotten)" if n == "cat" else n for n in CLASSES for _ in range(IMAGES_PER_CLASS)]
    assert "Forgotten rows (red frame): cat" in status and receipt["generator"]["digest_after"][:12] in status
    # Only the forgotten row changes: every other class draws the same support and noise as before.
    for (caption, new), (_, old) in zip(grid_rows(gallery), grid_rows(pristine_grid)):
        assert np.array_equal(new, old) != caption.endswith("(forgotten)")


def test_reset_restores_the_pristine_models(url, image):
    client = Client(url, verbose=False)
    pristine_table = client.predict(image, api_name="/reset")[2]
    client.predict(["cat", "deer"], image, api_name="/forget")
    receipt_md, receipt, table, choices, after = client.predict(image, api_name="/reset")
    assert "Reset" in receipt_md and receipt in ({}, None)
    assert table == pristine_table and table_classes(table)["cat"] == [12, 8]
    assert {"cat", "deer"} <= set(top5(after))
    assert all(label == value for label, value in choices["choices"])
    gallery, status = client.predict(0, api_name="/generate")
    assert len(gallery) == len(CLASSES) * IMAGES_PER_CLASS and "Nothing forgotten" in status
    assert not any(item["caption"].endswith("(forgotten)") for item in gallery)


def test_two_clients_at_once_do_not_see_each_others_forgetting(url, image):
    alice, bob, carol = (Client(url, verbose=False) for _ in range(3))
    results = {}

    def forget(name, client, cls):
        results[name] = client.predict([cls], image, api_name="/forget")

    threads = [threading.Thread(target=forget, args=a) for a in (("alice", alice, "cat"), ("bob", bob, "deer"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, client, gone, kept in (("alice", alice, "cat", "deer"), ("bob", bob, "deer", "cat")):
        assert gone not in table_classes(results[name][2]) and kept in table_classes(results[name][2])
        after = client.predict(image, api_name="/classify")[1]
        assert gone not in top5(after) and kept in top5(after)
        captions = [item["caption"] for item in client.predict(0, api_name="/generate")[0]]
        assert f"{gone} (forgotten)" in captions and f"{kept} (forgotten)" not in captions
    # A third visitor still sees the pristine models.
    assert set(top5(carol.predict(image, api_name="/classify")[1])) == set(CLASSES)


def test_bad_forget_requests_are_refused_and_change_nothing(url, image):
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="Tick at least one class"):
        client.predict([], image, api_name="/forget")
    with pytest.raises(Exception, match="every sample"):
        client.predict(list(CLASSES), image, api_name="/forget")
    assert set(top5(client.predict(image, api_name="/classify")[1])) == set(CLASSES)


# ---------------------------------------------------------------------- sessions, without a server
def test_a_session_shares_the_weights_and_copies_the_memories(models):
    digests = (models.classifier.memory.digest(), models.pipe.memory.digest())
    session = app.Session(models)
    assert session.classifier.encoder is models.classifier.encoder and session.pipe.unet is models.pipe.unet
    assert session.classifier.memory is not models.classifier.memory
    receipts = session.forget(["cat"])
    assert receipts["classifier"].num_removed == 12 and receipts["generator"].num_removed == 8
    assert (models.classifier.memory.digest(), models.pipe.memory.digest()) == digests
    assert models.classifier.memory.class_counts()["cat"] == 12 and session.pipe.memory.class_counts()["cat"] == 0
    with pytest.raises(app.ForgetRequestError):  # refused by both memories before either changes
        session.forget([n for n in CLASSES if n != "cat"])
    assert len(session.classifier.memory) == 48 and len(session.pipe.memory) == GEN_ITEMS - 8


def test_forgetting_while_a_grid_is_drawn_leaves_that_grid_its_memory(models):
    session = app.Session(models)
    with session.drawing_pipe() as pipe:
        session.forget(["cat"])
        assert pipe.memory.class_counts()["cat"] == 8 and session.pipe is not pipe
    assert session.pipe.memory.class_counts()["cat"] == 0 and session.drawing == 0
    with session.drawing_pipe() as pipe:
        assert pipe is session.pipe and session.drawing == 1
    session.forget(["deer"])  # nothing drawing: in place
    assert session.pipe is pipe and pipe.memory.class_counts()["deer"] == 0


def test_generation_reports_progress_per_denoising_step(models):
    class Progress:  # what gr.Progress.tqdm is given, recorded
        calls = []

        def tqdm(self, iterable, desc=None, total=None, unit="steps"):
            self.calls.append((desc, len(iterable), unit))
            return iterable

    items = app.generate_grid(models.pipe, 1, seed=0, steps=3, support_size=4, guidance_scale=1.3, progress=Progress())
    assert Progress.calls == [(f"Generating {len(CLASSES)} images", 3, "step")] and len(items) == len(CLASSES)
    assert "progress_bar" not in vars(models.pipe)  # the pipeline's own progress bar is back


def test_load_models_refuses_a_pair_whose_classes_differ(folders, tmp_path):
    names = ["ant", "bee", "cow"]
    images = torch.zeros(6, 3, 8, 8, dtype=torch.uint8)
    memory = ImageSampleMemory.from_images(images, torch.arange(6) % 3, [f"t/{i}" for i in range(6)], names)
    make_pipeline(SPMUNet2DModel.from_architecture("unet-tiny", num_class_embeds=3), memory).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="classes"):
        app.load_models(str(folders / "classifier"), str(tmp_path), "cpu")


def test_examples_are_picked_by_matching_labels(folders):
    assert [app.example_label(p) for p in app.find_examples(CLASSES, str(folders / "examples"))] == CLASSES
    cifar = app.find_examples(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    assert len(cifar) == 10 and all(p.parent.name == "cifar10" for p in cifar)
    assert [p.parent.name for p in app.find_examples([str(d) for d in range(10)])] == ["mnist"] * 10
    assert app.find_examples(["ant", "bee"]) == []


# ---------------------------------------------------------------------- spm-hf app
def test_spm_hf_app_launches_given_models_and_env_vars_work(folders, monkeypatch):
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    monkeypatch.setenv("SPM_APP_GENERATOR", str(folders / "generator"))
    monkeypatch.setenv("SPM_APP_STEPS", "3")
    assert cli_main(["app", "--classifier", str(folders / "classifier"), "--examples", str(folders / "examples"),
                     "--port", "7999"]) == 0
    assert launched["server_port"] == 7999 and launched["css"] == app.CSS


def test_spm_hf_app_trains_the_quick_presets_only_when_missing(tmp_path, monkeypatch):
    calls = []

    def fake_classifier(preset, output_dir, **kwargs):
        calls.append(("classifier", preset, kwargs))
        os.makedirs(output_dir, exist_ok=True)
        Path(output_dir, "sample_memory.json").write_text("{}")

    def fake_generator(preset, output_dir, **kwargs):
        calls.append(("generator", preset, kwargs))
        os.makedirs(output_dir, exist_ok=True)
        Path(output_dir, "model_index.json").write_text("{}")

    monkeypatch.setattr("spm_hf.training.classifier.train_classifier", fake_classifier)
    monkeypatch.setattr("spm_hf.training.generator.train_generator", fake_generator)
    folders = app.ensure_models(str(tmp_path), "cifar10", generator_minutes=5)
    assert folders == (str(tmp_path / "cifar10-classifier"), str(tmp_path / "cifar10-generator"))
    assert calls == [("classifier", "quick", {"dataset": "cifar10", "resume": False}),
                     ("generator", "gen-cifar10-cpu", {"resume": None, "max_minutes": 5})]
    assert app.ensure_models(str(tmp_path), "cifar10") == folders and len(calls) == 2
    with pytest.raises(ValueError, match="cifar10"):
        app.ensure_models(str(tmp_path), "imagenet")


def test_space_folder_declares_a_gradio_space():
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(ROOT / "app" / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.suggested_hardware
    requirements = (ROOT / "app" / "requirements.txt").read_text()
    assert f"gradio=={card.data.sdk_version}" in requirements and gr.__version__ == card.data.sdk_version


# ---------------------------------------------------------------------- headless Chromium
def _browser_or_skip():
    spec = importlib.util.spec_from_file_location("app_demo", ROOT / "bench" / "app_demo.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    chromium = bench.find_chromium()
    missing = [what for what, ok in (("playwright", importlib.util.find_spec("playwright")), ("chromium", chromium)) if not ok]
    if missing:
        if os.environ.get("SPM_HF_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SPM_HF_REQUIRE_BROWSER=1 but {missing} not installed (.ci/run installs them)")
        pytest.skip(f"{missing} not installed (.ci/run installs them)")
    return bench, chromium


def test_browser_forget_updates_top5_and_regenerates_the_grid(url, tmp_path):
    bench, chromium = _browser_or_skip()
    result = bench.forget_in_browser(url, "cat", chromium, str(tmp_path / "before.png"), str(tmp_path / "after.png"),
                                     timeout_s=60)
    text = result["page_text"]
    assert "Forgot cat" in text and "cat (forgotten)" in text and "Forgotten rows (red frame): cat" in text
    assert "cat" not in result["top5_after"].split("\n") and "deer" in result["top5_after"].split("\n")
    assert result["classification_update_s"] < 5  # the recorded number (docs/results.md) is on the real models
    for name in ("before.png", "after.png"):
        assert Image.open(tmp_path / name).size[0] >= 1000


def test_the_first_test_image_is_one_the_classifier_gets_right(models, folders, tmp_path):
    image = Image.open(folders / "examples" / "cat-0.png")
    probabilities = app.class_probabilities(models.classifier, app.prepare_image(image, models.classifier.image_processor))
    predicted = max(probabilities, key=probabilities.get)
    wrong = next(name for name in CLASSES if name != predicted)
    for name in (wrong, predicted):  # the same image under a wrong and under the right name
        image.save(tmp_path / f"{name}-0.png")
    examples = [tmp_path / f"{wrong}-0.png", tmp_path / f"{predicted}-0.png"]
    assert app.default_example(models.classifier, examples) == examples[1]
    assert app.default_example(models.classifier, examples[:1]) == examples[0]  # none right: the first
    assert app.default_example(models.classifier, []) is None


def test_the_receipt_table_is_one_column_per_memory():
    receipts = {kind: type("Receipt", (), dict(num_removed=n, seconds=0.00123, digest_before="ab" * 32,
                                               digest_after="cd" * 32, removed_per_class={"cat": n},
                                               num_trained_on=n, num_memory_only=0))()
                for kind, n in (("classifier", 5000), ("generator", 12))}
    lines = app.receipt_markdown(["cat"], receipts, None).splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table == ["| memory | classifier | generator |", "|---|---:|---:|", "| removed | 5,000 | 12 |",
                     "| ms | 1.23 | 1.23 |", "| digest before | `abababab` | `abababab` |",
                     "| digest after | `cdcdcdcd` | `cdcdcdcd` |"]


@pytest.mark.parametrize("viewport", [(1400, 1000), (390, 844)], ids=["desktop", "phone"])
def test_browser_first_sight_at_desktop_and_phone_widths(url, models, folders, tmp_path, viewport):
    """What a visitor sees first, measured in Chromium: the 32 px test image drawn large and pixelated, no
    table cell cut or overflowing, one grid row per class, nothing scrolling sideways."""
    bench, chromium = _browser_or_skip()
    result = bench.forget_in_browser(url, "cat", chromium, str(tmp_path / "before.png"), str(tmp_path / "after.png"),
                                     timeout_s=60, viewport=viewport)
    for when, layout in result["layout"].items():
        assert layout["image"]["natural_width"] == 32 and layout["image"]["width"] >= 150, (when, layout)
        assert layout["image"]["rendering"] == "pixelated"
        assert layout["memory_table_cut"] == [] and layout["memory_table_overflow"] == 0, (when, layout)
        assert layout["grid_columns"] == IMAGES_PER_CLASS and layout["grid_overflow"] <= 0, (when, layout)
        assert layout["page_overflow"] == 0, (when, layout)
    after = result["layout"]["after_forget"]
    assert after["receipt_headers"] == ["memory", "classifier", "generator"]
    assert after["receipt_cut"] == [] and after["receipt_overflow"] == 0, after
    # the image shown first is `default_example`'s: the top-5 headline is its prediction
    first = app.default_example(models.classifier, app.find_examples(models.label_names, str(folders / "examples")))
    probabilities = app.class_probabilities(models.classifier,
                                            app.prepare_image(Image.open(first), models.classifier.image_processor))
    assert result["layout"]["first_sight"]["top5_first"] == max(probabilities, key=probabilities.get)
