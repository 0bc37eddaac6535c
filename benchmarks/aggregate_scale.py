"""`kdcrowd aggregate` at the scale of large crowds: the whole command's wall time and peak memory.

    python benchmarks/aggregate_scale.py --method mmsr \
        --out benchmarks/results/aggregate_scale_mmsr_cpu.json

Each crowd of ``--crowds`` (``ITEMS:WORKERS:LABELS_PER_ITEM:CLASSES``) is simulated as
``benchmarks/scale.py`` simulates (distinct random workers per item, symmetric noise),
written as an ``item,worker,label`` CSV in a temporary folder, and given to
``python -m kdcrowd aggregate --method METHOD`` in a child process, as a user runs it.
Recorded per crowd: wall seconds, the child's peak resident memory (``ru_maxrss``), its
exit code, the accuracy of the labels it wrote against the simulated truth and
``os.getloadavg()`` before and after (the CPU may be shared). The default crowds are 600,000
annotations from 20,000 workers and from 200,000 workers (three labels each), both K = 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import simulate  # noqa: E402  (the crowds of the scale benchmark)

ROOT = Path(__file__).resolve().parents[1]
#: Runs the command in a fresh process and prints its peak resident memory (KB, Linux's
#: ru_maxrss of the children) as the last line of stderr.
_MEASURED = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(p.returncode)")


def run_crowd(spec: str, method: str, folder: Path) -> dict:
    n, m, r, k = (int(v) for v in spec.split(":"))
    sim = simulate(n, m, r, k)
    csv, out = folder / f"crowd_{spec.replace(':', '_')}.csv", folder / "labels.csv"
    pd.DataFrame({"item": sim["item"], "worker": sim["worker"], "label": sim["label"]}).to_csv(csv, index=False)
    load = os.getloadavg()
    command = [sys.executable, "-m", "kdcrowd", "aggregate", "--annotations", str(csv), "--method", method, "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURED, *command], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    wall = time.perf_counter() - t0
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    row = {"crowd": spec, "items": n, "workers": m, "labels_per_item": r, "classes": k, "annotations": n * r, "method": method,
           "returncode": proc.returncode, "wall_seconds": round(wall, 2), "peak_rss_mb": round(peak_kb / 1024),
           "loadavg_before": load, "loadavg_after": os.getloadavg()}
    if proc.returncode == 0:
        labels = pd.read_csv(out).set_index("item")["label"]
        row["accuracy"] = float((labels.sort_index().to_numpy() == sim["y"]).mean())
    else:
        row["stderr_tail"] = proc.stderr[-2000:]
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="mmsr")
    ap.add_argument("--crowds", nargs="+", default=["200000:20000:3:2", "200000:200000:3:2"], help="ITEMS:WORKERS:LABELS_PER_ITEM:CLASSES")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    report = {"what": "kdcrowd aggregate on simulated crowds: wall time and peak memory of the command", "cpu_count": os.cpu_count(), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.crowds:
            row = run_crowd(spec, args.method, Path(tmp))
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(args.out)
    return report


if __name__ == "__main__":
    main()
