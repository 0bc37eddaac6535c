"""The annot-mix benchmark's protocol on the crowds we have: every method, several seeds,
last-epoch and best-validation-epoch test accuracy side by side.

    PYTHONPATH=src python benchmarks/protocol.py --suite protocol-labelme --seeds 0 1 2 3 4 \\
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

A teacher and KD-Crowd over it in two processes (two device calls: three 100-epoch
ResNet-18 runs do not fit one 600-s call), through the teacher's outputs
(:class:`kdcrowd.teacher_outputs.TeacherOutputs`: its predictions on the training items, its
matrices, its best validation accuracy; about 1 MB for CIFAR-10N's 15 k items):

* ``--save-teacher-outputs DIR``: every crowd-model run of the invocation (each may be a
  teacher) writes ``DIR/<method>_seed<S>.npz`` and its row, ``DIR/<method>_seed<S>.json``;
* ``--teacher-outputs DIR`` (with ``--kd-teachers T ...``): the KD-Crowd rows over ``T`` read
  ``DIR/T_seed<S>.npz`` instead of training a teacher, and ``T``'s own row of the seed is
  its saved row (``from_file`` names the file; ``T`` is not trained again even if
  ``--methods`` names it), so the paired gain is still computed. The file must be of the
  teacher this run would train (data, seed, options, training settings; a difference is
  refused, naming it). The student and stage 2 give the numbers they give over the teacher
  in one process, to the bit; ``stage2=finetune`` needs the teacher module and is refused.

    # call 1: the teachers
    PYTHONPATH=src python benchmarks/protocol.py --suite protocol-cifar10n-worst --seeds 0 --methods annot-mix \\
        --kd-teachers --no-clean --device cuda --root .data --out $OUT/teachers_0.json --save-teacher-outputs $OUT/teachers
    # call 2, with $OUT/teachers carried back as benchmarks/results/protocol/teachers/cifar10n-worst
    PYTHONPATH=src python benchmarks/protocol.py --suite protocol-cifar10n-worst --seeds 0 --methods \\
        --kd-teachers annot-mix --no-clean --device cuda --root .data --out $OUT/kd_0.json \\
        --teacher-outputs benchmarks/results/protocol/teachers/cifar10n-worst

``--save-proba DIR``: every run also writes its predictor's last-epoch validation and test
probabilities, ``DIR/<label>_seed<S>.npz`` (about 0.2 MB on CIFAR-10N), for what is computed
after the runs, such as an ensemble of a method's seeds (``benchmarks/seed_ensemble.py``).

``--merge`` keeps the rows of both calls; a saved teacher row is dropped where the run it
was saved from is among the merged rows, and ``teacher_rows_from_files`` lists those kept.
A run found more than once (trained in two parts, or trained and saved) is listed in
``repeated_runs`` with its test accuracies, ``same`` or ``differ``. Parts whose ``settings``
differ (dataset, backbone, optimiser, learning rate, epochs, ...) are refused, naming the
setting and the files; only the training settings that change no number (CUDA graphs,
progress, checkpoints) may differ, and the merged file states the first part's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kdcrowd.data.datasets import CrowdDataset, load_dataset  # noqa: E402
from protocol_table import distilled_teacher  # noqa: E402  (the pairing the tables use)
from kdcrowd.checkpoint import NOT_FINGERPRINTED, differences  # noqa: E402
from kdcrowd.cli import parse_key_values  # noqa: E402
from kdcrowd.io import write_json  # noqa: E402
from kdcrowd.methods import CROWD_MODELS, RunConfig, run_on_dataset, teacher_fingerprint_of, teacher_outputs_of, versions  # noqa: E402
from kdcrowd.teacher_outputs import TeacherOutputs  # noqa: E402
from kdcrowd.training import TrainConfig  # noqa: E402

#: Aggregate-then-train methods (those present in this build).
AGGREGATES = ("mv", "ds", "glad", "mace", "wawa", "zbs", "one-coin-ds", "mmsr")

SUITES: dict[str, dict[str, Any]] = {
    "protocol-labelme": {"dataset": "labelme", "features": "efficientnet-lite0", "backbone": "mlp", "train": {"epochs": 50, "batch_size": 64}},
    "protocol-cifar10n-worst": {"dataset": "cifar10n", "dataset_options": {"labels": "worst"}, "backbone": "resnet18", "train": {"epochs": 100, "batch_size": 128}},
    "protocol-cifar10n": {"dataset": "cifar10n", "dataset_options": {"labels": "random"}, "backbone": "resnet18", "train": {"epochs": 100, "batch_size": 128}},
    # Not the anchor's protocol: protocol-cifar10n-worst's labels on frozen EfficientNet-Lite0
    # features of the 32 px images (an MLP head, CPU-sized), to study a method's behaviour on
    # this crowd (338 workers on the 15 k training images, one label per image) without the device.
    "diag-cifar10n-worst-features": {"dataset": "cifar10n", "dataset_options": {"labels": "worst"}, "features": "efficientnet-lite0", "backbone": "mlp",
                                     "train": {"epochs": 100, "batch_size": 128}},
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


def suite_settings(name: str, backbone: str | None = None, **train: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Suite ``name``'s settings, with another ``backbone`` if given, and its training settings
    with the overrides in ``train`` that are not ``None``."""
    suite = dict(SUITES[name])
    if backbone:
        suite["backbone"] = backbone
    return suite, {**suite["train"], **{k: v for k, v in train.items() if v is not None}}


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
    reading test labels). A stage without a history (KD-Crowd's ``ensemble``, which trains
    nothing) records both itself."""
    vals = [float(h["val_accuracy"]) for h in run.get("history") or [] if h.get("val_accuracy") is not None]
    if not vals:
        return {"val_last": run.get("val_last"), "val_best": run.get("val_best")}
    return {"val_last": vals[-1], "val_best": max(vals)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per label: last-epoch / validation-selected test accuracy and last-epoch validation
    accuracy over seeds; per KD-Crowd label: the paired gain over the teacher run it distilled
    (:func:`distilled_teacher`)."""
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
            diffs = [seeds[s]["test_accuracy"] - distilled_teacher(seeds[s], by[teacher][s])["test_accuracy"] for s in seeds if s in by[teacher]]
            out["kd_gain"][label] = {"teacher": teacher, "gain_last": _stats(diffs), "seeds_with_gain": sum(d > 0 for d in diffs), "n": len(diffs)}
    return out


def proba_file(folder: Path, label: str, seed: int) -> Path:
    """Where ``--save-proba`` writes a run's probabilities: ``<folder>/<label>_seed<seed>.npz``,
    the label's spaces, ``=`` and ``/`` as ``_`` (``kdcrowd(annot-mix)_student_mixup_seed0.npz``)."""
    return folder / f"{label.replace(' ', '_').replace('=', '_').replace('/', '_')}_seed{seed}.npz"


def save_probabilities(path: Path, output: Any, train: TrainConfig) -> None:
    """The run's predictor's class probabilities of the validation and test items in its
    last-epoch state (``val``, ``test``, float32) and the items' labels (``y_val``,
    ``y_test``), for what needs a run's predictions after the run (an ensemble of seeds).
    The module is left in its validation-selected state, as the runner leaves it."""
    import numpy as np

    from kdcrowd.training import predict_proba

    module, data = output.module, output.data
    arrays: dict[str, np.ndarray] = {}
    module.load_state_dict(output.fit.final_state, strict=False)
    for split in ("val", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if x is not None and y is not None:
            arrays[split] = predict_proba(module, data, x, train).cpu().numpy().astype(np.float32)
            arrays[f"y_{split}"] = y.cpu().numpy() if hasattr(y, "cpu") else np.asarray(y)
    module.load_state_dict(output.fit.best_state, strict=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def teacher_files(folder: Path, method: str, seed: int) -> tuple[Path, Path]:
    """A teacher's saved outputs and its row: ``<folder>/<method>_seed<seed>.npz`` and ``.json``."""
    stem = folder / f"{method}_seed{seed}"
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def merge_runs(parts: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of ``parts``, without a teacher row read from a file (``from_file``) where
    the run it was saved from is among them (the trained row is kept; :func:`repeated_runs`
    compares the two), or where another part read a row of that label and seed from a file
    before; and the teacher rows from files that were kept (``"<label> seed <S>: <file>"``)."""
    runs = [r for p in parts for r in p["runs"]]
    seen = {(r["label"], r["seed"]) for r in runs if not r.get("from_file")}
    out = []
    for r in runs:
        key = (r["label"], r["seed"])
        if r.get("from_file"):
            if key in seen:  # the trained row is there, or a saved row read by another part
                continue
            seen.add(key)
        out.append(r)
    return out, [f"{r['label']} seed {r['seed']}: {r['from_file']}" for r in out if r.get("from_file")]


def repeated_runs(runs: list[dict[str, Any]]) -> list[str]:
    """The (label, seed) runs found more than once in the rows of all parts, before
    :func:`merge_runs` drops any, with their test accuracies in order: each trained row, and
    each teacher row read from a file (once per file, marked ``(from <file>)``); ``summarise``
    keeps the last trained row, so a KD-Crowd row pairs with the teacher run of its own
    process when that part comes last: ``"<label> seed <S>: a, b (same)"``, ``(differ)``
    where the accuracies are not all equal."""
    acc: dict[tuple[str, int], list[tuple[Any, str]]] = {}
    files: set[tuple[str, int, str]] = set()
    for r in runs:
        key = (r["label"], r["seed"])
        if (f := r.get("from_file")) is not None:
            if (*key, f) in files:  # the same saved row, read by another part
                continue
            files.add((*key, f))
        acc.setdefault(key, []).append((r.get("test_accuracy"), f"{r.get('test_accuracy')} (from {f})" if f is not None else str(r.get("test_accuracy"))))
    return [f"{label} seed {seed}: {', '.join(t for _, t in a)} ({'same' if len({v for v, _ in a}) == 1 else 'differ'})"
            for (label, seed), a in acc.items() if len(a) > 1]


def settings_differences(parts: list[dict[str, Any]], names: list[Path]) -> list[str]:
    """How each part's ``settings`` differ from the first part's (``"<file>: key: a → b"``),
    leaving out the training settings that change no number (:data:`NOT_FINGERPRINTED`:
    CUDA graphs, the progress bar, checkpoints), which the parts may differ in."""
    skip = [f"train.{k}" for k in NOT_FINGERPRINTED]
    first = parts[0].get("settings") or {}
    return [f"{name}: {d}" for name, part in zip(names[1:], parts[1:]) for d in differences(first, part.get("settings") or {}, skip=skip)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True, choices=sorted(SUITES))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="*", default=None, help="methods to run (default: every aggregate-then-train method and crowd model)")
    ap.add_argument("--kd-teachers", nargs="*", default=None, help="KD-Crowd teachers (default: the 3 best crowd models by mean last-epoch validation accuracy)")
    ap.add_argument("--n-teachers", type=int, default=3)
    ap.add_argument("--kd-variants", nargs="*", default=[], help='extra KD-Crowd variants over the first KD teacher, each KEY=VALUE[,KEY=VALUE] of KDCrowd options (e.g. kd=kl kd_prior=teacher)')
    ap.add_argument("--kd-options", default="", metavar="KEY=VALUE[,KEY=VALUE]",
                    help="KDCrowd options of every KD-Crowd row over the --kd-teachers (values read as JSON where they parse, e.g. student=mixup); "
                         "the rows are labelled 'kdcrowd(T) KEY=VALUE ...'")
    ap.add_argument("--no-clean", action="store_true", help="skip the true-label ceiling")
    ap.add_argument("--epochs", type=int, default=None, help="override the suite's epochs (smoke runs only)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: TrainConfig's)")
    ap.add_argument("--weight-decay", type=float, default=None, help="weight decay (default: TrainConfig's)")
    ap.add_argument("--optimizer", default=None, help="adamw, sgd or radam (default: TrainConfig's)")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="TrainConfig.cuda_graph: the backbone's training passes as CUDA graphs (about 2x faster steps on the H200, "
                         "benchmarks/results/check_cuda_graph.json); not part of a teacher file's fingerprint (eager and graphed runs give the same digits), so either reads the other's")
    ap.add_argument("--options", nargs="*", default=[], metavar="METHOD:KEY=VALUE[,KEY=VALUE]",
                    help="options of a method's runs (values read as JSON where they parse, e.g. annot-mix:joint_pass=true); "
                         "the runs are labelled 'METHOD KEY=VALUE ...'")
    ap.add_argument("--backbone", default=None, help="override the suite's backbone (e.g. mlp-128 on protocol-labelme)")
    ap.add_argument("--root", default=None, help="data root (else $KDCROWD_DATA)")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="combine these result files (parts run in parallel) into --out, and stop")
    ap.add_argument("--best-teachers", action="store_true", help="with --merge: print the --n-teachers best crowd models by mean last-epoch validation accuracy")
    ap.add_argument("--save-teacher-outputs", type=Path, default=None, metavar="DIR",
                    help="every crowd-model run writes its outputs as a KD-Crowd teacher's, DIR/<method>_seed<S>.npz, and its row, DIR/<method>_seed<S>.json")
    ap.add_argument("--save-proba", type=Path, default=None, metavar="DIR",
                    help="every run writes its predictor's last-epoch validation and test probabilities and the labels, DIR/<label>_seed<S>.npz (for an ensemble of seeds)")
    ap.add_argument("--teacher-outputs", type=Path, default=None, metavar="DIR",
                    help="KD-Crowd over each --kd-teachers T reads DIR/T_seed<S>.npz instead of training T, and T's row of the seed is DIR/T_seed<S>.json")
    args = ap.parse_args(argv)
    command = " ".join(sys.argv if argv is None else ["protocol.py", *argv])
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        other = [f"{p} ({part.get('suite')})" for p, part in zip(args.merge, parts) if part.get("suite") != args.suite]
        if other:  # a job of a queue may name its own --suite; its rows are not this suite's
            ap.error(f"--merge: not --suite {args.suite}: {', '.join(map(str, other))}")
        if differ := settings_differences(parts, args.merge):  # the merged file states one set: the first part's
            raise SystemExit(f"--merge: parts trained with other settings than {args.merge[0]}'s: " + "; ".join(differ))
        runs, from_files = merge_runs(parts)
        merged = {**parts[0], "command": command, "parts": [p.get("command") for p in parts], "runs": runs}
        for key in ("teacher_outputs", "teacher_rows_from_files", "repeated_runs"):  # the first part's, if it is a merge: set again below
            merged.pop(key, None)
        if from_files:
            merged["teacher_rows_from_files"] = from_files
        if repeated := repeated_runs([r for p in parts for r in p["runs"]]):
            merged["repeated_runs"] = repeated
        merged["summary"] = summarise(merged["runs"])
        merged["wall_seconds"] = max(p.get("wall_seconds", 0.0) for p in parts)
        write_json(args.out, merged)
        if args.best_teachers:
            ms = merged["summary"]["methods"]
            ranked = sorted((m for m in ms if m in CROWD_MODELS), key=lambda m: -(ms[m]["val_last"]["mean"] or 0.0))
            print(" ".join(ranked[: args.n_teachers]))
        return

    suite, train_hp = suite_settings(args.suite, args.backbone, epochs=args.epochs or None, lr=args.lr, weight_decay=args.weight_decay,
                                     optimizer=args.optimizer, cuda_graph=args.cuda_graph or None)
    method_opts: dict[str, dict[str, Any]] = {}
    for spec in args.options:
        name, _, kvs = spec.partition(":")
        method_opts.setdefault(name, {}).update(parse_key_values(kvs.split(","), "--options"))
    methods = args.methods if args.methods is not None else available_methods()
    if args.teacher_outputs is not None:
        if args.kd_teachers is None:
            ap.error("--teacher-outputs reads the outputs of the --kd-teachers: name them")
        missing = [str(f) for seed in args.seeds for t in args.kd_teachers for f in teacher_files(args.teacher_outputs, t, seed) if not f.exists()]
        if missing:
            ap.error(f"--teacher-outputs {args.teacher_outputs}: no {', '.join(missing)} (written by a run with --save-teacher-outputs)")
        methods = [m for m in methods if m not in args.kd_teachers]  # their rows are the saved ones
        finals = [args.kd_options, *args.kd_variants]
        if any("final=ensemble-all" in v.replace(" ", "").split(",") for v in finals):  # refused by KD-Crowd too, but only after --methods trained
            ap.error("--teacher-outputs: final=ensemble-all averages the teacher's network, and saved outputs hold its predictions, not the module: "
                     "train the teacher in the same run (no --teacher-outputs)")
    if not args.no_clean:
        methods = ["clean", *methods]
    t0 = time.perf_counter()
    out: dict[str, Any] = {"suite": args.suite, "settings": {**suite, "train": train_hp}, "command": command, "versions": versions(), "runs": []}
    if args.teacher_outputs is not None:
        out["teacher_outputs"] = str(args.teacher_outputs)
    teachers: dict[tuple[int, str], Any] = {}
    teacher_labels: dict[str, str] = {}  # a crowd model's row label (with its --options), for the KD-Crowd rows over it
    data: dict[int, CrowdDataset] = {}

    def add(row: dict[str, Any]) -> None:
        out["runs"].append(row)
        out["summary"] = summarise(out["runs"])
        out["wall_seconds"] = time.perf_counter() - t0
        write_json(args.out, out)

    def kd_options(teacher: str, variant: dict[str, Any] | None = None) -> dict[str, Any]:
        """KD-Crowd's options over ``teacher``: its teacher options are the teacher run's
        (``--options``), so that stage 2 rebuilds the crowd model the teacher is."""
        return {"teacher": teacher, **method_opts.get(teacher, {}), **(variant or {})}

    def one(ds: CrowdDataset, seed: int, method: str, label: str, options: dict[str, Any], pre: Any = None,
            saved: tuple[Path, TeacherOutputs] | None = None) -> dict[str, Any]:
        cfg = run_config(suite, train_hp, seed, method, options, args.device)
        t = time.perf_counter()
        metrics, output = run_on_dataset(ds, cfg, pretrained_teacher=pre, teacher_outputs=None if saved is None else saved[1])
        if method in CROWD_MODELS:
            teachers[(seed, method)] = (output.module.model, output.fit)
            teacher_labels[method] = label
        row = {k: metrics.get(k) for k in ("method", "seed", "test_accuracy", "test_accuracy_val_selected", "best_epoch", "train_label_accuracy",
                                           "aggregated_label_accuracy", "final_stage", "seconds", "train_seconds", "device")}
        row.update(label=label, val_last=_val_accuracies(metrics)["val_last"], teacher=teacher_labels.get(options.get("teacher"), options.get("teacher")), options=options,
                   stages={k: {**{kk: v.get(kk) for kk in ("test_accuracy", "test_accuracy_val_selected", "best_epoch")}, **_val_accuracies(v)}
                           for k, v in (metrics.get("stages") or {}).items()})
        if saved is not None:
            row["teacher_outputs"] = str(saved[0])
        add(row)
        if args.save_proba is not None:
            save_probabilities(proba_file(args.save_proba, label, seed), output, cfg.train)
        if args.save_teacher_outputs is not None and method in CROWD_MODELS:
            npz, rec = teacher_files(args.save_teacher_outputs, method, seed)
            teacher_outputs_of(metrics, output, cfg).save(npz)
            write_json(rec, row)
        print(f"[{time.perf_counter() - t0:7.1f}s] seed {seed} {label:<28} test last {row['test_accuracy']:.4f} "
              f"val-sel {row['test_accuracy_val_selected']:.4f} val last {row['val_last'] or float('nan'):.4f} ({time.perf_counter() - t:.1f}s)", flush=True)
        return row

    saved: dict[tuple[int, str], tuple[Path, TeacherOutputs]] = {}
    for seed in args.seeds:
        data[seed] = ds = load_suite_data(suite, args.root, args.device, seed)
        for t in args.kd_teachers if args.teacher_outputs is not None else []:  # a file of another teacher: refused before anything trains
            npz = teacher_files(args.teacher_outputs, t, seed)[0]
            expected = teacher_fingerprint_of(ds, run_config(suite, train_hp, seed, "kdcrowd", kd_options(t), args.device))
            saved[(seed, t)] = (npz, TeacherOutputs.load(npz, expected=expected))
        for m in methods:
            opts = method_opts.get(m, {})
            one(ds, seed, m, " ".join([m, *(f"{k}={json.dumps(v)}" for k, v in opts.items())]), opts)
    if args.kd_teachers is not None:
        kd_teachers = args.kd_teachers
    else:
        ms = out["summary"]["methods"]  # by row label: a crowd model run with --options is labelled with them
        ranked = sorted((m for m in methods if m in CROWD_MODELS), key=lambda m: -(ms[teacher_labels.get(m, m)]["val_last"]["mean"] or 0.0))
        kd_teachers = ranked[: args.n_teachers]
    out["kd_teachers"] = kd_teachers
    # values read as JSON where they parse (stages=1 an int), as --kd-options and --options; labels as typed
    variants = [(v.replace(",", " "), parse_key_values(v.split(","), "--kd-variants")) for v in args.kd_variants]
    kd_main = parse_key_values(args.kd_options.split(","), "--kd-options") if args.kd_options else {}
    kd_suffix = "".join(f" {k}={x}" for k, x in kd_main.items())
    for seed in args.seeds:
        for t in kd_teachers if args.teacher_outputs is not None else []:  # the teachers' rows, as they were saved
            rec = teacher_files(args.teacher_outputs, t, seed)[1]
            row = {**json.loads(rec.read_text()), "from_file": str(rec)}
            teacher_labels[t] = row["label"]
            add(row)
            print(f"[{time.perf_counter() - t0:7.1f}s] seed {seed} {row['label']:<28} test last {row['test_accuracy']:.4f} (from {rec})", flush=True)
        for t in kd_teachers:
            one(data[seed], seed, "kdcrowd", f"kdcrowd({t}){kd_suffix}", kd_options(t, kd_main), pre=teachers.get((seed, t)), saved=saved.get((seed, t)))
        for typed, v in variants if kd_teachers else []:
            t = kd_teachers[0]
            one(data[seed], seed, "kdcrowd", f"kdcrowd({t}) {typed}", kd_options(t, v), pre=teachers.get((seed, t)), saved=saved.get((seed, t)))
    print(json.dumps({"out": str(args.out), "wall_seconds": time.perf_counter() - t0, "runs": len(out["runs"]), "kd_teachers": kd_teachers}))


if __name__ == "__main__":
    main()
