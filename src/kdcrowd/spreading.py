"""Label spreading over the items' features: the classifier's probabilities smoothed over
a nearest-neighbour graph of every item a fit sees (Zhou et al., "Learning with local and
global consistency", NIPS 2004).

A classifier on frozen pretrained features labels each item from its own features alone;
items whose features lie close together mostly share their class. Spreading lets each
item's label lean on its neighbours': with ``P`` the classifier's probabilities of the
``n`` items (the anchors) and ``S = D^-1/2 W D^-1/2`` the symmetrically normalised graph
(``W``: each item joined to its ``k`` nearest neighbours by cosine similarity of the
standardised features, made symmetric), the spread probabilities are the fixed point of

    Q = (1 − α) · P + α · S · Q

row-normalised, reached by iterating from ``Q = P`` (the iteration contracts by ``α``
each step, since S's eigenvalues lie in [−1, 1]). It is transductive: the graph holds the
fitted items and the items being predicted, so the items to label (``kdcrowd fit
--predict-images``) help each other and the training items. The same rule predicts new
items later: the graph of the fit's items (the items to label given to the fit among
them, which the fitted model keeps) and the new ones (:func:`spread_new`).

Why by hand: scikit-learn's ``LabelSpreading`` spreads from hard labels with unlabelled
items marked ``-1``; here every item has a soft prior (the classifier's) and the graph is
built in chunks on the device, never as a dense ``n × n`` matrix.

The defaults (5 neighbours, α = 0.8) were chosen on LabelMe's frozen EfficientNet-Lite0
features by the accuracy of the 500 validation images, never the test images
(``benchmarks/pretrained_features.py --spreading-sweep`` →
``benchmarks/results/practitioner_pretrained/cpu_spreading_validation.json``,
docs/RESULTS.md §7h): 90.9 % against the classifier's 88.1 % (seeds 0–2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .config import ConfigError, _name, bounded, check_fields

__all__ = ["LabelSpreading", "knn_graph", "spread", "spread_probabilities", "spread_new"]


@dataclass(frozen=True)
class LabelSpreading:
    """Label spreading of the final labels and predictions (:mod:`kdcrowd.spreading`)."""

    label_spreading: Literal["auto", "on", "off"] = "auto"
    """Smooth the classifier's probabilities over a nearest-neighbour graph of the items'
    features (the fitted items and the items to predict together): auto (default: on
    when the items are frozen pretrained image features computed by this fit, where it
    was chosen on LabelMe's validation images, docs/RESULTS.md §7h; off otherwise), on
    (any feature rows: --features, --texts, frozen image features; not pixels) or off."""
    spreading_neighbours: int = bounded(5, ge=1)
    """Label spreading: each item's number of nearest neighbours in the graph (cosine
    similarity of the standardised features)."""
    spreading_alpha: float = bounded(0.8, ge=0.0, lt=1.0)
    """Label spreading: the weight of the neighbours against the item's own classifier
    probabilities (0: no spreading)."""

    def __post_init__(self) -> None:
        check_fields(self)

    def active(self, frozen_features: bool) -> bool:
        """Whether to spread: ``on``, or ``auto`` with frozen pretrained image features."""
        return self.label_spreading == "on" or (self.label_spreading == "auto" and frozen_features)

    def check_used(self, frozen_features: bool) -> None:
        """Refuse a spreading setting other than its default where label spreading does not
        run (it would change nothing, silently)."""
        changed = [k for k in ("spreading_neighbours", "spreading_alpha") if getattr(self, k) != getattr(LabelSpreading, k)]
        if changed and not self.active(frozen_features):
            raise ConfigError(f"{_name(changed[0])} is a setting of label spreading, which is off for these items "
                              f"(on with {_name('label_spreading')} on, or auto with frozen pretrained image features); set {_name('label_spreading')} on, or drop {_name(changed[0])}")

    def check_items(self, shape: tuple[int, ...]) -> None:
        """Refuse ``on`` for items ``shape`` (N, ...) that are not feature rows (pixels)."""
        if self.label_spreading == "on" and len(shape) != 2:
            raise ConfigError(
                f"{_name('label_spreading')} on needs feature rows (features, texts or frozen image features); the images {tuple(shape)} are trained on as pixels "
                f"(set {_name('image_features')} auto or frozen, or {_name('label_spreading')} auto or off)"
            )


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Standardised (per column, over these items), then scaled to unit length."""
    x = x.float()
    x = (x - x.mean(0)) / (x.std(0, unbiased=False) + 1e-6)
    return torch.nn.functional.normalize(x, dim=1)


@torch.no_grad()
def knn_graph(features: torch.Tensor, neighbours: int, chunk: int | None = None) -> torch.Tensor:
    """``S = D^-1/2 W D^-1/2`` as a sparse ``(n, n)`` tensor: ``W[i, j] = 1`` when ``j`` is
    among the ``neighbours`` nearest items of ``i`` or ``i`` among those of ``j`` (cosine
    similarity of the standardised features; an item is not its own neighbour).

    The similarities are computed ``chunk`` rows at a time: memory ``chunk × n``, not
    ``n × n`` (by default as many rows as keep it under 2²⁶ values, 256 MB, and at most
    4,096). Needs at least 2 items; ``neighbours`` is capped at ``n − 1``."""
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"label spreading needs at least 2 items; got {n}")
    k = min(int(neighbours), n - 1)
    z = _unit_rows(features)
    chunk = chunk or max(1, min(4096, 2**26 // n))
    cols = torch.empty((n, k), dtype=torch.long, device=z.device)
    for s in range(0, n, chunk):
        sim = z[s : s + chunk] @ z.T
        rows = torch.arange(s, min(s + chunk, n), device=z.device)
        sim[torch.arange(len(rows), device=z.device), rows] = -float("inf")  # not its own neighbour
        cols[s : s + chunk] = sim.topk(k, dim=1).indices
    rows = torch.arange(n, device=z.device).repeat_interleave(k)
    cols = cols.reshape(-1)
    edges = torch.unique(torch.cat([rows * n + cols, cols * n + rows]))  # both directions, once each (sorted): max(A, Aᵀ)
    i, j = edges // n, edges % n
    deg = torch.bincount(i, minlength=n).float()
    # The indices are unique and sorted by construction, so the invariant check is skipped; in a scope,
    # because torch 2.11 warns of "implicitly disabled" checks even with check_invariants=False.
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        return torch.sparse_coo_tensor(torch.stack([i, j]), deg[i].rsqrt() * deg[j].rsqrt(), (n, n), is_coalesced=True, check_invariants=False)


@torch.no_grad()
def spread(anchors: torch.Tensor, graph: torch.Tensor, alpha: float, tol: float = 1e-6, max_iter: int = 200) -> torch.Tensor:
    """The fixed point of ``Q = (1 − α) P + α S Q`` from ``Q = P``, rows normalised to sum to 1.

    Iterates until no entry moves by more than ``tol`` (the error shrinks by a factor
    ``α`` per step: about 60 steps at α = 0.8) or ``max_iter`` steps."""
    p = anchors.float()
    q = p
    for _ in range(max_iter):
        nxt = (1 - alpha) * p + alpha * torch.sparse.mm(graph, q)
        done = bool((nxt - q).abs().max() <= tol)
        q = nxt
        if done:
            break
    return q / q.sum(1, keepdim=True).clamp_min(1e-12)


def spread_probabilities(features: np.ndarray, anchors: np.ndarray, config: LabelSpreading, device: torch.device | str = "cpu") -> np.ndarray:
    """The spread probabilities (n, K) of ``n`` items with ``features`` (n, D) and classifier
    probabilities ``anchors`` (n, K), on ``device``."""
    if np.ndim(features) != 2:
        raise ValueError(f"label spreading needs feature rows (n, D), not items of shape {np.shape(features)[1:]}")
    x = torch.as_tensor(np.ascontiguousarray(features, dtype=np.float32), device=device)
    p = torch.as_tensor(np.ascontiguousarray(anchors, dtype=np.float32), device=device)
    return spread(p, knn_graph(x, config.spreading_neighbours), config.spreading_alpha).cpu().numpy()


def fitted_twins(fitted: np.ndarray, new: np.ndarray, device: torch.device | str = "cpu", rtol: float = 1e-5) -> np.ndarray:
    """For each row of ``new``, the index of a fitted row it equals (within ``rtol`` of that
    row's length: the features of one item computed again), or ``-1``. The nearest fitted
    row is found in float32, in chunks (no dense new × fitted matrix beyond a chunk), and
    the match is confirmed in float64 on that row alone."""
    a = torch.as_tensor(np.ascontiguousarray(fitted), device=device)
    b = torch.as_tensor(np.ascontiguousarray(new), device=device)
    out = torch.full((len(b),), -1, dtype=torch.long, device=a.device)
    if len(a) == 0 or len(b) == 0:
        return out.cpu().numpy()
    a32 = a.float()
    a2 = (a32 * a32).sum(1)
    chunk = max(1, min(4096, 2**26 // len(a)))
    for s in range(0, len(b), chunk):
        bb = b[s : s + chunk]
        idx = (a2 - 2 * bb.float() @ a32.T).argmin(1)  # the nearest fitted row (|b|² is the same for every column)
        near = a[idx].double()
        close = ((bb.double() - near) ** 2).sum(1) <= (rtol**2) * (near * near).sum(1).clamp_min(1e-30)
        out[s : s + chunk] = torch.where(close, idx, -1)
    return out.cpu().numpy()


def spread_new(fitted: np.ndarray, fitted_anchors: np.ndarray, new: np.ndarray, new_anchors: np.ndarray, config: LabelSpreading, device: torch.device | str = "cpu") -> np.ndarray:
    """The spread probabilities of ``new`` items: over the graph of the fitted items and
    the new ones together (their rows of :func:`spread_probabilities`). ``fitted`` and
    ``fitted_anchors``: every item of the graph the fit spread over (the training items and
    the items to predict given to the fit), as the fit built it. A new row that is a
    fitted item again (:func:`fitted_twins`: the training items predicted) is that item, not
    a second node beside it: it gets the fitted item's row, so the fitted items predicted
    alone give what the fit gave them."""
    twin = fitted_twins(fitted, new, device)
    fresh = twin < 0
    both = spread_probabilities(np.concatenate([fitted, new[fresh]]), np.concatenate([fitted_anchors, new_anchors[fresh]]), config, device)
    out = np.empty((len(new), both.shape[1]), dtype=both.dtype)
    out[fresh] = both[len(fitted) :]
    out[~fresh] = both[twin[~fresh]]
    return out
