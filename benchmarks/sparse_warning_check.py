"""Does label spreading's graph make torch warn that sparse invariant checks are "implicitly
disabled"? (torch 2.11 did on the H200: docs/RESULTS.md §7h.) Each way runs in a fresh process,
because torch raises that warning once per process:

    python benchmarks/sparse_warning_check.py --out benchmarks/results/compat/sparse_warning_torch<V>_cpu.json

``library``: :func:`kdcrowd.spreading.knn_graph` and :func:`~kdcrowd.spreading.spread` on
random features; ``without-scope``: the same kind of sparse tensor built as the library built it
before (``check_invariants=False`` alone, outside the ``check_sparse_tensor_invariants`` scope).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, warnings
import torch
sys.path.insert(0, sys.argv[2])
from kdcrowd.spreading import knn_graph, spread
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if sys.argv[1] == "library":
        g = knn_graph(torch.randn(200, 16), 5)
    else:
        i, j = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 3, 2])
        g = torch.sparse_coo_tensor(torch.stack([i, j]), torch.ones(4), (4, 4), is_coalesced=True, check_invariants=False)
    spread(torch.softmax(torch.randn(g.shape[0], 3), 1), g, 0.8)
print(json.dumps({"torch": torch.__version__, "warnings": [str(w.message) for w in caught]}))
"""


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    ways = {}
    for way in ("library", "without-scope"):
        out = subprocess.run([sys.executable, "-c", CHILD, way, str(ROOT / "src")], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"the {way} check failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
        ways[way] = json.loads(out.stdout.strip().splitlines()[-1])
    torch_version = ways["library"]["torch"]
    result = {"benchmark": "sparse_warning_check", "torch": torch_version, "python": sys.version.split()[0],
              "ways": {k: {"warnings": v["warnings"], "warns_implicitly_disabled": any("implicitly disabled" in m for m in v["warnings"])} for k, v in ways.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
