"""Atomic file writes: a reader sees either the old file or the complete new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "AtomicOutput", "prepare_output",
           "remove_stale_temps"]


def prepare_output(path: str | os.PathLike) -> Path:
    """Check that ``path`` can be written as a file, creating missing parent folders.

    Raises:
        InputError: ``path`` is a folder, or one of its parents is a regular file (or otherwise
            not a folder), or the folder cannot be created.
    """
    from tddfa.errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a file name to write")
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise InputError(f"{path}: cannot write it, {parent} is not a folder")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot create its folder ({exc.strerror or exc})") from exc
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or an odd number): leave its files alone
    return True


def remove_stale_temps(path: str | os.PathLike, suffix: str, stem: str | None = None) -> list[Path]:
    """Delete temporary files ``.<stem>.<pid>.<random><suffix>`` beside ``path`` whose writing
    process (``pid``) no longer exists — left by a run killed with SIGKILL or a power cut.
    Files of live processes (a concurrent run) are kept. Returns the removed paths."""
    import glob
    import re

    path = Path(path)
    stem = path.stem if stem is None else stem
    removed = []
    pattern = re.compile(r"\.(\d+)\.[A-Za-z0-9_]+" + re.escape(suffix))
    for f in path.parent.glob(f".{glob.escape(stem)}.*{glob.escape(suffix)}"):
        m = pattern.fullmatch(f.name[len(stem) + 1 :])
        if m and not _alive(int(m.group(1))):
            try:
                f.unlink()
                removed.append(f)
            except OSError:
                pass
    return removed


def temp_file(path: str | os.PathLike, suffix: str, stem: str | None = None) -> tuple[int, Path]:
    """A fresh temporary file ``.<stem>.<pid>.<random><suffix>`` beside ``path`` (opened file
    descriptor, path), after removing stale ones of dead processes and checking the folder."""
    path = prepare_output(path)
    stem = path.stem if stem is None else stem
    remove_stale_temps(path, suffix, stem)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}.{os.getpid()}.", suffix=suffix)
    return fd, Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    fd, tmp = temp_file(path, ".tmp", stem=path.name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get normal modes
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Text (UTF-8) version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


class AtomicOutput:
    """Mixin for writers that stream into a temporary file: as a context manager it calls
    ``close()`` (publish the file) on success and ``abort()`` (delete the partial file) on error."""

    def close(self):  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def abort(self) -> None:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()
