"""``report.html`` of ``kdcrowd fit``: one self-contained page to look at, not to read.

Every chart is inline SVG written directly (:mod:`kdcrowd.report.svg`, no matplotlib),
every picture a PNG embedded as a ``data:`` URI, and the style sheet is inline, so the
file can be mailed or opened offline. Sections: a row of headline numbers, training
curves per stage (with the selected epoch marked), memorization of suspect labels,
class balance, worker quality ranked, the grid of the most active workers' confusion
matrices, the most doubtful items (with thumbnails for images), then settings and files.

:func:`render_fit_html` builds the page from a :class:`FitPage`, which
:func:`kdcrowd.report.practitioner.write_fit_outputs` fills in.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .plots import memorization_curves, stage_histories
from .svg import Line, _e, bar_chart, line_chart, scatter_chart

__all__ = ["FitPage", "render_fit_html", "doubtful_items", "thumbnails_from_files"]

#: The colour of each training stage in the curves.
STAGE_COLOURS = {"teacher": "#1f77b4", "student": "#d62728", "stage2": "#2ca02c"}


@dataclass
class FitPage:
    """Everything the page shows; see :func:`render_fit_html`."""

    metrics: dict[str, Any]
    """The run's ``metrics.json`` (config, history, stages, versions, device, seconds)."""
    classes: np.ndarray
    """Class values, in column order."""
    proba: np.ndarray
    """(N, K) final label distribution of every item (annotated or not)."""
    annotations: Any
    """The :class:`~kdcrowd.data.Annotations` (item index = row of ``proba``)."""
    item_ids: np.ndarray
    """Original ids of the N items."""
    workers: pd.DataFrame
    """``workers.csv``: ``worker, n_labels, accuracy_estimate, agreement, diag_<class>...``."""
    matrices: np.ndarray
    """(M, K, K) worker matrices."""
    matrices_source: str
    """Where the matrices come from (a phrase)."""
    items_description: str
    """One line on the items."""
    settings: dict[str, Any]
    """The command's settings, shown as given."""
    method_text: str = ""
    """A sentence on the method."""
    selection_text: str = ""
    """A sentence on how the kept epoch was chosen."""
    gold: tuple[np.ndarray, np.ndarray] | None = None
    """``(item positions, class indices)`` of known labels (``--truth``), for reporting only."""
    thumbnail: Callable[[int], bytes | None] | None = None
    """PNG bytes of item ``i``'s picture, for image items."""
    predict_items: str = "--features"
    """The option that gives ``kdcrowd predict`` the model's items (:func:`~kdcrowd.persist.items_option`)."""
    files: dict[str, str] = field(default_factory=dict)
    """Output file name → what it holds."""


# ----------------------------------------------------------------------------- pieces


def doubtful_items(proba: np.ndarray, ann: Any, n: int = 24) -> np.ndarray:
    """Indices of the ``n`` annotated items whose final label is least certain (lowest
    top-class probability; ties: more crowd labels first)."""
    per_item = ann.labels_per_item()
    annotated = np.flatnonzero(per_item > 0)
    conf = np.asarray(proba)[annotated].max(1)
    order = np.lexsort((-per_item[annotated], conf))
    return annotated[order[:n]]


def _crowd_votes(ann: Any, classes: np.ndarray, items: np.ndarray) -> list[str]:
    """``"cat ×2, dog ×1"`` per item: the crowd labels it received."""
    votes = ann.vote_counts()[items]
    out = []
    for row in votes:
        nz = np.flatnonzero(row)
        nz = nz[np.argsort(-row[nz], kind="stable")]
        out.append(", ".join(f"{classes[j]} ×{int(row[j])}" for j in nz))
    return out


def _curves_figure(metrics: dict[str, Any]) -> str | None:
    """The training loss (and, with validation, the validation agreement with the kept
    epoch starred) of every stage, one after another: SVG, or ``None`` without training."""
    stages = [s for s in stage_histories(metrics) if s[1]]
    if not stages:
        return None
    has_val = any(h.get("val_accuracy") is not None for _, hist, _ in stages for h in hist)
    losses, vals = [], []
    offset = 0
    for name, hist, best in stages:
        ep = np.array([h["epoch"] for h in hist], dtype=float) + offset
        colour = STAGE_COLOURS.get(name)
        losses.append(Line(name, ep, [h["loss"] for h in hist], colour))
        if has_val:
            val = [np.nan if h.get("val_accuracy") is None else h["val_accuracy"] for h in hist]
            stars = [(float(best + offset), float(val[best - 1]))] if best is not None and 1 <= best <= len(hist) and np.isfinite(val[best - 1]) else []
            vals.append(Line(name, ep, val, colour, stars=stars))
        offset += len(hist)
    xlabel = "epoch (stages one after another)"
    svg = line_chart(losses, title="training loss", xlabel=xlabel, ylabel="training loss")
    if has_val:
        svg += line_chart(vals, title="validation (★ = kept epoch)", xlabel=xlabel, ylabel="validation agreement", legend=False)
    return svg


def _memorization_figure(metrics: dict[str, Any]) -> str | None:
    curves = memorization_curves(metrics)
    if not curves:
        return None
    lines = []
    for name, ep, mu, _sd in curves:
        stage = name.split(": ")[-1]  # a KD-Crowd stage, or the method
        lines.append(Line(stage, ep, mu, STAGE_COLOURS.get(stage), dots=True))
    return line_chart(lines, title="memorization of suspect labels", xlabel="epoch", ylabel="share reproduced", ylim=(0.0, 1.0))


def _balance_figure(classes: np.ndarray, series: dict[str, np.ndarray]) -> str:
    shares = {name: counts / max(1, counts.sum()) for name, counts in series.items()}
    return bar_chart([str(c) for c in classes], shares, title="class balance", ylabel="share of items")


def _quality_figure(workers: pd.DataFrame) -> str:
    """Many workers (more than :data:`QUALITY_BARS_MAX`): estimated accuracy against labels given."""
    return scatter_chart(
        workers["n_labels"], workers["accuracy_estimate"], log_x=True, ylim=(0.0, 1.0),
        xlabel="labels given (log scale)", ylabel="estimated accuracy", title=f"{len(workers)} workers: estimated accuracy against labels given",
    )


#: Up to this many workers, the ranking is drawn as bars in HTML (one row per worker); above, a scatter plot.
QUALITY_BARS_MAX = 60

#: The viridis colour map at 17 evenly spaced points (matplotlib's), interpolated linearly in between.
_VIRIDIS = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in (
    "440154", "48186a", "472d7b", "424086", "3b528b", "33638d", "2c728e", "26828e", "21918c",
    "1fa088", "28ae80", "3fbc73", "5ec962", "84d44b", "addc30", "d8e219", "fde725",
)], dtype=np.float64)


def viridis(v: np.ndarray) -> np.ndarray:
    """RGB ``uint8`` (..., 3) of values in [0, 1] (clipped; NaN as 0) under the viridis map."""
    x = np.clip(np.nan_to_num(np.asarray(v, dtype=np.float64)), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    lo = np.minimum(np.floor(x).astype(np.int64), len(_VIRIDIS) - 2)
    f = (x - lo)[..., None]
    return np.rint(_VIRIDIS[lo] * (1 - f) + _VIRIDIS[lo + 1] * f).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of an RGB ``uint8`` image (H, W, 3), written directly (zlib), without matplotlib."""
    import struct
    import zlib

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()  # filter byte 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def _png_uri(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode("ascii")


def _quality_bars(workers: pd.DataFrame) -> str:
    """Workers ranked by estimated accuracy as HTML bars (least reliable first), coloured by
    how many labels each gave (more labels = yellower, as the matrices' colour map)."""
    ranked = workers.sort_values("accuracy_estimate", kind="stable")
    n = ranked["n_labels"].to_numpy(dtype=np.float64)
    shade = viridis(np.log1p(n) / np.log1p(max(1.0, float(n.max()) if len(n) else 1.0)))
    rows = []
    for (w, k, acc), c in zip(ranked[["worker", "n_labels", "accuracy_estimate"]].itertuples(index=False), shade):
        a = float(acc)
        width = 100.0 * min(1.0, max(0.0, a)) if np.isfinite(a) else 0.0
        rows.append(
            f'<div class="q"><span class="w">{_e(w)} ({int(k)})</span><span class="qb"><i style="width:{width:.1f}%;background:#{int(c[0]):02x}{int(c[1]):02x}{int(c[2]):02x}"></i></span>'
            f'<span class="v">{a:.2f}</span></div>'
        )
    return '<div class="quality">' + "".join(rows) + "</div>"


def _matrix_grid(t: np.ndarray, workers: pd.DataFrame, classes: np.ndarray, n: int = 24) -> tuple[str, int]:
    """The ``n`` most active workers' matrices as small heat maps (one K×K PNG each, the
    browser enlarges it without smoothing) with a colour bar: HTML, and how many are shown."""
    order = np.argsort(-workers["n_labels"].to_numpy(), kind="stable")[: min(n, len(workers))]
    k = len(classes)
    tiles = []
    for m in order:
        title = f"{_e(workers['worker'].iloc[m])}<br>{int(workers['n_labels'].iloc[m])} labels, acc {workers['accuracy_estimate'].iloc[m]:.2f}"
        mat = np.asarray(t[m], dtype=np.float64)
        cells = "; ".join(f"{classes[i]}: " + " ".join(f"{v:.2f}" for v in mat[i]) for i in range(k)) if k <= 10 else ""
        tiles.append(f'<div class="mat"><div>{title}</div><img src="{_png_uri(viridis(mat))}" alt="matrix of worker {_e(workers["worker"].iloc[m])}" title="{_e(cells)}"></div>')
    bar = _png_uri(viridis(np.linspace(1.0, 0.0, 64))[:, None, :].repeat(8, axis=1))
    axes = (
        "true class down (" + ", ".join(_e(c) for c in classes) + " from the top), given class across in the same order"
        if k <= 10 else f"true class down, given class across, {k} classes in the order of <code>labels.csv</code>"
    )
    legend = f'<div class="scale"><img src="{bar}" alt="colour scale"><span>1</span><span>0</span></div>'
    return f'<div class="mats">{"".join(tiles)}{legend}</div><p class="axes">Each square: {axes}; colour = probability (scale on the right; hover a square for its values).</p>', len(order)


# ----------------------------------------------------------------------------- page

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:34px 0 10px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.sub{color:#5b6473;font-size:13px;margin-bottom:18px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:22px} .card span{font-size:12px;color:#5b6473}
.card.good b{color:#1a7f37} .card.warn b{color:#b35900}
figure{background:#fff;border:1px solid #dde1e7;border-radius:8px;margin:10px 0;padding:10px;text-align:center}
figure img,figure svg{max-width:100%;height:auto} figcaption{font-size:13px;color:#5b6473;text-align:left;margin-top:6px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:8px 0}
th,td{border:1px solid #dde1e7;padding:4px 8px;text-align:left} th{background:#eef1f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.items{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px}
.item{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:8px;font-size:12px}
.item img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;display:block;margin:0 auto 6px;background:#eee}
.item .id{font-weight:600;word-break:break-all} .bar{height:6px;background:#e3e6ea;border-radius:3px;margin:4px 0}
.bar i{display:block;height:6px;border-radius:3px;background:#d62728}
p{line-height:1.45} code{background:#eef1f5;padding:1px 4px;border-radius:3px}
.quality{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px 16px;font-size:12px;max-width:640px}
.q{display:flex;align-items:center;gap:8px;margin:2px 0} .q .w{width:170px;text-align:right;word-break:break-all} .q .v{width:36px;font-variant-numeric:tabular-nums}
.qb{flex:1;height:10px;background:#eef1f5} .qb i{display:block;height:10px}
.mats{display:flex;flex-wrap:wrap;gap:10px;background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px;align-items:flex-end}
.mat{font-size:11px;text-align:center;width:130px;overflow-wrap:anywhere} .mat img{width:112px;height:112px;image-rendering:pixelated;display:block;margin:4px auto 0;border:1px solid #dde1e7}
.scale{display:grid;grid-template-columns:14px auto;grid-template-rows:56px 56px;font-size:11px;column-gap:4px}
.scale img{grid-row:1/3;width:14px;height:112px;image-rendering:pixelated} .scale span:last-child{align-self:end}
p.axes{font-size:13px;color:#5b6473}
"""


def _table(df: pd.DataFrame, floats: str = "{:.3f}") -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    rows = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, (float, np.floating)):
                cells.append(f'<td class="num">{floats.format(v) if np.isfinite(v) else "–"}</td>')
            elif isinstance(v, (int, np.integer)):
                cells.append(f'<td class="num">{int(v)}</td>')
            else:
                cells.append(f"<td>{_e(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _figure(svg: str, caption: str) -> str:
    """A chart (inline SVG, :mod:`kdcrowd.report.svg`) and its caption."""
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _card(value: str, label: str, cls: str = "") -> str:
    return f'<div class="card {cls}"><b>{_e(value)}</b><span>{_e(label)}</span></div>'


def _gold_text(workers: pd.DataFrame) -> str:
    """The paragraph on gold questions: who answered them and how well."""
    g = workers["gold_n"].to_numpy()
    answered = g > 0
    if not answered.any():
        return "<p><b>Gold questions</b> were given, but no worker answered any of them: they set the labels of their items only.</p>"
    acc = workers["gold_accuracy"].to_numpy()[answered]
    pooled = float(np.sum(acc * g[answered]) / g[answered].sum())
    return (
        f"<p><b>Gold questions</b> (items with known answers) anchor the worker estimates (all but majority vote's and M-MSR's) and the training targets. "
        f"{int(answered.sum())} of {len(workers)} workers gave {int(g.sum())} answers to them, {100.0 * pooled:.1f} % correct "
        f"(per worker: median {100.0 * float(np.median(acc)):.1f} %, lowest {100.0 * float(acc.min()):.1f} %); "
        "<b>gold_n</b> and <b>gold_accuracy</b> in the table and in <code>workers.csv</code> are each worker's count and accuracy on them.</p>"
    )


def _resumed_text(m: dict[str, Any]) -> str:
    """How much of a resumed fit's time its earlier processes spent (none for a fit in one go)."""
    r = float(m.get("resumed_seconds") or 0.0)
    return f" ({r:.1f} s of it before it was resumed)" if r > 0 else ""


def render_fit_html(page: FitPage) -> str:
    """The whole ``report.html`` as one string."""
    from ..aggregation import majority_vote_disagreements, majority_vote_winners

    m, ann, classes, proba = page.metrics, page.annotations, np.asarray(page.classes), np.asarray(page.proba)
    n, k = proba.shape
    final = proba.argmax(1)
    per_item = ann.labels_per_item()
    annotated = per_item > 0
    # majority vote with its ties kept: a final label among the tied top classes is no change,
    # and a tie counts 1/t for each of its t classes (the expected label of a uniform tie-break)
    winners = majority_vote_winners(ann)
    mv_share = winners / np.maximum(winners.sum(1, keepdims=True), 1)
    changed = int(majority_vote_disagreements(winners, final).sum())
    versions = m.get("versions", {})
    parts: list[str] = []
    add = parts.append

    add(f"<h1>kdcrowd fit report</h1><div class='sub'>{_e(page.items_description)} · written {_dt.datetime.now().isoformat(timespec='seconds')} by kdcrowd {_e(versions.get('kdcrowd', '?'))} (torch {_e(versions.get('torch', '?'))}) on {_e(m.get('device', '?'))}, fitted in {m.get('seconds', float('nan')):.1f} s{_resumed_text(m)}</div>")
    cards = [
        _card(f"{int(annotated.sum())}", f"items with crowd labels (of {n})"),
        _card(f"{ann.n_workers}", "workers"),
        _card(f"{len(ann)}", "crowd labels"),
        _card(f"{k}", "classes"),
        _card(f"{changed} ({100.0 * changed / max(1, int(annotated.sum())):.1f} %)", "labels changed vs majority vote"),
        _card(f"{float(np.median(proba[annotated].max(1))) if annotated.any() else float('nan'):.2f}", "median confidence"),
    ]
    if page.gold is not None:
        g_items, g_y = page.gold
        acc = float((final[g_items] == g_y).mean())
        lab = annotated[g_items]
        if lab.any():
            mv_acc = float(mv_share[g_items[lab], g_y[lab]].mean())
            acc_lab = float((final[g_items[lab]] == g_y[lab]).mean())
            cards.append(_card(f"{acc:.3f}", f"accuracy on {len(g_items)} known labels", "good" if acc_lab >= mv_acc else "warn"))
            cards.append(_card(f"{acc_lab:.3f} / {mv_acc:.3f}", f"final labels / majority vote on the {int(lab.sum())} of them with crowd labels"))
        else:  # known labels of items without crowd labels only: no majority vote to compare with
            cards.append(_card(f"{acc:.3f}", f"accuracy on {len(g_items)} known labels (none has crowd labels)"))
    add("<div class='cards'>" + "".join(cards) + "</div>")
    if page.method_text:
        add(f"<p>{page.method_text}</p>")

    add("<h2>Training</h2>")
    fig = _curves_figure(m)
    if fig is not None:
        add(_figure(fig, page.selection_text))
    else:
        add("<p>This method trains no network on the crowd labels.</p>")
    fig = _memorization_figure(m)
    if fig is not None:
        reference = _e(m.get("reference_labels", "memorization is measured against the true labels"))
        add(_figure(fig, f"Memorization: of the crowd labels that disagree with the reference labels, the share the network reproduces, mean over workers ({reference}). A curve that climbs late is the network learning the workers' mistakes; a robust method keeps it low."))

    add("<h2>Labels</h2>")
    series = {"final labels": np.bincount(final[annotated], minlength=k), "majority vote": mv_share[annotated].sum(0)}
    if page.gold is not None:
        series["known labels"] = np.bincount(page.gold[1][annotated[page.gold[0]]], minlength=k)
    add(_figure(_balance_figure(classes, series), f"Share of each class among the {int(annotated.sum())} labelled items: the final labels against majority vote" + (" and the known labels" if page.gold is not None else "") + ". The final labels with every class's probability are in <code>labels.csv</code>."))

    add("<h2>Workers</h2>")
    add(f"<p>Each worker's confusion matrix (rows: true class, columns: the class the worker gives) is {_e(page.matrices_source)}. <b>Estimated accuracy</b> = Σ<sub>k</sub> prior<sub>k</sub> · T[k, k], the chance that the worker gives the true class under the predicted class balance; <b>agreement</b> is the share of the worker's labels equal to the final label. Workers with few labels have uncertain estimates.</p>")
    if len(page.workers) <= QUALITY_BARS_MAX:
        add(f"<figure>{_quality_bars(page.workers)}<figcaption>Workers ranked by estimated accuracy (labels in brackets; colour: more labels = yellower; all of them are in <code>workers.csv</code>).</figcaption></figure>")
    else:
        add(_figure(_quality_figure(page.workers), "Workers' estimated accuracy against the number of labels they gave (all of them are in <code>workers.csv</code>)."))
    grid, shown = _matrix_grid(page.matrices, page.workers, classes)
    add(f"<figure>{grid}<figcaption>The {shown} most active workers' matrices (all of them are in <code>transition_matrices.npz</code>).</figcaption></figure>")
    shown_cols = ["worker", "n_labels", "accuracy_estimate", "agreement"]
    if "gold_n" in page.workers.columns:  # gold questions (kdcrowd fit --gold)
        shown_cols += ["gold_n", "gold_accuracy"]
        add(_gold_text(page.workers))
    ranked = page.workers.sort_values(["accuracy_estimate", "n_labels"], ascending=[True, False], kind="stable")[shown_cols]
    if len(ranked) > 20:
        add("<p>The 10 least and the 10 most reliable workers:</p>" + _table(pd.concat([ranked.head(10), ranked.tail(10).iloc[::-1]])))
    else:
        add("<p>All workers, least reliable first:</p>" + _table(ranked))

    add("<h2>Most doubtful items</h2>")
    idx = doubtful_items(proba, ann)
    votes = _crowd_votes(ann, classes, idx)
    tiles = []
    for i, v in zip(idx, votes):
        top = np.argsort(-proba[i])[:2]
        img = ""
        if page.thumbnail is not None:
            data = page.thumbnail(int(i))
            if data:
                img = f'<img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" alt="item {_e(page.item_ids[i])}">'
        conf = float(proba[i, top[0]])
        runner_up = f"{_e(classes[top[1]])} {proba[i, top[1]]:.2f}"  # K >= 2: fit refuses a single class
        tiles.append(f'<div class="item">{img}<div class="id">{_e(page.item_ids[i])}</div><div><b>{_e(classes[top[0]])}</b> {conf:.2f} · {runner_up}</div><div class="bar"><i style="width:{100 * (1 - conf):.0f}%"></i></div><div>crowd: {_e(v)}</div></div>')
    add(f"<p>The {len(idx)} labelled items whose final label is least certain — worth a second look by a person. The red bar is the doubt (1 − confidence).</p>")
    add("<div class='items'>" + "".join(tiles) + "</div>")

    add("<h2>Settings and files</h2>")
    add(_table(pd.DataFrame({"setting": list(page.settings), "value": [str(v) for v in page.settings.values()]})))
    if page.files:
        add(_table(pd.DataFrame({"file": list(page.files), "holds": list(page.files.values())})))
    add(f"<p>Predict new items with <code>kdcrowd predict --model OUT/model.pt {page.predict_items} {'DIR' if page.predict_items == '--images' else 'FILE'} --out predictions.csv</code>.</p>")
    body = "\n".join(parts)
    return f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width,initial-scale=1'><title>kdcrowd fit report</title><style>{CSS}</style></head><body><main>\n{body}\n</main></body></html>\n"


def thumbnails_from_files(files: Sequence[Any], size: int = 96) -> Callable[[int], bytes | None]:
    """A :attr:`FitPage.thumbnail` reading item ``i``'s picture from ``files[i]``, converted
    to RGB as for training (``kdcrowd.data.items._rgb``: 16-bit grayscale scaled, not
    clipped); ``None`` when the file
    cannot be read any more."""
    from PIL import Image

    from ..data.items import _rgb

    def thumb(i: int) -> bytes | None:
        try:
            with Image.open(files[i]) as im:
                im = _rgb(im)
                im.thumbnail((size, size))
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                return buf.getvalue()
        except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError):  # as load_images: PIL raises all of these for broken files
            return None

    return thumb
