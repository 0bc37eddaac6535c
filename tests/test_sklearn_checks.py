"""scikit-learn's estimator checks on KDCrowdClassifier.

A 1-D ``y`` is one annotator's labels (a crowd of one), so ``fit(X, y)`` is an ordinary
classifier fit and the checks apply. Three fast configurations run them: majority vote,
the Max-MIG crowd model and KD-Crowd itself (MLP backbone, CPU, a few epochs; the
crowd-label validation split is switched on (the default is off) and is used on the checks'
larger data sets). The only check marked as not applicable is listed in ``NOT_APPLICABLE`` with
its reason; the marks are strict, so a check that starts passing fails here and the list
is updated.
"""

from __future__ import annotations

import inspect

import pytest
import sklearn
from sklearn.utils.fixes import parse_version

from kdcrowd import KDCrowdClassifier

if parse_version(sklearn.__version__) < parse_version("1.6"):
    pytest.skip("parametrize_with_checks(expected_failed_checks=...) needs scikit-learn >= 1.6", allow_module_level=True)

from sklearn.utils.estimator_checks import parametrize_with_checks

NOT_APPLICABLE = {
    "check_supervised_y_2d": (
        "a 2-D y is a wide (N, M) annotation matrix of class indices, one column per worker, "
        "so an (N, 1) y is a crowd of one worker, not a column vector to ravel with a DataConversionWarning"
    ),
}

FAST = {"backbone": "mlp", "batch_size": 32, "lr": 1e-2, "device": "cpu", "validation_fraction": 0.1}  # the held-out path, where the data are large enough
ESTIMATORS = [
    KDCrowdClassifier(method="mv", epochs=10, **FAST),
    KDCrowdClassifier(method="maxmig", epochs=10, **FAST),
    KDCrowdClassifier(method="kdcrowd", teacher="maxmig", epochs=5, **FAST),
]

_strict = {"xfail_strict": True} if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters else {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: NOT_APPLICABLE, **_strict)
def test_sklearn_compatible_estimator(estimator, check) -> None:
    check(estimator)
