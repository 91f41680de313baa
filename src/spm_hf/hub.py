"""Persistence and the Hub for both model kinds: atomic saves, model cards, push with history squashing.

`SPMHubMixin` gives `SPMForImageClassification` and `SPMDiffusionPipeline` one `save_pretrained`,
`write_model_card` and `push_to_hub`; each kind only says how it writes its files (`_save_files`), which card
it renders (`card_kind`) and where its memory sits in a saved folder.

Saving
    `save_pretrained(folder)` writes the whole folder (weights, config, memory, card) into a staging folder
    and swaps it in as one step (`spm_hf.files.atomic_directory`): a reader, or a writer killed at any
    instant, sees the old folder or the complete new one, and files of the user's own in the folder
    survive. Writers of one folder serialise through its lock, and a save refuses (`FolderChangedError`)
    when the memory on disk is no longer the one this object loaded from, or last saved to, that folder:
    another process saved there, and writing over it would undo its deletions (`overwrite=True` does it
    anyway). A model loaded from the Hub remembers the commit it was loaded from, and pushing back to that
    branch passes it as the commit's parent, so a push that came in between makes this one fail
    (`RepoChangedError`) instead of being overwritten.

Model cards
    The card (`README.md`) is rendered from the model's *current* state every time the model is saved
    or pushed: the memory's class counts, digest and `trained_on` split, the ledger summary (counts,
    dates, digests; never ids), the training recipe and the metrics recorded with the checkpoint.
    `save_pretrained` writes it, so after any `forget` the next save or push carries an updated card
    ("every forget updates it"). `forget()` itself writes nothing: a model in memory does not know a
    folder that is its own, and a save is what makes a deletion durable.
    `render_model_card(model)` renders it; pushing is separate (`push_folder` uploads a saved folder).
    Templates ship as package data in `spm_hf/hub_cards/` (classifier, generator, Space) and are rendered
    with `huggingface_hub.ModelCard.from_template` (jinja2). Where they cannot be found (a classifier
    loaded with `trust_remote_code` copies this module, not the templates) a warning says so and a short
    built-in card is written instead; without jinja2 no card is written (a warning says why).

Metrics
    Metrics come from `training_summary.json` (classifier), an evaluation report (generator) or
    `card_info["metrics"]`. A metric enters the `model-index` only if it describes the memory that is
    being saved: it names that memory's digest, or it names none and no sample was ever forgotten.
    Older numbers stay in the card's table, labelled as measured before the forget events.

Pushing and forgetting
    `push_folder` uploads a saved folder as one commit, replacing on the remote what a save replaces in a
    local folder (the model's own files and the folders it writes; a user's other files stay), never
    training state or pickles (`upload_paths`), through Git LFS (`lfs_transfer` says why). Then, if the
    memory's ledger records at least one forget event, it squashes the branch's history
    (`HfApi.super_squash_history`) and permanently deletes the LFS objects that no ref's head uses
    (`permanently_delete_lfs_files`): squashing rewrites the commits, but on the Hub LFS objects outlive
    the commits that referenced them. Without both, an older revision (or the LFS store) would still hold
    the deleted rows. `squash_history=False` skips it and warns (`ForgetNotPropagatedWarning`) when the
    ledger is not empty; so does `create_pr=True`, which opens a pull request and leaves the branch alone.
    Other branches, tags and pull requests are never rewritten: a warning names them when the ledger is
    not empty.

This module imports neither diffusers nor the rest of spm_hf beyond `.memory` and `.files` (it travels
with the classifier's remote code; transformers copies relative imports), and it must not contain
relative imports of subpackages.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.resources
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .files import atomic_directory, hub_cache_location, write_atomic, write_json
from .memory import MEMORY_CONFIG_NAME


logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
TRAINING_SUMMARY_NAME = "training_summary.json"  # written by `train_classifier`
GENERATOR_CONFIG_NAME = "training_config.json"  # written by `train_generator`
EVAL_REPORT_NAME = "eval_report.json"  # an `evaluate_generator` report kept beside a pipeline
TAGS = ["machine-unlearning", "semi-parametric", "spm_hf"]
DEFAULT_LICENSE = "apache-2.0"
# dataset name in spm_hf presets -> (Hub dataset id, display name)
DATASET_HUB_IDS = {"cifar10": ("uoft-cs/cifar10", "CIFAR-10"), "mnist": ("ylecun/mnist", "MNIST")}
TEMPLATES = {"classifier": "classifier.md", "generator": "generator.md", "space": "space.md"}


class ForgetNotPropagatedWarning(UserWarning):
    """A model with forget events was pushed without squashing the repository's history."""


class CardTemplateWarning(UserWarning):
    """The card templates (package data) were not found, or jinja2 is missing: a lesser card or none."""


class FolderChangedError(RuntimeError):
    """A save into a folder whose memory changed on disk since this object loaded from or saved to it."""


class RepoChangedError(RuntimeError):
    """A push to a Hub branch that has moved since the commit this model was loaded from."""


# ---------------------------------------------------------------------- templates
def templates_dir():
    """The folder holding the card templates: `$SPM_HF_CARD_TEMPLATES`, else `hub_cards/` inside the package
    this module belongs to (package data, read through `importlib.resources`, so a wheel or zip install
    works too); None where neither has them (a copy of this module in a remote-code folder)."""
    candidates = []
    if os.environ.get("SPM_HF_CARD_TEMPLATES"):
        candidates.append(Path(os.environ["SPM_HF_CARD_TEMPLATES"]))
    if __package__:
        with contextlib.suppress(ModuleNotFoundError, TypeError):
            candidates.append(importlib.resources.files(__package__) / "hub_cards")
    for candidate in candidates:
        if (candidate / TEMPLATES["classifier"]).is_file():
            return candidate
    return None


_FALLBACK_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A semi-parametric model (SPM, arXiv 2603.22870) made with `spm_hf`: its predictions read a deletable
sample memory. Forget with `model.forget(classes=[...])` or `model.forget(ids=[...])`, then
`model.push_to_hub(repo_id)`, which squashes the repository's history after any forget event.

Deletion removes samples from the memory and from every saved byte; the parameters were trained with the
deleted `trained_on` samples and are not retrained{% if gap %} (measured gap to retraining: {{ gap.text }}){% endif %}.

Memory: {{ memory.num_items }} samples ({{ memory.num_trained_on }} trained_on, {{ memory.num_memory_only }} memory_only), digest `{{ memory.digest }}`; per class: {% for n, c in memory.class_counts.items() %}{{ n }} {{ c }}{{ ", " if not loop.last else "" }}{% endfor %}.

Ledger: {{ ledger.num_events }} forget event{{ "s" if ledger.num_events != 1 else "" }}, {{ ledger.num_forgotten }} samples deleted (ids never listed).
{% for e in ledger.events %}
- {{ e.timestamp }}: {{ e.num_removed }} removed ({{ e.per_class }}), digest `{{ e.digest_before[:12] }}` -> `{{ e.digest_after[:12] }}`
{%- endfor %}

(The full card template, `spm_hf/hub_cards/`, was not found when this card was written.)
"""


def _render(kind: str, card_data, **context):
    from huggingface_hub import ModelCard, SpaceCard

    card_class = SpaceCard if kind == "space" else ModelCard
    folder = templates_dir()
    if folder is not None:
        template = (folder / TEMPLATES[kind]).read_text(encoding="utf-8")
        return card_class.from_template(card_data, template_str=template, **context)
    if kind == "space":
        raise FileNotFoundError("spm_hf/hub_cards/space.md not found; set SPM_HF_CARD_TEMPLATES")
    warnings.warn(
        f"the card templates (spm_hf/hub_cards/) are not beside {__name__} (a remote-code copy?): writing the "
        "short built-in card; install spm_hf, or set SPM_HF_CARD_TEMPLATES, for the full one",
        CardTemplateWarning, stacklevel=2,
    )
    return card_class.from_template(card_data, template_str=_FALLBACK_TEMPLATE, **context)


# ---------------------------------------------------------------------- context pieces
def memory_card_context(memory) -> dict:
    """Card facts about a `SampleMemory` (or anything exposing `sample_memory`): counts, flags, digest."""
    memory = getattr(memory, "sample_memory", memory)
    trained = int(memory.trained_on.sum().item()) if len(memory) else 0
    return {
        "num_items": len(memory),
        "num_trained_on": trained,
        "num_memory_only": len(memory) - trained,
        "digest": memory.digest(),
        "class_counts": memory.class_counts(),
        "value_shape": "x".join(str(s) for s in memory.value_shape),
        "value_dim": memory.value_shape[0] if len(memory.value_shape) == 1 else None,
    }


def ledger_card_context(memory) -> dict:
    """`SampleMemory.ledger_summary()` shaped for the card: counts, dates, digests, never ids."""
    memory = getattr(memory, "sample_memory", memory)
    summary = memory.ledger_summary()
    events = []
    for event in summary["events"]:
        per_class = event.get("removed_per_class") or {}
        events.append({
            "timestamp": event.get("timestamp", ""),
            "num_removed": event.get("num_removed", 0),
            "per_class": ", ".join(f"{k}: {v}" for k, v in per_class.items()) or "-",
            "num_trained_on": event.get("num_trained_on", 0),
            "num_memory_only": event.get("num_memory_only", 0),
            "digest_before": event.get("digest_before", ""),
            "digest_after": event.get("digest_after", ""),
        })
    return {"num_events": summary["num_events"], "num_forgotten": summary["num_forgotten"], "events": events}


def _gap_context(gap) -> dict | None:
    """`card_info["gap_to_retrain"]`: a sentence, or a dict with metric/value/seed_floor/forgotten/note."""
    if not gap:
        return None
    if isinstance(gap, str):
        return {"text": gap}
    text = f"{gap.get('metric', 'gap')} = {gap.get('value')}"
    if gap.get("forgotten"):
        text += f" after forgetting {gap['forgotten']}"
    if gap.get("seed_floor") is not None:
        text += f"; seed floor (two retrained models, different seeds) {gap['seed_floor']}"
    if gap.get("note"):
        text += f". {gap['note']}"
    return {"text": text, **gap}


def _metrics_context(metrics: list[dict], memory) -> tuple[list[dict], list]:
    """Table rows for every metric, and `EvalResult`s for those that describe the current memory."""
    from huggingface_hub import EvalResult

    memory = getattr(memory, "sample_memory", memory)
    digest, pristine = memory.digest(), not memory.ledger
    rows, results = [], []
    for m in metrics:
        current = m.get("memory_digest") == digest if m.get("memory_digest") else pristine
        rows.append({
            "name": m.get("name", m["type"]),
            "value": m["value"],
            "split": m.get("split", "test"),
            "when": "this memory" if current else "an earlier memory (before a forget event)",
        })
        if current and isinstance(m["value"], (int, float)) and m.get("dataset"):
            dataset_id, dataset_name = m["dataset"]
            results.append(EvalResult(
                task_type=m["task"], dataset_type=dataset_id, dataset_name=dataset_name,
                dataset_split=m.get("split", "test"), metric_type=m["type"], metric_value=m["value"],
                metric_name=m.get("name"),
            ))
    return rows, results


def _stale_note(rows: list[dict]) -> str:
    if not any(r["when"] != "this memory" for r in rows):
        return ""
    return ("Rows marked 'an earlier memory' were measured before a forget event in the ledger: they describe "
            "the model before that deletion, not this one, and are kept out of the model-index. Re-evaluate to "
            "report current numbers.")


def _license_text(license: str, datasets: list[str]) -> str:
    text = f"The weights and code are released under `{license}`."
    if datasets:
        text += (
            f" The sample memory holds data derived from {', '.join(datasets)}; its use follows that dataset's "
            "terms."
        )
    return text


def read_json(path) -> dict | None:
    """A JSON object from `path`, or None if the file is absent or not a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def find_sidecar(name: str, *sources, allow_network: bool = False, token=None) -> dict | None:
    """The first JSON `name` found in `sources`: local folders, or Hub repo ids (looked up in the cache
    only, unless `allow_network`)."""
    for source in sources:
        if not source:
            continue
        source = os.fspath(source)
        if os.path.isdir(source):
            found = read_json(os.path.join(source, name))
        else:
            found = _hub_json(source, name, allow_network=allow_network, token=token)
        if found is not None:
            return found
    return None


def _hub_json(repo_id: str, name: str, allow_network: bool, token=None) -> dict | None:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    if repo_id.count("/") != 1:
        return None
    try:
        path = try_to_load_from_cache(repo_id, name)
        if not isinstance(path, str) and allow_network:
            path = hf_hub_download(repo_id, name, token=token)
    except Exception as e:  # absent file, unknown repo, offline: the card simply has less to say
        logger.debug("no %s in %s: %s", name, repo_id, e)
        return None
    return read_json(path) if isinstance(path, str) else None


def _dataset_ids(dataset: str | None, hub_id: str | None = None) -> tuple[str, str] | None:
    """(Hub dataset id, display name) of a training dataset: a known name's, else the recorded Hub id's
    (`spm_hf.data.dataset_record`; None for a local folder of the user's own)."""
    if not dataset:
        return None
    return DATASET_HUB_IDS.get(str(dataset).lower()) or ((hub_id, hub_id) if hub_id else None)


def _output_dir_of(command: str, default: str) -> str:
    """The `--output-dir` of a recorded command line (the folder the card's later commands name)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return default
    for i, word in enumerate(words[:-1]):
        if word == "--output-dir":
            return words[i + 1]
        if word.startswith("--output-dir="):
            return word.split("=", 1)[1]
    return default


# ---------------------------------------------------------------------- classifier card
def classifier_card(model, *, summary: dict | None = None, card_info: dict | None = None, repo_id: str | None = None):
    """The `ModelCard` of an `SPMForImageClassification` in its current state.

    Args:
        summary: a `training_summary.json` dict (recipe + test accuracy at training time).
        card_info: optional extras: `license`, `datasets`, `title`, `metrics` (list of dicts with
            `type`, `value`, optional `name`, `split`, `dataset` = (hub id, name), `memory_digest`),
            `gap_to_retrain` (a sentence or a dict with `metric`, `value`, `seed_floor`, `forgotten`).
        repo_id: the repository the card is for (used in the snippets).
    """
    from huggingface_hub import ModelCardData

    card_info = dict(card_info or {})
    config = model.config
    memory = model.memory
    if memory is None:
        raise ValueError("this model has no sample memory: nothing to describe (build or attach one first)")
    summary = summary or {}
    preset = summary.get("preset") or {}
    dataset = _dataset_ids(preset.get("dataset"), (summary.get("data") or {}).get("hub_id"))
    datasets = card_info.get("datasets") or ([dataset[0]] if dataset else [])
    license = card_info.get("license", DEFAULT_LICENSE)
    repo_id = repo_id or card_info.get("repo_id") or "your-name/spm-classifier"

    metrics = list(card_info.get("metrics") or [])
    for mode, result in (summary.get("test") or {}).items():
        if isinstance(result, dict) and "accuracy" in result:
            metrics.append({
                "type": "accuracy", "name": f"test accuracy (%), {mode} memory mode", "value": result["accuracy"],
                "split": "test", "task": "image-classification", "dataset": dataset,
            })
    for m in metrics:
        m.setdefault("task", "image-classification")
        m.setdefault("dataset", dataset)
    rows, eval_results = _metrics_context(metrics, memory)

    recipe = {}
    if preset:
        for key in ("name", "dataset", "image_column", "label_column", "encoder", "epochs", "batch_size",
                    "learning_rate", "schedule", "support", "max_train_samples", "memory_samples",
                    "fusion_similarity", "head_steps", "seed"):
            if preset.get(key) is not None:
                recipe["preset" if key == "name" else key] = preset[key]
    for key in ("train_samples", "train_seconds", "device", "world_size", "weights_sha256"):
        if summary.get(key) is not None:
            recipe[key] = summary[key]
    output = "spm-classifier"
    commands = []
    if summary.get("command"):  # the command line the training ran (train_classifier records it)
        commands.append(summary["command"])
        output = _output_dir_of(summary["command"], output)
    elif preset.get("name"):
        command = f"spm-hf train-classifier --preset {preset['name']} --output-dir {output}"
        if preset.get("max_train_samples"):
            command += f" --max-train-samples {preset['max_train_samples']}"
        commands.append(command)
    else:
        commands.append(f"spm-hf train-classifier --preset <preset> --output-dir {output}  # recipe not recorded")
    emptied = [name for name, count in memory.class_counts().items() if count == 0]
    ledger = ledger_card_context(memory)
    if emptied:
        commands.append(f"spm-hf forget --model {output} --classes {' '.join(emptied)}")
    if _partial_removals(memory, emptied):
        commands.append(f"spm-hf forget --model {output} --ids-file <the ids that were deleted>")

    label_names = list(model.label_names)
    present = [n for n, c in memory.class_counts().items() if c]
    image_size = getattr(getattr(model, "image_processor", None), "size", {}) or {}
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="image-classification", license=license,
        tags=TAGS + ["image-classification"], datasets=datasets or None,
        metrics=["accuracy"] if eval_results else None,
        model_name=repo_id.split("/")[-1] if eval_results else None,
        eval_results=eval_results or None,
    )
    note = _stale_note(rows)
    return _render(
        "classifier", card_data,
        title=card_info.get("title") or f"SPM image classifier: {repo_id.split('/')[-1]}",
        repo_id=repo_id, label_names=label_names, num_labels=len(label_names),
        example_class=(present[-1] if present else label_names[-1]),
        image_size=image_size.get("height", 32), num_channels=config.num_channels,
        memory_mode=config.memory_mode, encoder=config.encoder, embed_dim=config.embed_dim,
        num_experts=config.num_experts, fusion_similarity=config.fusion_similarity,
        memory=memory_card_context(memory), ledger=ledger, metrics=rows, metrics_note=note,
        gap=_gap_context(card_info.get("gap_to_retrain")), recipe=recipe, commands=commands,
        license_text=_license_text(license, [dataset[1]] if dataset else datasets),
    )


def _partial_removals(memory, emptied: list[str]) -> bool:
    """True if some ledger event removed samples of a class that still has samples (a by-id deletion)."""
    memory = getattr(memory, "sample_memory", memory)
    for event in memory.ledger:
        if any(name not in emptied for name, n in (event.get("removed_per_class") or {}).items() if n):
            return True
    return False


# ---------------------------------------------------------------------- generator card
def generator_card(pipe, *, training_config: dict | None = None, eval_report: dict | None = None,
                   card_info: dict | None = None, repo_id: str | None = None):
    """The `ModelCard` of an `SPMDiffusionPipeline` in its current state.

    Args:
        training_config: a `training_config.json` dict (`GeneratorTrainingConfig`).
        eval_report: an `evaluate_generator` report; its "before" numbers describe the memory whose
            digest is `receipt.digest_before` (or the current one when it has no receipt), its "after"
            numbers the memory `receipt.digest_after`.
        card_info: as for `classifier_card`.
    """
    from huggingface_hub import ModelCardData

    card_info = dict(card_info or {})
    training_config = training_config or {}
    memory = pipe.memory.sample_memory
    dataset = _dataset_ids(training_config.get("dataset"), (training_config.get("data") or {}).get("hub_id"))
    datasets = card_info.get("datasets") or ([dataset[0]] if dataset else [])
    license = card_info.get("license", DEFAULT_LICENSE)
    repo_id = repo_id or card_info.get("repo_id") or "your-name/spm-generator"

    metrics = list(card_info.get("metrics") or [])
    if eval_report:
        receipt = eval_report.get("receipt") or {}
        before_digest = receipt.get("digest_before") or (memory.digest() if not memory.ledger else None)
        before, after = eval_report.get("before") or {}, eval_report.get("after") or {}
        settings = eval_report.get("settings") or {}
        # every number depends on how the images were sampled (guidance trades diversity for class fidelity)
        sampled = ", ".join(f"{label} {settings[k]}" for k, label in (
            ("guidance_scale", "guidance"), ("num_inference_steps", "steps"),
            ("samples_per_class", "images per class")) if settings.get(k) is not None)
        for key, name, value, digest in (
            ("fid", "FID (generated vs real test images)", before.get("fid"), before_digest),
            ("judge_accuracy", "judge accuracy (%), mean over classes", before.get("judge_accuracy_mean"), before_digest),
            ("fid", "FID, retained classes, after forgetting", after.get("fid_r"), receipt.get("digest_after")),
            ("fid_o", "FID_O (forgotten classes: unlearned vs retrained)", after.get("fid_o"), receipt.get("digest_after")),
            ("judge_accuracy", "judge accuracy (%), retained classes, after forgetting",
             after.get("judge_accuracy_remaining_mean"), receipt.get("digest_after")),
        ):
            if value is not None:
                name = f"{name} ({sampled})" if sampled else name
                metrics.append({"type": key, "name": name, "value": round(float(value), 3), "split": "test",
                                "memory_digest": digest, "dataset": dataset})
    for m in metrics:
        m.setdefault("task", "unconditional-image-generation")
        m.setdefault("dataset", dataset)
    rows, eval_results = _metrics_context(metrics, memory)

    recipe = {k: v for k, v in training_config.items()
              if k != "command" and isinstance(v, (str, int, float, bool)) and v is not None}
    output = "spm-generator"
    preset = training_config.get("preset") or training_config.get("name")
    if training_config.get("command"):  # the command line the training ran (train_generator records it)
        commands = [training_config["command"]]
        output = _output_dir_of(training_config["command"], output)
    else:
        commands = [
            f"spm-hf train-generator --preset {preset} --output-dir {output}" if preset
            else f"spm-hf train-generator --preset <preset> --output-dir {output}  # recipe not recorded"
        ]
    emptied = [name for name, count in memory.class_counts().items() if count == 0]
    commands.append(f"spm-hf evaluate-generator --model {output} --output-dir eval"
                    + (f" --forget {' '.join(emptied)}" if emptied else ""))
    unet_cfg = pipe.unet.config
    present = [n for n, c in memory.class_counts().items() if c]
    card_data = ModelCardData(
        library_name="diffusers", pipeline_tag="unconditional-image-generation", license=license,
        tags=TAGS + ["class-conditional", "diffusion"], datasets=datasets or None,
        model_name=repo_id.split("/")[-1] if eval_results else None, eval_results=eval_results or None,
    )
    note = _stale_note(rows)
    return _render(
        "generator", card_data,
        title=card_info.get("title") or f"SPM diffusion generator: {repo_id.split('/')[-1]}",
        repo_id=repo_id, label_names=list(memory.label_names),
        example_class=(present[-1] if present else memory.label_names[-1]),
        resolution=unet_cfg.sample_size, channels=unet_cfg.in_channels,
        unet_class=type(pipe.unet).__name__, scheduler_class=type(pipe.scheduler).__name__,
        unet_summary=", ".join(f"{k}={unet_cfg[k]}" for k in ("sample_size", "in_channels", "num_class_embeds")
                               if k in unet_cfg),
        memory=memory_card_context(memory), ledger=ledger_card_context(memory), metrics=rows, metrics_note=note,
        gap=_gap_context(card_info.get("gap_to_retrain")), recipe=recipe, commands=commands,
        license_text=_license_text(license, [dataset[1]] if dataset else datasets),
    )


# ---------------------------------------------------------------------- Space card
def space_card(*, models: list[str], title: str = "Designing to Forget: SPM unlearning demo",
               license: str = DEFAULT_LICENSE, sdk_version: str = "6.31.0", app_file: str = "app.py",
               run_command: str = "python app.py"):
    """The `SpaceCard` of the Gradio demo that loads `models` (Hub repo ids)."""
    from huggingface_hub import SpaceCardData

    card_data = SpaceCardData(
        title=title, emoji="🧽", colorFrom="indigo", colorTo="green", sdk="gradio", sdk_version=sdk_version,
        app_file=app_file, pinned=False, license=license, models=list(models), tags=TAGS,
        short_description="Forget a class from an SPM: no retraining",
    )
    return _render("space", card_data, title=title, models=list(models), run_command=run_command)


def write_card(card, directory) -> str:
    """Save `card` as `README.md` in `directory` (atomically, as `RepoCard.save` writes it); returns the path."""
    path = os.path.join(os.fspath(directory), CARD_NAME)
    write_atomic(path, str(card))
    return path


# ---------------------------------------------------------------------- pushing
@dataclass
class PushResult:
    """What `push_folder` did. `commit_oid` is the branch head after the push (after the squash, if any); for
    a pull request (`create_pr=True`) it is the pull request's commit, and `pr_url` / `pr_revision` say
    which pull request (`refs/pr/N`). `deleted_files` are the remote files the commit deleted."""

    repo_id: str
    commit_oid: str | None
    commit_url: str | None
    squashed: bool
    purged_lfs_files: list[str] = field(default_factory=list)
    forget_events: int = 0
    local_cache: LocalCacheReport | None = None
    pr_url: str | None = None
    pr_revision: str | None = None
    deleted_files: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        oid = self.commit_oid[:8] if self.commit_oid else "?"
        if self.pr_url:
            text = f"opened pull request {self.pr_url} on {self.repo_id} ({oid}); its base branch is unchanged"
        else:
            text = f"pushed to {self.repo_id} ({oid})"
        if self.deleted_files:
            text += f"; {len(self.deleted_files)} remote file(s) replaced by the new save deleted"
        if self.squashed:
            text += f"; history squashed ({self.forget_events} forget events), {len(self.purged_lfs_files)} LFS objects purged"
        if self.local_cache is not None:
            text += f"; {self.local_cache}"
        return text


@dataclass
class LocalCacheReport:
    """What happened to the local Hugging Face cache's copies of the repo a model was loaded from, after
    samples were forgotten from it: `removed` (commit hashes deleted from the cache) or `kept` (the cache
    folder that still holds the forgotten samples, when the caller asked to keep it)."""

    repo_id: str
    cache_folder: str
    removed: list[str] = field(default_factory=list)
    kept: bool = False

    def __str__(self) -> str:
        if self.kept:
            return (f"local cache: {self.cache_folder} still holds the revisions of {self.repo_id} from before the "
                    "forget (kept as asked)")
        return f"local cache: removed {len(self.removed)} cached revision(s) of {self.repo_id} that held forgotten samples"


def _cache_repo_folder(snapshot_folder: str) -> str | None:
    """`.../models--org--name` for a folder inside one of its snapshots, else None."""
    location = hub_cache_location(snapshot_folder)
    return None if location is None else location[0]


def purge_cached_repo(snapshot_folder: str) -> list[str]:
    """Delete the cached repo whose snapshot holds `snapshot_folder`, every revision of it (blobs, snapshots,
    refs); returns the deleted commit hashes."""
    repo_folder = _cache_repo_folder(snapshot_folder)
    if repo_folder is None or not os.path.isdir(repo_folder):
        return []
    snapshots = os.path.join(repo_folder, "snapshots")
    hashes = sorted(os.listdir(snapshots)) if os.path.isdir(snapshots) else []
    shutil.rmtree(repo_folder)
    return hashes


def needs_history_squash(memory) -> bool:
    """True if the memory's ledger records a forget event: older revisions may then hold deleted rows."""
    memory = getattr(memory, "sample_memory", memory)
    return bool(memory is not None and memory.ledger)


# What a push never uploads: training state, in `checkpoints/` (transformers Trainer checkpoints hold
# `optimizer.pt`, `rng_state.pth`, `training_args.bin`; the generator's, safetensors + JSON), caches and
# hidden files. A folder `save_pretrained` wrote has none of them; a training output folder keeps its
# checkpoints in `checkpoints/`. Pickles anywhere else are refused (`upload_paths`).
UPLOAD_IGNORED_DIRS = ("checkpoints", "__pycache__")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pickle", ".pkl", ".pt", ".pth")
# diffusers / transformers weight files: `diffusion_pytorch_model[.fp16][-00001-of-00002].safetensors`, their
# index files `...safetensors.index[.fp16].json`
_WEIGHT_FILE = re.compile(r"(?:diffusion_pytorch_model|model|pytorch_model)(?:\.(?P<variant>[\w]+?))?"
                          r"(?:-\d{5}-of-\d{5})?\.(?:safetensors|bin)(?:\.index(?:\.(?P<index_variant>\w+))?\.json)?")


_lfs_transfer_lock = threading.Lock()
_lfs_transfer_users = 0  # blocks inside `lfs_transfer` now
_xet_disabled_before = False  # huggingface_hub's switch as the first of them found it


@contextlib.contextmanager
def lfs_transfer():
    """Within the block, huggingface_hub sends file contents through the Hub's Git LFS API, not Xet.

    With `hf_xet` installed, huggingface_hub uploads through Xet, a chunk-level content-addressed protocol
    that no local server reproduces; our pushes go through Git LFS deliberately so that what a push sends
    is what the test Hub (`tests/hub_server.py`) receives and audits byte by byte. The Hub accepts LFS
    uploads on Xet-backed repos and migrates them to Xet storage in the background
    (https://huggingface.co/docs/hub/xet/legacy-git-lfs). The switch is huggingface_hub's own
    (`HF_HUB_DISABLE_XET`), read when a transfer starts; it is set for the block only (counted, so
    overlapping pushes in several threads keep it until the last one ends)."""
    global _lfs_transfer_users, _xet_disabled_before
    from huggingface_hub import constants

    with _lfs_transfer_lock:
        if _lfs_transfer_users == 0:
            _xet_disabled_before = constants.HF_HUB_DISABLE_XET
        _lfs_transfer_users += 1
        constants.HF_HUB_DISABLE_XET = True
    try:
        yield
    finally:
        with _lfs_transfer_lock:
            _lfs_transfer_users -= 1
            if _lfs_transfer_users == 0:
                constants.HF_HUB_DISABLE_XET = _xet_disabled_before


def upload_paths(folder) -> list[str]:
    """The repo paths (`/`-separated, sorted) of the files of `folder` a push uploads: every file but those
    in `UPLOAD_IGNORED_DIRS` folders and hidden ones (a part starting with `.`).

    Raises `ValueError` naming them if any other file is a pickle (a suffix of `PICKLE_SUFFIXES`: loading
    one runs code); save with safetensors (the default), or move the file out of the folder."""
    folder = os.fspath(folder)
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in UPLOAD_IGNORED_DIRS)
        paths += [Path(os.path.relpath(os.path.join(root, name), folder)).as_posix()
                  for name in files if not name.startswith(".") and not name.endswith(".pyc")]
    pickles = sorted(p for p in paths if p.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise ValueError(f"refusing to push pickle files from {folder}: {', '.join(pickles)} (loading a pickle runs "
                         "code). Save with safetensors (safe_serialization=True, the default) or move them out")
    return sorted(paths)


def _weight_variant(path: str) -> tuple[bool, str | None]:
    """(is a weight or weight-index file, its variant or None) for a repo path."""
    match = _WEIGHT_FILE.fullmatch(path.rsplit("/", 1)[-1])
    if match is None:
        return False, None
    return True, match["variant"] or match["index_variant"]


def keep_other_variants(old_folder: str, new_folder: str) -> list[str]:
    """Link into `new_folder` the weight files of `old_folder` whose variant differs from every variant
    `new_folder` holds in the same folder (a `variant="fp16"` save keeps the fp32 weights beside it, as
    diffusers and transformers do); returns their paths relative to the folder."""
    if not os.path.isdir(old_folder):
        return []
    written: dict[str, set] = {}
    for path in (Path(root, name).relative_to(new_folder).as_posix()
                 for root, _, files in os.walk(new_folder) for name in files):
        is_weight, variant = _weight_variant(path)
        if is_weight:
            written.setdefault(path.rpartition("/")[0], set()).add(variant)
    kept = []
    for sub, variants in written.items():
        old_sub = os.path.join(old_folder, *sub.split("/")) if sub else old_folder
        if not os.path.isdir(old_sub):
            continue
        for name in sorted(os.listdir(old_sub)):
            is_weight, variant = _weight_variant(name)
            target = os.path.join(new_folder, *sub.split("/"), name) if sub else os.path.join(new_folder, name)
            if is_weight and variant not in variants and not os.path.lexists(target):
                try:
                    os.link(os.path.join(old_sub, name), target)
                except OSError:  # a file system without hard links
                    shutil.copy2(os.path.join(old_sub, name), target)
                kept.append(f"{sub}/{name}" if sub else name)
    return kept


def replaced_remote_files(remote: list[str], uploaded: list[str], owned=(), delete_patterns=()) -> list[str]:
    """The remote files a push of `uploaded` deletes, as a save replaces a local folder's entries: a file
    the push does not upload goes if its top-level entry is a folder the push writes (`unet/`, `memory/`:
    replaced whole, stale weight shards and all), if that entry's name matches `owned` (the model's own
    files: `SPMHubMixin.owned_files`), or if its path matches `delete_patterns` (the caller's request).
    Weight files of another variant than the ones pushed beside them (`unet/diffusion_pytorch_model.fp16
    .safetensors` when pushing fp32 weights) are kept, as diffusers keeps variants side by side; so is
    everything else (a user's `NOTES.md`), and `.gitattributes` always."""
    uploaded_set = set(uploaded)
    written_dirs = {p.split("/", 1)[0] for p in uploaded if "/" in p}
    pushed_variants: dict[str, set] = {}
    for path in uploaded:
        is_weight, variant = _weight_variant(path)
        if is_weight:
            pushed_variants.setdefault(path.rpartition("/")[0], set()).add(variant)
    out = []
    for path in remote:
        if path in uploaded_set or path == ".gitattributes":
            continue
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in delete_patterns):
            out.append(path)
            continue
        is_weight, variant = _weight_variant(path)
        if is_weight and variant not in pushed_variants.get(path.rpartition("/")[0], {variant}):
            continue  # another variant's weights
        top = path.split("/", 1)[0]
        if ("/" in path and top in written_dirs) or any(fnmatch.fnmatchcase(top, pattern) for pattern in owned):
            out.append(path)
    return sorted(out)


def push_folder(
    folder,
    repo_id: str,
    *,
    memory=None,
    squash_history: bool | None = None,
    purge_lfs: bool = True,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
    parent_commit: str | None = None,
    create_pr: bool = False,
    owned=(),
    delete_patterns=None,
) -> PushResult:
    """Upload a saved model folder to `repo_id` (branch `revision`, default main) as one commit.

    What is uploaded: every file of the folder but training state and pickles (`upload_paths`), through
    Git LFS (`lfs_transfer`). What is deleted on the remote: what the folder replaces, as a save replaces
    a local folder's entries (`replaced_remote_files`: folders the push writes are replaced whole, entries
    matching `owned` go, and files matching the caller's `delete_patterns`, e.g. `["*"]` to mirror the
    folder); other remote files, a user's own, are kept. A branch that does not exist yet is created from
    main.

    `squash_history`: None (default) squashes the branch iff `memory`'s ledger has forget events, then
    permanently deletes the LFS objects no ref's head uses; True always; False never (warns with
    `ForgetNotPropagatedWarning` if the ledger has forget events).
    `create_pr=True` commits to a new pull request against the branch instead: the branch and its history
    are not touched (no squash, no purge; a `ForgetNotPropagatedWarning` says so when there were forget
    events), and `PushResult.pr_url` names the pull request.
    `parent_commit`: the commit the branch must still point at; if another push moved it, nothing is
    committed and `RepoChangedError` is raised.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not isinstance(create_pr, bool):
        raise TypeError(f"create_pr must be True or False, got {create_pr!r}")
    if isinstance(delete_patterns, str):
        delete_patterns = [delete_patterns]
    delete_patterns = list(delete_patterns or ())
    api = HfApi(endpoint=endpoint, token=token)
    events = len(getattr(getattr(memory, "sample_memory", memory), "ledger", None) or [])
    branch = revision or "main"
    to_pull_request = create_pr or branch.startswith("refs/pr/")
    if to_pull_request:
        what = "create_pr=True" if create_pr else f"revision={branch!r} (a pull request)"
        if squash_history:
            raise ValueError(f"{what} commits to a pull request and leaves the branch's history alone: it cannot "
                             "also squash it (squash_history=True); merge the pull request, then squash")
        squash_history = False
        if events:
            warnings.warn(
                f"this model's memory has {events} forget event(s); push_to_hub({what}) commits to a pull request "
                f"and leaves {repo_id}'s branches as they are: they and every older revision still hold the deleted "
                f"samples. Merge the pull request, then run spm_hf.hub.squash_repo_history({repo_id!r}) (or push to "
                "the branch without create_pr).",
                ForgetNotPropagatedWarning,
                stacklevel=3,
            )
    elif squash_history is None:
        squash_history = needs_history_squash(memory)
    elif not squash_history and events:
        warnings.warn(
            f"this model's memory has {events} forget event(s) and push_to_hub(squash_history=False) keeps the "
            f"history of {repo_id}: any revision pushed before a deletion still holds the deleted samples, and "
            "anyone can download it. Push with squash_history=True (or run spm_hf.hub.squash_repo_history("
            f"{repo_id!r})) unless no earlier revision ever held them.",
            ForgetNotPropagatedWarning,
            stacklevel=3,
        )
    folder = os.fspath(folder)
    uploaded = upload_paths(folder)
    if not uploaded:
        raise FileNotFoundError(f"{folder} holds no file to push")
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if branch != "main" and not branch.startswith("refs/pr/"):
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    remote = api.list_repo_files(repo_id, revision=branch)
    deleted = replaced_remote_files(remote, uploaded, owned, delete_patterns)
    operations = [CommitOperationDelete(path_in_repo=path) for path in deleted]
    operations += [CommitOperationAdd(path_in_repo=path, path_or_fileobj=os.path.join(folder, *path.split("/")))
                   for path in uploaded]
    try:
        with lfs_transfer():
            info = api.create_commit(
                repo_id=repo_id,
                operations=operations,
                commit_message=commit_message or ("Forget samples (SPM)" if events else "Upload SPM model"),
                revision=revision,
                create_pr=create_pr,
                parent_commit=parent_commit,
            )
    except HfHubHTTPError as e:
        if parent_commit is None or getattr(e.response, "status_code", None) != 412:
            raise
        raise RepoChangedError(
            f"{repo_id}@{branch} has moved since commit {parent_commit[:12]}, the one this model was loaded from: "
            "another push came first, and this one would undo its changes (its deletions too). Load the repo "
            "again, redo your forget and push, or pass overwrite=True to push over it anyway."
        ) from e
    result = PushResult(repo_id, getattr(info, "oid", None), getattr(info, "commit_url", None), False, [], events,
                        pr_url=getattr(info, "pr_url", None), pr_revision=getattr(info, "pr_revision", None),
                        deleted_files=deleted)
    if squash_history:
        head, purged = squash_history_and_purge(api, repo_id, branch=branch, purge_lfs=purge_lfs, events=events)
        result.squashed, result.commit_oid, result.purged_lfs_files = True, head, purged
        result.commit_url = f"{api.endpoint}/{repo_id}/commit/{head}"
    if not to_pull_request:
        _warn_about_other_refs(api, repo_id, branch, events)
    return result


def squash_history_and_purge(api, repo_id: str, *, branch: str = "main", purge_lfs: bool = True,
                             events: int = 0, repo_type: str | None = None) -> tuple[str, list[str]]:
    """Squash `branch` to one commit, then permanently delete the LFS objects that no ref's head uses (the
    squashed branch's, and those of the repo's other branches, tags and pull requests: their files are
    never deleted under them; `_warn_about_other_refs` says when they may still hold deleted samples).
    Returns the new head's commit id and the sha256 of the LFS objects deleted."""
    api.super_squash_history(
        repo_id=repo_id, branch=branch, repo_type=repo_type,
        commit_message=f"Squashed history: the sample memory has {events} forget event(s), so no older "
                       "revision may keep deleted samples",
    )
    info = api.repo_info(repo_id, revision=branch, repo_type=repo_type)
    if not purge_lfs:
        return info.sha, []
    refs = api.list_repo_refs(repo_id, repo_type=repo_type, include_pull_requests=True)
    other_heads = sorted({r.target_commit for r in [*refs.branches, *refs.tags, *(refs.pull_requests or [])]
                          if r.target_commit != info.sha})
    purged = purge_unreferenced_lfs_files(api, repo_id, revision=info.sha, repo_type=repo_type,
                                          keep_revisions=other_heads)
    return info.sha, purged


def purge_unreferenced_lfs_files(api, repo_id: str, *, revision: str = "main", repo_type: str | None = None,
                                 keep_revisions=()) -> list[str]:
    """Permanently delete the LFS objects of `repo_id` that neither `revision`'s tree nor the trees of
    `keep_revisions` reference.

    An object is kept if its `oid` or `file_oid` matches any LFS sha256, blob id or xet hash of those
    trees. If the listing does not name every LFS file of `revision`'s tree (an unexpected format),
    nothing is deleted and a `ForgetNotPropagatedWarning` says so: the purge errs towards keeping, never
    towards deleting a live file.
    """
    from huggingface_hub.hf_api import RepoFile

    referenced, head_lfs = set(), set()
    for tree_revision in (revision, *keep_revisions):
        for entry in api.list_repo_tree(repo_id, recursive=True, revision=tree_revision, repo_type=repo_type):
            if isinstance(entry, RepoFile):
                referenced.update(x for x in (entry.blob_id, entry.lfs.sha256 if entry.lfs else None,
                                              entry.xet_hash) if x)
                if entry.lfs and tree_revision == revision:
                    head_lfs.add(entry.lfs.sha256)
    listed = list(api.list_lfs_files(repo_id, repo_type=repo_type))
    listed_ids = {x for f in listed for x in (f.oid, f.file_oid)}
    if not head_lfs <= listed_ids:
        # The listing does not name the head's LFS files the way the tree does: deleting by mismatch could
        # remove live files. Keep everything and say so.
        warnings.warn(
            f"could not match the LFS file listing of {repo_id} to its files; no LFS object was deleted. Older LFS "
            "objects may still hold deleted samples: review them in the repo settings (List LFS files).",
            ForgetNotPropagatedWarning,
            stacklevel=3,
        )
        return []
    stale = [f for f in listed if f.oid not in referenced and f.file_oid not in referenced]
    if stale:
        api.permanently_delete_lfs_files(repo_id, stale, rewrite_history=True, repo_type=repo_type)
    return [f.oid for f in stale]


def squash_repo_history(repo_id: str, *, token: str | bool | None = None, branch: str = "main", purge_lfs: bool = True,
                   endpoint: str | None = None) -> str:
    """Squash a repo's history and purge stale LFS objects (for a repo pushed with squash_history=False, or
    after merging a pull request that forgot samples)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    head, _ = squash_history_and_purge(api, repo_id, branch=branch, purge_lfs=purge_lfs)
    return head


def _warn_about_other_refs(api, repo_id: str, branch: str, events: int) -> None:
    if not events:
        return
    try:
        refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    except Exception as e:  # listing refs is a courtesy check
        logger.debug("could not list refs of %s: %s", repo_id, e)
        return
    others = [r.ref for r in [*refs.branches, *refs.tags, *(refs.pull_requests or [])] if r.name != branch]
    if others:
        warnings.warn(
            f"{repo_id} has other refs ({', '.join(others)}); squashing '{branch}' does not touch them, they may "
            "still point at revisions holding deleted samples, and the LFS files their heads use were kept. Delete "
            "them (HfApi.delete_branch / delete_tag; a pull request's ref from its page on the Hub), then run "
            f"spm_hf.hub.squash_repo_history({repo_id!r}) to purge what they held.",
            ForgetNotPropagatedWarning,
            stacklevel=3,
        )


def guess_repo_id(name_or_path, save_directory, card_info: dict | None = None) -> str:
    """The repo id to show in a card's snippets: `card_info["repo_id"]`, the Hub id the model was loaded
    from, or `your-name/<folder name>`."""
    if card_info and card_info.get("repo_id"):
        return card_info["repo_id"]
    name = os.fspath(name_or_path or "")
    if name and name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/")):
        return name
    return f"your-name/{os.path.basename(os.path.abspath(os.fspath(save_directory)))}"



# ---------------------------------------------------------------------- a model's card
# Per model kind: the card function, and the sidecar files its card reads, as
# card keyword -> (model attribute that takes precedence over the file, file name).
CARD_KINDS = {
    "classifier": (classifier_card, {"summary": ("training_summary", TRAINING_SUMMARY_NAME)}),
    "generator": (generator_card, {"training_config": ("training_config", GENERATOR_CONFIG_NAME),
                                   "eval_report": ("eval_report", EVAL_REPORT_NAME)}),
}


def render_model_card(model, save_directory=None, *, repo_id: str | None = None, card_info: dict | None = None,
                      allow_network: bool = False, token=None, **sidecars):
    """The `ModelCard` of `model` (an `SPMHubMixin` model) in its current state, and the sidecar files it
    was rendered from (file name -> dict) to keep beside it. Renders only: writes and uploads nothing.

    Each sidecar (classifier: `summary`; generator: `training_config`, `eval_report`) is the keyword given
    here, else the model's attribute (`training_summary`, `training_config`, `eval_report`), else the JSON
    file found in `save_directory` (the folder the card is for) or where the model was loaded from (a
    folder, or a Hub repo: its cache, and the Hub with `allow_network`). `card_info` defaults to
    `model.card_info` (see `classifier_card`). Returns `(None, {})` with a `CardTemplateWarning` where
    jinja2 is missing.
    """
    card_function, sidecar_files = CARD_KINDS[model.card_kind]
    card_info = card_info if card_info is not None else getattr(model, "card_info", None)
    sources = [save_directory, getattr(model, "name_or_path", None)]
    found = {
        keyword: sidecars.get(keyword) or getattr(model, attribute, None)
        or find_sidecar(name, *sources, allow_network=allow_network, token=token)
        for keyword, (attribute, name) in sidecar_files.items()
    }
    if repo_id is None:
        origin = getattr(model, "hub_origin", None)
        repo_id = guess_repo_id(origin.repo_id if origin else getattr(model, "name_or_path", None),
                                save_directory or ".", card_info)
    try:
        card = card_function(model, card_info=card_info, repo_id=repo_id, **found)
    except ImportError as e:  # ModelCard.from_template needs jinja2
        warnings.warn(f"model card not written ({e}); install jinja2", CardTemplateWarning, stacklevel=2)
        return None, {}
    return card, {sidecar_files[keyword][1]: value for keyword, value in found.items() if value}


# ---------------------------------------------------------------------- where a model came from
@dataclass(frozen=True)
class HubOrigin:
    """A Hub commit a model was loaded from: the repo, the commit and the branches that pointed at it."""

    repo_id: str
    commit: str
    branches: frozenset = frozenset()


def hub_origin(folder) -> HubOrigin | None:
    """The Hub commit that a folder of the Hugging Face cache holds (`.../models--org--name/snapshots/<commit>`,
    or a subfolder of one), with the branches the cache says point at it; None for any other folder."""
    location = hub_cache_location(folder)
    if location is None:
        return None
    repo_folder, repo_id, commit = location
    refs = Path(repo_folder, "refs")
    branches = {ref.relative_to(refs).as_posix() for ref in refs.rglob("*")
                if ref.is_file() and ref.read_text().strip() == commit} if refs.is_dir() else set()
    return HubOrigin(repo_id, commit, frozenset(branches))


def saved_memory_digest(folder) -> str | None:
    """The memory digest recorded in `folder/sample_memory.json`: None if there is no such file, "" if it
    cannot be read."""
    path = os.path.join(os.fspath(folder), MEMORY_CONFIG_NAME)
    if not os.path.exists(path):
        return None
    meta = read_json(path)
    return str(meta.get("digest", "")) if meta else ""


# ---------------------------------------------------------------------- the mixin
class SPMHubMixin:
    """`save_pretrained`, `write_model_card` and `push_to_hub` for both model kinds (module docstring).

    A class using it comes first in the bases (`class SPMForImageClassification(SPMHubMixin,
    SPMPreTrainedModel)`), sets `card_kind` (a key of `CARD_KINDS`), `memory_subfolder` (where its memory
    files sit in a saved folder) and `owned_files` (the entries of an old folder its save replaces, even
    when the new save lacks them), and overrides `_save_files` if the framework's `save_pretrained` does
    not write everything. Its `from_pretrained` loads inside `spm_hf.files.reading_directory(path)` and
    then calls `remember_origin(folder it read)`.
    """

    card_kind: str = ""
    memory_subfolder: str = ""
    owned_files: tuple[str, ...] = ()

    def _save_files(self, directory: str, *args, **kwargs) -> None:
        """Write everything but the card into the new folder `directory`: by default the framework's
        `save_pretrained` (transformers' or diffusers', the class after this mixin)."""
        super().save_pretrained(directory, *args, **kwargs)

    def _sample_memory(self):
        memory = getattr(self, "memory", None)
        return getattr(memory, "sample_memory", memory)

    # ------------------------------------------------------------------ origins
    @property
    def hub_origin(self) -> HubOrigin | None:
        """The Hub commit this object was loaded from (None if it was loaded from a folder or built)."""
        return getattr(self, "_spm_hub_origin", None)

    def remember_origin(self, folder) -> None:
        """Record what was just loaded from `folder`: for a Hub cache snapshot its commit (the parent the
        next push to that repo and branch must find), else the folder's memory digest (what the next save
        into that folder must find on disk)."""
        origin = hub_origin(folder)
        if origin is None:
            self._remember_folder(os.path.realpath(os.fspath(folder)))
            return
        self._spm_hub_origin = origin
        self._spm_hub_snapshot = os.fspath(folder)
        self._spm_hub_snapshot_digest = saved_memory_digest(os.path.join(os.fspath(folder), self.memory_subfolder))
        self._spm_hub_heads = {**(getattr(self, "_spm_hub_heads", None) or {}),
                               **{(origin.repo_id, branch): origin.commit for branch in origin.branches}}

    def _remember_folder(self, folder: str) -> None:
        memory = self._sample_memory()
        self._spm_folder_digests = {**(getattr(self, "_spm_folder_digests", None) or {}),
                                    folder: memory.digest() if memory is not None else None}

    def _check_folder_unchanged(self, folder: str) -> None:
        digests = getattr(self, "_spm_folder_digests", None) or {}
        if folder not in digests or not os.path.isdir(folder):
            return
        expected, found = digests[folder], saved_memory_digest(os.path.join(folder, self.memory_subfolder))
        if found != expected:
            raise FolderChangedError(
                f"{folder} changed since this model was loaded from it (or last saved to it): the memory there "
                f"has digest {str(found)[:12]}, not {str(expected)[:12]}, so another process saved into it. Saving "
                "would undo that save, deletions included: load the folder again, redo your forget and save, "
                "or pass overwrite=True to replace it anyway."
            )

    # ------------------------------------------------------------------ the local cache
    @property
    def stale_local_cache(self) -> str | None:
        """The Hugging Face cache snapshot this object was loaded from, if samples were forgotten since (it
        still holds them); None otherwise."""
        snapshot = getattr(self, "_spm_hub_snapshot", None)
        memory = self._sample_memory()
        if snapshot is None or memory is None or not os.path.isdir(snapshot):
            return None
        return snapshot if memory.digest() != getattr(self, "_spm_hub_snapshot_digest", None) and memory.ledger else None

    def purge_local_cache(self, keep: bool = False) -> LocalCacheReport | None:
        """After a forget on a model loaded from the Hub: delete every cached revision of its repo from the
        local Hugging Face cache, since they still hold the forgotten samples (`keep=True` deletes nothing
        and warns instead). Returns what was done, or None when the cache holds nothing stale."""
        snapshot = self.stale_local_cache
        if snapshot is None:
            return None
        repo_id, folder = self.hub_origin.repo_id, _cache_repo_folder(snapshot)
        if keep:
            warnings.warn(f"the local cache {folder} still holds {repo_id} as it was before the forget",
                          ForgetNotPropagatedWarning, stacklevel=2)
            return LocalCacheReport(repo_id, folder, kept=True)
        removed = purge_cached_repo(snapshot)
        self._spm_hub_snapshot = None
        return LocalCacheReport(repo_id, folder, removed=removed)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory, *args, model_card: bool = True, overwrite: bool = False, **kwargs):
        """Save the weights, config, memory and (with `model_card`) the card `README.md`, rendered from the
        current memory and ledger, into `save_directory` as one atomic step: a reader sees the old folder or
        the new one, whatever instant the writer dies. Entries the save does not write (the user's own
        files) are kept, and so are the weights of other variants beside the ones it writes
        (`keep_other_variants`). Use `push_to_hub` to upload: it squashes the repo's history after forget
        events.

        Raises `FolderChangedError` (and writes nothing) if this object was loaded from, or last saved to,
        `save_directory` and the memory saved there has changed since: `overwrite=True` saves anyway.
        Other keyword arguments go to the framework's `save_pretrained`; only the main process writes.
        """
        if kwargs.get("push_to_hub"):
            raise ValueError(f"use {type(self).__name__}.push_to_hub(repo_id): save_pretrained(push_to_hub=True) "
                             "would keep the repo history that still holds forgotten samples")
        if not kwargs.get("is_main_process", True):
            return
        folder = os.path.realpath(os.fspath(save_directory))
        with atomic_directory(folder, owned=self.owned_files) as staging:
            if not overwrite:
                self._check_folder_unchanged(folder)
            self._save_files(staging, *args, **kwargs)
            keep_other_variants(folder, staging)
            if model_card and self._sample_memory() is not None:
                self._write_card(staging, folder)
        self._remember_folder(folder)

    def _write_card(self, directory: str, describing: str | None, **render_kwargs) -> str | None:
        card, sidecars = render_model_card(self, describing, **render_kwargs)
        if card is None:
            return None
        for name, payload in sidecars.items():
            path = os.path.join(directory, name)
            if not os.path.exists(path):  # kept beside the card, so the next card finds it
                write_json(path, payload)
        return write_card(card, directory)

    def write_model_card(self, save_directory, repo_id: str | None = None, card_info: dict | None = None,
                         **sidecars) -> str | None:
        """Render the card from the current memory and ledger into `save_directory/README.md`, and copy the
        sidecar files it read beside it (`render_model_card` says which and from where; keywords such as
        `summary=` override them). Returns the card's path, or None without jinja2."""
        save_directory = os.fspath(save_directory)
        return self._write_card(save_directory, save_directory, repo_id=repo_id, card_info=card_info, **sidecars)

    # ------------------------------------------------------------------ pushing
    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        squash_history: bool | None = None,
        purge_lfs: bool = True,
        card_info: dict | None = None,
        overwrite: bool = False,
        keep_local_cache: bool = False,
        create_pr: bool = False,
        delete_patterns: list[str] | str | None = None,
        **save_kwargs,
    ) -> PushResult:
        """Save the files and the card into a temporary folder and upload it to branch `revision` (default
        main, created if missing) as one commit (`push_folder`). The commit replaces what a save replaces:
        this model's own files (`owned_files`: weights, old weight shards, the memory, the remote code) and
        the folders it writes (`unet/`, `memory/`, ...), whole; other remote files (a user's `NOTES.md`) are
        kept, unless they match `delete_patterns` (`"*"`: the repo then holds exactly the saved folder).
        If the memory's ledger records a forget event, the branch's history is then squashed and LFS objects
        no ref uses are permanently deleted, so no older revision of the branch still serves a deleted
        sample; `squash_history=False` skips that and warns.

        `create_pr=True` opens a pull request against the branch instead (`PushResult.pr_url`): the branch
        and its history are left as they are, so after a forget they still hold the deleted samples (a
        `ForgetNotPropagatedWarning` says so) until the pull request is merged and the history squashed
        (`squash_repo_history`).

        Pushing to a repo and branch this object was loaded from (or last pushed to) requires the branch
        to still be at that commit: if another push moved it, `RepoChangedError` is raised and nothing is
        committed. `overwrite=True` pushes over it anyway.

        If this object was loaded from the Hub and has forgotten samples since, the local Hugging Face cache
        still holds the old revisions: after the push they are deleted from it (`purge_local_cache`), or, with
        `keep_local_cache=True`, kept with a warning. `PushResult.local_cache` says which.
        Returns a `PushResult`.
        """
        from huggingface_hub import HfApi

        memory = self._sample_memory()
        if memory is None:
            raise RuntimeError("this model has no sample memory; call build_memory() or set_memory() before pushing")
        full_repo_id = HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True).repo_id
        branch = revision or "main"
        heads = getattr(self, "_spm_hub_heads", None) or {}
        parent_commit = None if overwrite else heads.get((full_repo_id, branch))
        with tempfile.TemporaryDirectory(prefix=f"spm-{self.card_kind}-") as tmp:
            folder = os.path.join(tmp, "upload")
            with atomic_directory(folder) as staging:
                self._save_files(staging, **save_kwargs)
                # the sidecars of the checkpoint this model came from (a folder, or a repo: fetched if needed)
                self._write_card(staging, None, repo_id=full_repo_id, card_info=card_info, allow_network=True,
                                 token=token)
            if not os.path.exists(os.path.join(folder, self.memory_subfolder, MEMORY_CONFIG_NAME)):
                raise RuntimeError("the saved folder holds no sample memory; refusing to push a model without it")
            result = push_folder(folder, full_repo_id, memory=memory, squash_history=squash_history,
                                 purge_lfs=purge_lfs, private=private, token=token, commit_message=commit_message,
                                 revision=revision, parent_commit=parent_commit, create_pr=create_pr,
                                 owned=self.owned_files, delete_patterns=delete_patterns)
        if result.commit_oid and not result.pr_url:  # a pull request leaves the branch where it was
            self._spm_hub_heads = {**heads, (full_repo_id, branch): result.commit_oid}
        result.local_cache = self.purge_local_cache(keep=keep_local_cache)
        return result


__all__ = [
    "CARD_NAME",
    "CardTemplateWarning",
    "FolderChangedError",
    "ForgetNotPropagatedWarning",
    "HubOrigin",
    "LocalCacheReport",
    "PushResult",
    "RepoChangedError",
    "SPMHubMixin",
    "classifier_card",
    "find_sidecar",
    "generator_card",
    "guess_repo_id",
    "keep_other_variants",
    "ledger_card_context",
    "lfs_transfer",
    "memory_card_context",
    "needs_history_squash",
    "purge_unreferenced_lfs_files",
    "push_folder",
    "replaced_remote_files",
    "render_model_card",
    "saved_memory_digest",
    "space_card",
    "squash_repo_history",
    "squash_history_and_purge",
    "templates_dir",
    "upload_paths",
    "write_card",
]
