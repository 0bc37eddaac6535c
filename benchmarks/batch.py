"""Run many (suite, seed) jobs of ``benchmarks/suite.py`` at once on the GPUs of one machine, and merge the parts.

    # on the GPU machine: 2 GPUs, 3 concurrent runs on each, stop launching after 500 s
    python benchmarks/batch.py run --jobs table1-sparse:0-4 ablation-cifar10n:1-4 \\
        --gpus 2 --per-gpu 3 --deadline 500 --parts /tmp/parts --pack $OUT/parts.tar.gz
    # here: merge the parts (and earlier suite files) into one file per suite
    python benchmarks/batch.py merge PARTS_DIR_OR_TAR ... --prefix gpu5_ --into benchmarks/results

Why: one suite run of the small CIFAR models leaves most of an H200 idle (short kernels,
launch-bound), so several independent runs on one GPU finish more runs per GPU-second.
Every job is one ``suite.py --suite S --seeds K`` process pinned to one GPU
(``CUDA_VISIBLE_DEVICES``); jobs start longest-first. Each writes its own JSON part
(rewritten after every finished run, so a job killed at the deadline keeps its finished
runs) and log; after every finished job the parts are packed into one ``.tar.gz``
(``--pack``), because only a few files come back from the GPU machine. Jobs whose part
already holds all runs are skipped, so a second call continues where the first stopped.

``merge`` groups runs by suite, drops repeated (label, seed) pairs (first wins) and writes
``<prefix><suite>_suite.json`` with every run, the commands, the device and the summed wall
time of the parts. ``--rename-suite OLD=NEW`` and ``--relabel OLD=NEW`` let runs of another
suite with identical settings fill a table (e.g. the five-seed ``claim-cifar10n`` rows,
whose ``kd=mig-kl`` is the default, into ``table2-cifar10n``); ``--keep-suite-labels`` then
drops runs whose label the target suite does not define. Every renaming is recorded in the
output (``composed``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import load  # noqa: E402
from suite import SUITES  # noqa: E402

from kdcrowd.io import atomic_file, write_json  # noqa: E402


def _cost(suite: str) -> float:
    """Rough relative cost of one seed of a suite (a KD-Crowd run is about three plain runs)."""
    runs = SUITES[suite]["runs"]
    return sum(3.0 if r["method"] == "kdcrowd" else 1.0 for r in runs)


def parse_job(spec: str) -> list[tuple[str, int]]:
    """``suite:0-4`` / ``suite:1,3`` / ``suite`` (seed 0) -> [(suite, seed), ...]."""
    name, _, seeds = spec.partition(":")
    if name not in SUITES:
        raise SystemExit(f"unknown suite {name!r}; choose from {sorted(SUITES)}")
    out: list[int] = []
    for part in (seeds or "0").split(","):
        a, _, b = part.partition("-")
        if not a.isdigit() or not (b or a).isdigit() or int(b or a) < int(a):
            raise SystemExit(f"bad seeds {seeds!r} in job {spec!r}: use N, N-M (M >= N) or a comma-separated list of those")
        out += list(range(int(a), int(b or a) + 1))
    return [(name, s) for s in out]


def _part(parts: Path, suite: str, seed: int) -> Path:
    return parts / f"{suite}.seed{seed}.json"


def _complete(path: Path, suite: str, only: list[str] | None) -> bool:
    if not path.exists():
        return False
    try:
        done = {r["label"] for r in json.loads(path.read_text())["runs"]}
    except (json.JSONDecodeError, KeyError):
        return False
    want = {r["label"] for r in SUITES[suite]["runs"] if not only or r["label"] in only}
    return want <= done


def pack(parts: Path, dest: Path) -> None:
    """All parts and logs into one tar.gz, replaced atomically."""
    with atomic_file(dest, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        for p in sorted(parts.iterdir()):
            if p.suffix in (".json", ".log"):
                tar.add(p, arcname=p.name)


def run(args: argparse.Namespace) -> None:
    jobs = [j for spec in args.jobs for j in parse_job(spec)]
    args.parts.mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not _complete(_part(args.parts, *j), j[0], args.only)]
    todo.sort(key=lambda j: -_cost(j[0]))
    free = [(g, k) for g in range(args.gpus) for k in range(args.per_gpu)]
    running: dict[subprocess.Popen[bytes], tuple[tuple[str, int], tuple[int, int], float]] = {}
    t0 = time.perf_counter()
    print(f"[batch] {len(todo)} of {len(jobs)} jobs to run on {args.gpus} GPU(s) x {args.per_gpu}", flush=True)
    while todo or running:
        while todo and free and time.perf_counter() - t0 < args.deadline:
            (suite, seed), slot = todo.pop(0), free.pop(0)
            cmd = [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--suite", suite, "--seeds", str(seed),
                   "--device", args.device, "--out", str(_part(args.parts, suite, seed))] + (["--only", *args.only] if args.only else [])
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(slot[0])) if args.device == "cuda" else dict(os.environ)
            with open(args.parts / f"{suite}.seed{seed}.log", "wb") as log:  # the child keeps its own copy of the handle
                running[subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)] = ((suite, seed), slot, time.perf_counter())
            print(f"[batch {time.perf_counter() - t0:6.0f}s] start {suite} seed {seed} on GPU {slot[0]}", flush=True)
        if not running:  # all done, or past the start deadline with nothing left to wait for
            break
        time.sleep(1.0)
        for proc in [p for p in running if p.poll() is not None]:
            (suite, seed), slot, ts = running.pop(proc)
            free.append(slot)
            print(f"[batch {time.perf_counter() - t0:6.0f}s] done  {suite} seed {seed} rc={proc.returncode} ({time.perf_counter() - ts:.0f}s)", flush=True)
            if args.pack:
                pack(args.parts, args.pack)
        if time.perf_counter() - t0 >= args.hard_deadline:
            for proc, ((suite, seed), _, _) in running.items():
                proc.kill()
                print(f"[batch] killed {suite} seed {seed} at the hard deadline (its finished runs are kept)", flush=True)
            running.clear()
            break
    if args.pack:
        pack(args.parts, args.pack)
    left = [j for j in jobs if not _complete(_part(args.parts, *j), j[0], args.only)]
    print(f"[batch] finished in {time.perf_counter() - t0:.0f}s; incomplete jobs: {' '.join(f'{s}:{k}' for s, k in left) or 'none'}", flush=True)


def _read_inputs(paths: list[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for p in paths:
        if p.is_dir():
            docs += [json.loads(q.read_text()) for q in sorted(p.glob("*.json"))]
        elif p.name.endswith(".tar.gz"):
            with tarfile.open(p) as tar:
                for m in tar.getmembers():
                    if m.name.endswith(".json"):
                        f = tar.extractfile(m)
                        assert f is not None
                        docs.append(json.loads(f.read()))
        else:
            docs.append(load(p))
    return docs


def merge(args: argparse.Namespace) -> None:
    rename = dict(x.split("=", 1) for x in args.rename_suite)
    relabel = dict(x.split("=", 1) for x in args.relabel)
    by_suite: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in _read_inputs(args.inputs):
        if d["suite"] in rename:
            d = {**d, "composed_from": d["suite"], "suite": rename[d["suite"]]}
            d["runs"] = [{**r, "label": relabel.get(r["label"], r["label"]), "original_label": r["label"]} for r in d["runs"]]
        by_suite[d["suite"]].append(d)
    for suite, docs in sorted(by_suite.items()):
        if args.suites and suite not in args.suites:
            continue
        seen: set[tuple[str, int]] = set()
        runs = []
        defined = {r["label"] for r in SUITES[suite]["runs"]} if suite in SUITES else None
        for d in docs:
            for r in d["runs"]:
                if args.keep_suite_labels and defined is not None and r["label"] not in defined:
                    continue
                key = (r["label"], r["seed"])
                if key not in seen:
                    seen.add(key)
                    runs.append(r)
        order = {r["label"]: i for i, r in enumerate(SUITES[suite]["runs"])} if suite in SUITES else {}
        runs.sort(key=lambda r: (r["seed"], order.get(r["label"], len(order))))
        out = {
            "suite": suite,
            "command": " ; ".join(sorted({d.get("command", "") for d in docs})),
            "merged_by": " ".join(sys.argv),
            "composed": [{"from_suite": d["composed_from"], "relabel": relabel} for d in docs if "composed_from" in d],
            "versions": docs[0].get("versions"),
            "device": next((d.get("device") for d in docs if d.get("device")), None),
            "wall_seconds": sum(d.get("wall_seconds", 0.0) for d in docs),
            "runs": runs,
        }
        dest = args.into / f"{args.prefix}{suite}_suite.json"
        write_json(dest, out)
        print(f"wrote {dest}: {len(runs)} runs, seeds {sorted({r['seed'] for r in runs})}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run (suite, seed) jobs concurrently")
    r.add_argument("--jobs", nargs="+", required=True, help="suite:SEEDS, e.g. table1-sparse:0-4 or ablation-cifar10n:1,2")
    r.add_argument("--only", nargs="*", default=None, help="run only these labels of each suite")
    r.add_argument("--device", default="cuda")
    r.add_argument("--gpus", type=int, default=1)
    r.add_argument("--per-gpu", type=int, default=1, help="concurrent jobs per GPU")
    r.add_argument("--deadline", type=float, default=float("inf"), help="start no job after this many seconds")
    r.add_argument("--hard-deadline", type=float, default=float("inf"), help="kill running jobs after this many seconds")
    r.add_argument("--parts", type=Path, required=True, help="folder of per-job JSON parts and logs")
    r.add_argument("--pack", type=Path, default=None, help="tar.gz of the parts, rewritten after every job")
    m = sub.add_parser("merge", help="merge parts / suite files into one file per suite")
    m.add_argument("inputs", nargs="+", type=Path, help="part folders, parts .tar.gz files or suite JSON files")
    m.add_argument("--into", type=Path, default=ROOT / "benchmarks" / "results")
    m.add_argument("--prefix", default="gpu5_")
    m.add_argument("--suites", nargs="*", default=None, help="merge only these suites")
    m.add_argument("--rename-suite", nargs="*", default=[], metavar="OLD=NEW", help="treat runs of suite OLD as runs of suite NEW")
    m.add_argument("--relabel", nargs="*", default=[], metavar="OLD=NEW", help="rename run labels of renamed suites")
    m.add_argument("--keep-suite-labels", action="store_true", help="drop runs whose label the suite does not define")
    args = ap.parse_args()
    run(args) if args.cmd == "run" else merge(args)


if __name__ == "__main__":
    main()
