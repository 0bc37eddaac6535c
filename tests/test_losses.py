"""Tests for kdcrowd.losses (offline, CPU, fast)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdcrowd.losses import (
    DEFAULT_TV_TEMPERATURE,
    F_DIVERGENCES,
    ELRLoss,
    KLDistillation,
    MIGfDistillation,
    coteaching_select,
    forget_rate_schedule,
    gce_loss,
    masked_cross_entropy,
    mig_f,
    sce_loss,
)

# --------------------------------------------------------------------------------------
# reference MIG^f with plain Python floats, straight from the formula
# --------------------------------------------------------------------------------------
A3 = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]
B3 = [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.25, 0.25, 0.5]]
PRIOR_NONUNIFORM = [0.5, 0.3, 0.2]


def _ref_terms(R: float, f: str, T: float) -> tuple[float, float]:
    if f == "kl":
        return 1.0 + math.log(R), R
    if f == "pearson":
        return 2.0 * (R - 1.0), R * R - 1.0
    if f == "js":
        return math.log(2.0 * R / (1.0 + R)), -math.log(2.0 / (1.0 + R))
    if f == "tv":
        s = math.tanh((R - 1.0) / T)
        return s, s
    if f == "rkl":
        return -1.0 / R, -1.0 + math.log(R)
    if f == "hellinger":
        return 1.0 - 1.0 / math.sqrt(R), math.sqrt(R) - 1.0
    raise AssertionError(f)


def ref_mig(a, b, p, f, T=DEFAULT_TV_TEMPERATURE):
    B, K = len(a), len(p)
    R = [[sum(a[i][c] * b[j][c] / p[c] for c in range(K)) for j in range(B)] for i in range(B)]
    diag = sum(_ref_terms(R[i][i], f, T)[0] for i in range(B)) / B
    off = sum(_ref_terms(R[i][j], f, T)[1] for i in range(B) for j in range(B) if i != j)
    return diag - off / (B * (B - 1))


def _log(x):
    return torch.log(torch.tensor(x, dtype=torch.float64))


@pytest.mark.parametrize("f", F_DIVERGENCES)
@pytest.mark.parametrize("prior", [None, PRIOR_NONUNIFORM])
def test_mig_f_matches_hand_formula(f, prior):
    p = [1.0 / 3] * 3 if prior is None else prior
    expected = ref_mig(A3, B3, p, f)
    got = mig_f(_log(A3), _log(B3), None if prior is None else _log(prior), f)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_mig_f_tv_surrogate_tends_to_sign():
    def sign_mig(a, b, p):
        B, K = len(a), len(p)
        R = [[sum(a[i][c] * b[j][c] / p[c] for c in range(K)) for j in range(B)] for i in range(B)]
        sg = lambda r: (r > 1) - (r < 1)  # noqa: E731
        diag = sum(sg(R[i][i]) for i in range(B)) / B
        off = sum(sg(R[i][j]) for i in range(B) for j in range(B) if i != j)
        return diag - off / (B * (B - 1))

    p = [1.0 / 3] * 3
    got = mig_f(_log(A3), _log(B3), None, "tv", tv_temperature=1e-6)
    assert got.item() == pytest.approx(sign_mig(A3, B3, p), abs=1e-6)


def test_mig_f_unknown_f_and_shapes():
    la = _log(A3)
    with pytest.raises(ValueError, match="unknown f"):
        mig_f(la, la, None, "chi")
    with pytest.raises(ValueError):
        mig_f(la, la[:, :2], None, "kl")
    with pytest.raises(ValueError):
        mig_f(la, la, torch.zeros(2, dtype=torch.float64), "kl")


@pytest.mark.parametrize("f", F_DIVERGENCES)
def test_mig_f_gradcheck(f):
    g = torch.Generator().manual_seed(0)
    za = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    zb = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    lp = torch.log(torch.tensor(PRIOR_NONUNIFORM, dtype=torch.float64))

    def fn(a, b):
        return mig_f(F.log_softmax(a, -1), F.log_softmax(b, -1), lp, f, tv_temperature=0.5)

    assert torch.autograd.gradcheck(fn, (za, zb))


@pytest.mark.parametrize("f", F_DIVERGENCES)
@pytest.mark.parametrize("prior", ["uniform", "teacher"])
def test_migf_distillation_gradcheck(f, prior):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), -1)
    loss = MIGfDistillation(f=f, prior=prior, tv_temperature=0.5)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (z,))


def _onehot(idx, K, dtype=torch.float64):
    return F.one_hot(torch.tensor(idx), K).to(dtype)


@pytest.mark.parametrize("f", F_DIVERGENCES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mig_f_finite_with_onehot_allwrong_and_b2(f, dtype):
    K = 3
    cases = {
        "onehot_agree": ([0, 1, 2, 0], [0, 1, 2, 0]),
        "onehot_allwrong": ([0, 1, 2, 0], [1, 2, 0, 2]),
        "b2_agree": ([0, 1], [0, 1]),
        "b2_wrong": ([0, 0], [1, 1]),
    }
    for name, (ia, ib) in cases.items():
        # exact one-hot log-probabilities, with -inf entries, as leaves
        la = torch.log(_onehot(ia, K, dtype)).requires_grad_(True)
        lb = torch.log(_onehot(ib, K, dtype)).requires_grad_(True)
        for prior in (None, torch.log(_onehot(ib, K, dtype).mean(0))):  # teacher prior has 0s
            v = mig_f(la, lb, prior, f)
            assert torch.isfinite(v), (name, v)
            ga, gb = torch.autograd.grad(v, (la, lb))
            assert torch.isfinite(ga).all() and torch.isfinite(gb).all(), name
        # saturated student logits through the distillation module
        z = (200.0 * _onehot(ia, K, dtype)).requires_grad_(True)
        for prior in ("uniform", "teacher"):
            loss = MIGfDistillation(f=f, prior=prior)(z, _onehot(ib, K, dtype))
            assert torch.isfinite(loss), (name, prior)
            (gz,) = torch.autograd.grad(loss, z)
            assert torch.isfinite(gz).all(), (name, prior)


@pytest.mark.parametrize("f", F_DIVERGENCES)
def test_mig_f_batch_of_one_raises(f):
    la = torch.log(torch.tensor([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="at least 2"):
        mig_f(la, la, None, f)
    with pytest.raises(ValueError, match="at least 2"):
        MIGfDistillation(f=f)(torch.zeros(1, 2), torch.tensor([[0.5, 0.5]]))


def test_mig_kl_maximised_by_copying_teacher():
    g = torch.Generator().manual_seed(2)
    t = torch.softmax(3.0 * torch.randn(32, 5, generator=g, dtype=torch.float64), -1)
    lt = torch.log(t)
    same = mig_f(lt, lt, None, "kl")
    perm = torch.randperm(32, generator=g)
    shuffled = mig_f(lt[perm], lt, None, "kl")
    assert same > shuffled
    loss = MIGfDistillation("kl")
    assert loss(lt, t) < loss(lt[perm], t)


def test_mig_f_bf16_autocast_runs_in_float32():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 4, generator=g).to(torch.bfloat16).requires_grad_(True)
    t = torch.softmax(torch.randn(6, 4, generator=g), -1).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = MIGfDistillation("js")(z, t)
        kl = KLDistillation(2.0)(z, t)
        mce = masked_cross_entropy(z.unsqueeze(1), torch.zeros(6, 1, dtype=torch.long))
    assert loss.dtype == kl.dtype == mce.dtype == torch.float32
    (loss + kl + mce).backward()
    assert torch.isfinite(z.grad.float()).all()


def test_migf_distillation_fixed_prior_and_teacher_detached():
    t = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64, requires_grad=True)
    z = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    loss = MIGfDistillation("kl", prior=[0.5, 0.5])(z, t)
    loss.backward()
    assert t.grad is None
    ref = -mig_f(F.log_softmax(z.detach(), -1), torch.log(t.detach()), None, "kl")
    assert loss.item() == pytest.approx(ref.item(), abs=1e-12)
    with pytest.raises(ValueError):
        MIGfDistillation(prior="empirical")
    with pytest.raises(ValueError):
        MIGfDistillation(f="nope")


# --------------------------------------------------------------------------------------
# masked cross-entropy
# --------------------------------------------------------------------------------------
def test_masked_cross_entropy_hand_value_and_reductions():
    logits = torch.log(
        torch.tensor(
            [[[0.5, 0.5], [0.9, 0.1]], [[0.2, 0.8], [0.3, 0.7]]], dtype=torch.float64
        )
    )
    labels = torch.tensor([[0, -1], [1, 0]])
    terms = [-math.log(0.5), -math.log(0.8), -math.log(0.3)]
    assert masked_cross_entropy(logits, labels).item() == pytest.approx(sum(terms) / 3)
    assert masked_cross_entropy(logits, labels, "sum").item() == pytest.approx(sum(terms))
    none = masked_cross_entropy(logits, labels, "none")
    assert none.shape == (2, 2) and none[0, 1].item() == 0.0
    with pytest.raises(ValueError):
        masked_cross_entropy(logits, labels[:, :1])


def test_masked_cross_entropy_nothing_observed_is_zero_with_grad():
    z = torch.randn(3, 2, 4, requires_grad=True)
    loss = masked_cross_entropy(z, torch.full((3, 2), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_masked_cross_entropy_gradcheck():
    z = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, -1], [3, 2], [-1, -1]])
    assert torch.autograd.gradcheck(lambda x: masked_cross_entropy(x, labels), (z,))


# --------------------------------------------------------------------------------------
# KL distillation
# --------------------------------------------------------------------------------------
def test_kl_distillation_hand_value():
    s = [0.5, 0.25, 0.25]
    t = [0.5, 0.5, 0.0]  # 0 log 0 = 0
    expected = 0.5 * math.log(0.5 / 0.5) + 0.5 * math.log(0.5 / 0.25)
    z = torch.log(torch.tensor([s], dtype=torch.float64))
    got = KLDistillation()(z, torch.tensor([t], dtype=torch.float64))
    assert got.item() == pytest.approx(expected, abs=1e-12)


def test_kl_distillation_zero_when_equal():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(8, 5, generator=g, dtype=torch.float64)
    assert KLDistillation()(z, torch.softmax(z, -1)).item() == pytest.approx(0.0, abs=1e-12)
    # with temperature, teacher t^(1/tau) renormalised == softmax(z / tau)
    assert KLDistillation(3.0)(z, torch.softmax(z, -1)).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_distillation_temperature_scaling():
    tau = 2.0
    z = torch.tensor([[1.0, -0.5, 0.2], [0.0, 2.0, -1.0]], dtype=torch.float64)
    t = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
    t_tau = t ** (1 / tau)
    t_tau = t_tau / t_tau.sum(-1, keepdim=True)
    s_tau = torch.softmax(z / tau, -1)
    expected = tau**2 * (t_tau * torch.log(t_tau / s_tau)).sum(-1).mean()
    assert KLDistillation(tau)(z, t).item() == pytest.approx(expected.item(), abs=1e-12)
    # tau^2 times the tau=1 loss on the tempered distributions
    base = KLDistillation(1.0)(z / tau, t_tau)
    assert KLDistillation(tau)(z, t).item() == pytest.approx(tau**2 * base.item(), abs=1e-12)
    with pytest.raises(ValueError):
        KLDistillation(0.0)


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_kl_distillation_gradcheck_and_onehot(tau):
    g = torch.Generator().manual_seed(5)
    z = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = _onehot([0, 2, 1, 1], 3)
    loss = KLDistillation(tau)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (z,))
    v = loss(z, t)
    assert torch.isfinite(v)


# --------------------------------------------------------------------------------------
# GCE / SCE / ELR
# --------------------------------------------------------------------------------------
def test_gce_limits():
    g = torch.Generator().manual_seed(6)
    z = torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (10,), generator=g)
    ce = F.cross_entropy(z, y)
    assert gce_loss(z, y, q=1e-6).item() == pytest.approx(ce.item(), rel=1e-4)
    p_y = torch.softmax(z, -1).gather(1, y[:, None]).squeeze(1)
    assert gce_loss(z, y, q=1.0).item() == pytest.approx((1 - p_y).mean().item(), abs=1e-12)
    q = 0.7
    assert gce_loss(z, y, q).item() == pytest.approx(((1 - p_y**q) / q).mean().item(), abs=1e-12)
    with pytest.raises(ValueError):
        gce_loss(z, y, q=0.0)


def test_sce_hand_value():
    # p = (0.5, 0.3, 0.2), label 0: CE = -log 0.5, RCE = -(-4) * (0.3 + 0.2) = 2.0
    z = torch.log(torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64))
    y = torch.tensor([0])
    expected = 0.1 * (-math.log(0.5)) + 1.0 * 2.0
    assert sce_loss(z, y).item() == pytest.approx(expected, abs=1e-12)
    assert sce_loss(z, y, alpha=0.0, beta=1.0, A=-6.0).item() == pytest.approx(3.0, abs=1e-12)


def test_gce_sce_gradcheck():
    g = torch.Generator().manual_seed(7)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1, 0])
    assert torch.autograd.gradcheck(lambda x: gce_loss(x, y, 0.7), (z,))
    assert torch.autograd.gradcheck(lambda x: sce_loss(x, y), (z,))


def test_elr_target_update_and_value():
    elr = ELRLoss(n_items=4, n_classes=2, beta=0.7, lam=3.0).double()
    z = torch.log(torch.tensor([[0.8, 0.2], [0.4, 0.6]], dtype=torch.float64))
    y = torch.tensor([0, 0])
    idx = torch.tensor([3, 1])
    loss = elr(z, y, idx)
    p = torch.tensor([[0.8, 0.2], [0.4, 0.6]], dtype=torch.float64)
    t = 0.3 * p
    assert torch.allclose(elr.targets[3], t[0]) and torch.allclose(elr.targets[1], t[1])
    assert elr.targets[0].abs().sum() == 0 and elr.targets[2].abs().sum() == 0
    ce = -(math.log(0.8) + math.log(0.4)) / 2
    reg = (math.log(1 - (t[0] * p[0]).sum().item()) + math.log(1 - (t[1] * p[1]).sum().item())) / 2
    assert loss.item() == pytest.approx(ce + 3.0 * reg, abs=1e-10)
    # second step: temporal ensembling
    elr(z, y, idx)
    assert torch.allclose(elr.targets[3], 0.7 * t[0] + 0.3 * p[0])
    # eval mode does not update
    before = elr.targets.clone()
    elr.eval()
    elr(z, y, idx)
    assert torch.equal(before, elr.targets)


def test_elr_gradcheck_and_extremes():
    g = torch.Generator().manual_seed(8)
    elr = ELRLoss(n_items=6, n_classes=3).double()
    z = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    idx = torch.tensor([0, 2, 4, 5])
    for _ in range(3):
        elr(z.detach(), y, idx)  # fill targets
    elr.eval()
    assert torch.autograd.gradcheck(lambda x: elr(x, y, idx), (z,))
    elr.train()
    zz = (100.0 * _onehot([0, 1, 2, 0], 3)).requires_grad_(True)
    for _ in range(20):
        v = elr(zz, y, idx)
    assert torch.isfinite(v)
    (gz,) = torch.autograd.grad(v, zz)
    assert torch.isfinite(gz).all()


# --------------------------------------------------------------------------------------
# co-teaching
# --------------------------------------------------------------------------------------
def test_coteaching_select_hand_case():
    loss_a = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7])
    loss_b = torch.tensor([0.2, 0.8, 0.1, 0.6, 0.4])
    for_a, for_b = coteaching_select(loss_a, loss_b, forget_rate=0.4)  # keep 3
    assert for_a.tolist() == [2, 0, 4]  # B's small-loss items
    assert for_b.tolist() == [1, 3, 2]  # A's small-loss items
    for_a, for_b = coteaching_select(loss_a, loss_b, forget_rate=0.0)
    assert sorted(for_a.tolist()) == list(range(5)) and sorted(for_b.tolist()) == list(range(5))
    for_a, for_b = coteaching_select(loss_a, loss_b, forget_rate=0.99)  # at least 1
    assert for_a.tolist() == [2] and for_b.tolist() == [1]
    for_a, for_b = coteaching_select(loss_a[:2], loss_b[:2], forget_rate=0.5)
    assert for_a.tolist() == [0] and for_b.tolist() == [1]
    # floating point: (1 - 0.9) * 10 must keep exactly 1, (1 - 0.7) * 10 exactly 3
    ten = torch.arange(10.0)
    assert len(coteaching_select(ten, ten, 0.9)[0]) == 1
    assert len(coteaching_select(ten, ten, 0.7)[0]) == 3
    with pytest.raises(ValueError):
        coteaching_select(loss_a, loss_b[:3], 0.2)


def test_forget_rate_schedule():
    assert forget_rate_schedule(0, 0.2, 10) == 0.0
    assert forget_rate_schedule(5, 0.2, 10) == pytest.approx(0.1)
    assert forget_rate_schedule(10, 0.2, 10) == pytest.approx(0.2)
    assert forget_rate_schedule(50, 0.2, 10) == pytest.approx(0.2)
    assert forget_rate_schedule(3, 0.5, 0) == 0.5


@pytest.mark.parametrize("f", F_DIVERGENCES)
def test_mig_f_mask_is_the_estimate_on_the_kept_items(f):
    """A mask keeps only its items: the same number as the formula on those rows alone; the
    other rows get no gradient, even with one-hot rows whose terms would be extreme; fewer
    than two kept items give 0."""
    a = A3 + [[1.0, 0.0, 0.0], [0.2, 0.2, 0.6]]
    b = B3 + [[0.0, 0.0, 1.0], [0.5, 0.25, 0.25]]
    mask = torch.tensor([True, False, True, False, True])
    kept = [0, 2, 4]
    expected = ref_mig([a[i] for i in kept], [b[i] for i in kept], PRIOR_NONUNIFORM, f)
    la = _log(a).requires_grad_(True)
    got = mig_f(la, _log(b), _log(PRIOR_NONUNIFORM), f, mask=mask)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    got.backward()
    assert torch.all(la.grad[~mask] == 0) and torch.all(torch.isfinite(la.grad))
    assert la.grad[mask].abs().sum() > 0
    one = mig_f(_log(a), _log(b), None, f, mask=torch.tensor([False, True, False, False, False]))
    assert one.item() == 0.0
    with pytest.raises(ValueError, match="mask"):
        mig_f(_log(a), _log(b), None, f, mask=torch.ones(4, dtype=torch.bool))


@pytest.mark.parametrize("f", F_DIVERGENCES)
def test_mig_f_all_true_mask_gives_the_unmasked_bits(f):
    # Max-MIG always passes a mask: a fully labelled batch must train as before, to the bit
    # (two seeds: the first masked version kept the bits of tv, rkl and hellinger on seed 0 only)
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        la = torch.log_softmax(torch.randn(16, 5, generator=g), 1)
        lb = torch.log_softmax(torch.randn(16, 5, generator=g), 1)
        lp = torch.log_softmax(torch.randn(5, generator=g), 0)
        assert torch.equal(mig_f(la, lb, lp, f), mig_f(la, lb, lp, f, mask=torch.ones(16, dtype=torch.bool))), seed
