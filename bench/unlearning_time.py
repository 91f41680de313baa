"""Unlearning time on this machine: SPM deletion of "cat" vs the parametric baselines, same device.

The benchmark (`spm-hf benchmark unlearning`) times every method once, in the process that evaluates it.
This bench isolates the time: it loads a trained SPM and a trained parametric model (folders written by
`spm-hf train-classifier --preset cifar10-cpu [--parametric]`), then times

* the SPM forgetting every "cat" sample from its memory: the first call in the process (what a server that
  just loaded the model pays) and the median of `--repeats` calls, each on a fresh copy of the memory;
* each requested parametric method (default GA, the fastest baseline that reaches the oracle's UA on "cat"
  in docs/results.md) with the benchmark's hyper-parameters for the preset.

    python bench/unlearning_time.py --spm outputs/cifar10-cpu-spm --parametric outputs/cifar10-cpu-param
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spm", required=True, help="a saved SPMForImageClassification folder")
    parser.add_argument("--parametric", required=True, help="a saved ParametricForImageClassification folder")
    parser.add_argument("--preset", default="cifar10-cpu", help="whose baseline hyper-parameters to use")
    parser.add_argument("--forget-class", default="cat")
    parser.add_argument("--methods", nargs="+", default=["GA"])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    from spm_hf.baselines.parametric import ParametricForImageClassification
    from spm_hf.baselines.unlearning import DEFAULTS, UNLEARNING_METHODS
    from spm_hf.data import as_uint8_tensors, load_image_dataset
    from spm_hf.evaluation.benchmark import BASELINE_HYPERPARAMETERS
    from spm_hf.image_processing_spm import normalize_uint8
    from spm_hf.modeling_spm import SPMForImageClassification

    spm = SPMForImageClassification.from_pretrained(args.spm).to(args.device).eval()
    pristine = copy.deepcopy(spm.memory)
    start = time.perf_counter()
    first = spm.forget(classes=[args.forget_class])
    first_wall = time.perf_counter() - start
    warm = []
    for _ in range(args.repeats):
        spm.memory = copy.deepcopy(pristine)
        warm.append(spm.forget(classes=[args.forget_class]).seconds)
    spm_seconds = statistics.median(warm)

    parametric = ParametricForImageClassification.from_pretrained(args.parametric).to(args.device).eval()
    data = load_image_dataset("cifar10")
    images, labels, _ = as_uint8_tensors(data["train"])
    target = parametric.config.label2id[args.forget_class]
    forget_mask = labels == target
    processor = spm.image_processor
    forget = (normalize_uint8(images[forget_mask], processor), labels[forget_mask])
    retain = (normalize_uint8(images[~forget_mask], processor), labels[~forget_mask])
    hyper = BASELINE_HYPERPARAMETERS.get(args.preset, DEFAULTS)

    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or platform.machine()
    print(f"machine: {device}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"device {args.device}; memory {len(pristine)} x {pristine.value_shape}, forget '{args.forget_class}' "
          f"({first.num_removed} samples)")
    print("| method | seconds | x SPM (median) |\n|---|---:|---:|")
    print(f"| SPM: delete from memory, first call in the process | {first_wall:.5f} | {first_wall / spm_seconds:.1f} |")
    print(f"| SPM: delete from memory, median of {args.repeats} | {spm_seconds:.5f} | 1.0 |")
    for method in args.methods:
        _, seconds = UNLEARNING_METHODS[method](parametric, forget=forget, retain=retain, seed=0, show_progress=False,
                                                **hyper.get(method, {}))
        print(f"| Parametric: {method} {hyper.get(method, DEFAULTS[method])} | {seconds:.2f} | "
              f"{seconds / spm_seconds:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
