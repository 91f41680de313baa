"""Judge accuracy and FID of a trained generator vs the classifier-free guidance scale and DDIM step count.

Classifier-free guidance trades diversity for class fidelity: a larger scale s in
ε = ε_u + s (ε_c − ε_u) pushes every sample towards what the model thinks is typical of the class, so the
judge recognises more of them while FID (which also measures diversity) gets worse. The paper samples at
s = 1.3 (w = 0.3) with a generator trained for 2,000 GPU epochs; an undertrained CPU generator needs a larger
scale before its classes become recognisable. This script measures the trade-off instead of picking a scale
by eye. The number of DDIM steps interacts with the scale (each step applies the guided direction once, so
fewer, larger steps change how much of it survives), so `--steps` may list several counts.

For each (steps, scale): `--samples-per-class` images per class (the seeds of `evaluate_generator`, so the images at
a scale equal an `evaluate-generator` run with the same settings), judge accuracy per class and mean, and FID
against `--fid-real-samples` real test images (few samples bias FID upwards; the values are comparable
across scales, not with FIDs computed from other counts). Prints a table with the machine, writes
`guidance_sweep.json` and `guidance_sweep.png` to `--out-dir`.

    python bench/guidance_sweep.py --model outputs/gen-cifar10-cpu --scales 1.3 3 6 10 15 20 --out-dir docs/bench/guidance
    python bench/guidance_sweep.py --model outputs/gen-cifar10-cpu --steps 10 15 25 50 --scales 10 15 20 \
        --out-dir docs/bench/guidance_steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from spm_hf.evaluation.judge import open_judge
from spm_hf.generation import SPMDiffusionPipeline
from spm_hf.evaluation.fid import extract_features, frechet_distance
from spm_hf.files import write_figure, write_json
from spm_hf.evaluation.generator import _fid_extractor, _real_set, generate_per_class


def plot(rows: list[dict], names: list[str], path: str) -> None:
    """One step count: judge accuracy per class and mean, and FID, against the scale. Several step counts: the
    mean judge accuracy and FID against the scale, one line per step count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step_counts = sorted({r.get("num_inference_steps") for r in rows}, key=lambda s: (s is None, s))
    fig, (ax_acc, ax_fid) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"wspace": 0.55})
    if len(step_counts) == 1:
        scales = [r["guidance_scale"] for r in rows]
        for c, name in enumerate(names):
            ax_acc.plot(scales, [r["judge_accuracy"][name] for r in rows], color=plt.cm.tab10(c), alpha=0.5, lw=1,
                        label=name)
        ax_acc.plot(scales, [r["judge_accuracy_mean"] for r in rows], "k-o", lw=2, label="mean")
        if all("fid" in r for r in rows):
            ax_fid.plot(scales, [r["fid"] for r in rows], "C3-o")
        ax_acc.set_title("class fidelity (thin: per class)")
    else:
        for i, steps in enumerate(step_counts):
            sub = [r for r in rows if r.get("num_inference_steps") == steps]
            scales = [r["guidance_scale"] for r in sub]
            ax_acc.plot(scales, [r["judge_accuracy_mean"] for r in sub], "-o", color=f"C{i}", label=f"{steps} steps")
            if all("fid" in r for r in sub):
                ax_fid.plot(scales, [r["fid"] for r in sub], "-o", color=f"C{i}", label=f"{steps} steps")
        ax_fid.legend(fontsize=7)
        ax_acc.set_title("class fidelity (mean over classes)")
    ax_acc.axhline(100 / len(names), color="grey", ls=":", label="chance")
    ax_acc.set(xlabel="guidance scale s", ylabel="judge accuracy (%)")
    ax_acc.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax_fid.set(xlabel="guidance scale s", ylabel="FID (lower is better)", title="FID (few samples: biased up)")
    fig.subplots_adjust(left=0.06, right=0.97, bottom=0.13)
    write_figure(fig, path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a saved SPMDiffusionPipeline folder")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.3, 3.0, 6.0, 10.0, 15.0, 20.0])
    parser.add_argument("--samples-per-class", type=int, default=20)
    parser.add_argument("--steps", type=int, nargs="+", default=[25], help="DDIM step counts")
    parser.add_argument("--support-size", type=int, default=50, help="support items per class")
    parser.add_argument("--fid-real-samples", type=int, default=1000)
    parser.add_argument("--no-fid", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="outputs/bench/guidance")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from OUT_DIR/guidance_sweep.json")
    args = parser.parse_args()
    if args.replot:
        with open(os.path.join(args.out_dir, "guidance_sweep.json")) as f:
            saved = json.load(f)
        plot(saved["rows"], saved["judge"]["classes"], os.path.join(args.out_dir, "guidance_sweep.png"))
        return
    if not args.model:
        parser.error("--model is required (unless --replot)")
    if any(s < 1.0 for s in args.scales):
        parser.error("--scales: a guidance scale below 1 is not classifier-free guidance (1 = conditional only)")
    if any(n < 1 for n in args.steps):
        parser.error("--steps: every step count must be at least 1")

    pipe = SPMDiffusionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    names, cfg = pipe.label_names, pipe.unet.config
    judge = open_judge(None)
    judge.check_fits(cfg.in_channels, cfg.sample_size, names)
    if not args.no_fid:  # the real images' Inception features, once for every scale
        extractor = _fid_extractor(None, "cpu")
        real_feats = extract_features(_real_set(None, None, args.fid_real_samples, cfg.in_channels)[0], extractor)

    rows = []
    print(f"{'steps':>5} | {'scale':>6} | {'judge acc. (mean)':>17} | {'FID':>7} | seconds")
    for steps in args.steps:
        for scale in args.scales:
            start = time.perf_counter()
            images = generate_per_class(pipe, range(len(names)), args.samples_per_class, steps, scale,
                                        args.support_size, args.seed, desc=f"{steps} steps, guidance {scale}")
            seconds = time.perf_counter() - start
            acc = {names[c]: float((judge.predict(x) == c).float().mean() * 100) for c, x in images.items()}
            row = {"num_inference_steps": steps, "guidance_scale": scale, "judge_accuracy": acc,
                   "judge_accuracy_mean": float(np.mean(list(acc.values()))), "generate_s": seconds}
            if not args.no_fid:
                fake_feats = extract_features(torch.cat([images[c] for c in sorted(images)]), extractor)
                row["fid"] = frechet_distance(fake_feats, real_feats)
            rows.append(row)
            print(f"{steps:5d} | {scale:6.1f} | {row['judge_accuracy_mean']:17.1f} | {row.get('fid', float('nan')):7.1f}"
                  f" | {seconds:.0f}", flush=True)

    os.makedirs(args.out_dir, exist_ok=True)
    result = {
        "model": args.model,
        "settings": {k: v for k, v in vars(args).items() if k not in ("model", "out_dir")},
        "judge": judge.describe(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "rows": rows,
    }
    write_json(os.path.join(args.out_dir, "guidance_sweep.json"), result)
    plot(rows, names, os.path.join(args.out_dir, "guidance_sweep.png"))
    print(f"machine: {result['machine']}\nwrote {args.out_dir}/guidance_sweep.json and guidance_sweep.png")


if __name__ == "__main__":
    main()
