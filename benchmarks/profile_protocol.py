"""Profile a few epochs of protocol-suite methods: where a training step's time goes, what
the per-epoch evaluation costs, and which host-device synchronisations a step makes.

    PYTHONPATH=src python benchmarks/profile_protocol.py --suite protocol-cifar10n-worst \\
        --method annot-mix maxmig 'kdcrowd(annot-mix)' --out profile.json

    PYTHONPATH=src python benchmarks/profile_protocol.py --device cpu --method annot-mix \\
        --limit-train 256 --limit-eval 128 --backbone mlp --out /tmp/profile.json   # smoke run

Every method runs as ``benchmarks/protocol.py`` runs it: the suite's data
(:func:`protocol.load_suite_data`), its run configuration (:func:`protocol.run_config`:
backbone, batch size, optimiser and schedule of the suite, no memorization tracking) and
:func:`kdcrowd.methods.run_on_dataset`, for ``--epochs`` epochs (default 3) instead of the
suite's. ``kdcrowd(T)`` (or ``--method kdcrowd --kd-teacher T``) is KD-Crowd over the
teacher T trained by this invocation's run of T, as the suite reuses a seed's crowd-model
run (T runs first when it is not asked for); its stages are the student and stage 2.
``--limit-train`` / ``--limit-eval`` keep the first items of the training (with their
annotations) and of the validation and test splits; ``--backbone`` / ``--batch-size``
override the suite's (smoke runs on the CPU).

Each training stage (one :func:`kdcrowd.training.fit`) is watched from outside the loop,
which stays as it is: optimiser steps through torch's global step hook, and the per-epoch
validation pass through a timed wrapper of fit's ``validation_accuracy``. Epoch by epoch:

* the first ``--warmup-epochs`` (1) warm up (cuDNN autotuning, the caching allocators)
  and are not counted;
* the next ones, up to the last, are timed: ``step_ms`` are the intervals between
  consecutive step ends within an epoch (in the steady state of an asynchronous loop,
  the time a step really takes) and ``train_ms`` / ``steps`` the epoch's mean (from the
  end of the previous validation to its last step, the device synchronised);
  ``eval_ms`` is the validation pass (synchronised), the only per-epoch evaluation of a
  protocol run;
* the last epoch runs under ``torch.profiler`` (CPU and CUDA activities): the top
  ``--top`` CUDA kernels and CPU operators by self time, the kernel time per step and
  the GPU busy fraction (``gpu_busy_fraction``: the union of the kernel intervals over
  the epoch's wall time; ``kernel_time_fraction``: the sum of the kernel times over it;
  ``gpu_busy_fraction_unprofiled``: the kernel time per step over the timed epochs'
  step time, the profiler's own overhead left out). On CUDA it also runs under
  ``torch.cuda.set_sync_debug_mode("warn")``, whose warnings are counted by the
  innermost source line of this repository that made them (``syncs``). On the CPU, which
  has nothing to synchronise with, a stand-in (:class:`HostReads`) counts the calls that
  read a value or a data-dependent size back to the host, and would synchronise on CUDA;
  it cannot see ``.to(device)`` copies of tensors made on the host, which only the CUDA
  run counts. The window starts after the previous epoch's validation, so it also holds
  that epoch's two read-backs (its loss and validation accuracy).

The JSON holds, per run, its test accuracies and every stage's history (so that two runs
can be compared number for number) and ``profile``: per stage, the per-epoch timings and
the summaries above.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import linecache
import math
import re
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import protocol  # noqa: E402
from speed import subset_dataset  # noqa: E402
from kdcrowd import training  # noqa: E402
from kdcrowd.data.datasets import CrowdDataset  # noqa: E402
from kdcrowd.io import write_json  # noqa: E402
from kdcrowd.methods import CROWD_MODELS, device_name, method_options, run_on_dataset, versions  # noqa: E402

SYNC_WARNING = "synchronizing CUDA operation"
PROJECT_DIRS = ("src", "benchmarks", "examples", "tests")
#: Callers whose host reads are of torch's own host tensors (see :class:`HostReads`).
TORCH_HOST_BOOKKEEPING = ("torch/optim/", "torch/distributions/")
_OVERRIDES = "torch/overrides.py"
_KD_LABEL = re.compile(r"^kdcrowd\((?P<teacher>[^()]+)\)$")


# ----------------------------------------------------------------------------- data


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA; nothing elsewhere)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def loop_hooks(device: torch.device, on_step: Callable[..., None], on_validation: Callable[[float, float], None]) -> Iterator[None]:
    """For the duration: ``on_step(optimizer, args, kwargs)`` after every optimiser step
    (torch's global hook) and ``on_validation(start, end)`` after each of
    :func:`kdcrowd.training.fit`'s validation passes: the host clock before it (fit has
    synchronised the device: the epoch's steps are done) and after it, ``device`` synchronised."""
    handle = register_optimizer_step_post_hook(on_step)
    original = training.validation_accuracy

    def timed(module: Any, data: Any, config: Any) -> Any:
        start = time.perf_counter()
        out = original(module, data, config)
        sync(device)
        on_validation(start, time.perf_counter())
        return out

    training.validation_accuracy = timed
    try:
        yield
    finally:
        training.validation_accuracy = original
        handle.remove()


def add_suite_arguments(ap: argparse.ArgumentParser, epochs: int, epochs_help: str | None = None, limit_train: int | None = None, limit_train_help: str = "keep the first N training items") -> None:
    """The options of a shortened run of a protocol suite (this script's and check_cuda_graph.py's)."""
    ap.add_argument("--suite", default="protocol-cifar10n-worst", choices=sorted(protocol.SUITES))
    ap.add_argument("--epochs", type=int, default=epochs, help=epochs_help)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--root", default=None, help="data root (else $KDCROWD_DATA)")
    ap.add_argument("--limit-train", type=int, default=limit_train, help=limit_train_help)
    ap.add_argument("--limit-eval", type=int, default=None, help="keep the first N validation and test items")
    ap.add_argument("--backbone", default=None, help="override the suite's backbone (smoke runs)")
    ap.add_argument("--batch-size", type=int, default=None, help="override the suite's batch size (smoke runs)")
    ap.add_argument("--out", required=True, type=Path)


def suite_run(args: argparse.Namespace, script: str, argv: Sequence[str] | None) -> tuple[dict[str, Any], dict[str, Any], torch.device, CrowdDataset, dict[str, Any]]:
    """From :func:`add_suite_arguments`' options: the suite's settings and training settings
    (:func:`protocol.suite_settings`) with ``--epochs`` (and, for smoke runs, another backbone
    or batch size), the device, the suite's data (its first ``--limit-train`` training items,
    0 or none: all, and ``--limit-eval`` validation and test items) and the head of the JSON
    (suite, settings, command, versions, device, seed, epochs)."""
    suite, train_hp = protocol.suite_settings(args.suite, args.backbone, epochs=args.epochs, batch_size=args.batch_size or None)
    device = training.resolve_device(args.device)
    ds = subset_dataset(protocol.load_suite_data(suite, args.root, str(device), args.seed), args.limit_train or None, args.limit_eval)
    head = {"suite": args.suite, "settings": {**suite, "train": train_hp}, "command": " ".join(sys.argv if argv is None else [script, *argv]),
            "versions": versions(), "device": device_name(device), "seed": args.seed, "epochs": args.epochs}
    return suite, train_hp, device, ds, head


# ----------------------------------------------------------------------------- synchronisations


def _project_frame(stack: Sequence[traceback.FrameSummary]) -> str:
    """``path:line`` of the innermost frame in this repository (outside this script), else
    of the innermost frame."""
    here = Path(__file__).resolve()
    for fr in reversed(stack):
        p = Path(fr.filename).resolve()
        if p != here and p.is_relative_to(ROOT) and p.relative_to(ROOT).parts[0] in PROJECT_DIRS and "site-packages" not in p.parts:
            return f"{p.relative_to(ROOT)}:{fr.lineno}"
    fr = stack[-1]
    return f"{fr.filename}:{fr.lineno}"


def _bool_index(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


class HostReads(TorchFunctionMode):
    """The CPU stand-in of CUDA's synchronisation warnings: records, by source line, every
    call that reads a tensor's value or a data-dependent size back to the host
    (``item``, ``tolist``, ``bool``/``int``/``float`` of a tensor, ``nonzero``,
    ``unique``, ``masked_select``, boolean-mask indexing, ``repeat_interleave`` of tensor
    repeats without ``output_size``, ``cpu``/``numpy``) and every tensor made from host
    data on an explicit device (``torch.tensor(..., device=...)``: a host-to-device copy on
    CUDA). Copies of host tensors by ``.to(device)`` look like no-ops here and are not seen,
    and reads made by torch's optimisers and distributions are left out: they read their
    own host tensors (step counters, argument checks), which stay on the host on CUDA too."""

    READS: dict[Any, str] = {
        torch.Tensor.item: "item", torch.Tensor.tolist: "tolist", torch.Tensor.__bool__: "bool", torch.Tensor.__int__: "int",
        torch.Tensor.__float__: "float", torch.Tensor.nonzero: "nonzero", torch.nonzero: "nonzero", torch.argwhere: "argwhere",
        torch.Tensor.unique: "unique", torch.unique: "unique", torch.unique_consecutive: "unique", torch.masked_select: "masked_select",
        torch.Tensor.masked_select: "masked_select", torch.Tensor.cpu: "cpu", torch.Tensor.numpy: "numpy",
    }

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if self._reads(func, args, kwargs):
            stack = traceback.extract_stack()[:-1]
            caller = next((fr.filename for fr in reversed(stack) if not fr.filename.endswith(_OVERRIDES)), "")
            if not any(part in Path(caller).as_posix() for part in TORCH_HOST_BOOKKEEPING):
                self.hits.append(_project_frame(stack))
        return func(*args, **kwargs)

    def _reads(self, func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
        try:
            if func in self.READS:
                return True
        except TypeError:  # an unhashable callable
            return False
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
            return len(args) > 1 and _bool_index(args[1])
        if func in (torch.repeat_interleave, torch.Tensor.repeat_interleave):
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
            return isinstance(repeats, torch.Tensor) and repeats.numel() > 1 and kwargs.get("output_size") is None
        if func in (torch.tensor, torch.as_tensor):
            return kwargs.get("device") is not None and not (args and isinstance(args[0], torch.Tensor))
        return False


class SyncCounter:
    """Counts synchronisations between :meth:`start` and :meth:`stop`: CUDA's
    ``set_sync_debug_mode("warn")`` warnings on a CUDA device (each attributed to the
    innermost source line of this repository on the stack), :class:`HostReads` elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.detector = "cuda-sync-debug-mode" if self.cuda else "cpu-stand-in (host reads; no .to(device) copies)"
        self.sites: Counter[str] = Counter()
        self._warnings: contextlib.AbstractContextManager[Any] | None = None
        self._mode: HostReads | None = None
        self._show_other: Callable[..., None] = warnings.showwarning

    def start(self) -> None:
        if self.cuda:
            self._warnings = warnings.catch_warnings()
            self._warnings.__enter__()
            warnings.simplefilter("always")
            self._show_other = warnings.showwarning
            warnings.showwarning = self._show
            torch.cuda.set_sync_debug_mode("warn")
        else:
            self._mode = HostReads()
            self._mode.__enter__()

    def _show(self, message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if SYNC_WARNING in str(message):
            self.sites[_project_frame(traceback.extract_stack()[:-1])] += 1
        else:  # anything else is shown as usual
            self._show_other(message, category, filename, lineno, file, line)

    def stop(self) -> None:
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
            if self._warnings is not None:
                self._warnings.__exit__(None, None, None)
                self._warnings = None
        elif self._mode is not None:
            self._mode.__exit__(None, None, None)
            self.sites.update(self._mode.hits)
            self._mode = None

    def summary(self, steps: int) -> dict[str, Any]:
        rows = []
        for where, n in self.sites.most_common():
            path, _, line = where.rpartition(":")
            code = linecache.getline(str(ROOT / path) if not Path(path).is_absolute() else path, int(line)).strip() if line.isdigit() else ""
            rows.append({"where": where, "code": code, "count": n, "per_step": n / steps if steps else None})
        total = sum(self.sites.values())
        return {"detector": self.detector, "steps": steps, "total": total, "per_step": total / steps if steps else None, "by_line": rows}


# ----------------------------------------------------------------------------- the probe


def _attr(e: Any, *names: str) -> float:
    for n in names:
        v = getattr(e, n, None)
        if v:
            return float(v)
    return 0.0


def _union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def profile_summary(prof: Any, steps: int, wall_s: float, top: int) -> dict[str, Any]:
    """Top CUDA kernels and CPU operators by self time, kernel time and GPU busy fraction
    of a finished ``torch.profiler.profile`` over ``steps`` steps and ``wall_s`` seconds."""
    cuda_t = torch.autograd.DeviceType.CUDA
    avgs = prof.key_averages()
    dev_keys = ("self_device_time_total", "self_cuda_time_total")
    kernels = [e for e in avgs if getattr(e, "device_type", None) == cuda_t]
    if not kernels:  # a profiler build that does not tag kernels: anything with self device time
        kernels = [e for e in avgs if _attr(e, *dev_keys) > 0]
    kernel_ids = {id(e) for e in kernels}
    kernels.sort(key=lambda e: _attr(e, *dev_keys), reverse=True)
    cpu_ops = sorted((e for e in avgs if id(e) not in kernel_ids), key=lambda e: _attr(e, "self_cpu_time_total"), reverse=True)
    row = lambda e, t: {"name": e.key, "calls": int(e.count), "self_ms": t / 1e3, "self_ms_per_step": t / 1e3 / max(1, steps)}  # noqa: E731
    kernel_us = sum(_attr(e, *dev_keys) for e in kernels)
    spans = [(ev.time_range.start, ev.time_range.end) for ev in prof.events() if getattr(ev, "device_type", None) == cuda_t]
    busy_us = _union_us(spans)
    return {
        "steps": steps,
        "wall_ms": wall_s * 1e3,
        "step_ms": wall_s * 1e3 / max(1, steps),
        "kernel_ms_per_step": kernel_us / 1e3 / max(1, steps) if kernels else None,
        "gpu_busy_fraction": busy_us / 1e6 / wall_s if spans and wall_s > 0 else None,
        "kernel_time_fraction": kernel_us / 1e6 / wall_s if kernels and wall_s > 0 else None,
        "top_cuda_kernels": [row(e, _attr(e, *dev_keys)) for e in kernels[:top]],
        "top_cpu_ops": [row(e, _attr(e, "self_cpu_time_total")) for e in cpu_ops[:top]],
    }


def _quantiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None}
    q = np.quantile(values, [0.1, 0.5, 0.9])
    return {"n": len(values), "mean": statistics.fmean(values), "median": float(q[1]), "p10": float(q[0]), "p90": float(q[2])}


@dataclasses.dataclass
class StageTrace:
    """What the probe saw of one ``fit``."""

    name: str
    steps_per_epoch: int
    epochs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    step_ms: list[float] = dataclasses.field(default_factory=list)
    profiled: dict[str, Any] | None = None
    syncs: dict[str, Any] | None = None
    steps: int = 0
    epoch_start: float | None = None
    last_step: float | None = None
    window_start: float | None = None

    def summary(self, warmup: int, eval_items: int) -> dict[str, Any]:
        timed = [e for e in self.epochs if e["kind"] == "timed"]
        steps = sum(e["steps"] for e in timed)
        evals = [e["eval_ms"] for e in self.epochs if e["kind"] != "warmup" and e.get("eval_ms") is not None]
        epoch_mean = sum(e["train_ms"] for e in timed) / steps if steps else None
        kernel_ms = (self.profiled or {}).get("kernel_ms_per_step")
        busy = kernel_ms / epoch_mean if kernel_ms is not None and epoch_mean else None
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_epochs": warmup,
            "epochs": self.epochs,
            "step_ms": {**_quantiles(self.step_ms), "epoch_mean": epoch_mean},
            "eval_ms": {**_quantiles(evals), "items": eval_items, "per_epoch": "the validation pass"},
            "profiled_epoch": None if self.profiled is None else {**self.profiled, "gpu_busy_fraction_unprofiled": busy},
            "syncs": self.syncs,
        }


class LoopProbe:
    """Watches every :func:`kdcrowd.training.fit` inside it (see the module docstring):
    a new optimiser starts a new stage, named from :meth:`expect`."""

    def __init__(self, device: torch.device, epochs: int, warmup: int, batch_size: int, n_train: int, top: int) -> None:
        self.device, self.epochs, self.warmup, self.top = device, epochs, warmup, top
        self.steps_per_epoch = len(training._batches(n_train, batch_size))
        self.stages: list[StageTrace] = []
        self._names: list[str] = []
        self._opt: Any = None
        self._prof: Any = None
        self._syncs: SyncCounter | None = None

    def expect(self, names: Sequence[str]) -> None:
        """The names of the next stages, in order."""
        self._names = list(names)

    def _kind(self, epoch: int) -> str:
        return "warmup" if epoch < self.warmup else "profiled" if epoch == self.epochs - 1 else "timed"

    @contextlib.contextmanager
    def watching(self) -> Iterator[LoopProbe]:
        try:
            with loop_hooks(self.device, self._on_step, self._on_validation):
                yield self
        finally:
            self._close_window()

    def _on_step(self, opt: Any, args: Any, kwargs: Any) -> None:
        now = time.perf_counter()
        if opt is not self._opt:
            self._opt = opt
            name = self._names.pop(0) if self._names else f"stage{len(self.stages)}"
            self.stages.append(StageTrace(name, self.steps_per_epoch))
        st = self.stages[-1]
        epoch, within = divmod(st.steps, self.steps_per_epoch)
        st.steps += 1
        if within == 0 and st.epoch_start is None:  # the first epoch: from its first step's end
            st.epoch_start = now
        elif within > 0 and self._kind(epoch) == "timed":
            st.step_ms.append((now - st.last_step) * 1e3)
        st.last_step = now
        if within == self.steps_per_epoch - 1:  # the epoch's last step: fit synchronises next anyway
            profiled = self._kind(epoch) == "profiled" and self._prof is not None
            if profiled:
                self._syncs.stop()  # before this synchronisation, which is the probe's own
            sync(self.device)
            end = time.perf_counter()
            st.epochs.append({"epoch": epoch + 1, "kind": self._kind(epoch), "steps": self.steps_per_epoch, "train_ms": (end - st.epoch_start) * 1e3})
            if profiled:
                self._close_window(end)

    def _close_window(self, end: float | None = None) -> None:
        if self._prof is None:
            return
        st = self.stages[-1]
        if self._syncs is not None:
            self._syncs.stop()
        sync(self.device)
        end = time.perf_counter() if end is None else end
        self._prof.stop()
        st.profiled = profile_summary(self._prof, self.steps_per_epoch, end - st.window_start, self.top)
        st.syncs = self._syncs.summary(self.steps_per_epoch) if self._syncs is not None else None
        self._prof, self._syncs = None, None

    def _on_validation(self, start: float, end: float) -> None:
        if self.stages:
            st = self.stages[-1]
            if st.epochs:
                st.epochs[-1]["eval_ms"] = (end - start) * 1e3
            if len(st.epochs) == self.epochs - 1:  # the next epoch is profiled
                self._open_window(st)
            st.epoch_start = time.perf_counter()

    def _open_window(self, st: StageTrace) -> None:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self._prof = profile(activities=acts)
        self._syncs = SyncCounter(self.device)
        self._prof.start()
        st.window_start = time.perf_counter()
        self._syncs.start()


# ----------------------------------------------------------------------------- driver


def parse_methods(names: Sequence[str], kd_teacher: str | None) -> list[tuple[str, str, str | None]]:
    """``(label, method, teacher)`` in run order: ``kdcrowd(T)`` (or ``kdcrowd`` with
    ``kd_teacher``) after a run of T, which is added first when it is not asked for."""
    runs: list[tuple[str, str, str | None]] = []
    for name in names:
        m = _KD_LABEL.match(name)
        teacher = m.group("teacher") if m else (kd_teacher if name == "kdcrowd" else None)
        if name == "kdcrowd" and teacher is None:
            raise SystemExit("--method kdcrowd needs a teacher: kdcrowd(TEACHER) or --kd-teacher TEACHER")
        if teacher is None:
            runs.append((name, name, None))
            continue
        if teacher not in CROWD_MODELS:
            raise SystemExit(f"KD-Crowd's teacher must be a crowd model; got {teacher!r}")
        if not any(r[1] == teacher for r in runs):
            runs.append((teacher, teacher, None))
        runs.append((f"kdcrowd({teacher})", "kdcrowd", teacher))
    return runs


def _run_record(label: str, metrics: dict[str, Any], probe_stages: list[StageTrace], warmup: int, eval_items: int) -> dict[str, Any]:
    keep = ("test_accuracy", "test_accuracy_val_selected", "best_epoch", "train_seconds", "seconds", "timings")
    stages = metrics.get("stages") or {metrics["method"]: metrics}
    return {
        "label": label,
        "method": metrics["method"],
        "final_stage": metrics.get("final_stage"),
        **{k: metrics.get(k) for k in keep},
        "stages": {name: {**{k: rec.get(k) for k in ("test_accuracy", "test_accuracy_val_selected", "best_epoch")},
                          "history": [{k: h.get(k) for k in ("epoch", "loss", "val_accuracy")} for h in rec.get("history") or []]}
                   for name, rec in stages.items()},
        "profile": {st.name: st.summary(warmup, eval_items) for st in probe_stages},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", nargs="+", default=["annot-mix"], help="methods, in order; kdcrowd(TEACHER) for KD-Crowd over a crowd model")
    ap.add_argument("--kd-teacher", default=None, help="the teacher of a plain 'kdcrowd' in --method")
    ap.add_argument("--warmup-epochs", type=int, default=1)
    ap.add_argument("--top", type=int, default=20, help="kernels and CPU operators listed")
    add_suite_arguments(ap, epochs=3, epochs_help="epochs per stage (the last one profiled)")
    args = ap.parse_args(argv)
    if args.epochs < args.warmup_epochs + 2:
        raise SystemExit(f"--epochs must leave a timed and a profiled epoch after the {args.warmup_epochs} warm-up epoch(s); got {args.epochs}")
    t0 = time.perf_counter()
    runs = parse_methods(args.method, args.kd_teacher)
    suite, train_hp, device, ds, head = suite_run(args, "profile_protocol.py", argv)
    probe = LoopProbe(device, args.epochs, args.warmup_epochs, train_hp["batch_size"], len(ds.x_train), args.top)
    out: dict[str, Any] = {**head, "warmup_epochs": args.warmup_epochs, "items": {"train": len(ds.x_train), "val": len(ds.x_val), "test": len(ds.x_test)}, "runs": []}
    teachers: dict[str, Any] = {}
    for label, method, teacher in runs:
        options = {"teacher": teacher} if teacher else {}
        pre = teachers.get(teacher) if teacher else None
        cfg = protocol.run_config(suite, train_hp, args.seed, method, options, args.device)
        probe.expect(method_options("kdcrowd", options, backbone=suite["backbone"]).stage_names(pre) if method == "kdcrowd" else [method])
        first = len(probe.stages)
        with probe.watching():
            metrics, output = run_on_dataset(ds, cfg, pretrained_teacher=pre)
        if method in CROWD_MODELS:
            teachers[method] = (output.module.model, output.fit)
        rec = _run_record(label, metrics, probe.stages[first:], args.warmup_epochs, len(ds.x_val))
        out["runs"].append(rec)
        out["wall_seconds"] = time.perf_counter() - t0
        write_json(args.out, out)
        steps = {name: p["step_ms"]["epoch_mean"] for name, p in rec["profile"].items()}
        syncs = {name: (p["syncs"] or {}).get("per_step") for name, p in rec["profile"].items()}
        print(f"[{time.perf_counter() - t0:6.1f}s] {label:<20} step ms {steps}  syncs/step {syncs}", flush=True)
    return out


if __name__ == "__main__":
    main()
