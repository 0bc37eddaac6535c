"""Models: backbones (:mod:`.backbones`) and the crowd models, one file each behind the
contract and registry of :mod:`.base`. Importing the package registers every crowd
model: a new one is a module here, listed below, plus its test."""

# isort: off  (registration order: the order of the names in listings)
from . import crowdlayer  # noqa: F401
from . import maxmig  # noqa: F401
from . import conal  # noqa: F401
from . import tracereg  # noqa: F401
from . import geocrowdnet  # noqa: F401
from . import unionnet  # noqa: F401
from . import madl  # noqa: F401
from . import crowdar  # noqa: F401
from . import annotmix  # noqa: F401
# isort: on
from .base import CROWD_MODELS, CrowdModel, build_crowd_model, crowd_model_names, register_crowd_model

__all__ = ["CROWD_MODELS", "CrowdModel", "build_crowd_model", "crowd_model_names", "register_crowd_model"]
