"""Small I/O helpers shared by the command line and the benchmarks."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_json", "json_default"]


def json_default(o: Any) -> Any:
    """JSON encoding of numpy scalars and arrays, paths, torch devices and dtypes."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path) or type(o).__module__.startswith("torch"):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically (temporary file + rename), so an interrupted run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=json_default)
    os.replace(tmp, path)
