"""SPM unlearning demo: tick classes, press Forget, and watch a semi-parametric classifier stop seeing
them and a semi-parametric generator stop drawing them, with the receipt of the deletion.

    python app/app.py --classifier DIR_OR_REPO --generator DIR_OR_REPO      # a Space runs `python app.py`
    spm-hf app                                                              # trains small models first if needed

Flags fall back to environment variables (a Space sets them under Settings -> Variables):
SPM_APP_CLASSIFIER, SPM_APP_GENERATOR (folders or Hub repo ids), SPM_APP_DEVICE (default: cuda when
there is one), SPM_APP_EXAMPLES (a folder of `<label>-<n>.png` test images), SPM_APP_IMAGES_PER_CLASS,
SPM_APP_STEPS, SPM_APP_SUPPORT_SIZE; `spm-hf app` also reads SPM_APP_CACHE and SPM_APP_DATASET.

Per-session isolation: the weights (encoder, fusion head, UNet) are loaded once and shared read-only by
every visitor. A session that has forgotten nothing reads the pristine memories; its first Forget gives it
its own copies of both sample memories (copy-on-write), which Reset drops. So one visitor's forgetting
never changes what another sees, and the models on disk or on the Hub are never modified.
"""

from __future__ import annotations

import argparse
import copy
import os
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageOps

from spm_hf import ForgetRequestError, SPMForImageClassification
from spm_hf.generation import ForgottenClassWarning, ImageSampleMemory, SPMDiffusionPipeline
from spm_hf.image_processing_spm import images_to_tensor


APP_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = APP_DIR / "examples"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "spm_hf", "app")
# `spm-hf app` trains the generator preset of the dataset when no model is given, and the classifier
# preset named after the dataset if there is one, else "quick" (on that dataset).
GENERATOR_PRESET_OF_DATASET = {"cifar10": "gen-cifar10-cpu", "mnist": "gen-mnist-cpu"}
THEME_FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
TILE_PIXELS = 64  # generated images are upscaled (nearest) to about this size in the grid
FORGOTTEN_BORDER = (220, 38, 38)
CSS = "\n".join([
    # the whole grid on the page, no inner scroll bar (gradio's gallery otherwise caps its height)
    "#grid .grid-wrap { height: auto !important; max-height: none !important; overflow-y: visible !important; }",
    # one row per class at any width: the tiles shrink instead (gradio's are >= 100 px, 4 overflow a phone)
    "#grid .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important; }",
    # a 28 or 32 px test image fills its box, its pixels upscaled as blocks (nearest neighbour); the classifier
    # still gets the file's own pixels
    "#test-image img { width: 100% !important; height: 100% !important; object-fit: contain !important;"
    " image-rendering: pixelated; }",
    # the receipt's table: words are never broken across lines (a scroll bar where a column is too narrow)
    "#receipt table { display: block; overflow-x: auto; border: none; }",
    "#receipt th, #receipt td { white-space: nowrap; word-break: normal; overflow-wrap: normal; padding: 4px 6px;"
    " font-size: 13px; }",
    # the memory table: three columns in 300 px without clipping a header (no sort menu: it is read-only)
    "#memory-table .cell-menu-button { display: none; }",
    "#memory-table th, #memory-table td { font-size: 13px; }",
])

INTRO = """\
# Designing to Forget: delete a class, no retraining

Both models read an explicit **memory of training samples** (a deep semi-parametric model, CVPR 2026).
Forgetting a class deletes its samples from the memory: no parameter changes, and it takes milliseconds.
Tick classes, press **Forget**, and compare the classifier's top-5 before and after, and the generator's
grid (one row per class). What you forget here stays in your session: other visitors see their own copy.
"""


# ---------------------------------------------------------------------- models
@dataclass
class Models:
    """The pristine models, shared read-only by every session."""

    classifier: SPMForImageClassification
    pipe: SPMDiffusionPipeline
    device: torch.device
    grid_cache: dict = field(default_factory=dict)  # pristine grids: the same for every session

    @property
    def label_names(self) -> list[str]:
        return self.classifier.label_names


def pick_device(device: str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_models(classifier: str, generator: str, device: str | None = None) -> Models:
    """Load a classifier and a generator (folders or Hub repo ids) whose classes agree, onto `device`."""
    device = pick_device(device)
    clf = SPMForImageClassification.from_pretrained(classifier).eval().to(device)
    if clf.memory is None:
        raise ValueError(f"{classifier} has no sample memory (sample_memory.safetensors); the demo needs one")
    if clf.image_processor is None:
        raise ValueError(f"{classifier} has no image processor (preprocessor_config.json); the demo needs one")
    pipe = SPMDiffusionPipeline.from_pretrained(generator).to(device)
    pipe.unet.eval()
    pipe.set_progress_bar_config(disable=True)
    if pipe.label_names != clf.label_names:
        raise ValueError(
            f"the classifier's classes {clf.label_names} and the generator's {pipe.label_names} differ; "
            "the demo forgets the same classes from both"
        )
    return Models(clf, pipe, device)


class Session:
    """One visitor's models: the shared weights with this session's own copies of both memories.

    Forgetting mutates the copies in place, except while a grid is being drawn from them: then the
    forget works on fresh copies and swaps them in, so a running generation never sees its memory change.
    Classification and forgetting hold `lock` (both take milliseconds); generation holds it only to
    take the pipeline (`drawing`).
    """

    def __init__(self, models: Models):
        self.models = models
        self.lock = threading.Lock()
        self.drawing = 0  # generations running on `self.pipe`
        self.copy_seconds = self._copy(models.classifier, models.pipe)

    def _copy(self, classifier: SPMForImageClassification, pipe: SPMDiffusionPipeline) -> float:
        """Take own copies of the memories of `classifier` and `pipe`, sharing their weights; returns seconds."""
        start = time.perf_counter()
        self.classifier = copy.copy(classifier)  # shares every module and parameter
        self.classifier.memory = None
        self.classifier.set_memory(classifier.memory.copy())  # listeners stay with the original
        memory = ImageSampleMemory.from_sample_memory(pipe.memory.sample_memory.copy()).to(self.models.device)
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)  # schedulers keep per-call state
        self.pipe = SPMDiffusionPipeline(unet=pipe.unet, scheduler=scheduler, memory=memory)
        self.pipe.set_progress_bar_config(disable=True)
        return time.perf_counter() - start

    def forget(self, classes: list[str]) -> dict:
        """Forget `classes` from both memories; returns both receipts. Validates both requests first,
        so a request that one memory refuses changes neither."""
        with self.lock:
            self.classifier.memory.resolve(classes=classes)
            self.pipe.memory.sample_memory.resolve(classes=classes)
            if self.drawing:
                self._copy(self.classifier, self.pipe)
                self.drawing = 0  # those generations hold the old pipeline
            return {"classifier": self.classifier.forget(classes=classes), "generator": self.pipe.forget(classes=classes)}

    @contextmanager
    def drawing_pipe(self):
        """The pipeline to generate with, kept unchanged until the block ends."""
        with self.lock:
            self.drawing += 1
            pipe = self.pipe
        try:
            yield pipe
        finally:
            with self.lock:
                if pipe is self.pipe:
                    self.drawing -= 1


def session_models(models: Models, session: Session | None) -> tuple[SPMForImageClassification, SPMDiffusionPipeline]:
    return (models.classifier, models.pipe) if session is None else (session.classifier, session.pipe)


# ---------------------------------------------------------------------- classification
def prepare_image(image: Image.Image, processor) -> torch.Tensor:
    """A PIL image of any size and mode -> (1, C, H, W) pixel values for the classifier."""
    channels = len(processor.image_mean)
    size = (processor.size["width"], processor.size["height"])
    image = image.convert("RGB" if channels == 3 else "L").resize(size, Image.BILINEAR)
    return images_to_tensor(processor, [image])


@torch.no_grad()
def class_probabilities(model: SPMForImageClassification, pixel_values: torch.Tensor) -> dict[str, float]:
    """Label -> probability for every class with samples in the model's memory (forgotten classes have
    probability exactly 0 and are left out)."""
    probs = model(pixel_values.to(model.device)).logits[0].exp().cpu()
    return {name: float(p) for name, p in zip(model.label_names, probs) if p > 0}


# ---------------------------------------------------------------------- generation
@contextmanager
def progress_into(pipe: SPMDiffusionPipeline, progress, desc: str):
    """Route the pipeline's denoising loop through a `gr.Progress` for the duration of one call."""
    pipe.progress_bar = lambda iterable=None, total=None: progress.tqdm(iterable, desc=desc, total=total, unit="step")
    try:
        yield
    finally:
        del pipe.progress_bar


def tile(image: np.ndarray, forgotten: bool) -> Image.Image:
    """(H, W, C) floats in [0, 1] -> an upscaled PIL tile; forgotten classes get a red frame."""
    array = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).convert("RGB")
    scale = max(1, TILE_PIXELS // pil.width)
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return ImageOps.expand(pil, border=4, fill=FORGOTTEN_BORDER if forgotten else (255, 255, 255))


def generate_grid(pipe: SPMDiffusionPipeline, images_per_class: int, seed: int, steps: int,
                  support_size: int | None, guidance_scale: float, progress=None) -> list[tuple[Image.Image, str]]:
    """One row per class, `images_per_class` images each, as (tile, caption) pairs in row order.
    A forgotten class (no sample left) is drawn from what remains, framed in red and captioned so."""
    names = pipe.label_names
    counts = pipe.memory.class_counts()
    labels = [c for c in range(len(names)) for _ in range(images_per_class)]
    kwargs = dict(num_inference_steps=steps, guidance_scale=guidance_scale, support_size=support_size,
                  generator=torch.Generator().manual_seed(int(seed)), output_type="np")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForgottenClassWarning)  # the grid marks forgotten rows itself
        if progress is None:
            images = pipe(labels, **kwargs).images
        else:
            with progress_into(pipe, progress, f"Generating {len(labels)} images"):
                images = pipe(labels, **kwargs).images
    out = []
    for image, label in zip(images, labels):
        forgotten = counts[names[label]] == 0
        out.append((tile(image, forgotten), f"{names[label]} (forgotten)" if forgotten else names[label]))
    return out


# ---------------------------------------------------------------------- tables and text
def memory_table(models: Models, session: Session | None) -> list[list]:
    """Rows `[class, classifier samples, generator samples]` for classes with samples left, then a total."""
    clf, pipe = session_models(models, session)
    c_counts, g_counts = clf.memory.class_counts(), pipe.memory.class_counts()
    rows = [[name, c_counts[name], g_counts[name]] for name in models.label_names if c_counts[name] or g_counts[name]]
    return rows + [["total", len(clf.memory), len(pipe.memory)]]


def forgotten_in(memory) -> list[str]:
    """Classes with no sample left in `memory`."""
    return [name for name, count in memory.class_counts().items() if count == 0]


def class_choices(models: Models, session: Session | None) -> list[tuple[str, str]]:
    gone = set() if session is None else set(forgotten_in(session.classifier.memory)) & set(forgotten_in(session.pipe.memory))
    return [(f"{name} (forgotten)" if name in gone else name, name) for name in models.label_names]


def receipt_markdown(classes: list[str], receipts: dict, copy_seconds: float | None) -> str:
    # One column per memory, one row per fact: three short columns fit the narrow left column of the page
    # (and a phone) without breaking a word.
    kinds = list(receipts)
    rows = [
        ("removed", [f"{r.num_removed:,}" for r in receipts.values()]),
        ("ms", [f"{r.seconds * 1e3:.2f}" for r in receipts.values()]),
        ("digest before", [f"`{r.digest_before[:8]}`" for r in receipts.values()]),
        ("digest after", [f"`{r.digest_after[:8]}`" for r in receipts.values()]),
    ]
    lines = [
        f"**Forgot {', '.join(classes)}** in "
        + " and ".join(f"{r.seconds * 1e3:.2f} ms ({kind} memory)" for kind, r in receipts.items())
        + ". No parameter changed.",
        "",
        "| memory | " + " | ".join(kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows]
    lines.append("")
    for kind, r in receipts.items():
        per_class = ", ".join(f"{k} {v:,}" for k, v in r.removed_per_class.items() if v) or "nothing"
        lines.append(f"- {kind}: {per_class}; {r.num_trained_on:,} trained_on (the weights saw them), "
                     f"{r.num_memory_only:,} memory_only")
    if copy_seconds is not None:
        lines += ["", f"This session's first forget copied both memories first ({copy_seconds * 1e3:.0f} ms)."]
    return "\n".join(lines)


def pristine_markdown(models: Models) -> str:
    return (
        "Pristine models: classifier memory digest "
        f"`{models.classifier.memory.digest()[:12]}`, generator memory digest `{models.pipe.memory.digest()[:12]}`."
    )


# ---------------------------------------------------------------------- examples
def example_label(path: Path) -> str:
    """`<label>-<n>.png` -> `<label>`."""
    return path.stem.rsplit("-", 1)[0]


def find_examples(label_names: list[str], examples: str | None = None) -> list[Path]:
    """Test images to pick from: those in `examples`, else the first folder under `app/examples/` whose
    labels are all classes of the model (none if no folder fits)."""
    suffixes = {".png", ".jpg", ".jpeg", ".webp"}
    if examples:
        folder = Path(examples)
        if not folder.is_dir():
            raise FileNotFoundError(f"examples folder {folder} does not exist")
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
    for folder in sorted(p for p in EXAMPLES_DIR.glob("*") if p.is_dir()):
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
        if paths and {example_label(p) for p in paths} <= set(label_names):
            return paths
    return []


def default_example(classifier: SPMForImageClassification, examples: list[Path]) -> Path | None:
    """The test image shown first: the first of `examples` that `classifier` labels as its file name says
    (a first sight of a misclassified image would misrepresent the model), else the first one."""
    for path in examples:
        with Image.open(path) as image:
            probabilities = class_probabilities(classifier, prepare_image(image, classifier.image_processor))
        if max(probabilities, key=probabilities.get) == example_label(path):
            return path
    return examples[0] if examples else None


def write_examples(dataset: str, folder: str | os.PathLike, per_class: int = 1) -> list[Path]:
    """Save the first `per_class` test images of each class of `dataset` as `<label>-<n>.png`."""
    from spm_hf.data import label_names, load_image_dataset

    split = load_image_dataset(dataset, splits=("test",))["test"]
    names = label_names(split)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seen = {name: 0 for name in names}
    paths = []
    for row in split:
        name = names[row["label"]]
        if seen[name] < per_class:
            path = folder / f"{name}-{seen[name]}.png"
            row["image"].save(path)
            paths.append(path)
            seen[name] += 1
        if all(n >= per_class for n in seen.values()):
            break
    return paths


# ---------------------------------------------------------------------- the app
def build_demo(models: Models, examples: list[Path] | None = None, images_per_class: int = 4, steps: int = 25,
               support_size: int | None = 64, guidance_scale: float = 1.3, seed: int = 0) -> gr.Blocks:
    """The Blocks app. API endpoints (gradio_client): /forget, /reset, /classify, /generate."""
    names = models.label_names
    examples = list(examples or [])
    first_example = default_example(models.classifier, examples)
    grid_lock = threading.Lock()

    def draw(pipe: SPMDiffusionPipeline, grid_seed: int, progress):
        return generate_grid(pipe, images_per_class, grid_seed, steps, support_size, guidance_scale, progress)

    def grid(session: Session | None, grid_seed, progress=gr.Progress()):
        grid_seed = int(grid_seed)
        start = time.perf_counter()
        with grid_lock:  # one generation at a time (the pristine pipeline's scheduler is shared)
            if session is not None:
                with session.drawing_pipe() as pipe:
                    items, gone = draw(pipe, grid_seed, progress), forgotten_in(pipe.memory)
            else:
                key = (grid_seed, images_per_class, steps, support_size, guidance_scale)
                if key not in models.grid_cache:
                    models.grid_cache[key] = draw(models.pipe, grid_seed, progress)
                items, gone, pipe = models.grid_cache[key], [], models.pipe
        seconds = time.perf_counter() - start
        status = (
            f"Grid of generator memory `{pipe.memory.digest()[:12]}`: {len(names)} rows x {images_per_class} images, "
            f"{steps} DDIM steps, seed {int(grid_seed)}, {seconds:.1f} s. "
            + (f"Forgotten rows (red frame): {', '.join(gone)}." if gone else "Nothing forgotten.")
        )
        return items, status

    def classify(image, session: Session | None):
        if image is None:
            return None, None
        pixel_values = prepare_image(image, models.classifier.image_processor)
        if session is None:
            after = class_probabilities(models.classifier, pixel_values)
            return after, after
        with session.lock:
            after = class_probabilities(session.classifier, pixel_values)
        return class_probabilities(models.classifier, pixel_values), after

    def panel(session: Session | None, receipt_md: str, receipt: dict, image):
        _, after = classify(image, session)
        return (receipt_md, receipt, memory_table(models, session),
                gr.CheckboxGroup(choices=class_choices(models, session), value=[]), after, session)

    def forget(classes, image, session: Session | None):
        if not classes:
            raise gr.Error("Tick at least one class to forget.")
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise gr.Error(f"Unknown classes {unknown}; the classes are {names}.")
        fresh = session is None
        try:
            target = Session(models) if fresh else session
            receipts = target.forget(list(classes))
        except ForgetRequestError as e:
            raise gr.Error(str(e)) from e
        receipt = {kind: r.to_dict() for kind, r in receipts.items()}
        receipt["session_copy_ms"] = round(target.copy_seconds * 1e3, 1) if fresh else 0.0
        md = receipt_markdown(list(classes), receipts, target.copy_seconds if fresh else None)
        return panel(target, md, receipt, image)

    def reset(image, session: Session | None):
        return panel(None, "Reset: this session is back to the pristine models. " + pristine_markdown(models), {}, image)

    with gr.Blocks(title="SPM unlearning: forget a class") as demo:
        # None: the pristine models; a Session after a forget (gradio drops it an hour after the last one)
        session = gr.State(None, time_to_live=3600)
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                classes = gr.CheckboxGroup(choices=class_choices(models, None), label="Classes to forget",
                                           elem_id="forget-classes")
                with gr.Row():
                    forget_button = gr.Button("Forget", variant="stop", elem_id="forget-button")
                    reset_button = gr.Button("Reset", variant="secondary", elem_id="reset-button")
                receipt_md = gr.Markdown(pristine_markdown(models), label="Receipt", elem_id="receipt")
                with gr.Accordion("Receipt (JSON)", open=False):
                    receipt_json = gr.JSON(label="Receipt (JSON)")
                # widths in % of the column: gradio's minimum widths per column would overflow 300 px
                table = gr.Dataframe(value=memory_table(models, None), headers=["class", "classifier", "generator"],
                                     label="Samples in memory per class (this session)", interactive=False,
                                     column_widths=["36%", "32%", "32%"], elem_id="memory-table")
            with gr.Column(scale=1, min_width=300):
                image = gr.Image(type="pil", label="Test image (upload, or pick one below)", sources=["upload"],
                                 value=str(first_example) if first_example else None, height=200,
                                 elem_id="test-image")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=image, example_labels=[example_label(p) for p in examples],
                                examples_per_page=len(examples), label="Test images", elem_id="test-examples")
                before = gr.Label(num_top_classes=5, label="Top-5 before forgetting (pristine memory)",
                                  elem_id="top5-before")
                after = gr.Label(num_top_classes=5, label="Top-5 now (this session's memory)", elem_id="top5-after")
            with gr.Column(scale=2, min_width=120 * images_per_class):  # gradio's gallery tiles are >= 100 px
                gallery = gr.Gallery(label="Generated: one row per class", columns=images_per_class, format="png",
                                     object_fit="contain", allow_preview=False, elem_id="grid")
                grid_status = gr.Markdown(label="Grid status", elem_id="grid-status")
                with gr.Row():
                    grid_seed = gr.Number(value=seed, precision=0, label="Seed", min_width=80)
                    regenerate = gr.Button("Regenerate grid")

        grid_io = dict(fn=grid, inputs=[session, grid_seed], outputs=[gallery, grid_status], concurrency_id="generate",
                       concurrency_limit=1)
        panel_outputs = [receipt_md, receipt_json, table, classes, after, session]
        forget_button.click(forget, [classes, image, session], panel_outputs, api_name="forget",
                            concurrency_limit=8).success(**grid_io, api_visibility="private")
        reset_button.click(reset, [image, session], panel_outputs, api_name="reset",
                           concurrency_limit=8).success(**grid_io, api_visibility="private")
        image.change(classify, [image, session], [before, after], api_name="classify", concurrency_limit=8)
        regenerate.click(**grid_io, api_name="generate")
        demo.load(classify, [image, session], [before, after], api_visibility="private")
        demo.load(**grid_io, api_visibility="private")
    demo.queue(max_size=64)
    return demo


def launch_options() -> dict:
    """`demo.launch` keyword arguments that style the page (gradio 6 takes theme and css there): system
    fonts, so the page fetches nothing from outside the app, and the whole grid shown."""
    return {"theme": gr.themes.Default(**THEME_FONTS), "css": CSS}


# ---------------------------------------------------------------------- models for `spm-hf app`
def ensure_models(cache_dir: str, dataset: str, generator_minutes: float | None = None) -> tuple[str, str]:
    """The quick classifier and generator of `dataset` in `cache_dir`, trained there first if missing
    (resuming from their checkpoints when a run was interrupted). Returns the two folders."""
    from spm_hf.training.generator import latest_checkpoint, train_generator
    from spm_hf.training.classifier import train_classifier
    from transformers.trainer_utils import get_last_checkpoint

    from spm_hf.training.classifier_presets import CLASSIFIER_PRESETS

    if dataset not in GENERATOR_PRESET_OF_DATASET:
        raise ValueError(f"no quick presets for {dataset!r}; choose one of {sorted(GENERATOR_PRESET_OF_DATASET)}")
    generator_preset = GENERATOR_PRESET_OF_DATASET[dataset]
    classifier_preset = dataset if getattr(CLASSIFIER_PRESETS.get(dataset), "dataset", None) == dataset else "quick"
    classifier_dir = os.path.join(cache_dir, f"{dataset}-classifier")
    generator_dir = os.path.join(cache_dir, f"{dataset}-generator")
    if not os.path.exists(os.path.join(classifier_dir, "sample_memory.json")):
        print(f"spm-hf app: training the {classifier_preset!r} classifier on {dataset} into {classifier_dir}")
        checkpoints = os.path.join(classifier_dir, "checkpoints")
        resume = os.path.isdir(checkpoints) and get_last_checkpoint(checkpoints) is not None
        train_classifier(classifier_preset, classifier_dir, dataset=dataset, resume=resume)
    if not os.path.exists(os.path.join(generator_dir, "model_index.json")):
        print(f"spm-hf app: training the {generator_preset!r} generator into {generator_dir}")
        resume = "latest" if os.path.isdir(generator_dir) and latest_checkpoint(generator_dir) else None
        train_generator(generator_preset, generator_dir, resume=resume, max_minutes=generator_minutes)
    return classifier_dir, generator_dir


# ---------------------------------------------------------------------- command line
def _env(name: str, default=None, kind=str):
    value = os.environ.get(name)
    return default if value in (None, "") else kind(value)


def build_parser(train_missing: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spm-hf app" if train_missing else "app.py",
        description="Gradio demo: forget classes from an SPM classifier and generator, per session.",
    )
    need = "" if train_missing else " (required)"
    parser.add_argument("--classifier", default=_env("SPM_APP_CLASSIFIER"),
                        help=f"SPM classifier folder or Hub repo id [SPM_APP_CLASSIFIER]{need}")
    parser.add_argument("--generator", default=_env("SPM_APP_GENERATOR"),
                        help=f"SPMDiffusionPipeline folder or Hub repo id [SPM_APP_GENERATOR]{need}")
    parser.add_argument("--device", default=_env("SPM_APP_DEVICE"), help="cuda | cpu (default: cuda if available)")
    parser.add_argument("--examples", default=_env("SPM_APP_EXAMPLES"),
                        help="folder of <label>-<n>.png test images (default: the matching app/examples/ folder)")
    parser.add_argument("--images-per-class", type=int, default=_env("SPM_APP_IMAGES_PER_CLASS", 4, int))
    parser.add_argument("--steps", type=int, default=_env("SPM_APP_STEPS", 25, int), help="DDIM steps per image")
    parser.add_argument("--support-size", type=int, default=_env("SPM_APP_SUPPORT_SIZE", 64, int),
                        help="memory images per class the generator reads")
    parser.add_argument("--guidance-scale", type=float, default=1.3)
    parser.add_argument("--host", default=None, help="server name (default: gradio's, 127.0.0.1 or $GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=None, help="server port (default: gradio's, 7860 or the next free)")
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    if train_missing:
        parser.add_argument("--dataset", default=_env("SPM_APP_DATASET"), choices=sorted(GENERATOR_PRESET_OF_DATASET),
                            help="which quick pair to train when a model is not given [SPM_APP_DATASET] "
                                 "(default: cifar10 on a GPU, mnist on a CPU)")
        parser.add_argument("--cache-dir", default=_env("SPM_APP_CACHE", DEFAULT_CACHE),
                            help=f"where trained models are kept [SPM_APP_CACHE] (default {DEFAULT_CACHE})")
        parser.add_argument("--generator-minutes", type=float, default=None,
                            help="stop generator training after this many minutes (default: the preset's)")
    return parser


def main(argv: list[str] | None = None, train_missing: bool = False) -> gr.Blocks:
    """Parse flags, load (or, with `train_missing`, first train) the models, build and launch the app."""
    args = build_parser(train_missing).parse_args(argv)
    if train_missing and not (args.classifier and args.generator):
        dataset = args.dataset or ("cifar10" if pick_device(args.device).type == "cuda" else "mnist")
        classifier_dir, generator_dir = ensure_models(args.cache_dir, dataset, args.generator_minutes)
        args.classifier = args.classifier or classifier_dir
        args.generator = args.generator or generator_dir
    if not (args.classifier and args.generator):
        raise SystemExit("app.py: give --classifier and --generator (or SPM_APP_CLASSIFIER / SPM_APP_GENERATOR), "
                         "or run `spm-hf app`, which trains small models when none are given")
    models = load_models(args.classifier, args.generator, args.device)
    demo = build_demo(models, find_examples(models.label_names, args.examples), args.images_per_class, args.steps,
                      args.support_size, args.guidance_scale)
    print(f"spm-hf app: classifier {args.classifier}, generator {args.generator}, device {models.device}")
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options())
    return demo


if __name__ == "__main__":
    main()
