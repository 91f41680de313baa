"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Reports, summaries, logs, model cards, figures, the memory's files and the evaluation's images go through
here; checkpoint folders are written whole under a temporary name and renamed as one. (Sample-grid PNGs
are saved directly by PIL.)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile


# mkstemp creates files readable by their owner only; what we write should get the usual mode (0o666 less
# the umask), as open(path, "w") gives. The umask can only be read by setting it: once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path` for the caller to write; on success it is renamed over `path`.

    The temporary name is unique (two writers never share it) and is removed if the block fails.
    """
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path: str, data: bytes | str) -> None:
    """Write `data` (str: as UTF-8) to `path` through `atomic_path`, flushed to disk before the rename."""
    if isinstance(data, str):
        data = data.encode()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


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
