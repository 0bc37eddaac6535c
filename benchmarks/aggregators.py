"""kdcrowd's GLAD, MACE, Wawa, ZBS, one-coin DS and M-MSR against crowd-kit 1.4.2.

    python benchmarks/aggregators.py                      # defaults below, ~30-60 min on 2 cores
    python benchmarks/aggregators.py --sets bird --methods wawa,mmsr --out /tmp/a.json
    python benchmarks/aggregators.py --append --sets product,sentiment_zheng,zencrowd_all  # add sets

For each data set and method: seconds of ``kdcrowd.aggregators`` (torch, ``--device``)
and of crowd-kit's class on the same annotations, the gold accuracy of both, and the
share of items on which their labels agree. Data sets: the truth-inference sets in
``$KDCROWD_DATA/truth_inference`` (``--sets``; see that folder's README) and ``sim15k``,
a simulated crowd of 3,000 items x 5 labels = 15,000 annotations, 5 classes, 60 workers
(accuracies uniform in [0.35, 0.9], 20 % uniform spammers, seed 0).

Settings: every default of both libraries, except crowd-kit's MACE runs with
``n_restarts=1``: its 10 default restarts all start from the same ``random_state`` and
give the same result, so one restart is its result in a tenth of the time (the JSON
records ``crowdkit_mace_restarts``). Workers and classes are renumbered by first
appearance, the order in which crowd-kit draws MACE's and M-MSR's random starts, so both
libraries start from the same numbers. crowd-kit's ``Wawa`` / ``ZeroBasedSkill``
``predict`` fail under scikit-learn >= 1.6 (``check_is_fitted`` asks for
``__sklearn_tags__``); they get a subclass with a minimal one. A crowd-kit run longer than
``--ck-timeout`` seconds is stopped and recorded as ``"timeout"``, one that fails as ``"error: ..."``; crowd-kit's M-MSR is
skipped (``"skipped"``) above ``--ck-mmsr-max-workers`` workers (its covariance is a
Python loop over worker pairs, its sign step a dense eigenproblem over worker pairs).

Timing: one untimed warm-up run of each of our methods on a small crowd, then one timed
run each (``time.perf_counter``); torch threads ``--threads`` (1: the machine is shared).
The JSON also records the load average at start and end, since other work on the machine
slows both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kdcrowd.aggregators import run_aggregator  # noqa: E402

METHODS = ("wawa", "zbs", "one-coin-ds", "mmsr", "mace", "glad")
SETS = ("sim15k", "bird", "cf", "dog", "cf_amt", "rte")
CK_NAMES = {"glad": "GLAD", "mace": "MACE", "wawa": "Wawa", "zbs": "ZeroBasedSkill", "one-coin-ds": "OneCoinDawidSkene", "mmsr": "MMSR"}


def data_dir() -> Path:
    root = Path(os.environ.get("KDCROWD_DATA", ROOT.parent / "shared" / "data"))
    return root / "truth_inference" if (root / "truth_inference").is_dir() else root


def simulate(seed: int = 0, n: int = 3000, m: int = 60, k: int = 5, per_item: int = 5) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    acc = rng.uniform(0.35, 0.9, m)
    spammer = rng.random(m) < 0.2
    item = np.repeat(np.arange(n), per_item)
    worker = np.concatenate([rng.choice(m, per_item, replace=False) for _ in range(n)])
    right = rng.random(len(item)) < acc[worker]
    label = np.where(right, truth[item], (truth[item] + rng.integers(1, k, len(item))) % k)
    label = np.where(spammer[worker], rng.integers(0, k, len(item)), label)
    return pd.DataFrame({"item": item, "worker": worker, "label": label}), pd.Series(truth)


def load(name: str) -> tuple[pd.DataFrame, pd.Series]:
    if name == "sim15k":
        return simulate()
    d = data_dir()
    df = pd.read_csv(d / f"{name}_labels.csv.gz")
    truth = pd.read_csv(d / f"{name}_truth.csv.gz").set_index("item")["truth"]
    return df, truth


def first_appearance(df: pd.DataFrame, truth: pd.Series) -> tuple[pd.DataFrame, pd.Series, int]:
    df = df.copy()
    df["worker"] = pd.factorize(df["worker"])[0]
    codes, uniques = pd.factorize(df["label"])
    df["label"] = codes
    mapping = {old: new for new, old in enumerate(uniques)}
    return df, truth.map(mapping), len(uniques)


def crowdkit_class(method: str):  # noqa: ANN201
    import crowdkit.aggregation as ck

    cls = getattr(ck, CK_NAMES[method])
    if method in ("wawa", "zbs"):
        from sklearn.utils import Tags, TargetTags

        def tags(self):  # noqa: ANN001, ANN202
            return Tags(estimator_type=None, target_tags=TargetTags(required=False))

        cls = type(cls.__name__, (cls,), {"__sklearn_tags__": tags})
    return cls(n_restarts=1) if method == "mace" else cls()


class Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001, ANN202
    raise Timeout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ck-timeout", type=int, default=600)
    ap.add_argument("--ck-mmsr-max-workers", type=int, default=500)
    ap.add_argument("--append", action="store_true", help="add to the results already in --out (other sets)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "aggregators_cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    import crowdkit
    import sklearn

    report = {
        "what": "kdcrowd.aggregators vs crowd-kit: seconds, gold accuracy, label agreement",
        "device": args.device, "torch_threads": args.threads, "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "versions": {"torch": torch.__version__, "crowdkit": crowdkit.__version__, "pandas": pd.__version__, "sklearn": sklearn.__version__, "numpy": np.__version__},
        "loadavg_start": os.getloadavg(), "crowdkit_mace_restarts": 1, "ck_timeout_s": args.ck_timeout,
        "results": [],
    }
    if args.append and args.out.is_file():
        old = json.loads(args.out.read_text())
        report["results"] = old["results"]
        report["loadavg_start"] = [old["loadavg_start"], report["loadavg_start"]]
    # warm-up: torch kernels and imports, untimed
    wdf, _ = simulate(n=50, m=8, k=3)
    from types import SimpleNamespace

    wann = SimpleNamespace(item=wdf.item.to_numpy(), worker=wdf.worker.to_numpy(), label=wdf.label.to_numpy(), n_items=50, n_workers=8, n_classes=3)
    for m in methods:
        run_aggregator(wann, m, device=args.device)
    signal.signal(signal.SIGALRM, _alarm)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in [s for s in args.sets.split(",") if s]:
        try:
            df, truth = load(name)
        except FileNotFoundError:
            print(f"{name}: data not found, skipped", flush=True)
            continue
        df, truth, k = first_appearance(df, truth)
        n = int(df["item"].max()) + 1
        ann = SimpleNamespace(item=df.item.to_numpy(), worker=df.worker.to_numpy(), label=df.label.to_numpy(), n_items=n, n_workers=int(df.worker.max()) + 1, n_classes=k)
        gold_idx, gold = truth.index.to_numpy(), truth.to_numpy()
        info = {"set": name, "items": n, "workers": ann.n_workers, "classes": k, "annotations": len(df), "gold_items": len(gold)}
        for m in methods:
            t0 = time.perf_counter()
            res = run_aggregator(ann, m, device=args.device)
            t_ours = time.perf_counter() - t0
            row = {**info, "method": m, "seconds_ours": round(t_ours, 4), "n_iter_ours": res.n_iter, "accuracy_ours": float((res.labels[gold_idx] == gold).mean())}
            if m == "mmsr" and ann.n_workers > args.ck_mmsr_max_workers:
                row["crowdkit"] = "skipped"
            else:
                signal.alarm(args.ck_timeout)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t0 = time.perf_counter()
                        lab = crowdkit_class(m).fit_predict(df.rename(columns={"item": "task"}))
                        t_ck = time.perf_counter() - t0
                    signal.alarm(0)
                    lab = lab.reindex(np.arange(n)).to_numpy()
                    annotated = np.bincount(df["item"], minlength=n) > 0
                    row.update({
                        "seconds_crowdkit": round(t_ck, 4), "speedup": round(t_ck / t_ours, 2),
                        "accuracy_crowdkit": float((lab[gold_idx] == gold).mean()),
                        "label_agreement": float((lab[annotated] == res.labels[annotated]).mean()),
                    })
                except Timeout:
                    row["crowdkit"] = "timeout"
                except Exception as e:  # crowd-kit's own failure on this set: recorded, not ours
                    row["crowdkit"] = f"error: {type(e).__name__}: {e}"
                finally:
                    signal.alarm(0)
            report["results"].append(row)
            print(json.dumps(row), flush=True)
            report["loadavg_end"] = os.getloadavg()
            args.out.write_text(json.dumps(report, indent=1) + "\n")  # partial results survive
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
