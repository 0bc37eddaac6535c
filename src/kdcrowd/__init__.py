"""kdcrowd: learning from crowds with transition-matrix crowd models and KD-Crowd.

Three doors into one engine:

* the command line ``kdcrowd`` (:mod:`kdcrowd.cli`);
* a scikit-learn style estimator, :class:`kdcrowd.estimator.CrowdClassifier`;
* plain ``torch.nn.Module`` pieces: crowd models in :mod:`kdcrowd.models.crowd`, losses in
  :mod:`kdcrowd.losses`, robust students in :mod:`kdcrowd.students`.

Crowd labels enter through :class:`kdcrowd.data.Annotations`; data sets through
:func:`kdcrowd.data.datasets.load_dataset`.
"""

__version__ = "0.1.0"
