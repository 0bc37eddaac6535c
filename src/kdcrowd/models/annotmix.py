"""annot-mix (Herde, Lührs, Huseljic & Sick, "annot-mix: learning with noisy class labels
from multiple annotators via a mixup extension", ECAI 2024; arXiv:2405.03386)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdcrowd.losses import _no_autocast
from kdcrowd.config import bounded, check_fields
from kdcrowd.models._common import MaskedBatchNorm1d, RunningConfusion, annotation_log_likelihood, eta_prior_bias, feature_dim_of, make_config, mix_inputs, observed_pairs, to_device
from kdcrowd.models.base import CrowdModel, _check_annotations, _observed, register_crowd_model

__all__ = ["AnnotMix", "AnnotMixConfig"]


@contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Inside: forward passes of ``module`` in training mode leave the running statistics
    (and batch counters) of its batch-norm layers as they were on entry; the batch
    statistics still normalise, and gradients flow as usual. The layers update copies of
    their buffers meanwhile: updating (or restoring) the buffers in place would change
    tensors an earlier pass saved for its backward."""
    names = ("running_mean", "running_var", "num_batches_tracked")
    # only layers in training mode update their statistics
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [(m, n, getattr(m, n)) for m in layers for n in names if getattr(m, n, None) is not None]
    for m, n, b in saved:
        setattr(m, n, b.clone())
    try:
        yield
    finally:
        for m, n, b in saved:
            setattr(m, n, b)


@dataclass
class AnnotMixConfig:
    """Options of :class:`AnnotMix` (defaults: the reference benchmark's,
    ``conf/classifier/annot_mix.yaml`` and ``maml/architectures/_base.py``).

    alpha: mixup coefficients ``λ ~ Beta(α, α)`` per (item, annotator) pair (1.0); 0 turns
        mixup off (plain marginal likelihood of the observed pairs).
    eta: prior accuracy of every annotator, the output bias (0.9).
    mix_only_annotators: mix each pair only with pairs of the same item (``False``).
    embed_dim: annotator / sample embedding size (``embed_size`` 128).
    dropout: dropout before the hidden layer of the annotator model (0.5).
    confusion_rate: rate of the running per-worker confusion behind
        ``transition_matrices()`` (~1/rate last annotations per worker).
    joint_pass: ``True`` (default): the backbone's training pass runs once over ``[x; x̃]``
        (B + P rows): the clean rows, whose logits the contract returns, share the mixed
        rows' batch-norm batch statistics and running statistics. ``False`` (the
        reference's ``training_step``): the training pass sees only the P mixed rows, so
        its batch norm normalises them, and updates its running statistics, with their
        statistics alone; the clean logits come from a second pass over ``x`` that leaves
        the running statistics as they were. A batch of one item or with one observed pair
        always runs the single pass (batch norm in training mode needs two rows). On
        protocol-labelme (CPU, lr 1e-4, seeds 0-4) last-epoch validation accuracy is 84.3
        (``True``) vs 84.0 (``False``), test 83.7 both
        (``benchmarks/results/protocol/cpu_annotmix_review/``).
    """

    alpha: float = bounded(1.0, ge=0.0)
    eta: float = bounded(0.9, gt=0.0, lt=1.0)
    mix_only_annotators: bool = False
    embed_dim: int = bounded(128, ge=1)
    dropout: float = bounded(0.5, ge=0.0, lt=1.0)
    confusion_rate: float = bounded(0.02, gt=0.0, le=1.0)
    joint_pass: bool = True

    def __post_init__(self) -> None:
        check_fields(self)


@register_crowd_model("annot-mix", config=AnnotMixConfig)
class AnnotMix(CrowdModel):
    """annot-mix: mixup over (item, annotator, label) triples of a multi-annotator model.

    Annotator-performance model for an (item i, annotator m) pair: sample embedding
    ``s = Linear(h_i)`` of the backbone's *detached* penultimate features, annotator
    embedding ``a_m`` (a linear map of the one-hot worker vector: a table row plus a bias,
    initialised U(±1/√M)), ``z = ReLU(BN(Linear(Dropout([s, a]))))`` and
    ``T_{i,m} = row-softmax(reshape(Linear(z), K×K))`` with output bias
    ``log(η(K−1)/(1−η))·I``. ``p(y^m | x_i) = Σ_k p(k|x_i) T_{i,m}[k, :]``.

    Training step (``alpha > 0``, training mode): the P observed pairs of the batch are
    expanded to ``(x_i, onehot(m), onehot(y_{i,m}))``; each pair p is mixed with pair
    ``π(p)`` of a random permutation π of the pairs (within the same item if
    ``mix_only_annotators``) with ``λ_p ~ Beta(α, α)``:
    ``x̃ = λ x_p + (1−λ) x_π(p)``, ``ã = λ a_p + (1−λ) a_π(p)`` (mixing one-hot vectors before
    the linear embedding = mixing the embeddings, bias included), ``z̃ = λ e_y + (1−λ) e_y'``.
    The backbone and the annotator model see the mixed inputs and the loss is
    ``−Σ_p z̃_p · log p(ỹ | x̃_p, ã_p) / P``. Draws use the global torch RNG (``Beta`` and
    ``randperm``), like the rest of the training loop, so ``torch.manual_seed`` and the
    loop's checkpointed RNG state make runs repeatable.

    Read from the reference implementation ``maml/classifiers/_annot_mix.py``
    (``AnnotMixModule``, ``AnnotMixClassifier``), ``maml/utils/_mixup.py`` (``mixup``,
    ``permute_same_value_indices``) and ``maml/architectures/_base.py`` (``_ap_net_params``:
    ``ap_embed_a = Linear(M, 128)``, ``ap_embed_x = Linear(F, 128)``,
    ``ap_hidden = Dropout(0.5), Linear(256, 128), BN, ReLU``, ``ap_output = Linear(128, K²)``)
    of github.com/ies-research/multi-annotator-machine-learning, branch ``annot-mix``;
    ``conf/classifier/annot_mix.yaml``: α 1.0, η 0.9, ``mix_only_annotators`` false, embed
    size 128. Benchmark optimiser (``conf/data/label_me.yaml``): RAdam lr 1e-2 (classifier
    weight decay 1e-4, none on the annotator model), cosine over 50 epochs, batch 64;
    CIFAR-10N: lr 1e-3, 100 epochs, batch 128. Published LabelMe last-epoch accuracy (frozen
    DINOv2 + MLP head): 85.8 (MV 80.5).

    Departures: the contract also returns the true-label logits of the *unmixed* batch, so
    the backbone runs once on ``[x; x̃]`` (B + P rows) and only the P mixed rows enter the
    loss (the backbone's batch-norm statistics then include the clean rows; the
    reference's network sees the mixed rows alone: ``joint_pass=False``, which runs the
    clean rows in a second pass); the annotator model's batch norm is
    :class:`~kdcrowd.models._common.MaskedBatchNorm1d` (the same statistics; it also
    accepts a single pair). A batch without any observed annotation has loss exactly 0.
    Outside training mode (or ``alpha = 0``) the loss is the unmixed marginal likelihood of
    the observed pairs. ``x`` is mixed as given: on cached frozen features (kdcrowd's
    ``protocol-labelme``) the mixup is of feature vectors, whereas the reference's LabelMe
    run mixes augmented images in front of its frozen DINOv2 (``maml/data/_label_me.py``,
    ``maml/architectures/_dino.py``), a different input to the head for the same λ.

    ``transition_matrices()``: the confusion depends on the item; this returns each
    worker's *running average over the training items it annotated* -- the matrices of the
    unmixed observed pairs of each training batch (dropout off, batch statistics, no
    gradient), averaged exponentially over the worker's last ~``1/confusion_rate``
    annotations (a persistent buffer starting at the η prior). :meth:`posterior` uses these
    averages; :meth:`item_transitions` gives ``T_{i,m}``.
    """

    takes_all_observed = True

    def __init__(self, backbone: nn.Module, n_workers: int, n_classes: int, config: AnnotMixConfig | None = None, feature_dim: int | None = None, **overrides: Any) -> None:
        super().__init__(backbone, n_workers, n_classes)
        self.config = c = make_config(AnnotMixConfig, config, overrides)
        feature_dim = feature_dim_of(backbone, feature_dim, "annot-mix")
        M, K, E = self.n_workers, self.n_classes, int(c.embed_dim)
        bound = 1.0 / math.sqrt(M)
        self.annot_embed = nn.Parameter(torch.empty(M, E).uniform_(-bound, bound))
        self.annot_bias = nn.Parameter(torch.empty(E).uniform_(-bound, bound))
        self.sample_embed = nn.Linear(int(feature_dim), E)
        self.dropout = nn.Dropout(float(c.dropout))
        self.hidden = nn.Linear(2 * E, E)
        self.bn = MaskedBatchNorm1d(E)
        self.out = nn.Linear(E, K * K)
        with torch.no_grad():
            self.out.bias.copy_(eta_prior_bias(K, c.eta))
        self.confusion = RunningConfusion(M, torch.softmax(eta_prior_bias(K, c.eta).view(K, K), -1), c.confusion_rate)

    def extra_repr(self) -> str:
        return f"n_workers={self.n_workers}, n_classes={self.n_classes}, config={self.config}"

    def _worker_log_transitions(self, idx: torch.Tensor) -> torch.Tensor:
        return self.confusion.log_transitions(idx)

    def annotator_embeddings(self, idx: torch.Tensor) -> torch.Tensor:
        return self.annot_embed[idx].float() + self.annot_bias.float()

    def _log_confusions(self, features: torch.Tensor, a: torch.Tensor, mask: torch.Tensor | None, train_pass: bool = True) -> torch.Tensor:
        """``(..., K, K)`` log confusions from features ``(..., F)`` (detached here) and
        annotator embeddings ``(..., E)``; ``train_pass=False``: no dropout and no update of
        the batch-norm running statistics."""
        s = self.sample_embed(features.detach().float())
        h = torch.cat([s, a], dim=-1)
        if train_pass:
            h = self.dropout(h)
        z = torch.relu(self.bn(self.hidden(h), mask, update=train_pass))
        K = self.n_classes
        return F.log_softmax(self.out(z).view(*z.shape[:-1], K, K), dim=-1)

    @torch.no_grad()
    def item_transitions(self, x: torch.Tensor, workers: torch.Tensor) -> torch.Tensor:
        """``(B, L, K, K)`` instance-dependent ``T_{i,m}`` of workers ``(B, L)`` on items ``x``."""
        logits, feats = self._batch_logits_and_features(x)
        workers = workers.to(logits.device).long()
        with _no_autocast(logits):
            a = self.annotator_embeddings(workers.clamp(min=0))
            f = feats.float().unsqueeze(1).expand(*workers.shape, feats.shape[-1])
            return self._log_confusions(f, a, workers >= 0, train_pass=False).exp()

    def _permutation(self, item: torch.Tensor) -> torch.Tensor:
        P = item.shape[0]
        if not self.config.mix_only_annotators:
            return torch.randperm(P, device=item.device)
        # pairs are item-major: sorting by (item, random key) permutes within each item's block
        key = item.double() + 0.5 * torch.rand(P, device=item.device, dtype=torch.float64)
        return torch.argsort(key)

    def crowd_loss(self, x: torch.Tensor, workers: torch.Tensor, labels: torch.Tensor, all_observed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``all_observed``: every entry of ``workers`` / ``labels`` is observed (see
        :attr:`~kdcrowd.models.base.CrowdModel.takes_all_observed`); the pairs are then
        gathered without a host synchronisation."""
        _check_annotations(workers, labels, x.shape[0])
        workers = workers.to(x.device).long()
        labels = labels.to(x.device).long()
        obs = _observed(workers, labels)
        mix = self.training and self.config.alpha > 0
        item, wk, lab = observed_pairs(workers, labels, all_observed) if mix else (None, None, None)
        if not mix or item.numel() == 0:
            logits, feats = self._batch_logits_and_features(x)
            with _no_autocast(logits):
                f = feats.float().unsqueeze(1).expand(*workers.shape, feats.shape[-1])
                log_t = self._log_confusions(f, self.annotator_embeddings(workers.clamp(min=0)), obs)
                ll = annotation_log_likelihood(F.log_softmax(logits.float(), -1), log_t, labels)
                loss = -torch.where(obs, ll, torch.zeros_like(ll)).sum() / obs.sum().clamp(min=1).float()
                if self.training:  # the running per-worker confusion, as with mixup (alpha=0 had kept the prior)
                    self._update_confusion(feats, workers, obs, logits)
            return loss, logits
        B, P, K = x.shape[0], item.shape[0], self.n_classes
        # drawn on the host from the global CPU generator; copied without waiting for the device
        lam = to_device(torch.distributions.Beta(float(self.config.alpha), float(self.config.alpha)).sample((P,)), x.device)
        perm = self._permutation(item)
        xp = x[item]
        x_mix = mix_inputs(xp, xp[perm], lam)
        if self.config.joint_pass or min(B, P) < 2:  # batch norm in training mode needs two rows a pass
            logits_all, feats_all = self._batch_logits_and_features(torch.cat([x, x_mix], dim=0))
            logits, feats, logits_mix, feats_mix = logits_all[:B], feats_all[:B], logits_all[B:], feats_all[B:]
        else:
            logits_mix, feats_mix = self._batch_logits_and_features(x_mix)
            with _running_stats_kept(self.backbone):
                logits, feats = self._batch_logits_and_features(x)
        with _no_autocast(logits_mix):
            a = self.annotator_embeddings(wk)
            la = lam.view(-1, 1)
            a_mix = la * a + (1 - la) * a[perm]
            z = F.one_hot(lab, K).float()
            z_mix = la * z + (1 - la) * z[perm]
            log_t = self._log_confusions(feats_mix, a_mix, None)  # (P, K, K)
            log_annot = torch.logsumexp(F.log_softmax(logits_mix.float(), -1).unsqueeze(-1) + log_t, dim=1)  # (P, K)
            loss = -(z_mix * log_annot).sum() / P
            self._update_confusion(feats, workers, obs, logits)
        return loss, logits

    @torch.no_grad()
    def _update_confusion(self, feats: torch.Tensor, workers: torch.Tensor, obs: torch.Tensor, logits: torch.Tensor) -> None:
        """The running per-worker confusion from the batch's unmixed observed pairs (no
        dropout, no update of the batch-norm statistics)."""
        f = feats.float().unsqueeze(1).expand(*workers.shape, feats.shape[-1])
        clean = self._log_confusions(f, self.annotator_embeddings(workers.clamp(min=0)), obs, train_pass=False)
        p_clean = torch.softmax(logits.float().detach(), -1).unsqueeze(1)
        self.confusion.update(workers, clean.exp(), p_clean * obs.unsqueeze(-1))
