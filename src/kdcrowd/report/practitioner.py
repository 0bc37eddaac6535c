"""What ``kdcrowd fit`` writes next to a fitted :class:`~kdcrowd.estimator.CrowdClassifier`.

Call :func:`write_fit_outputs` once after ``clf.fit(X, ann)``; it writes into one folder

==================== ===================================================================
``labels.csv``       ``item,label,p_<class>...``: the method's label and distribution for
                     every item (original item ids and class values)
``workers.csv``      ``worker,true_class,given_class,probability``: each worker's confusion
                     matrix in long form
``worker_summary.csv`` ``worker,n_labels,estimated_accuracy,agreement``
``model.pt``         the trained module's state dict and what rebuilds the predictor
                     (:func:`load_predictor` reads it)
``metrics.json``     ``clf.metrics_``
``workers.png``      heat maps of the most active workers' matrices (and ``.svg``)
``report.md``        a readable summary of all of the above
==================== ===================================================================

The pieces are usable on their own: :func:`label_frame`, :func:`worker_matrices`,
:func:`worker_frames`, :func:`plot_worker_matrices`, :func:`save_model`,
:func:`load_predictor`, :func:`fit_report`.

Estimated accuracy of worker ``m`` is ``Σ_k prior_k · T_m[k, k]``: the probability that
the worker gives the true class, with the prior the mean predicted label distribution
over all items. Agreement is the fraction of the worker's labels equal to the final label.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .plots import _plt, _save

__all__ = [
    "fit_report",
    "label_frame",
    "load_predictor",
    "plot_worker_matrices",
    "save_model",
    "worker_frames",
    "worker_matrices",
    "write_fit_outputs",
]

MODEL_FORMAT = "kdcrowd.fit/1"


# ----------------------------------------------------------------------------- tables


def label_frame(item_ids: Sequence[Any], classes: Sequence[Any], proba: np.ndarray) -> pd.DataFrame:
    """``item,label,p_<class>...``: the argmax class and the distribution ``proba`` (N, K) per item."""
    classes = np.asarray(classes)
    proba = np.asarray(proba, dtype=np.float64)
    cols: dict[str, Any] = {"item": np.asarray(item_ids), "label": classes[proba.argmax(1)]}
    for j, c in enumerate(classes):
        cols[f"p_{c}"] = proba[:, j]
    return pd.DataFrame(cols)


def worker_matrices(transitions: np.ndarray | None, ann: Any, proba: np.ndarray) -> tuple[np.ndarray, str]:
    """Each worker's ``(M, K, K)`` row-stochastic confusion matrix and where it comes from.

    The method's own estimate when it has one (crowd models, KD-Crowd, Dawid–Skene).
    Otherwise (majority-vote training) the soft confusion of the worker's labels against
    the final label distribution: ``T_m[k, j] ∝ Σ_{items i labelled j by m} proba[i, k]``;
    rows without any mass (a class the worker never met) are uniform.
    """
    if transitions is not None:
        return np.asarray(transitions, dtype=np.float64), "estimated by the method"
    k = ann.n_classes
    counts = np.zeros((ann.n_workers, k, k))
    np.add.at(counts, (ann.worker, slice(None), ann.label), np.asarray(proba, dtype=np.float64)[ann.item])
    total = counts.sum(-1, keepdims=True)
    t = np.where(total > 0, counts / np.where(total > 0, total, 1.0), 1.0 / k)
    return t, "the workers' labels against the final label distribution (the method estimates no worker matrices)"


def worker_frames(t: np.ndarray, ann: Any, proba: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long matrices, per-worker summary) tables.

    Long: ``worker,true_class,given_class,probability`` (M·K·K rows). Summary:
    ``worker,n_labels,estimated_accuracy,agreement`` in worker order, where
    ``estimated_accuracy = Σ_k prior_k · T_m[k, k]`` with ``prior = proba.mean(0)`` and
    ``agreement`` is the fraction of the worker's labels equal to ``proba.argmax(1)`` of
    the item (NaN for a worker without labels).
    """
    m, k, _ = t.shape
    classes = np.asarray(ann.classes)
    workers = np.asarray(ann.worker_ids)
    long = pd.DataFrame(
        {
            "worker": np.repeat(workers, k * k),
            "true_class": np.tile(np.repeat(classes, k), m),
            "given_class": np.tile(classes, m * k),
            "probability": t.reshape(-1),
        }
    )
    proba = np.asarray(proba, dtype=np.float64)
    prior = proba.mean(0)
    est = np.einsum("k,mkk->m", prior, t)
    n = ann.labels_per_worker()
    agree_counts = np.bincount(ann.worker, weights=(ann.label == proba.argmax(1)[ann.item]).astype(float), minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        agree = np.where(n > 0, agree_counts / np.maximum(n, 1), np.nan)
    summary = pd.DataFrame({"worker": workers, "n_labels": n, "estimated_accuracy": est, "agreement": agree})
    return long, summary


# ----------------------------------------------------------------------------- figure


def plot_worker_matrices(t: np.ndarray, worker_ids: Sequence[Any], classes: Sequence[Any], order: Sequence[int], out: str | Path, scores: Sequence[float] | None = None, title: str | None = None) -> list[Path]:
    """Heat maps of the matrices ``t[order]`` in one row (true class down, given class across).

    Class names label the axes of the first map when there are at most 10 classes.
    ``scores`` (per worker, e.g. estimated accuracy) go into the titles. Writes PNG and
    SVG next to the stem ``out`` (see :func:`kdcrowd.report.plots._save`).
    """
    plt = _plt()
    order = list(order)
    classes = [str(c) for c in classes]
    fig, axes = plt.subplots(1, len(order), figsize=(1.9 * len(order) + 0.6, 2.6), squeeze=False)
    im = None
    for j, m in enumerate(order):
        a = axes[0, j]
        im = a.imshow(t[m], vmin=0, vmax=1, cmap="viridis")
        name = f"worker {worker_ids[m]}"
        a.set_title(name if scores is None else f"{name}\nacc {scores[m]:.2f}", fontsize=8)
        if j == 0 and len(classes) <= 10:
            a.set_yticks(range(len(classes)), classes, fontsize=7)
            a.set_xticks(range(len(classes)), classes, fontsize=7, rotation=90)
            a.set_ylabel("true class", fontsize=8)
            a.set_xlabel("given class", fontsize=8)
        else:
            a.set_xticks([])
            a.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, out)


# ----------------------------------------------------------------------------- model file


def _predictor_backbones(module: Any) -> list[Any]:
    """The backbone(s) whose averaged softmax is the fitted module's ``predict_proba``.

    Objectives wrap a crowd model (``.model``), a student (``.student``) or a backbone
    directly; co-teaching students average two backbones (``backbone``, ``backbone_b``).
    """
    from torch import nn

    inner = module
    for attr in ("model", "student"):
        if isinstance(getattr(inner, attr, None), nn.Module):
            inner = getattr(inner, attr)
            break
    nets = [inner.backbone]
    if isinstance(getattr(inner, "backbone_b", None), nn.Module):
        nets.append(inner.backbone_b)
    return nets


def _py(values: Any) -> list[Any]:
    return np.asarray(values).tolist()


def save_model(path: str | Path, clf: Any) -> None:
    """Write ``clf`` (fitted) to ``path`` with :func:`torch.save`.

    The file holds only tensors and plain Python values, so ``torch.load(path)`` reads it
    with its default ``weights_only=True``: ``state_dict`` (the whole trained module,
    worker parameters included), ``module_class``, ``predictor`` (``backbone`` name,
    ``input_shape``, ``state_dicts`` of the backbone(s) whose averaged softmax predicts,
    and the input normalisation ``mean``/``std``; images are scaled to [0, 1] first),
    ``classes``, ``worker_ids``, ``item_shape``, ``config`` (the estimator's parameters),
    ``transition_matrices`` and ``versions``.
    """
    import torch

    from ..models.backbones import default_backbone

    cpu = lambda sd: {k: v.detach().cpu() for k, v in sd.items()}
    prep = clf.preprocessor_
    input_shape = tuple(int(s) for s in prep.input_shape)
    backbone = clf.backbone if clf.backbone != "auto" else default_backbone(input_shape)
    trans = clf.transition_matrices_
    params = {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in clf.get_params().items()}
    payload = {
        "format": MODEL_FORMAT,
        "state_dict": cpu(clf.module_.state_dict()),
        "module_class": type(clf.module_).__name__,
        "predictor": {
            "backbone": backbone,
            "input_shape": input_shape,
            "state_dicts": [cpu(net.state_dict()) for net in _predictor_backbones(clf.module_)],
            "mean": prep.mean.detach().float().cpu(),
            "std": prep.std.detach().float().cpu(),
            "is_image": bool(prep.is_image),
        },
        "classes": _py(clf.classes_),
        "worker_ids": _py(clf.worker_ids_),
        "item_shape": tuple(int(s) for s in clf.item_shape_),
        "config": params,
        "transition_matrices": None if trans is None else torch.as_tensor(np.asarray(trans, dtype=np.float32)),
        "versions": {str(k): str(v) for k, v in clf.metrics_.get("versions", {}).items()},
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def load_predictor(path: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """Rebuild the classifier saved by :func:`save_model`.

    Returns ``predict_proba(X) -> (N, K)`` numpy probabilities (columns in the order of the
    file's ``classes``) for float features ``(N, D)`` or uint8 RGB images ``(N, H, W, 3)``
    of the training size (:func:`kdcrowd.data.items.read_image_folder` with
    ``size=item_shape[0]`` reads new ones).
    """
    import torch

    from ..models.backbones import build_backbone

    ck = torch.load(path, map_location=device)
    if not isinstance(ck, dict) or ck.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a model file written by `kdcrowd fit`")
    p = ck["predictor"]
    nets = []
    for sd in p["state_dicts"]:
        net = build_backbone(p["backbone"], p["input_shape"], len(ck["classes"])).to(device)
        net.load_state_dict(sd)
        nets.append(net.eval())
    mean, std = p["mean"].to(device), p["std"].to(device)
    item_shape = tuple(ck["item_shape"])

    @torch.no_grad()
    def predict_proba(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if tuple(X.shape[1:]) != item_shape:
            raise ValueError(f"X has item shape {X.shape[1:]}, but the model was trained on items of shape {item_shape}")
        x = torch.as_tensor(np.ascontiguousarray(X), device=device)
        x = x.permute(0, 3, 1, 2).float() / 255.0 if p["is_image"] else x.float()
        x = (x - mean) / std
        return (sum(net(x).float().softmax(-1) for net in nets) / len(nets)).cpu().numpy()

    return predict_proba


# ----------------------------------------------------------------------------- report


def _md_table(df: pd.DataFrame, floats: str = "{:.3f}") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        cells = [floats.format(v) if isinstance(v, (float, np.floating)) and np.isfinite(v) else ("–" if isinstance(v, (float, np.floating)) else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _stats(v: np.ndarray) -> str:
    v = np.asarray(v)
    return f"mean {v.mean():.2f}, median {np.median(v):g}, min {v.min()}, max {v.max()}"


def _pct(n: int, total: int) -> str:
    return f"{n} ({100.0 * n / total:.1f} %)" if total else str(n)


RELOAD_SNIPPET = """```python
from kdcrowd.report.practitioner import load_predictor
predict_proba = load_predictor("{out}/model.pt")      # features (N, D) or uint8 images (N, H, W, 3)
proba = predict_proba(X_new)                          # (N, K), columns in the order of `classes`
```

The same with plain torch (what `load_predictor` does):

```python
import torch
from kdcrowd.models.backbones import build_backbone
ck = torch.load("{out}/model.pt")                     # tensors and plain values only
p = ck["predictor"]
nets = [build_backbone(p["backbone"], p["input_shape"], len(ck["classes"])) for _ in p["state_dicts"]]
for net, sd in zip(nets, p["state_dicts"]):
    net.load_state_dict(sd); net.eval()
x = torch.as_tensor(X_new).float()                    # images: torch.as_tensor(imgs).permute(0, 3, 1, 2).float() / 255
x = (x - p["mean"]) / p["std"]
with torch.no_grad():
    proba = sum(net(x).softmax(-1) for net in nets) / len(nets)
labels = [ck["classes"][i] for i in proba.argmax(1)]
```

New images must be read like the training ones: `kdcrowd.data.items.read_image_folder(folder, size=ck["item_shape"][0])`.
`ck["state_dict"]` is the whole trained module (worker parameters included), `ck["config"]` the settings."""


def fit_report(
    clf: Any,
    ann: Any,
    summary: pd.DataFrame,
    matrices_source: str,
    items_description: str,
    settings: dict[str, Any],
    gold: tuple[np.ndarray, np.ndarray] | None = None,
    figure: str | None = "workers.png",
    n_figure: int = 0,
    out_name: str = "OUT",
    n_show: int = 10,
) -> str:
    """The Markdown text of ``report.md``.

    Args:
        clf: the fitted estimator; ann: its annotations; summary: the per-worker table of
            :func:`worker_frames`; matrices_source: where the matrices come from (a phrase).
        items_description: one line on the items (e.g. ``"features: X.npy, 16 columns"``).
        settings: the command's settings, shown as given.
        gold: ``(item positions, class indices)`` of known labels, used for reporting only.
        figure, n_figure: the worker figure's file name and how many workers it shows.
        out_name: the output folder as the user wrote it (for the reload snippet).
        n_show: how many least / most reliable workers to list.
    """
    from ..aggregation import majority_vote

    proba = clf.label_proba_
    classes = np.asarray(clf.classes_)
    final = proba.argmax(1)
    n, k = proba.shape
    per_item = ann.labels_per_item()
    per_worker = ann.labels_per_worker()
    annotated = per_item > 0
    votes = ann.vote_counts()
    mv = majority_vote(ann)
    ties = annotated & ((votes == votes.max(1, keepdims=True)).sum(1) > 1)
    disagree = annotated & (final != mv)
    m = clf.metrics_
    cfg = m.get("config", {})
    lines: list[str] = []
    add = lines.append

    add("# kdcrowd fit report")
    add("")
    add(f"Written {_dt.datetime.now().isoformat(timespec='seconds')} by kdcrowd {m.get('versions', {}).get('kdcrowd', '?')} (torch {m.get('versions', {}).get('torch', '?')}) on {m.get('device', '?')}; {m.get('seconds', float('nan')):.1f} s in all.")
    add("")
    add("## Data")
    add("")
    add(f"- **items**: {n} ({items_description}); {int(annotated.sum())} with at least one label, {int((~annotated).sum())} without (they still get a predicted label)")
    add(f"- **workers**: {ann.n_workers}")
    add(f"- **annotations**: {len(ann)}")
    add(f"- **classes**: {k} ({', '.join(map(str, classes[:20]))}{', ...' if k > 20 else ''})")
    add(f"- **labels per item**: {_stats(per_item)}" + (f"; over labelled items: mean {per_item[annotated].mean():.2f}" if (~annotated).any() and annotated.any() else ""))
    add(f"- **labels per worker**: {_stats(per_worker)}")
    add("")
    add("## Method and settings")
    add("")
    add("| setting | value |")
    add("|---|---|")
    for key, val in settings.items():
        add(f"| {key} | {val} |")
    add(f"| backbone (resolved) | {_resolved_backbone(clf)} |")
    add("")
    if clf.method == "kdcrowd":
        add(
            f"KD-Crowd: the crowd model `{clf.teacher}` is trained as teacher, a robust `{clf.student}` student learns from its predictions with the `{clf.kd}` distillation loss, "
            + ("then the roles switch and the crowd model is retrained towards the student; " if clf.stages == 2 else "")
            + f"the labels and worker matrices below come from the final stage (`{m.get('final_stage', '?')}`), {clf.epochs} epochs per stage."
        )
        add("")
    add(
        "**Model selection: none.** No held-out labelled items were used during training, so the model after the last epoch is kept "
        "(there is no early stopping or best-epoch choice)."
        + (" The known labels given with `--val-labels` were used only to measure the final labels below, never for training or selection." if gold is not None else "")
    )
    add("")
    add("## Labels")
    add("")
    counts = np.bincount(final, minlength=k)
    mv_counts = np.bincount(mv[annotated], minlength=k)
    dist = pd.DataFrame(
        {
            "class": [str(c) for c in classes],
            "final labels (all items)": [_pct(int(c), n) for c in counts],
            "majority vote (labelled items)": [_pct(int(c), int(annotated.sum())) for c in mv_counts],
            "mean probability": proba.mean(0),
        }
    )
    add(_md_table(dist))
    add("")
    add(
        f"**{int(disagree.sum())} of the {int(annotated.sum())} labelled items ({100.0 * disagree.sum() / max(1, annotated.sum()):.1f} %) get a final label different from the majority vote**"
        f" ({int((disagree & ties).sum())} of them are majority-vote ties, broken towards the first class; {int(ties.sum())} ties in all)."
        " The final labels are in `labels.csv` with the probability of every class."
    )
    add("")
    if gold is not None:
        g_items, g_y = gold
        acc = float((final[g_items] == g_y).mean())
        lab = annotated[g_items]
        add("## Accuracy on the known labels (`--val-labels`)")
        add("")
        add(f"- **final labels**: {acc:.3f} on {len(g_items)} items")
        if lab.any():
            add(f"- majority vote, for comparison: {float((mv[g_items[lab]] == g_y[lab]).mean()):.3f} on the {int(lab.sum())} of them that have crowd labels")
        add("")
        add("These items were trained on like every other item (their known labels were not); the numbers measure label quality, not generalisation to new items.")
        add("")
    add("## Workers")
    add("")
    add(
        f"Each worker's confusion matrix (rows: true class, columns: the class the worker gives) is {matrices_source}; all of them are in `workers.csv`. "
        "**Estimated accuracy** = Σ_k prior_k · T[k, k], the probability that the worker gives the true class, with the prior the mean predicted label distribution "
        f"({', '.join(f'{c}: {p:.2f}' for c, p in zip(classes[:10], proba.mean(0)[:10]))}{', ...' if k > 10 else ''}). "
        "**Agreement** is the fraction of the worker's labels equal to the final label. Workers with few labels have uncertain estimates. Per-worker numbers are in `worker_summary.csv`."
    )
    add("")
    ranked = summary.sort_values(["estimated_accuracy", "n_labels"], ascending=[True, False], kind="stable")
    fmt = ranked.rename(columns={"n_labels": "labels", "estimated_accuracy": "estimated accuracy"})
    if len(ranked) <= 2 * n_show:
        add(f"All {len(ranked)} workers, least reliable first:")
        add("")
        add(_md_table(fmt))
    else:
        add(f"The {n_show} least reliable workers:")
        add("")
        add(_md_table(fmt.head(n_show)))
        add("")
        add(f"The {n_show} most reliable workers:")
        add("")
        add(_md_table(fmt.tail(n_show).iloc[::-1]))
    add("")
    if figure:
        add(f"The {n_figure} most active workers' matrices (true class down, given class across):")
        add("")
        add(f"![worker confusion matrices]({figure})")
        add("")
    add("## Files")
    add("")
    add("- `labels.csv` — `item,label,p_<class>...` for every item")
    add("- `workers.csv` — `worker,true_class,given_class,probability`")
    add("- `worker_summary.csv` — `worker,n_labels,estimated_accuracy,agreement`")
    add("- `metrics.json` — the full configuration, versions, device, timings and per-epoch history")
    add("- `model.pt` — the trained model; reload it with:")
    add("")
    add(RELOAD_SNIPPET.format(out=out_name))
    add("")
    if cfg:
        add(f"Seed {cfg.get('seed', '?')}; rerunning the same command on the same machine reproduces these results.")
        add("")
    return "\n".join(lines)


def _resolved_backbone(clf: Any) -> str:
    from ..models.backbones import default_backbone

    return clf.backbone if clf.backbone != "auto" else default_backbone(tuple(clf.preprocessor_.input_shape))


def write_fit_outputs(
    out: str | Path,
    clf: Any,
    ann: Any,
    item_ids: Sequence[Any],
    items_description: str,
    settings: dict[str, Any],
    gold: tuple[np.ndarray, np.ndarray] | None = None,
    n_figure: int = 8,
) -> dict[str, Path]:
    """Write every output file of ``kdcrowd fit`` into ``out``; returns ``{name: path}``.

    ``clf`` is a fitted :class:`~kdcrowd.estimator.CrowdClassifier`, ``ann`` the
    :class:`~kdcrowd.data.Annotations` it was fitted on (item index = row of X),
    ``item_ids`` the original ids of those rows. See the module docstring for the files.
    """
    from ..io import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    proba = clf.label_proba_
    paths: dict[str, Path] = {}

    paths["labels"] = out / "labels.csv"
    label_frame(item_ids, clf.classes_, proba).to_csv(paths["labels"], index=False)

    t, source = worker_matrices(clf.transition_matrices_, ann, proba)
    long, summary = worker_frames(t, ann, proba)
    paths["workers"] = out / "workers.csv"
    long.to_csv(paths["workers"], index=False)
    paths["worker_summary"] = out / "worker_summary.csv"
    summary.to_csv(paths["worker_summary"], index=False)

    paths["model"] = out / "model.pt"
    save_model(paths["model"], clf)
    paths["metrics"] = out / "metrics.json"
    write_json(paths["metrics"], clf.metrics_)

    per_worker = ann.labels_per_worker()
    order = np.argsort(-per_worker, kind="stable")[: min(n_figure, ann.n_workers)]
    png = plot_worker_matrices(t, np.asarray(ann.worker_ids), clf.classes_, order, out / "workers", scores=summary["estimated_accuracy"].to_numpy(), title=f"{clf.method}: most active workers")
    paths["figure"] = png[0]

    paths["report"] = out / "report.md"
    text = fit_report(clf, ann, summary, source, items_description, settings, gold=gold, figure=png[0].name, n_figure=len(order), out_name=str(out))
    paths["report"].write_text(text + "\n", encoding="utf-8")
    return paths
