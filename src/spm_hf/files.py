"""Atomic writes: a reader sees the old file or folder or the whole new one, never part of it.

Files. `atomic_path` / `write_atomic` / `write_json` / `write_figure` write a temporary file beside the
target and rename it over the target: reports, summaries, logs, figures and the evaluation's images go
through here. (Sample-grid PNGs are saved directly by PIL.)

Folders. `atomic_directory(path)` yields an empty staging folder beside `path`; when the block succeeds the
staging folder *becomes* `path` in one step, so a model folder (weights, config, memory, card) changes as a
whole: a reader, or a writer killed at any instant, leaves the old folder or the complete new one.

- The swap is `renameat2(RENAME_EXCHANGE)` where the C library and the file system have it (Linux, glibc):
  one atomic exchange of the two folders, then the old one (now under the staging name) is deleted.
  Elsewhere it is two renames: the old folder is moved aside (`.<name>.old-XXXXXXXX`), the new one moved
  in. A writer that dies between the two leaves no `path`; the next save or load of `path` moves the old
  folder back (`recover_directory`).
- Saving into a folder that does not exist yet is one plain rename.
- Entries of the old folder that the new one lacks are carried over (hard links where the file system
  allows, else copies), so files a user keeps in a model folder (`NOTES.md`) survive a save; the writer
  names the entries it `owned` (patterns): those are dropped when the new folder lacks them (a memory saved
  without one, an old weight shard). Hidden `.tmp-*` files (a killed per-file write) are never carried.
- Writers of one folder serialise through `flock` on a lock file beside it (`.<name>.lock`, removed by its
  last holder); readers (`reading_directory`, used by the models' `from_pretrained`) take it shared, so a
  load never reads half of one save and half of the next. Without `fcntl` (Windows) there is no locking.
- Stale staging or moved-aside folders (`.<name>.tmp-*`, `.<name>.old-*`) of a writer that died are removed
  on the next save or load of the folder, under the lock: none outlives a successful save.
- Nested use is free: `atomic_directory` on a folder inside a staging folder of this process yields the
  folder itself (the outer swap already makes it atomic), so `SampleMemory.save(dir)` is atomic on its own
  and costs nothing extra inside a model's save.

This module needs only the standard library: it travels with the classifier's remote code.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import io
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading


try:
    import fcntl
except ImportError:  # Windows: no flock; saves stay atomic, concurrent writers are not serialised
    fcntl = None


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


# ---------------------------------------------------------------------- swapping two folders
def _load_exchange():
    """`exchange_directories(a, b)` through glibc's renameat2(RENAME_EXCHANGE), or None where absent."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28
        return None
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2

    def exchange_directories(a: str, b: str) -> None:
        """Swap the paths `a` and `b` in one atomic step (both must exist)."""
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), a, None, b)

    return exchange_directories


exchange_directories = _load_exchange()
# errors meaning "this file system (or kernel) cannot exchange": fall back to two renames
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EINVAL), errno.EOPNOTSUPP}


def directory_swap_method() -> str:
    """How `atomic_directory` replaces an existing folder on this machine, in words."""
    if exchange_directories is not None:
        return "renameat2(RENAME_EXCHANGE) (two renames where the file system refuses it)"
    return "two renames (old folder moved aside, new one moved in; recovered on the next load or save)"


def _sibling(path: str, kind: str) -> str:
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}.{kind}-{secrets.token_hex(4)}")


def _stale_pattern(name: str) -> re.Pattern:
    # mkdtemp's 8 random characters, or _sibling's 8 hex digits
    return re.compile(rf"\.{re.escape(name)}\.(tmp|old)-[a-z0-9_]{{8}}")


def _swap_in(new: str, path: str) -> str:
    """Make `new` be `path`; returns where the old folder now is (to be deleted)."""
    if exchange_directories is not None:
        try:
            exchange_directories(new, path)
            return new
        except OSError as e:
            if e.errno not in _NO_EXCHANGE:
                raise
    old = _sibling(path, "old")
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    return old


def recover_directory(path: str) -> None:
    """Undo what a writer of `path` that died left beside it: if `path` is missing but a moved-aside old
    folder exists, move it back; remove every stale staging or moved-aside folder. Call it holding
    `folder_lock(path)`."""
    path = _resolve(path)
    parent, name = os.path.split(path)
    try:
        entries = os.listdir(parent)
    except FileNotFoundError:
        return
    pattern = _stale_pattern(name)
    stale = [os.path.join(parent, e) for e in entries if pattern.fullmatch(e)]
    if not os.path.lexists(path):
        moved = sorted((p for p in stale if ".old-" in os.path.basename(p)), key=os.path.getmtime)
        if moved:
            os.rename(moved[-1], path)
            stale.remove(moved[-1])
    for entry in stale:
        if os.path.isdir(entry) and not os.path.islink(entry):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry)


def _has_leftovers(path: str) -> bool:
    parent, name = os.path.split(path)
    pattern = _stale_pattern(name)
    try:
        return any(pattern.fullmatch(e) for e in os.listdir(parent))
    except OSError:
        return False


# ---------------------------------------------------------------------- locking
_state = threading.local()  # per thread: {folder: (pid, shared, depth)} of the folder locks it holds
_lock_fds: set[int] = set()  # every lock file descriptor open in this process
_staging: set[str] = set()  # staging folders of this process's atomic_directory blocks
_registry_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A forked child must not hold its parent's locks through inherited descriptors (closing them in the
    # child leaves the parent's locks alone), nor write into its parent's staging folders.
    for fd in list(_lock_fds):
        with contextlib.suppress(OSError):
            os.close(fd)
    _lock_fds.clear()
    _staging.clear()
    _state.__dict__.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _resolve(path) -> str:
    return os.path.realpath(os.fspath(path))


def _held() -> dict:
    held = getattr(_state, "held", None)
    if held is None:
        held = _state.held = {}
    return held


@contextlib.contextmanager
def folder_lock(path, shared: bool = False):
    """Hold the lock of folder `path` (`flock` on `.<name>.lock` beside it): exclusive for a writer,
    `shared=True` for a reader. Blocks until granted; re-entrant within a thread. The lock file is removed
    by its last holder (waiters check that the file they locked is still the lock file, and retry if not).
    Where `fcntl` is missing (Windows) this does nothing."""
    path = _resolve(path)
    held = _held()
    if path in held and held[path][0] == os.getpid():
        pid, outer_shared, depth = held[path]
        if outer_shared and not shared:
            raise RuntimeError(f"this thread reads {path} (shared lock) and cannot also write it")
        held[path] = (pid, outer_shared, depth + 1)
        try:
            yield
        finally:
            held[path] = (pid, outer_shared, depth)
        return
    if fcntl is None:
        yield
        return
    parent, name = os.path.split(path)
    lock_path = os.path.join(parent, f".{name}.lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666 & ~_UMASK)
        with _registry_lock:
            _lock_fds.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(lock_path))
            except FileNotFoundError:
                current = False
        except BaseException:
            _close_lock(fd)
            raise
        if current:
            break
        _close_lock(fd)  # the holder before us removed this lock file: lock the new one
    held[path] = (os.getpid(), shared, 1)
    try:
        yield
    finally:
        del held[path]
        try:
            if shared:  # the last reader out removes the file; while anyone else holds it, this fails
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(lock_path)
        except OSError:
            pass
        finally:
            _close_lock(fd)


def _close_lock(fd: int) -> None:
    with _registry_lock:
        _lock_fds.discard(fd)
    os.close(fd)


def _inside_staging(path: str) -> bool:
    with _registry_lock:
        return any(path == s or path.startswith(s + os.sep) for s in _staging)


def hub_cache_location(path) -> tuple[str, str, str] | None:
    """`(repo folder .../models--org--name, "org/name", commit)` when `path` is a snapshot folder of the
    Hugging Face cache (`.../models--org--name/snapshots/<commit>`) or a folder inside one; else None."""
    parts = os.path.abspath(os.fspath(path)).split(os.sep)
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--") and _COMMIT.fullmatch(parts[i + 1]):
            return os.sep.join(parts[:i]) or os.sep, parts[i - 1][len("models--"):].replace("--", "/"), parts[i + 1]
    return None


_COMMIT = re.compile(r"[0-9a-f]{40}")


def _is_hub_cache_snapshot(path: str) -> bool:
    """A folder of the Hugging Face cache (a snapshot or a folder inside one): not ours to lock."""
    return hub_cache_location(path) is not None


@contextlib.contextmanager
def reading_directory(path):
    """Read folder `path` as one state: recover what a dead writer left (under the exclusive lock), then
    hold the shared lock for the block. Folders this process cannot lock (read-only, the Hub cache, a
    staging folder of this process) and folders inside one whose lock this thread holds (a pipeline's
    `memory/` while the pipeline loads) are read without it."""
    path = _resolve(path)
    pid = os.getpid()
    within_held = any(path.startswith(folder + os.sep) for folder, (owner, _, _) in _held().items() if owner == pid)
    unlockable = within_held or _inside_staging(path) or _is_hub_cache_snapshot(path)
    if unlockable or not (os.path.isdir(path) or _has_leftovers(path)):
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            if _has_leftovers(path):
                with folder_lock(path):
                    recover_directory(path)
            stack.enter_context(folder_lock(path, shared=True))
        except OSError as e:  # e.g. a read-only parent: nobody can be writing there with our code either
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
        yield


# ---------------------------------------------------------------------- writing a folder as one step
@contextlib.contextmanager
def atomic_directory(path, owned=()):
    """Write folder `path` as one step: yields an empty staging folder beside it; when the block succeeds,
    the staging folder replaces `path` atomically (the module docstring says how). If the block raises,
    `path` is untouched and the staging folder removed.

    Args:
        path: the folder to write (created if missing; its parent too).
        owned: names or `fnmatch` patterns of the entries this writer owns: an entry of the old folder that
            the new one lacks is carried over unless it matches one of them. Hidden `.tmp-*` leftovers are
            never carried.

    Holds `folder_lock(path)` for the whole block; inside a staging folder of this process it yields `path`
    itself (created if missing).
    """
    path = _resolve(path)
    if _inside_staging(path):
        os.makedirs(path, exist_ok=True)
        yield path
        return
    parent, name = os.path.split(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{path} exists and is not a folder: cannot save a folder there")
    with contextlib.ExitStack() as stack:
        try:
            os.makedirs(parent, exist_ok=True)
            stack.enter_context(folder_lock(path))
            recover_directory(path)
            staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
        except PermissionError as e:
            raise PermissionError(
                e.errno, f"cannot save {path} as one step: a save writes a staging folder and a lock file beside "
                f"it, and {parent} is not writable ({e.strerror})", e.filename,
            ) from e
        with _registry_lock:
            _staging.add(staging)
        try:
            yield staging
            with _registry_lock:
                _staging.discard(staging)
            _commit(staging, path, tuple(owned))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            with _registry_lock:
                _staging.discard(staging)


def _commit(staging: str, path: str, owned: tuple[str, ...]) -> None:
    exists = os.path.isdir(path)
    os.chmod(staging, os.stat(path).st_mode & 0o7777 if exists else 0o777 & ~_UMASK)
    if exists:
        _carry_over(path, staging, owned)
    _fsync_tree(staging)
    if exists:
        try:
            old = _swap_in(staging, path)
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.EXDEV):
                raise
            raise OSError(e.errno, f"cannot replace {path} in one step ({e.strerror}): is it a mount point? Save "
                          "into a folder inside it") from e
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, path)
    _fsync_dir(os.path.dirname(path))


def _carry_over(old: str, new: str, owned: tuple[str, ...]) -> None:
    """Link (or copy) into `new` the entries of `old` that `new` lacks and no pattern of `owned` names."""
    skip = shutil.ignore_patterns(".tmp-*")
    for entry in os.scandir(old):
        target = os.path.join(new, entry.name)
        if entry.name.startswith(".tmp-") or os.path.lexists(target) or any(
            fnmatch.fnmatchcase(entry.name, pattern) for pattern in owned
        ):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            shutil.copytree(entry.path, target, symlinks=True, ignore=skip, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry.path, target)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def _fsync_tree(root: str) -> None:
    """Flush every file and folder under `root` to disk, so the swap never publishes unwritten data."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dirpath)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- training checkpoints
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def checkpoint_folders(folder) -> list[str]:
    """The `checkpoint-<step>` folders in `folder`, oldest step first (steps compare as numbers, so the
    names' zero padding does not matter); [] if `folder` does not exist."""
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return []
    steps = {int(m.group(1)): name for name in entries
             if (m := _CHECKPOINT.fullmatch(name)) and os.path.isdir(os.path.join(folder, name))}
    return [os.path.join(folder, steps[step]) for step in sorted(steps)]


def latest_complete_checkpoint(folder, marker: str) -> str | None:
    """The highest-step checkpoint folder in `folder` (`checkpoint_folders`) that holds `marker`, the file its
    writer writes last (a `.json` marker must also parse); None if there is none. A save killed part-way
    leaves a folder without the marker (or a staging folder whose name only starts like a checkpoint's):
    resuming from it would load half a checkpoint."""
    complete = [path for path in checkpoint_folders(folder) if _is_complete_marker(os.path.join(path, marker))]
    return complete[-1] if complete else None


def _is_complete_marker(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    if not path.endswith(".json"):
        return True
    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError):  # a kill while the marker itself was written
        return False
    return True
