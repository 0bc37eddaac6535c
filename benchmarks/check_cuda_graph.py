"""Check ``TrainConfig.cuda_graph`` on a protocol suite: the same runs eagerly and with CUDA
graphs of the backbone's training passes, number for number and step time for step time.

    PYTHONPATH=src python benchmarks/check_cuda_graph.py --root ./.data --out check_cuda_graph.json

    PYTHONPATH=src python benchmarks/check_cuda_graph.py --device cpu --backbone mlp --batch-size 32 \\
        --limit-train 96 --limit-eval 64 --out /tmp/check_cuda_graph.json   # the CPU smoke run of the test

For each of ``--methods`` (default annot-mix, maxmig, mv) it runs the suite's run
configuration (``benchmarks/protocol.py``: :data:`protocol.SUITES` and
:func:`protocol.run_config`; default ``protocol-cifar10n-worst``: ResNet-18 from scratch,
batch 128, AdamW, bf16 autocast and channels-last on CUDA) through
:func:`kdcrowd.methods.run_on_dataset` for ``--epochs`` (2) epochs on the first
``--limit-train`` (7,680: 60 steps an epoch) training items, from the same seed:

* ``eager``: ``cuda_graph=False``;
* ``graph``: ``cuda_graph=True`` (CUDA only; on another device it is not run and the JSON
  says why);
* ``eager_repeat``: ``cuda_graph=False`` again: the run-to-run floor of the device's
  kernels (atomics), against which ``graph`` is judged when ``eager`` is not reproducible
  bit for bit itself.

With ``--deterministic`` (on by default on CUDA; ``--no-deterministic`` leaves it out) each
method then runs ``eager`` and ``graph`` again with deterministic kernels
(``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN deterministic, no
benchmarking): the comparison that can show bit-identity when the default kernels cannot.

Per run: the per-epoch losses and validation accuracies, the test accuracy, the final state's
digest, ``cuda_graphs`` (:attr:`kdcrowd.training.FitResult.cuda_graphs`: graphs captured,
replays, passes that ran the module), the training seconds of :class:`FitResult`'s
``timings`` and per epoch (from the end of the previous validation pass, the device
synchronised, to the start of the next; the first epoch is the rest of the total) and the
step time: the intervals between consecutive optimiser steps' ends on the device's clock
(CUDA events recorded by torch's global optimiser step hook; the host's clock on the CPU)
within each epoch; ``step_ms.median`` is over the epochs after the first (the first holds
the capture and cuDNN's first calls). Per method: ``graph_vs_eager`` and
``eager_repeat_vs_eager`` (``bit_identical``: same losses, validation accuracies and final
state bit for bit; ``max_abs_diff`` of each) and ``speedup`` (eager / graph: median step
time, and the training seconds of the epochs after the first). Written after every run.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import protocol  # noqa: E402
from profile_protocol import add_suite_arguments, loop_hooks, suite_run, sync  # noqa: E402
from kdcrowd import training  # noqa: E402
from kdcrowd.checkpoint import digest  # noqa: E402
from kdcrowd.data.datasets import CrowdDataset  # noqa: E402
from kdcrowd.io import write_json  # noqa: E402
from kdcrowd.methods import run_on_dataset  # noqa: E402

METHODS = ("annot-mix", "maxmig", "mv")
NO_CUDA = "cuda_graph needs CUDA: not run on {device} (the option is a no-op there)"


class StepClock:
    """The optimiser steps and validation passes of the :func:`kdcrowd.training.fit` calls
    inside :meth:`watching`: a mark at each step's end (a CUDA event on CUDA, the host clock
    elsewhere) and the host clock around each validation pass, the device synchronised."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.marks: list[Any] = []
        self.val_entries: list[float] = []
        self.val_exits: list[float] = []

    @contextlib.contextmanager
    def watching(self) -> Iterator[StepClock]:
        with loop_hooks(self.device, self._on_step, self._on_validation):
            yield self

    def _on_step(self, opt: Any, args: Any, kwargs: Any) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def _on_validation(self, start: float, end: float) -> None:
        self.val_entries.append(start)
        self.val_exits.append(end)

    def step_ms(self, steps_per_epoch: int) -> list[list[float]]:
        """Per epoch, the milliseconds between consecutive step ends."""
        sync(self.device)
        out: list[list[float]] = []
        for s in range(0, len(self.marks), steps_per_epoch):
            ms = self.marks[s : s + steps_per_epoch]
            if self.cuda:
                out.append([a.elapsed_time(b) for a, b in zip(ms, ms[1:])])
            else:
                out.append([(b - a) * 1e3 for a, b in zip(ms, ms[1:])])
        return out

    def epoch_seconds(self, total: float) -> list[float]:
        """Training seconds per epoch: after the first, from the end of a validation pass to
        the start of the next; the first, the rest of ``total`` (fit's own count)."""
        later = [b - a for a, b in zip(self.val_exits, self.val_entries[1:])]
        return [total - sum(later), *later]


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def one_run(ds: CrowdDataset, suite: dict[str, Any], train_hp: dict[str, Any], method: str, seed: int, device: torch.device, cuda_graph: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One training of ``method``: its record and its final state (on the CPU)."""
    cfg = protocol.run_config(suite, {**train_hp, "cuda_graph": cuda_graph}, seed, method, {}, str(device))
    clock = StepClock(device)
    t0 = time.perf_counter()
    with clock.watching():
        metrics, out = run_on_dataset(ds, cfg)
    wall = time.perf_counter() - t0
    spe = len(training._batches(len(ds.x_train), train_hp["batch_size"]))
    per_epoch = clock.step_ms(spe)
    steady = [v for e in per_epoch[1:] for v in e] or [v for e in per_epoch for v in e]
    fit = out.fit
    state = {k: v.detach().cpu() for k, v in fit.final_state.items()}
    record = {
        "cuda_graph": cuda_graph,
        "history": [{k: h.get(k) for k in ("epoch", "loss", "val_accuracy")} for h in fit.history],
        "test_accuracy": metrics.get("test_accuracy"),
        "final_state_digest": digest(*(state[k].float().numpy() if state[k].dtype == torch.bfloat16 else state[k].numpy() for k in sorted(state))),
        "cuda_graphs": fit.cuda_graphs,
        "train_seconds": fit.timings.get("training"),
        "epoch_train_seconds": clock.epoch_seconds(float(fit.timings.get("training", 0.0))),
        "steps_per_epoch": spe,
        "step_ms": {"median": _median(steady), "per_epoch_median": [_median(e) for e in per_epoch], "n": len(steady)},
        "wall_seconds": wall,
    }
    return record, state


def compare(a: tuple[dict[str, Any], dict[str, torch.Tensor]], b: tuple[dict[str, Any], dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Whether two runs are the same bit for bit (per-epoch losses, validation accuracies,
    final state) and their largest absolute differences."""
    (ra, sa), (rb, sb) = a, b
    ha, hb = ra["history"], rb["history"]
    diff = lambda key: max((abs(x[key] - y[key]) for x, y in zip(ha, hb) if x[key] is not None and y[key] is not None), default=0.0)  # noqa: E731
    state_diff = 0.0
    same_state = sa.keys() == sb.keys()
    for k in sa.keys() & sb.keys():
        x, y = sa[k], sb[k]
        if x.shape != y.shape:
            same_state, state_diff = False, float("inf")
            continue
        same_state = same_state and torch.equal(x, y)
        if x.numel():
            state_diff = max(state_diff, float((x.double() - y.double()).abs().max()))
    same_history = [(h["loss"], h["val_accuracy"]) for h in ha] == [(h["loss"], h["val_accuracy"]) for h in hb]
    return {
        "bit_identical": same_history and same_state,
        "history_identical": same_history,
        "state_identical": same_state,
        "max_abs_diff": {"loss": diff("loss"), "val_accuracy": diff("val_accuracy"), "state": state_diff},
    }


def speedup(eager: dict[str, Any], graph: dict[str, Any]) -> dict[str, Any]:
    """Eager over graphed: the median step time, and the training seconds after the first epoch."""
    ratio = lambda a, b: a / b if a is not None and b else None  # noqa: E731
    return {
        "step_median": ratio(eager["step_ms"]["median"], graph["step_ms"]["median"]),
        "later_epochs_train_seconds": ratio(sum(eager["epoch_train_seconds"][1:]) or None, sum(graph["epoch_train_seconds"][1:]) or None),
    }


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[None]:
    """Deterministic algorithms (warnings where there are none) and cuDNN without benchmarking, inside."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[2], prev[3]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                    help="also compare eager and graph runs with deterministic kernels (default: on CUDA)")
    add_suite_arguments(ap, epochs=2, limit_train=7680, limit_train_help="keep the first N training items (0: all)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    suite, train_hp, device, ds, head = suite_run(args, "check_cuda_graph.py", argv)
    cuda = device.type == "cuda"
    deterministic = cuda if args.deterministic is None else args.deterministic
    out: dict[str, Any] = {
        **head, "items": {"train": len(ds.x_train), "val": len(ds.x_val), "test": len(ds.x_test)},
        "graphs": "run" if cuda else NO_CUDA.format(device=device.type), "methods": {},
    }

    def save() -> None:
        out["wall_seconds"] = time.perf_counter() - t0
        write_json(args.out, out)

    for method in args.methods:
        rec: dict[str, Any] = {}
        out["methods"][method] = rec
        eager = one_run(ds, suite, train_hp, method, args.seed, device, False)
        rec["eager"] = eager[0]
        graph = one_run(ds, suite, train_hp, method, args.seed, device, True) if cuda else None
        rec["graph"] = graph[0] if graph else {"skipped": NO_CUDA.format(device=device.type)}
        repeat = one_run(ds, suite, train_hp, method, args.seed, device, False)
        rec["eager_repeat"] = repeat[0]
        rec["eager_repeat_vs_eager"] = compare(eager, repeat)
        if graph:
            rec["graph_vs_eager"] = compare(eager, graph)
            rec["speedup"] = speedup(eager[0], graph[0])
        save()
        line = f"eager repeat identical {rec['eager_repeat_vs_eager']['bit_identical']}"
        if graph:
            g = rec["graph_vs_eager"]
            line = f"graph identical {g['bit_identical']} (max |Δ| state {g['max_abs_diff']['state']:.3g}), {line}; step ms eager {eager[0]['step_ms']['median']:.2f} graph {graph[0]['step_ms']['median']:.2f} (×{rec['speedup']['step_median']:.2f})"
        print(f"[{time.perf_counter() - t0:6.1f}s] {method:<10} {line}", flush=True)
    if deterministic:
        with deterministic_kernels():
            for method in args.methods:
                rec = out["methods"][method]
                eager = one_run(ds, suite, train_hp, method, args.seed, device, False)
                graph = one_run(ds, suite, train_hp, method, args.seed, device, True) if cuda else None
                det: dict[str, Any] = {"eager": eager[0], "graph": graph[0] if graph else {"skipped": NO_CUDA.format(device=device.type)}}
                if graph:
                    det["graph_vs_eager"] = compare(eager, graph)
                rec["deterministic"] = det
                save()
                print(f"[{time.perf_counter() - t0:6.1f}s] {method:<10} deterministic kernels: graph identical {det.get('graph_vs_eager', {}).get('bit_identical')}", flush=True)
    out["summary"] = {
        m: {
            "graph_bit_identical": r.get("graph_vs_eager", {}).get("bit_identical"),
            "eager_repeat_bit_identical": r["eager_repeat_vs_eager"]["bit_identical"],
            "deterministic_graph_bit_identical": r.get("deterministic", {}).get("graph_vs_eager", {}).get("bit_identical"),
            "max_abs_diff_state": r.get("graph_vs_eager", {}).get("max_abs_diff", {}).get("state"),
            "step_ms_eager": r["eager"]["step_ms"]["median"],
            "step_ms_graph": r["graph"].get("step_ms", {}).get("median"),
            "speedup": r.get("speedup", {}).get("step_median"),
        }
        for m, r in out["methods"].items()
    }
    save()
    return out


if __name__ == "__main__":
    main()
