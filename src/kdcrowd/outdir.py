"""Output paths of the command line: checked before anything is written, and locked.

* :func:`check_out_file` - an output *file* (``aggregate --out``, ``predict --out``): not a
  folder, not under a file; its folder is created.
* :func:`prepare_out_dir` - an output *folder* (``fit --out``, ``run --out``): not a file,
  not under a file; created, and (``lock=True``) locked for this process, so that a second
  ``kdcrowd fit`` into the same folder fails at once instead of overwriting the first
  one's files.

Every problem raises :class:`OutPathError` (a ``ValueError``) whose one-line message names
the command-line option. The lock is an advisory ``flock`` on the folder itself (no lock
file is left behind); it is released when the process ends or by :func:`release`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["OutPathError", "acquire", "check_not_in_use", "check_out_dir", "check_out_file", "prepare_out_dir", "release"]

#: Folders this process holds locked: path -> open descriptor.
_LOCKS: dict[str, int] = {}


class OutPathError(ValueError):
    """An output path that cannot be used; the message names the option to change."""


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` that is not a folder, if any."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _make_dir(path: Path, option: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutPathError(f"{option} {path}: cannot create the folder ({e.strerror or e}); choose a folder you can write to") from None


def check_out_file(path: str | os.PathLike[str], option: str = "--out", example: str = "labels.csv", create: bool = False,
                   inputs: dict[str, Any] | None = None) -> Path:
    """Check that ``path`` can be written as a file (and with ``create`` make its folder);
    returns it.

    Refused: an existing folder (``--out .``), a path under an existing file, a file the
    command reads (``inputs``: ``{option: path or None}``; it would be overwritten), (with
    ``create``) a folder that cannot be created. Check before the work, create right
    before writing, so that a failed command leaves nothing behind."""
    path = Path(path)
    for name, given in (inputs or {}).items():
        if given is not None and Path(given).is_file() and path.exists() and os.path.samefile(path, given):
            raise OutPathError(f"{option} {path} is the {name} file, which it would overwrite; give another {option}")
    if path.is_dir():
        raise OutPathError(f"{option} {path} is a folder; give the path of the file to write, e.g. {option} {path / example}")
    above = _file_above(path)
    if above is not None:
        raise OutPathError(f"{option} {path}: {above} is a file, not a folder; give a path in a folder")
    if create:
        _make_dir(path.parent, option)
    return path


def check_out_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Check, creating nothing, that ``path`` can be an output folder: not an existing
    file, not under a file; returns it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutPathError(f"{option} {path} is a file, not a folder; give a folder (it is created if missing)")
    above = _file_above(path)
    if above is not None:
        raise OutPathError(f"{option} {path}: {above} is a file, not a folder; give a folder path")
    return path


def prepare_out_dir(path: str | os.PathLike[str], option: str = "--out", lock: bool = True) -> Path:
    """Check, create and (``lock=True``) lock the output folder ``path``; returns it.

    Call it once every setting and input has been checked, right before the first write:
    a refused run then leaves nothing behind. Refused: an existing file, a path under a
    file, a folder that cannot be created, and (with ``lock``) a folder that another
    process holds locked."""
    path = check_out_dir(path, option)
    _make_dir(path, option)
    if lock:
        acquire(path, option)
    return path


def acquire(path: str | os.PathLike[str], option: str = "--out") -> None:
    """Take this process's exclusive lock on the existing folder ``path`` (no-op when held)."""
    key = str(Path(path).resolve())
    if key in _LOCKS:
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory folder locks
        return
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise OutPathError(f"{option} {path} is in use by another kdcrowd run (it holds the folder's lock); wait for that run to finish, or choose another {option}") from None
    _LOCKS[key] = fd


def check_not_in_use(path: str | os.PathLike[str], option: str = "--out") -> None:
    """Raise :class:`OutPathError` when another process holds the lock on the existing
    folder ``path`` (a run writing there now); takes no lock itself."""
    key = str(Path(path).resolve())
    if key in _LOCKS or not Path(path).is_dir():
        return
    acquire(path, option)
    release(path)


def release(path: str | os.PathLike[str]) -> None:
    """Release this process's lock on ``path`` (if held)."""
    fd = _LOCKS.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock
