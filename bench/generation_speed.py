"""Generation cost vs support size, with and without the support-feature cache.

Times one image (classifier-free guidance on, so two branches per step) of an `SPMDiffusionPipeline` for
support sizes {0, 64, 256, 1024} in three modes:

* `no cache`: what the reference code does: the support images go through the support path at every
  denoising step, duplicated for both guidance branches;
* `cache cold`: the cache is emptied before the call, so the support path runs once in the call;
* `cache warm`: the features are already cached (the common case when generating many images).

The weights are random (cost does not depend on them). Prints a table, writes JSON and a plot (log-scale
time vs support size) to `--out-dir`, and records the machine. Run: `python bench/generation_speed.py`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from spm_hf.files import write_atomic, write_figure, write_json
from spm_hf.generation import ImageSampleMemory, SPMUNet2DModel, make_pipeline


def build(architecture: str, max_support: int):
    torch.manual_seed(0)
    unet = SPMUNet2DModel.from_architecture(architecture, num_class_embeds=10).eval()
    c, s = unet.config.in_channels, unet.config.sample_size
    n = max_support + 100
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g)
    labels = torch.zeros(n, dtype=torch.long)
    labels[max_support:] = torch.arange(n - max_support) % 9 + 1  # class 0 has `max_support` items
    memory = ImageSampleMemory.from_images(images, labels, [f"train/{i:05d}" for i in range(n)], [str(i) for i in range(10)])
    pipe = make_pipeline(unet, memory)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_one(pipe, support_size: int, mode: str, steps: int, repeats: int, no_cache_steps: int) -> float:
    """Best-of-`repeats` seconds for one image at `steps` steps. The no-cache mode costs the same at every
    step (the whole support path runs each time), so it is timed at `no_cache_steps` and scaled linearly."""
    if mode == "no cache" and no_cache_steps < steps:
        return time_one(pipe, support_size, mode, no_cache_steps, repeats, no_cache_steps) * steps / no_cache_steps
    best = float("inf")
    for r in range(repeats):
        if mode == "cache cold":
            pipe.clear_support_cache()
        elif mode == "cache warm" and r == 0:
            pipe([0], num_inference_steps=1, support_size=support_size, generator=torch.manual_seed(0))
        start = time.perf_counter()
        pipe([0], num_inference_steps=steps, guidance_scale=1.3, support_size=support_size,
             generator=torch.manual_seed(0), use_support_cache=mode != "no cache", output_type="np")
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", default="unet-cifar10-cpu", help="a key of UNET_ARCHITECTURES")
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 64, 256, 1024])
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per image (the paper uses 50)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cache-steps", type=int, default=2,
                        help="steps actually timed in the no-cache mode (scaled to --steps; its cost per step is constant)")
    parser.add_argument("--out-dir", default="outputs/bench/generation_speed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (1 is steadier on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = build(args.architecture, max(args.sizes))
    modes = ["no cache", "cache cold", "cache warm"]
    results = {m: {} for m in modes}
    for size in args.sizes:
        for mode in modes:
            repeats = 1 if mode == "no cache" else args.repeats
            results[mode][size] = time_one(pipe, size, mode, args.steps, repeats, args.no_cache_steps)
            print(f"support {size:5d}  {mode:10s}  {results[mode][size]:.3f} s", flush=True)

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": "cpu",
    }
    base = {m: results[m][args.sizes[0]] for m in modes}
    lines = [
        f"One {pipe.unet.config.sample_size}x{pipe.unet.config.sample_size} image, UNet {args.architecture} "
        f"({sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.2f} M params), {args.steps} DDIM steps, "
        f"guidance on (2 branches); cached modes best of {args.repeats}, no cache timed over "
        f"{min(args.no_cache_steps, args.steps)} steps and scaled; {machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads "
        f"({machine['processor']}), torch {machine['torch']}",
        "",
        "| support | no cache (s) | x vs 0 | cache cold (s) | x vs 0 | cache warm (s) | x vs 0 | no cache / warm |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in args.sizes:
        row = [f"{size}"]
        for m in modes:
            row += [f"{results[m][size]:.3f}", f"{results[m][size] / base[m]:.2f}"]
        row.append(f"{results['no cache'][size] / results['cache warm'][size]:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines)
    print()
    print(table)

    os.makedirs(args.out_dir, exist_ok=True)
    write_json(os.path.join(args.out_dir, "generation_speed.json"),
               {"machine": machine, "architecture": args.architecture, "steps": args.steps,
                "no_cache_steps": args.no_cache_steps,
                "seconds": {m: {str(k): v for k, v in r.items()} for m, r in results.items()}})
    write_atomic(os.path.join(args.out_dir, "generation_speed.md"), table + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        xs = [max(s, 1) for s in args.sizes]
        for m, marker in zip(modes, "osd"):
            ax.plot(xs, [results[m][s] for s in args.sizes], marker=marker, label=m)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_yscale("log")
        ax.set_xticks(xs, [str(s) for s in args.sizes])
        ax.set_xlabel("support size (items)")
        ax.set_ylabel(f"seconds per image ({args.steps} steps)")
        ax.set_title(f"SPM generation cost, {args.architecture}, CPU")
        ax.legend()
        fig.tight_layout()
        write_figure(fig, os.path.join(args.out_dir, "generation_speed.png"))
    except ImportError:
        print("matplotlib not installed: no plot")
    print(f"\nwrote {args.out_dir}/generation_speed.{{json,md,png}}")


if __name__ == "__main__":
    main()
