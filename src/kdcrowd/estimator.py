"""A scikit-learn style estimator over the same engine as the CLI.

    >>> clf = CrowdClassifier(method="kdcrowd", teacher="maxmig", epochs=20)
    >>> clf.fit(X, annotations)              # X: (N, D) features or (N, H, W, C) uint8 images
    >>> clf.predict(X_new); clf.transition_matrices_; clf.labels_

``annotations`` may be an :class:`~kdcrowd.data.Annotations`, a long table (columns
``item, worker, label`` or crowd-kit's ``task, worker, label``; ``item`` is the row of ``X``
unless ``item_ids`` is given) or a wide N×M matrix with -1/NaN for missing labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CrowdClassifier"]


class CrowdClassifier:
    """Learn a classifier and the workers' confusion matrices from crowd labels.

    ``__init__`` stores parameters only; :meth:`fit` returns ``self``; fitted attributes
    end in ``_``: ``classes_``, ``n_workers_``, ``worker_ids_``, ``transition_matrices_``
    (M, K, K) or ``None``, ``labels_`` and ``label_proba_`` (the method's labels for the
    training items), ``history_``, ``metrics_``, ``module_`` (the trained torch module) and
    ``preprocessor_`` (a :class:`~kdcrowd.training.DeviceData` holding only the input
    normalisation fitted on ``X``, see :meth:`~kdcrowd.training.DeviceData.preprocessing_only`).

    Without ``X_val``/``y_val`` there is no model selection: the final epoch is kept.
    """

    def __init__(
        self,
        method: str = "kdcrowd",
        teacher: str = "crowdlayer-mw",
        student: str = "elr",
        kd: str = "mig-kl",
        lambda1: float = 1.0,
        lambda2: float = 1.0,
        stages: int = 2,
        mig_f: str = "kl",
        worker_lr_scale: float = 1.0,
        backbone: str = "auto",
        epochs: int = 20,
        batch_size: int = 256,
        lr: float = 1e-3,
        device: str = "auto",
        random_state: int = 0,
        classes: Any = None,
        duplicates: str = "error",
        verbose: bool = False,
    ) -> None:
        self.method = method
        self.teacher = teacher
        self.student = student
        self.kd = kd
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.stages = stages
        self.mig_f = mig_f
        self.worker_lr_scale = worker_lr_scale
        self.backbone = backbone
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.device = device
        self.random_state = random_state
        self.classes = classes
        self.duplicates = duplicates
        self.verbose = verbose

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters (scikit-learn protocol)."""
        import inspect

        return {k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters if k != "self"}

    def set_params(self, **params: Any) -> CrowdClassifier:
        """Set constructor parameters (scikit-learn protocol)."""
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"unknown parameter '{k}' for CrowdClassifier; valid: {sorted(self.get_params())}")
            setattr(self, k, v)
        return self

    def _annotations(self, X: np.ndarray, annotations: Any, item_ids: Any) -> Any:
        from .data.annotations import Annotations

        n = len(X)
        items = np.arange(n) if item_ids is None else np.asarray(item_ids)
        if len(items) != n:
            raise ValueError(f"item_ids has {len(items)} entries but X has {n} rows; give one id per row of X")
        if isinstance(annotations, Annotations):
            if annotations.n_items != n:
                raise ValueError(f"the annotations cover {annotations.n_items} items but X has {n} rows; their item index must be the row of X")
            return annotations
        if isinstance(annotations, pd.DataFrame):
            return Annotations.from_long(annotations, classes=self.classes, items=items, duplicates=self.duplicates)
        arr = np.asarray(annotations)
        if arr.ndim == 2 and arr.shape[0] == n:
            return Annotations.from_wide(arr, classes=self.classes, item_ids=items)
        raise ValueError("annotations must be an Annotations, a long DataFrame (item, worker, label) or a wide (N, M) matrix with -1/NaN for missing labels")

    def fit(self, X: np.ndarray, annotations: Any, X_val: np.ndarray | None = None, y_val: Any = None, item_ids: Any = None) -> CrowdClassifier:
        """Train on items ``X`` and their crowd labels; ``X_val``/``y_val`` enable model selection."""
        from .data.datasets import CrowdDataset
        from .methods import RunConfig, run_on_dataset
        from .training import TrainConfig

        X = np.asarray(X)
        if X.ndim == 2:
            X = X.astype(np.float32)
        elif not (X.ndim == 4 and X.dtype == np.uint8):
            raise ValueError(f"X must be float features (N, D) or uint8 images (N, H, W, C); got {X.dtype} {X.shape}")
        ann = self._annotations(X, annotations, item_ids)
        y_val_idx = None
        if y_val is not None:
            if X_val is None:
                raise ValueError("y_val given without X_val")
            y_val_idx = pd.Index(np.asarray(ann.classes)).get_indexer(np.asarray(y_val)).astype(np.int64)
            if (y_val_idx < 0).any():
                bad = np.asarray(y_val)[y_val_idx < 0][:5].tolist()
                raise ValueError(f"y_val holds {bad}, which are not among the annotation classes {np.asarray(ann.classes).tolist()}")
        empty = X[:0]
        ds = CrowdDataset(
            name="user",
            x_train=X,
            x_val=np.asarray(X_val, dtype=X.dtype) if X_val is not None else empty,
            x_test=empty,
            y_train=None,
            y_val=y_val_idx,
            y_test=None,
            annotations=ann,
            class_names=[str(c) for c in ann.classes],
        )
        options: dict[str, Any] = {"mig_f": self.mig_f, "worker_lr_scale": self.worker_lr_scale}
        if self.method == "kdcrowd":
            options.update(teacher=self.teacher, student=self.student, kd=self.kd, lambda1=self.lambda1, lambda2=self.lambda2, stages=self.stages)
        train = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, device=self.device, seed=self.random_state, progress=self.verbose)
        cfg = RunConfig(dataset="user", method=self.method, backbone=self.backbone, seed=self.random_state, train=train, options=options, track_memorization=False)
        metrics, out = run_on_dataset(ds, cfg)
        self.module_ = out.module
        self.item_shape_ = tuple(X.shape[1:])
        self.classes_ = np.asarray(ann.classes)
        self.n_workers_ = ann.n_workers
        self.worker_ids_ = np.asarray(ann.worker_ids)
        self.transition_matrices_ = out.transitions
        from .training import predict_proba

        data = out.data  # X on the device, as run_on_dataset trained on it
        self._device = data.device
        proba = out.train_proba if out.train_proba is not None else predict_proba(self.module_, data, data.x_train)
        self.preprocessor_ = data.preprocessing_only()
        self.label_proba_ = proba.detach().float().cpu().numpy()
        self.labels_ = self.classes_[self.label_proba_.argmax(1)]
        self.history_ = metrics["history"]
        self.metrics_ = metrics
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K), columns in the order of ``classes_``."""
        import torch

        from .training import predict_proba

        if not hasattr(self, "module_"):
            raise RuntimeError("this CrowdClassifier is not fitted yet; call fit(X, annotations) first")
        X = np.asarray(X)
        X = X.astype(np.float32) if X.ndim == 2 else X
        if X.shape[1:] != self.item_shape_:
            raise ValueError(f"X has item shape {X.shape[1:]}, but the model was fitted on items of shape {self.item_shape_}")
        xt = torch.from_numpy(np.ascontiguousarray(X)).to(self._device)
        if self.preprocessor_.is_image:
            xt = xt.permute(0, 3, 1, 2).contiguous()
        return predict_proba(self.module_, self.preprocessor_, xt).cpu().numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class labels (original class values)."""
        return self.classes_[self.predict_proba(X).argmax(1)]

    def score(self, X: np.ndarray, y: Any) -> float:
        """Accuracy against true labels ``y``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))
