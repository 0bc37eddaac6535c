"""The tables of docs/RESULTS.md §7e/§7g from a merged ``protocol.py`` file.

    python benchmarks/protocol_table.py benchmarks/results/protocol/cifar10n-worst-all.json
    python benchmarks/protocol_table.py benchmarks/results/protocol/cifar10n-worst-radam-all.json

Prints, for every run label, one markdown row: the seeds, the test accuracy (%) at the last
epoch and at the best validation epoch as mean ± standard deviation over the seeds, the range
of best epochs, and the mean paired gain over majority vote (``--baseline``: its run of the same
seed); rows by mean last-epoch accuracy, highest first. Then, for every KD-Crowd label, its gain
over the teacher run it distilled (its ``stages.teacher``, else the teacher's run of the same
seed), per seed, and over that teacher's best-validation epoch.
With ``--validation``, per label also its last-epoch validation accuracy and the paired
difference from the baseline's, on validation and on test: what a choice between two variants
is made on (validation) beside what it gives (test). With ``--stage NAME``, per KD-Crowd label
also that stage's accuracy (``student``, ``stage2`` or ``ensemble``, the two averaged: the
``stages`` of its rows) and its paired differences from the row's final predictor, on
validation (last epoch) and on test, and per seed its test accuracy exactly beside the
final predictor's and ``--baseline``'s.

Rounding: one decimal, half up, of the exact decimal value. Test accuracies are counts over the
test set (multiples of 1/4000 on the CIFAR-10N split), so a gain such as 5.25 points is exact and
reads +5.3; the mean and the differences are taken in ``Decimal`` for that reason (binary floats
would give 5.2499… → 5.2). Standard deviations are rounded the same way from the float value.
"""

from __future__ import annotations

import argparse
import json
import statistics
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np


def exact(x: float) -> Decimal:
    """``x`` as the decimal it was computed as: a float32 value (a validation accuracy the
    training loop computed in float32: 608/1000 stored as 0.6080000400543213) as float32's
    shortest decimal (0.608), any other (a test accuracy, a count over the test set) as its own."""
    f32 = np.float32(x)
    return Decimal(str(f32)) if float(f32) == x else Decimal(repr(float(x)))


def pct(x: float) -> Decimal:
    """An accuracy (a fraction) in percent, exactly as it was computed (:func:`exact`)."""
    return exact(x) * 100


def r1(x: Decimal | float, sign: bool = False) -> str:
    """One decimal, half up (``sign``: with + before a positive value, − before a negative one)."""
    v = Decimal(str(x)).quantize(Decimal("0.1"), ROUND_HALF_UP)
    s = f"{abs(v)}" if sign else f"{v}"
    return (("−" if Decimal(str(x)) < 0 else "+") + s) if sign else s.replace("-", "−")  # the sign of the value, not of its rounding (−0.04: −0.0)


def mean_std(xs: list[Decimal]) -> str:
    """``mean ± std`` (sample standard deviation) of percentages, or the value of one."""
    if len(xs) == 1:
        return r1(xs[0])
    return f"{r1(sum(xs) / len(xs))} ± {r1(statistics.stdev(float(x) for x in xs))}"


def seed_range(seeds: list[int]) -> str:
    """``0–4`` for consecutive seeds, else ``0,2,5``."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ",".join(map(str, seeds))


def by_label(runs: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """The runs by label and seed (the last row of a label and seed wins, as ``protocol.py --merge`` keeps)."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(r["label"], {})[r["seed"]] = r
    return out


def rows(merged: dict[str, Any], baseline: str = "mv") -> list[str]:
    """One markdown row per label, highest mean last-epoch test accuracy first."""
    by = by_label(merged["runs"])
    base = by.get(baseline, {})
    out = []
    for label, runs in by.items():
        seeds = sorted(runs)
        last = [pct(runs[s]["test_accuracy"]) for s in seeds]
        sel = [pct(runs[s]["test_accuracy_val_selected"]) for s in seeds]
        epochs = [runs[s]["best_epoch"] for s in seeds if runs[s].get("best_epoch") is not None]  # none: an ensemble of trained stages
        gains = [pct(runs[s]["test_accuracy"]) - pct(base[s]["test_accuracy"]) for s in seeds if s in base]
        gain = r1(sum(gains) / len(gains), sign=True) if gains and label != baseline else "–"
        span = "–" if not epochs else f"{min(epochs)}–{max(epochs)}" if min(epochs) != max(epochs) else f"{epochs[0]}"
        out.append((sum(last) / len(last), f"| {label} | {seed_range(seeds)} | {mean_std(last)} | {mean_std(sel)} | {span} | {gain} |"))
    return [row for _, row in sorted(out, key=lambda t: -t[0])]


def distilled_teacher(kd_row: dict[str, Any], teacher_row: dict[str, Any]) -> dict[str, Any]:
    """The teacher run a KD-Crowd row distilled: its own ``stages.teacher`` (the teacher it
    trained in its process, or the saved run it read), else the teacher's row of the same
    seed. Not the same thing where KD-Crowd trained its own teacher apart from the teacher's
    row (``protocol_parallel.sh``'s second phase): CUDA runs of one seed differ. Also
    ``protocol.py``'s summary pairing."""
    own = (kd_row.get("stages") or {}).get("teacher") or {}
    return own if own.get("test_accuracy") is not None else teacher_row


def kd_lines(merged: dict[str, Any]) -> list[str]:
    """Per KD-Crowd label: its paired gain over the teacher run it distilled, per seed, and
    over that teacher's best-validation epoch (the teacher KD-Crowd reloads)."""
    by = by_label(merged["runs"])
    out = []
    for label, runs in by.items():
        teacher = next(iter(runs.values())).get("teacher")
        if not teacher or teacher not in by:
            continue
        seeds = [s for s in sorted(runs) if s in by[teacher]]
        if not seeds:
            continue
        t = {s: distilled_teacher(runs[s], by[teacher][s]) for s in seeds}
        g = [pct(runs[s]["test_accuracy"]) - pct(t[s]["test_accuracy"]) for s in seeds]
        gv = [pct(runs[s]["test_accuracy"]) - pct(t[s]["test_accuracy_val_selected"]) for s in seeds]
        spread = f" ± {r1(statistics.stdev(float(x) for x in g))}" if len(g) > 1 else ""
        out.append(f"{label} over {teacher}, seeds {seed_range(seeds)}: {r1(sum(g) / len(g), sign=True)}{spread} "
                   f"({', '.join(r1(x, sign=True) for x in g)}: {sum(x > 0 for x in g)} of {len(g)}); "
                   f"over the teacher's best-validation epoch {', '.join(r1(x, sign=True) for x in gv)}")
    return out


def validation_lines(merged: dict[str, Any], baseline: str) -> list[str]:
    """Per label other than ``baseline``: its mean last-epoch validation accuracy, and its
    paired differences from ``baseline``'s run of the same seed on validation and on test
    (mean ± std, and on how many seeds it is higher, equal)."""
    by = by_label(merged["runs"])
    base = by.get(baseline, {})
    out = []

    for label, runs in by.items():
        seeds = [s for s in sorted(runs) if s in base and label != baseline and runs[s].get("val_last") is not None and base[s].get("val_last") is not None]
        if not seeds:
            continue
        val = [pct(runs[s]["val_last"]) for s in seeds]
        dv = [pct(runs[s]["val_last"]) - pct(base[s]["val_last"]) for s in seeds]
        dt = [pct(runs[s]["test_accuracy"]) - pct(base[s]["test_accuracy"]) for s in seeds]
        out.append(f"{label}, seeds {seed_range(seeds)}: validation {mean_std(val)}; minus {baseline}: validation {_diffs(dv)}, test {_diffs(dt)}")
    return out


def _diffs(xs: list[Decimal]) -> str:
    """``mean ± std`` of paired differences in points, and on how many seeds higher, equal."""
    spread = f" ± {r1(statistics.stdev(float(x) for x in xs))}" if len(xs) > 1 else ""
    return f"{r1(sum(xs) / len(xs), sign=True)}{spread} (higher on {sum(x > 0 for x in xs)}, equal on {sum(x == 0 for x in xs)} of {len(xs)})"


def stage_lines(merged: dict[str, Any], stage: str) -> list[str]:
    """Per label whose rows record ``stage`` (a KD-Crowd stage, or its ``ensemble``): that
    stage's last-epoch test and validation accuracy, and its paired differences from the
    row's final predictor (the run's own accuracies) on validation and on test."""
    out = []
    for label, runs in by_label(merged["runs"]).items():
        seeds = [s for s in sorted(runs) if (runs[s].get("stages") or {}).get(stage, {}).get("val_last") is not None and runs[s].get("val_last") is not None]
        if not seeds:
            continue
        st = {s: runs[s]["stages"][stage] for s in seeds}
        test = [pct(st[s]["test_accuracy"]) for s in seeds]
        val = [pct(st[s]["val_last"]) for s in seeds]
        dv = [pct(st[s]["val_last"]) - pct(runs[s]["val_last"]) for s in seeds]
        dt = [pct(st[s]["test_accuracy"]) - pct(runs[s]["test_accuracy"]) for s in seeds]
        finals = sorted({str(runs[s].get("final_stage")) for s in seeds})
        out.append(f"{label}, its {stage}, seeds {seed_range(seeds)}: test {mean_std(test)}, validation {mean_std(val)}; "
                   f"minus the final predictor ({', '.join(finals)}): validation {_diffs(dv)}, test {_diffs(dt)}")
    return out


def _exact_text(x: Decimal) -> str:
    """A percentage exactly, without trailing zeros (89.575, 88.9)."""
    return format(x.normalize(), "f")


def paired_summary(stage: list[Decimal], base: list[Decimal], target: float | None = None) -> str:
    """The exact means of paired accuracies (%) and of their differences, the differences'
    sample std, the 95 % interval of the mean difference (Student's t, n − 1 degrees of
    freedom) and, with ``target``, the t statistic of the mean against that gain."""
    from scipy import stats

    d = [float(a - b) for a, b in zip(stage, base)]
    n, mean = len(d), statistics.fmean(d)
    text = f"exactly: {_exact_text(sum(stage) / n)} against {_exact_text(sum(base) / n)}, difference {mean:+.3f}"
    if n < 2:
        return text.replace("-", "−")
    sd = statistics.stdev(d)
    half = float(stats.t.ppf(0.975, n - 1)) * sd / n ** 0.5
    text += f" (std {sd:.3f}); 95 % interval of the mean difference {mean - half:.2f} to {mean + half:.2f}"
    if target is not None:
        text += f"; t against {target:+g}: {(mean - target) / (sd / n ** 0.5):.2f}" if sd > 0 else ""
    return text.replace("-", "−")


def stage_seed_lines(merged: dict[str, Any], stage: str, baseline: str, target: float | None = None) -> list[str]:
    """Per label whose rows record ``stage``: per seed, that stage's last-epoch test accuracy
    exactly, the row's final predictor's, ``baseline``'s run of the same seed and the
    stage's difference from it (the per-seed table of docs/RESULTS.md §7g); then
    :func:`paired_summary` of the stage against ``baseline``."""
    base = by_label(merged["runs"]).get(baseline, {})
    out = []
    for label, runs in by_label(merged["runs"]).items():
        seeds = [s for s in sorted(runs) if ((runs[s].get("stages") or {}).get(stage) or {}).get("test_accuracy") is not None]
        if not seeds:
            continue
        parts, paired = [], []
        for s in seeds:
            t = pct(runs[s]["stages"][stage]["test_accuracy"])
            vs = ""
            if s in base:
                b = pct(base[s]["test_accuracy"])
                paired.append((t, b))
                vs = f", {baseline} {_exact_text(b)}: {'+' if t >= b else '−'}{_exact_text(abs(t - b))}"
            parts.append(f"seed {s}: {_exact_text(t)} (final {_exact_text(pct(runs[s]['test_accuracy']))}{vs})")
        line = f"{label}, its {stage}, test per seed: " + "; ".join(parts)
        if paired:
            st, bs = [t for t, _ in paired], [b for _, b in paired]
            line += f"; minus {baseline}: {_diffs([t - b for t, b in paired])}; {paired_summary(st, bs, target)}"
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("merged", type=Path, help="a file written by protocol.py --merge (or a protocol.py --out file)")
    ap.add_argument("--baseline", default="mv", help="the label each row's paired gain is over (default: mv)")
    ap.add_argument("--validation", action="store_true", help="also each label's last-epoch validation accuracy and its paired differences from --baseline")
    ap.add_argument("--stage", action="append", default=[], metavar="NAME",
                    help="also this KD-Crowd stage's accuracy (student, stage2, ensemble, ensemble-all) and its paired differences from each row's final predictor (repeatable)")
    ap.add_argument("--target-gain", type=float, default=None, metavar="POINTS",
                    help="with --stage: the t statistic of each stage's mean gain over --baseline against this gain (e.g. 1)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="only the runs of these seeds")
    args = ap.parse_args(argv)
    merged = json.loads(args.merged.read_text())
    if args.seeds is not None:
        merged["runs"] = [r for r in merged["runs"] if r["seed"] in set(args.seeds)]
    print("| method | seeds | test, last epoch | test, best validation epoch | best epoch | gain over " + args.baseline + ", last epoch (same seeds) |")
    print("|---|---|---|---|---|---|")
    print(*rows(merged, args.baseline), sep="\n")
    if kd := kd_lines(merged):
        print()
        print(*kd, sep="\n")
    if args.validation and (val := validation_lines(merged, args.baseline)):
        print()
        print(*val, sep="\n")
    for stage in args.stage:
        if lines := stage_lines(merged, stage) + stage_seed_lines(merged, stage, args.baseline, args.target_gain):
            print()
            print(*lines, sep="\n")


if __name__ == "__main__":
    main()
