"""The `spm-hf` command line that reproduces a training run, for its summary and the model card."""

from __future__ import annotations

import dataclasses
import shlex


def reproduce_command(command: str, preset: str, registry: dict, run, output_dir: str, *, flags: dict[str, str],
                      switches: dict[str, tuple[str, object]] | None = None, extra: tuple[str, ...] = (),
                      sidecar: str, skip: tuple[str, ...] = (), other_label: str = "fields") -> str:
    """`spm-hf <command> --preset <preset> --output-dir <output_dir>` plus a flag per field of `run` (a
    dataclass) that differs from the registry's preset; fields without a flag are listed in a trailing comment.

    Args:
        flags: field -> option taking the value (a list or tuple value becomes several words, put last).
        switches: field -> (option, the value the bare option sets).
        extra: words added after `--output-dir` (e.g. `--parametric`).
        sidecar: the file that holds every field, named when the preset is not a registered one.
        skip: fields never written (e.g. the preset's name).
        other_label: how the trailing comment names the fields without a flag.
    """
    if preset not in registry:
        return (f"spm-hf {command} --preset <preset> --output-dir {shlex.quote(output_dir)}  # preset {preset!r} "
                f"is not a registered one; its fields are in {sidecar}")
    base, switches = registry[preset], switches or {}
    parts = ["spm-hf", command, "--preset", preset, "--output-dir", output_dir, *extra]
    several, other = [], {}
    for name in (f.name for f in dataclasses.fields(run)):
        value = getattr(run, name)
        if name in skip or value == getattr(base, name) or value is None or value == ():
            continue
        if name in flags:
            if isinstance(value, (list, tuple)):
                several += [flags[name], *map(str, value)]  # several words: last, so no option follows them
            else:
                parts += [flags[name], str(value)]
        elif name in switches and value == switches[name][1]:
            parts.append(switches[name][0])
        else:
            other[name] = value
    return shlex.join(parts + several) + (f"  # and {other_label} without a flag: {other}" if other else "")


__all__ = ["reproduce_command"]
