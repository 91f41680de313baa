"""`spm-hf` command line: train, forget, evaluate, quickstart."""

from __future__ import annotations

import argparse
import json
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


def _cmd_forget(args) -> int:
    from .modeling_spm import SPMForImageClassification

    ids = None
    if args.ids_file:
        with open(args.ids_file) as f:
            ids = [line.strip() for line in f if line.strip()]
    model = SPMForImageClassification.from_pretrained(args.model)
    receipt = model.forget(ids=ids, classes=args.classes)
    model.save_pretrained(args.output_dir or args.model)
    print(receipt)
    return 0


def _cmd_quickstart(args) -> int:
    from .quickstart import quickstart

    quickstart(args.output_dir, preset=args.preset, forget_class=args.forget)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spm-hf", description="Deep semi-parametric models for unlearning")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-classifier", help="train an SPM classifier (or the parametric baseline)")
    p.add_argument("--preset", default="tiny", help="tiny | quick | cifar10-cpu | cifar10-paper")
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

    p = sub.add_parser("forget", help="forget classes or ids from a saved classifier")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--classes", nargs="*", help="class names or indices")
    p.add_argument("--ids-file", help="a file with one sample id per line")
    p.add_argument("--output-dir", help="where to save (default: in place)")
    p.set_defaults(func=_cmd_forget)

    p = sub.add_parser("quickstart", help="train a quick CIFAR-10 SPM, forget a class, report")
    p.add_argument("--output-dir", default="outputs/quickstart")
    p.add_argument("--preset", default="quick")
    p.add_argument("--forget", default="cat")
    p.set_defaults(func=_cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
