"""A scikit-learn estimator over the same engine as the CLI.

:class:`KDCrowdClassifier` is :class:`kdcrowd.crowdfit.CrowdFit` (the engine ``kdcrowd fit``
trains through) with scikit-learn's base classes and input validation.

    >>> from kdcrowd import KDCrowdClassifier
    >>> clf = KDCrowdClassifier().fit(X, annotations)   # X: (N, D) features or (N, H, W, C) uint8 images
    >>> clf.predict(X_new); clf.labels_; clf.transition_matrices_; clf.worker_quality_

``annotations`` may be an :class:`~kdcrowd.data.Annotations` (its item index the row of
``X``, unless ``X``'s rows are named, by ``item_ids`` or ``X``'s index: then its items are
matched to them by id; items and ``classes`` are applied as to a long table), a long table (columns
``item, worker, label`` or crowd-kit's ``task, worker, label``; ``item`` is the row of ``X``
unless ``item_ids`` is given), a wide N×M matrix of class indices with -1/NaN for missing
labels (a DataFrame's column of item ids, found as ``kdcrowd fit`` finds a wide file's,
is no worker: :func:`kdcrowd.data.readers._wide_id_column`; without one, an index that is
not the plain ``0..N-1``, as ``long.pivot(index="item", ...)`` makes, holds the ids where
``X``'s rows are named or the index is (an unnamed index of one row per row of an ``X`` without
names, as ``sklearn.utils.shuffle`` leaves it, keeps the rows in ``X``'s order); the
table's rows are put in ``X``'s order by these ids, matched to ``X``'s item ids where its
rows are named, else to its row numbers, as a long table's ``item`` column is, and like a
long table it may hold some of ``X``'s items only; ids that are not the row numbers of an
``X`` without names leave the rows in ``X``'s order, with an ``InputWarning``; without ids
it has a row per row of ``X``), or a 1-D array of N labels
(a crowd of one annotator, which is what makes ``KDCrowdClassifier`` a drop-in
scikit-learn classifier: ``fit(X, y)``). In a 1-D ``y`` every value is a class, -1 included
(binary ``{-1, 1}`` targets are common); only the wide matrix reads -1 as a missing label.

``CrowdClassifier`` is the same class under its former name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .crowdfit import ESTIMATOR_ONLY, FINAL_LABELS, MIN_IMAGE_SIDE, MIN_ITEMS_FOR_VALIDATION, MIN_VALIDATION_ITEMS, CrowdFit

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def _validate_data(estimator: Any, X: Any, reset: bool = True, **kw: Any) -> Any:
        return estimator._validate_data(X, reset=reset, **kw)


__all__ = ["ESTIMATOR_ONLY", "FINAL_LABELS", "MIN_IMAGE_SIDE", "MIN_ITEMS_FOR_VALIDATION", "MIN_VALIDATION_ITEMS", "CrowdClassifier", "KDCrowdClassifier"]


class KDCrowdClassifier(ClassifierMixin, BaseEstimator, CrowdFit):
    """Learn a classifier and the workers' confusion matrices from crowd labels.

    A scikit-learn classifier: parameters are set in ``__init__`` only, :meth:`fit`
    returns ``self``, then :meth:`predict`, :meth:`predict_proba` and :meth:`score`. The
    defaults are the validated ones of ``kdcrowd fit`` (docs/RESULTS.md, "Defaults and
    why"): KD-Crowd with a Max-MIG teacher and an ELR student, MIG-KL distillation, two
    stages, 30 epochs per stage at batch size 128; on frozen image features the recipe of
    ``head_recipe`` (a co-teaching student among its settings).

    Parameters:
        method: ``kdcrowd`` (default), a crowd model (``maxmig``, ``crowdlayer-mw|vw|vb|vwb``,
            ``conal``) or an aggregation baseline (``mv``, ``mv-soft``, ``ds``, ``ds-soft``).
        teacher, student, kd, kd_prior, kd_temperature, tv_temperature, lambda1, lambda2,
            teacher_output, stage2, stage2_init, stages, final: KD-Crowd's settings
            (:class:`~kdcrowd.framework.KDCrowd`; ``method="kdcrowd"`` only).
        model_options: the crowd model's options (a dict, e.g. ``{"mig_f": "js"}`` for
            Max-MIG; for ``kdcrowd`` the teacher's).
        weight_decay, optimizer, momentum, schedule, warmup_epochs, amp, augment, flip,
            channels_last, compile, cuda_graph, eval_batch_size, worker_lr_scale: the other fields of
            :class:`~kdcrowd.training.TrainConfig`.
        backbone: ``mlp``, ``fastcnn``, ``resnet18``, ``vgg16``, ``labelme-cnn`` or ``auto``
            (MLP for features, FastCNN for images up to 64 px, LabelMe-CNN above:
            :func:`kdcrowd.models.backbones.default_backbone`); a pretrained network
            (``efficientnet-lite0``/``-lite1``/``-lite2``, ``torchvision:NAME``, ``timm:NAME``) is fine-tuned as a
            whole, as by ``kdcrowd fit --backbone NAME``, unless ``image_features`` is
            ``frozen``.
        image_features: for uint8 images ``X``, as ``kdcrowd fit --image-features``:
            ``auto`` (default: with ``backbone="auto"`` and ``kdcrowd[pretrained]``
            installed, the frozen ImageNet features of EfficientNet-Lite0, computed once and
            cached by :func:`kdcrowd.models.pretrained.extract_features` and each image's
            scaled to unit length (:data:`~kdcrowd.models.pretrained.FROZEN_FEATURE_NORM`), with
            an MLP head trained on them; else ``backbone`` trains on the pixels), ``frozen`` (the frozen
            features of ``backbone`` ``auto``/``efficientnet-lite0``/``-lite1``/``-lite2``/``torchvision:NAME``/
            ``timm:NAME``; an error for feature matrices) or ``none`` (``backbone`` on the
            pixels). With frozen features, :meth:`predict` takes images (their features are
            computed and scaled the same way) or the features (scaled the same way),
            ``n_features_in_`` and ``item_shape_`` describe the features, and
            ``input_transform_`` names the network and the scaling.
        final_labels: ``classifier`` (default) or ``posterior``: where ``labels_`` come
            from (see the fitted attributes). The posterior wins when the workers err
            independently given the true class (Dawid–Skene's assumption;
            ``tests/test_estimator.py``); on LabelMe, whose workers err together on the
            ambiguous images, it was up to 3 points below the classifier (docs/RESULTS.md §7h),
            hence the default.
        label_spreading: ``auto`` (default), ``on`` or ``off``: smooth the classifier's
            probabilities over a nearest-neighbour graph of the items' features
            (:mod:`kdcrowd.spreading`), the rows of ``X`` and the ``unlabelled`` items given
            to :meth:`fit` together, before the final labels are taken; :meth:`predict_proba`
            then spreads new items over that graph (the fitted rows and the ``unlabelled``
            ones, which the estimator and its saved model keep) and themselves, so a
            new item's probabilities depend on the items predicted with it (predict a batch
            together; scikit-learn's checks that a row's prediction does not depend on its
            batch or its order do not hold with spreading on). ``auto`` spreads when this fit computes frozen image features
            (``image_features``), where it was chosen on LabelMe's validation images
            (+2.8 points there, docs/RESULTS.md §7h); ``on`` for any feature rows.
        spreading_neighbours, spreading_alpha: the graph's neighbours per item (5) and the
            neighbours' weight against the item's own probabilities (0.8).
        head_recipe: ``auto`` (default), ``shared`` or ``frozen-features``: which values
            ``epochs``, ``batch_size``, ``lr`` and ``weight_decay`` (and ``lambda2`` and
            ``student`` with method ``kdcrowd``; ``lambda2`` where it takes effect: two
            stages and a distillation loss) take when left at their defaults. ``auto`` applies the
            frozen-features recipe (:data:`kdcrowd.doors.FROZEN_FEATURE_HEAD` and
            :data:`~kdcrowd.doors.FROZEN_FEATURE_KD`, chosen on LabelMe's validation
            images) when this fit computes frozen image features (``image_features``), and
            the shared defaults otherwise; give ``frozen-features`` for features you
            computed yourself with ``extract_features``.
        epochs, batch_size, lr: optimisation (epochs per stage for ``kdcrowd``).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        random_state: seed of the validation split, the initialisation and the batch order
            (an int, as ``kdcrowd fit --seed``; a ``RandomState`` or ``None`` draws one).
            On the CPU the same seed gives identical results.
        classes: the class values, when the labels do not show all of them (a class no
            worker chose is still a class).
        duplicates: repeated (item, worker) labels in a long table: ``error``, ``first``,
            ``last`` or ``keep``.
        validation_fraction: fraction of the annotated items held out for model selection
            when no ``X_val``/``y_val`` is given (see below); ``0`` (the default) trains on
            every item and keeps the final epoch.
        checkpoint_dir: if set, every training stage checkpoints there (after finished
            epochs, at most every ``checkpoint_interval`` seconds, and when stopped by an
            interrupt or error) and a fit started again with the same settings continues
            from the last saved epoch (:attr:`kdcrowd.methods.RunConfig.checkpoint_dir`);
            where ``random_state`` draws a seed, it takes the seed saved there instead. A
            finished fit's files make way for a fit of other data or settings (a refit,
            clones in model selection); an unfinished one's are kept, and such a fit refused.
        track_memorization: record each epoch's memorization of the crowd labels that
            disagree with the reference labels (one extra prediction pass over ``X`` per
            epoch; ``kdcrowd fit`` turns it on for its report).
        verbose: progress bars.

    Every method and training option of ``kdcrowd run`` and ``kdcrowd fit``
    (:func:`kdcrowd.doors.door_options`) is a parameter here with the same name and default;
    the commands' ``--seed`` is ``random_state``, ``kdcrowd fit --quiet`` is
    ``verbose=False``, and their file-reading options (``--item-column``, ``--format`` ...)
    have no counterpart, as the estimator takes arrays and tables. ``track_memorization``
    is off here by default (on in ``kdcrowd run``; ``kdcrowd fit`` always records it for
    its report). Values are checked when :meth:`fit` starts
    (one :class:`~kdcrowd.config.ConfigError` naming the parameter), as scikit-learn asks
    of ``__init__`` and ``set_params`` not to check.

    **Model selection without ground truth.** The epoch (and for ``kdcrowd`` the final
    stage) kept is the one whose predictions agree best with a validation set. With
    ``fit(..., X_val=, y_val=)`` that set is the given one (true labels). Without it, and
    with ``validation_fraction > 0`` and at least ``MIN_ITEMS_FOR_VALIDATION`` (50)
    annotated items, ``max(MIN_VALIDATION_ITEMS (10), round(validation_fraction × n
    annotated))`` annotated items are drawn at random (seeded by ``random_state``) — from
    the items with two or more labels when there are that many, else from all annotated
    items — and held out of training. Their validation targets are the Dawid–Skene labels
    computed from *all* the crowd labels (majority vote if Dawid–Skene fails), so the
    selection needs no ground truth. With fewer annotated items, or
    ``validation_fraction=0``, nothing is held out and the final epoch is kept. The labels
    of held-out items (``labels_``, ``label_proba_``) come from the trained predictor;
    ``validation_`` records what was done.

    The default is ``validation_fraction=0``: on real crowds, training on every item and
    keeping the final epoch of the cosine schedule gave better labels and a better
    classifier than selecting on 10 % held-out items' Dawid–Skene labels (LabelMe: 87.4 %
    (3 seeds) against 80.1 % (5 seeds) correct labels, 81.6 % against 76.3 % on
    unlabelled test images; CIFAR-10N, 2 seeds each: 93.4 % against 92.0 %, 85.1 % against
    84.2 %; ``docs/RESULTS.md`` §6). Selection helps when the schedule runs long past the best
    epoch, or with ``X_val``/``y_val`` holding true labels.

    Fitted attributes:

    * ``classes_``; ``n_features_in_`` (and ``feature_names_in_`` for a DataFrame ``X``;
      for images it is ``H``, scikit-learn's count of axis 1); ``item_shape_`` (``(D,)`` or
      ``(H, W, C)``); ``worker_ids_`` and ``n_workers_``.
    * ``labels_`` (N,) and ``label_proba_`` (N, K): the final label of every row of ``X``:
      with ``final_labels="classifier"`` (the default) the trained classifier's
      ``p(y | x)``; with ``final_labels="posterior"``, for a method with worker matrices
      (crowd models, KD-Crowd, ``ds``), the posterior that combines it with the item's
      crowd labels, ``p(y | x, labels) ∝ p(y | x) · Π_m T_m[y, label_m]``
      (:func:`kdcrowd.aggregation.crowd_posterior`, the Dawid–Skene E-step with the
      classifier as each item's prior; rows without crowd labels keep ``p(y | x)``). Gold
      questions keep their known labels. ``classifier_proba_`` (N, K): the classifier's
      own ``p(y | x)`` of every row (what :meth:`predict_proba` gives without label spreading),
      but for the gold questions' rows, which hold their known labels (one-hot: label
      spreading anchors on them);
      ``label_source_`` says which of the two ``label_proba_`` is, and whether it was spread.
    * ``spreading_``: ``None``, or with label spreading the graph ``labels_`` were spread
      over, which :meth:`predict_proba` spreads new items with: its items' ``features``
      (``X``'s rows, then those of ``fit(..., unlabelled=U)`` that are no row of ``X``: the
      estimator and its saved model keep U's features), their ``anchors`` (``X``'s:
      ``classifier_proba_``; U's: the classifier's) and the ``config``
      (:class:`~kdcrowd.spreading.LabelSpreading`). ``X`` or ``U`` predicted again get the
      rows the fit gave them.
    * ``transition_matrices_`` (M, K, K): the method's estimated worker matrices (``None``
      for ``mv``/``mv-soft``).
    * ``worker_quality_`` (M,), aligned with ``worker_ids_``: each worker's estimated
      accuracy ``Σ_k prior_k T_m[k, k]`` (:func:`kdcrowd.metrics.worker_accuracy_estimate`,
      the ``accuracy_estimate`` of ``kdcrowd fit``'s workers.csv), the prior being the mean
      of ``label_proba_``; for methods without worker matrices ``T_m`` is the confusion
      of the worker's labels against the final labels ``labels_`` (the argmax of
      ``label_proba_``: ``T_m[k, j]`` is the share of the worker's labels on the items
      labelled ``k`` that are ``j``; a row of a class the worker never met is uniform:
      :func:`kdcrowd.report.practitioner.worker_matrices`).
    * ``validation_`` (dict): ``source`` (``"given"``, ``"crowd (Dawid–Skene of held-out
      items)"``, ``"crowd (majority vote of held-out items)"`` or ``None``), ``n_items``,
      ``indices`` (rows of ``X`` held out), ``best_epoch`` (``None`` for ``final="ensemble"`` or
      ``"ensemble-all"``, which train no epochs of their own), ``agreement`` (the kept epoch's validation
      agreement; the ensemble's own) and ``reason``.
    * ``worker_matrices_`` (M, K, K): the matrices ``worker_quality_`` is computed from.
    * ``history_``: per epoch (empty for ``final="ensemble"`` or ``"ensemble-all"``: the
      members' histories are ``metrics_["stages"]``'s teacher, student and stage 2), the loss, the validation agreement and, with
      ``track_memorization``, the memorization of the crowd labels that disagree with the
      reference labels (the Dawid–Skene labels of all the crowd labels; used for nothing
      else). ``metrics_``: the run's metrics (no training-item accuracies: there is no
      ground truth; ``metrics_["reference_labels"]`` names the reference of memorization).
    * ``module_`` (the trained torch module) and ``preprocessor_`` (a
      :class:`~kdcrowd.training.DeviceData` holding only the input normalisation fitted on
      the training rows of ``X``, see :meth:`~kdcrowd.training.DeviceData.preprocessing_only`).
    """

    # The parameters (__init__, generated from kdcrowd.doors.door_options() and ESTIMATOR_ONLY),
    # fit, predict_proba and predict are CrowdFit's; scikit-learn's base classes come first, so
    # get_params, set_params, score and the repr are scikit-learn's.

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # GPU kernels (scatter-adds, cuDNN) are not bitwise reproducible; the CPU is.
        tags.non_deterministic = self._on_cuda()
        return tags

    def _check_fitted(self) -> None:
        check_is_fitted(self, "module_")

    def _validated(self, X: Any, reset: bool) -> np.ndarray:
        """``X`` through scikit-learn's validation (NaN/inf, empty, complex, sparse, 1-D,
        the fitted width and feature names ...)."""
        return _validate_data(self, X, reset=reset, allow_nd=True, dtype="numeric")


CrowdClassifier = KDCrowdClassifier
"""The former name of :class:`KDCrowdClassifier`."""
