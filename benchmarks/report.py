"""Tables and figures from the suite result files in benchmarks/results/.

    python benchmarks/report.py            # writes docs/figures/*.png|svg and docs/results_tables.md

Reads every ``benchmarks/results/*suite*.json`` / ``*ablation*.json`` written by
``benchmarks/suite.py``; a cell with several seeds reads mean ± std.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from protocol_table import exact, r1  # noqa: E402  (one reading and rounding of exact accuracies for both scripts)
from kdcrowd.report.plots import _save, subplots, memorization_curves  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "figures"


def _finite(values: list[float | None]) -> np.ndarray:
    return np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)


def _cell(values: list[float | None], pct: bool = True) -> str:
    v = _finite(values)
    if len(v) == 0:
        return "–"
    if not pct:
        return f"{v[0]:.3f}" if len(v) == 1 else f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"
    mean = r1(sum(exact(x) for x in v) * 100 / len(v))  # half up from the exact decimal mean
    return mean if len(v) == 1 else f"{mean} ± {100 * v.std(ddof=1):.1f}"


def _val_acc(run: dict[str, Any]) -> float | None:
    """Best validation accuracy of the run's final predictor (the selected epoch's; a KD-Crowd
    run's top-level history is its final stage's)."""
    vals = [h.get("val_accuracy") for h in run.get("history", []) if h.get("val_accuracy") is not None]
    return max(vals) if vals else None


def load(path: Path) -> dict[str, Any]:
    """A suite result file, plain or gzip-compressed JSON."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as f:
            return json.load(f)
    return json.loads(path.read_text())


def table(path: Path) -> str:
    d = load(path)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in d["runs"]:
        rows[r["label"]].append(r)
    seeds = sorted({r["seed"] for r in d["runs"]})
    lines = [
        f"### {d['suite']} ({path.name})",
        "",
        f"Device: {d.get('device')}; seeds {seeds}; wall time {d.get('wall_seconds', 0):.0f} s. Command: `{d.get('command')}`",
        "",
        "| method | val acc (selected) | test acc (val-selected) | test acc (final) | train-label acc | expertise err (rel.) | expertise MAE | final stage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, rs in rows.items():
        e = [r.get("expertise_error") or {} for r in rs]
        final = {r.get("final_stage") for r in rs} - {None}
        val = [_val_acc(r) for r in rs]
        lines.append(
            f"| {label} | {_cell(val)} | {_cell([r.get('test_accuracy_val_selected') for r in rs])} | {_cell([r.get('test_accuracy') for r in rs])} "
            f"| {_cell([r.get('train_label_accuracy') for r in rs])} | {_cell([x.get('relative_mean') for x in e], pct=False)} "
            f"| {_cell([x.get('mae_mean') for x in e], pct=False)} | {', '.join(sorted(final)) or ''} |"
        )
    return "\n".join(lines) + "\n"


#: Rows of the paper-style tables (labels of ``suite._table_runs``) and their display names.
ROWS = {
    "clean": "clean labels (ceiling)", "mv": "MV+DNN", "ds": "DS+DNN", "crowdlayer-mw": "CrowdLayer-MW",
    "maxmig": "Max-MIG", "conal": "CoNAL", "kdcrowd(crowdlayer-mw)": "KD-Crowd(CrowdLayer-MW)", "kdcrowd(maxmig)": "KD-Crowd(Max-MIG)",
}
#: KD-Crowd row -> the teacher row it was distilled from (the same run, shared per seed).
PAIRS = {"kdcrowd(crowdlayer-mw)": "crowdlayer-mw", "kdcrowd(maxmig)": "maxmig"}


def _by_label(d: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in d["runs"]:
        out[r["label"]][r["seed"]] = r
    return out


def _em(r: dict[str, Any]) -> float | None:
    """Relative expertise error E_m (mean over workers); a KD-Crowd run's top level holds its
    stage-2 crowd model's (the teacher's with one stage)."""
    e = r.get("expertise_error") or {}
    return e.get("relative_mean")


def paper_table(columns: dict[str, Path], metric: str) -> str:
    """Rows = methods, one column per suite file; ``metric``: val_selected | final | em."""
    data = {name: _by_label(load(p)) for name, p in columns.items()}
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label, name in ROWS.items():
        cells = []
        for col in columns:
            runs = list(data[col].get(label, {}).values())
            if metric == "em":
                cells.append(_cell([_em(r) for r in runs], pct=False))
            else:
                key = "test_accuracy_val_selected" if metric == "val_selected" else "test_accuracy"
                cells.append(_cell([r.get(key) for r in runs]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired(d: dict[str, Any], a: str, b: str, key: str = "test_accuracy_val_selected") -> dict[str, Any]:
    """Run ``a`` minus run ``b`` over the seeds both have: mean, std, wins, paired t-test p-value."""
    from scipy import stats

    rows = _by_label(d)
    seeds = sorted(set(rows.get(a, {})) & set(rows.get(b, {})))
    diff = np.array([rows[a][s][key] - rows[b][s][key] for s in seeds], dtype=float)
    if len(diff) == 0:
        return {"n": 0}
    p = float(stats.ttest_rel([rows[a][s][key] for s in seeds], [rows[b][s][key] for s in seeds]).pvalue) if len(diff) > 1 and diff.std() > 0 else float("nan")
    points = sum(exact(rows[a][s][key]) - exact(rows[b][s][key]) for s in seeds) * 100 / len(seeds)
    return {"n": len(diff), "mean": float(diff.mean()), "std": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0, "wins": int((diff > 0).sum()), "p": p,
            "points": r1(points, sign=True).replace("−", "-")}  # the ASCII minus the published tables use


def _verdict(t: dict[str, Any]) -> str:
    if t["n"] < 2 or not np.isfinite(t.get("p", float("nan"))):
        return "n/a"
    if t["p"] < 0.05:
        return "gain" if t["mean"] > 0 else "loss"
    return "within noise"


def kd_vs_teacher_table(columns: dict[str, Path]) -> str:
    """Paired differences KD-Crowd minus its own teacher run, per column (test acc, val-selected)."""
    lines = ["| data | KD-Crowd over | Δ test acc (points, mean ± std) | seeds with a gain | paired t-test p | verdict |", "|---|---|---|---|---|---|"]
    for col, path in columns.items():
        d = load(path)
        for kd, teacher in PAIRS.items():
            t = paired(d, kd, teacher)
            if t["n"]:
                lines.append(f"| {col} | {ROWS[teacher]} | {t['points']} ± {100 * t['std']:.1f} | {t['wins']}/{t['n']} | {t['p']:.3f} | {_verdict(t)} |")
    return "\n".join(lines) + "\n"


def gap_closed(path: Path) -> dict[str, Any]:
    """Share of the MV → clean gap closed by the KD-Crowd row with the higher mean validation accuracy."""
    rows = _by_label(load(path))
    acc = {k: float(_finite([r.get("test_accuracy_val_selected") for r in v.values()]).mean()) for k, v in rows.items()}
    val = {k: float(_finite([_val_acc(r) for r in rows[k].values()]).mean()) for k in PAIRS if k in rows}
    best = max(val, key=lambda k: val[k])
    share = lambda k: (acc[k] - acc["mv"]) / (acc["clean"] - acc["mv"])  # noqa: E731
    return {"best": best, "kd": acc[best], "mv": acc["mv"], "clean": acc["clean"], "closed": share(best), "teacher_closed": share(PAIRS[best])}


def ablation_table(path: Path, teacher: str, base: str) -> str:
    """Ablation rows: validation and test accuracy (5 seeds), paired Δ vs the teacher and vs the base KD setting."""
    d = load(path)
    rows = _by_label(d)
    lines = ["| variant | val acc | test acc (val-selected) | Δ vs teacher (points) | Δ vs base (points) |", "|---|---|---|---|---|"]
    for label, runs in rows.items():
        rs = list(runs.values())
        val = [_val_acc(r) for r in rs]
        t = paired(d, label, teacher) if label.startswith("kdcrowd") else {"n": 0}
        b = paired(d, label, base) if label.startswith("kdcrowd") and label != base else {"n": 0}
        fmt = lambda x: f"{x['points']} ± {100 * x['std']:.1f} ({x['wins']}/{x['n']}, {_verdict(x)})" if x["n"] else ""  # noqa: E731
        lines.append(f"| {label} | {_cell(val)} | {_cell([r.get('test_accuracy_val_selected') for r in rs])} | {fmt(t)} | {fmt(b)} |")
    return "\n".join(lines) + "\n"


def memorization_figure(paths: dict[str, Path], labels: list[str], out: Path) -> list[Path]:
    """One panel per suite: memorization (mean over workers, band ± 1 std over workers), each averaged over seeds.

    KD-Crowd runs are drawn by their student stage (the stage that learns from the teacher's labels).
    """
    fig, axes = subplots(1, len(paths), figsize=(5.2 * len(paths), 3.8), squeeze=False)
    for ax, (title, path) in zip(axes[0], paths.items()):
        rows = _by_label(load(path))
        for label in labels:
            curves = []
            for r in rows.get(label, {}).values():
                cs = memorization_curves(r, ROWS.get(label, label))
                if r.get("stages"):
                    cs = [c for c in cs if c[0].endswith("student")]
                curves += cs[:1]
            if not curves:
                continue
            n = min(len(c[1]) for c in curves)
            ep = curves[0][1][:n]
            mu = np.mean([c[2][:n] for c in curves], axis=0)
            sd = np.mean([c[3][:n] for c in curves], axis=0)
            (line,) = ax.plot(ep, mu, label=f"{ROWS.get(label, label)}{' (student)' if label.startswith('kdcrowd') else ''}")
            ax.fill_between(ep, np.clip(mu - sd, 0, 1), np.clip(mu + sd, 0, 1), color=line.get_color(), alpha=0.12)
        ax.set_title(f"{title}, {len(next(iter(rows.values())))} seeds")
        ax.set_xlabel("epoch")
        ax.set_ylim(0, None)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("wrong annotations memorized\n(mean ± 1 std over workers)")
    return _save(fig, out)


def expertise_gap_figure(path: Path, out: Path, title: str) -> list[Path]:
    """Per-worker E_m of Max-MIG and of KD-Crowd(Max-MIG)'s stage-2 model(s), each worker's error
    averaged over the seeds, workers sorted by Max-MIG's error (the seed's "E_m gap" figure)."""
    rows = _by_label(load(path))
    series = [("maxmig", "Max-MIG (teacher)")] + [(k, f"KD-Crowd stage 2, {'student' if 'student' in k else 'majority-vote'}-initialised")
                                                  for k in ("kdcrowd(maxmig)", "kdcrowd(maxmig) stage2_init=student") if k in rows]
    seeds = sorted(set.intersection(*(set(rows[k]) for k, _ in series)))

    def per_worker(label: str) -> np.ndarray:
        recs = [rows[label][s] for s in seeds]
        # a worker without evaluated rows is null in the JSON (NaN before): as float, NaN
        return np.nanmean(np.array([r["expertise_error"]["relative_per_worker"] for r in recs], dtype=float), axis=0)

    errs = {k: per_worker(k) for k, _ in series}
    order = np.argsort(np.nan_to_num(errs["maxmig"], nan=-1.0))
    fig, ax = subplots(figsize=(7, 3.6))
    for (k, name), marker in zip(series, ".xo"):
        ax.plot(errs[k][order], marker, ms=4, mfc="none" if marker == "o" else None, label=f"{name}: mean {np.nanmean(errs[k]):.3f}")
    ax.set_title(f"{title}: per-worker expertise error, mean over {len(seeds)} seeds")
    ax.set_xlabel("worker (sorted by Max-MIG's error)")
    ax.set_ylabel("E_m")
    ax.legend(fontsize=8)
    return _save(fig, out)


def stage2_init_table(paths: dict[str, Path]) -> str:
    """Accuracy and E_m of Max-MIG and KD-Crowd(Max-MIG) with either stage-2 initialisation."""
    lines = ["| data | run | test acc (val-selected) | stage-2 test acc (val-selected) | E_m (stage 2 / teacher) | final predictor (seeds) |", "|---|---|---|---|---|---|"]
    for name, path in paths.items():
        for label, runs in _by_label(load(path)).items():
            rs = list(runs.values())
            em = [_em(r) for r in rs]
            s2 = [r["stages"]["stage2"].get("test_accuracy_val_selected") for r in rs if r.get("stages")]
            fin = [r.get("final_stage") for r in rs if r.get("final_stage")]
            lines.append(f"| {name} | {label} | {_cell([r.get('test_accuracy_val_selected') for r in rs])} | {_cell(s2) if s2 else ''} "
                         f"| {_cell(em, pct=False)} | {', '.join(f'{k} {fin.count(k)}' for k in sorted(set(fin)))} |")
    return "\n".join(lines) + "\n"


TABLE1 = {"low-1": "table1-maxmig-low-1", "low-2": "table1-maxmig-low-2", "low-3": "table1-maxmig-low-3",
          "high-1": "table1-maxmig-high-1", "high-2": "table1-maxmig-high-2", "high-3": "table1-maxmig-high-3", "sparse": "table1-sparse"}
TABLE2 = {"LabelMe": "table2-labelme", "CIFAR-10N": "table2-cifar10n"}


def paper_tables(suites: dict[str, Path]) -> str:
    """Tables 1–3 in the paper's layout from the five-seed ``gpu5_*`` files."""
    t1 = {k: suites[f"gpu5_{v}_suite"] for k, v in TABLE1.items() if f"gpu5_{v}_suite" in suites}
    t2 = {k: suites[f"gpu5_{v}_suite"] for k, v in TABLE2.items() if f"gpu5_{v}_suite" in suites}
    md = ["## Paper-style tables (five seeds, mean ± std; H200)", ""]
    if t1:
        md += ["### Table 1 — synthetic workers on CIFAR-10 (lossless 20 k images, 15k/1k/4k)", "",
               "Test accuracy (%) at the validation-selected epoch:", "", paper_table(t1, "val_selected"),
               "Test accuracy (%) at the final epoch:", "", paper_table(t1, "final"),
               "Expertise error E_m (relative, mean over workers; KD-Crowd: its stage-2 crowd model):", "", paper_table(t1, "em"),
               "KD-Crowd minus its own teacher run (same seed), test accuracy at the validation-selected epoch:", "", kd_vs_teacher_table(t1)]
    if t2:
        md += ["### Table 2 — real crowds", "", "Test accuracy (%) at the validation-selected epoch:", "", paper_table(t2, "val_selected"),
               "Test accuracy (%) at the final epoch:", "", paper_table(t2, "final"), "Expertise error E_m:", "", paper_table(t2, "em"),
               "KD-Crowd minus its own teacher run:", "", kd_vs_teacher_table(t2)]
        if "CIFAR-10N" in t2:
            g = gap_closed(t2["CIFAR-10N"])
            md += [f"CIFAR-10N gap MV+DNN → clean closed by {ROWS[g['best']]} (the KD-Crowd row with the higher validation accuracy): "
                   f"({100 * g['kd']:.2f} − {100 * g['mv']:.2f}) / ({100 * g['clean']:.2f} − {100 * g['mv']:.2f}) = **{100 * g['closed']:.1f} %** (target ≥ 67 %); "
                   f"its teacher {ROWS[PAIRS[g['best']]]} alone closes {100 * g['teacher_closed']:.1f} %.", ""]
    for name, title in (("gpu5_ablation-cifar10n_suite", "CIFAR-10N (real), teacher Max-MIG"), ("gpu5_ablation-digits-maxmig-low-2_suite", "digits, Max-MIG low-expertise case 2 (synthetic), teacher Max-MIG")):
        if name in suites:
            md += [f"### Table 3 — ablations on {title}", "",
                   "Stage-1 variants share one teacher run per seed; the base is co-teaching + MIG-KL, one stage (`kdcrowd(maxmig) student=coteaching`). "
                   "Δ: paired over seeds, mean ± std (seeds with a gain / seeds, paired t-test verdict at p < 0.05).", "",
                   ablation_table(suites[name], "maxmig", "kdcrowd(maxmig) student=coteaching")]
    s2 = {k: suites[f"gpu5_stage2-init-{v}_suite"] for k, v in (("LabelMe", "labelme"), ("CIFAR-10N", "cifar10n")) if f"gpu5_stage2-init-{v}_suite" in suites}
    if s2:
        md += ["### Table 3b — stage 2's worker-matrix initialisation (Max-MIG teacher, library defaults otherwise)", "",
               "`majority vote` is Max-MIG's own initialisation (the default, `stage2_init=annotations`); `stage2_init=student` starts each "
               "worker's matrix from its confusion against the student's refined predictions.", "", stage2_init_table(s2)]
    return "\n".join(md)


def main() -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    files = sorted(RESULTS.glob("*suite*.json*")) + sorted(RESULTS.glob("*ablation*.json*"))
    files = list(dict.fromkeys(files))
    suites = {p.name.split(".")[0]: p for p in files}
    md = ["# Result tables (generated by `python benchmarks/report.py`; do not edit)", ""]
    md += [paper_tables(suites), "## Every suite file, every row", ""]
    md += [table(p) for p in files]
    (ROOT / "docs" / "results_tables.md").write_text("\n".join(md))
    panels = {k: suites[v] for k, v in {
        "CIFAR-10, sparse synthetic workers": "gpu5_table1-sparse_suite",
        "CIFAR-10, Max-MIG low-expertise 1": "gpu5_table1-maxmig-low-1_suite",
        "CIFAR-10N (real)": "gpu5_table2-cifar10n_suite",
        "LabelMe (real)": "gpu5_table2-labelme_suite",
    }.items() if v in suites}
    if panels:
        wanted = ["mv", "crowdlayer-mw", "maxmig", "kdcrowd(crowdlayer-mw)", "kdcrowd(maxmig)"]
        for p in memorization_figure(panels, wanted, FIGURES / "memorization"):
            print("wrote", p)
    for name, title in (("labelme", "LabelMe"), ("cifar10n", "CIFAR-10N")):
        key = f"gpu5_stage2-init-{name}_suite"
        if key in suites:
            for p in expertise_gap_figure(suites[key], FIGURES / f"expertise_gap_{name}", title):
                print("wrote", p)
    print("wrote docs/results_tables.md")


if __name__ == "__main__":
    main()
