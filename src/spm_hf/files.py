"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Every file spm_hf writes outside a checkpoint folder goes through here (checkpoint and model folders are
written whole under a temporary name and renamed as one).
"""

from __future__ import annotations

import io
import json
import os
import tempfile


# mkstemp creates files readable by their owner only; what we write should get the usual mode (0o666 less
# the umask), as open(path, "w") gives. The umask can only be read by setting it: once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomic(path: str, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename it over `path`.

    The temporary name is unique (two writers never share it) and is removed if the write fails.
    """
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, payload) -> None:
    """`payload` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(payload, indent=1))


def write_figure(fig, path: str, dpi: int = 120) -> None:
    """A matplotlib figure, rendered in memory in the format `path`'s extension names, written atomically."""
    fmt = os.path.splitext(path)[1].lstrip(".")
    if not fmt:
        raise ValueError(f"{path!r} has no extension to name the figure's format (e.g. {path}.png)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi)
    write_atomic(path, buffer.getvalue())
