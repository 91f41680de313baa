"""The generator's remote code: the Python files a saved pipeline folder carries so that diffusers loads it
where spm_hf is not installed (`DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)`).

diffusers' custom-pipeline and custom-component mechanism (`pipelines/pipeline_loading_utils.py`,
`utils/dynamic_modules_utils.py`, 0.42) decides what a folder needs:

- `model_index.json` names the pipeline `["pipeline_spm", "SPMDiffusionPipeline"]`: a list whose first item
  is a `.py` file at the folder's root. Each custom component is `[module, class]` with `<component>/<module>.py`
  in the component's own folder (`"unet": ["unet_spm", "SPMUNet2DModel"]`, `"memory": ["memory_component",
  "ImageSampleMemory"]`).
- A remote-code file may import its siblings only by single-dot relative imports (`from .memory import ...`),
  and those siblings must sit beside it. From a local folder diffusers copies the file and the siblings it
  imports *directly* (not theirs), so each entry file here names every module it needs, directly.
- From a Hub repo diffusers downloads, for a folder holding weights (`unet/`), only the weights, `config.json`
  and the component's own `.py`; so `unet_spm.py` is self-contained. A folder without weights is downloaded
  whole: the memory's own files are listed under `_ignore_files` in `model_index.json` (diffusers drops those
  names from the listing it plans the download with, so `memory/` counts as a folder without weights: its
  `sample_memory.safetensors` matches no diffusers weight name, and would otherwise make diffusers skip every
  `.safetensors` of the repo, the UNet's included), and `memory/` then comes whole, its copies of
  `memory.py`, `files.py`, ... with it.

The files are spm_hf's own modules, flattened: `from ..memory import X` becomes `from .memory import X`. This
module ships too (the pipeline imports it), so a pipeline loaded as remote code saves remote code in turn.
"""

from __future__ import annotations

import ast
import json
import os
import re

from ..files import write_atomic, write_json
from ..memory import MEMORY_CONFIG_NAME, MEMORY_WEIGHTS_NAME


PIPELINE_MODULE = "pipeline_spm"
# component name -> the module (file name without .py) that defines its class
COMPONENT_MODULES = {"unet": "unet_spm", "memory": "memory_component"}
# the memory's own files, hidden from diffusers' download planning (module docstring)
MEMORY_DATA_FILES = (MEMORY_WEIGHTS_NAME, MEMORY_CONFIG_NAME)

_RELATIVE_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from[ \t]+(?P<dots>\.+)(?P<name>\w+)[ \t]+import\b", re.M)


def _resolve(path: str, dots: int, name: str) -> str:
    base = os.path.dirname(path)
    for _ in range(dots - 1):
        base = os.path.dirname(base)
    return os.path.join(base, f"{name}.py")


def module_closure(entry: str) -> dict[str, str]:
    """The modules `entry` (a path) needs by relative imports, itself included: flat name -> source path.

    Raises `ValueError` if two of them share a file name (they could not sit flat in one folder)."""
    found, todo = {}, [os.path.abspath(entry)]
    while todo:
        path = todo.pop()
        name = os.path.splitext(os.path.basename(path))[0]
        if name in found:
            if found[name] != path:
                raise ValueError(f"remote code: two modules named {name!r} ({found[name]}, {path}) cannot sit in "
                                 "one folder")
            continue
        found[name] = path
        with open(path, encoding="utf-8") as f:
            source = f.read()
        for m in _RELATIVE_IMPORT.finditer(source):
            target = _resolve(path, len(m["dots"]), m["name"])
            if not os.path.isfile(target):
                raise ValueError(f"remote code: {path} imports {m['dots']}{m['name']}, which is not a module file")
            todo.append(target)
    return found


def _first_public_name(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            return node.name
    raise ValueError(f"remote code: {path} defines no public function or class to import")


def flatten(source: str) -> str:
    """`source` with every relative import made single-dot (`from ..memory import` -> `from .memory import`)."""
    return _RELATIVE_IMPORT.sub(lambda m: f"{m['indent']}from .{m['name']} import", source)


def _entry_source(closure: dict[str, str], entry_name: str) -> str:
    """The entry module's flat source, with a direct import of every module of its closure it does not import
    itself (diffusers copies only a local remote-code file's direct imports)."""
    with open(closure[entry_name], encoding="utf-8") as f:
        source = flatten(f.read())
    direct = {m["name"] for m in _RELATIVE_IMPORT.finditer(source)}
    missing = sorted(set(closure) - direct - {entry_name})
    if not missing:
        return source
    lines = ["", "", "# diffusers copies only the modules a remote-code file imports directly: import each it needs"]
    lines += [f"from .{name} import {_first_public_name(closure[name])} as _{name}  # noqa: E402, F401"
              for name in missing]
    return source.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def _entry_path(module_name: str) -> str:
    """The source of `module_name`, beside this file (the runtime's generation/ folder, or a flat remote-code
    copy of it)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{module_name}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"remote code: {module_name}.py is not beside {__file__}")
    return path


def _write_closure(entry_name: str, directory: str) -> None:
    closure = module_closure(_entry_path(entry_name))
    os.makedirs(directory, exist_ok=True)
    for name, path in sorted(closure.items()):
        if name == entry_name:
            text = _entry_source(closure, name)
        else:
            with open(path, encoding="utf-8") as f:
                text = flatten(f.read())
        write_atomic(os.path.join(directory, f"{name}.py"), text)


def remote_code_files() -> dict[str, list[str]]:
    """The files `write_remote_code` writes, per folder of the pipeline ("" is the root)."""
    entries = {"": PIPELINE_MODULE, **COMPONENT_MODULES}
    return {folder: sorted(f"{name}.py" for name in module_closure(_entry_path(module)))
            for folder, module in entries.items()}


def write_remote_code(directory: str, pipeline_class: str, components: dict[str, str]) -> None:
    """Write the pipeline's remote code into the saved folder `directory` and point `model_index.json` at it.

    Args:
        directory: a folder `DiffusionPipeline.save_pretrained` just wrote.
        pipeline_class: the pipeline's class name.
        components: component name -> class name, for the components whose code ships (`COMPONENT_MODULES`).
    """
    _write_closure(PIPELINE_MODULE, directory)
    for component in components:
        _write_closure(COMPONENT_MODULES[component], os.path.join(directory, component))
    index_path = os.path.join(directory, "model_index.json")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    index.pop("_name_or_path", None)  # where this object was loaded from: a local path, nothing a repo should show
    index["_class_name"] = [PIPELINE_MODULE, pipeline_class]
    for component, class_name in components.items():
        index[component] = [COMPONENT_MODULES[component], class_name]
    if "memory" in components:
        index["_ignore_files"] = [f"memory/{name}" for name in MEMORY_DATA_FILES]
    write_json(index_path, dict(sorted(index.items())))


def native_index(config: dict, native_modules: dict[str, str], pipeline_class: str) -> dict:
    """A `model_index.json` dict as spm_hf reads it itself: the remote-code names replaced by the installed
    modules (`native_modules`: component name -> module path), so loading runs no remote code."""
    config = dict(config)
    if isinstance(config.get("_class_name"), (list, tuple)) and config["_class_name"][0] == PIPELINE_MODULE:
        config["_class_name"] = pipeline_class
    for component, module in COMPONENT_MODULES.items():
        entry = config.get(component)
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] == module:
            config[component] = [native_modules[component], entry[1]]
    return config


__all__ = ["COMPONENT_MODULES", "PIPELINE_MODULE", "module_closure", "native_index", "remote_code_files",
           "write_remote_code"]
