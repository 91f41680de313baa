"""Hub round trip for both model kinds against `tests/hub_server.FakeHub` (a real HTTP server on 127.0.0.1).

The Hub client runs in subprocesses: `HF_ENDPOINT` and `HF_HUB_OFFLINE` are read when huggingface_hub is
imported, and conftest has already imported it in this process with `HF_HUB_OFFLINE=1` (which must stay
on for the rest of the suite). Each subprocess gets `HF_ENDPOINT=<fake hub>`, its own `HF_HOME` (a fresh
cache, so "load by repo id" really downloads) and a dummy token; `hf_xet` stays enabled, as a user's
client has it: spm_hf's pushes send their files through Git LFS themselves (`spm_hf.hub.lfs_transfer`),
which is what the fake speaks. This process only builds the models, reads the server's state and scans
its bytes.

Stages (module-scoped fixtures, run once in order): push both models -> load each by repo id in a
fresh process and compare outputs -> forget and push (pipeline through the Python API, classifier
through `spm-hf forget --push`) -> scan every revision and every stored byte.
"""

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
import warnings

import pytest
import torch
from huggingface_hub import ModelCard

from conftest import CLASSES, make_config, make_memory
from hub_server import FakeHub, validate_card_metadata
from spm_hf import SPMForImageClassification, make_image_processor
from spm_hf.generation import ImageSampleMemory, SPMUNet2DModel, make_pipeline
from spm_hf.hub import ForgetNotPropagatedWarning, push_folder, space_card


SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
USER = "spm-tester"
CLF_REPO, GEN_REPO = f"{USER}/spm-classifier", f"{USER}/spm-generator"
GEN_NAMES = ["ant", "bee", "cow"]
CLF_FORGET_CLASS, CLF_FORGET_IDS = "cat", ["train/00000", "train/00011"]  # ids from airplane and automobile
GEN_FORGET_CLASS, GEN_FORGET_IDS = "cow", ["train/00000", "train/00004"]  # ids from ant and bee
SUMMARY = {
    "preset": {"name": "tiny", "dataset": "cifar10", "encoder": "resnet-mini", "epochs": 5, "seed": 0},
    "train_seconds": 1.0,
    "test": {"class_mean": {"accuracy": 41.5}, "knn": {"accuracy": 40.25}},
}


@pytest.fixture(scope="session")
def hub():
    server = FakeHub(user=USER).start()
    yield server
    server.stop()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny tensors, busy cores


def run_client(hub, code: str, home, *, offline: bool = False, hide_spm_hf: bool = False, argv=None, cwd=None):
    """Run `code` (or `python -m spm_hf.cli argv`) as a Hub client of `hub`; returns the last stdout line
    parsed as JSON (or the whole CompletedProcess for argv runs)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_XET")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_TOKEN="hf_fake_token",
               HF_HUB_OFFLINE="1" if offline else "0", HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    prelude = ""
    if hide_spm_hf:
        prelude = textwrap.dedent(
            f"""
            import sys
            sys.path[:] = [p for p in sys.path if p and __import__("os").path.realpath(p) != {os.path.realpath(SRC)!r}]
            import importlib.util
            assert importlib.util.find_spec("spm_hf") is None, "spm_hf must not be importable here"
            """
        )
    os.makedirs(home, exist_ok=True)
    command = [sys.executable, "-m", "spm_hf.cli", *argv] if argv else [sys.executable, "-c", prelude + textwrap.dedent(code)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(cwd or home), timeout=300)
    assert result.returncode == 0, f"client failed:\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"
    if argv:
        return result
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- models
def make_classifier():
    torch.manual_seed(0)
    model = SPMForImageClassification(make_config()).eval()
    model.set_memory(make_memory())
    model.image_processor = make_image_processor()
    model.training_summary = SUMMARY
    return model


def make_generator():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(30) % len(GEN_NAMES)
    ids = [f"train/{i:05d}" for i in range(30)]
    memory = ImageSampleMemory.from_images(images, labels, ids, GEN_NAMES)
    torch.manual_seed(0)
    unet = SPMUNet2DModel.from_architecture("unet-tiny", num_class_embeds=len(GEN_NAMES)).eval()
    pipe = make_pipeline(unet, memory)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def forgotten_needles(memory, classes, ids):
    """Bytes that must not survive: each forgotten row's value and each forgotten id (as JSON text)."""
    memory = getattr(memory, "sample_memory", memory)
    names = memory.label_names
    rows = [r for r, (sid, label) in enumerate(zip(memory.ids, memory.labels.tolist()))
            if names[label] in classes or sid in ids]
    needles = {f"row:{memory.ids[r]}": memory.values[r].contiguous().numpy().tobytes() for r in rows}
    needles.update({f"id:{memory.ids[r]}": json.dumps(memory.ids[r]).encode() for r in rows})
    kept = [r for r in range(len(memory)) if r not in set(rows)]
    return needles, {f"row:{memory.ids[r]}": memory.values[r].contiguous().numpy().tobytes() for r in kept}


def http_json(url):
    with urllib.request.urlopen(url) as response:
        return json.loads(response.read())


def every_revision_bytes(hub, repo_id):
    """(label, bytes) of every file of every revision the server lists, fetched over HTTP, then everything
    else it stores for the repo (unreachable commits, blobs, LFS objects)."""
    commits = http_json(f"{hub.url}/api/models/{repo_id}/commits/main")
    for commit in commits:
        tree = http_json(f"{hub.url}/api/models/{repo_id}/tree/{commit['id']}?recursive=true")
        for entry in tree:
            if entry["type"] == "file":
                with urllib.request.urlopen(f"{hub.url}/{repo_id}/resolve/{commit['id']}/{entry['path']}") as r:
                    yield f"{commit['id'][:8]}:{entry['path']}", r.read()
    yield from hub.retained_bytes(repo_id)


def find(needles: dict, haystack) -> set:
    chunks = list(haystack)
    return {name for name, needle in needles.items() if any(needle in data for _, data in chunks)}


# ---------------------------------------------------------------------- stages
@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Both models saved locally, plus their outputs on fixed inputs and the forget needles."""
    root = tmp_path_factory.mktemp("hub")
    clf, pipe = make_classifier(), make_generator()
    clf.save_pretrained(root / "clf")
    pipe.save_pretrained(root / "gen")
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save({"images": images}, root / "inputs.pt")  # a test input, not a saved artifact
    with torch.no_grad():
        logits = clf(images).logits
    gen = pipe(["ant", "bee"], num_inference_steps=2, support_size=4, generator=torch.Generator().manual_seed(0),
               output_type="np").images
    clf_needles, clf_kept = forgotten_needles(clf.memory, {CLF_FORGET_CLASS}, set(CLF_FORGET_IDS))
    gen_needles, gen_kept = forgotten_needles(pipe.memory, {GEN_FORGET_CLASS}, set(GEN_FORGET_IDS))
    clf.forget(classes=[CLF_FORGET_CLASS], ids=CLF_FORGET_IDS)
    pipe.forget(classes=[GEN_FORGET_CLASS], ids=GEN_FORGET_IDS)
    return {
        "root": root, "logits": logits, "gen": gen, "clf_needles": clf_needles, "clf_kept": clf_kept,
        "gen_needles": gen_needles, "gen_kept": gen_kept,
        "clf_after": {"n": len(clf.memory), "digest": clf.memory.digest()},
        "gen_after": {"n": len(pipe.memory), "digest": pipe.memory.digest()},
    }


@pytest.fixture(scope="module")
def pushed(hub, originals):
    """Stage 1: push both saved folders (fresh process): the classifier with the Python API, the
    pipeline with `spm-hf push`."""
    root = originals["root"]
    out = run_client(hub, f"""
        import json
        from spm_hf import SPMForImageClassification
        model = SPMForImageClassification.from_pretrained({str(root / "clf")!r})
        result = model.push_to_hub({CLF_REPO!r})
        print(json.dumps({{"squashed": result.squashed, "commit": result.commit_oid}}))
        """, root / "home-push")
    cli = run_client(hub, "", root / "home-push", argv=["push", str(root / "gen"), GEN_REPO])
    audit = {
        "clf_pre": find(originals["clf_needles"], every_revision_bytes(hub, CLF_REPO)),
        "gen_pre": find(originals["gen_needles"], every_revision_bytes(hub, GEN_REPO)),
        "clf_commits": len(hub.repo(CLF_REPO).commits),
        "gen_commits": len(hub.repo(GEN_REPO).commits),
    }
    return {"clf": out, "gen_cli": cli.stdout, **audit}


@pytest.fixture(scope="module")
def reloaded_and_forgotten(hub, originals, pushed):
    """Stage 2: a fresh process loads both by repo id, checks outputs, forgets from the pipeline and
    pushes it (first to a second repo with squash_history=False, to see the warning). Stage 3: the
    classifier is forgotten with `spm-hf forget --model REPO --classes --ids-file --push`."""
    root = originals["root"]
    out = run_client(hub, f"""
        import json, warnings
        import torch
        from spm_hf import SPMForImageClassification, SPMDiffusionPipeline
        from spm_hf.hub import ForgetNotPropagatedWarning
        clf = SPMForImageClassification.from_pretrained({CLF_REPO!r}).eval()
        images = torch.load({str(root / "inputs.pt")!r})["images"]
        with torch.no_grad():
            logits = clf(images).logits
        pipe = SPMDiffusionPipeline.from_pretrained({GEN_REPO!r})
        pipe.set_progress_bar_config(disable=True)
        gen = pipe(["ant", "bee"], num_inference_steps=2, support_size=4, generator=torch.Generator().manual_seed(0),
                   output_type="np").images
        pipe.forget(classes=[{GEN_FORGET_CLASS!r}], ids={GEN_FORGET_IDS!r})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kept = pipe.push_to_hub({GEN_REPO + "-kept-history"!r}, squash_history=False)
        result = pipe.push_to_hub({GEN_REPO!r})
        print(json.dumps({{
            "logits": logits.tolist(), "gen": gen.tolist(), "clf_n": len(clf.memory), "clf_module": type(clf).__module__,
            "processor": type(clf.image_processor).__name__,
            "warnings": [str(w.message) for w in caught if issubclass(w.category, ForgetNotPropagatedWarning)],
            "kept_squashed": kept.squashed, "squashed": result.squashed, "purged": result.purged_lfs_files,
            "kept_cache": str(kept.local_cache), "local_cache": str(result.local_cache),
        }}))
        """, root / "home-reload")
    ids_file = root / "ids.txt"
    ids_file.write_text("\n".join(CLF_FORGET_IDS) + "\n")
    cli = run_client(hub, "", root / "home-cli",
                     argv=["forget", "--model", CLF_REPO, "--classes", CLF_FORGET_CLASS, "--ids-file", str(ids_file),
                           "--push"])
    return {**out, "cli": cli.stdout}


# ---------------------------------------------------------------------- tests
def test_push_creates_repos_with_cards_memory_and_remote_code(hub, pushed):
    assert pushed["clf"]["squashed"] is False  # nothing was forgotten yet: history kept
    assert "pushed to" in pushed["gen_cli"]
    clf_files = set(hub.repo(CLF_REPO).commits[hub.repo(CLF_REPO).branches["main"]].files)
    assert {"README.md", "config.json", "model.safetensors", "sample_memory.safetensors", "sample_memory.json",
            "modeling_spm.py", "memory.py", "hub.py", "preprocessor_config.json", "training_summary.json"} <= clf_files
    gen_files = set(hub.repo(GEN_REPO).commits[hub.repo(GEN_REPO).branches["main"]].files)
    assert {"README.md", "model_index.json", "memory/sample_memory.safetensors", "memory/sample_memory.json",
            "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"} <= gen_files
    # safetensors went through the LFS batch API, and README commits were validated by the server
    assert any(path.endswith("/info/lfs/objects/batch") for _, path in hub.requests)
    assert any(path == "/api/validate-yaml" for _, path in hub.requests)
    assert pushed["clf_commits"] == 2 and pushed["gen_commits"] == 2  # initial commit + upload


def test_scan_finds_the_samples_before_they_are_forgotten(originals, pushed):
    """Positive control for the audit below: the scan does see every row and id while they exist."""
    assert pushed["clf_pre"] == set(originals["clf_needles"])
    assert pushed["gen_pre"] == set(originals["gen_needles"])


def test_load_by_repo_id_in_a_fresh_process(originals, reloaded_and_forgotten):
    out = reloaded_and_forgotten
    assert out["clf_n"] == 60 and out["clf_module"] == "spm_hf.modeling_spm"
    assert out["processor"] == "ViTImageProcessorPil"
    torch.testing.assert_close(torch.tensor(out["logits"]), originals["logits"].float())
    torch.testing.assert_close(torch.tensor(out["gen"]), torch.tensor(originals["gen"]))


def test_push_without_squash_after_forget_warns(hub, reloaded_and_forgotten):
    out = reloaded_and_forgotten
    assert out["kept_squashed"] is False
    assert len(out["warnings"]) == 1 and "still holds the deleted samples" in out["warnings"][0]
    assert len(hub.repo(GEN_REPO + "-kept-history").commits) == 2


def test_forget_then_push_leaves_no_forgotten_row_image_or_id_in_any_revision(hub, originals, reloaded_and_forgotten):
    out = reloaded_and_forgotten
    for repo, needles, kept in ((CLF_REPO, "clf_needles", "clf_kept"), (GEN_REPO, "gen_needles", "gen_kept")):
        assert find(originals[needles], every_revision_bytes(hub, repo)) == set(), f"{repo} still holds forgotten bytes"
        assert find(originals[kept], every_revision_bytes(hub, repo)) == set(originals[kept])  # retained rows remain
        assert len(hub.repo(repo).commits) == 1, f"{repo}: history not squashed"
    assert out["squashed"] is True and out["purged"], "the old memory's LFS object must be purged"
    assert "history squashed" in out["cli"]
    # the LFS store holds exactly the objects the head uses
    for repo in (CLF_REPO, GEN_REPO):
        r = hub.repo(repo)
        head = r.commits[r.branches["main"]]
        assert set(r.lfs) == {e.lfs_sha256 for e in head.files.values() if e.lfs_sha256}


def _cached_bytes(home, repo: str) -> list[tuple[str, bytes]]:
    """`(path, bytes)` of every file the local Hugging Face cache under `home` keeps for `repo`."""
    folder = home / "hub" / ("models--" + repo.replace("/", "--"))
    return [(str(p), p.read_bytes()) for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_forget_and_push_delete_the_old_revisions_from_the_local_cache(originals, reloaded_and_forgotten):
    root, out = originals["root"], reloaded_and_forgotten
    # the CLI path: `spm-hf forget --model REPO ... --push`
    assert "local cache: removed" in out["cli"] and CLF_REPO in out["cli"]
    assert find(originals["clf_needles"], _cached_bytes(root / "home-cli", CLF_REPO)) == set()
    # the Python path: the first push (kept) was asked to keep nothing special, so it already purged; the
    # second found nothing stale left to report
    assert out["kept_cache"].startswith("local cache: removed") and out["local_cache"] == "None"
    assert find(originals["gen_needles"], _cached_bytes(root / "home-reload", GEN_REPO)) == set()
    # a repo that nothing was forgotten from stays cached
    assert _cached_bytes(root / "home-reload", CLF_REPO)


def test_keep_local_cache_warns_and_says_so(hub, originals, pushed, tmp_path):
    out = run_client(hub, f"""
        import json, warnings
        from spm_hf import SPMForImageClassification
        from spm_hf.hub import ForgetNotPropagatedWarning
        clf = SPMForImageClassification.from_pretrained({CLF_REPO!r})
        clf.forget(ids=[clf.memory.ids[3]])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = clf.purge_local_cache(keep=True)
        print(json.dumps({{"report": str(report), "kept": report.kept, "stale": clf.stale_local_cache is not None,
                          "warned": any(issubclass(w.category, ForgetNotPropagatedWarning) for w in caught)}}))
        """, tmp_path / "home-keep")
    assert out["kept"] and out["stale"] and out["warned"] and "still holds" in out["report"]


def test_cards_parse_validate_and_reflect_the_forget(hub, originals, reloaded_and_forgotten, tmp_path):
    out = run_client(hub, f"""
        import json
        from huggingface_hub import ModelCard
        from spm_hf import SPMForImageClassification, SPMDiffusionPipeline
        result = {{}}
        for key, repo in (("clf", {CLF_REPO!r}), ("gen", {GEN_REPO!r})):
            card = ModelCard.load(repo)
            card.validate()          # POST /api/validate-yaml; raises ValueError on invalid metadata
            result[key] = {{"text": card.text, "data": card.data.to_dict()}}
        clf = SPMForImageClassification.from_pretrained({CLF_REPO!r})
        pipe = SPMDiffusionPipeline.from_pretrained({GEN_REPO!r})
        result["clf_state"] = {{"n": len(clf.memory), "digest": clf.memory.digest(), "cat": clf.memory.class_counts()["cat"]}}
        result["gen_state"] = {{"n": len(pipe.memory), "digest": pipe.memory.digest()}}
        print(json.dumps(result))
        """, tmp_path / "home-online")
    assert out["clf_state"] == {**originals["clf_after"], "cat": 0}
    assert out["gen_state"] == originals["gen_after"]
    clf, gen = out["clf"], out["gen"]
    assert clf["data"]["library_name"] == "transformers" and clf["data"]["pipeline_tag"] == "image-classification"
    assert gen["data"]["library_name"] == "diffusers"
    for card in (clf, gen):
        assert "machine-unlearning" in card["data"]["tags"] and card["data"]["license"] == "apache-2.0"
        text = card["text"]
        for heading in ("## Intended use", "## How to forget", "## What deletion guarantees, and what it does not",
                        "## Deletion ledger", "## Training recipe", "trained with the deleted `trained_on`"):
            assert heading in text
        assert "1 forget event" in text
    for card, needles in ((clf, originals["clf_needles"]), (gen, originals["gen_needles"])):
        leaked = [name for name, needle in needles.items() if name.startswith("id:") and needle.strip(b'"').decode() in card["text"]]
        assert leaked == []  # no forgotten id in the card
    assert clf["data"]["datasets"] == ["uoft-cs/cifar10"]
    assert f"`{originals['clf_after']['digest']}`" in clf["text"] and "| cat | 0 (forgotten) |" in clf["text"]
    assert f"`{originals['gen_after']['digest']}`" in gen["text"] and "| cow | 0 (forgotten) |" in gen["text"]
    # the training-time accuracy predates the forget: it stays in the table but leaves the model-index
    assert "model-index" not in clf["data"] and "41.5" in clf["text"] and "an earlier memory" in clf["text"]
    # the Hub-side view of the card metadata is the same
    info = http_json(f"{hub.url}/api/models/{CLF_REPO}")
    assert info["cardData"]["tags"] == clf["data"]["tags"]

    # offline, from the cache filled above: same state, and an uncached repo is not reachable
    offline = run_client(hub, f"""
        import json
        from spm_hf import SPMForImageClassification, SPMDiffusionPipeline
        clf = SPMForImageClassification.from_pretrained({CLF_REPO!r})
        pipe = SPMDiffusionPipeline.from_pretrained({GEN_REPO!r})
        try:
            SPMForImageClassification.from_pretrained({GEN_REPO + "-kept-history"!r})
            reached = True
        except OSError:
            reached = False
        print(json.dumps({{"clf": [len(clf.memory), clf.memory.digest()], "gen": [len(pipe.memory), pipe.memory.digest()],
                          "uncached_reached": reached}}))
        """, tmp_path / "home-online", offline=True)
    assert offline["clf"] == [originals["clf_after"]["n"], originals["clf_after"]["digest"]]
    assert offline["gen"] == [originals["gen_after"]["n"], originals["gen_after"]["digest"]]
    assert offline["uncached_reached"] is False


def test_pushed_classifier_loads_with_trust_remote_code_without_spm_hf(hub, originals, reloaded_and_forgotten, tmp_path):
    out = run_client(hub, f"""
        import json
        import torch
        from transformers import AutoModelForImageClassification, pipeline
        from PIL import Image
        model = AutoModelForImageClassification.from_pretrained({CLF_REPO!r}, trust_remote_code=True).eval()
        images = torch.load({str(originals["root"] / "inputs.pt")!r})["images"]
        with torch.no_grad():
            probs = model(images).logits.exp()
        clf = pipeline("image-classification", model={CLF_REPO!r}, trust_remote_code=True)
        top = clf(Image.new("RGB", (32, 32), (120, 30, 200)), top_k=5)
        n, digest = len(model.memory), model.memory.digest()
        model.forget(classes=["bird"])             # the remote code carries forget + card writing (hub.py)
        model.save_pretrained({str(tmp_path / "resaved")!r})
        card = open({str(tmp_path / "resaved" / "README.md")!r}).read()
        print(json.dumps({{"module": type(model).__module__, "n": n, "digest": digest,
                          "cat_prob": probs[:, {CLASSES.index("cat")}].max().item(),
                          "scores": {{t["label"]: t["score"] for t in top}}, "card": card}}))
        """, tmp_path / "home-remote", hide_spm_hf=True)
    assert out["module"].startswith("transformers_modules.")
    assert [out["n"], out["digest"]] == [originals["clf_after"]["n"], originals["clf_after"]["digest"]]
    assert out["cat_prob"] == 0.0 and out["scores"].get("cat", 0.0) == 0.0
    # without hub_cards/ the remote code writes the short built-in card, still from the live memory
    assert "2 forget events" in out["card"] and "bird 0" in out["card"] and "cat 0" in out["card"]


def test_a_push_over_a_newer_push_fails_instead_of_undoing_it(hub, originals, pushed, tmp_path):
    """Two clients load the same commit and forget different classes: the later push names the commit it
    was loaded from as its parent, so it fails instead of bringing back the first push's class."""
    race = f"{USER}/spm-race"
    out = run_client(hub, f"""
        import json
        from spm_hf import SPMForImageClassification
        from spm_hf.hub import RepoChangedError
        SPMForImageClassification.from_pretrained({str(originals["root"] / "clf")!r}).push_to_hub({race!r})
        first, second = (SPMForImageClassification.from_pretrained({race!r}) for _ in range(2))
        first.forget(classes=["cat"])
        first.push_to_hub({race!r})
        second.forget(classes=["bird"])
        try:
            second.push_to_hub({race!r})
            error = None
        except RepoChangedError as e:
            error = str(e)
        first.forget(classes=["deer"])
        first.push_to_hub({race!r})  # its own last push is the parent it names: accepted
        second.push_to_hub({race!r} + "-copy")  # another repo: nothing to race with
        head = SPMForImageClassification.from_pretrained({race!r}).memory.class_counts()
        print(json.dumps({{"error": error, "head": head, "parent": second.hub_origin.commit}}))
        """, tmp_path / "home-race")
    assert out["error"] is not None and "has moved since commit" in out["error"] and "overwrite=True" in out["error"]
    assert out["error"].startswith(f"{race}@main") and out["parent"][:12] in out["error"]
    assert (out["head"]["cat"], out["head"]["deer"], out["head"]["bird"]) == (0, 0, 12)
    copy = hub.repo(race + "-copy")
    assert "sample_memory.json" in copy.commits[copy.branches["main"]].files


def test_pushed_generator_loads_with_diffusers_remote_code_without_spm_hf(hub, originals, reloaded_and_forgotten,
                                                                         tmp_path):
    """`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` where spm_hf is not installed: diffusers
    downloads the pipeline's and its components' code with the weights and the memory, and generates the
    images the pushed (forgotten) pipeline generates."""
    expected = make_generator()
    expected.forget(classes=[GEN_FORGET_CLASS], ids=GEN_FORGET_IDS)
    want = expected(["ant", "bee"], num_inference_steps=2, support_size=4, generator=torch.Generator().manual_seed(0),
                    output_type="np").images
    out = run_client(hub, f"""
        import json
        import torch
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained({GEN_REPO!r}, trust_remote_code=True)
        pipe.set_progress_bar_config(disable=True)
        gen = pipe(["ant", "bee"], num_inference_steps=2, support_size=4, generator=torch.Generator().manual_seed(0),
                   output_type="np").images
        half = DiffusionPipeline.from_pretrained({GEN_REPO!r}, trust_remote_code=True, dtype=torch.float16)
        print(json.dumps({{"module": type(pipe).__module__, "unet": type(pipe.unet).__module__, "gen": gen.tolist(),
                          "state": [len(pipe.memory), pipe.memory.digest()], "cow": pipe.memory.class_counts()["cow"],
                          "half": [str(half.dtype), str(half.unet.dtype)]}}))
        """, tmp_path / "home-diffusers", hide_spm_hf=True)
    assert out["module"].startswith("diffusers_modules.") and out["unet"].startswith("diffusers_modules.")
    assert out["state"] == [originals["gen_after"]["n"], originals["gen_after"]["digest"]] and out["cow"] == 0
    torch.testing.assert_close(torch.tensor(out["gen"]), torch.tensor(want))
    assert out["half"] == ["torch.float16", "torch.float16"]


def test_hf_xet_is_installed_and_our_pushes_take_the_lfs_path(hub, originals, tmp_path):
    """The clients run as a user's does, with hf_xet installed and enabled: a plain huggingface_hub upload of a
    large file then goes to Xet (which the test Hub does not speak: it answers 404), while spm_hf's pushes send
    their files through Git LFS and leave huggingface_hub's switch as they found it."""
    repo = f"{USER}/spm-xet-probe"
    out = run_client(hub, f"""
        import json
        from huggingface_hub import HfApi
        from huggingface_hub.utils._runtime import is_xet_available
        from spm_hf.hub import push_folder
        api = HfApi()
        api.create_repo({repo!r}, exist_ok=True)
        before = is_xet_available()
        try:
            api.upload_file(path_or_fileobj=b"0" * 64, path_in_repo="weights.safetensors", repo_id={repo!r})
            plain = None
        except Exception as e:
            plain = type(e).__name__
        result = push_folder({str(originals["root"] / "clf")!r}, {repo!r})
        print(json.dumps({{"xet": before, "plain": plain, "commit": result.commit_oid, "xet_after": is_xet_available()}}))
        """, tmp_path / "home-xet")
    assert out["xet"] is True and out["xet_after"] is True
    assert out["plain"] is not None and any(path.endswith(f"{repo}/xet-write-token/main") for _, path in hub.requests)
    head = hub.repo(repo).commits[hub.repo(repo).branches["main"]]
    assert out["commit"] == head.oid and "weights.safetensors" not in head.files
    assert head.files["sample_memory.safetensors"].lfs_sha256 and head.files["model.safetensors"].lfs_sha256
    assert any(path == f"/{repo}.git/info/lfs/objects/batch" for _, path in hub.requests)


def test_a_push_keeps_the_users_remote_files_and_replaces_the_models_own(hub, originals, tmp_path):
    """A push replaces what a save replaces: the folders it writes whole (a stale weight shard in `unet/` goes,
    another variant's weights stay) and the memory; a file of the user's (`NOTES.md`) survives the push and
    the squash after a forget; `delete_patterns="*"` makes the repo hold exactly the saved folder."""
    repo = f"{USER}/spm-notes"
    out = run_client(hub, f"""
        import json
        from huggingface_hub import HfApi
        from spm_hf import SPMDiffusionPipeline
        from spm_hf.hub import lfs_transfer
        api = HfApi()
        SPMDiffusionPipeline.from_pretrained({str(originals["root"] / "gen")!r}).push_to_hub({repo!r})
        api.upload_file(path_or_fileobj=b"my notes", path_in_repo="NOTES.md", repo_id={repo!r})
        with lfs_transfer():  # files a user (or an older save) put there
            for path in ("unet/diffusion_pytorch_model-00002-of-00002.safetensors",
                         "unet/diffusion_pytorch_model.fp16.safetensors", "memory/stale.safetensors"):
                api.upload_file(path_or_fileobj=path.encode(), path_in_repo=path, repo_id={repo!r})
        pipe = SPMDiffusionPipeline.from_pretrained({repo!r})
        pipe.forget(classes=["cow"])
        forgot = pipe.push_to_hub({repo!r})
        after_forget = api.list_repo_files({repo!r})
        mirror = pipe.push_to_hub({repo!r}, delete_patterns="*")
        print(json.dumps({{"deleted": forgot.deleted_files, "squashed": forgot.squashed, "after": after_forget,
                          "mirror_deleted": mirror.deleted_files, "final": api.list_repo_files({repo!r})}}))
        """, tmp_path / "home-notes")
    assert out["squashed"] is True and len(hub.repo(repo).commits) == 1  # each push after a forget squashes
    assert out["deleted"] == ["memory/stale.safetensors", "unet/diffusion_pytorch_model-00002-of-00002.safetensors"]
    assert {"NOTES.md", "unet/diffusion_pytorch_model.fp16.safetensors", "memory/sample_memory.json",
            "unet/diffusion_pytorch_model.safetensors", "pipeline_spm.py"} <= set(out["after"])
    assert out["mirror_deleted"] == ["NOTES.md", "unet/diffusion_pytorch_model.fp16.safetensors"]
    assert "NOTES.md" not in out["final"] and "memory/sample_memory.json" in out["final"]


def test_a_push_uploads_no_training_checkpoint_or_pickle(hub, originals, tmp_path):
    """A training output folder keeps its Trainer checkpoints in `checkpoints/` (optimizer.pt, rng_state.pth,
    training_args.bin: pickles); pushing the folder, directly or with `spm-hf push`, uploads none of them, and a
    pickle elsewhere in a folder is refused by name."""
    import shutil

    folder = tmp_path / "trained"
    shutil.copytree(originals["root"] / "clf", folder)
    checkpoint = folder / "checkpoints" / "checkpoint-12"
    checkpoint.mkdir(parents=True)
    for name in ("optimizer.pt", "rng_state.pth", "scheduler.pt", "training_args.bin"):
        torch.save({"state": torch.zeros(3)}, checkpoint / name)
    (checkpoint / "trainer_state.json").write_text("{}")
    shutil.copy(folder / "model.safetensors", checkpoint / "model.safetensors")
    repo, cli_repo = f"{USER}/spm-no-pickle", f"{USER}/spm-no-pickle-cli"
    out = run_client(hub, f"""
        import json, shutil
        from spm_hf.hub import push_folder
        push_folder({str(folder)!r}, {repo!r})
        shutil.copy({str(checkpoint / "optimizer.pt")!r}, {str(folder / "stray.pt")!r})
        try:
            push_folder({str(folder)!r}, {repo!r})
            refused = None
        except ValueError as e:
            refused = str(e)
        print(json.dumps({{"refused": refused}}))
        """, tmp_path / "home-pickle")
    (folder / "stray.pt").unlink()
    run_client(hub, "", tmp_path / "home-pickle", argv=["push", str(folder), cli_repo])
    assert out["refused"] is not None and "stray.pt" in out["refused"] and "pickle" in out["refused"]
    for name in (repo, cli_repo):
        r = hub.repo(name)
        assert "sample_memory.safetensors" in r.commits[r.branches["main"]].files
        for label, data in hub.retained_bytes(name):
            assert not data.startswith((b"\x80", b"PK\x03\x04")), f"{name} {label}: a pickle or zip was uploaded"
        paths = {p for c in r.commits.values() for p in c.files}
        assert not any(p.startswith("checkpoints/") or p.endswith((".pt", ".pth", ".bin")) for p in paths), paths


def test_branches_tags_and_pull_requests(hub, originals, tmp_path):
    """Pushing to a branch creates it; `create_pr=True` opens a pull request and leaves main and its history
    alone (warning that they keep the forgotten samples); a forget pushed to main squashes main only, keeps
    the files other refs use, and names those refs; once they are deleted, squashing again purges main's
    old memory, and what a pull request's ref keeps is the one thing left to delete on the Hub."""
    repo = f"{USER}/spm-refs"
    out = run_client(hub, f"""
        import json, warnings
        from huggingface_hub import HfApi
        from spm_hf import SPMForImageClassification
        from spm_hf.hub import ForgetNotPropagatedWarning, squash_repo_history
        api = HfApi()
        def counts(revision=None):
            return SPMForImageClassification.from_pretrained({repo!r}, revision=revision).memory.class_counts()["cat"]
        def caught(call):
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                result = call()
            return result, [str(w.message) for w in seen if issubclass(w.category, ForgetNotPropagatedWarning)]
        model = SPMForImageClassification.from_pretrained({str(originals["root"] / "clf")!r})
        model.push_to_hub({repo!r})
        api.create_tag({repo!r}, tag="v1")
        dev = model.push_to_hub({repo!r}, revision="dev")
        branches = sorted(b.name for b in api.list_repo_refs({repo!r}).branches)
        main_before = api.repo_info({repo!r}).sha
        loaded = SPMForImageClassification.from_pretrained({repo!r})
        loaded.forget(classes=["cat"])
        pr, pr_warnings = caught(lambda: loaded.push_to_hub({repo!r}, create_pr=True))
        main_after_pr = api.repo_info({repo!r}).sha
        try:
            loaded.push_to_hub({repo!r}, create_pr=True, squash_history=True)
            refused = None
        except ValueError as e:
            refused = str(e)
        state = {{"pr_cat": counts(pr.pr_revision), "main_cat": counts()}}
        final, final_warnings = caught(lambda: loaded.push_to_hub({repo!r}))
        state.update(tag_cat=counts("v1"), dev_cat=counts("dev"), main_after=counts())
        api.delete_tag({repo!r}, tag="v1")
        api.delete_branch({repo!r}, branch="dev")
        squash_repo_history({repo!r})
        print(json.dumps({{"dev": dev.commit_oid, "branches": branches, "pr": [pr.pr_url, pr.pr_revision, str(pr)],
                          "refused": refused,
                          "main": [main_before, main_after_pr], "pr_warnings": pr_warnings, **state,
                          "final": [final.squashed, final.commit_oid], "final_warnings": final_warnings}}))
        """, tmp_path / "home-refs")
    r = hub.repo(repo)
    # a branch and a pull request
    # (the same files pushed to the new branch commit nothing: huggingface_hub skips an empty commit)
    assert out["branches"] == ["dev", "main"] and out["dev"] == out["main"][0] == out["main"][1]
    assert out["pr"][1] == "refs/pr/1" and out["pr"][0].endswith(f"/{repo}/discussions/1")
    assert "opened pull request" in out["pr"][2]
    assert len(out["pr_warnings"]) == 1 and "still hold the deleted samples" in out["pr_warnings"][0]
    assert out["refused"] is not None and "create_pr=True" in out["refused"]
    assert (out["pr_cat"], out["main_cat"]) == (0, 12)
    # the forget pushed to main: main squashed, the other refs untouched (their files kept) and named
    assert out["final"][0] is True and (out["main_after"], out["tag_cat"], out["dev_cat"]) == (0, 12, 12)
    assert len(out["final_warnings"]) == 1
    assert all(ref in out["final_warnings"][0] for ref in ("refs/heads/dev", "refs/tags/v1", "refs/pr/1"))
    # tag and branch deleted, squashed again: main's revisions hold no cat; the pull request's ref still reaches
    # the commit it was opened from (the Hub keeps a PR's history until its ref is deleted on the PR's page)
    needles, kept = forgotten_needles(make_classifier().memory, {"cat"}, set())
    main_history = [(f"{c.oid[:8]}:{p}", hub._content(r, e)) for c in [r.commits[r.branches["main"]]]
                    for p, e in c.files.items()]
    assert len(r.commits[r.branches["main"]].parents) == 0 and find(needles, main_history) == set()
    assert find(kept, main_history) == set(kept)
    pr_base = r.commits[r.commits[r.pull_requests[1]].parents[0]]
    assert {n for n in find(needles, [(p, hub._content(r, e)) for p, e in pr_base.files.items()]) if n.startswith("id:")}
    assert not any(find(needles, [("lfs", obj["data"])]) for obj in r.lfs.values())  # its old LFS objects are gone


# ---------------------------------------------------------------------- in-process (no Hub client)
def test_save_pretrained_writes_the_card_and_every_forget_updates_it(tmp_path):
    model = make_classifier()
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.eval_results and card.data.eval_results[0].metric_value == 41.5  # pristine memory: in the index
    assert "No sample has been deleted" in card.text and "| cat | 12 |" in card.text
    receipt = model.forget(classes=["cat"])
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.eval_results is None
    assert "| cat | 0 (forgotten) |" in card.text and receipt.digest_after in card.text
    assert "1 forget event, 12 samples deleted" in card.text and "--classes cat" in card.text
    assert not validate_card_metadata(str(card), "model")[0]
    model.forget(ids=["train/00001"])
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert "2 forget events, 13 samples deleted" in card.text and "--ids-file" in card.text
    assert "train/00001" not in (tmp_path / "README.md").read_text()


def test_generator_card_and_space_card_validate(tmp_path):
    pipe = make_generator()
    pipe.card_info = {"gap_to_retrain": {"metric": "FID_O", "value": 12.5, "forgotten": "cow"}}
    pipe.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "diffusers" and "class-conditional" in card.data.tags
    assert "Measured gap to retraining: FID_O = 12.5 after forgetting cow" in card.text
    assert not validate_card_metadata(str(card), "model")[0]
    space = space_card(models=[CLF_REPO, GEN_REPO])
    assert space.data.sdk == "gradio" and f"https://huggingface.co/{CLF_REPO}" in space.text
    errors, _ = validate_card_metadata(str(space), "space")
    assert errors == []


def test_generator_card_metrics_name_how_the_images_were_sampled():
    """A judge accuracy at guidance 15 is not one at guidance 1.3: the card's metric names carry the settings."""
    from spm_hf.hub import generator_card

    pipe = make_generator()
    report = {"settings": {"guidance_scale": 15.0, "num_inference_steps": 50, "samples_per_class": 50},
              "before": {"fid": 80.25, "judge_accuracy_mean": 42.5}}
    card = generator_card(pipe, eval_report=report, training_config={"preset": "cifar10-cpu", "dataset": "cifar10"})
    assert "guidance 15.0, steps 50, images per class 50" in card.text  # the table too
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    sampled = "(guidance 15.0, steps 50, images per class 50)"
    assert results == {f"FID (generated vs real test images) {sampled}": 80.25,
                       f"judge accuracy (%), mean over classes {sampled}": 42.5}
    assert not validate_card_metadata(str(card), "model")[0]


def test_fake_hub_rejects_invalid_card_metadata():
    bad = "---\nlicense: not-a-licence\nmodel-index:\n- name: x\n  results:\n  - task: {type: image-classification}\n" \
          "    dataset: {type: d, name: D}\n    metrics: [{type: accuracy}]\n---\n# x\n"
    messages = [e["message"] for e in validate_card_metadata(bad, "model")[0]]
    assert any("license" in m for m in messages) and any("metrics[0].value" in m for m in messages)


def test_push_folder_refuses_to_skip_squash_silently(tmp_path):
    """`squash_history=False` with forget events warns before touching the network (so this runs
    in-process against an unreachable endpoint: the warning is the point)."""
    memory = make_memory()
    memory.forget(classes=["cat"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Exception):
            push_folder(tmp_path, "x/y", memory=memory, squash_history=False, endpoint="http://127.0.0.1:9")
    assert any(issubclass(w.category, ForgetNotPropagatedWarning) for w in caught)


def test_cli_forget_refuses_a_deletion_that_would_not_be_kept(capsys):
    from spm_hf.cli import build_parser, main

    args = build_parser().parse_args(["forget", "--model", "user/repo", "--classes", "cat", "--push"])
    assert args.push is True and args.classes == ["cat"]
    args = build_parser().parse_args(["forget", "--model", "dir", "--classes", "cat", "--push", "user/other"])
    assert args.push == "user/other"
    args = build_parser().parse_args(["push", "dir", "user/repo", "--keep-history"])
    assert (args.model_dir, args.repo_id, args.keep_history) == ("dir", "user/repo", True)
    with pytest.raises(SystemExit, match="would not be kept"):
        main(["forget", "--model", "user/repo-that-is-not-a-folder", "--classes", "cat"])
    with pytest.raises(SystemExit, match="needs a REPO_ID"):
        main(["forget", "--model", os.path.dirname(__file__), "--classes", "cat", "--push"])


def test_lfs_purge_deletes_only_unreferenced_objects_and_fails_safe():
    from types import SimpleNamespace

    from huggingface_hub.hf_api import RepoFile

    from spm_hf.hub import purge_unreferenced_lfs_files

    class Api:
        def __init__(self, listing):
            self.listing, self.deleted = listing, None

        def list_repo_tree(self, *a, **k):
            return [RepoFile(path="m.safetensors", size=3, oid="b" * 40, lfs={"oid": "a" * 64, "size": 3, "pointerSize": 9})]

        def list_lfs_files(self, *a, **k):
            return self.listing

        def permanently_delete_lfs_files(self, repo_id, files, **k):
            self.deleted = [f.oid for f in files]

    live, old = (SimpleNamespace(oid=x * 64, file_oid=x * 64) for x in "ac")
    api = Api([live, old])
    assert purge_unreferenced_lfs_files(api, "u/r") == ["c" * 64] and api.deleted == ["c" * 64]
    api = Api([SimpleNamespace(oid="x1", file_oid="y1"), SimpleNamespace(oid="x2", file_oid="y2")])  # unknown ids
    with pytest.warns(ForgetNotPropagatedWarning, match="no LFS object was deleted"):
        assert purge_unreferenced_lfs_files(api, "u/r") == []
    assert api.deleted is None


def test_card_templates_ship_as_package_data_and_render_from_the_installed_package(tmp_path):
    """The templates are read through importlib.resources from the installed package, and a wheel built
    from this checkout carries them (without `[tool.setuptools.package-data]` it would not)."""
    import importlib.resources
    import shutil
    import zipfile

    from spm_hf.hub import TEMPLATES, render_model_card, templates_dir

    shipped = importlib.resources.files("spm_hf") / "hub_cards"
    assert str(templates_dir()) == str(shipped)
    card, sidecars = render_model_card(make_classifier())
    assert card.text.startswith("\n# SPM image classifier") and "## Intended use" in card.text  # the full template
    assert sidecars == {"training_summary.json": SUMMARY} and os.listdir(tmp_path) == []  # rendering writes nothing

    root = os.path.dirname(SRC)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(root, name), tmp_path / name)
    shutil.copytree(os.path.join(SRC, "spm_hf"), tmp_path / "src" / "spm_hf",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = subprocess.run([sys.executable, "-c", "from setuptools import build_meta; print(build_meta.build_wheel('dist'))"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "dist" / build.stdout.strip().splitlines()[-1]) as wheel:
        for name in TEMPLATES.values():
            assert wheel.read(f"spm_hf/hub_cards/{name}") == (shipped / name).read_bytes()


def test_without_templates_the_card_warns_and_falls_back_to_the_built_in_one(tmp_path, monkeypatch):
    import spm_hf.hub as hub_module

    monkeypatch.setattr(hub_module, "templates_dir", lambda: None)  # as in a remote-code copy of hub.py
    model = make_classifier()
    model.forget(classes=["cat"])
    with pytest.warns(hub_module.CardTemplateWarning, match="short built-in card"):
        model.save_pretrained(tmp_path / "clf")
    card = (tmp_path / "clf" / "README.md").read_text()
    assert "1 forget event" in card and "cat 0" in card and model.memory.digest() in card
    with pytest.raises(FileNotFoundError, match="space.md"):
        space_card(models=[CLF_REPO])


def test_what_a_push_replaces_uploads_and_refuses(tmp_path):
    """In-process: which remote files a push deletes (`replaced_remote_files`), which local files it uploads
    (`upload_paths`), and the refusals that come before any request."""
    from spm_hf.hub import replaced_remote_files, upload_paths

    remote = [".gitattributes", "NOTES.md", "README.md", "model.safetensors", "model-00001-of-00002.safetensors",
              "model-00002-of-00002.safetensors", "model.fp16.safetensors", "sample_memory.json", "unet/config.json",
              "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
              "unet/diffusion_pytorch_model-00001-of-00002.safetensors", "memory/old.json", "extra/notes.txt"]
    owned = SPMForImageClassification.owned_files
    # a sharded classifier save replaced by a single file: the old shards go, the fp16 variant and NOTES.md stay
    uploaded = ["README.md", "config.json", "model.safetensors", "sample_memory.json", "sample_memory.safetensors"]
    assert replaced_remote_files(remote, uploaded, owned) == ["model-00001-of-00002.safetensors",
                                                              "model-00002-of-00002.safetensors"]
    # a generator save: the folders it writes are replaced whole, other variants' weights excepted
    uploaded = ["README.md", "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                "memory/config.json"]
    assert replaced_remote_files(remote, uploaded, ("memory", "model_index.json")) == [
        "memory/old.json", "unet/diffusion_pytorch_model-00001-of-00002.safetensors"]
    assert replaced_remote_files(remote, uploaded, (), ["*"]) == sorted(set(remote) - set(uploaded) - {".gitattributes"})

    folder = tmp_path / "out"
    (folder / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-1" / "optimizer.pt").write_bytes(b"\x80\x04")
    (folder / "unet" / "__pycache__").mkdir(parents=True)
    (folder / "unet" / "__pycache__" / "unet_spm.cpython-311.pyc").write_bytes(b"")
    (folder / "unet" / "unet_spm.py").write_text("")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x").write_text("")
    (folder / "README.md").write_text("")
    assert upload_paths(folder) == ["README.md", "unet/unet_spm.py"]
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match=r"refusing to push pickle files .*unet/diffusion_pytorch_model\.bin"):
        upload_paths(folder)
    # a pull request cannot squash the branch: refused before any request (the endpoint is unreachable)
    memory = make_memory()
    memory.forget(classes=["cat"])
    with pytest.raises(ValueError, match="cannot also squash"):
        push_folder(tmp_path, "x/y", memory=memory, create_pr=True, squash_history=True, endpoint="http://127.0.0.1:9")
    with pytest.raises(TypeError, match="create_pr must be True or False"):
        push_folder(tmp_path, "x/y", memory=memory, create_pr="yes", endpoint="http://127.0.0.1:9")


def test_cli_push_and_forget_take_branch_pull_request_and_delete_options():
    from spm_hf.cli import build_parser, main

    args = build_parser().parse_args(["push", "dir", "u/r", "--revision", "dev", "--create-pr", "--delete-remote", "*.md",
                                      "--delete-remote", "old/*"])
    assert (args.revision, args.create_pr, args.delete_remote) == ("dev", True, ["*.md", "old/*"])
    args = build_parser().parse_args(["forget", "--model", "u/r", "--classes", "cat", "--push", "--create-pr"])
    assert args.create_pr is True
    with pytest.raises(SystemExit, match="--create-pr .* needs --push"):
        main(["forget", "--model", os.path.dirname(__file__), "--classes", "cat", "--create-pr"])
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["push"].format_help().split())
    assert "one commit" in text and "NOTES.md" in text and "never uploaded" in text and "squashed" in text
