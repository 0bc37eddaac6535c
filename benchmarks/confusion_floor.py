"""How far is a worker's *empirical* confusion from the matrix E_m compares it with?

    python benchmarks/confusion_floor.py --dataset digits --workers maxmig-low-1 --seeds 0 1 2 3 4 \
        --out benchmarks/results/cpu_confusion_floor_digits_maxmig-low-1.json

For each seed: Max-MIG's initial worker matrices (its ``init_from_annotations`` rule, no
training) measured against (a) the majority-vote soft labels (Max-MIG's own rule),
(b) the true training labels — the best any "measure the workers against refined labels"
estimate can do — and the E_m of each against the reference matrices E_m uses (the
generating matrices for simulated workers, the empirical confusion against the truth for
real workers). Explains docs/RESULTS.md §3b: E_m is a *relative* error (|T − T̂| / T per
entry), so for simulated workers with near-uniform rows the sampling noise of ~100 items
per row keeps even (b) far from the generating matrices, while majority vote's smeared
soft labels happen to land closer; on real workers (b) is E_m's reference itself, up to
the smoothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kdcrowd import metrics as M  # noqa: E402
from kdcrowd.data.datasets import load_dataset  # noqa: E402
from kdcrowd.io import write_json  # noqa: E402
from kdcrowd.methods import padded_annotations, true_transitions, versions  # noqa: E402
from kdcrowd.models.crowd import MaxMIG  # noqa: E402


def one_seed(name: str, workers: str | None, seed: int, options: dict[str, Any], empirical_reference: bool = False) -> dict[str, Any]:
    """E_m of majority-vote- and true-label-initialised worker matrices for one seed.

    ``empirical_reference``: compare with the empirical confusion against the truth (what E_m
    uses for real workers) even for simulated workers, instead of their generating matrices.
    """
    ds = load_dataset(name, workers=workers, seed=seed, **options)
    if empirical_reference:
        ds.true_transitions = None
    w, l = padded_annotations(ds.annotations, torch.device("cpu"))
    T_ref, mask = true_transitions(ds)
    K = ds.n_classes
    # Max-MIG's own initialisation rule (with its eps smoothing): exactly what stage 2 starts from
    model = MaxMIG(torch.nn.Identity(), ds.annotations.n_workers, K)
    out: dict[str, Any] = {"seed": seed, "labels_per_worker_median": float(np.median(ds.annotations.labels_per_worker()))}
    onehot = torch.nn.functional.one_hot(torch.as_tensor(ds.y_train), K).float()
    for tag, soft in (("majority_vote", None), ("true_labels", onehot)):
        model.init_from_annotations(w, l, soft=soft)
        e = M.expertise_error(T_ref, model.transition_matrices().detach().numpy(), mask)
        out[f"E_m_{tag}"] = e["relative_mean"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--workers", default=None)
    ap.add_argument("--features", default=None, help="labelme: 'bovw' for the bag-of-words features")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--empirical-reference", action="store_true", help="compare simulated workers with their empirical confusion, as for real workers")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    opts = {"features": args.features} if args.features else {}
    rows = [one_seed(args.dataset, args.workers, s, opts, args.empirical_reference) for s in args.seeds]
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k.startswith("E_m")}
    write_json(args.out, {"benchmark": "confusion_floor", "command": " ".join(sys.argv), "versions": versions(), "device": "cpu",
                          "dataset": args.dataset, "workers": args.workers, "per_seed": rows, "mean": summary, "wall_seconds": time.perf_counter() - t0})
    print(summary)


if __name__ == "__main__":
    main()
