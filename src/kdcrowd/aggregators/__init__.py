"""More label aggregators: GLAD, MACE, Wawa, ZeroBasedSkill, one-coin Dawid–Skene, M-MSR.

The methods practitioners compare learning-from-crowds models against, written in torch
beside :mod:`kdcrowd.aggregation` (majority vote, Dawid–Skene) with the same input
(an annotation set ``ann`` with aligned ``item``, ``worker``, ``label`` arrays and the
sizes ``n_items``, ``n_workers``, ``n_classes``) and the same conventions: nothing is
densified to ``N x M``; every step is a gather / ``index_add`` over the ``A``
annotations (M-MSR alone builds an ``M x M`` worker-agreement matrix, which is what the
method is about); items without annotations get label ``-1``; ties in hard labels go to
the lowest class index. Everything runs on ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``)
in float64 on the CPU and float32 elsewhere unless ``dtype`` is given.

Each method follows crowd-kit 1.4.2's implementation (initialisation, number of
iterations, stopping rule, defaults), so that both give the same labels on the same
data; where crowd-kit does something a user would not expect, the docstring says what
is done here and why. One difference for all of them: crowd-kit counts the classes that
occur in the data, these functions use ``ann.n_classes``; both agree when every class
is used at least once.

Every function takes ``gold``: gold questions, ``(N,)`` class indices with ``-1`` for
unknown (see :mod:`kdcrowd.data.gold`). Gold items get their known label and one-hot
posterior; one-coin DS, GLAD and MACE also clamp their posteriors in every E-step, as
:func:`kdcrowd.aggregation.dawid_skene` does, and Wawa and ZBS measure the workers' gold
answers against the known class, so that the worker estimates, and through them the other
items' labels, are anchored on gold. M-MSR cannot use them (a warning says so). Without
gold every result is what it was before the functions took gold.

All functions return an :class:`AggregatorResult`.
"""

from __future__ import annotations

from typing import Any

from ._common import AggregatorResult
from .glad import glad
from .mace import mace
from .mmsr import mmsr
from .one_coin_ds import one_coin_dawid_skene
from .wawa import wawa, zero_based_skill

__all__ = [
    "AGGREGATORS",
    "AggregatorResult",
    "canonical_aggregator",
    "glad",
    "mace",
    "mmsr",
    "one_coin_dawid_skene",
    "run_aggregator",
    "wawa",
    "zero_based_skill",
]

AGGREGATORS: dict[str, Any] = {
    "glad": glad,
    "mace": mace,
    "wawa": wawa,
    "zbs": zero_based_skill,
    "one-coin-ds": one_coin_dawid_skene,
    "mmsr": mmsr,
}

_ALIASES = {
    "zero_based_skill": "zbs", "zero-based-skill": "zbs", "zerobasedskill": "zbs",
    "one_coin_ds": "one-coin-ds", "onecoin-ds": "one-coin-ds", "one-coin-dawid-skene": "one-coin-ds",
    "m-msr": "mmsr", "m_msr": "mmsr",
}


def canonical_aggregator(method: str) -> str | None:
    """The :data:`AGGREGATORS` key that ``method`` (any case, or an alias) names, else ``None``."""
    key = str(method).strip().lower()
    return key if key in AGGREGATORS else _ALIASES.get(key)


def run_aggregator(ann: Any, method: str, **kw: Any) -> AggregatorResult:
    """Run the aggregator named ``method`` (a key of :data:`AGGREGATORS` or an alias)
    with the keywords of its function; an unknown keyword is one clear error."""
    import inspect

    name = canonical_aggregator(method)
    if name is None:
        raise ValueError(f"unknown aggregation method {method!r}; expected one of {', '.join(AGGREGATORS)}")
    fn = AGGREGATORS[name]
    allowed = set(inspect.signature(fn).parameters) - {"ann"}
    bad = set(kw) - allowed
    if bad:
        raise ValueError(f"unexpected option(s) {sorted(bad)} for method {name!r}; allowed: {', '.join(sorted(allowed))}")
    return fn(ann, **kw)
