"""`spm-hf` command line: train-classifier, forget, push, quickstart, train-generator, evaluate-generator, app."""

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

    from .generation.cli import add_generator_commands

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
