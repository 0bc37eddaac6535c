"""Write a registered crowd data set the way a practitioner has it: a folder of image
files and a CSV of crowd labels, so that ``kdcrowd fit`` can be tried end to end on real
crowds (the acceptance run of the practitioner's door).

    python benchmarks/practitioner_export.py export labelme --data-root ../shared/data --out /tmp/labelme-user
    kdcrowd fit --annotations /tmp/labelme-user/answers.csv --images /tmp/labelme-user/images \\
        --predict-images /tmp/labelme-user/new_images --truth /tmp/labelme-user/truth.csv \\
        --image-size 128 --out /tmp/labelme-fit
    python benchmarks/practitioner_export.py score /tmp/labelme-user /tmp/labelme-fit

``OUT`` gets ``images/<id>.png`` (the crowd-labelled training items), ``answers.csv``
(``item,worker,label`` with class names), ``truth.csv`` (their true labels, for
``--truth``), ``new_images/`` (the data set's test items, no crowd labels) and
``new_truth.csv``. ``score`` prints the accuracy of a fit's ``labels.csv`` and
``predictions.csv`` against those truths, and writes it as JSON with ``--json``;
``summary`` averages score files named ``<setting>_seed<N>.json`` over seeds; ``run``
does fit, score and ``kdcrowd predict`` in one go and adds the commands' wall times.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def export(name: str, root: str | None, out: Path, limit_new: int | None = None) -> dict[str, int]:
    """Write data set ``name`` into ``out`` (see the module docstring); returns counts."""
    from PIL import Image

    from kdcrowd.data.datasets import load_dataset

    ds = load_dataset(name, root=root)
    if ds.annotations is None or ds.x_train.ndim != 4:
        raise SystemExit(f"{name}: needs crowd annotations and images")
    classes = np.asarray(ds.class_names)
    ann = ds.annotations  # its classes are the class names, in the order of ds.class_names
    ids = np.array([f"{i:05d}" for i in range(len(ds.x_train))])
    (out / "images").mkdir(parents=True, exist_ok=True)
    for i, img in zip(ids, ds.x_train):
        Image.fromarray(img).save(out / "images" / f"{i}.png")
    long = ann.to_long()  # original worker ids and class names
    long.assign(item=ids[ann.item]).to_csv(out / "answers.csv", index=False)
    pd.DataFrame({"item": ids, "label": classes[ds.y_train]}).to_csv(out / "truth.csv", index=False)
    x_new, y_new = ds.x_test, ds.y_test
    if limit_new is not None:
        x_new, y_new = x_new[:limit_new], y_new[:limit_new]
    new_ids = np.array([f"new{i:05d}" for i in range(len(x_new))])
    (out / "new_images").mkdir(parents=True, exist_ok=True)
    for i, img in zip(new_ids, x_new):
        Image.fromarray(img).save(out / "new_images" / f"{i}.png")
    pd.DataFrame({"item": new_ids, "label": classes[y_new]}).to_csv(out / "new_truth.csv", index=False)
    return {"items": len(ids), "annotations": len(ann), "workers": ann.n_workers, "new_items": len(new_ids)}


def score(export_dir: Path, fit_dir: Path) -> dict[str, float | int]:
    """Accuracy of a ``kdcrowd fit`` output folder against the exported truths."""
    from kdcrowd.aggregation import aggregation_frame
    from kdcrowd.data.annotations import Annotations

    labels = pd.read_csv(fit_dir / "labels.csv", dtype={"item": str})
    preds = pd.read_csv(fit_dir / "predictions.csv", dtype={"item": str})
    truth = pd.read_csv(export_dir / "truth.csv", dtype={"item": str}).set_index("item")["label"]
    new_truth = pd.read_csv(export_dir / "new_truth.csv", dtype={"item": str}).set_index("item")["label"]
    answers = pd.read_csv(export_dir / "answers.csv", dtype={"item": str, "worker": str, "label": str})
    mv = aggregation_frame(Annotations.from_long(answers), "mv").set_index("item")["label"]  # ties: the first class in sorted order
    new = preds[preds["item"].isin(new_truth.index)]
    return {
        "labelled_items": len(labels),
        "label_accuracy": float((labels.set_index("item")["label"] == truth.reindex(labels["item"]).to_numpy()).mean()),
        "majority_vote_accuracy": float((mv == truth.reindex(mv.index)).mean()),
        "new_items": len(new),
        "new_item_accuracy": float((new.set_index("item")["label"] == new_truth.reindex(new["item"]).to_numpy()).mean()) if len(new) else float("nan"),
    }


def run(export_dir: Path, fit_dir: Path, fit_args: list[str], device: str) -> dict[str, float | int]:
    """``kdcrowd fit`` on an exported data set (its images, answers, new images and truths)
    with ``fit_args``, then ``kdcrowd predict`` on the new images with the saved model:
    the :func:`score` plus the wall time of each whole command (Python start, image
    decoding and report included) and how far ``predict`` agrees with the fit's own
    ``predictions.csv``."""
    import subprocess
    import time

    cmd = [sys.executable, "-m", "kdcrowd"]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "fit", "--annotations", str(export_dir / "answers.csv"), "--images", str(export_dir / "images"),
                    "--predict-images", str(export_dir / "new_images"), "--truth", str(export_dir / "truth.csv"), "--device", device,
                    "--quiet", "--out", str(fit_dir), *fit_args], check=True)
    t1 = time.perf_counter()
    import torch

    # the side the images were read at: the model's (frozen features read at least 128 px), else the option's
    inputs = torch.load(fit_dir / "model.pt", weights_only=True).get("inputs") or {}
    size = inputs.get("image_size", json.loads((fit_dir / "run.json").read_text())["settings"]["image_size"])
    pred_file = fit_dir / "predict_check.csv"
    subprocess.run([*cmd, "predict", "--model", str(fit_dir / "model.pt"), "--images", str(export_dir / "new_images"), "--device", device, "--out", str(pred_file)], check=True)
    t2 = time.perf_counter()
    a, b = pd.read_csv(pred_file, dtype={"item": str}), pd.read_csv(fit_dir / "predictions.csv", dtype={"item": str})
    b = b[b["item"].isin(a["item"])].set_index("item").loc[a["item"]]
    p_cols = [c for c in a.columns if c.startswith("p_")]
    return {
        **score(export_dir, fit_dir),
        "image_size": int(size),
        "fit_wall_seconds": t1 - t0,
        "predict_wall_seconds": t2 - t1,
        "predict_same_label": float((a["label"].to_numpy() == b["label"].to_numpy()).mean()),
        "predict_max_abs_probability_difference": float(np.abs(a[p_cols].to_numpy() - b[p_cols].to_numpy()).max()),
    }


def summary(files: list[Path]) -> dict[str, dict[str, float | int]]:
    """Mean and std over seeds of ``score`` files named ``<setting>_seed<N>.json``, per setting."""
    groups: dict[str, list[dict[str, float]]] = {}
    for f in sorted(files):
        setting = f.stem.rsplit("_seed", 1)[0]
        groups.setdefault(setting, []).append(json.loads(f.read_text()))
    out: dict[str, dict[str, float | int]] = {}
    for setting, runs in groups.items():
        row: dict[str, float | int] = {"seeds": len(runs)}
        for key in ("label_accuracy", "new_item_accuracy", "majority_vote_accuracy"):
            v = np.array([r[key] for r in runs], dtype=float)
            row[f"{key}_mean"], row[f"{key}_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out[setting] = row
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write a data set as image files + answers.csv")
    e.add_argument("dataset", choices=["labelme", "cifar10n"])
    e.add_argument("--data-root", default=None)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--limit-new", type=int, default=None, help="write at most this many new (test) items")
    s = sub.add_parser("score", help="accuracy of a kdcrowd fit output against the exported truths")
    s.add_argument("export_dir", type=Path)
    s.add_argument("fit_dir", type=Path)
    s.add_argument("--json", type=Path, default=None)
    r = sub.add_parser("run", help="kdcrowd fit + score + kdcrowd predict on an exported data set, timed (extra fit options after --)")
    r.add_argument("export_dir", type=Path)
    r.add_argument("fit_dir", type=Path)
    r.add_argument("--device", default="auto")
    r.add_argument("--json", type=Path, default=None)
    r.add_argument("fit_args", nargs=argparse.REMAINDER)
    m = sub.add_parser("summary", help="mean and std over seeds of score files named <setting>_seed<N>.json")
    m.add_argument("files", type=Path, nargs="+")
    m.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.cmd == "export":
        print(json.dumps(export(a.dataset, a.data_root, a.out, a.limit_new)))
        return
    if a.cmd == "run":
        res = run(a.export_dir, a.fit_dir, [x for x in a.fit_args if x != "--"], a.device)
    else:
        res = score(a.export_dir, a.fit_dir) if a.cmd == "score" else summary(a.files)
    print(json.dumps(res, indent=1))
    if a.json:
        from kdcrowd.io import write_json

        write_json(a.json, res)


if __name__ == "__main__":
    sys.exit(main())
