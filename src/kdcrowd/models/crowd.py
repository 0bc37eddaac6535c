"""The crowd models under their former single module: re-exports of :mod:`kdcrowd.models.base`
(the contract, the registry) and of the one-file-per-model modules
(:mod:`~kdcrowd.models.crowdlayer`, :mod:`~kdcrowd.models.maxmig`, :mod:`~kdcrowd.models.conal`).
New code imports from those modules; this one keeps existing imports working."""

from __future__ import annotations

from .base import (  # noqa: F401
    CROWD_MODELS,
    CrowdModel,
    _as_long,
    _check_annotations,
    _gather_columns,
    _masked_labels,
    _observed,
    build_crowd_model,
    register_crowd_model,
)
from .conal import CoNAL, CoNALConfig
from .crowdlayer import CROWD_LAYER_VARIANTS, CrowdLayer, CrowdLayerConfig
from .maxmig import MaxMIG, MaxMIGConfig

__all__ = ["CrowdModel", "CrowdLayer", "MaxMIG", "CoNAL", "CROWD_LAYER_VARIANTS", "CrowdLayerConfig", "MaxMIGConfig", "CoNALConfig"]
