"""The host synchronisations taken out of the training steps change no number: annot-mix's
observed pairs of annotations without padding (no ``nonzero``), its mixup coefficients
copied to the device without waiting, MIG^f's probability floor made on the device."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from test_crowd_models import TinyNet
from test_methods import assert_same_numbers, cfg, tiny_dataset

from kdcrowd.losses import DEFAULT_PROB_EPS, DEFAULT_TV_TEMPERATURE, F_DIVERGENCES, _log_matmul_exp, _mig_terms, mig_f
from kdcrowd.methods import run_on_dataset
from kdcrowd.models._common import observed_pairs, to_device
from kdcrowd.models.annotmix import AnnotMix
from kdcrowd.models.maxmig import MaxMIG
from kdcrowd.objectives import CrowdObjective, padded_annotations


def _dense(B: int = 6, L: int = 3, M: int = 5, K: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, M, (B, L), generator=g), torch.randint(0, K, (B, L), generator=g)


def test_observed_pairs_of_annotations_without_padding_are_those_of_nonzero() -> None:
    w, y = _dense()
    for a, b in zip(observed_pairs(w, y, all_observed=True), observed_pairs(w, y)):
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("mix_only_annotators", [False, True])
def test_annot_mix_loss_gradients_and_buffers_are_the_same_when_told_all_observed(mix_only_annotators: bool) -> None:
    M, K, D = 5, 3, 4
    torch.manual_seed(0)
    base = AnnotMix(TinyNet(D, K), M, K, embed_dim=8, mix_only_annotators=mix_only_annotators).train()
    x = torch.randn(6, D)
    w, y = _dense(M=M, K=K)
    got = []
    for all_observed in (False, True):
        model = copy.deepcopy(base)
        torch.manual_seed(3)  # Beta, the pair permutation and dropout draw from the global generator
        loss, logits = model.crowd_loss(x, w, y, all_observed=all_observed)
        loss.backward()
        got.append([loss, logits, *(p.grad for p in model.parameters()), *model.buffers()])
    assert all(torch.equal(a, b) for a, b in zip(*got))


def test_crowd_objective_gives_all_observed_only_when_every_entry_is_observed() -> None:
    w, y = _dense()
    annotmix = AnnotMix(TinyNet(4, 3), 5, 3)
    assert CrowdObjective(annotmix, w, y)._loss_options == {"all_observed": True}
    w_pad = w.clone()
    w_pad[2, 1] = -1
    assert CrowdObjective(annotmix, w_pad, y)._loss_options == {}
    assert CrowdObjective(MaxMIG(TinyNet(4, 3), 5, 3), w, y)._loss_options == {}  # its loss takes no such keyword


@pytest.mark.parametrize("method,options", [("annot-mix", {}), ("kdcrowd", {"teacher": "annot-mix"})])
def test_runs_are_bit_identical_with_and_without_the_all_observed_path(method: str, options: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = tiny_dataset()
    w, y = padded_annotations(ds.annotations, torch.device("cpu"))
    assert bool(((w >= 0) & (y >= 0)).all())  # the symmetric case: every item has the same number of labels
    runs = []
    for fast in (True, False):
        monkeypatch.setattr(AnnotMix, "takes_all_observed", fast)
        metrics, out = run_on_dataset(ds, cfg(method, epochs=2, **options))
        runs.append((metrics, out.module.state_dict()))
    assert_same_numbers(*runs[0], *runs[1])


@pytest.mark.parametrize("f", F_DIVERGENCES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mig_f_floor_made_on_the_device_is_the_same_number(f: str, dtype: torch.dtype) -> None:
    """mig_f equals, to the bit, the formula floored with a host ``torch.tensor`` (as it
    was before the floor moved to the device), with and without a prior, with zero
    probabilities (which only the floor keeps finite)."""
    g = torch.Generator().manual_seed(0)
    la = torch.log_softmax(torch.randn(6, 3, generator=g, dtype=dtype), -1)
    lb = torch.log_softmax(torch.randn(6, 3, generator=g, dtype=dtype), -1)
    la[0, 1] = lb[2, 0] = -math.inf
    floor = torch.tensor(math.log(DEFAULT_PROB_EPS), dtype=dtype)
    for prior in (None, torch.log(torch.tensor([0.5, 0.5, 0.0], dtype=dtype))):
        lp = torch.full((3,), -math.log(3), dtype=dtype) if prior is None else torch.logaddexp(prior, floor)
        log_r = _log_matmul_exp(torch.logaddexp(la, floor) - lp, torch.logaddexp(lb, floor))
        diag, off = _mig_terms(log_r, f, DEFAULT_TV_TEMPERATURE)
        ref = torch.diagonal(diag).mean() - off.masked_fill(torch.eye(6, dtype=torch.bool), 0.0).sum() / 30
        got = mig_f(la, lb, prior, f)
        assert got.dtype == dtype and torch.isfinite(got) and torch.equal(got, ref), (prior, got, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned, non-blocking copy is taken to a CUDA device only")
def test_to_device_keeps_the_values() -> None:
    """The copy through pinned memory without waiting gives the host tensor's values (on the
    CPU to_device is ``t.to("cpu")``, ``t`` itself: nothing to test there)."""
    t = torch.distributions.Beta(1.0, 1.0).sample((7,))
    got = to_device(t, torch.device("cuda"))
    assert got.device.type == "cuda" and got.dtype == t.dtype
    assert torch.equal(got.cpu(), t)  # .cpu() waits for the copy
