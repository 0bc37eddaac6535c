"""An ensemble of one method's seeds, from the probabilities ``protocol.py --save-proba``
saved: the baseline that an ensemble of KD-Crowd's networks is compared with at equal
number of networks (KD-Crowd's ``ensemble`` averages two, ``ensemble-all`` three; one more
with a co-teaching student).

    python benchmarks/seed_ensemble.py --proba benchmarks/results/protocol/cifar10n-all3-seeds*/proba \\
        --label annot-mix --size 3 --compare benchmarks/results/protocol/cifar10n-all3-all.json \\
        --stage ensemble-all --out benchmarks/results/protocol/cifar10n-all3-seed-ensemble.json

A seed saved in several ``--proba`` folders is read from the last of them, as ``protocol.py
--merge`` keeps the last part's row of a seed (name the folders in the merge's order).

For each seed s of ``--seeds`` (default: every seed with a file, ascending), the ensemble of
``--size`` seeds starting at s, cyclically in the seeds' order (size 3 over seeds 0–9: {0,1,2}, {1,2,3},
…, {9,0,1}), so every seed is a member ``--size`` times and the ensemble of seed s holds
seed s's own network, as KD-Crowd's ensemble of seed s holds its teacher of seed s. Its
accuracy is the argmax of the mean softmax of the members' last-epoch predictions, on the
test and on the validation items. With ``--compare`` (a ``protocol.py --merge`` file), each
row recording ``--stage`` is paired with it by seed (last-epoch test and validation accuracy;
no interval of the mean difference, since neighbouring seed ensembles share members).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import proba_file  # noqa: E402
from protocol_table import _diffs, by_label, mean_std, pct  # noqa: E402


def load_probabilities(folders: list[Path], label: str, seeds: list[int] | None) -> dict[int, dict[str, np.ndarray]]:
    """The saved arrays of ``label``'s runs by seed (every seed with a file when ``seeds`` is
    None); a named seed without one is an error. A seed with a file in several folders is
    read from the last of them, as ``protocol.py --merge`` and ``protocol_table.by_label`` keep
    the last part's row of a label and seed: name the folders in the order of the merge."""
    found: dict[int, dict[str, np.ndarray]] = {}
    for folder in folders:
        for path in sorted(folder.glob("*_seed*.npz")):
            stem, _, seed = path.stem.rpartition("_seed")
            if seed.isdigit() and path == proba_file(folder, label, int(seed)):  # a later folder's file replaces an earlier one's
                with np.load(path) as z:
                    found[int(seed)] = {k: z[k] for k in z.files}
    found = dict(sorted(found.items()))
    if seeds is not None:
        if len(set(seeds)) < len(seeds):
            raise SystemExit(f"--seeds: a seed named twice ({' '.join(map(str, seeds))}): each seed's network is one member")
        if missing := [s for s in seeds if s not in found]:
            raise SystemExit(f"--seeds: no saved probabilities of '{label}' for seed(s) {', '.join(map(str, missing))} in {', '.join(map(str, folders))}")
        found = {s: found[s] for s in seeds}  # in the order given: the windows follow it
    if not found:
        raise SystemExit(f"--proba: no saved probabilities of '{label}' in {', '.join(map(str, folders))}")
    first_seed, first = next(iter(found.items()))
    for s, a in found.items():
        if lacking := [k for k in ("test", "val", "y_test", "y_val") if k not in a]:
            raise SystemExit(f"seed {s}'s file has no {', '.join(lacking)}: not written by protocol.py --save-proba")
        if not (np.array_equal(a["y_test"], first["y_test"]) and np.array_equal(a["y_val"], first["y_val"])):
            raise SystemExit(f"seed {s}'s test or validation items differ from seed {first_seed}'s: an ensemble needs the same items")
    return found


def seed_ensembles(probs: dict[int, dict[str, np.ndarray]], size: int) -> dict[int, dict[str, Any]]:
    """Per seed, the ensemble of ``size`` seeds from it on, cyclically: its members and its
    test and validation accuracy (the mean softmax's argmax)."""
    seeds = list(probs)
    if not 1 <= size <= len(seeds):
        raise SystemExit(f"--size {size}: between 1 and the {len(seeds)} seeds with saved probabilities")
    out = {}
    for i, s in enumerate(seeds):
        members = [seeds[(i + j) % len(seeds)] for j in range(size)]
        acc = {split: float(np.mean(np.mean([probs[m][split] for m in members], axis=0).argmax(1) == probs[s][f"y_{split}"])) for split in ("test", "val")}
        out[s] = {"members": members, "test_accuracy": acc["test"], "val_accuracy": acc["val"]}
    return out


def compare(merged: dict[str, Any], stage: str, ensembles: dict[int, dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Per label whose rows record ``stage``, on the seeds both have: the paired test and
    validation differences of the stage from the seed ensemble, and the text lines.

    No interval of the mean difference: the seed ensembles of neighbouring seeds share
    members (size 3: two of three), so their accuracies are correlated and a Student-t
    interval, which takes the pairs as independent, would be too narrow."""
    out = []
    for label, runs in by_label(merged["runs"]).items():
        seeds = [s for s in sorted(runs) if s in ensembles and ((runs[s].get("stages") or {}).get(stage) or {}).get("test_accuracy") is not None
                 and runs[s]["stages"][stage].get("val_last") is not None]
        if not seeds:
            continue
        st = {s: runs[s]["stages"][stage] for s in seeds}
        test, base = [pct(st[s]["test_accuracy"]) for s in seeds], [pct(ensembles[s]["test_accuracy"]) for s in seeds]
        val, bval = [pct(st[s]["val_last"]) for s in seeds], [pct(ensembles[s]["val_accuracy"]) for s in seeds]
        exact_diff = f"{statistics.fmean(float(a - b) for a, b in zip(test, base)):+.3f}".replace("-", "−")
        text = (f"{label}, its {stage}, seeds {','.join(map(str, seeds))}: test {mean_std(test)} against {name} {mean_std(base)}, "
                f"minus it {_diffs([a - b for a, b in zip(test, base)])}, exactly {exact_diff}; "
                f"validation {mean_std(val)} against {mean_std(bval)}, minus it {_diffs([a - b for a, b in zip(val, bval)])}")
        out.append({"label": label, "stage": stage, "seeds": seeds, "test": [float(x) for x in test], "baseline_test": [float(x) for x in base],
                    "val": [float(x) for x in val], "baseline_val": [float(x) for x in bval], "text": text})
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proba", nargs="+", type=Path, required=True, metavar="DIR",
                    help="folders written by protocol.py --save-proba; a seed saved in several is read from the last, "
                         "as protocol.py --merge keeps the last part's row (name them in the merge's order)")
    ap.add_argument("--label", required=True, help="the runs' label (a method, e.g. annot-mix)")
    ap.add_argument("--size", type=int, required=True, help="seeds in each ensemble")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="these seeds, in this order (default: every seed with a file, ascending)")
    ap.add_argument("--compare", type=Path, default=None, metavar="MERGED", help="a protocol.py --merge file whose rows record --stage")
    ap.add_argument("--stage", default="ensemble-all", help="with --compare: the KD-Crowd stage paired with the seed ensemble (default: ensemble-all)")
    ap.add_argument("--out", type=Path, default=None, help="write the ensembles (and the comparison) as JSON")
    args = ap.parse_args(argv)
    probs = load_probabilities(args.proba, args.label, args.seeds)
    ens = seed_ensembles(probs, args.size)
    name = f"{args.label} × {args.size} seeds"
    test, val = [pct(e["test_accuracy"]) for e in ens.values()], [pct(e["val_accuracy"]) for e in ens.values()]
    single = [pct(float(np.mean(p["test"].argmax(1) == p["y_test"]))) for p in probs.values()]
    print(f"{name}, seeds {','.join(map(str, ens))}: test {mean_std(test)} (one seed: {mean_std(single)}; gain {_diffs([a - b for a, b in zip(test, single)])}), "
          f"validation {mean_std(val)}")
    result: dict[str, Any] = {"command": " ".join(["seed_ensemble.py", *(argv if argv is not None else sys.argv[1:])]), "label": args.label, "size": args.size,
                              "ensembles": {str(s): e for s, e in ens.items()},
                              "summary": {"test": statistics.fmean(float(x) for x in test), "val": statistics.fmean(float(x) for x in val),
                                          "single_test": statistics.fmean(float(x) for x in single)}}
    if args.compare is not None:
        result["comparison"] = compare(json.loads(args.compare.read_text()), args.stage, ens, name)
        if not result["comparison"]:
            raise SystemExit(f"--compare {args.compare}: no row records stage '{args.stage}' on these seeds")
        for c in result["comparison"]:
            print(c["text"])
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
