"""Helpers of the GPU scripts (bench/gpu/paper_scale.sh, bench/gpu/generator.sh): environment record, epochs
that fit a time box, the summaries, and packing $OUT within the device's limits on what comes back.

    python bench/gpu/summarize.py env --out env.json --device cuda --var KEY=VALUE ...
    python bench/gpu/summarize.py warm-data --preset cifar10-paper
    python bench/gpu/summarize.py epochs --models CACHE_ROOT --cal-epochs 0.1 --wall 80 --seconds 250 --workers 10 --preset P
    python bench/gpu/summarize.py fastest --results bench/cat/results.json --default GA
    python bench/gpu/summarize.py paper-summary --work W --out W/summary.md --json W/summary.json
    python bench/gpu/summarize.py gen-summary --work W --out W/summary.md --json W/summary.json
    python bench/gpu/summarize.py gen-preset --candidates gen-cifar10-paper cifar10-paper
    python bench/gpu/summarize.py model-parts --model W/gen --parts W/model-parts --max-mb 40 --note W/parts.json
    python bench/gpu/summarize.py pack --work W --out OUT --loose W/summary.md ...

Only `env`, `warm-data`, `epochs` and `gen-preset` import spm_hf (and torch); the summaries and `pack` read files only.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tarfile

# What comes back from the device: at most 8 files, 16 MiB each (bench/gpu README, device limits).
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20 - 64 * 1024
MAX_TOTAL_BYTES = 60 * 2**20
# Left out of results.tgz: weights, memories, image arrays, checkpoints (they come back as loose files or not).
TAR_EXCLUDE_SUFFIXES = (".safetensors", ".npz", ".bin", ".pt", ".pth", ".arrow", ".parquet", ".whl")
TAR_EXCLUDE_DIRS = {"checkpoints", "memory", "data", "cache-tmp", "model-parts", "__pycache__", "hf-datasets-cache"}


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write(path: str, text: str) -> None:
    # Plain writes: these are scratch files of one device run, copied to $OUT afterwards.
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


# Where the presets live moved (training.classifier_presets / training.generator_presets); both spellings work.
def _classifier_preset(name: str):
    try:
        from spm_hf.training.classifier_presets import get_preset
    except ImportError:
        from spm_hf.training.classifier import get_preset
    return get_preset(name)


def _generator_preset_names() -> list[str]:
    try:
        from spm_hf.training.generator_presets import GENERATOR_PRESETS as presets
    except ImportError:
        from spm_hf.training.generator import TRAIN_PRESETS as presets
    return sorted(presets)


# ---------------------------------------------------------------------------------------------- env
def _run(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cmd_env(args) -> int:
    import importlib.metadata as md

    import torch

    info: dict = {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(), "device": args.device,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                       "multiprocessors": props.multi_processor_count, "capability": f"{props.major}.{props.minor}"}
    query = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                  "--format=csv,noheader"])
    info["nvidia_smi_query"] = query
    if query:
        info["driver"] = query.split(",")[1].strip()
    info["nvidia_smi"] = _run(["nvidia-smi"])
    packages = {}
    for name in ("transformers", "diffusers", "datasets", "accelerate", "safetensors", "huggingface-hub", "numpy",
                 "pyarrow", "scikit-learn", "gradio", "gradio_client", "playwright"):
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    info["packages"] = packages
    info["git"] = _run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "describe", "--always", "--dirty"])
    try:
        from spm_hf.evaluation.benchmark import ORACLE_SEEDS

        info["seeds"] = {"originals": 0, "oracles": list(ORACLE_SEEDS), "unlearning_methods": 0,
                         "generator_training": 0, "generator_evaluation": 0}
    except ImportError as e:  # the generator script records its environment without the benchmark's extras
        info["seeds"] = {"note": f"spm_hf.evaluation.benchmark not importable: {e}"}
    info["variables"] = dict(v.split("=", 1) for v in args.var)
    _write(args.out, json.dumps(info, indent=1) + "\n")
    print(json.dumps({k: info[k] for k in ("torch", "torch_cuda", "device", "cuda_available")} |
                     {"gpu": info.get("gpu", {}).get("name"), "driver": info.get("driver")}))
    return 0


def cmd_warm_data(args) -> int:
    """Decode the preset's dataset into the datasets cache once (many processes read it next)."""
    from spm_hf.data import load_image_dataset

    dataset = args.dataset or _classifier_preset(args.preset).dataset
    data = load_image_dataset(dataset)
    print({split: len(data[split]) for split in data})
    return 0


# ---------------------------------------------------------------------------------------------- epochs
def plan_epochs(train_seconds: float, wall_seconds: float, cal_epochs: float, seconds: float, safety: float,
                max_epochs: float, rounds: int = 1) -> float | None:
    """Epochs whose extrapolated wall time fits `safety * seconds`. The calibration trained every model for
    `cal_epochs` in `rounds` rounds of `workers` at once, in `wall_seconds`; its slowest model trained for
    `train_seconds` (the rest of a round, start-up, data and memory, does not grow with the epochs).
    None when no more than the calibration itself fits."""
    per_epoch = max(train_seconds, 1e-3) / cal_epochs
    fixed = max(0.0, wall_seconds / rounds - train_seconds)
    epochs = (safety * seconds / rounds - fixed) / per_epoch
    epochs = min(max_epochs, math.floor(epochs * 100) / 100)
    return epochs if epochs > cal_epochs else None


def cmd_epochs(args) -> int:
    summaries = [_read_json(p) for p in glob.glob(os.path.join(args.models, "*", "training_summary.json"))]
    summaries = [s for s in summaries if s]
    if not summaries:
        raise SystemExit(f"epochs: no training_summary.json under {args.models!r}")
    train = max(s["train_seconds"] for s in summaries)
    rounds = math.ceil(len(summaries) / max(1, args.workers))
    epochs = plan_epochs(train, args.wall, args.cal_epochs, args.seconds, args.safety,
                         _classifier_preset(args.preset).epochs, rounds)
    print(f"epochs: {len(summaries)} models in {rounds} round(s) took {args.wall:.0f} s, the slowest training "
          f"{train:.1f} s for {args.cal_epochs} epochs; {args.seconds:.0f} s left -> {epochs}", file=sys.stderr)
    print("calibration" if epochs is None else epochs)
    return 0


def cmd_fastest(args) -> int:
    """The parametric method to time beside the SPM: the benchmark's fastest with comparable UA, else its
    fastest, else `--default`."""
    report = _read_json(args.results)
    method = None
    if report:
        fastest = report.get("checks", {}).get("fastest_comparable_ua_method")
        if fastest:
            method = fastest["method"]
        else:
            rows = [r for r in report["rows"] if r["family"] == "parametric" and r["seconds"] > 0
                    and "retrain" not in r["method"]]
            if rows:
                method = min(rows, key=lambda r: r["seconds"])["method"]
    print(method.split(": ", 1)[1] if method else args.default)
    return 0


# ---------------------------------------------------------------------------------------------- summaries
def _stages(work: str) -> list[dict]:
    rows = []
    try:
        with open(os.path.join(work, "stages.tsv")) as f:
            for line in f:
                name, start, seconds, rc, limit = line.rstrip("\n").split("\t")
                rows.append({"stage": name, "start_s": int(start), "seconds": int(seconds), "exit": rc,
                             "limit_s": int(limit)})
    except OSError:
        pass
    return rows


def _stage_table(stages: list[dict]) -> list[str]:
    def status(r):
        return {"0": "ok", "124": "TIMED OUT", "137": "KILLED (time)", "skipped": "skipped (no time)"}.get(
            r["exit"], f"FAILED (exit {r['exit']})")

    lines = ["| stage | start (s) | seconds | limit (s) | status |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['stage']} | {r['start_s']} | {r['seconds']} | {r['limit_s']} | {status(r)} |" for r in stages]
    return lines


def _env_lines(env: dict | None) -> list[str]:
    if not env:
        return ["Environment: env.json missing (the env stage did not run)."]
    gpu = env.get("gpu", {}).get("name") or "no GPU"
    pk = env.get("packages", {})
    return [
        f"Machine: {gpu}, driver {env.get('driver') or '-'}, {env.get('cpu_count')} CPUs; torch {env.get('torch')} "
        f"(CUDA {env.get('torch_cuda') or '-'}, cuDNN {env.get('cudnn') or '-'}), transformers "
        f"{pk.get('transformers')}, diffusers {pk.get('diffusers')}, datasets {pk.get('datasets')}, accelerate "
        f"{pk.get('accelerate')}; Python {env.get('python')}; device {env.get('device')}; code {env.get('git') or '-'}.",
        f"Seeds: {json.dumps(env.get('seeds'))}.",
        f"Settings: {' '.join(f'{k}={v!r}' for k, v in env.get('variables', {}).items())}.",
    ]


def _accuracy(summary: dict) -> str:
    test = summary.get("test", {})
    parts = [f"{mode} {v['accuracy']:.2f}" for mode, v in test.items() if isinstance(v, dict) and "accuracy" in v]
    return ", ".join(parts) or "-"


def _models_table(root: str) -> list[str]:
    lines = ["| model | epochs | steps | train s | memory s | test accuracy (%) |", "|---|---:|---:|---:|---:|---|"]
    for path in sorted(glob.glob(os.path.join(root, "*", "training_summary.json"))):
        s = _read_json(path) or {}
        name = os.path.basename(os.path.dirname(path))
        lines.append(f"| {name} | {s.get('preset', {}).get('epochs')} | {s.get('global_step')} | "
                     f"{s.get('train_seconds')} | {s.get('memory_seconds', '-')} | {_accuracy(s)} |")
    return lines if len(lines) > 2 else ["(no trained model)"]


def _models_root(work: str) -> str | None:
    for stage in ("train", "calibrate"):
        try:
            with open(os.path.join(work, "logs", f"{stage}.log")) as f:
                roots = [line.split("models cached in ", 1)[1].strip() for line in f if "models cached in " in line]
        except OSError:
            continue
        if roots:
            return roots[-1]
    return None


def _log_tail(work: str, stage: str, lines: int = 12) -> list[str]:
    try:
        with open(os.path.join(work, "logs", f"{stage}.log"), errors="replace") as f:
            tail = f.read().splitlines()[-lines:]
    except OSError:
        return []
    return ["```", *tail, "```"]


def cmd_paper_summary(args) -> int:
    work = args.work
    env = _read_json(os.path.join(work, "env.json"))
    stages = _stages(work)
    try:
        epochs = open(os.path.join(work, "epochs_benchmarked.txt")).read().strip()
    except OSError:
        epochs = None
    root = _models_root(work)
    lines = ["# Paper-scale unlearning benchmark (bench/gpu/paper_scale.sh)", "", *_env_lines(env), "",
             f"Epochs of the benchmarked models: {epochs or '-'}; models in {root or '-'}.", "",
             "## Stages", "", *_stage_table(stages), ""]
    if root:
        lines += ["## Trained models", "", *_models_table(root), ""]
    out: dict = {"env": env, "stages": stages, "epochs": epochs, "models_root": root, "scenarios": {}}
    for path in sorted(glob.glob(os.path.join(work, "bench", "*", "results.json"))):
        report = _read_json(path)
        if not report:
            continue
        name = report["scenario"]["name"]
        out["scenarios"][name] = {"checks": report["checks"], "rows": report["rows"], "sizes": report["sizes"]}
        try:
            table = open(os.path.join(os.path.dirname(path), "results.md")).read().strip()
        except OSError:
            table = "(results.md missing)"
        lines += [f"## Scenario {name}", "", table, "", "Checks: `" + json.dumps(report["checks"]) + "`", ""]
    for r in stages:
        if r["exit"] != "0" and r["stage"].startswith(("bench-", "train", "calibrate")):
            lines += [f"Log tail of {r['stage']}:", "", *_log_tail(work, r["stage"]), ""]
    timing = _log_tail(work, "timing", 40)
    table = [line for line in timing if line.startswith(("|", "machine:"))]
    lines += ["## Deletion vs the fastest parametric method (bench/unlearning_time.py)", ""]
    lines += table if table else (timing or ["(not run)"])
    out["timing"] = table
    _write(args.out, "\n".join(lines) + "\n")
    _write(args.json, json.dumps(out, indent=1) + "\n")
    return 0


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value))


def _generator_rows(report: dict) -> list[str]:
    forget = report.get("forget_classes") or []
    before, after, retrained = report.get("before", {}), report.get("after", {}), report.get("retrained", {})

    def rate(section, name):
        return section.get("judge_accuracy", {}).get(name)

    lines = ["| | before | after forget | retrained oracle |", "|---|---:|---:|---:|",
             f"| judge accuracy, all classes (%) | {_fmt(before.get('judge_accuracy_mean'))} | "
             f"{_fmt((lambda a: sum(a.values()) / len(a) if a else None)(after.get('judge_accuracy', {})))} | "
             f"{_fmt((lambda a: sum(a.values()) / len(a) if a else None)(retrained.get('judge_accuracy', {})))} |",
             f"| judge accuracy, kept classes (%) | {_fmt(before.get('judge_accuracy_remaining_mean'))} | "
             f"{_fmt(after.get('judge_accuracy_remaining_mean'))} | "
             f"{_fmt(retrained.get('judge_accuracy_remaining_mean'))} |"]
    for name in forget:
        lines.append(f"| judge's {name} rate on requested {name} (%) | {_fmt(rate(before, name))} | "
                     f"{_fmt(rate(after, name))} | {_fmt(rate(retrained, name))} |")
    fid_keys = sorted(k for k in report if k.startswith("fid"))
    for key in fid_keys:
        if key != "fid_samples":
            lines.append(f"| {key} | {_fmt(report[key]) if not isinstance(report[key], dict) else json.dumps(report[key])} | | |")
    for section, name in ((before, "before"), (after, "after"), (retrained, "retrained")):
        for key in sorted(section):
            if key.startswith("fid"):
                lines.append(f"| {name}: {key} | {_fmt(section[key])} | | |")
    return lines


def cmd_gen_summary(args) -> int:
    work = args.work
    env = _read_json(os.path.join(work, "env.json"))
    stages = _stages(work)
    lines = ["# Generator on one GPU (bench/gpu/generator.sh)", "", *_env_lines(env), "", "## Stages", "",
             *_stage_table(stages), ""]
    out: dict = {"env": env, "stages": stages, "training": {}}
    lines += ["## Training", "", "| model | steps | minutes | last loss | folder MiB (no memory) |",
              "|---|---:|---:|---:|---:|"]
    for name in ("gen", "gen-oracle"):
        folder = os.path.join(work, name)
        log = os.path.join(folder, "train_log.jsonl")
        records = []
        try:
            with open(log) as f:
                records = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError):
            pass
        steps = [r for r in records if "step" in r]
        last = steps[-1] if steps else {}
        size = _folder_bytes(folder, skip_dirs={"memory", "checkpoints"}) / 2**20 if os.path.isdir(folder) else None
        minutes = last.get("elapsed_s", last.get("seconds"))
        minutes = minutes / 60 if isinstance(minutes, (int, float)) else None
        out["training"][name] = {"last": last, "folder_mib": size}
        lines.append(f"| {name} | {last.get('step', '-')} | {_fmt(minutes)} | {_fmt(last.get('loss'), 4)} | "
                     f"{_fmt(size)} |")
    lines.append("")
    report = _read_json(os.path.join(work, "eval", "report.json"))
    out["evaluation"] = report
    lines += ["## Evaluation (spm-hf evaluate-generator)", ""]
    if report:
        lines += [f"Settings: `{json.dumps(report.get('settings'))}`; forget policy "
                  f"{report.get('conventions', {}).get('forget_policy', '-')}.", "", *_generator_rows(report), ""]
        if "fid_computed" not in report and not any(k.startswith("fid") for k in report):
            lines += ["No FID here (no Inception weights on this machine): images.npz came back; on the CPU box "
                      "run `spm-hf evaluate-generator --fid-from <folder with images.npz and report.json>`.", ""]
    else:
        lines += ["(no report.json)", *_log_tail(work, "evaluate"), ""]
    app = _read_json(os.path.join(work, "app", "app_report.json"))
    out["app"] = app
    lines += ["## App: forget + grid", ""]
    if app:
        lines += ["| mode | first grid s | classification update s | grid update s | receipt |", "|---|---:|---:|---:|---|",
                  f"| {app.get('mode')} | {_fmt(app.get('first_grid_s'), 2)} | "
                  f"{_fmt(app.get('classification_update_s'), 3)} | {_fmt(app.get('grid_update_s'), 2)} | "
                  f"{app.get('receipt', '-')} |", "", f"Machine: {app.get('machine')}.", ""]
    else:
        lines += ["(no app report)", *_log_tail(work, "app"), ""]
    parts = _read_json(os.path.join(work, "model_parts.json"))
    out["model_parts"] = parts
    if parts:
        lines += [f"Model: {parts['note']}", ""]
    for r in stages:
        if r["exit"] not in ("0", "skipped") and r["stage"] not in ("app",):
            lines += [f"Log tail of {r['stage']}:", "", *_log_tail(work, r["stage"]), ""]
    _write(args.out, "\n".join(lines) + "\n")
    _write(args.json, json.dumps(out, indent=1) + "\n")
    return 0


# ---------------------------------------------------------------------------------------------- generator
def cmd_gen_preset(args) -> int:
    """The first of --candidates the generator trainer knows (its presets are being renamed)."""
    known = _generator_preset_names()
    for name in args.candidates:
        if name in known:
            print(name)
            return 0
    print(f"gen-preset: none of {args.candidates} is a generator preset; the trainer has {known}", file=sys.stderr)
    return 1


MODEL_SKIP_DIRS = {"memory", "checkpoints"}  # the memory is the training images: rebuilt from the data


def cmd_model_parts(args) -> int:
    """The model folder without its memory as a tar, split into parts that each come back from the device."""
    folder = args.model.rstrip("/")
    size = _folder_bytes(folder, skip_dirs=MODEL_SKIP_DIRS)
    note = {"model": folder, "bytes_without_memory": size, "parts": []}
    if size > args.max_mb * 2**20:
        note["note"] = (f"{folder} is {size / 2**20:.1f} MiB without its memory, over MODEL_MAX_MB={args.max_mb}: "
                        "not copied")
    else:
        os.makedirs(args.parts, exist_ok=True)
        tar_path = os.path.join(args.parts, "model.tar")
        with tarfile.open(tar_path, "w") as tar:
            tar.add(folder, arcname=os.path.basename(folder),
                    filter=lambda t: None if set(t.name.split("/")[1:]) & MODEL_SKIP_DIRS else t)
        with open(tar_path, "rb") as f:
            k = 0
            while chunk := f.read(MAX_FILE_BYTES - 2**20):
                part = f"{tar_path}.part{k:02d}"
                with open(part, "wb") as out:
                    out.write(chunk)
                note["parts"].append(os.path.basename(part))
                k += 1
        os.remove(tar_path)
        note["note"] = (f"{folder} without its memory ({size / 2**20:.1f} MiB) in {len(note['parts'])} part(s): "
                        "`cat model.tar.part* > model.tar && tar xf model.tar`")
    _write(args.note, json.dumps(note, indent=1) + "\n")
    print(note["note"])
    return 0


# ---------------------------------------------------------------------------------------------- pack
def _folder_bytes(folder: str, skip_dirs=()) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in skip_dirs]
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in filenames
                     if os.path.isfile(os.path.join(dirpath, f)))
    return total


def _tar_members(work: str, out: str) -> list[tuple[str, int]]:
    members = []
    out = os.path.abspath(out)
    for dirpath, dirnames, filenames in os.walk(work):
        if os.path.abspath(dirpath).startswith(out):
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d not in TAR_EXCLUDE_DIRS and not d.startswith(("cache", "."))
                       and ".tmp-" not in d]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name.endswith(TAR_EXCLUDE_SUFFIXES) or not os.path.isfile(path) or os.path.islink(path):
                continue
            members.append((path, os.path.getsize(path)))
    # The cached models' summaries are small and say how each model trained: keep them.
    for path in glob.glob(os.path.join(work, "cache*", "*", "*", "training_summary.json")):
        members.append((path, os.path.getsize(path)))
    return members


def cmd_pack(args) -> int:
    """results.tgz of the small files under --work, then the --loose files, within the limits."""
    os.makedirs(args.out, exist_ok=True)
    loose = [p for p in args.loose if os.path.isfile(p)]
    dropped = []
    members = sorted(_tar_members(args.work, args.out), key=lambda m: m[1])
    tgz = os.path.join(args.out, "results.tgz")
    budget = MAX_FILE_BYTES
    while True:
        with tarfile.open(tgz, "w:gz") as tar:
            for path, _ in members:
                tar.add(path, arcname=os.path.relpath(path, args.work))
        if os.path.getsize(tgz) <= budget or not members:
            break
        path, _ = members.pop()  # the largest member goes first
        dropped.append(os.path.relpath(path, args.work))
    total, kept = os.path.getsize(tgz), []
    for path in loose:
        size = os.path.getsize(path)
        if len(kept) + 1 >= MAX_FILES or size > MAX_FILE_BYTES or total + size > MAX_TOTAL_BYTES:
            dropped.append(f"{path} ({size / 2**20:.1f} MiB)")
            continue
        shutil.copy(path, os.path.join(args.out, os.path.basename(path)))
        total += size
        kept.append(os.path.basename(path))
    print(f"pack: results.tgz ({os.path.getsize(tgz) / 2**20:.2f} MiB, {len(members)} files) + {kept}; "
          f"{total / 2**20:.1f} MiB in all" + (f"; left out: {dropped}" if dropped else ""))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("env")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--var", nargs="*", default=[])
    p.set_defaults(func=cmd_env)
    p = sub.add_parser("warm-data")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--dataset")
    p.set_defaults(func=cmd_warm_data)
    p = sub.add_parser("epochs")
    p.add_argument("--models", required=True)
    p.add_argument("--cal-epochs", type=float, required=True)
    p.add_argument("--wall", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--safety", type=float, default=0.75)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--preset", required=True)
    p.set_defaults(func=cmd_epochs)
    p = sub.add_parser("fastest")
    p.add_argument("--results", required=True)
    p.add_argument("--default", default="GA")
    p.set_defaults(func=cmd_fastest)
    for name, func in (("paper-summary", cmd_paper_summary), ("gen-summary", cmd_gen_summary)):
        p = sub.add_parser(name)
        p.add_argument("--work", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--json", required=True)
        p.set_defaults(func=func)
    p = sub.add_parser("gen-preset")
    p.add_argument("--candidates", nargs="+", required=True)
    p.set_defaults(func=cmd_gen_preset)
    p = sub.add_parser("model-parts")
    p.add_argument("--model", required=True)
    p.add_argument("--parts", required=True)
    p.add_argument("--max-mb", type=float, default=40)
    p.add_argument("--note", required=True)
    p.set_defaults(func=cmd_model_parts)
    p = sub.add_parser("pack")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--loose", nargs="*", default=[])
    p.set_defaults(func=cmd_pack)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
