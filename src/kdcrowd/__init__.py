"""kdcrowd: learning from crowds with transition-matrix crowd models and KD-Crowd.

Three doors into one engine:

* the command line ``kdcrowd`` (:mod:`kdcrowd.cli`);
* a scikit-learn estimator, :class:`kdcrowd.KDCrowdClassifier` (:mod:`kdcrowd.estimator`);
* plain ``torch.nn.Module`` pieces: crowd models in :mod:`kdcrowd.models.crowd`, losses in
  :mod:`kdcrowd.losses`, robust students in :mod:`kdcrowd.students`.

Crowd labels enter through :class:`kdcrowd.data.Annotations`; data sets through
:func:`kdcrowd.data.datasets.load_dataset`.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .estimator import CrowdClassifier, KDCrowdClassifier

__all__ = ["CrowdClassifier", "KDCrowdClassifier", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `import kdcrowd` (and the CLI's start) stays light.
    if name in ("KDCrowdClassifier", "CrowdClassifier"):
        from . import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'kdcrowd' has no attribute '{name}'")
