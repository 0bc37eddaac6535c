"""What an aggregator makes of a real crowd's workers: label accuracy and skill signs.

    python benchmarks/aggregator_skills.py --dataset cifar10n --labels random --methods mv mmsr one-coin-ds \
        --out benchmarks/results/protocol/cpu_aggregator_skills_cifar10n.json

For the training items of ``--dataset`` (``kdcrowd.data.datasets.load_dataset``; CIFAR-10N's
``--labels``: ``random`` for the three labels an image of protocol-cifar10n, ``worst`` for the
one of protocol-cifar10n-worst), each of ``--methods`` runs on the crowd's annotations
(``kdcrowd.aggregators``, defaults): the accuracy of its labels and of the argmax of its
posteriors against the true labels, and, for methods with one skill per worker, how many
workers get a skill below zero (judged worse than chance; for M-MSR the argmax of its
posteriors is its ``label_rule="posterior"`` labels). Also how many
items each pair of workers shares (the overlap M-MSR's covariance is estimated from).
Nothing here trains a network; the test images are not read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kdcrowd import aggregators as A  # noqa: E402
from kdcrowd.aggregation import aggregate  # noqa: E402
from kdcrowd.data.datasets import load_dataset  # noqa: E402
from kdcrowd.io import write_json  # noqa: E402


def overlap(ann: Any) -> dict[str, float]:
    """Shared items per pair of workers (a sparse worker x item product; pairs sharing none left out)."""
    import scipy.sparse as sp

    w, i = np.asarray(ann.worker), np.asarray(ann.item)
    b = sp.csr_matrix((np.ones(len(w)), (w, i)), shape=(int(w.max()) + 1, int(i.max()) + 1))
    b.data[:] = 1.0  # a repeated pair counts once
    c = (b @ b.T).tocoo()
    off = c.row != c.col
    shared = c.data[off]
    n = b.shape[0]
    return {"workers": int(n), "pairs_sharing_items": int(off.sum() // 2), "pairs": n * (n - 1) // 2,
            "median_shared_items": float(np.median(shared)) if len(shared) else 0.0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cifar10n")
    ap.add_argument("--labels", default="random", help="CIFAR-10N's labels: random (three an image) or worst")
    ap.add_argument("--root", default=None, help="the data root (default: $KDCROWD_DATA)")
    ap.add_argument("--methods", nargs="+", default=["mv", "mmsr"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    opts = {"labels": args.labels} if args.dataset == "cifar10n" else {}
    ds = load_dataset(args.dataset, root=args.root, **opts)
    ann, y = ds.annotations, np.asarray(ds.y_train)
    rows = []
    for m in args.methods:
        t = time.perf_counter()
        # the aggregators of kdcrowd.aggregators report their skills; mv and ds only labels and posteriors
        res = A.run_aggregator(ann, m) if A.canonical_aggregator(m) is not None else None
        labels, post = (res.labels, res.posteriors) if res is not None else aggregate(ann, method=m)
        row: dict[str, Any] = {"method": m, "seconds": round(time.perf_counter() - t, 2),
                               "label_accuracy": float(np.mean(np.asarray(labels) == y)),
                               "posterior_argmax_accuracy": float(np.mean(np.asarray(post).argmax(1) == y))}
        if res is not None and res.skills is not None:
            sk = np.asarray(res.skills, dtype=float)
            sk = sk[np.isfinite(sk)]
            row.update({"workers_with_skill": int(len(sk)), "workers_below_zero": int((sk < 0).sum())})
        rows.append(row)
        print(row, flush=True)
    result = {"benchmark": "aggregator_skills", "dataset": args.dataset, "dataset_options": opts, "items": int(len(y)),
              "annotations": int(len(np.asarray(ann.worker))), "overlap": overlap(ann), "rows": rows,
              "command": " ".join(["benchmarks/aggregator_skills.py", *(argv if argv is not None else sys.argv[1:])])}
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
