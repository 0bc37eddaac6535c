"""Run a named suite of methods on data sets and write every run's metrics into one JSON file.

    PYTHONPATH=src python benchmarks/suite.py --suite real-cifar10n --device cuda \
        --out benchmarks/results/cifar10n_suite.json

Each entry of the output holds the full ``metrics.json`` of one run (config, versions,
device, history with memorization, expertise error with per-worker values). The file is
rewritten atomically after every run, so an interrupted suite keeps what it finished.
Suites are defined in :data:`SUITES`; ``--seeds`` repeats every run over several seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kdcrowd.io import write_json  # noqa: E402
from kdcrowd.data.datasets import load_dataset  # noqa: E402
from kdcrowd.methods import CROWD_MODELS, RunConfig, run_on_dataset, versions  # noqa: E402
from kdcrowd.training import TrainConfig  # noqa: E402

TEACHERS = list(CROWD_MODELS)


def _kd_runs(teachers: list[str]) -> list[dict[str, Any]]:
    runs = []
    for t in teachers:
        runs.append({"method": "kdcrowd", "label": f"kdcrowd({t}) mig-kl", "options": {"teacher": t, "student": "coteaching", "kd": "mig-kl"}})
        runs.append({"method": "kdcrowd", "label": f"kdcrowd({t}) kl", "options": {"teacher": t, "student": "coteaching", "kd": "kl"}})
        runs.append({"method": "kdcrowd", "label": f"kdcrowd({t}) mig-kl stage1", "options": {"teacher": t, "student": "coteaching", "kd": "mig-kl", "stages": 1}})
    return runs


def _base_runs() -> list[dict[str, Any]]:
    return [{"method": m, "label": m} for m in ("clean", "mv", "ds")] + [{"method": t, "label": t} for t in TEACHERS]


def _ablation_runs(teacher: str) -> list[dict[str, Any]]:
    """Table-3 style ablations over one shared teacher (validation accuracy picks defaults)."""
    runs: list[dict[str, Any]] = [{"method": "mv", "label": "mv"}, {"method": teacher, "label": teacher}]
    runs += [{"method": t, "label": f"{t} worker_lr_scale=10", "train": {"worker_lr_scale": 10.0}} for t in ("crowdlayer-mw", "maxmig", "conal")]

    def kd(label: str, **opts: Any) -> None:
        base = {"teacher": teacher, "student": "coteaching", "kd": "mig-kl", "stages": 1}
        base.update(opts)
        runs.append({"method": "kdcrowd", "label": f"kdcrowd({teacher}) {label}", "options": base})

    for student in ("coteaching", "gce", "sce", "elr", "ce"):
        kd(f"student={student}", student=student)
    for loss in ("mig-pearson", "mig-js", "mig-tv", "mig-rkl", "mig-hellinger", "kl", "none"):
        kd(f"kd={loss}", kd=loss)
    for lam in (0.3, 3.0):
        kd(f"lambda1={lam}", lambda1=lam)
    kd("teacher_output=posterior", teacher_output="posterior")
    for lam in (0.3, 1.0, 3.0):
        kd(f"stages=2 lambda2={lam}", stages=2, lambda2=lam)
    kd("stages=2 stage2=finetune", stages=2, stage2="finetune")
    return runs


def _table_runs() -> list[dict[str, Any]]:
    """The rows of the paper-style tables: baselines, three teachers, KD-Crowd (defaults) over two."""
    runs = [{"method": m, "label": m} for m in ("clean", "mv", "ds", "crowdlayer-mw", "maxmig", "conal")]
    return runs + [{"method": "kdcrowd", "label": f"kdcrowd({t})", "options": {"teacher": t}} for t in ("crowdlayer-mw", "maxmig")]


#: LabelMe's 1,000 training images need smaller batches, more epochs and a lower lr than CIFAR.
LABELME_TRAIN = {"epochs": 40, "batch_size": 64, "lr": 1e-3}
#: The CPU-sized ablations on feature vectors / 8×8 digits.
LABELME_BOVW_TRAIN = {"epochs": 30, "batch_size": 64, "lr": 1e-3}
DIGITS_TRAIN = {"epochs": 30, "batch_size": 128, "lr": 3e-3}
#: Training settings of every suite that does not name its own (20 epochs of FastCNN on CIFAR).
DEFAULT_TRAIN = {"epochs": 20, "batch_size": 512, "lr": 2e-3}

TABLE1_CASES = ("maxmig-low-1", "maxmig-low-2", "maxmig-low-3", "maxmig-high-1", "maxmig-high-2", "maxmig-high-3", "sparse")

SUITES: dict[str, dict[str, Any]] = {
    # Table 1: synthetic workers on the lossless CIFAR-10 images (run with --seeds 0 1 2 3 4).
    **{f"table1-{case}": {"dataset": "cifar10", "workers": case, "runs": _table_runs()} for case in TABLE1_CASES},
    # Table 2: real crowds (LabelMe with --epochs 40 --batch-size 64 --lr 1e-3).
    "table2-cifar10n": {"dataset": "cifar10n", "workers": None, "runs": _table_runs()},
    "table2-labelme": {"dataset": "labelme", "workers": None, "runs": _table_runs(), "train": LABELME_TRAIN},
    # Issues 2–4 acceptance on the real CIFAR-10N crowd (20 k lossless images, 15k/1k/4k).
    "real-cifar10n": {"dataset": "cifar10n", "workers": None, "runs": _base_runs() + _kd_runs(["crowdlayer-mw", "maxmig"])},
    # One synthetic CIFAR-10 case: 50 workers of spread expertise, 3 labels per image.
    "synthetic-cifar10-sparse": {"dataset": "cifar10", "workers": "sparse", "runs": _base_runs() + _kd_runs(["crowdlayer-mw", "maxmig"])},
    # Max-MIG's low-expertise case with always-class-0 juniors, where majority vote must fail.
    "synthetic-cifar10-maxmig-low-2": {"dataset": "cifar10", "workers": "maxmig-low-2", "runs": _base_runs() + _kd_runs(["crowdlayer-mw", "maxmig"])},
    # LabelMe, 128 px images, official valid / test splits.
    "real-labelme": {"dataset": "labelme", "workers": None, "runs": _base_runs() + _kd_runs(["crowdlayer-mw", "maxmig"])},
    # Ablations (stage-1 variants over one shared teacher, then stage-2 options).
    "ablation-cifar10n": {"dataset": "cifar10n", "workers": None, "runs": _ablation_runs("maxmig")},
    "ablation-labelme-bovw": {"dataset": "labelme", "workers": None, "dataset_options": {"features": "bovw"}, "train": LABELME_BOVW_TRAIN, "runs": _ablation_runs("maxmig") + _ablation_runs("crowdlayer-mw")[1:2] + _ablation_runs("crowdlayer-mw")[5:]},
    "ablation-digits-maxmig-low-2": {"dataset": "digits", "workers": "maxmig-low-2", "train": DIGITS_TRAIN, "runs": _ablation_runs("maxmig")},
    "ablation-digits-symmetric": {"dataset": "digits", "workers": "symmetric", "train": DIGITS_TRAIN, "runs": _ablation_runs("crowdlayer-mw")},
    # The central claim with the library defaults (ELR student, MIG-KL, 2 stages), teachers shared; run with 5 seeds.
    "claim-cifar10n": {"dataset": "cifar10n", "workers": None, "runs": [{"method": m, "label": m} for m in ("clean", "mv", "ds", "crowdlayer-mw", "maxmig")] + [
        {"method": "kdcrowd", "label": f"kdcrowd({t}) {k}", "options": {"teacher": t, "kd": k}} for t in ("crowdlayer-mw", "maxmig") for k in ("mig-kl", "kl")]},
    # Stage 2's worker-matrix initialisation: majority vote (the model's rule) vs the student's predictions.
    **{f"stage2-init-{name}": {"dataset": dset, "workers": workers, "train": train, "dataset_options": dopts, "runs": [
        {"method": "maxmig", "label": "maxmig"},
        {"method": "kdcrowd", "label": "kdcrowd(maxmig)", "options": {"teacher": "maxmig"}},
        {"method": "kdcrowd", "label": "kdcrowd(maxmig) stage2_init=student", "options": {"teacher": "maxmig", "stage2_init": "student"}}]}
       for name, dset, workers, train, dopts in (
           ("labelme-bovw", "labelme", None, LABELME_BOVW_TRAIN, {"features": "bovw"}),
           ("digits-maxmig-low-1", "digits", "maxmig-low-1", DIGITS_TRAIN, {}),
           ("labelme", "labelme", None, LABELME_TRAIN, {}),
           ("cifar10n", "cifar10n", None, DEFAULT_TRAIN, {}))},
    # A seconds-long CPU check of the whole machinery (the teacher run is shared by the KD run).
    "smoke": {"dataset": "digits", "workers": "maxmig-low-2", "runs": [{"method": "mv", "label": "mv"}, {"method": "maxmig", "label": "maxmig"}] + _kd_runs(["maxmig"])[:1]},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True, choices=sorted(SUITES))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=None, help="override the suite's epochs (default: the suite's, else 20)")
    ap.add_argument("--batch-size", type=int, default=None, help="override the suite's batch size (else 512)")
    ap.add_argument("--lr", type=float, default=None, help="override the suite's learning rate (else 2e-3)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--root", default=None, help="data root (else $KDCROWD_DATA)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these labels")
    args = ap.parse_args()

    suite = SUITES[args.suite]
    hp = {**DEFAULT_TRAIN, **suite.get("train", {})}
    hp.update({k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr)) if v is not None})
    t0 = time.perf_counter()
    out: dict[str, Any] = {"suite": args.suite, "command": " ".join(sys.argv), "versions": versions(), "runs": []}
    for seed in args.seeds:
        dopts = dict(suite.get("dataset_options", {}))
        ds = load_dataset(suite["dataset"], root=args.root, workers=suite["workers"], seed=seed, **dopts)
        teachers: dict[str, Any] = {}  # crowd model runs of this seed, reused as KD-Crowd teachers
        for spec in suite["runs"]:
            if args.only and spec["label"] not in args.only:
                continue
            train = TrainConfig(epochs=hp["epochs"], batch_size=hp["batch_size"], lr=hp["lr"], seed=seed, device=args.device, progress=False, **spec.get("train", {}))
            cfg = RunConfig(dataset=suite["dataset"], method=spec["method"], workers=suite["workers"], seed=seed, train=train, options=dict(spec.get("options", {})), dataset_options=dopts)
            t = time.perf_counter()
            tname = cfg.options.get("teacher")
            pre = teachers.get(tname) if cfg.method == "kdcrowd" else None
            metrics, output = run_on_dataset(ds, cfg, pretrained_teacher=pre)
            if cfg.method in TEACHERS and spec["label"] == cfg.method:  # the plain run is the shared teacher
                teachers[cfg.method] = (output.module.model, output.fit)
            metrics["label"] = spec["label"]
            metrics["shared_teacher"] = pre is not None
            out["runs"].append(metrics)
            out["device"] = metrics["device"]
            out["wall_seconds"] = time.perf_counter() - t0
            write_json(args.out, out)
            print(f"[{time.perf_counter() - t0:7.1f}s] seed {seed} {spec['label']:<34} test {metrics.get('test_accuracy', float('nan')):.4f} "
                  f"val-sel {metrics.get('test_accuracy_val_selected', float('nan')):.4f} ({time.perf_counter() - t:.1f}s)", flush=True)
    print(json.dumps({"wall_seconds": out.get("wall_seconds"), "runs": len(out["runs"])}))


if __name__ == "__main__":
    main()
