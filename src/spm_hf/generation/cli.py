"""`spm-hf train-generator` and `spm-hf evaluate-generator`: register them with `add_generator_commands`."""

from __future__ import annotations

import argparse
import json


def _cmd_train_generator(args) -> int:
    from .training import train_generator

    overrides = {
        "dataset": args.dataset,
        "max_steps": args.max_steps,
        "max_minutes": args.max_minutes,
        "batch_size": args.batch_size,
        "support_size": args.support_size,
        "learning_rate": args.learning_rate,
        "warmup_steps": args.warmup_steps,
        "eval_every": args.eval_every,
        "checkpoint_every": args.checkpoint_every,
        "train_limit": args.max_train_samples,
        "seed": args.seed,
        "mixed_precision": args.mixed_precision,
        "exclude_classes": tuple(args.exclude_classes) if args.exclude_classes else None,
    }
    resume = args.resume
    if resume == "":
        resume = "latest"
    train_generator(args.preset, args.output_dir, resume=resume, show_progress=not args.no_progress, **overrides)
    print(f"saved SPMDiffusionPipeline to {args.output_dir}")
    return 0


def _cmd_evaluate_generator(args) -> int:
    from .evaluation import evaluate_generator, fid_from_images

    if args.fid_from:
        report = fid_from_images(args.fid_from, dataset=args.dataset, fid_real_samples=args.fid_real_samples,
                                 device=args.device or "cpu")
        print(json.dumps(report, indent=1))
        return 0
    if not args.model or not args.output_dir:
        raise SystemExit("spm-hf evaluate-generator: give --model and --output-dir (or --fid-from DIR)")
    report = evaluate_generator(
        args.model,
        output_dir=args.output_dir,
        forget_classes=args.forget or [],
        retrained_model=args.retrained_model,
        samples_per_class=args.samples_per_class,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        support_size=args.support_size,
        judge=args.judge,
        fid=not args.no_fid,
        fid_real_samples=args.fid_real_samples or 1000,
        dataset=args.dataset,
        seed=args.seed,
        device=args.device,
        progress=True,
        forget_policy=args.forget_policy,
    )
    print(json.dumps(report, indent=1))
    return 0


def add_generator_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `train-generator` and `evaluate-generator` on an argparse sub-parser collection."""
    p = subparsers.add_parser("train-generator", help="train the semi-parametric diffusion generator (accelerate)")
    p.add_argument("--preset", default="mnist-cpu", help="tiny | mnist-cpu | cifar10-cpu | cifar10-paper")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--dataset", help="mnist | cifar10 | a local dataset folder (default: the preset's)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-minutes", type=float, help="stop (and save) after this many minutes of training in all "
                   "(a resumed run counts the time up to its checkpoint)")
    p.add_argument("--batch-size", type=int, help="queries per process and step")
    p.add_argument("--support-size", type=int, help="support images per batch")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--warmup-steps", type=int, help="linear learning-rate warm-up (steps)")
    p.add_argument("--eval-every", type=int, help="steps between sample grids (0: only at the end)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (0: none)")
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"])
    p.add_argument("--exclude-classes", nargs="+", help="train without these classes (the retrained oracle)")
    p.add_argument("--resume", nargs="?", const="", default=None,
                   help="resume from a checkpoint folder, or the latest in OUTPUT_DIR/checkpoints if no path")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train_generator)

    p = subparsers.add_parser("evaluate-generator",
                              help="judge accuracy per class, forgetting UA, FID / FID_O, before/after grids")
    p.add_argument("--model", help="a saved SPMDiffusionPipeline folder (or Hub id)")
    p.add_argument("--output-dir", help="where report.json, images.npz and the grids go")
    p.add_argument("--fid-from", metavar="DIR",
                   help="only compute FID from DIR/images.npz (an earlier run's output) and update DIR/report.json")
    p.add_argument("--forget", nargs="*", help="classes to forget (names or indices) before the 'after' evaluation")
    p.add_argument("--retrained-model", help="a pipeline trained without the forget classes, for FID_O")
    p.add_argument("--samples-per-class", type=int, default=100)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--guidance-scale", type=float, default=1.3)
    p.add_argument("--support-size", type=int, default=50, help="support items per class (the paper: 50)")
    # the names of pipeline_spm.FORGET_POLICIES, spelled out so that parsing does not import diffusers (a test
    # keeps them equal)
    p.add_argument("--forget-policy", choices=("substitute", "empty", "all_remaining"), default="substitute",
                   help="what a forgotten class reads: the first remaining class's samples relabelled (default; "
                   "the paper's evaluation), no support, or every remaining sample")
    p.add_argument("--judge", default=None, help="judge safetensors (default: ../shared/models/cifar10-resnet-judge/"
                   "resnet56) or a saved SPM classifier folder (e.g. train-classifier --preset mnist)")
    p.add_argument("--no-fid", action="store_true")
    p.add_argument("--fid-real-samples", type=int, help="real test images for FID (default 1000; with --fid-from: "
                   "the report's)")
    p.add_argument("--dataset", default=None, help="real images for FID (default: mnist for 1 channel, else cifar10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available)")
    p.set_defaults(func=_cmd_evaluate_generator)
