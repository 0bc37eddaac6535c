"""The annot-mix benchmark's protocol on the crowds we have: every method, several seeds,
last-epoch and best-validation-epoch test accuracy side by side.

    PYTHONPATH=src python benchmarks/protocol.py --suite protocol-labelme --seeds 0 1 2 3 4 \
        --device cpu --out benchmarks/results/protocol/protocol-labelme.json

Suites (the anchor: Herde et al., ECAI 2024, `ies-research/multi-annotator-machine-learning`,
branch `annot-mix`, `conf/data/*.yaml`):

* ``protocol-labelme`` — LabelMe's 1,000 crowd-labelled images / 500 validation / 1,188
  test, frozen ImageNet EfficientNet-Lite0 features (1,280-d, 224 px, computed once and
  cached on disk), an MLP head, 50 epochs, batch 64 (the anchor: frozen DINOv2 ViT-S/14
  + MLP-128, 50 epochs, batch 64);
* ``protocol-cifar10n-worst`` — CIFAR-10N's ``worse_label`` with the worker who gave it, one
  label per image, ResNet-18 from scratch, 100 epochs, batch 128, our lossless 15 k / 1 k /
  4 k split (the anchor trains on all 50 k images);
* ``protocol-cifar10n`` — the same with the three labels per image.

Every seed runs every method; a crowd model's run of a seed is then the teacher that
KD-Crowd distils in that seed (``pretrained_teacher``), so KD-Crowd's gain over its
teacher is paired. KD-Crowd runs over the ``--kd-teachers`` (default: the three crowd
models with the highest mean last-epoch *validation* accuracy over the seeds run, never
test). The output JSON holds every run's metrics and a ``summary`` per method (mean and
sample std over seeds of the last-epoch and validation-selected test accuracy, the
last-epoch validation accuracy) and per KD-Crowd teacher (paired gain). Written after
every run, so an interrupted suite keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kdcrowd.data.datasets import CrowdDataset, load_dataset  # noqa: E402
from kdcrowd.cli import parse_key_values  # noqa: E402
from kdcrowd.io import write_json  # noqa: E402
from kdcrowd.methods import CROWD_MODELS, RunConfig, run_on_dataset, versions  # noqa: E402
from kdcrowd.training import TrainConfig  # noqa: E402

#: Aggregate-then-train methods (those present in this build).
AGGREGATES = ("mv", "ds", "glad", "mace", "wawa", "zbs", "one-coin-ds", "mmsr")

SUITES: dict[str, dict[str, Any]] = {
    "protocol-labelme": {"dataset": "labelme", "features": "efficientnet-lite0", "backbone": "mlp", "train": {"epochs": 50, "batch_size": 64}},
    "protocol-cifar10n-worst": {"dataset": "cifar10n", "dataset_options": {"labels": "worst"}, "backbone": "resnet18", "train": {"epochs": 100, "batch_size": 128}},
    "protocol-cifar10n": {"dataset": "cifar10n", "dataset_options": {"labels": "random"}, "backbone": "resnet18", "train": {"epochs": 100, "batch_size": 128}},
}


def available_methods() -> list[str]:
    """Every aggregate-then-train method and crowd model this build registers."""
    try:
        from kdcrowd.methods import method_names

        names = set(method_names())
    except ImportError:  # the method table of earlier builds
        from kdcrowd.methods import METHODS

        names = set(METHODS)
    return [m for m in AGGREGATES if m in names] + [m for m in CROWD_MODELS if m in names]


def load_suite_data(suite: dict[str, Any], root: str | None, device: str, seed: int) -> CrowdDataset:
    """The suite's data set; for frozen features, the images turned into cached features."""
    ds = load_dataset(suite["dataset"], root=root, seed=seed, **suite.get("dataset_options", {}))
    if suite.get("features"):
        from kdcrowd.models.pretrained import extract_features

        feats = {s: extract_features(getattr(ds, f"x_{s}"), suite["features"], device=device) for s in ("train", "val", "test")}
        ds = CrowdDataset(f"{ds.name}-{suite['features']}", feats["train"], feats["val"], feats["test"], ds.y_train, ds.y_val, ds.y_test,
                          ds.annotations, ds.class_names, info={**ds.info, "features": suite["features"]})
    return ds


def run_config(suite: dict[str, Any], train_hp: dict[str, Any], seed: int, method: str, options: dict[str, Any], device: str) -> RunConfig:
    """One run of a suite: ``method`` with ``options`` on seed ``seed`` with the suite's
    backbone and data set options and the training settings ``train_hp`` (the suite's
    ``train`` with the command line's overrides), without memorization tracking."""
    train = TrainConfig(seed=seed, device=device, progress=False, **train_hp)
    return RunConfig(dataset=suite["dataset"], method=method, backbone=suite["backbone"], seed=seed, train=train, options=options,
                     dataset_options=suite.get("dataset_options", {}), track_memorization=False)


def _stats(values: list[float]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def _val_accuracies(run: dict[str, Any]) -> dict[str, float | None]:
    """The last and the best validation accuracy in a run's (or a KD-Crowd stage's)
    ``history`` (what a stage's final-predictor rule, ``final``, can be compared on without
    reading test labels)."""
    vals = [float(h["val_accuracy"]) for h in run.get("history") or [] if h.get("val_accuracy") is not None]
    return {"val_last": vals[-1] if vals else None, "val_best": max(vals) if vals else None}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per label: last-epoch / validation-selected test accuracy and last-epoch validation
    accuracy over seeds; per KD-Crowd label: the paired gain over its teacher's run."""
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["label"], {})[r["seed"]] = r
    out: dict[str, Any] = {"methods": {}, "kd_gain": {}}
    for label, seeds in by.items():
        rs = list(seeds.values())
        out["methods"][label] = {
            "test_last": _stats([r.get("test_accuracy") for r in rs]),
            "test_val_selected": _stats([r.get("test_accuracy_val_selected") for r in rs]),
            "val_last": _stats([r.get("val_last") for r in rs]),
            "seeds": sorted(seeds),
        }
        teacher = rs[0].get("teacher")
        if teacher and teacher in by:
            diffs = [seeds[s]["test_accuracy"] - by[teacher][s]["test_accuracy"] for s in seeds if s in by[teacher]]
            out["kd_gain"][label] = {"teacher": teacher, "gain_last": _stats(diffs), "seeds_with_gain": sum(d > 0 for d in diffs), "n": len(diffs)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True, choices=sorted(SUITES))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="*", default=None, help="methods to run (default: every aggregate-then-train method and crowd model)")
    ap.add_argument("--kd-teachers", nargs="*", default=None, help="KD-Crowd teachers (default: the 3 best crowd models by mean last-epoch validation accuracy)")
    ap.add_argument("--n-teachers", type=int, default=3)
    ap.add_argument("--kd-variants", nargs="*", default=[], help='extra KD-Crowd variants over the first KD teacher, each KEY=VALUE[,KEY=VALUE] of KDCrowd options (e.g. kd=kl kd_prior=teacher)')
    ap.add_argument("--no-clean", action="store_true", help="skip the true-label ceiling")
    ap.add_argument("--epochs", type=int, default=None, help="override the suite's epochs (smoke runs only)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: TrainConfig's)")
    ap.add_argument("--weight-decay", type=float, default=None, help="weight decay (default: TrainConfig's)")
    ap.add_argument("--optimizer", default=None, help="adamw, sgd or radam (default: TrainConfig's)")
    ap.add_argument("--options", nargs="*", default=[], metavar="METHOD:KEY=VALUE[,KEY=VALUE]",
                    help="options of a method's runs (values read as JSON where they parse, e.g. annot-mix:joint_pass=true); "
                         "the runs are labelled 'METHOD KEY=VALUE ...'")
    ap.add_argument("--backbone", default=None, help="override the suite's backbone (e.g. mlp-128 on protocol-labelme)")
    ap.add_argument("--root", default=None, help="data root (else $KDCROWD_DATA)")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="combine these result files (parts run in parallel) into --out, and stop")
    ap.add_argument("--best-teachers", action="store_true", help="with --merge: print the --n-teachers best crowd models by mean last-epoch validation accuracy")
    args = ap.parse_args()
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        merged = {**parts[0], "command": " ".join(sys.argv), "parts": [p.get("command") for p in parts], "runs": [r for p in parts for r in p["runs"]]}
        merged["summary"] = summarise(merged["runs"])
        merged["wall_seconds"] = max(p.get("wall_seconds", 0.0) for p in parts)
        write_json(args.out, merged)
        if args.best_teachers:
            ms = merged["summary"]["methods"]
            ranked = sorted((m for m in ms if m in CROWD_MODELS), key=lambda m: -(ms[m]["val_last"]["mean"] or 0.0))
            print(" ".join(ranked[: args.n_teachers]))
        return

    suite = dict(SUITES[args.suite])
    if args.backbone:
        suite["backbone"] = args.backbone
    method_opts: dict[str, dict[str, Any]] = {}
    for spec in args.options:
        name, _, kvs = spec.partition(":")
        method_opts.setdefault(name, {}).update(parse_key_values(kvs.split(","), "--options"))
    train_hp = dict(suite["train"])
    if args.epochs:
        train_hp["epochs"] = args.epochs
    if args.lr is not None:
        train_hp["lr"] = args.lr
    if args.weight_decay is not None:
        train_hp["weight_decay"] = args.weight_decay
    if args.optimizer is not None:
        train_hp["optimizer"] = args.optimizer
    methods = args.methods if args.methods is not None else available_methods()
    if not args.no_clean:
        methods = ["clean", *methods]
    t0 = time.perf_counter()
    out: dict[str, Any] = {"suite": args.suite, "settings": {**suite, "train": train_hp}, "command": " ".join(sys.argv), "versions": versions(), "runs": []}
    teachers: dict[tuple[int, str], Any] = {}
    teacher_labels: dict[str, str] = {}  # a crowd model's row label (with its --options), for the KD-Crowd rows over it
    data: dict[int, CrowdDataset] = {}

    def one(ds: CrowdDataset, seed: int, method: str, label: str, options: dict[str, Any], pre: Any = None) -> dict[str, Any]:
        cfg = run_config(suite, train_hp, seed, method, options, args.device)
        t = time.perf_counter()
        metrics, output = run_on_dataset(ds, cfg, pretrained_teacher=pre)
        if method in CROWD_MODELS:
            teachers[(seed, method)] = (output.module.model, output.fit)
            teacher_labels[method] = label
        row = {k: metrics.get(k) for k in ("method", "seed", "test_accuracy", "test_accuracy_val_selected", "best_epoch", "train_label_accuracy",
                                           "aggregated_label_accuracy", "final_stage", "seconds", "train_seconds", "device")}
        row.update(label=label, val_last=_val_accuracies(metrics)["val_last"], teacher=teacher_labels.get(options.get("teacher"), options.get("teacher")), options=options,
                   stages={k: {**{kk: v.get(kk) for kk in ("test_accuracy", "test_accuracy_val_selected", "best_epoch")}, **_val_accuracies(v)}
                           for k, v in (metrics.get("stages") or {}).items()})
        out["runs"].append(row)
        out["summary"] = summarise(out["runs"])
        out["wall_seconds"] = time.perf_counter() - t0
        write_json(args.out, out)
        print(f"[{time.perf_counter() - t0:7.1f}s] seed {seed} {label:<28} test last {row['test_accuracy']:.4f} "
              f"val-sel {row['test_accuracy_val_selected']:.4f} val last {row['val_last'] or float('nan'):.4f} ({time.perf_counter() - t:.1f}s)", flush=True)
        return row

    for seed in args.seeds:
        data[seed] = ds = load_suite_data(suite, args.root, args.device, seed)
        for m in methods:
            opts = method_opts.get(m, {})
            one(ds, seed, m, " ".join([m, *(f"{k}={json.dumps(v)}" for k, v in opts.items())]), opts)
    if args.kd_teachers is not None:
        kd_teachers = args.kd_teachers
    else:
        ranked = sorted((m for m in methods if m in CROWD_MODELS), key=lambda m: -(out["summary"]["methods"][m]["val_last"]["mean"] or 0.0))
        kd_teachers = ranked[: args.n_teachers]
    out["kd_teachers"] = kd_teachers
    variants = [dict(kv.split("=", 1) for kv in v.split(",")) for v in args.kd_variants]
    for seed in args.seeds:
        for t in kd_teachers:
            one(data[seed], seed, "kdcrowd", f"kdcrowd({t})", {"teacher": t}, pre=teachers.get((seed, t)))
        for v in variants if kd_teachers else []:
            label = f"kdcrowd({kd_teachers[0]}) " + " ".join(f"{k}={x}" for k, x in v.items())
            one(data[seed], seed, "kdcrowd", label, {"teacher": kd_teachers[0], **v}, pre=teachers.get((seed, kd_teachers[0])))
    print(json.dumps({"out": str(args.out), "wall_seconds": time.perf_counter() - t0, "runs": len(out["runs"]), "kd_teachers": kd_teachers}))


if __name__ == "__main__":
    main()
