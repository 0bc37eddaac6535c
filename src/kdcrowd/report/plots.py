"""Figures from run directories (each holds the ``metrics.json`` of ``kdcrowd run``).

* :func:`plot_memorization` — memorization of the workers' wrong labels against epochs,
  mean ± 1 std over workers, one curve per run (and per KD-Crowd stage);
* :func:`plot_workers` — true against estimated worker matrices, a grid of heat maps;
* :func:`plot_expertise_gap` — per-worker expertise error of two runs (the E_m-gap figure).

Each writes PNG and SVG next to the given output stem.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_file

__all__ = ["plot_memorization", "plot_workers", "plot_expertise_gap", "load_run", "memorization_curves", "stage_histories", "subplots"]


def subplots(nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Any, Any]:
    """``(figure, axes)`` like ``pyplot.subplots``, on a bare ``matplotlib.figure.Figure``:
    no pyplot, so no backend is chosen for the caller's process and nothing is kept in
    pyplot's figure list (``savefig`` picks the PNG/SVG writer itself)."""
    from matplotlib.figure import Figure

    figsize = kw.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def load_run(run_dir: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The ``metrics.json`` of a run directory (or the file itself, or an already loaded dict)."""
    if isinstance(run_dir, dict):
        return run_dir
    p = Path(run_dir)
    p = p / "metrics.json" if p.is_dir() else p
    if not p.exists():
        raise FileNotFoundError(f"no metrics.json in {run_dir}; pass directories written by `kdcrowd run --out DIR`")
    try:
        return json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # (json's error is a ValueError)
        raise ValueError(f"{p} is not a metrics.json written by kdcrowd ({type(e).__name__}: {e})") from None


def stage_histories(metrics: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]], int | None]]:
    """``(stage, history, best epoch)`` of each trained stage of a run: KD-Crowd's
    ``teacher``, ``student`` and ``stage2`` (the top level then repeats the final stage; a stage
    without epochs of its own, such as the ``ensemble`` of the student and stage 2, has none
    and is left out), or the one history of a single-stage method, named after the method."""
    stages = metrics.get("stages") or {}
    if stages:
        return [(name, rec.get("history") or [], rec.get("best_epoch")) for name, rec in stages.items() if rec.get("history")]
    return [(str(metrics.get("method", "run")), metrics.get("history") or [], metrics.get("best_epoch"))]


def memorization_curves(metrics: dict[str, Any], label: str | None = None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(label, epochs, mean, std) of every history in a run that records memorization;
    stages are labelled ``"<label>: <stage>"``."""
    base = label or metrics.get("method", "run")
    staged = bool(metrics.get("stages"))
    out = []
    for stage, hist, _ in stage_histories(metrics):
        rows = [h for h in hist if h.get("memorization_mean") is not None]
        if rows:
            ep = np.array([h["epoch"] for h in rows], dtype=float)
            mu = np.array([h["memorization_mean"] for h in rows], dtype=float)
            sd = np.array([h["memorization_std"] for h in rows], dtype=float)
            out.append((f"{base}: {stage}" if staged else base, ep, mu, sd))
    return out


def _save(fig: Any, out: str | Path) -> list[Path]:
    """Write ``out``.png and ``out``.svg (no timestamp in the SVG) and close the figure."""
    stem = Path(out)
    stem = stem.with_suffix("") if stem.suffix in (".png", ".svg") else stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    # the extension is added, not put in place of a suffix: memorization_lr0.01 stays itself
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "kdcrowd"}):  # stable element ids: a redrawn figure is the same file
        for p in paths:  # whole or not at all: an interrupt keeps the earlier file (io.atomic_file)
            with atomic_file(p, "wb") as fh:
                fig.savefig(fh, format=p.suffix[1:], dpi=150, bbox_inches="tight", metadata={"Date": None} if p.suffix == ".svg" else None)
    return paths


def _literal(text: str) -> str:
    """``text`` for matplotlib as written: a ``$`` (in a worker id, a folder name) is a
    dollar, not the start of mathtext."""
    return text.replace("$", r"\$")


def _run_name(run_dir: str | Path) -> str:
    """A run as the user named it: its folder (the folder of a metrics.json given as a file)."""
    p = Path(run_dir)
    return str(p.parent if p.name == "metrics.json" and not p.is_dir() else p)


def plot_memorization(run_dirs: Sequence[str | Path | dict[str, Any]], out: str | Path, labels: Sequence[str] | None = None, title: str | None = None, ax: Any = None) -> list[Path]:
    """Memorization vs epoch with ±1 std bands for several runs on one axes (the seed's figure)."""
    own = ax is None
    if own:
        fig, ax = subplots(figsize=(6, 4))
    runs = [load_run(d) for d in run_dirs]
    if not labels:  # runs of one method are told apart by their folders' names
        methods = [m.get("method", "run") for m in runs]
        labels = [_literal(f"{_run_name(d)} ({meth})") if methods.count(meth) > 1 and not isinstance(d, dict) else meth for d, meth in zip(run_dirs, methods)]
    handles, names = [], []
    for i, m in enumerate(runs):
        for name, ep, mu, sd in memorization_curves(m, labels[i]):
            (line,) = ax.plot(ep, mu)
            ax.fill_between(ep, np.clip(mu - sd, 0, 1), np.clip(mu + sd, 0, 1), color=line.get_color(), alpha=0.2)
            handles.append(line)
            names.append(name)
    if not handles:
        raise ValueError("none of the runs records memorization (it needs ground truth for the training items)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of wrong annotations memorized")
    ax.set_ylim(0, None)
    ax.legend(handles, names, fontsize=8)  # named explicitly: a label starting with "_" (a folder _a) is not left out
    if title:
        ax.set_title(title)
    return _save(ax.figure, out) if own else []


def plot_workers(run_dir: str | Path, out: str | Path, n_workers: int = 8) -> list[Path]:
    """True (top row, when the run knew them) and estimated matrices of the workers with the most labels."""
    p, fitted = Path(run_dir) / "transitions.npz", Path(run_dir) / "transition_matrices.npz"
    if p.exists():  # `kdcrowd run`'s
        z = np.load(p)
        est = z["estimated"]
        # The true matrices are saved only when the training labels are known.
        rows = (("true", z["true"]), ("estimated", est)) if "true" in z else (("estimated", est),)
        order = np.argsort(-z["labels_per_worker"])[:n_workers] if "labels_per_worker" in z else np.arange(min(n_workers, len(est)))
        names = z["worker_ids"] if "worker_ids" in z else np.arange(len(est))
    elif fitted.exists():  # `kdcrowd fit`'s (matrices, workers, classes), the workers by their labels in workers.csv
        import pandas as pd

        z = np.load(fitted, allow_pickle=False)
        est, ids = z["matrices"], z["workers"].astype(str)
        # a method without worker matrices: the workers' labels counted against the final labels
        rows = (("estimated" if "estimated" not in z or bool(z["estimated"]) else "vs final labels", est),)
        table = Path(run_dir) / "workers.csv"
        counts = None
        if table.exists():  # a worker named NA is a worker, as the readers keep it
            counts = pd.read_csv(table, dtype={"worker": str}, keep_default_na=False).set_index("worker")["n_labels"].reindex(ids).to_numpy()
        order = np.argsort(-np.nan_to_num(counts, nan=0.0), kind="stable")[:n_workers] if counts is not None else np.arange(min(n_workers, len(est)))
        names = ids
    else:
        raise FileNotFoundError(f"no transitions.npz (kdcrowd run) or transition_matrices.npz (kdcrowd fit) in {run_dir}: the run's method estimates no worker matrices, or it was written by an older version")
    fig, axes = subplots(len(rows), len(order), figsize=(1.8 * len(order), 1.9 * len(rows)), squeeze=False)
    for j, m in enumerate(order):
        for r, (name, mats) in enumerate(rows):
            mat = mats[m]
            a = axes[r, j]
            a.imshow(mat, vmin=0, vmax=1, cmap="viridis")
            a.set_xticks([])
            a.set_yticks([])
            if j == 0:
                a.set_ylabel(name)
            if r == 0:
                a.set_title("worker " + _literal(str(names[m])), fontsize=8)
    fig.suptitle(load_run(run_dir).get("method", ""))
    return _save(fig, out)


def plot_expertise_gap(run_a: str | Path, run_b: str | Path, out: str | Path, labels: tuple[str, str] | None = None) -> list[Path]:
    """Per-worker relative expertise error E_m of two runs, workers sorted by the first run's error."""
    ea = np.array(load_run(run_a)["expertise_error"]["relative_per_worker"], dtype=float)
    eb = np.array(load_run(run_b)["expertise_error"]["relative_per_worker"], dtype=float)
    la, lb = labels or ("A", "B")
    order = np.argsort(np.nan_to_num(ea, nan=-1.0))
    fig, ax = subplots(figsize=(7, 3.5))
    ax.plot(ea[order], ".", label=f"{la} (mean {np.nanmean(ea):.3f})")
    ax.plot(eb[order], ".", label=f"{lb} (mean {np.nanmean(eb):.3f})")
    ax.set_xlabel("worker (sorted by first run's error)")
    ax.set_ylabel("E_m")
    ax.legend()
    return _save(fig, out)
