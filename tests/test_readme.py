"""The README's commands work as written: each `spm-hf` command parses, each folder a command reads is one
that a README (or `make main`) command writes, and each script it names exists."""

import re
import shlex
from pathlib import Path

import pytest

from spm_hf.cli import build_parser, load_app_module
from spm_hf.training.generator_presets import GENERATOR_PRESETS


ROOT = Path(__file__).resolve().parents[1]
# options whose value is a model folder the command reads
READS = ("--model", "--retrained-model", "--classifier", "--generator", "--judge")


def shell_commands(text: str) -> list[str]:
    """Every line of the ```bash blocks of `text`, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def spm_hf_argv(words: list[str]) -> list[str] | None:
    """The arguments after `spm-hf` (also `.venv/bin/spm-hf`, `torchrun ... -m spm_hf.cli`), else None."""
    for i, word in enumerate(words):
        if word.endswith("spm-hf") or (word == "spm_hf.cli" and words[i - 1] == "-m"):
            return words[i + 1:]
    return None


README_COMMANDS = [argv for argv in map(spm_hf_argv, shell_commands((ROOT / "README.md").read_text())) if argv]


def test_the_readme_has_commands_of_every_kind():
    kinds = {argv[0] for argv in README_COMMANDS}
    assert {"app", "train-classifier", "train-generator", "evaluate-generator", "forget", "push"} <= kinds


@pytest.mark.parametrize("argv", README_COMMANDS, ids=[" ".join(a[:3]) for a in README_COMMANDS])
def test_every_readme_command_parses(argv):
    if argv[0] == "app":
        load_app_module().build_parser(train_missing=True).parse_args(argv[1:])
    else:
        build_parser().parse_args(argv)


def test_every_folder_a_readme_command_reads_is_one_a_readme_command_writes():
    made = set()
    for line in (ROOT / "Makefile").read_text().splitlines():  # `make main` runs the quickstart
        words = spm_hf_argv(shlex.split(line.strip(), comments=True)) if "spm-hf quickstart" in line else None
        if words:
            made.add(words[words.index("--output-dir") + 1] + "/model")
    read = set()
    for argv in README_COMMANDS:
        options = dict(zip(argv, argv[1:]))
        if "--output-dir" in options:
            made.add(options["--output-dir"])
        read |= {options[o] for o in READS if o in options}
        if argv[0] == "push":
            read.add(argv[1])
    local = {path for path in read if path.startswith("outputs/")}  # the rest are Hub repo ids
    assert "outputs/quickstart/model" in made
    assert local and local <= made, f"read but made by no README command: {sorted(local - made)}"


def test_every_script_the_readme_names_exists_and_every_generator_preset_names_a_dataset():
    scripts = set(re.findall(r"python ((?:bench|app)/[\w/]+\.py)", (ROOT / "README.md").read_text()))
    assert scripts and all((ROOT / s).is_file() for s in scripts), sorted(s for s in scripts if not (ROOT / s).is_file())
    # `spm-hf train-generator --preset P` with no --dataset trains on the preset's own
    assert all(config.dataset for config in GENERATOR_PRESETS.values())
