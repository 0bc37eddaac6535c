"""Small I/O helpers shared by the command line and the benchmarks."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_file", "write_csv", "write_json", "finite_json", "json_default", "process_start"]


def json_default(o: Any) -> Any:
    """JSON encoding of numpy scalars and arrays, paths, torch devices and dtypes."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path) or type(o).__module__.startswith("torch"):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def process_start() -> float:
    """When this process started, on the :func:`time.perf_counter` clock: from
    ``/proc/self/stat`` on Linux (to 1/100 s), else the moment this module was first
    imported. ``perf_counter() - process_start()`` is the process's age, startup included."""
    return _PROCESS_START


def _process_start() -> float:
    import time

    now = time.perf_counter()
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks after boot
        if 0.0 <= age < 86400.0 * 365:
            return now - age
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    return now


_PROCESS_START = _process_start()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


@contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "w", durable: bool = False, **open_args: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit it is renamed onto ``path``.

    An exception (or an interrupt) inside the block deletes the temporary file and leaves
    ``path`` as it was, so readers never see half a file. The file gets the permissions a
    plain ``open`` would give it (``0o666`` minus the umask), not ``mkstemp``'s ``0o600``.
    ``durable``: the data reach the disk (fsync) before the rename, so a machine that goes
    down right after still has the new file whole (checkpoints). ``open_args`` go to the
    text file (``encoding``, ``newline``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (numpy's too, also in arrays) as ``None``:
    JSON has no such numbers, and strict readers (jq, JavaScript's ``JSON.parse``) refuse
    Python's bare ``NaN``; an undefined metric reads as null, like the others."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.floating):
        return finite_json(float(obj))
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "fc":
        return finite_json(obj.tolist())
    return obj


def write_csv(frame: Any, path: str | os.PathLike[str]) -> None:
    """A pandas ``frame`` as CSV at ``path`` (no index), whole or not at all. Text fields are
    quoted where needed; where a text cell holds a carriage return every text field is
    quoted, because Python's csv writer quotes a field with a line feed but not one with a
    lone CR, which then reads back as two rows (an id like ``"a\rb"`` that the readers take)."""
    import csv

    from pandas.api.types import is_numeric_dtype

    text = [c for c in frame.columns if not is_numeric_dtype(frame[c])]
    has_cr = any(frame[c].astype(str).str.contains("\r", regex=False).any() for c in text)
    with atomic_file(path, encoding="utf-8", newline="") as f:
        frame.to_csv(f, index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC if has_cr else csv.QUOTE_MINIMAL)


def write_json(path: str | os.PathLike[str], obj: Any, durable: bool = False) -> None:
    """Write JSON atomically (see :func:`atomic_file`, ``durable`` too), so an interrupted run
    never leaves half a file; NaN and infinities are written as null (:func:`finite_json`)."""
    with atomic_file(path, durable=durable) as f:
        json.dump(finite_json(obj), f, indent=2, default=json_default, allow_nan=False)


def save_torch(obj: Any, f: Any) -> None:
    """``torch.save(obj, f)``, where a Ctrl-C that lands inside torch's file writer stays the
    ``KeyboardInterrupt`` it is: torch's zip writer turns it into a ``RuntimeError``
    ("unexpected pos"), which a command would report as an internal error (a traceback and
    exit 1) instead of an interruption to resume from."""
    import torch

    try:
        torch.save(obj, f)
    except RuntimeError as e:
        cause: BaseException | None = e.__context__
        while cause is not None and not isinstance(cause, KeyboardInterrupt):
            cause = cause.__context__
        if cause is not None:
            raise KeyboardInterrupt from e
        raise
