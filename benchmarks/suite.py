"""Run a named suite of methods on data sets and write every run's metrics into one JSON file.

    PYTHONPATH=src python benchmarks/suite.py --suite real-cifar10n --device cuda \
        --out benchmarks/results/cifar10n_suite.json

Each entry of the output holds the full ``metrics.json`` of one run (config, versions,
device, history with memorization, expertise error with per-worker values). The file is
rewritten atomically after every run, so an interrupted suite keeps what it finished.
Suites are defined in :data:`SUITES`; ``--seeds`` repeats every run over several seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kdcrowd.cli import write_json  # noqa: E402
from kdcrowd.data.datasets import load_dataset  # noqa: E402
from kdcrowd.methods import RunConfig, run_on_dataset, versions  # noqa: E402
from kdcrowd.training import TrainConfig  # noqa: E402

TEACHERS = ["crowdlayer-mw", "crowdlayer-vw", "crowdlayer-vb", "crowdlayer-vwb", "maxmig", "conal"]


def _kd_runs(teachers: list[str]) -> list[dict[str, Any]]:
    runs = []
    for t in teachers:
        runs.append({"method": "kdcrowd", "label": f"kdcrowd({t}) mig-kl", "options": {"teacher": t, "student": "coteaching", "kd": "mig-kl"}})
        runs.append({"method": "kdcrowd", "label": f"kdcrowd({t}) kl", "options": {"teacher": t, "student": "coteaching", "kd": "kl"}})
        runs.append({"method": "kdcrowd", "label": f"kdcrowd({t}) mig-kl stage1", "options": {"teacher": t, "student": "coteaching", "kd": "mig-kl", "stages": 1}})
    return runs


def _base_runs() -> list[dict[str, Any]]:
    return [{"method": m, "label": m} for m in ("clean", "mv", "ds")] + [{"method": t, "label": t} for t in TEACHERS]


SUITES: dict[str, dict[str, Any]] = {
    # Issues 2–4 acceptance on the real CIFAR-10N crowd (20 k lossless images, 15k/1k/4k).
    "real-cifar10n": {"dataset": "cifar10n", "workers": None, "runs": _base_runs() + _kd_runs(["crowdlayer-mw", "maxmig"])},
    # One synthetic CIFAR-10 case: 50 workers of spread expertise, 3 labels per image.
    "synthetic-cifar10-sparse": {"dataset": "cifar10", "workers": "sparse", "runs": _base_runs() + _kd_runs(["crowdlayer-mw", "maxmig"])},
    # Max-MIG's low-expertise case with always-class-0 juniors, where majority vote must fail.
    "synthetic-cifar10-maxmig-low-2": {"dataset": "cifar10", "workers": "maxmig-low-2", "runs": _base_runs() + _kd_runs(["crowdlayer-mw", "maxmig"])},
    # LabelMe, 128 px images, official valid / test splits.
    "real-labelme": {"dataset": "labelme", "workers": None, "runs": _base_runs() + _kd_runs(["crowdlayer-mw", "maxmig"])},
    # A seconds-long CPU check of the whole machinery.
    "smoke": {"dataset": "digits", "workers": "maxmig-low-2", "runs": [{"method": "mv", "label": "mv"}] + _kd_runs(["maxmig"])[:1]},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True, choices=sorted(SUITES))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--root", default=None, help="data root (else $KDCROWD_DATA)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these labels")
    args = ap.parse_args()

    suite = SUITES[args.suite]
    t0 = time.perf_counter()
    out: dict[str, Any] = {"suite": args.suite, "command": " ".join(sys.argv), "versions": versions(), "runs": []}
    for seed in args.seeds:
        ds = load_dataset(suite["dataset"], root=args.root, workers=suite["workers"], seed=seed)
        for spec in suite["runs"]:
            if args.only and spec["label"] not in args.only:
                continue
            train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, device=args.device, progress=False)
            cfg = RunConfig(dataset=suite["dataset"], method=spec["method"], workers=suite["workers"], seed=seed, train=train, options=dict(spec.get("options", {})))
            t = time.perf_counter()
            metrics, _ = run_on_dataset(ds, cfg)
            metrics["label"] = spec["label"]
            out["runs"].append(metrics)
            out["device"] = metrics["device"]
            out["wall_seconds"] = time.perf_counter() - t0
            write_json(args.out, out)
            print(f"[{time.perf_counter() - t0:7.1f}s] seed {seed} {spec['label']:<34} test {metrics.get('test_accuracy', float('nan')):.4f} "
                  f"val-sel {metrics.get('test_accuracy_val_selected', float('nan')):.4f} ({time.perf_counter() - t:.1f}s)", flush=True)
    print(json.dumps({"wall_seconds": out.get("wall_seconds"), "runs": len(out["runs"])}))


if __name__ == "__main__":
    main()
