"""`FakeHub`: a local HTTP server that speaks the part of the Hugging Face Hub API that spm_hf uses.

The Hub is unreachable from the machines this suite runs on, and huggingface_hub >= 2 talks over
`httpx2`, which respx / pytest-httpx / responses do not intercept, and no local Hub server is published.
So the tests run the real client against this server: `HF_ENDPOINT=<FakeHub.url>`, any `HF_TOKEN`.

Faithfulness. Routes, status codes, `X-Error-Code` headers and JSON bodies follow what huggingface_hub
2.4 sends and parses (read in its source: `hf_api.py`, `_commit_api.py`, `lfs.py`, `file_download.py`,
`_snapshot_download.py`, `repocard.py`), so a client call that works here sends the same requests to
huggingface.co. Keep it that way when extending it: mirror the real JSON, never invent a shortcut.

    POST /api/repos/create                             {"url", "name", "id"}; 409 + {"error", "url"} if it exists
    POST/DELETE /api/{type}s/{repo}/branch/{branch}    create ({"startingPoint"}: a revision) / delete a branch
    POST /api/{type}s/{repo}/tag/{rev}                 {"tag", "message"}: tag a revision; DELETE .../tag/{tag}
    POST /api/validate-yaml                            card metadata checks (a subset of the Hub's schema)
    POST /api/{type}s/{repo}/preupload/{rev}           {"files": [{"path", "uploadMode", "shouldIgnore", "oid"}]}
    POST /{prefix}{repo}.git/info/lfs/objects/batch    git-lfs batch API, "basic" transfer
    PUT  /__lfs/...  POST /__lfs_verify/...            the upload / verify hrefs handed out by the batch API
    POST /api/{type}s/{repo}/commit/{rev}              NDJSON header / file / lfsFile / deletedFile / deletedFolder;
                                                       `?create_pr=1` commits to a new pull request `refs/pr/N`
    POST /api/{type}s/{repo}/super-squash/{branch}     replaces the branch's history by one commit
    GET  /api/{type}s/{repo}[/revision/{rev}]          repo info: id, sha, private, siblings, cardData
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]       [{"type", "oid", "size", "path", "lfs"?}]
    GET  /api/{type}s/{repo}/commits/{rev}             [{"id", "title", "message", "authors", "date"}]
    GET  /api/{type}s/{repo}/refs                      {"branches", "converts", "tags", "pullRequests"}
                                                       (pull requests listed with `?include_prs=1`)
    GET  /api/{type}s/{repo}/lfs-files                 [{"fileOid", "oid", "size", "pushedAt", "filename", "ref"}]
    POST /api/{type}s/{repo}/lfs-files/batch           {"deletions": {"sha": [...], "rewriteHistory"}}
    HEAD/GET /{prefix}{repo}/resolve/{rev}/{path}      bytes; ETag, X-Repo-Commit, X-Linked-Etag/-Size (LFS)
    GET  /api/whoami-v2

Storage model, as on the Hub: files matching `lfs_patterns` (the Hub's default `.gitattributes`,
which every new repo gets in its initial commit) are uploaded through the LFS batch API and kept in
a per-repo LFS store; the others are git blobs. Refs are branches, tags and pull requests
(`refs/pr/N`, opened by a commit with `create_pr`; `revision="refs/pr/N"` resolves and commits to one).
Commits are kept until no ref reaches them (after a super-squash of a branch its old commits are
dropped unless a tag or pull request still reaches them, with the git blobs only they used: the Hub's
garbage collection, done at once). LFS objects, as on the Hub, outlive the commits that referenced them
until `permanently_delete_lfs_files` removes them: a squash alone leaves their bytes on the server.

Not modelled: Xet storage. With `hf_xet` installed, huggingface_hub uploads through Xet (a token from
`/xet-write-token`, then xorbs and shards to a CAS server): this server answers those 404, so a client
upload succeeds only through the LFS batch API, which spm_hf's pushes use deliberately
(`spm_hf.hub.lfs_transfer`). Downloads need nothing: the server sends no Xet headers, so the client
fetches plain HTTP. Also not modelled: discussions (a pull request is its ref and its URL only),
merging pull requests, private-repo access control, pagination (everything fits in one page). The
body of the super-squash reply (`{"commitId"}`) and the `name` of a pull request in the refs listing
(`refs/pr/N`) are guesses; the client reads neither.

`FakeHub.retained_bytes(repo_id)` yields everything the server still holds for a repo (every file of
every commit it keeps, every git blob, every LFS object) so a test can audit it byte by byte.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml


# The Hub's default .gitattributes for a new repo (LFS part; abridged to the patterns that matter here).
DEFAULT_LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
    "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
    "*.pth", "*.rar", "*.safetensors", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst",
    "*tfevents*",
)
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS).encode()

# Subsets of the Hub's allowed values (https://huggingface.co/docs/hub/repositories-licenses, model cards spec).
KNOWN_LICENSES = {
    "apache-2.0", "mit", "bsd-3-clause", "bsd-2-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0", "cc0-1.0", "gpl-3.0", "lgpl-3.0", "openrail", "openrail++", "creativeml-openrail-m",
    "bigscience-openrail-m", "llama3", "gemma", "other", "unknown",
}
KNOWN_PIPELINE_TAGS = {
    "image-classification", "unconditional-image-generation", "text-to-image", "image-to-image",
    "image-feature-extraction", "zero-shot-image-classification", "object-detection", "text-classification",
    "text-generation", "feature-extraction",
}
SPACE_SDKS = {"gradio", "streamlit", "docker", "static"}
SPACE_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Entry:
    blob_oid: str  # git oid of the stored blob (the pointer file for LFS)
    size: int  # size of the real content
    lfs_sha256: str | None = None


@dataclass
class Commit:
    oid: str
    parents: list[str]
    title: str
    message: str
    date: str
    files: dict[str, Entry]


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pull_requests: dict[int, str] = field(default_factory=dict)  # N of refs/pr/N -> its head commit
    commits: dict[str, Commit] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # git blobs (regular files and LFS pointers)
    lfs: dict[str, dict] = field(default_factory=dict)  # sha256 -> {"data", "pushedAt", "filename", "ref"}


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def validate_card_metadata(content: str, repo_type: str) -> tuple[list[dict], list[dict]]:
    """Errors and warnings for a README's YAML block, in the Hub's `{"message": ...}` shape."""
    errors, warnings = [], []
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.S)
    if not match:
        return [], [{"message": "Empty or missing yaml metadata in repo card"}]
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as e:
        return [{"message": f"Invalid YAML: {e}"}], []
    if meta is None:
        return [], [{"message": "Empty or missing yaml metadata in repo card"}]
    if not isinstance(meta, dict):
        return [{"message": "Metadata must be a YAML object"}], []

    def err(msg):
        errors.append({"message": msg})

    def str_list(key):
        value = meta.get(key)
        if value is not None and not (isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value))):
            err(f'"{key}" must be a string or an array of strings')

    if "license" in meta:
        licenses = meta["license"] if isinstance(meta["license"], list) else [meta["license"]]
        for lic in licenses:
            if lic not in KNOWN_LICENSES:
                err(f'"license" must be one of the Hub license identifiers, got {lic!r}')
        if "other" in licenses and not meta.get("license_name"):
            warnings.append({"message": '"license_name" is recommended with "license: other"'})
    for key in ("tags", "datasets", "language", "metrics", "base_model", "models"):
        str_list(key)
    if repo_type == "model":
        if "pipeline_tag" in meta and meta["pipeline_tag"] not in KNOWN_PIPELINE_TAGS:
            err(f'"pipeline_tag" must be a known task, got {meta["pipeline_tag"]!r}')
        if "library_name" in meta and not isinstance(meta["library_name"], str):
            err('"library_name" must be a string')
        index = meta.get("model-index")
        if index is not None:
            if not isinstance(index, list):
                err('"model-index" must be an array')
                index = []
            for i, model in enumerate(index):
                where = f"model-index[{i}]"
                if not isinstance(model, dict) or not isinstance(model.get("name"), str):
                    err(f'"{where}.name" is required and must be a string')
                    continue
                results = model.get("results")
                if not isinstance(results, list):
                    err(f'"{where}.results" is required and must be an array')
                    continue
                for j, result in enumerate(results):
                    at = f"{where}.results[{j}]"
                    if not isinstance(result, dict):
                        err(f'"{at}" must be an object')
                        continue
                    if not isinstance((result.get("task") or {}).get("type"), str):
                        err(f'"{at}.task.type" is required')
                    dataset = result.get("dataset") or {}
                    if not isinstance(dataset.get("type"), str) or not isinstance(dataset.get("name"), str):
                        err(f'"{at}.dataset.type" and "{at}.dataset.name" are required')
                    metrics = result.get("metrics")
                    if not isinstance(metrics, list) or not metrics:
                        err(f'"{at}.metrics" must be a non-empty array')
                        continue
                    for k, metric in enumerate(metrics):
                        if not isinstance(metric, dict) or not isinstance(metric.get("type"), str):
                            err(f'"{at}.metrics[{k}].type" is required')
                        elif metric.get("value") is None:
                            err(f'"{at}.metrics[{k}].value" is required')
    elif repo_type == "space":
        if meta.get("sdk") not in SPACE_SDKS:
            err(f'"sdk" must be one of {sorted(SPACE_SDKS)}')
        for key in ("colorFrom", "colorTo"):
            if key in meta and meta[key] not in SPACE_COLORS:
                err(f'"{key}" must be one of {sorted(SPACE_COLORS)}')
        for key in ("title", "emoji", "app_file", "short_description"):
            if key in meta and not isinstance(meta[key], str):
                err(f'"{key}" must be a string')
        if "short_description" in meta and len(meta["short_description"]) > 60:
            err('"short_description" must be at most 60 characters')
    return errors, warnings


class FakeHub:
    """Start with `FakeHub().start()` (or as a context manager); `url` is the `HF_ENDPOINT` to use."""

    API_RE = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(.*))?$")
    RESOLVE_RE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
    LFS_BATCH_RE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
    LFS_OBJECT_RE = re.compile(r"^/__lfs(_verify)?/(model|dataset|space)/([^/]+/[^/]+)/([0-9a-f]{64})$")

    def __init__(self, host: str = "127.0.0.1", port: int = 0, user: str = "spm-tester",
                 lfs_patterns: tuple[str, ...] = DEFAULT_LFS_PATTERNS):
        self.host, self.port, self.user, self.lfs_patterns = host, port, user, tuple(lfs_patterns)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for assertions
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ audit helpers (tests)
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def retained_bytes(self, repo_id: str, repo_type: str = "model"):
        """Yield `(label, bytes)` for everything the server still holds for the repo."""
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            for commit in repo.commits.values():
                for path, entry in commit.files.items():
                    yield f"{commit.oid[:8]}:{path}", self._content(repo, entry)
            for oid, blob in repo.blobs.items():
                yield f"blob:{oid[:8]}", blob
            for sha, obj in repo.lfs.items():
                yield f"lfs:{sha[:8]}", obj["data"]

    # ------------------------------------------------------------------ state helpers
    def _new_oid(self, *parts: str) -> str:
        with self.lock:
            self._counter += 1
            return hashlib.sha1("\x00".join((*parts, str(self._counter), str(time.time()))).encode()).hexdigest()

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository Not Found", "RepoNotFound")
        return repo

    def _resolve(self, repo: Repo, revision: str) -> Commit:
        revision = unquote(revision)
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        oid = repo.branches.get(name) or repo.tags.get(name)
        pr = re.fullmatch(r"refs/pr/(\d+)", revision)
        if pr and int(pr.group(1)) in repo.pull_requests:
            oid = repo.pull_requests[int(pr.group(1))]
        if oid is None and revision in repo.commits:
            oid = revision
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def _content(self, repo: Repo, entry: Entry) -> bytes:
        if entry.lfs_sha256 is not None:
            obj = repo.lfs.get(entry.lfs_sha256)
            return obj["data"] if obj else b""
        return repo.blobs[entry.blob_oid]

    def _is_lfs(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(name, p) for p in self.lfs_patterns)

    def _commit(self, repo: Repo, branch: str, files: dict[str, Entry], title: str, message: str = "",
                parents: list[str] | None = None) -> Commit:
        """A new commit on `branch` (a branch name or `refs/pr/N`), which then points at it."""
        pr = re.fullmatch(r"refs/pr/(\d+)", branch)
        parent = repo.pull_requests.get(int(pr.group(1))) if pr else repo.branches.get(branch)
        commit = Commit(self._new_oid(repo.id, title), parents if parents is not None else ([parent] if parent else []),
                        title, message, _now(), files)
        repo.commits[commit.oid] = commit
        if pr:
            repo.pull_requests[int(pr.group(1))] = commit.oid
        else:
            repo.branches[branch] = commit.oid
        return commit

    def _gc(self, repo: Repo) -> None:
        """Drop commits no ref reaches, and git blobs no kept commit uses (LFS objects stay)."""
        reachable, todo = set(), [*repo.branches.values(), *repo.tags.values(), *repo.pull_requests.values()]
        while todo:
            oid = todo.pop()
            if oid not in reachable:
                reachable.add(oid)
                todo.extend(repo.commits[oid].parents)
        repo.commits = {oid: c for oid, c in repo.commits.items() if oid in reachable}
        used = {e.blob_oid for c in repo.commits.values() for e in c.files.values()}
        repo.blobs = {oid: b for oid, b in repo.blobs.items() if oid in used}

    def _card_data(self, repo: Repo, commit: Commit) -> dict | None:
        entry = commit.files.get("README.md")
        if entry is None:
            return None
        match = re.match(r"^---\s*\n(.*?)\n---", self._content(repo, entry).decode("utf-8", "replace"), flags=re.S)
        try:
            return yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError:
            return None

    # ------------------------------------------------------------------ routes
    def handle(self, method: str, path: str, query: dict, headers, body: bytes):
        """Returns `(status, headers, body)`; body is bytes, or JSON-serialisable."""
        with self.lock:
            self.requests.append((method, path))
        if path == "/api/whoami-v2":
            return 200, {}, {"type": "user", "name": self.user, "fullname": self.user, "orgs": [],
                             "auth": {"type": "access_token"}}
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(json.loads(body or b"{}"), headers)
        if path == "/api/validate-yaml" and method == "POST":
            payload = json.loads(body or b"{}")
            errors, warnings = validate_card_metadata(payload.get("content", ""), payload.get("repoType", "model"))
            if errors and "text/plain" in (headers.get("Accept") or ""):
                return 400, {"Content-Type": "text/plain"}, "\n".join(e["message"] for e in errors).encode()
            return (400 if errors else 200), {}, {"errors": errors, "warnings": warnings}
        m = self.LFS_BATCH_RE.match(path)
        if m and method == "POST":
            return self._lfs_batch((m.group(1) or "models")[:-1], m.group(2), json.loads(body))
        m = self.LFS_OBJECT_RE.match(path)
        if m:
            return self._lfs_object(m.group(2), m.group(3), m.group(4), verify=bool(m.group(1)), body=body)
        m = self.RESOLVE_RE.match(path)
        if m and method in ("GET", "HEAD"):
            return self._resolve_file((m.group(1) or "models")[:-1], m.group(2), m.group(3), unquote(m.group(4)),
                                      method, headers)
        m = self.API_RE.match(path)
        if m:
            repo_type, repo_id, rest = m.group(1)[:-1], m.group(2), m.group(3) or ""
            return self._api(method, repo_type, repo_id, rest, query, headers, body)
        raise HubError(404, f"no route for {method} {path} in the fake Hub")

    def _require_token(self, headers) -> None:
        if not (headers.get("Authorization") or "").startswith("Bearer "):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _create_repo(self, payload: dict, headers):
        self._require_token(headers)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return 409, {}, {"error": "You already created this repo", "url": url}
            repo = Repo(repo_type, repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
            oid = git_blob_oid(GITATTRIBUTES)
            repo.blobs[oid] = GITATTRIBUTES
            self._commit(repo, "main", {".gitattributes": Entry(oid, len(GITATTRIBUTES))}, "initial commit")
            self.repos[(repo_type, repo_id)] = repo
        return 200, {}, {"url": url, "name": repo_id, "id": repo_id}

    def _api(self, method, repo_type, repo_id, rest, query, headers, body):
        with self.lock:
            repo = self._get_repo(repo_type, repo_id)
            parts = rest.split("/", 1) if rest else [""]
            action, arg = parts[0], (parts[1] if len(parts) > 1 else "")
            if method == "GET" and action in ("", "revision"):
                return self._repo_info(repo, arg or "main", query)
            if method == "GET" and action == "tree":
                revision, _, sub = arg.partition("/")
                return self._tree(repo, revision, unquote(sub), query.get("recursive", ["false"])[0] in ("1", "true", "True"))
            if method == "GET" and action == "commits":
                return self._commits(repo, arg or "main")
            if method == "GET" and action == "refs":
                return 200, {}, self._refs(repo, query.get("include_prs", ["0"])[0] in ("1", "true", "True"))
            if method == "GET" and action == "lfs-files":
                return 200, {}, [{"fileOid": sha, "oid": sha, "size": len(obj["data"]), "pushedAt": obj["pushedAt"],
                                  "filename": obj["filename"], "ref": obj["ref"]} for sha, obj in repo.lfs.items()]
            if method == "DELETE" and action in ("branch", "tag"):
                self._require_token(headers)
                refs = repo.branches if action == "branch" else repo.tags
                name = unquote(arg)
                if name not in refs or (action == "branch" and name == "main"):
                    raise HubError(404 if name not in refs else 403, f"cannot delete {action} {name!r}")
                del refs[name]
                self._gc(repo)
                return 200, {}, {}
            if method == "POST":
                self._require_token(headers)
                payload_json = json.loads(body) if action != "commit" and body else None
                if action == "branch":
                    return self._create_branch(repo, unquote(arg), payload_json or {})
                if action == "tag":
                    return self._create_tag(repo, unquote(arg), payload_json or {})
                if action == "preupload":
                    return self._preupload(repo, arg, payload_json)
                if action == "commit":
                    create_pr = query.get("create_pr", ["0"])[0] in ("1", "true", "True")
                    return self._apply_commit(repo, unquote(arg), body, create_pr)
                if action == "super-squash":
                    return self._super_squash(repo, unquote(arg), payload_json or {})
                if action == "lfs-files" and arg == "batch":
                    return self._delete_lfs(repo, payload_json["deletions"])
        raise HubError(404, f"no route for {method} /api/{repo_type}s/{repo_id}/{rest} in the fake Hub")

    def _repo_info(self, repo: Repo, revision: str, query: dict):
        commit = self._resolve(repo, revision)
        blobs = query.get("blobs", ["false"])[0] in ("1", "true", "True")
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.blob_oid)
                if entry.lfs_sha256:
                    sibling["lfs"] = {"sha256": entry.lfs_sha256, "size": entry.size,
                                      "pointerSize": len(repo.blobs.get(entry.blob_oid, b""))}
            siblings.append(sibling)
        info = {"_id": repo.id, "id": repo.id, "modelId": repo.id, "author": repo.id.split("/")[0],
                "sha": commit.oid, "lastModified": commit.date, "private": repo.private, "disabled": False,
                "gated": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings}
        card = self._card_data(repo, commit)
        if card is not None:
            info["cardData"] = card
            info["tags"] = list(card.get("tags") or [])
            for key in ("library_name", "pipeline_tag"):
                if key in card:
                    info[key] = card[key]
        if repo.type == "space":
            info["sdk"] = (card or {}).get("sdk")
        return 200, {}, info

    def _tree(self, repo: Repo, revision: str, sub: str, recursive: bool):
        commit = self._resolve(repo, revision)
        sub = sub.strip("/")
        prefix = f"{sub}/" if sub else ""
        entries, folders = [], set()
        for path, entry in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix):]
            if "/" in rel and not recursive:
                folders.add(prefix + rel.split("/", 1)[0])
                continue
            for i in range(rel.count("/")):
                folders.add(prefix + "/".join(rel.split("/")[: i + 1]))
            item = {"type": "file", "oid": entry.blob_oid, "size": entry.size, "path": path}
            if entry.lfs_sha256:
                item["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size,
                               "pointerSize": len(repo.blobs.get(entry.blob_oid, b""))}
            entries.append(item)
        if sub and not entries and not folders:
            raise HubError(404, f"Entry not found: {sub}", "EntryNotFound")
        dirs = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                for f in sorted(folders)]
        return 200, {}, dirs + entries

    def _commits(self, repo: Repo, revision: str):
        commit, out = self._resolve(repo, revision), []
        while commit is not None:
            out.append({"id": commit.oid, "title": commit.title, "message": commit.message, "date": commit.date,
                        "authors": [{"user": self.user, "avatar": ""}]})
            commit = repo.commits.get(commit.parents[0]) if commit.parents else None
        return 200, {}, out

    def _refs(self, repo: Repo, include_prs: bool) -> dict:
        def info(name, ref, oid):
            return {"name": name, "ref": ref, "targetCommit": oid}

        out = {"branches": [info(b, f"refs/heads/{b}", oid) for b, oid in repo.branches.items()], "converts": [],
               "tags": [info(t, f"refs/tags/{t}", oid) for t, oid in repo.tags.items()]}
        out["pullRequests"] = ([info(f"refs/pr/{n}", f"refs/pr/{n}", oid) for n, oid in sorted(repo.pull_requests.items())]
                               if include_prs else [])
        return out

    def _create_branch(self, repo: Repo, branch: str, payload: dict):
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        if branch.startswith("refs/") or not re.fullmatch(r"[\w.\-/]+", branch):
            raise HubError(400, f"Invalid reference for a branch: {branch}")
        repo.branches[branch] = self._resolve(repo, payload.get("startingPoint") or "main").oid
        return 200, {}, {}

    def _create_tag(self, repo: Repo, revision: str, payload: dict):
        tag = payload.get("tag") or ""
        if tag in repo.tags:
            raise HubError(409, f"Tag already exists: {tag}")
        repo.tags[tag] = self._resolve(repo, revision).oid
        return 200, {}, {}

    def _preupload(self, repo: Repo, revision: str, payload: dict):
        try:
            head = self._resolve(repo, revision)
        except HubError:  # a branch the commit will create is compared with nothing
            head = None
        files = []
        for f in payload["files"]:
            lfs = self._is_lfs(f["path"]) and f.get("size", 0) > 0
            existing = head.files.get(f["path"]) if head else None
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": (existing.lfs_sha256 or existing.blob_oid) if existing else None})
        return 200, {}, {"files": files, "commitOid": repo.branches.get(unquote(revision))}

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict):
        with self.lock:
            repo = self._get_repo(repo_type, repo_id)
            objects = []
            for obj in payload.get("objects", []):
                item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in repo.lfs:  # already stored: no action, as in git-lfs
                    base = f"{self.url}/__lfs%s/{repo_type}/{repo_id}/{obj['oid']}"
                    item["actions"] = {"upload": {"href": base % ""}, "verify": {"href": base % "_verify"}}
                objects.append(item)
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, {"transfer": "basic", "objects": objects}

    def _lfs_object(self, repo_type: str, repo_id: str, oid: str, verify: bool, body: bytes):
        with self.lock:
            repo = self._get_repo(repo_type, repo_id)
            if verify:
                if oid not in repo.lfs:
                    raise HubError(404, f"LFS object {oid} was not uploaded")
                return 200, {}, {}
            if hashlib.sha256(body).hexdigest() != oid:
                raise HubError(400, "LFS upload: sha256 of the body does not match the oid")
            repo.lfs.setdefault(oid, {"data": body, "pushedAt": _now(), "filename": None, "ref": "refs/heads/main"})
        return 200, {}, b""

    def _apply_commit(self, repo: Repo, revision: str, body: bytes, create_pr: bool = False):
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        branch = revision
        parent = self._resolve(repo, branch)
        if create_pr:
            # a new pull request against `revision`, from `parentCommit` when given (the Hub's rule: the PR is
            # created from that commit), else from the revision's head; the branch does not move
            if header.get("parentCommit"):
                parent = self._resolve(repo, header["parentCommit"])
            number = max([*repo.pull_requests, 0]) + 1
            repo.pull_requests[number] = parent.oid
            branch = f"refs/pr/{number}"
        elif header.get("parentCommit") and header["parentCommit"] != parent.oid:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(parent.files)
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                oid = git_blob_oid(data)
                repo.blobs[oid] = data
                files[value["path"]] = Entry(oid, len(data))
            elif key == "lfsFile":
                obj = repo.lfs.get(value["oid"])
                if obj is None:
                    raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                obj["filename"] = obj["filename"] or value["path"]
                pointer = LFS_POINTER.format(oid=value["oid"], size=len(obj["data"])).encode()
                pointer_oid = git_blob_oid(pointer)
                repo.blobs[pointer_oid] = pointer
                files[value["path"]] = Entry(pointer_oid, len(obj["data"]), value["oid"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(404, f"File not found: {value['path']}", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: e for p, e in files.items() if not p.startswith(folder)}
        commit = self._commit(repo, branch, files, header.get("summary") or "update", header.get("description") or "")
        prefix = "" if repo.type == "model" else f"{repo.type}s/"
        pr_url = f"{self.url}/{prefix}{repo.id}/discussions/{branch.rsplit('/', 1)[1]}" if create_pr else None
        return 200, {}, {"success": True, "commitOid": commit.oid, "pullRequestUrl": pr_url,
                         "commitUrl": f"{self.url}/{prefix}{repo.id}/commit/{commit.oid}"}

    def _super_squash(self, repo: Repo, branch: str, payload: dict):
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        head = repo.commits[repo.branches[branch]]
        message = payload.get("message") or f"Super-squash branch '{branch}'"
        commit = self._commit(repo, branch, dict(head.files), message, parents=[])
        self._gc(repo)
        return 200, {}, {"commitId": commit.oid}

    def _delete_lfs(self, repo: Repo, deletions: dict):
        shas = set(deletions.get("sha", []))
        for sha in shas:
            repo.lfs.pop(sha, None)
        if deletions.get("rewriteHistory"):
            for commit in repo.commits.values():
                commit.files = {p: e for p, e in commit.files.items() if e.lfs_sha256 not in shas}
            self._gc(repo)
        return 200, {}, {}

    def _resolve_file(self, repo_type, repo_id, revision, path, method, headers):
        with self.lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = self._resolve(repo, revision)
            entry = commit.files.get(path)
            if entry is None:
                raise HubError(404, "Entry not found", "EntryNotFound")
            data = self._content(repo, entry)
        out = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if entry.lfs_sha256:
            out.update({"ETag": f'"{entry.lfs_sha256}"', "X-Linked-Etag": f'"{entry.lfs_sha256}"',
                        "X-Linked-Size": str(entry.size)})
        else:
            out["ETag"] = f'"{entry.blob_oid}"'
        status = 200
        range_header = headers.get("Range")
        if range_header and method == "GET":
            m = re.match(r"bytes=(\d+)-(\d*)$", range_header)
            if m:
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else len(data) - 1
                out["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start : end + 1], 206
        out["Content-Length"] = str(len(data))
        return status, out, (b"" if method == "HEAD" else data)


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        body = self._body()
        try:
            status, headers, payload = self.hub.handle(self.command, split.path, parse_qs(split.query), self.headers, body)
        except HubError as e:
            status, payload = e.status, {"error": e.message}
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
        except Exception as e:  # a bug in the fake: make it loud on the client side
            status, headers, payload = 500, {"X-Error-Message": repr(e)}, {"error": f"fake hub crashed: {e!r}"}
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode()
            headers = {"Content-Type": "application/json", **headers}
        headers.setdefault("Content-Length", str(len(payload)))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _dispatch


__all__ = ["FakeHub", "git_blob_oid", "validate_card_metadata"]
