"""`spm-hf` command line: train-classifier, train-generator, forget, evaluate-generator, benchmark, push,
quickstart, app.

Each command imports what it runs inside its handler, so that `spm-hf --help` and argument errors answer
without loading torch, transformers or diffusers (seconds on a small machine)."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _cmd_train_classifier(args) -> int:
    from .training.classifier import train_classifier

    overrides = {
        "epochs": args.epochs,
        "max_train_samples": args.max_train_samples,
        "max_test_samples": args.max_test_samples,
        "support": args.support,
        "support_size": args.support_size,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "encoder": args.encoder,
    }
    summary = train_classifier(
        args.preset, args.output_dir, parametric=args.parametric, resume=args.resume, **overrides
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "preset"}, indent=1))
    return 0


def _load_model(model: str):
    """`(model_or_pipeline, local_folder)` for a saved folder or a Hub repo id (downloaded first).
    A folder with `model_index.json` is an `SPMDiffusionPipeline`, anything else a classifier."""
    import os

    path = model
    if not os.path.isdir(model):
        from huggingface_hub import snapshot_download

        path = snapshot_download(model)
    if os.path.exists(os.path.join(path, "model_index.json")):
        from .generation import SPMDiffusionPipeline

        return SPMDiffusionPipeline.from_pretrained(path), path
    from .modeling_spm import SPMForImageClassification

    return SPMForImageClassification.from_pretrained(path), path


def _cmd_forget(args) -> int:
    import os

    ids = None
    if args.ids_file:
        with open(args.ids_file) as f:
            ids = [line.strip() for line in f if line.strip()]
    if not args.classes and not ids:
        raise SystemExit("spm-hf forget: give --classes and/or --ids-file")
    local = os.path.isdir(args.model)
    push_to = args.push if isinstance(args.push, str) else (args.model if args.push and not local else None)
    if args.push is True and local:
        raise SystemExit("spm-hf forget: --push needs a REPO_ID when --model is a folder (--push user/name)")
    output_dir = args.output_dir or (args.model if local else None)
    if output_dir is None and push_to is None:
        raise SystemExit(
            f"spm-hf forget: {args.model} is a Hub repo id; pass --push (to update it) and/or --output-dir, "
            "otherwise the deletion would not be kept anywhere"
        )
    model, _ = _load_model(args.model)
    receipt = model.forget(ids=ids, classes=args.classes)
    if output_dir:
        model.save_pretrained(output_dir)
    print(receipt)
    if push_to:
        print(model.push_to_hub(push_to, squash_history=False if args.keep_history else None))
    return 0


def _cmd_push(args) -> int:
    model, _ = _load_model(args.model_dir)
    result = model.push_to_hub(
        args.repo_id, private=args.private or None, commit_message=args.commit_message,
        squash_history=False if args.keep_history else None,
    )
    print(result)
    return 0


def _cmd_quickstart(args) -> int:
    from .quickstart import quickstart

    quickstart(args.output_dir, preset=args.preset, forget_class=args.forget)
    return 0


def _cmd_benchmark_unlearning(args) -> int:
    from .evaluation.benchmark import run_unlearning_benchmark, train_benchmark_models

    overrides = {k: v for k, v in {"epochs": args.epochs, "max_train_samples": args.max_train_samples,
                                   "memory_samples": args.max_train_samples,
                                   "max_test_samples": args.max_test_samples}.items() if v is not None} or None
    if args.train_only:
        root = train_benchmark_models(args.preset, args.scenario, args.cache_dir, overrides, args.workers,
                                      show_progress=not args.no_progress)
        print(f"models cached in {root}")
        return 0
    reports = run_unlearning_benchmark(args.preset, args.scenario, args.output_dir, cache_dir=args.cache_dir,
                                       overrides=overrides, methods=args.methods, workers=args.workers,
                                       device=args.device, show_progress=not args.no_progress)
    for name in reports:
        print(f"wrote {os.path.join(args.output_dir, name)}/results.json, results.md, gap_vs_time.png")
    return 0


def load_app_module():
    """The Gradio app, `app/app.py` of the source checkout (the folder a Space is made from)."""
    import importlib.util
    from pathlib import Path

    path = Path(os.environ.get("SPM_HF_APP_FILE") or Path(__file__).resolve().parents[2] / "app" / "app.py")
    if not path.exists():
        raise SystemExit(f"spm-hf app: {path} not found; run it from a source checkout (pip install -e '.[app]') "
                         "or set SPM_HF_APP_FILE")
    if "spm_hf_app" in sys.modules:
        return sys.modules["spm_hf_app"]
    spec = importlib.util.spec_from_file_location("spm_hf_app", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["spm_hf_app"] = module  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["spm_hf_app"]
        raise
    return module


def _cmd_app(argv: list[str]) -> int:
    load_app_module().main(argv, train_missing=True)
    return 0


def _cmd_train_generator(args) -> int:
    from .training.generator import train_generator

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
    from .evaluation.generator import evaluate_generator, fid_from_images

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spm-hf", description="Deep semi-parametric models for unlearning")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-classifier", help="train an SPM classifier (or the parametric baseline)")
    p.add_argument("--preset", default="tiny", help="tiny | quick | cifar10-cpu | cifar10-paper | mnist")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--parametric", action="store_true", help="train the same encoder with a linear head")
    p.add_argument("--resume", action="store_true", help="resume from the last checkpoint in OUTPUT_DIR")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--encoder")
    p.add_argument("--support", choices=["batch", "separate"], help="episodic support variant")
    p.add_argument("--support-size", type=int)
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--max-test-samples", type=int)
    p.add_argument("--seed", type=int)
    p.set_defaults(func=_cmd_train_classifier)

    p = sub.add_parser("forget", help="forget classes or ids from a saved classifier or generator (folder or Hub repo)")
    p.add_argument("--model", required=True, help="a saved model folder, or a Hub repo id (downloaded first)")
    p.add_argument("--classes", nargs="*", help="class names or indices")
    p.add_argument("--ids-file", help="a file with one sample id per line")
    p.add_argument("--output-dir", help="where to save (default: in place for a folder; nothing for a repo id)")
    p.add_argument("--push", nargs="?", const=True, default=None, metavar="REPO_ID",
                   help="push the result (default repo: --model when it is a repo id); squashes the repo history")
    p.add_argument("--keep-history", action="store_true",
                   help="with --push: do not squash the repo history (older revisions keep the deleted samples)")
    p.set_defaults(func=_cmd_forget)

    p = sub.add_parser("push", help="push a saved classifier or generator folder to the Hub (with its model card)")
    p.add_argument("model_dir", help="a folder written by save_pretrained / train-classifier / train-generator")
    p.add_argument("repo_id", help="user/name on the Hub")
    p.add_argument("--private", action="store_true")
    p.add_argument("--commit-message")
    p.add_argument("--keep-history", action="store_true",
                   help="do not squash the history even if the memory has forget events (warns)")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("quickstart", help="train a quick CIFAR-10 SPM, forget a class, report")
    p.add_argument("--output-dir", default="outputs/quickstart")
    p.add_argument("--preset", default="quick")
    p.add_argument("--forget", default="cat")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("benchmark", help="benchmarks: `benchmark unlearning`")
    bench = p.add_subparsers(dest="benchmark", required=True)
    p = bench.add_parser("unlearning", help="SPM deletion vs retraining vs parametric unlearning (UA/RA/TA/MIA, gaps, time)")
    p.add_argument("--preset", default="tiny", help="a classifier preset: tiny | quick | cifar10-cpu | cifar10-paper")
    p.add_argument("--scenario", nargs="+", default=["cat"],
                   help="cat | five-classes | random-10 | random-50 | all (several allowed)")
    p.add_argument("--output-dir", default="outputs/benchmark")
    p.add_argument("--cache-dir", default="outputs/benchmark-cache", help="trained models are kept here")
    p.add_argument("--methods", nargs="+", help="parametric baselines (default: FT GA RL l1_sparse SalUn)")
    p.add_argument("--workers", type=int, default=1, help="models trained at once (GPU / many cores)")
    p.add_argument("--device", help="cuda | cpu (default: cuda if available)")
    p.add_argument("--epochs", type=float, help="override the preset's training epochs")
    p.add_argument("--max-train-samples", type=int, help="override the preset's training (and memory) subset")
    p.add_argument("--max-test-samples", type=int)
    p.add_argument("--train-only", action="store_true", help="train (cache) the models the scenarios need, then stop")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_benchmark_unlearning)

    add_generator_commands(sub)
    # `spm-hf app ...` is handed to app/app.py's own parser (see `main`); listed here for `spm-hf --help`.
    sub.add_parser("app", add_help=False, help="launch the Gradio demo (trains small models first if none are given)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["app"]:
        return _cmd_app(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
