"""Multi-GPU scaling of data-parallel training (``TrainConfig(distributed=True)``), one launch per GPU count.

    torchrun --nproc_per_node 1 benchmarks/multigpu.py --out benchmarks/results/multigpu
    torchrun --nproc_per_node 2 benchmarks/multigpu.py --out benchmarks/results/multigpu
    torchrun --nproc_per_node 4 benchmarks/multigpu.py --out benchmarks/results/multigpu
    # CPU smoke check (gloo, tiny random data):
    torchrun --nproc_per_node 2 benchmarks/multigpu.py --synthetic --device cpu --n-train 128 --epochs 2 --out /tmp/multigpu

What it measures: a crowd model (``--method``, default CrowdLayer-MW) with a ResNet-18
backbone (``--backbone``) trained by :func:`kdcrowd.training.fit` on all 55,000
Fashion-MNIST training images with simulated ``symmetric`` workers
(``load_dataset("fashion_mnist", workers="symmetric")``; ``--synthetic``: random uint8
28×28 images with simulated workers, for smoke checks), through the library's own
distributed path (sharded batches, DDP, per-epoch buffer synchronisation), in two modes:

* **weak** scaling: ``--batch-size`` images per GPU (the library's meaning of
  ``batch_size`` under ``distributed``), so the global batch grows with the GPUs;
* **strong** scaling: a fixed global batch ``--global-batch`` split over the GPUs
  (``global_batch / world_size`` per GPU).

Each mode trains ``--epochs`` epochs without validation (so an epoch is training only:
every step, the end-of-epoch buffer synchronisation and loss all-reduce); the first epoch
is a warm-up (allocations, cuDNN autotuning) and ``epoch_seconds`` is the median of the
later ones. ``images_per_s`` = 55,000 / ``epoch_seconds`` (all GPUs together). The test
accuracy after the last epoch is reported too (sharded prediction), to show what the
larger weak-scaling batches do to accuracy at a fixed learning rate and epoch count.

Each launch writes ``OUT/world<N>.json`` (rank 0 only; command, versions, device, world
size, results) and rewrites ``OUT/summary.json`` from every ``world*.json`` in ``OUT``:
per mode and GPU count the images/s, epoch time, speed-up and scaling efficiency
``images_per_s(N) / (N × images_per_s(1))`` relative to the 1-GPU launch. Launch with
``--nproc_per_node 1`` for the baseline, so that it runs the same DDP code path. Run
without ``torchrun`` it trains single-process (``distributed=False``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from kdcrowd import distributed as D  # noqa: E402
from kdcrowd.data.datasets import CrowdDataset, load_dataset  # noqa: E402
from kdcrowd.data.simulate import simulate_workers  # noqa: E402
from kdcrowd.io import write_json  # noqa: E402
from kdcrowd.methods import CrowdObjective, RunConfig, build_crowd_model, device_name, padded_annotations, versions  # noqa: E402
from kdcrowd.training import DeviceData, TrainConfig, _shard_batches, fit, predict_proba, resolve_device  # noqa: E402


def log(msg: str) -> None:
    if D.is_main():
        print(f"[multigpu] {msg}", flush=True)


def synthetic_dataset(n_train: int, seed: int) -> CrowdDataset:
    """Random uint8 28×28×1 images, 10 classes, simulated ``symmetric`` workers."""
    rng = np.random.default_rng(seed)
    n_eval = max(16, n_train // 10)
    x = rng.integers(0, 256, (n_train + 2 * n_eval, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, n_train + 2 * n_eval).astype(np.int64)
    tr, va, te = np.split(np.arange(len(y)), [n_train, n_train + n_eval])
    sim = simulate_workers(y[tr], "symmetric", n_classes=10, seed=seed)
    return CrowdDataset(
        name="synthetic", x_train=x[tr], x_val=x[va], x_test=x[te], y_train=y[tr], y_val=y[va], y_test=y[te],
        annotations=sim.annotations, class_names=[str(c) for c in range(10)], true_transitions=sim.transitions,
    )


def load(args: argparse.Namespace) -> CrowdDataset:
    if args.synthetic:
        return synthetic_dataset(args.n_train, args.seed)
    # Rank 0 first, so that a download (or the checksum pass) happens once.
    get = lambda: load_dataset("fashion_mnist", root=args.data_root, workers="symmetric", seed=args.seed)  # noqa: E731
    ds = get() if D.is_main() else None
    D.barrier()
    return ds if ds is not None else get()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_mode(ds: CrowdDataset, data: DeviceData, device: torch.device, per_gpu_batch: int, args: argparse.Namespace, distributed: bool) -> dict[str, Any]:
    """Train the crowd model for ``args.epochs`` epochs at ``per_gpu_batch``; time every epoch."""
    world = D.world_size()
    cfg = RunConfig(dataset=ds.name, method=args.method, backbone=args.backbone, seed=args.seed)
    cfg.train = TrainConfig(epochs=args.epochs, batch_size=per_gpu_batch, lr=args.lr, seed=args.seed, device=str(device), progress=False, distributed=distributed, sync_bn=args.sync_bn)
    torch.manual_seed(args.seed)
    model = build_crowd_model(args.method, ds, data, cfg)
    ann_workers, ann_labels = padded_annotations(ds.annotations, device)
    obj = CrowdObjective(model, ann_workers, ann_labels)
    stamps: list[float] = []

    def clock(epoch: int, module: Any, record: dict[str, Any]) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    D.barrier()
    _sync(device)
    t0 = time.perf_counter()
    res = fit(obj, data, cfg.train, [clock], desc=f"batch {per_gpu_batch}")
    seconds = np.diff([t0, *stamps]).tolist()
    steady = seconds[1:] if len(seconds) > 1 else seconds
    epoch_s = statistics.median(steady)
    acc = float((predict_proba(obj, data, data.x_test, cfg.train).argmax(1) == data.y_test).float().mean()) if data.x_test is not None else None
    peak = torch.tensor([torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0], device=device)
    if distributed:
        torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    steps = len(_shard_batches(data.n_train, per_gpu_batch, world, 0)[0])
    return {
        "per_gpu_batch": per_gpu_batch,
        "global_batch": per_gpu_batch * world,
        "steps_per_epoch": steps,
        "epoch_seconds_all": seconds,
        "epoch_seconds": epoch_s,
        "images_per_s": data.n_train / epoch_s,
        "images_per_s_per_gpu": data.n_train / epoch_s / world,
        "final_loss": res.history[-1]["loss"],
        "test_accuracy": acc,
        "peak_memory_mib_max_rank": float(peak.item()) if device.type == "cuda" else None,
    }


def summarise(out: Path) -> dict[str, Any]:
    """Scaling table over every ``world*.json`` in ``out``, relative to the 1-GPU run."""
    runs = {}
    for p in sorted(out.glob("world*.json")):
        r = json.loads(p.read_text())
        runs[int(r["world_size"])] = r
    table: dict[str, list[dict[str, Any]]] = {}
    for mode in ("weak", "strong"):
        rows = []
        base = runs.get(1, {}).get("results", {}).get(mode)
        for n in sorted(runs):
            r = runs[n]["results"].get(mode)
            if r is None or "error" in r:
                continue
            row = {k: r[k] for k in ("per_gpu_batch", "global_batch", "epoch_seconds", "images_per_s", "images_per_s_per_gpu", "test_accuracy")}
            row["world_size"] = n
            if base is not None and "error" not in base:
                row["speedup"] = r["images_per_s"] / base["images_per_s"]
                row["efficiency"] = row["speedup"] / n
            rows.append(row)
        table[mode] = rows
    devices = sorted({runs[n]["device"] for n in runs})
    return {"devices": devices, "dataset": sorted({runs[n]["dataset"] for n in runs}), "table": table, "files": [f"world{n}.json" for n in sorted(runs)]}


def _nccl_version() -> str:
    try:
        v = torch.cuda.nccl.version()
    except Exception as e:  # noqa: BLE001 - informational only
        return f"unknown ({type(e).__name__})"
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "multigpu", help="output directory (world<N>.json, summary.json)")
    ap.add_argument("--device", default="auto", help="auto or cuda (each process takes cuda:LOCAL_RANK), or cpu (gloo)")
    ap.add_argument("--modes", nargs="+", default=["weak", "strong"], choices=["weak", "strong"])
    ap.add_argument("--epochs", type=int, default=4, help="epochs per mode; the first is a warm-up")
    ap.add_argument("--batch-size", type=int, default=256, help="weak scaling: images per GPU per step")
    ap.add_argument("--global-batch", type=int, default=1024, help="strong scaling: images per step over all GPUs")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--method", default="crowdlayer-mw")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm instead of per-GPU BatchNorm statistics (CUDA)")
    ap.add_argument("--synthetic", action="store_true", help="random images instead of Fashion-MNIST (smoke checks)")
    ap.add_argument("--n-train", type=int, default=55_000, help="training images with --synthetic")
    ap.add_argument("--data-root", default=None, help="data root of load_dataset (default $KDCROWD_DATA or ~/.cache/kdcrowd)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    distributed = D.launched()
    if distributed:
        D.init_from_env(backend="gloo" if args.device == "cpu" else None)
    try:
        run(args, distributed)
    finally:
        D.cleanup()


def run(args: argparse.Namespace, distributed: bool) -> None:
    world = D.world_size()
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    log(f"{world} process(es) on {device} ({device_name(device)}), backend {torch.distributed.get_backend() if distributed else 'none'}")
    t = time.perf_counter()
    ds = load(args)
    data = DeviceData.from_dataset(ds, device)
    data.x_val = None  # epochs time training only; test accuracy is measured after training
    log(f"{ds.name}: {data.n_train} training images, {ds.annotations.n_workers} workers, {len(ds.annotations)} labels, loaded in {time.perf_counter() - t:.1f}s")
    launcher = "python"
    if distributed:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        launcher = f"torchrun --nproc_per_node {per_node}" + (f" --nnodes {world // per_node}" if per_node != world else "")
    report: dict[str, Any] = {
        "benchmark": "multigpu",
        "command": f"{launcher} {' '.join([os.path.relpath(sys.argv[0], ROOT) if os.path.isabs(sys.argv[0]) else sys.argv[0], *sys.argv[1:]])}",
        "versions": {**versions(), **({"nccl": _nccl_version()} if device.type == "cuda" else {})},
        "platform": platform.platform(),
        "world_size": world,
        "distributed": distributed,
        "backend": torch.distributed.get_backend() if distributed else None,
        "device": device_name(device),
        "gpus_visible": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "dataset": ds.name,
        "n_train": data.n_train,
        "n_workers": ds.annotations.n_workers,
        "method": args.method,
        "backbone": args.backbone,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": {},
    }
    out = args.out
    for mode in args.modes:
        per_gpu = args.batch_size if mode == "weak" else args.global_batch // world
        log(f"{mode} scaling: {per_gpu} images per GPU, global batch {per_gpu * world}, {args.epochs} epochs")
        if world == 1:
            try:
                r = train_mode(ds, data, device, per_gpu, args, distributed)
            except (RuntimeError, ValueError) as e:  # e.g. out of memory: record it, go on
                r = {"per_gpu_batch": per_gpu, "error": f"{type(e).__name__}: {e}"}
        else:  # an error on one rank would leave the others waiting: let torchrun stop them all
            r = train_mode(ds, data, device, per_gpu, args, distributed)
        report["results"][mode] = r
        if "error" in r:
            log(f"  {mode}: {r['error']}")
        else:
            log(f"  {r['images_per_s']:.0f} images/s ({r['images_per_s_per_gpu']:.0f} per GPU), {r['epoch_seconds']:.3f} s/epoch, test accuracy {r['test_accuracy']:.4f}")
        if D.is_main():
            write_json(out / f"world{world}.json", report)
    if D.is_main():
        summary = summarise(out)
        write_json(out / "summary.json", summary)
        for mode, rows in summary["table"].items():
            for row in rows:
                eff = f"  efficiency {row['efficiency']:.2f}" if "efficiency" in row else ""
                log(f"{mode:6s} {row['world_size']} GPU(s): {row['images_per_s']:8.0f} images/s, {row['epoch_seconds']:.3f} s/epoch{eff}")
        log(f"wrote {out / f'world{world}.json'} and {out / 'summary.json'}")
    D.barrier()


if __name__ == "__main__":
    main()
