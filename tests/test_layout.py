"""The tree's import rules (docs/architecture.md), checked on the source: what the runtime may import, no
cycles, and single-dot sibling imports in the files transformers copies for remote code."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "spm_hf"
RUNTIME_PACKAGES = ("generation",)
FLAT_REMOTE_CODE = ("configuration_spm", "modeling_spm", "image_processing_spm", "memory", "ledger",
                    "memory_index", "files", "hub")
EVALUATION_LEAVES = ("classifier", "grids", "metrics", "fid", "judge")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """spm_hf modules imported by `path` (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("spm_hf"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("spm_hf"))
    modules = {module_name(p) for p in SRC.rglob("*.py")}
    return {m for m in found if m in modules}


ALL = sorted(p for p in SRC.rglob("*.py") if "forget_metric" not in p.parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("training", "evaluation", "baselines"):
        return parts[1]
    if module in ("spm_hf.cli", "spm_hf.quickstart"):
        return "cli"
    return "runtime"


@pytest.mark.parametrize("path", ALL, ids=lambda p: module_name(p))
def test_each_module_imports_only_what_its_layer_may(path):
    me = module_name(path)
    for target in imports(path):
        mine, theirs = layer(me), layer(target)
        if mine == "runtime":
            assert theirs == "runtime", f"{me} (runtime) imports {target}"
        elif mine == "baselines":
            assert theirs in ("runtime", "baselines"), f"{me} imports {target}"
        elif mine == "training":
            leaf = theirs == "evaluation" and target.split(".")[2] in EVALUATION_LEAVES
            assert theirs in ("runtime", "baselines", "training") or leaf, f"{me} (training) imports {target}"
        elif mine == "evaluation" and me.count(".") == 2 and me.split(".")[2] in EVALUATION_LEAVES:
            assert theirs in ("runtime", "evaluation"), f"{me} (an evaluation leaf) imports {target}"
            if theirs == "evaluation":
                assert target.split(".")[2] in EVALUATION_LEAVES, f"{me} (a leaf) imports {target}"


@pytest.mark.parametrize("name", FLAT_REMOTE_CODE)
def test_remote_code_files_use_single_dot_sibling_imports(name):
    text = (SRC / f"{name}.py").read_text(encoding="utf-8")
    assert "from .." not in text and "import spm_hf" not in text and "from spm_hf" not in text


def test_no_import_cycles_at_module_level():
    graph = {module_name(p): {m for m in imports(p, top_level_only=True) if m != module_name(p)} for p in ALL}
    # a package's __init__ importing its own submodules is not a cycle through them
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join(stack + [node, nxt]))
            if state.get(nxt) is None:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_import_spm_hf_loads_no_training_evaluation_or_baselines_module():
    code = ("import sys, spm_hf; bad = [m for m in sys.modules if m.split('.')[:2][-1] in "
            "('training', 'evaluation', 'baselines') and m.startswith('spm_hf.')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(SRC.parent)})
    assert out.stdout.strip() == "[]"
