"""Dawid–Skene sharded over processes: time per EM iteration against one process, and equal labels.

    torchrun --nproc-per-node 4 benchmarks/ds_distributed.py --device cuda
    torchrun --nproc-per-node 2 benchmarks/ds_distributed.py --device cpu --items 200000

Every rank simulates the same crowd (``benchmarks/scale.py``'s ``simulate``; by default
NetEaseCrowd's shape: 1.0 M items x 6 labels from 2,413 workers, K = 10), keeps its share
by item (:func:`kdcrowd.aggregation.shard_by_item`: contiguous item ranges with about the
same number of annotations) and runs ``dawid_skene(shard, distributed=True)`` for exactly
``--iters`` EM iterations (``criterion="loglik"``, ``tol=-inf``): the E-step on its own
items, the M-step's confusion counts, class-prior sums and stopping statistics
all-reduced once per iteration (NCCL for CUDA tensors, gloo on the CPU). The sharded run
is timed between two barriers. Rank 0 then runs the same Dawid–Skene in one process on
all the annotations (same device) and compares: labels (all items, gathered from the
ranks), posteriors, confusion matrices, iterations.

Writes ``benchmarks/results/ds_distributed_<device>_<N>ranks.json`` (or ``--out``) from
rank 0 and prints its path as the last line. Without torchrun it runs as one rank.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from kdcrowd import distributed as D  # noqa: E402
from kdcrowd.aggregation import dawid_skene, shard_by_item  # noqa: E402
from kdcrowd.io import write_json  # noqa: E402
from kdcrowd.methods import device_name, versions  # noqa: E402
from scale import simulate  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when available); each rank uses cuda:LOCAL_RANK")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2413)
    ap.add_argument("--labels-per-item", type=int, default=6)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--iters", type=int, default=20, help="EM iterations, run in full (no early stop)")
    ap.add_argument("--prior", type=float, default=None, help="Dawid–Skene prior (default: the library's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-reference", action="store_true", help="do not run the one-process reference on rank 0")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    want_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if D.launched():
        D.init_from_env(backend=None if want_cuda else "gloo")
    rank, world = D.rank(), D.world_size()
    device = torch.device("cuda", D.local_rank() % max(1, torch.cuda.device_count())) if want_cuda else torch.device("cpu")
    if want_cuda:
        torch.cuda.set_device(device)
    kw: dict[str, Any] = {"n_iter": args.iters, "tol": float("-inf"), "criterion": "loglik", "device": str(device)}
    if args.prior is not None:
        kw["prior"] = args.prior

    sim = simulate(args.items, args.workers, args.labels_per_item, args.classes, seed=args.seed)
    from types import SimpleNamespace

    ann = SimpleNamespace(item=sim["item"], worker=sim["worker"], label=sim["label"], n_items=args.items, n_workers=args.workers, n_classes=args.classes)
    y = sim["y"]
    shard = shard_by_item(ann, rank, world)

    # warm-up (CUDA context, kernels, the process group's first collectives): not timed
    small = shard_by_item(SimpleNamespace(item=ann.item[:6000], worker=ann.worker[:6000], label=ann.label[:6000], n_items=1000, n_workers=args.workers, n_classes=args.classes), rank, world)
    dawid_skene(small, **{**kw, "n_iter": 2}, distributed=True, warn=False)
    D.barrier()
    _sync(device)
    t0 = time.perf_counter()
    res = dawid_skene(shard, **kw, distributed=True, warn=False)
    _sync(device)
    t_rank = time.perf_counter() - t0
    D.barrier()
    t_all = time.perf_counter() - t0
    times = D.all_gather_object(t_rank)
    parts = D.all_gather_object((shard.items, res.labels, len(shard.item)))
    labels = np.full(args.items, -2, dtype=np.int64)
    for items, lab, _ in parts:
        labels[items] = lab

    out: dict[str, Any] | None = None
    if rank == 0:
        out = {
            "command": " ".join(["torchrun", f"--nproc-per-node {world}", "benchmarks/ds_distributed.py", *(sys.argv[1:] if argv is None else argv)]),
            "versions": versions(),
            "device": device_name(device),
            "world_size": world,
            "backend": str(torch.distributed.get_backend()) if D.is_initialized() else None,
            "cpu_count": os.cpu_count(),
            "loadavg": list(os.getloadavg()),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "n_annotations": int(ann.item.size),
            "annotations_per_rank": [p[2] for p in parts],
            "iters": int(res.n_iter),
            "sharded_s": t_all,
            "sharded_s_per_iter": t_all / max(1, res.n_iter),
            "rank_seconds": times,
            "sharded_accuracy": float((labels == y).mean()),
            "notes": [
                "sharded_s: wall time of dawid_skene(shard, distributed=True) between two barriers (setup included: sorting the shard, counting labels per worker, one all-reduce of those counts), after a small warm-up run.",
                "reference_*: the same call in one process on all the annotations on rank 0's device (the other ranks wait).",
            ],
        }
        if not args.skip_reference:
            _sync(device)
            t0 = time.perf_counter()
            ref = dawid_skene(ann, **kw, warn=False)
            _sync(device)
            t_ref = time.perf_counter() - t0
            out.update({
                "reference_s": t_ref,
                "reference_s_per_iter": t_ref / max(1, ref.n_iter),
                "speedup": t_ref / t_all if t_all > 0 else None,
                "labels_equal": bool(np.array_equal(labels, ref.labels)),
                "labels_agreement": float((labels == ref.labels).mean()),
                "transitions_max_abs_diff": float(np.abs(res.transitions - ref.transitions).max()),
                "priors_max_abs_diff": float(np.abs(res.priors - ref.priors).max()),
                "same_iterations": int(ref.n_iter) == int(res.n_iter),
                "reference_accuracy": float((ref.labels == y).mean()),
            })
        path = args.out or ROOT / "benchmarks" / "results" / f"ds_distributed_{device.type}_{world}ranks.json"
        write_json(path, out)
        print(f"[ds_distributed] {world} rank(s) on {out['device']}: {out['sharded_s_per_iter']:.4f} s/iteration sharded"
              + (f", {out['reference_s_per_iter']:.4f} s/iteration in one process; labels equal: {out['labels_equal']}" if "reference_s" in out else ""), flush=True)
        print(path, flush=True)
    D.barrier()
    D.cleanup()
    return out


if __name__ == "__main__":
    main()
