"""`spm-hf` command line: train-classifier, train-generator, forget, evaluate-generator, benchmark, push,
quickstart, app.

Each command imports what it runs inside its handler, so that `spm-hf --help` and argument errors answer
without loading torch, transformers or diffusers (seconds on a small machine)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys


# The names of training.classifier_presets.CLASSIFIER_PRESETS and training.generator_presets.GENERATOR_PRESETS,
# spelled out so that `--help` does not import training (a test keeps them equal).
CLASSIFIER_PRESET_NAMES = ("tiny", "quick", "cifar10-cpu", "mnist", "cifar10-paper")
GENERATOR_PRESET_NAMES = ("gen-tiny", "gen-mnist-cpu", "gen-cifar10-cpu", "gen-cifar10-paper")


def _preset_overrides(args, flags: dict[str, str], switches: dict[str, tuple[str, object]] | None = None) -> dict:
    """Preset field -> the value given on the command line (None when the flag was not given), read through
    the presets module's own field -> flag tables, the ones `reproduce_command` writes the command from."""
    overrides = {}
    for field_name, flag in flags.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        overrides[field_name] = tuple(value) if isinstance(value, list) else value
    for field_name, (flag, value) in (switches or {}).items():
        overrides[field_name] = value if getattr(args, flag[2:].replace("-", "_")) else None
    return overrides


def _cmd_train_classifier(args) -> int:
    from .training.classifier_presets import get_preset

    get_preset(args.preset)  # an unknown name fails here, before the training imports
    from .training.classifier import train_classifier
    from .training.classifier_presets import COMMAND_LINE_FIELDS, COMMAND_LINE_SWITCHES

    overrides = _preset_overrides(args, COMMAND_LINE_FIELDS, COMMAND_LINE_SWITCHES)
    summary = train_classifier(
        args.preset, args.output_dir, parametric=args.parametric, resume=args.resume,
        command=_command_line(args), **overrides
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "preset"}, indent=1))
    return 0


class UsageError(ValueError):
    """A command's arguments do not make sense together; `main` prints it as a usage error."""


class CommandError(SystemExit):
    """Exit status 2 (argparse's, for a usage error) after `main` printed `spm-hf <command>: error: <message>`.

    `str()` is the message and `__cause__` the library's exception, for callers of `main` that want them."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _check_model_location(model: str, argument: str = "--model") -> None:
    """Refuse, before any work, a `model` that is neither a folder nor a plausible Hub repo id."""
    if os.path.isdir(model):
        return
    if os.path.exists(model):
        raise NotADirectoryError(f"{argument} {model!r} is a file; give the folder that save_pretrained wrote")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise FileNotFoundError(
            f"{argument} {model!r}: no such folder, and not a Hub repo id (user/name)"
        ) from None


def _load_model(model: str, argument: str = "--model"):
    """`(model_or_pipeline, local_folder)` for a saved folder or a Hub repo id (downloaded first).
    A folder with `model_index.json` is an `SPMDiffusionPipeline`, anything else a classifier."""
    _check_model_location(model, argument)
    path = model
    if not os.path.isdir(model):
        from huggingface_hub import snapshot_download

        try:
            path = snapshot_download(model)
        except OSError as error:  # the Hub's errors (no such repo, offline, gated) are all OSErrors
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise FileNotFoundError(
                f"{argument} {model!r} is not a local folder, and the Hub repo could not be fetched: {reason}"
            ) from error
    if not any(os.path.exists(os.path.join(path, name)) for name in ("model_index.json", "config.json")):
        raise FileNotFoundError(
            f"{argument} {model!r} has neither config.json nor model_index.json: not a saved SPM classifier or "
            "generator (give the folder that save_pretrained / train-classifier / train-generator wrote)"
        )
    if os.path.exists(os.path.join(path, "model_index.json")):
        from .generation import SPMDiffusionPipeline

        return SPMDiffusionPipeline.from_pretrained(path), path
    from .modeling_spm import SPMForImageClassification

    return SPMForImageClassification.from_pretrained(path), path


def _class_arguments(values: list[str] | None, label_names: list[str]) -> list[str | int] | None:
    """Command-line classes: a name as given, a number that is not a name as an index ("3" -> 3)."""
    if values is None:
        return None
    return [int(v) if v not in label_names and re.fullmatch(r"-?[0-9]+", v) else v for v in values]


def _cmd_forget(args) -> int:
    ids = None
    if args.ids_file:
        if not os.path.isfile(args.ids_file):
            raise FileNotFoundError(f"--ids-file {args.ids_file!r}: no such file (one sample id per line)")
        with open(args.ids_file) as f:
            ids = [line.strip() for line in f if line.strip()]
    if not args.classes and not ids:
        raise UsageError("give --classes and/or --ids-file (a non-empty file of sample ids)")
    _check_model_location(args.model)
    local = os.path.isdir(args.model)
    push_to = args.push if isinstance(args.push, str) else (args.model if args.push and not local else None)
    if args.push is True and local:
        raise UsageError("--push needs a REPO_ID when --model is a folder (--push user/name)")
    if args.create_pr and not push_to:
        raise UsageError("--create-pr opens a pull request with the result: it needs --push")
    output_dir = args.output_dir or (args.model if local else None)
    if output_dir is None and push_to is None:
        raise UsageError(
            f"{args.model} is a Hub repo id; pass --push (to update it) and/or --output-dir, "
            "otherwise the deletion would not be kept anywhere"
        )
    model, _ = _load_model(args.model)
    if model.memory is None:
        raise UsageError(f"--model {args.model!r} has no sample memory to forget from (sample_memory.json missing)")
    receipt = model.forget(ids=ids, classes=_class_arguments(args.classes, model.label_names))
    if output_dir:
        model.save_pretrained(output_dir)
    print(receipt)
    if push_to:
        # the push also deletes (or, with --keep-cache, keeps and says so) the cached pre-forget revisions
        print(model.push_to_hub(push_to, squash_history=False if args.keep_history else None,
                                keep_local_cache=args.keep_cache, create_pr=args.create_pr))
    else:
        report = model.purge_local_cache(keep=args.keep_cache)  # a repo id saved to --output-dir only
        if report is not None:
            print(report)
    return 0


def _cmd_push(args) -> int:
    model, _ = _load_model(args.model_dir, "model_dir")
    result = model.push_to_hub(
        args.repo_id, private=args.private or None, commit_message=args.commit_message,
        squash_history=False if args.keep_history else None, revision=args.revision, create_pr=args.create_pr,
        delete_patterns=args.delete_remote,
    )
    print(result)
    return 0


def _cmd_quickstart(args) -> int:
    from .quickstart import quickstart

    quickstart(args.output_dir, preset=args.preset, forget_class=args.forget)
    return 0


def _cmd_benchmark_unlearning(args) -> int:
    from .evaluation.benchmark import run_unlearning_benchmark, train_benchmark_models

    overrides = {k: v for k, v in {"dataset": args.dataset, "image_column": args.image_column,
                                   "label_column": args.label_column,
                                   "epochs": args.epochs, "max_train_samples": args.max_train_samples,
                                   "memory_samples": args.max_train_samples,
                                   "max_test_samples": args.max_test_samples}.items() if v is not None} or None
    if args.train_only:
        root = train_benchmark_models(args.preset, args.scenario, args.cache_dir, overrides, args.workers,
                                      show_progress=not args.no_progress, families=args.families,
                                      oracle_seeds=args.oracle_seeds)
        print(f"models cached in {root}")
        return 0
    reports = run_unlearning_benchmark(args.preset, args.scenario, args.output_dir, cache_dir=args.cache_dir,
                                       overrides=overrides, methods=args.methods, workers=args.workers,
                                       device=args.device, show_progress=not args.no_progress,
                                       families=args.families, oracle_seeds=args.oracle_seeds)
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
    from .training.generator_presets import get_generator_preset

    get_generator_preset(args.preset)  # an unknown name fails here, before the training imports
    from .training.generator import train_generator
    from .training.generator_presets import COMMAND_LINE_FIELDS

    overrides = _preset_overrides(args, COMMAND_LINE_FIELDS)
    resume = args.resume
    if resume == "":
        resume = "latest"
    train_generator(args.preset, args.output_dir, resume=resume, show_progress=not args.no_progress,
                    command=_command_line(args), **overrides)
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


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """`--dataset`, `--image-column`, `--label-column` (spm_hf.data.load_image_dataset reads them)."""
    parser.add_argument("--dataset", metavar="NAME_OR_PATH",
                        help="cifar10 | mnist | a datasets Hub id (user/name) | a local folder: parquet files "
                        "(train-*.parquet, test-*.parquet), a save_to_disk folder, or an imagefolder tree "
                        "(train/<class>/*.png, test/<class>/*.png) (default: the preset's)")
    parser.add_argument("--image-column", help="the dataset's image column (default: image, img, or its only "
                        "Image feature)")
    parser.add_argument("--label-column", help="the dataset's label column: a ClassLabel, or class names / numbers "
                        "(default: label, labels, or its only ClassLabel feature)")


def _command_line(args) -> str | None:
    """The command line `main` was called with, as `spm-hf ...` (kept in the training summary and model card)."""
    argv = getattr(args, "argv", None)
    return None if argv is None else shlex.join(["spm-hf", *argv])


def add_generator_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `train-generator` and `evaluate-generator` on an argparse sub-parser collection."""
    p = subparsers.add_parser("train-generator", help="train the semi-parametric diffusion generator (accelerate)")
    p.add_argument("--preset", default="gen-mnist-cpu",
                   help=" | ".join(GENERATOR_PRESET_NAMES) + " (default: %(default)s)")
    p.add_argument("--output-dir", required=True)
    _add_dataset_arguments(p)
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
    p.add_argument("--preset", default="tiny",
                   help=" | ".join(CLASSIFIER_PRESET_NAMES) + " (default: %(default)s)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--parametric", action="store_true", help="train the same encoder with a linear head")
    _add_dataset_arguments(p)
    p.add_argument("--resume", action="store_true", help="resume from the last checkpoint in OUTPUT_DIR")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--encoder", help="a built-in CIFAR ResNet: resnet18 | resnet-small | resnet-mini | resnet-tiny")
    p.add_argument("--backbone", help="a transformers vision model as the encoder instead (Hub id or local folder: "
                   "ResNet, ConvNeXt, ViT, DINOv2, ...), with its pretrained weights")
    p.add_argument("--no-pretrained-backbone", action="store_true",
                   help="with --backbone: its architecture only, randomly initialised")
    p.add_argument("--freeze-encoder", action="store_true", help="do not train the encoder (kept in eval mode)")
    p.add_argument("--fusion", choices=["relation", "cosine_prototype"],
                   help="relation experts (trained) or cosine to the prototypes (no parameter)")
    p.add_argument("--core-fraction", type=float, metavar="F",
                   help="train the parameters on a core of this fraction of the training rows (chosen by a keyed "
                   "hash of each row's id); every row goes in the memory, the others memory-only: forgetting "
                   "them is exact")
    p.add_argument("--core-seed", type=int, metavar="S", help="the key of --core-fraction's hash (default 0)")
    p.add_argument("--core-ids", metavar="FILE", help="the core as a file of sample ids, one a line")
    p.add_argument("--support", choices=["batch", "separate"], help="episodic support variant")
    p.add_argument("--episode-reading", choices=["class_mean", "knn"],
                   help="with --support batch: read each query against the batch's class means (default) or its "
                   "knn_k nearest batch-mates, as knn mode reads the memory (training in knn mode)")
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
                   help="push the result (default repo: --model when it is a repo id) as one commit, as `spm-hf push` "
                   "does, then squash the branch's history and delete the LFS files no ref uses, so no revision of "
                   "the branch still holds the forgotten samples")
    p.add_argument("--keep-history", action="store_true",
                   help="with --push: do not squash the repo history (older revisions keep the deleted samples)")
    p.add_argument("--create-pr", action="store_true",
                   help="with --push: open a pull request instead; the branch and its history keep the forgotten "
                   "samples until it is merged and the history squashed (warns)")
    p.add_argument("--keep-cache", action="store_true",
                   help="when --model is a Hub repo id: keep its revisions in the local Hugging Face cache (they still "
                   "hold the forgotten samples; by default they are deleted from the cache once the result is kept)")
    p.set_defaults(func=_cmd_forget)

    p = sub.add_parser(
        "push", help="push a saved classifier or generator folder to the Hub (with its model card)",
        description="Load the folder, save it afresh with its model card and upload that as one commit to the "
        "branch (created if missing). The commit replaces the model's own files (weights and old weight shards, "
        "the memory, the remote code, the folders it writes such as unet/ and memory/); other files of the repo, "
        "such as a NOTES.md of yours, are kept (--delete-remote removes them). Training checkpoints and pickles "
        "are never uploaded. If the memory has forget events, the branch's history is then squashed and the "
        "LFS files no branch, tag or pull request uses are permanently deleted; other refs are left alone, "
        "with a warning naming them.")
    p.add_argument("model_dir", help="a folder written by save_pretrained / train-classifier / train-generator")
    p.add_argument("repo_id", help="user/name on the Hub")
    p.add_argument("--private", action="store_true")
    p.add_argument("--commit-message")
    p.add_argument("--revision", metavar="BRANCH", help="the branch to push to (default main; created if missing)")
    p.add_argument("--create-pr", action="store_true",
                   help="open a pull request against the branch instead of committing to it (no squash; warns if "
                   "the memory has forget events: the branch still holds the deleted samples)")
    p.add_argument("--delete-remote", action="append", metavar="PATTERN",
                   help="also delete remote files matching PATTERN (fnmatch on repo paths) that the folder lacks; "
                   "'*' makes the repo hold exactly the saved folder (repeatable)")
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
    p.add_argument("--preset", default="tiny", help="a classifier preset: tiny | quick | mnist | cifar10-cpu | cifar10-paper")
    _add_dataset_arguments(p)
    p.add_argument("--scenario", nargs="+", default=["cat"],
                   help="cat | five-classes | random-10 | random-50 | memory-only-random-10 | unseen-cat | all "
                   "(several allowed); the last two also train an SPM on a core split, for which the forget set "
                   "is memory-only")
    p.add_argument("--output-dir", default="outputs/benchmark")
    p.add_argument("--cache-dir", default="outputs/benchmark-cache", help="trained models are kept here")
    p.add_argument("--methods", nargs="+", help="parametric baselines (default: FT GA RL l1_sparse SalUn)")
    p.add_argument("--families", nargs="+", metavar="FAMILY",
                   help="model families to compare: spm-core (scenarios with a core) spm parametric (default: all); "
                   "e.g. `--families spm-core` runs the core SPM, its deletion and its oracle alone")
    p.add_argument("--oracle-seeds", nargs="+", type=int, metavar="SEED",
                   help="seeds of the retrained oracles (default: 0 1); 0 is the oracle, a further seed adds the "
                   "seed-gap floor")
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


def _check_output_folders(args) -> None:
    """Refuse, before any work, an output folder that is an existing file or lies under one."""
    for dest in ("output_dir", "cache_dir"):
        path = getattr(args, dest, None)
        if not path:
            continue
        flag = "--" + dest.replace("_", "-")
        if os.path.exists(path) and not os.path.isdir(path):
            raise NotADirectoryError(f"{flag} {path!r} is an existing file, not a folder")
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise NotADirectoryError(f"{flag} {path!r} cannot be created: {parent!r} is a file, not a folder")


def _is_user_error(error: BaseException) -> bool:
    """Errors that report bad input (arguments, files, models), printed in one line without a traceback;
    anything else is a bug and keeps its traceback."""
    hub = sys.modules.get("spm_hf.hub")
    if hub is not None and isinstance(error, (hub.FolderChangedError, hub.RepoChangedError)):
        return True
    if isinstance(error, KeyError):  # only the memory's (unknown class / id); a bare KeyError is a bug
        memory = sys.modules.get("spm_hf.memory")
        return memory is not None and isinstance(error, memory.MemoryError_)
    return isinstance(error, (ValueError, TypeError, OSError))


def main(argv: list[str] | None = None) -> int:
    """Run `spm-hf`. Bad input (an error of the library that names the argument, a missing file or model)
    is printed as one line, `spm-hf <command>: error: <message>`, and exits with status 2 as argparse does
    (`CommandError`); set `SPM_HF_TRACEBACK=1` to see the traceback instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["app"]:
        return _cmd_app(argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = argv
    command = " ".join(part for part in (args.command, getattr(args, "benchmark", None)) if part)
    try:
        _check_output_folders(args)
        return args.func(args)
    except Exception as error:
        if not _is_user_error(error) or os.environ.get("SPM_HF_TRACEBACK"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"spm-hf {command}: error: {message}", file=sys.stderr)
        raise CommandError(message) from error


if __name__ == "__main__":
    sys.exit(main())
