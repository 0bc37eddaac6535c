"""Scale of the crowd: a million items, five million annotations, fifty thousand workers.

    python benchmarks/scale.py --out benchmarks/results/scale.json [--device cuda] \
        [--sizes 125000 250000 500000 1000000]

For every size N (items) of ``--sizes`` the script simulates N items x ``--labels-per-item``
labels from ``--workers`` workers (vectorised numpy: per-worker symmetric noise rates
spread evenly over [0.1, 0.5], K classes, every item labelled by distinct random workers)
and measures wall time and peak memory of

1. the data layer: ``Annotations.from_long(DataFrame(item, worker, label))`` and
   ``.padded()``;
2. majority vote (``kdcrowd.aggregation.majority_vote``, numpy, CPU);
3. Dawid–Skene (``kdcrowd.aggregation.dawid_skene``) for exactly ``--ds-iters`` EM
   iterations (``criterion="loglik"``, ``tol=-inf`` so it never stops early) on the CPU
   and, when CUDA is available, on the GPU;
4. at the largest size and on CUDA only (or on the CPU with ``--epochs-on-cpu``): one
   epoch of Max-MIG and of CrowdLayer-MW with all workers over all items, with a tiny
   MLP backbone on random 32-d features (``crowd_loss`` on the padded rows, AdamW,
   batch ``--batch-size``, bf16 autocast on CUDA).

Memory: host memory is the peak resident set size above the level before the step,
sampled every few milliseconds by a background thread reading ``/proc/self/statm`` (it
sees numpy, pandas and torch CPU allocations alike; a step that reuses memory already
held by the process shows less than it allocates). GPU memory is
``torch.cuda.max_memory_allocated`` above the level before the step.

Cost linear in annotations: each step also reports seconds per million annotations;
``linearity`` in the output compares those across sizes.

The JSON file is rewritten atomically after every size, so an interrupted run keeps what
it finished. ``--quick`` runs toy sizes (seconds, for a smoke check).

NetEaseCrowd shape (``--preset netease``)::

    python benchmarks/scale.py --preset netease [--device cuda]

A simulated crowd shaped like NetEaseCrowd, the largest public crowd (6.0 M annotations
of 1.0 M items by 2,413 workers, 6 labels per item), for K = 3 and K = 10 classes (and,
to show that time and memory grow linearly, at half the size), through the data layer,
majority vote and Dawid–Skene **as a user calls it** (``dawid_skene(ann, device=...)``:
the library's defaults, regularised, crowd-kit's stopping rule). Each step is timed
separately, with its peak RSS, the process's peak RSS and ``os.getloadavg()`` before and
after (the CPU may be shared). Dawid–Skene runs on ``--device`` only (``cuda``: on the
GPU, with a warm-up run first). Writes ``benchmarks/results/scale_netease_<cpu|cuda>.json``
(or ``--out``) and prints that path as the last line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from kdcrowd.io import write_json  # noqa: E402
from kdcrowd.methods import device_name, versions  # noqa: E402
from kdcrowd.training import _batches, autocast, resolve_device  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from kdcrowd.aggregation import dawid_skene, majority_vote  # noqa: E402
from kdcrowd.data.annotations import Annotations  # noqa: E402

DEFAULT_SIZES = [125_000, 250_000, 500_000, 1_000_000]


# ----------------------------------------------------------------------------- utilities


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4096


_PAGE = _page_size()


def current_rss() -> int | None:
    """Resident set size in bytes (Linux ``/proc``), else ``None``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so that an RSS peak shows a step's own use."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def traced_peak_mb(fn: Any) -> float:
    """Peak of the memory allocations traced by ``tracemalloc`` (Python objects and numpy
    arrays; not torch's CPU allocator, not pandas' C hash tables) while ``fn()`` runs."""
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        res = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del res
    return (peak - base) / 2**20


class PeakRSS:
    """Context manager: peak RSS above the entry level, sampled by a background thread.

    Falls back to ``resource.getrusage`` max-RSS growth when ``/proc`` is unavailable
    (then only growth of the process-wide high-water mark is seen).
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak_mb: float | None = None
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            r = current_rss()
            if r is not None and r > self._peak:
                self._peak = r
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        gc.collect()
        _malloc_trim()
        self._base = current_rss()
        if self._base is None:
            import resource

            self._ru0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self._peak = self._base or 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if self._base is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._base is not None:
            self._stop.set()
            self._thread.join()
            r = current_rss()
            if r is not None and r > self._peak:
                self._peak = r
            self.peak_mb = max(0, self._peak - self._base) / 2**20
        else:  # pragma: no cover - non-Linux
            import resource

            grow_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._ru0
            self.peak_mb = max(0, grow_kb) / 1024


class GPUPeak:
    """Context manager: ``torch.cuda.max_memory_allocated`` above the entry level (MB)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None

    def __enter__(self) -> GPUPeak:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- simulation


def simulate(n_items: int, n_workers: int, labels_per_item: int, n_classes: int, seed: int = 0, noise_min: float = 0.1, noise_max: float = 0.5) -> dict[str, np.ndarray]:
    """Vectorised crowd: ``labels_per_item`` distinct random workers per item, symmetric noise.

    Distinct workers without a per-item loop: worker ``j`` of item ``i`` is
    ``(base_i + o_ij) mod M`` with offsets ``o_i0 = 0 < o_i1 < ... < o_i,R-1 <= M - 1``
    built as cumulative sums of random gaps in ``[1, (M-1)//(R-1)]``, so the R offsets are
    distinct modulo M. Worker m's noise rate is spread evenly over
    ``[noise_min, noise_max]``; a noisy label is a uniformly random *other* class.
    Returns the long table columns (item-major) and the ground truth.
    """
    r = labels_per_item
    if r > n_workers:
        raise ValueError(f"labels_per_item={r} needs at least that many workers, got {n_workers}")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n_items)
    rates = np.linspace(noise_min, noise_max, n_workers) if n_workers > 1 else np.array([noise_min])
    rates = rates[rng.permutation(n_workers)]
    base = rng.integers(0, n_workers, n_items)
    if r > 1:
        max_gap = max(1, (n_workers - 1) // (r - 1))
        gaps = rng.integers(1, max_gap + 1, (n_items, r - 1))
        offsets = np.concatenate([np.zeros((n_items, 1), dtype=np.int64), np.cumsum(gaps, axis=1)], axis=1)
    else:
        offsets = np.zeros((n_items, 1), dtype=np.int64)
    worker = ((base[:, None] + offsets) % n_workers).reshape(-1)
    del offsets
    item = np.repeat(np.arange(n_items, dtype=np.int64), r)
    true = y[item]
    noisy = rng.random(item.size) < rates[worker]
    shift = rng.integers(1, n_classes, item.size) if n_classes > 1 else np.zeros(item.size, dtype=np.int64)
    label = np.where(noisy, (true + shift) % n_classes, true)
    return {"item": item, "worker": worker.astype(np.int64), "label": label.astype(np.int64), "y": y, "rates": rates}


# ----------------------------------------------------------------------------- steps


def time_data_layer(df: pd.DataFrame) -> tuple[Annotations, dict[str, Any]]:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        ann = Annotations.from_long(df)
        t1 = time.perf_counter()
        w, l = ann.padded()
        t2 = time.perf_counter()
    out = {"from_long_s": t1 - t0, "padded_s": t2 - t1, "data_layer_s": t2 - t0, "padded_width": int(w.shape[1]), "peak_mem_mb_data_layer": mem.peak_mb}
    del w, l
    return ann, out


def time_mv(ann: Annotations, y: np.ndarray) -> dict[str, Any]:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        labels = majority_vote(ann)
        t1 = time.perf_counter()
    return {"mv_s": t1 - t0, "peak_mem_mb_mv": mem.peak_mb, "mv_accuracy": float((labels == y).mean())}


def run_ds(ann: Annotations, n_iter: int, device: str) -> Any:
    return dawid_skene(ann, n_iter=n_iter, tol=float("-inf"), criterion="loglik", device=device)


def time_ds_cpu(ann: Annotations, y: np.ndarray, n_iter: int) -> dict[str, Any]:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        res = run_ds(ann, n_iter, "cpu")
        t1 = time.perf_counter()
    return {"ds_cpu_s": t1 - t0, "ds_iters": int(res.n_iter), "ds_cpu_s_per_iter": (t1 - t0) / max(1, res.n_iter), "peak_mem_mb_ds_cpu": mem.peak_mb, "ds_accuracy": float((res.labels == y).mean())}


def time_ds_gpu(ann: Annotations, y: np.ndarray, n_iter: int, device: torch.device) -> dict[str, Any]:
    with GPUPeak(device) as gmem, PeakRSS() as mem:
        _sync(device)
        t0 = time.perf_counter()
        res = run_ds(ann, n_iter, str(device))  # returns numpy arrays: synchronised
        t1 = time.perf_counter()
    return {"ds_gpu_s": t1 - t0, "ds_gpu_iters": int(res.n_iter), "ds_gpu_s_per_iter": (t1 - t0) / max(1, res.n_iter), "gpu_peak_mb_ds": gmem.peak_mb, "peak_mem_mb_ds_gpu_host": mem.peak_mb, "ds_gpu_accuracy": float((res.labels == y).mean())}


def crowd_epoch(model_name: str, workers: torch.Tensor, labels: torch.Tensor, n_workers: int, n_classes: int, device: torch.device, batch_size: int = 4096, feature_dim: int = 32, hidden: tuple[int, ...] = (64,), lr: float = 1e-3, seed: int = 0, warmup_steps: int = 3, amp: bool | None = None) -> dict[str, Any]:
    """One epoch of a crowd model over all items (random features), timed after a short warm-up.

    ``workers``/``labels``: the padded ``(N, L)`` annotation rows, already on ``device``.
    The warm-up steps (first-call kernel selection, allocator growth) run on the first
    batches and are not part of the epoch time; the epoch then visits every item once
    in a random order.
    """
    from kdcrowd.models.backbones import MLP
    from kdcrowd.models.crowd import CrowdLayer, MaxMIG

    torch.manual_seed(seed)
    n = workers.shape[0]
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    x = torch.randn(n, feature_dim, device=device, generator=gen)
    backbone = MLP(feature_dim, n_classes, hidden=hidden, dropout=0.0)
    t_init = 0.0
    if model_name == "maxmig":
        model = MaxMIG(backbone, n_workers, n_classes).to(device)
        _sync(device)
        t = time.perf_counter()
        model.init_from_annotations(workers, labels)
        _sync(device)
        t_init = time.perf_counter() - t
    elif model_name == "crowdlayer-mw":
        model = CrowdLayer(backbone, n_workers, n_classes, variant="mw").to(device)
    else:
        raise ValueError(f"unknown crowd model {model_name!r}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    def step(idx: torch.Tensor) -> torch.Tensor:
        with autocast(device, amp):
            loss, _ = model.crowd_loss(x[idx], workers[idx], labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    model.train()
    perm = torch.randperm(n, device=device, generator=gen)
    for s in range(min(warmup_steps, max(1, n // batch_size))):
        step(perm[s * batch_size : (s + 1) * batch_size])
    mem = GPUPeak(device)
    with mem:
        perm = torch.randperm(n, device=device, generator=gen)
        bounds = _batches(n, batch_size)  # a last batch of one item is merged (Max-MIG needs B >= 2)
        loss_sum = torch.zeros((), device=device)
        _sync(device)
        t0 = time.perf_counter()
        for s, e in bounds:
            loss_sum += step(perm[s:e]).float()
        _sync(device)
        sec = time.perf_counter() - t0
    loss = float(loss_sum) / len(bounds)
    n_params_workers = int(sum(p.numel() for n_, p in model.named_parameters() if not n_.startswith("backbone")))
    return {"seconds": sec, "steps": len(bounds), "items_per_second": n / sec, "init_s": t_init, "mean_loss": loss, "gpu_peak_mb": mem.peak_mb, "worker_parameters": n_params_workers}


# ----------------------------------------------------------------------------- driver


def run_size(n_items: int, args: argparse.Namespace, device: torch.device, do_epochs: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {"n_items": n_items, "n_workers": args.workers, "n_classes": args.classes, "labels_per_item": args.labels_per_item}
    t = time.perf_counter()
    sim = simulate(n_items, args.workers, args.labels_per_item, args.classes, seed=args.seed)
    rec["simulate_s"] = time.perf_counter() - t
    a = int(sim["item"].size)
    rec["n_annotations"] = a
    log(f"N={n_items:,}: simulated {a:,} annotations from {args.workers:,} workers in {rec['simulate_s']:.2f}s")
    df = pd.DataFrame({"item": sim["item"], "worker": sim["worker"], "label": sim["label"]})
    y = sim["y"]
    del sim
    ann, d = time_data_layer(df)
    rec.update(d)
    log(f"  data layer: from_long {d['from_long_s']:.2f}s + padded {d['padded_s']:.2f}s = {d['data_layer_s']:.2f}s (RSS peak +{d['peak_mem_mb_data_layer']:.0f} MB)")
    if not args.no_tracemalloc:  # a second, untimed pass of each numpy step under tracemalloc
        rec["traced_peak_mb_data_layer"] = traced_peak_mb(lambda: (Annotations.from_long(df), ann.padded()))
        rec["traced_peak_mb_mv"] = traced_peak_mb(lambda: majority_vote(ann))
        log(f"  tracemalloc peaks: data layer {rec['traced_peak_mb_data_layer']:.0f} MB, majority vote {rec['traced_peak_mb_mv']:.0f} MB")
    del df
    gc.collect()
    rec.update(time_mv(ann, y))
    log(f"  majority vote: {rec['mv_s']:.3f}s (RSS peak +{rec['peak_mem_mb_mv']:.0f} MB, accuracy {rec['mv_accuracy']:.4f})")
    if not args.skip_ds_cpu:
        rec.update(time_ds_cpu(ann, y, args.ds_iters))
        log(f"  Dawid-Skene CPU: {rec['ds_cpu_s']:.2f}s for {rec['ds_iters']} iterations (RSS peak +{rec['peak_mem_mb_ds_cpu']:.0f} MB, accuracy {rec['ds_accuracy']:.4f})")
    else:
        rec.update({"ds_cpu_s": None, "ds_iters": None})
    rec["data_mv_ds_cpu_s"] = rec["data_layer_s"] + rec["mv_s"] + (rec["ds_cpu_s"] or 0.0)
    rec["ds_gpu_s"] = None
    if device.type == "cuda":
        rec.update(time_ds_gpu(ann, y, args.ds_iters, device))
        if rec["ds_iters"] is None:
            rec["ds_iters"] = rec["ds_gpu_iters"]
        log(f"  Dawid-Skene GPU: {rec['ds_gpu_s']:.3f}s for {rec['ds_gpu_iters']} iterations (GPU peak +{rec['gpu_peak_mb_ds']:.0f} MB)")
    per_m = 1e6 / a
    rec["seconds_per_million_annotations"] = {
        "data_layer": rec["data_layer_s"] * per_m,
        "mv": rec["mv_s"] * per_m,
        "ds_cpu": None if rec["ds_cpu_s"] is None else rec["ds_cpu_s"] * per_m,
        "ds_gpu": None if rec["ds_gpu_s"] is None else rec["ds_gpu_s"] * per_m,
    }
    rec["epoch_maxmig_s"] = rec["epoch_crowdlayer_s"] = rec["gpu_peak_mb"] = None
    if do_epochs:
        w_np, l_np = ann.padded()
        w = torch.as_tensor(w_np, device=device)
        l = torch.as_tensor(l_np, device=device)
        del w_np, l_np
        peaks = []
        for name, key in (("maxmig", "epoch_maxmig"), ("crowdlayer-mw", "epoch_crowdlayer")):
            r = crowd_epoch(name, w, l, ann.n_workers, ann.n_classes, device, batch_size=args.batch_size, seed=args.seed)
            rec[f"{key}_s"] = r["seconds"]
            rec[f"{key}_detail"] = r
            if r["gpu_peak_mb"] is not None:
                peaks.append(r["gpu_peak_mb"])
            log(f"  one epoch {name}: {r['seconds']:.2f}s, {r['steps']} steps of {args.batch_size}, {r['items_per_second']:,.0f} items/s" + (f", GPU peak +{r['gpu_peak_mb']:.0f} MB" if r["gpu_peak_mb"] is not None else ""))
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rec["gpu_peak_mb"] = max(peaks) if peaks else None
        del w, l
    return rec


def linearity(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per million annotations of each step across sizes, and largest/smallest ratio."""
    out: dict[str, Any] = {}
    for step in ("data_layer", "mv", "ds_cpu", "ds_gpu"):
        vals = [(r["n_annotations"], r["seconds_per_million_annotations"][step]) for r in results if r["seconds_per_million_annotations"].get(step) is not None]
        if not vals:
            continue
        out[step] = {"n_annotations": [v[0] for v in vals], "s_per_million": [v[1] for v in vals], "largest_over_smallest_size": vals[-1][1] / vals[0][1] if vals[0][1] > 0 else None}
    return out


NETEASE = {"n_items": 1_000_000, "n_workers": 2413, "labels_per_item": 6}


def _max_rss_mb() -> float | None:
    """The process's peak resident set size so far (``ru_maxrss``), in MB."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except (ImportError, OSError):  # pragma: no cover - non-POSIX
        return None


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def netease_row(n_items: int, n_classes: int, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """One NetEaseCrowd-shaped crowd (``n_items`` x 6 labels, 2,413 workers, K classes):
    data layer, majority vote, Dawid–Skene with the library's defaults on ``device``."""
    w, r = NETEASE["n_workers"], NETEASE["labels_per_item"]
    rec: dict[str, Any] = {"n_items": n_items, "n_workers": w, "labels_per_item": r, "n_classes": n_classes, "device": str(device)}
    sim = simulate(n_items, w, r, n_classes, seed=seed)
    a = int(sim["item"].size)
    rec["n_annotations"] = a
    df = pd.DataFrame({"item": sim["item"], "worker": sim["worker"], "label": sim["label"]})
    y = sim["y"]
    del sim
    rec["loadavg_before_data_layer"] = _load()
    c0 = time.process_time()
    ann, d = time_data_layer(df)
    rec["data_layer_cpu_s"] = time.process_time() - c0
    del df
    gc.collect()
    rec.update(d)
    rec["loadavg_before_mv"] = _load()
    c0 = time.process_time()
    rec.update(time_mv(ann, y))
    rec["mv_cpu_s"] = time.process_time() - c0
    rec["loadavg_before_ds"] = _load()
    with GPUPeak(device) as gmem, PeakRSS() as mem:
        _sync(device)
        c0 = time.process_time()
        t0 = time.perf_counter()
        res = dawid_skene(ann, device=str(device))  # numpy out: synchronised
        t1 = time.perf_counter()
        rec["ds_cpu_s"] = time.process_time() - c0
    rec["loadavg_after_ds"] = _load()
    rec.update({
        "ds_s": t1 - t0, "ds_iters": int(res.n_iter), "ds_s_per_iter": (t1 - t0) / max(1, res.n_iter),
        "peak_mem_mb_ds": mem.peak_mb, "gpu_peak_mb_ds": gmem.peak_mb,
        "ds_accuracy": float((res.labels == y).mean()),
    })
    rec["total_s"] = rec["data_layer_s"] + rec["mv_s"] + rec["ds_s"]
    rec["process_peak_rss_mb"] = _max_rss_mb()
    rec["peak_step_rss_bytes_per_annotation"] = max(rec["peak_mem_mb_data_layer"] or 0, rec["peak_mem_mb_mv"] or 0, rec["peak_mem_mb_ds"] or 0) * 2**20 / a
    log(f"N={n_items:,} K={n_classes} ({a:,} annotations) on {device}: data layer {rec['data_layer_s']:.2f}s, MV {rec['mv_s']:.2f}s, "
        f"DS {rec['ds_s']:.2f}s ({rec['ds_iters']} it), total {rec['total_s']:.2f}s; RSS peaks +{rec['peak_mem_mb_data_layer']:.0f}/+{rec['peak_mem_mb_mv']:.0f}/+{rec['peak_mem_mb_ds']:.0f} MB; "
        f"accuracy MV {rec['mv_accuracy']:.4f} DS {rec['ds_accuracy']:.4f}; load {rec['loadavg_after_ds']}")
    del ann, res
    gc.collect()
    return rec


def main_netease(args: argparse.Namespace, device: torch.device) -> Path:
    out_path = args.out or ROOT / "benchmarks" / "results" / f"scale_netease_{device.type}.json"
    out: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/scale.py", *args.argv]),
        "versions": versions(),
        "device": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": _load(),
        "shape": NETEASE,
        "classes": args.netease_classes,
        "fractions": args.netease_fractions,
        "targets": {"total_s_gpu": 5.0, "total_s_cpu_2_cores": 120.0},
        "notes": [
            "Simulated crowd shaped like NetEaseCrowd (1.0 M items, 6 labels each from distinct random workers out of 2,413 = 6.0 M annotations); worker noise rates spread evenly over [0.1, 0.5], symmetric noise.",
            "total_s = data_layer_s (Annotations.from_long with its duplicate check + .padded()) + mv_s (majority_vote, numpy) + ds_s (dawid_skene(ann, device=...) with the library's defaults: prior=1, crowd-kit's stopping rule, up to 100 iterations; float64 on the CPU, float32 on CUDA).",
            "peak_mem_mb_* = peak RSS above the level before the step (sampled every 2 ms); process_peak_rss_mb = ru_maxrss of the whole process so far (includes the simulation and the DataFrame); gpu_peak_mb_ds = torch.cuda.max_memory_allocated above the level before DS.",
            "loadavg_* = os.getloadavg() (1, 5, 15 min) at those points: the CPU may be shared with other processes, which slows every step (a load above the number of cores means they waited).",
            "*_cpu_s = CPU seconds of this process in the step (time.process_time: user + system, all threads; includes the sampling thread of the RSS peak). Less sensitive than the wall times to other processes on a shared CPU; with T threads busy, wall ~ cpu / T on an idle machine.",
        ],
        "results": [],
    }
    log(f"NetEaseCrowd shape on {out['device']}; {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; load {out['loadavg_start']}")
    warm = simulate(2000, 50, 6, 3, seed=1)  # first pandas/torch calls, CUDA context (not timed)
    wann = Annotations.from_long(pd.DataFrame({k: warm[k] for k in ("item", "worker", "label")}))
    majority_vote(wann)
    dawid_skene(wann, device=str(device), n_iter=3)
    _sync(device)
    t_all = time.perf_counter()
    for k in args.netease_classes:
        for frac in sorted(args.netease_fractions):
            n = int(round(NETEASE["n_items"] * frac))
            try:
                rec = netease_row(n, k, device, seed=args.seed)
            except Exception as exc:  # keep what finished; record the failure
                log(f"N={n:,} K={k}: FAILED: {type(exc).__name__}: {exc}")
                rec = {"n_items": n, "n_classes": k, "error": f"{type(exc).__name__}: {exc}"}
            out["results"].append(rec)
            out["wall_seconds"] = time.perf_counter() - t_all
            write_json(out_path, out)
    full = [r for r in out["results"] if "error" not in r and r["n_items"] == NETEASE["n_items"]]
    out["summary"] = {f"K={r['n_classes']}": {key: r[key] for key in ("data_layer_s", "mv_s", "ds_s", "ds_iters", "total_s", "data_layer_cpu_s", "mv_cpu_s", "ds_cpu_s", "process_peak_rss_mb", "mv_accuracy", "ds_accuracy", "loadavg_after_ds")} for r in full}
    out["loadavg_end"] = _load()
    out["wall_seconds"] = time.perf_counter() - t_all
    write_json(out_path, out)
    return Path(out_path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="JSON to write (default benchmarks/results/scale.json, or scale_netease_<device>.json with --preset netease)")
    ap.add_argument("--preset", choices=["sizes", "netease"], default="sizes", help="sizes: the size sweep (default); netease: the NetEaseCrowd-shaped crowd, K=3 and K=10 (see above)")
    ap.add_argument("--netease-classes", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--netease-fractions", type=float, nargs="+", default=[0.5, 1.0], help="sizes as fractions of NetEaseCrowd's 1.0 M items (default 0.5 1.0: the half size shows linear growth)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when available); DS also always runs on the CPU")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help=f"numbers of items (default {DEFAULT_SIZES})")
    ap.add_argument("--workers", type=int, default=50_000)
    ap.add_argument("--labels-per-item", type=int, default=5)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--ds-iters", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-ds-cpu", action="store_true", help="skip Dawid-Skene on the CPU")
    ap.add_argument("--epochs-on-cpu", action="store_true", help="also time the crowd-model epochs when the device is the CPU")
    ap.add_argument("--no-tracemalloc", action="store_true", help="skip the untimed tracemalloc passes of the data layer and majority vote")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="toy sizes (smoke check)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.preset == "netease" and args.quick:
        args.netease_fractions = [0.002, 0.004]
    if args.sizes is None:
        args.sizes = [2_000, 4_000] if args.quick else DEFAULT_SIZES
        if args.quick:
            args.workers = min(args.workers, 500)
            args.ds_iters = min(args.ds_iters, 5)
            args.batch_size = min(args.batch_size, 512)
    args.sizes = sorted(args.sizes)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.preset == "netease":
        path = main_netease(args, device)
        print(path, flush=True)
        return json.loads(Path(path).read_text())
    if args.out is None:
        args.out = ROOT / "benchmarks" / "results" / "scale.json"
    dev_name = device_name(device)
    out: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/scale.py", *(sys.argv[1:] if argv is None else argv)]),
        "versions": versions(),
        "device": dev_name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "argv"},
        "results": [],
        "notes": [
            f"Simulated crowd: each item labelled by {args.labels_per_item} distinct random workers out of {args.workers:,}; worker noise rates spread evenly over [0.1, 0.5] (symmetric noise, K={args.classes}).",
            "data_layer_s = Annotations.from_long(DataFrame(item, worker, label)) (default duplicates='error', so it includes the duplicate check) + .padded(); the DataFrame itself is input, not timed.",
            f"Dawid-Skene runs exactly ds_iters={args.ds_iters} EM iterations (criterion='loglik', tol=-inf); float64 on the CPU, float32 on the GPU (the library's defaults). Its cost per iteration is O(A*K) plus O(M*K*K) for the confusion matrices (normalisation, log, transpose of {args.workers:,} x {args.classes} x {args.classes} cells), a fixed cost at every size, so its seconds per million annotations fall with size; the data layer and majority vote are O(A) (factorize sorts, so from_long is O(A log A)).",
            "peak_mem_mb_* = peak resident set size above the level before the step (gc.collect + malloc_trim first; sampled every 2 ms from /proc/self/statm; memory the process already holds and reuses does not show). traced_peak_mb_* = tracemalloc peak of a second, untimed pass (numpy arrays and Python objects; not pandas' C hash tables, not torch). gpu_peak_mb* = torch.cuda.max_memory_allocated above the level before the step.",
            "Epochs (CUDA, largest size only): MLP(32 -> 64 -> K) backbone on random N(0,1) 32-d features, crowd_loss on the padded annotation rows, AdamW lr 1e-3, bf16 autocast, 3 warm-up steps excluded; epoch_*_s is the epoch wall time with torch.cuda.synchronize around it. Max-MIG's init_from_annotations (all N items) is timed separately (epoch_maxmig_detail.init_s).",
            "ds_gpu_s includes copying the annotations to the GPU and the posteriors back (the function takes and returns numpy); a tiny warm-up run before the timed one absorbs CUDA start-up.",
        ],
    }
    log(f"device {dev_name}; torch {torch.__version__}; {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; sizes {args.sizes}")
    # warm-up: first pandas/torch calls, CUDA context (not timed)
    warm = simulate(200, min(args.workers, 50), min(args.labels_per_item, 5), args.classes, seed=1)
    wann = Annotations.from_long(pd.DataFrame({k: warm[k] for k in ("item", "worker", "label")}))
    wann.padded()
    majority_vote(wann)
    run_ds(wann, 2, "cpu")
    if device.type == "cuda":
        run_ds(wann, 2, str(device))
        torch.cuda.synchronize(device)
    t_all = time.perf_counter()
    for n in args.sizes:
        do_epochs = n == args.sizes[-1] and (device.type == "cuda" or args.epochs_on_cpu)
        try:
            rec = run_size(n, args, device, do_epochs)
        except Exception as exc:  # keep what finished; record the failure
            log(f"N={n:,}: FAILED: {type(exc).__name__}: {exc}")
            rec = {"n_items": n, "error": f"{type(exc).__name__}: {exc}"}
            out["results"].append(rec)
            write_json(args.out, out)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        out["results"].append(rec)
        ok = [r for r in out["results"] if "error" not in r]
        out["linearity"] = linearity(ok)
        out["wall_seconds"] = time.perf_counter() - t_all
        write_json(args.out, out)
        log(f"N={n:,}: data+MV+DS(cpu) {rec['data_mv_ds_cpu_s']:.2f}s; written {args.out}")
        gc.collect()
    out["wall_seconds"] = time.perf_counter() - t_all
    write_json(args.out, out)
    log(f"done in {out['wall_seconds']:.1f}s -> {args.out}")
    return out


if __name__ == "__main__":
    main()
