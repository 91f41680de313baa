"""What a generator draws when asked for a forgotten class, per `forget_policy` and guidance scale.

Forgets `--forget` from `--model`, asks for it `--samples` times under each policy and scale, and does the
same with `--retrained` (a generator trained without the class, whose memory never had it): the judge's
rate for the forgotten class should be close between the two. Same seeds as `evaluate_generator` (the
images equal its `after` / `retrained` sets for that class). Prints a table, writes `forget_policy.json`.
MNIST: `--judge outputs/mnist-judge` (an SPM classifier folder, as for `evaluate-generator`).

    python bench/forget_policy.py --model outputs/gen-cifar10-cpu --retrained outputs/gen-cifar10-cpu-nocat \
        --forget cat --scales 1.3 15 --policies empty all_remaining --out-dir docs/bench/forget_policy
    python bench/forget_policy.py --model outputs/gen-cifar10-cpu-7k --retrained outputs/gen-cifar10-cpu-7k-nocat \
        --forget cat --scales 15 1.3 --samples 500 --steps 25 --seed 2 --out-dir docs/bench/forget_policy_7k
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from spm_hf.evaluation.judge import open_judge
from spm_hf.files import write_json
from spm_hf.generation import SPMDiffusionPipeline
from spm_hf.evaluation.generator import generate_per_class
from spm_hf.generation.pipeline_spm import FORGET_POLICIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved SPMDiffusionPipeline folder (trained with the class)")
    parser.add_argument("--retrained", required=True, help="the same recipe trained without the class")
    parser.add_argument("--forget", default="cat", help="the class to forget (name or index)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.3, 15.0])
    parser.add_argument("--policies", nargs="+", choices=FORGET_POLICIES, default=list(FORGET_POLICIES))
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--support-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge", help="judge safetensors or a saved SPM classifier folder (default: the CIFAR-10 "
                                        "ResNet-56, as in evaluate-generator)")
    parser.add_argument("--out-dir", default="outputs/bench/forget_policy")
    args = parser.parse_args()

    judge = open_judge(args.judge)
    rows = []
    print(f"{'model':>10} | {'policy':>13} | {'scale':>5} | {args.forget} rate (%) | judge's classes (counts)")
    for tag, path in (("unlearned", args.model), ("retrained", args.retrained)):
        pipe = SPMDiffusionPipeline.from_pretrained(path)
        pipe.set_progress_bar_config(disable=True)
        judge.check_fits(pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.label_names)
        c = pipe.memory.class_index(args.forget)
        if tag == "unlearned":
            pipe.forget(classes=[c])
        elif pipe.memory.class_counts()[pipe.label_names[c]]:
            raise SystemExit(f"--retrained {path} holds {args.forget!r} samples: not a model retrained without it")
        for policy in args.policies:
            for scale in args.scales:
                images = generate_per_class(pipe, [c], args.samples, args.steps, scale, args.support_size, args.seed,
                                            forget_policy=policy)[c]
                counts = torch.bincount(judge.predict(images), minlength=len(pipe.label_names)).tolist()
                row = {"model": tag, "forget_policy": policy, "guidance_scale": scale,
                       "rate": 100.0 * counts[c] / len(images), "judge_counts": dict(zip(pipe.label_names, counts))}
                rows.append(row)
                top = ", ".join(f"{n} {k}" for n, k in sorted(row["judge_counts"].items(), key=lambda x: -x[1])[:3] if k)
                print(f"{tag:>10} | {policy:>13} | {scale:5.1f} | {row['rate']:12.1f} | {top}", flush=True)

    os.makedirs(args.out_dir, exist_ok=True)
    result = {"settings": vars(args), "judge": judge.describe(), "rows": rows,
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__}}
    write_json(os.path.join(args.out_dir, "forget_policy.json"), result)
    print(f"wrote {args.out_dir}/forget_policy.json")


if __name__ == "__main__":
    main()
