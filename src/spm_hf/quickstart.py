"""The README's main job: train a quick CIFAR-10 SPM, forget a class, report, save a Hub-ready folder."""

from __future__ import annotations

import os
import platform
import time

import torch

from .files import write_json
from .data import as_uint8_tensors, load_image_dataset
from .modeling_spm import SPMForImageClassification
from .evaluation.classifier import evaluate_classifier
from .training.classifier import train_classifier


def _retained_accuracy(result: dict, forgotten: str) -> float:
    kept = [v for k, v in result["per_class"].items() if k != forgotten and v is not None]
    return round(sum(kept) / len(kept), 2)


def quickstart(output_dir: str, preset: str = "quick", forget_class: str = "cat", **overrides) -> dict:
    """Train (`preset`), build the memory, evaluate, forget `forget_class`, evaluate again, save.

    Writes `<output_dir>/model` (the model before forgetting), `<output_dir>/model-forgot-<class>`
    (after) and `<output_dir>/summary.json`; prints a table. Returns the summary.
    """
    start = time.perf_counter()
    model_dir = os.path.join(output_dir, "model")
    print(f"[1/4] training the '{preset}' preset SPM on CIFAR-10 into {model_dir}", flush=True)
    summary = train_classifier(preset, model_dir, **overrides)

    print("[2/4] loading the saved model (weights + sample memory)", flush=True)
    model = SPMForImageClassification.from_pretrained(model_dir).eval()
    processor = model.image_processor
    data = load_image_dataset(summary["preset"]["dataset"], image_column=summary["preset"].get("image_column"),
                              label_column=summary["preset"].get("label_column"))
    test_images, test_labels, _ = as_uint8_tensors(data["test"], limit=summary["preset"]["max_test_samples"])
    before = evaluate_classifier(model, test_images, test_labels, processor)

    print(f"[3/4] forgetting '{forget_class}'", flush=True)
    receipt = model.forget(classes=[forget_class])
    after = evaluate_classifier(model, test_images, test_labels, processor)
    after_dir = os.path.join(output_dir, f"model-forgot-{forget_class}")
    model.save_pretrained(after_dir)

    print(f"[4/4] saved the forgotten model to {after_dir}", flush=True)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "train_seconds": summary["train_seconds"],
        "memory_size_before": summary["memory_size"],
        "memory_size_after": len(model.memory),
        "test_accuracy_before": before["accuracy"],
        "test_accuracy_after": after["accuracy"],
        "retained_classes_accuracy_before": _retained_accuracy(before, forget_class),
        "retained_classes_accuracy_after": _retained_accuracy(after, forget_class),
        f"{forget_class}_accuracy_before": before["per_class"][forget_class],
        f"{forget_class}_accuracy_after": after["per_class"][forget_class],
        "knn_test_accuracy_before": summary["test"]["knn"]["accuracy"],
        "forget_milliseconds": round(receipt.seconds * 1e3, 3),
        "receipt": receipt.to_dict(),
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    write_json(os.path.join(output_dir, "summary.json"), report)
    rows = [
        ("test accuracy (all 10 classes)", before["accuracy"], after["accuracy"]),
        ("test accuracy (9 retained classes)", report["retained_classes_accuracy_before"],
         report["retained_classes_accuracy_after"]),
        (f"'{forget_class}' test accuracy", before["per_class"][forget_class], after["per_class"][forget_class]),
        ("memory size", summary["memory_size"], len(model.memory)),
    ]
    print()
    print(f"| {'':36} | {'before':>8} | {'after':>8} |")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 10}|")
    for name, b, a in rows:
        print(f"| {name:36} | {b:>8} | {a:>8} |")
    print()
    print(f"forget time: {receipt.seconds * 1e3:.2f} ms ({receipt.num_removed} samples, no retraining)")
    print(f"training time: {summary['train_seconds']} s; total: {report['total_seconds']} s; {report['machine']}")
    print(f"receipt: {receipt}")
    return report
