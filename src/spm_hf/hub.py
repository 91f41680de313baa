"""Hub round trip for both model kinds: model cards, push with history squashing, Space card.

Model cards
    The card (`README.md`) is rendered from the model's *current* state every time the model is saved
    or pushed: the memory's class counts, digest and `trained_on` split, the ledger summary (counts,
    dates, digests; never ids), the training recipe and the metrics recorded with the checkpoint.
    `save_pretrained` writes it, so after any `forget` the next save or push carries an updated card
    ("every forget updates it"). `forget()` itself writes nothing: a model in memory does not know a
    folder that is its own, and a save is what makes a deletion durable.
    Templates live in `hub_cards/` (classifier, generator, Space) and are rendered with
    `huggingface_hub.ModelCard.from_template` (jinja2). Where they cannot be found (a classifier loaded
    with `trust_remote_code` copies this module, not the templates) a short built-in card is written.

Metrics
    Metrics come from `training_summary.json` (classifier), an evaluation report (generator) or
    `card_info["metrics"]`. A metric enters the `model-index` only if it describes the memory that is
    being saved: it names that memory's digest, or it names none and no sample was ever forgotten.
    Older numbers stay in the card's table, labelled as measured before the forget events.

Pushing and forgetting
    `push_folder` uploads a saved folder (deleting remote files the folder no longer has), then, if the
    memory's ledger records at least one forget event, squashes the branch's history
    (`HfApi.super_squash_history`) and permanently deletes the LFS objects the squashed head no longer
    references (`permanently_delete_lfs_files`): squashing rewrites the commits, but on the Hub LFS
    objects outlive the commits that referenced them. Without both, an older revision (or the LFS
    store) would still hold the deleted rows. `squash_history=False` skips it and warns
    (`ForgetNotPropagatedWarning`) when the ledger is not empty.

This module imports neither diffusers nor the rest of spm_hf beyond `.memory` (it travels with the
classifier's remote code; transformers copies relative imports), and it must not contain relative
imports of subpackages.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .files import write_atomic
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


# ---------------------------------------------------------------------- templates
def templates_dir() -> Path | None:
    """The folder holding the card templates: `$SPM_HF_CARD_TEMPLATES`, `spm_hf/hub_cards` (package
    data) or `hub_cards/` at the root of a source checkout; None if none exists."""
    here = Path(__file__).resolve().parent
    candidates = [os.environ.get("SPM_HF_CARD_TEMPLATES"), here / "hub_cards", here.parent.parent / "hub_cards"]
    for candidate in candidates:
        if candidate and (Path(candidate) / TEMPLATES["classifier"]).is_file():
            return Path(candidate)
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

(The full card template, `hub_cards/`, was not found when this card was written.)
"""


def _render(kind: str, card_data, **context):
    from huggingface_hub import ModelCard, SpaceCard

    card_class = SpaceCard if kind == "space" else ModelCard
    folder = templates_dir()
    if folder is not None:
        return card_class.from_template(card_data, template_path=str(folder / TEMPLATES[kind]), **context)
    if kind == "space":
        raise FileNotFoundError("hub_cards/space.md not found; set SPM_HF_CARD_TEMPLATES")
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


def _dataset_ids(dataset: str | None) -> tuple[str, str] | None:
    if not dataset:
        return None
    return DATASET_HUB_IDS.get(str(dataset).lower())


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
    dataset = _dataset_ids(preset.get("dataset"))
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
        for key in ("name", "dataset", "encoder", "epochs", "batch_size", "learning_rate", "schedule", "support",
                    "max_train_samples", "memory_samples", "fusion_similarity", "head_steps", "seed"):
            if preset.get(key) is not None:
                recipe["preset" if key == "name" else key] = preset[key]
    for key in ("train_samples", "train_seconds", "device", "world_size", "weights_sha256"):
        if summary.get(key) is not None:
            recipe[key] = summary[key]
    output = "spm-classifier"
    commands = []
    if preset.get("name"):
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
    dataset = _dataset_ids(training_config.get("dataset"))
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

    recipe = {k: v for k, v in training_config.items() if isinstance(v, (str, int, float, bool)) and v is not None}
    output = "spm-generator"
    preset = training_config.get("preset") or training_config.get("name")
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
    """What `push_folder` did. `commit_oid` is the head after the push (after the squash, if any)."""

    repo_id: str
    commit_oid: str | None
    commit_url: str | None
    squashed: bool
    purged_lfs_files: list[str] = field(default_factory=list)
    forget_events: int = 0

    def __str__(self) -> str:
        text = f"pushed to {self.repo_id} ({self.commit_oid[:8] if self.commit_oid else '?'})"
        if self.squashed:
            text += f"; history squashed ({self.forget_events} forget events), {len(self.purged_lfs_files)} LFS objects purged"
        return text


def needs_history_squash(memory) -> bool:
    """True if the memory's ledger records a forget event: older revisions may then hold deleted rows."""
    memory = getattr(memory, "sample_memory", memory)
    return bool(memory is not None and memory.ledger)


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
) -> PushResult:
    """Upload a saved model folder to `repo_id` so that the repo holds exactly that folder.

    Remote files missing from the folder are deleted by the push (`.gitattributes` is kept).
    `squash_history`: None (default) squashes iff `memory`'s ledger has forget events; True always;
    False never (warns with `ForgetNotPropagatedWarning` if the ledger has forget events).
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    events = len(getattr(getattr(memory, "sample_memory", memory), "ledger", None) or [])
    if squash_history is None:
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
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = repo_url.repo_id
    branch = revision or "main"
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=os.fspath(folder),
        commit_message=commit_message or ("Forget samples (SPM)" if events else "Upload SPM model"),
        revision=revision,
        delete_patterns=["*"],
    )
    result = PushResult(repo_id, getattr(info, "oid", None), getattr(info, "commit_url", None), False, [], events)
    if squash_history:
        head, purged = squash_history_and_purge(api, repo_id, branch=branch, purge_lfs=purge_lfs, events=events)
        result.squashed, result.commit_oid, result.purged_lfs_files = True, head, purged
    _warn_about_other_refs(api, repo_id, branch, events)
    return result


def squash_history_and_purge(api, repo_id: str, *, branch: str = "main", purge_lfs: bool = True,
                             events: int = 0, repo_type: str | None = None) -> tuple[str, list[str]]:
    """Squash `branch` to one commit, then permanently delete the LFS objects its head does not use.
    Returns the new head's commit id and the sha256 of the LFS objects deleted."""
    api.super_squash_history(
        repo_id=repo_id, branch=branch, repo_type=repo_type,
        commit_message=f"Squashed history: the sample memory has {events} forget event(s), so no older "
                       "revision may keep deleted samples",
    )
    info = api.repo_info(repo_id, revision=branch, repo_type=repo_type)
    purged = purge_unreferenced_lfs_files(api, repo_id, revision=info.sha, repo_type=repo_type) if purge_lfs else []
    return info.sha, purged


def purge_unreferenced_lfs_files(api, repo_id: str, *, revision: str = "main", repo_type: str | None = None) -> list[str]:
    """Permanently delete the LFS objects of `repo_id` that `revision`'s tree does not reference.

    An object is kept if its `oid` or `file_oid` matches any LFS sha256, blob id or xet hash of the
    tree. If the listing does not name every LFS file of the tree (an unexpected format), nothing is
    deleted and a `ForgetNotPropagatedWarning` says so: the purge errs towards keeping, never towards
    deleting a live file.
    """
    from huggingface_hub.hf_api import RepoFile

    referenced, head_lfs = set(), set()
    for entry in api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type=repo_type):
        if isinstance(entry, RepoFile):
            referenced.update(x for x in (entry.blob_id, entry.lfs.sha256 if entry.lfs else None,
                                          entry.xet_hash) if x)
            if entry.lfs:
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
    """Squash a repo's history and purge stale LFS objects (for a repo pushed with squash_history=False)."""
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
            f"{repo_id} has other refs ({', '.join(others)}); squashing '{branch}' does not touch them, and they "
            "may still point at revisions holding deleted samples. Delete them (HfApi.delete_branch / delete_tag).",
            ForgetNotPropagatedWarning,
            stacklevel=3,
        )


def push_saved(save, repo_id: str, *, memory, tmp_prefix: str, private: bool | None = None,
               token: str | bool | None = None, endpoint: str | None = None, **push_kwargs) -> PushResult:
    """Create the repo, `save(tmp_dir, full_repo_id)`, then `push_folder(tmp_dir, ...)`; the temporary
    folder is removed. Refuses to push a folder without a sample memory."""
    from huggingface_hub import HfApi

    full_repo_id = HfApi(endpoint=endpoint, token=token).create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory(prefix=tmp_prefix) as tmp:
        save(tmp, full_repo_id)
        if not os.path.exists(os.path.join(tmp, MEMORY_CONFIG_NAME)) and not os.path.exists(
            os.path.join(tmp, "memory", MEMORY_CONFIG_NAME)
        ):
            raise RuntimeError("the saved folder holds no sample memory; refusing to push a model without it")
        return push_folder(tmp, full_repo_id, memory=memory, private=private, token=token, endpoint=endpoint,
                           **push_kwargs)


def guess_repo_id(name_or_path, save_directory, card_info: dict | None = None) -> str:
    """The repo id to show in a card's snippets: `card_info["repo_id"]`, the Hub id the model was loaded
    from, or `your-name/<folder name>`."""
    if card_info and card_info.get("repo_id"):
        return card_info["repo_id"]
    name = os.fspath(name_or_path or "")
    if name and name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/")):
        return name
    return f"your-name/{os.path.basename(os.path.abspath(os.fspath(save_directory)))}"


__all__ = [
    "CARD_NAME",
    "ForgetNotPropagatedWarning",
    "PushResult",
    "classifier_card",
    "find_sidecar",
    "generator_card",
    "guess_repo_id",
    "ledger_card_context",
    "memory_card_context",
    "needs_history_squash",
    "purge_unreferenced_lfs_files",
    "push_folder",
    "push_saved",
    "space_card",
    "squash_repo_history",
    "squash_history_and_purge",
    "templates_dir",
    "write_card",
]
