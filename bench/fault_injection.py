#!/usr/bin/env python
"""Kill model saves with SIGKILL and check that no folder is ever left half-written or holding forgotten data.

    python bench/fault_injection.py [--kills 50] [--rounds 20] [--scale ci|quickstart] [--seed 0] [--out DIR]

For each model kind (`SPMForImageClassification`, `SPMDiffusionPipeline`):

* **Kills at random instants.** A folder holds the model (the *old* state). A forked child loads it, forgets
  one class and saves into the same folder (the *new* state), or, every other trial, saves the old state
  again (so what a killed save leaves behind still holds the class); once the child is about to save, the
  parent waits a random time, uniform in [0, 1.25 x the measured save time], and sends SIGKILL; trials go
  on until `--kills` of them (50) landed while the child was still saving (at most 4x as many). Then the
  parent loads the folder: it must load, and its memory digest must be the old or the new one exactly,
  with a model card that names that digest. Next a normal save of the new state (load, forget, save) must
  leave no file anywhere beside or inside the folder that holds a forgotten row's value or id, and no
  temporary file or folder.
* **Kills at every step.** The same (both kinds of save), but the child dies right before its k-th rename,
  exchange, link or removal (one rmtree counts as one step), for every k of a save: the instants between
  the steps are the ones where a save that swaps files one by one leaves a mix.
* **Concurrent writers.** Two forked children load the same folder, both finish loading before either
  forgets, then forget different classes and save. A save refused because the folder changed since it was
  loaded (`spm_hf.hub.FolderChangedError`) is retried the way a user would: reload, forget, save. At the end
  every class a child reports as saved must be forgotten in the folder: anything else is a lost deletion.

`--scale ci` uses the test suite's tiny models (60 x 16 floats; 30 images of 3x8x8); `--scale quickstart`
uses quickstart-size memories: 50,000 x 128 floats (a `resnet-small` classifier) and 50,000 28x28 images
(the `unet-mnist-cpu` UNet). Prints a table headed by the machine (platform, cpu count, how folders are swapped);
with `--out` also writes it as `fault_injection.md` and the counts as `fault_injection.json`.
Linux and macOS only (fork, SIGKILL).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

import torch
from transformers.utils import logging as transformers_logging

from spm_hf import SampleMemory, SPMConfig, SPMForImageClassification
from spm_hf import files as spm_files
from spm_hf import hub as spm_hub
from spm_hf.generation import ImageSampleMemory, SPMDiffusionPipeline, SPMUNet2DModel, make_pipeline


# Older spm_hf has no such error: then nothing is ever refused, and lost deletions show in the counts.
FolderChangedError = getattr(spm_hub, "FolderChangedError", ())
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# What a step is, for the kills at every step: the namespace operations a save makes.
STEP_FUNCTIONS = [(os, "replace"), (os, "rename"), (os, "link"), (os, "unlink"), (os, "remove"), (os, "rmdir"),
                  (shutil, "rmtree"), (spm_files, "exchange_directories")]
NEEDLES_PER_KIND = 16  # forgotten rows (and ids) whose bytes are searched for in every file


@dataclass
class ModelKind:
    """One model kind under test: its pristine object, how to load it, what to forget."""

    name: str
    pristine: object
    load: object  # folder -> model
    forget_class: str
    race_classes: tuple[str, str]
    digest_old: str = ""
    digest_new: str = ""
    needles: list[bytes] = field(default_factory=list)

    def __post_init__(self):
        memory = memory_of(self.pristine)
        self.digest_old = memory.digest()
        after = memory.copy()
        after.forget(classes=[self.forget_class])
        self.digest_new = after.digest()
        label = memory.class_index(self.forget_class)
        rows = torch.nonzero(memory.labels == label).flatten().tolist()
        picked = random.Random(0).sample(rows, min(NEEDLES_PER_KIND, len(rows)))
        self.needles = [memory.values[r].contiguous().numpy().tobytes() for r in picked]
        self.needles += [json.dumps(memory.ids[r]).encode() for r in picked]


def memory_of(obj) -> SampleMemory:
    memory = obj.memory
    return getattr(memory, "sample_memory", memory)


# ---------------------------------------------------------------------- models
def build_classifier(scale: str) -> ModelKind:
    if scale == "ci":
        n, classes, encoder = 60, CIFAR_CLASSES[:5], "resnet-tiny"
    else:
        n, classes, encoder = 50_000, CIFAR_CLASSES, "resnet-small"
    config = SPMConfig(encoder=encoder, id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)})
    torch.manual_seed(0)
    model = SPMForImageClassification(config).eval()
    g = torch.Generator().manual_seed(0)
    memory = SampleMemory(classes, (config.embed_dim,))
    memory.add([f"train/{i:05d}" for i in range(n)], torch.arange(n) % len(classes),
               torch.randn(n, config.embed_dim, generator=g))
    model.set_memory(memory)
    return ModelKind("classifier", model, SPMForImageClassification.from_pretrained, "cat", ("bird", "deer"))


def build_generator(scale: str) -> ModelKind:
    if scale == "ci":
        n, names, architecture = 30, ["ant", "bee", "cow"], "unet-tiny"
    else:
        n, names, architecture = 50_000, [str(d) for d in range(10)], "unet-mnist-cpu"
    torch.manual_seed(0)
    unet = SPMUNet2DModel.from_architecture(architecture, num_class_embeds=len(names)).eval()
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    memory = ImageSampleMemory.from_images(images, torch.arange(n) % len(names), [f"train/{i:05d}" for i in range(n)],
                                           names)
    pipe = make_pipeline(unet, memory)
    pipe.set_progress_bar_config(disable=True)

    def load(folder):
        loaded = SPMDiffusionPipeline.from_pretrained(folder)
        loaded.set_progress_bar_config(disable=True)
        return loaded

    return ModelKind("generator", pipe, load, names[-1], (names[0], names[1]))


# ---------------------------------------------------------------------- one trial
def reset(kind: ModelKind, root: str) -> str:
    """A fresh `root/work/model` holding the old state (copied from a template saved once)."""
    template = os.path.join(root, "template")
    if not os.path.isdir(template):
        copy.deepcopy(kind.pristine).save_pretrained(template)
    work = os.path.join(root, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    folder = os.path.join(work, "model")
    shutil.copytree(template, folder)
    return folder


def install_step_killer(die_at: int | None, counter: list[int]) -> None:
    """Count namespace steps (one rmtree is one step); SIGKILL this process right before step `die_at`."""
    nested = [False]
    for module, name in STEP_FUNCTIONS:
        original = getattr(module, name, None)
        if original is None:
            continue

        def step(*args, _original=original, _name=name, **kwargs):
            if nested[0]:
                return _original(*args, **kwargs)
            counter[0] += 1
            if counter[0] == die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if _name != "rmtree":
                return _original(*args, **kwargs)
            nested[0] = True
            try:
                return _original(*args, **kwargs)
            finally:
                nested[0] = False

        setattr(module, name, step)


def save_in_child(kind: ModelKind, folder: str, die_at: int | None = None, count_steps: bool = False,
                  forget: bool = True):
    """Fork a child that loads `folder`, forgets (if `forget`), writes b"s" and saves. Returns (pid, read end
    of its pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        return pid, r
    os.close(r)
    code = 0
    try:
        obj = kind.load(folder)
        if forget:
            obj.forget(classes=[kind.forget_class])
        counter = [0]
        if die_at is not None or count_steps:
            install_step_killer(die_at, counter)
        os.write(w, b"s")
        start = time.perf_counter()
        obj.save_pretrained(folder)
        os.write(w, struct.pack("di", time.perf_counter() - start, counter[0]))
    except BaseException:
        traceback.print_exc()
        code = 1
    os._exit(code)


def wait_started(pid: int, r: int) -> None:
    if os.read(r, 1) != b"s":
        _, status = os.waitpid(pid, 0)
        raise RuntimeError(f"the saving child failed before its save (status {status}); see its traceback above")


def finish(pid: int, r: int) -> tuple[bool, float | None, int | None]:
    """Wait for the child: (killed, save seconds, steps) - the last two when it completed."""
    _, status = os.waitpid(pid, 0)
    data = b""
    while chunk := os.read(r, 64):
        data += chunk
    os.close(r)
    if os.WIFSIGNALED(status):
        return True, None, None
    if os.WEXITSTATUS(status) != 0:
        raise RuntimeError(f"the saving child failed (exit {os.WEXITSTATUS(status)}); see its traceback above")
    seconds, steps = struct.unpack("di", data)
    return False, seconds, steps


def inspect_folder(kind: ModelKind, folder: str) -> tuple[str, str]:
    """("old" | "new" | "other" | "mixed" | "unloadable", detail) for the folder as a reader finds it."""
    try:
        obj = kind.load(folder)
    except Exception as e:  # what a user would get: the point is to count it
        return "unloadable", f"{type(e).__name__}: {e}"[:300]
    digest = memory_of(obj).digest()
    state = {kind.digest_old: "old", kind.digest_new: "new"}.get(digest, "other")
    card = os.path.join(folder, "README.md")
    if state != "other" and (not os.path.exists(card) or digest not in open(card, encoding="utf-8").read()):
        return "mixed", f"the memory is the {state} state but README.md does not name its digest"
    return state, ""


def save_new_state(kind: ModelKind, folder: str, loadable: bool) -> None:
    """A normal, successful save of the new state into `folder` (load, forget, save)."""
    if loadable:
        obj = kind.load(folder)
    else:  # nothing to load: start from the pristine model and overwrite whatever is there
        obj = copy.deepcopy(kind.pristine)
    obj.forget(classes=[kind.forget_class])
    if loadable or not FolderChangedError:
        obj.save_pretrained(folder)
    else:
        obj.save_pretrained(folder, overwrite=True)


def leftovers(kind: ModelKind, folder: str) -> tuple[list[str], list[str]]:
    """(files under the folder's parent holding a forgotten value or id, entries beside the folder and
    hidden temporaries inside it)."""
    work = os.path.dirname(folder)
    leaked, temporaries = [], []
    for dirpath, dirnames, filenames in os.walk(work):
        for name in filenames + dirnames:
            if dirpath != work and name.startswith(".tmp"):
                temporaries.append(os.path.relpath(os.path.join(dirpath, name), work))
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                data = f.read()
            if any(needle in data for needle in kind.needles):
                leaked.append(os.path.relpath(path, work))
    beside = sorted(e for e in os.listdir(work) if e != os.path.basename(folder))
    return leaked, beside + sorted(temporaries)


@dataclass(kw_only=True)
class Counts:
    kind: str
    failures: list[str] = field(default_factory=list)

    def note(self, problem: str) -> None:
        if len(self.failures) < 10:  # the first few are enough to see what went wrong
            self.failures.append(problem)


@dataclass(kw_only=True)
class KillCounts(Counts):
    mode: str
    trials: int = 0
    killed: int = 0
    old: int = 0
    new: int = 0
    unloadable: int = 0
    mixed: int = 0  # a state that is neither old nor new, or a card that does not match the memory
    leaked_files: int = 0
    stale_entries: int = 0
    save_seconds: list[float] = field(default_factory=list)

    def add(self, killed: bool, state: str, detail: str, leaked: list[str], beside: list[str]) -> None:
        self.trials += 1
        self.killed += killed
        if state in ("old", "new"):
            setattr(self, state, getattr(self, state) + 1)
        elif state == "unloadable":
            self.unloadable += 1
        else:
            self.mixed += 1
        self.leaked_files += len(leaked)
        self.stale_entries += len(beside)
        for problem in ([f"{state}: {detail}"] if detail else []) + [f"leaked: {p}" for p in leaked] + \
                [f"temporary left: {e}" for e in beside]:
            self.note(problem)

    @property
    def ok(self) -> bool:
        return not (self.unloadable or self.mixed or self.leaked_files or self.stale_entries)


def trial(kind: ModelKind, root: str, counts: KillCounts, delay: float | None = None, die_at: int | None = None,
          forget: bool = True) -> None:
    folder = reset(kind, root)
    pid, r = save_in_child(kind, folder, die_at=die_at, forget=forget)
    wait_started(pid, r)
    if delay is not None:
        time.sleep(delay)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed, _, _ = finish(pid, r)
    state, detail = inspect_folder(kind, folder)
    save_new_state(kind, folder, loadable=state != "unloadable")
    counts.add(killed, state, detail, *leftovers(kind, folder))


def measure_save(kind: ModelKind, root: str, repeats: int = 2) -> tuple[float, int]:
    """Median seconds of an unkilled child's save, and how many steps it makes."""
    seconds, steps = [], 0
    for _ in range(repeats):
        folder = reset(kind, root)
        pid, r = save_in_child(kind, folder, count_steps=True)
        wait_started(pid, r)
        _, s, steps = finish(pid, r)
        seconds.append(s)
    return statistics.median(seconds), steps


def random_kills(kind: ModelKind, root: str, kills: int, rng: random.Random) -> KillCounts:
    """Trials with a SIGKILL at a random instant until `kills` of them landed while the child was still
    saving (a kill that comes after the save finished tests nothing), at most 4 x `kills` trials."""
    save_seconds, _ = measure_save(kind, root)
    counts = KillCounts(kind=kind.name, mode="random instant", save_seconds=[save_seconds])
    i = 0
    while counts.killed < kills and i < 4 * kills:
        trial(kind, root, counts, delay=rng.uniform(0.0, 1.25 * save_seconds), forget=i % 2 == 0)
        i += 1
    return counts


def step_kills(kind: ModelKind, root: str, points: int | None = None) -> KillCounts:
    """Kill right before step k; every k of a save, or `points` of them spread evenly (first and last kept)."""
    save_seconds, steps = measure_save(kind, root, repeats=1)
    counts = KillCounts(kind=kind.name, mode=f"every step ({steps})", save_seconds=[save_seconds])
    ks = list(range(1, steps + 1))
    if points is not None and points < len(ks):
        ks = sorted({ks[round(i * (len(ks) - 1) / max(points - 1, 1))] for i in range(points)})
        counts.mode = f"{len(ks)} of {steps} steps"
    for k in ks:
        for forget in (True, False):
            trial(kind, root, counts, die_at=k, forget=forget)
    return counts


# ---------------------------------------------------------------------- concurrent writers
@dataclass(kw_only=True)
class RaceCounts(Counts):
    rounds: int = 0
    deletions_saved: int = 0
    lost_deletions: int = 0
    refused_saves: int = 0
    unloadable: int = 0


def race_round(kind: ModelKind, root: str, counts: RaceCounts, retries: int = 10) -> None:
    folder = reset(kind, root)
    go_r, go_w = os.pipe()
    children = []
    for cls in kind.race_classes:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            code = 0
            try:
                obj = kind.load(folder)
                os.write(w, b"l")
                os.read(go_r, 1)  # both children have loaded the same state before either forgets
                obj.forget(classes=[cls])
                refused, saved = 0, False
                for _ in range(retries):
                    try:
                        obj.save_pretrained(folder)
                        saved = True
                        break
                    except FolderChangedError:
                        refused += 1
                        obj = kind.load(folder)
                        obj.forget(classes=[cls])
                os.write(w, json.dumps({"class": cls, "saved": saved, "refused": refused}).encode())
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(w)
        children.append((pid, r))
    for pid, r in children:
        if os.read(r, 1) != b"l":
            raise RuntimeError(f"race child {pid} failed to load {folder}; see its traceback above")
    os.write(go_w, b"g" * len(children))
    reports = []
    for pid, r in children:
        data = b""
        while chunk := os.read(r, 4096):
            data += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise RuntimeError(f"race child {pid} failed (status {status}); see its traceback above")
        reports.append(json.loads(data))
    os.close(go_r)
    os.close(go_w)
    counts.rounds += 1
    try:
        remaining = memory_of(kind.load(folder)).class_counts()
    except Exception as e:  # two writers interleaved their files
        counts.unloadable += 1
        counts.note(f"round {counts.rounds}: the folder no longer loads: {type(e).__name__}: {e}"[:300])
        remaining = {}
    for report in reports:
        counts.refused_saves += report["refused"]
        if report["saved"]:
            counts.deletions_saved += 1
            if remaining and remaining[report["class"]] != 0:
                counts.lost_deletions += 1
                counts.note(f"round {counts.rounds}: {report['class']} was saved as forgotten but "
                            f"{remaining[report['class']]} samples are back")


def races(kind: ModelKind, root: str, rounds: int) -> RaceCounts:
    counts = RaceCounts(kind=kind.name)
    for _ in range(rounds):
        race_round(kind, root, counts)
    return counts


# ---------------------------------------------------------------------- report
def machine() -> str:
    swap = getattr(spm_files, "directory_swap_method", lambda: "files renamed one by one (no folder swap)")()
    return (f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"torch {torch.__version__}; folders swapped by: {swap}")


def table(kills: list[KillCounts], race_counts: list[RaceCounts], scale: str) -> str:
    lines = [f"Machine: {machine()}", f"Scale: {scale}", "",
             "| kind | kills at | trials | killed mid-save | old state | new state | unloadable | mixed | "
             "files with forgotten values | temporaries left | save (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in kills:
        lines.append(f"| {c.kind} | {c.mode} | {c.trials} | {c.killed} | {c.old} | {c.new} | {c.unloadable} | "
                     f"{c.mixed} | {c.leaked_files} | {c.stale_entries} | {statistics.median(c.save_seconds):.3f} |")
    lines += ["", "| kind | rounds of two writers | deletions saved | lost deletions | saves refused (then retried) | "
              "unloadable afterwards |", "|---|---|---|---|---|---|"]
    for c in race_counts:
        lines.append(f"| {c.kind} | {c.rounds} | {c.deletions_saved} | {c.lost_deletions} | {c.refused_saves} | "
                     f"{c.unloadable} |")
    problems = [f"- {c.kind}, {c.mode}: {p}" for c in kills for p in c.failures]
    problems += [f"- {c.kind}, writers: {p}" for c in race_counts for p in c.failures]
    if problems:
        lines += ["", "First problems seen:", *problems]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="kills that land mid-save, at random instants, per model kind (default 50)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of two concurrent writers per kind (default 20)")
    parser.add_argument("--scale", choices=("ci", "quickstart"), default="ci")
    parser.add_argument("--kinds", nargs="+", choices=("classifier", "generator"), default=["classifier", "generator"])
    parser.add_argument("--no-step-kills", action="store_true", help="skip the kills at every step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=None, help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--out", default=None, help="also write fault_injection.md / .json here")
    args = parser.parse_args(argv)
    if not hasattr(os, "fork"):
        raise SystemExit("fault_injection.py needs os.fork and SIGKILL (Linux or macOS)")
    torch.set_num_threads(1)
    transformers_logging.disable_progress_bar()

    scratch = args.root or tempfile.mkdtemp(prefix="spm-fault-")
    rng = random.Random(args.seed)
    kills, race_counts = [], []
    try:
        for name in args.kinds:
            kind = (build_classifier if name == "classifier" else build_generator)(args.scale)
            root = os.path.join(scratch, name)
            print(f"{name}: {args.kills} random kills ...", flush=True)
            kills.append(random_kills(kind, root, args.kills, rng))
            if not args.no_step_kills:
                print(f"{name}: a kill before every step ...", flush=True)
                kills.append(step_kills(kind, root))
            print(f"{name}: {args.rounds} rounds of two writers ...", flush=True)
            race_counts.append(races(kind, root, args.rounds))
    finally:
        if args.root is None:
            shutil.rmtree(scratch, ignore_errors=True)
    text = table(kills, race_counts, args.scale)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        spm_files.write_atomic(os.path.join(args.out, "fault_injection.md"), text + "\n")
        spm_files.write_json(os.path.join(args.out, "fault_injection.json"), {
            "machine": machine(), "scale": args.scale,
            "kills": [vars(c) for c in kills],
            "races": [vars(c) for c in race_counts],
        })
    ok = all(c.ok for c in kills) and not any(c.lost_deletions or c.unloadable for c in race_counts)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
