"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Every file spm_hf writes outside a checkpoint folder goes through here (checkpoint and model folders are
written whole under a temporary name and renamed as one).
"""

from __future__ import annotations

import json
import os
import tempfile


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
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, payload) -> None:
    """`payload` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(payload, indent=1))
