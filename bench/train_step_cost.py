"""Seconds per training step: SPM (batch leave-one-out support / separate 1024-image support) vs the
parametric baseline, same encoder, batch 256, on this machine. Prints a markdown table.

    python bench/train_step_cost.py [--steps 20] [--encoder resnet-small]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from spm_hf.image_processing_spm import make_image_processor, normalize_uint8
from spm_hf.training.classifier import build_model, get_preset
from spm_hf.training.episodic import EpisodicCollator


def time_steps(parametric: bool, support: str, args, images, labels) -> float:
    torch.manual_seed(0)
    preset = get_preset("cifar10-cpu", encoder=args.encoder)
    model = build_model(preset, [str(i) for i in range(10)], 3, 32, parametric).train()
    processor = make_image_processor()
    collator = EpisodicCollator(images, labels, 10, lambda b: normalize_uint8(b, processor),
                                support="none" if parametric else support, support_size=1024, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    times = []
    for step in range(args.steps + 2):  # two warm-up steps
        batch = collator([{"index": int(i)} for i in torch.randint(0, len(labels), (256,))])
        start = time.perf_counter()
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--encoder", default="resnet-small")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5000, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(5000) % 10
    rows = [
        ("parametric (encoder + linear head)", time_steps(True, "none", args, images, labels)),
        ("SPM, batch as leave-one-out support", time_steps(False, "batch", args, images, labels)),
        ("SPM, separate 1024-image support (paper)", time_steps(False, "separate", args, images, labels)),
    ]
    base = rows[0][1]
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"encoder {args.encoder}, batch 256, median of {args.steps} steps")
    print("| model | s / step | x parametric |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
