"""Pack what the GPU scripts need and the device machine lacks into `carry` folders of at most 64 MiB.

The device machine receives a copy of the working tree plus the ignored paths a call names in `carry`,
64 MiB in all per call, and has no network. It lacks CIFAR-10 (137 MB of parquet), the judge's weights and
some packages (diffusers, datasets and their small dependencies; transformers is older than pyproject's pin;
gradio and its dependencies with --app). This script splits them into `outputs/gpu-carry/part1 .. partN`
(outputs/ is git-ignored), each small enough to travel with the tree, and prints the calls: parts 1..N-1
each in a short call, back to back (a warm machine keeps ignored files between calls; it stays warm about
30 s), then the script itself in a call that carries the last part. On the device, `bench/gpu/common.sh`
runs `stage.py --check` first and stops with a clear message when a part is missing (the machine went back
between calls), then installs the wheels and links the data.

    python bench/gpu/stage.py                        # wheels + cifar10 + judge -> outputs/gpu-carry/part*
    python bench/gpu/stage.py --app                  # also gradio and gradio_client (bench/gpu/generator.sh)
    python bench/gpu/stage.py --dest /tmp/x --plan   # sizes and calls only, nothing written
    python bench/gpu/stage.py --check                # on the device: are all parts there?

Stdlib only (plus pip for the downloads), so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CARRY_LIMIT = 64 * 2**20
MARGIN = 2 * 2**20
# Distributions to carry, at this machine's versions (what the tests ran with).
CORE_PACKAGES = ("diffusers", "datasets", "transformers")
APP_PACKAGES = ("gradio", "gradio_client")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
# The device image's packages, when its description (KINDS.md) is not readable here.
DEVICE_PACKAGES_FALLBACK = {
    "accelerate", "aiofiles", "anyio", "certifi", "charset-normalizer", "click", "filelock", "fsspec", "h11",
    "hf-xet", "httpcore", "httpx", "huggingface-hub", "idna", "jinja2", "markdown-it-py", "markupsafe", "mdurl",
    "numpy", "packaging", "pandas", "pillow", "psutil", "pyarrow", "pygments", "python-dateutil", "pytz", "pyyaml",
    "regex", "requests", "rich", "safetensors", "scikit-learn", "scipy", "shellingham", "six", "tokenizers", "torch",
    "tqdm", "typer", "typing-extensions", "urllib3", "xxhash", "zipp", "matplotlib", "torchvision", "tzdata",
}
KINDS_FILE = "/work/.library/device/KINDS.md"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def device_packages() -> set[str]:
    try:
        text = open(KINDS_FILE).read()
        line = re.search(r"Packages: (.+?)\.\s*$", text, re.M).group(1)
        return {normalize(n.strip()) for n in line.split(",") if n.strip()}
    except (OSError, AttributeError):
        return set(DEVICE_PACKAGES_FALLBACK)


def wheel_name(path: str) -> str:
    return normalize(os.path.basename(path).split("-")[0])


def download_wheels(cache: str, packages: list[str], keep: set[str]) -> list[str]:
    """pip download `packages` (pinned to this machine's versions) with their dependencies for the device's
    Python 3.12 / x86-64, then keep the ones the device lacks (or whose version matters: `keep`)."""
    os.makedirs(cache, exist_ok=True)
    pins = []
    for name in packages:
        try:
            pins.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            pins.append(name)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "-d", cache, *[a for p in PLATFORMS for a in ("--platform", p)],
           "--platform", "any", *pins]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    have = device_packages() - keep
    chosen: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(cache, "*.whl"))):
        name = wheel_name(path)
        if name in have:
            continue
        chosen[name] = path  # one version per distribution: the sorted last (pip keeps earlier downloads)
    return sorted(chosen.values())


def tree_bytes() -> int:
    """What travels without `carry`: tracked files and untracked files git does not ignore."""
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    paths = [p for p in out.decode().split("\0") if p]
    return sum(os.path.getsize(os.path.join(ROOT, p)) for p in paths if os.path.isfile(os.path.join(ROOT, p)))


def shared_root() -> str | None:
    """The folder holding data/ and models/: `$SPM_HF_DATA`'s parent, else `../shared` beside the checkout."""
    env = os.environ.get("SPM_HF_DATA")
    candidate = os.path.dirname(os.path.abspath(env)) if env else os.path.join(os.path.dirname(ROOT), "shared")
    return candidate if os.path.isdir(os.path.join(candidate, "data")) else None


def plan_parts(items: list[tuple[str, str, int]], capacity: int) -> list[list[tuple[str, str, int]]]:
    """First-fit decreasing: (name in part, source, bytes) items into parts of at most `capacity` bytes."""
    parts: list[list] = []
    for item in sorted(items, key=lambda i: -i[2]):
        if item[2] > capacity:
            raise SystemExit(f"{item[1]} ({item[2] / 2**20:.1f} MiB) is larger than a part ({capacity / 2**20:.1f} MiB)")
        for part in parts:
            if sum(i[2] for i in part) + item[2] <= capacity:
                part.append(item)
                break
        else:
            parts.append([item])
    return parts


def write_parts(dest: str, parts) -> None:
    for old in glob.glob(os.path.join(dest, "part*")):
        shutil.rmtree(old)
    for k, part in enumerate(parts, start=1):
        folder = os.path.join(dest, f"part{k}")
        for name, source, _ in part:
            target = os.path.join(folder, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                os.link(source, target)  # a hard link is a plain file: it travels, and costs no disk here
            except OSError:
                shutil.copyfile(source, target)
        manifest = {"part": k, "parts": len(parts), "files": [{"path": n, "bytes": b} for n, _, b in part]}
        with open(os.path.join(folder, "MANIFEST.json"), "w") as f:
            json.dump(manifest, f, indent=1)


def check(dest: str) -> int:
    manifests = sorted(glob.glob(os.path.join(dest, "part*", "MANIFEST.json")))
    if not manifests:
        print(f"stage --check: no parts under {dest}")
        return 1
    declared, found, problems = None, set(), []
    for path in manifests:
        with open(path) as f:
            manifest = json.load(f)
        declared = manifest["parts"]
        found.add(manifest["part"])
        folder = os.path.dirname(path)
        for entry in manifest["files"]:
            file = os.path.join(folder, entry["path"])
            if not os.path.isfile(file) or os.path.getsize(file) != entry["bytes"]:
                problems.append(f"{file} missing or of the wrong size")
    missing = sorted(set(range(1, declared + 1)) - found)
    if missing:
        problems.append(f"parts {missing} of {declared} are not on this machine: it was not kept warm between "
                        "the calls that carried them; carry them again, back to back (see stage.py's plan)")
    for p in problems:
        print(f"stage --check: {p}")
    if not problems:
        print(f"stage --check: all {declared} parts present")
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=os.path.join(ROOT, "outputs", "gpu-carry"))
    parser.add_argument("--datasets", nargs="*", default=["cifar10"])
    parser.add_argument("--no-judge", action="store_true")
    parser.add_argument("--no-wheels", action="store_true")
    parser.add_argument("--app", action="store_true", help="also carry gradio and gradio_client with their needs")
    parser.add_argument("--plan", action="store_true", help="print the parts and calls, write nothing")
    parser.add_argument("--check", action="store_true", help="on the device: verify every part arrived")
    parser.add_argument("--script", default="bench/gpu/paper_scale.sh", help="the script the last call runs")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.dest)

    items = []
    shared = shared_root()
    for dataset in args.datasets:
        folder = os.path.join(shared or "", "data", dataset)
        files = sorted(glob.glob(os.path.join(folder, "*.parquet")) + glob.glob(os.path.join(folder, "README.md")))
        if not files:
            raise SystemExit(f"--datasets {dataset}: no parquet files in {folder!r} (set SPM_HF_DATA)")
        items += [(f"{dataset}/{os.path.basename(f)}", f, os.path.getsize(f)) for f in files]
    if not args.no_judge:
        judge = os.environ.get("SPM_HF_JUDGE") or os.path.join(shared or "", "models", "cifar10-resnet-judge",
                                                                 "resnet56.safetensors")
        if not os.path.isfile(judge):
            raise SystemExit(f"judge weights not found at {judge!r} (set SPM_HF_JUDGE, or --no-judge)")
        items.append(("judge/resnet56.safetensors", judge, os.path.getsize(judge)))
    if not args.no_wheels:
        packages = list(CORE_PACKAGES) + (list(APP_PACKAGES) if args.app else [])
        # transformers is on the device, older than pyproject's pin: carry ours anyway.
        wheels = download_wheels(os.path.join(args.dest, "_download"), packages, keep={"transformers"})
        print("wheels the device lacks:", ", ".join(os.path.basename(w) for w in wheels))
        items += [(f"wheels/{os.path.basename(w)}", w, os.path.getsize(w)) for w in wheels]

    tree = tree_bytes()
    capacity = CARRY_LIMIT - tree - MARGIN
    parts = plan_parts(items, capacity)
    rel = os.path.relpath(args.dest, ROOT)
    if rel.startswith(".."):
        print(f"note: {args.dest} is outside the checkout, so it cannot travel; the calls below are only a plan")
    print(f"working tree {tree / 2**20:.1f} MiB; part capacity {capacity / 2**20:.1f} MiB; {len(items)} files, "
          f"{sum(i[2] for i in items) / 2**20:.1f} MiB in {len(parts)} parts")
    for k, part in enumerate(parts, start=1):
        kinds = sorted({n.split("/")[0] for n, _, _ in part})
        print(f"  part{k}: {sum(i[2] for i in part) / 2**20:.1f} MiB ({len(part)} files: {', '.join(kinds)})")
    if not args.plan:
        write_parts(args.dest, parts)
        print(f"wrote {args.dest}/part1..part{len(parts)}")
    print("\nDevice calls, back to back (each within ~30 s of the last, so the machine stays warm):")
    for k in range(1, len(parts)):
        print(f'  run(command="python3 bench/gpu/stage.py --check --dest {rel}; true", carry=["{rel}/part{k}"], '
              'timeout_s=60)')
    carry_var = "" if rel == os.path.join("outputs", "gpu-carry") else f"CARRY={rel} "
    print(f'  run(command="{carry_var}bash {args.script}", carry=["{rel}/part{len(parts)}"], timeout_s=600)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
