"""Suite-wide settings: one torch thread; a loader for the scripts in benchmarks/ and examples/.

The models in the tests are tiny; on a 2-core CI machine several torch threads per
process fight each other and the rest of the machine (measured: a 7 s test took 38 s).
"""

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_torch_thread() -> object:
    """Every test starts with the suite's one torch thread, whatever an earlier test set (the
    benchmark scripts set their own ``--threads``; a test comparing an in-process run with a
    one-thread subprocess needs the same count in both)."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """``load_script("benchmarks/scale")``: import a script of the repository (not a package) as a module."""

    def load(rel: str) -> ModuleType:
        path = ROOT / f"{rel}.py"
        name = "kdcrowd_script_" + rel.replace("/", "_")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None, path
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(mod)
        return mod

    return load


HEAVY = ("sklearn", "scipy", "matplotlib")


@pytest.fixture(scope="session")
def heavy_imports() -> Callable[..., list[str]]:
    """``heavy_imports(code, timeout=...)``: run ``code`` in a fresh interpreter (it must succeed)
    and return which of scikit-learn, scipy and matplotlib it imported, sorted."""

    def run(code: str, timeout: float = 300) -> list[str]:
        probe = code + f"\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))\n"
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, r.stderr[-2000:]
        return sorted(ast.literal_eval(r.stdout.strip().splitlines()[-1]))

    return run
