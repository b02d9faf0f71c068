"""Hand-derived values, identities and gradient signs of the objectives beyond DPO/IPO/RPO.

Notation: beta d is the DPO logit, rho = pi - ref a response's log-ratio (summed unless said),
sigma the logistic function. ln 3 makes sigmoids exact: sigma(ln 3) = 3/4, sigma(-ln 3) = 1/4.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_dpo.losses import (
    PairLogps,
    aot_loss,
    aot_unpaired_loss,
    apo_down_loss,
    apo_zero_loss,
    bco_pair_loss,
    discopop_loss,
    dpo_loss,
    exo_pair_loss,
    hinge_loss,
    nca_pair_loss,
    robust_loss,
    sft_objective,
    sigmoid_norm_loss,
    sppo_hard_loss,
    token_average,
)
from tests.helpers import LN2, LN3, close, make_logps


def ratios(rho_c: list[float], rho_r: list[float], grad: bool = False) -> PairLogps:
    """Pairs whose chosen/rejected log-ratios are rho_c/rho_r (references -2 and -3)."""
    n = len(rho_c)
    return make_logps(
        pc=[-2.0 + x for x in rho_c],
        pr=[-3.0 + x for x in rho_r],
        rc=[-2.0] * n,
        rr=[-3.0] * n,
        grad=grad,
    )


def test_conservative_dpo_hand_values() -> None:
    """cDPO, eps = 1/4, beta = 1: -(3/4) ln sigma(x) - (1/4) ln sigma(-x).

    x = ln 3: -(3/4) ln(3/4) - (1/4) ln(1/4) = 2 ln 2 - (3/4) ln 3.
    x = 0: -(3/4) ln(1/2) - (1/4) ln(1/2) = ln 2 (smoothing does not move the midpoint).
    """
    out = dpo_loss(ratios([LN3, 0.0], [0.0, 0.0]), 1.0, label_smoothing=0.25)
    close(out.losses, [2 * LN2 - 0.75 * LN3, LN2])


def test_hinge_hand_values() -> None:
    """relu(1 - beta d), beta = 1/2: d = 4 -> relu(-1) = 0; d = 1 -> 1/2; d = -2 -> 2."""
    out = hinge_loss(ratios([4.0, 1.0, -1.0], [0.0, 0.0, 1.0]), 0.5)
    close(out.losses, [0.0, 0.5, 2.0])
    close(out.chosen_rewards, [2.0, 0.5, -0.5])


def test_robust_hand_values() -> None:
    """rDPO, eps = 1/4, beta = 1: ((3/4)(-ln sigma(x)) + (1/4) ln sigma(-x)) / (1/2).

    x = ln 3: 2 [(3/4) ln(4/3) + (1/4) ln(1/4)] = 2 [(1/2) ln 4 - (3/4) ln 3] = 2 ln 2 - (3/2) ln 3,
    which is negative (rDPO is unbounded below). x = 0: 2 [(3/4) ln 2 - (1/4) ln 2] = ln 2.
    """
    out = robust_loss(ratios([LN3, 0.0], [0.0, 0.0]), 1.0, label_smoothing=0.25)
    close(out.losses, [2 * LN2 - 1.5 * LN3, LN2])
    assert out.losses[0] < 0


@settings(max_examples=40, deadline=None)
@given(st.floats(-60, 60), st.floats(0.01, 5.0))
def test_robust_with_zero_smoothing_is_dpo(d: float, beta: float) -> None:
    """Zero smoothing: ((1 - 0)(-ln sigma(x)) + 0) / 1 = -ln sigma(x), the DPO loss."""
    logps = ratios([d / 2], [-d / 2])
    torch.testing.assert_close(robust_loss(logps, beta).losses, dpo_loss(logps, beta).losses)


def test_exo_pair_hand_values() -> None:
    """KL(Bern(p) || Bern(1 - eps)), eps = 1/4, beta = 1, p = sigma(x).

    x = ln 3: p = 3/4 = 1 - eps, KL = 0 (the minimum: the model matches the smoothed label).
    x = 0: p = 1/2: (1/2) ln((1/2)/(3/4)) + (1/2) ln((1/2)/(1/4)) = (1/2) ln(4/3).
    x = -ln 3: p = 1/4: (1/4) ln(1/3) + (3/4) ln 3 = (1/2) ln 3.
    """
    out = exo_pair_loss(ratios([LN3, 0.0, 0.0], [0.0, 0.0, LN3]), 1.0, label_smoothing=0.25)
    close(out.losses, [0.0, 0.5 * math.log(4 / 3), 0.5 * LN3], atol=1e-7)


def test_exo_pair_zero_smoothing_means_one_in_a_thousand() -> None:
    """Zero smoothing selects eps = 1e-3: the loss is 0 at p = 1 - 1e-3, i.e. x = ln 999."""
    out = exo_pair_loss(ratios([math.log(999.0)], [0.0]), 1.0)
    close(out.losses, [0.0], atol=1e-6)
    torch.testing.assert_close(
        out.losses, exo_pair_loss(ratios([math.log(999.0)], [0.0]), 1.0, 1e-3).losses
    )


def test_nca_pair_hand_values() -> None:
    """-ln sigma(r_c) - (1/2) ln sigma(-r_c) - (1/2) ln sigma(-r_r), beta = 1.

    r_c = ln 3, r_r = -ln 3: -ln(3/4) - (1/2) ln(1/4) - (1/2) ln(3/4)
      = (3/2) ln(4/3) + ln 2 = 4 ln 2 - (3/2) ln 3.
    r_c = r_r = 0: ln 2 + (1/2) ln 2 + (1/2) ln 2 = 2 ln 2.
    """
    out = nca_pair_loss(ratios([LN3, 0.0], [-LN3, 0.0]), 1.0)
    close(out.losses, [4 * LN2 - 1.5 * LN3, 2 * LN2])


def test_bco_pair_hand_values() -> None:
    """-ln sigma(r_c - delta) - ln sigma(delta - r_r), beta = 1, delta = 1.

    r_c = 1 + ln 3, r_r = 1 - ln 3: both arguments are ln 3: 2 ln(4/3).
    r_c = r_r = 1 = delta: 2 ln 2. With delta = 0 (a tensor) the second pair gives
    -ln sigma(1) - ln sigma(-1) = ln(1 + e^-1) + ln(1 + e).
    """
    logps = ratios([1 + LN3, 1.0], [1 - LN3, 1.0])
    close(bco_pair_loss(logps, 1.0, delta=1.0).losses, [2 * math.log(4 / 3), 2 * LN2])
    close(
        bco_pair_loss(logps, 1.0, delta=torch.tensor(0.0)).losses[1:],
        [math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))],
    )


def test_sppo_hard_hand_values() -> None:
    """(rho_c - 1/(2 beta))^2 + (rho_r + 1/(2 beta))^2 with beta = 1/2 (targets +-1).

    (3, -1): 4 + 0 = 4. (1, 1): 0 + 4 = 4. (0, 0): 1 + 1 = 2. Minimum 0 at (1, -1).
    """
    out = sppo_hard_loss(ratios([3.0, 1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, -1.0]), 0.5)
    close(out.losses, [4.0, 4.0, 2.0, 0.0])


def test_aot_paired_hand_values() -> None:
    """Sorted policy margins minus sorted reference margins, then DPO, beta = ln 3.

    Policy margins pi_c - pi_r = [-1 - (-4), -5 - (-4)] = [3, -1], sorted [-1, 3];
    reference margins [-2 - (-2), -1 - (-3)] = [0, 2], sorted [0, 2]; delta = [-1, 1];
    losses -ln sigma(-ln 3) = 2 ln 2 and -ln sigma(ln 3) = ln(4/3). Paired DPO would instead
    use d = [3, -3]. Rewards stay per pair: beta rho.
    """
    logps = make_logps(pc=[-1.0, -5.0], pr=[-4.0, -4.0], rc=[-2.0, -1.0], rr=[-2.0, -3.0])
    out = aot_loss(logps, LN3)
    close(out.losses, [2 * LN2, math.log(4 / 3)])
    close(out.chosen_rewards, [LN3, -4 * LN3])
    assert not torch.allclose(out.losses, dpo_loss(logps, LN3).losses)


def test_aot_unpaired_hand_values() -> None:
    """Sorted chosen ratios minus sorted rejected ratios, then DPO, beta = ln 3.

    rho_c = [2, -1] -> sorted [-1, 2]; rho_r = [0, 1] -> sorted [0, 1]; delta = [-1, 1]:
    losses [2 ln 2, ln(4/3)] (paired d would be [2, -2]).
    """
    out = aot_unpaired_loss(ratios([2.0, -1.0], [0.0, 1.0]), LN3)
    close(out.losses, [2 * LN2, math.log(4 / 3)])


def test_apo_zero_hand_values() -> None:
    """(1 - sigma(rho_c)) + sigma(rho_r), beta = 1.

    (ln 3, -ln 3): 1/4 + 1/4 = 1/2. (0, 0): 1/2 + 1/2 = 1. (-ln 3, ln 3): 3/4 + 3/4 = 3/2.
    """
    out = apo_zero_loss(ratios([LN3, 0.0, -LN3], [-LN3, 0.0, LN3]), 1.0)
    close(out.losses, [0.5, 1.0, 1.5])


def test_apo_down_hand_values() -> None:
    """sigma(rho_c) + 1 - sigma(rho_c - rho_r), beta = 1.

    (ln 3, 0): 3/4 + 1/4 = 1. (0, -ln 3): 1/2 + 1/4 = 3/4. (0, 0): 1/2 + 1/2 = 1.
    """
    out = apo_down_loss(ratios([LN3, 0.0, 0.0], [0.0, -LN3, 0.0]), 1.0)
    close(out.losses, [1.0, 0.75, 1.0])


def test_apo_down_lowers_the_chosen_and_raises_the_margin() -> None:
    """APO-down's gradients at rho_c = 0, rho_r = -ln 3 (beta = 1, d = ln 3).

    dL/drho_c = sigma'(0) - sigma'(ln 3) = 1/4 - 3/16 = 1/16 > 0: the chosen log-prob falls.
    dL/drho_r = sigma'(ln 3) = 3/16 > 0: the rejected falls faster, so the margin grows.
    """
    logps = ratios([0.0], [-LN3], grad=True)
    g_c, g_r = torch.autograd.grad(
        apo_down_loss(logps, 1.0).losses.sum(), [logps.policy_chosen, logps.policy_rejected]
    )
    close(g_c, [1 / 16])
    close(g_r, [3 / 16])


def test_discopop_hand_values() -> None:
    """(1 - m) (-ln sigma(x)) + m e^-x with m = sigma(x / tau), beta = 1.

    tau = 0.05, x = 0: m = 1/2: (1/2) ln 2 + 1/2.
    tau = 1, x = ln 3: m = 3/4: (1/4) ln(4/3) + (3/4)(1/3) = (1/4) ln(4/3) + 1/4.
    tau = 1, x = -ln 3: m = 1/4: (3/4) ln 4 + (1/4) 3 = (3/2) ln 2 + 3/4.
    """
    close(discopop_loss(ratios([0.0], [0.0]), 1.0).losses, [0.5 * LN2 + 0.5])
    out = discopop_loss(ratios([LN3, 0.0], [0.0, LN3]), 1.0, tau=1.0)
    close(out.losses, [0.25 * math.log(4 / 3) + 0.25, 1.5 * LN2 + 0.75])


def test_discopop_is_not_monotone_near_zero() -> None:
    """DiscoPOP is not monotone: its slope is positive on a small interval around 0.

    The paper notes the loss is non-convex (Lu et al. 2024); with tau = 0.05 the slope in x is
    positive on about [-0.11, 0.07] and negative elsewhere.
    """
    x = torch.tensor([-3.0, -0.5, -0.05, 0.03, 0.5, 3.0], requires_grad=True)
    logps = PairLogps(x / 2, -x / 2, torch.zeros(6), torch.zeros(6))
    (grad,) = torch.autograd.grad(discopop_loss(logps, 1.0).losses.sum(), x)
    assert (grad[[0, 1, 4, 5]] < 0).all()
    assert (grad[[2, 3]] > 0).all()


def test_sigmoid_norm_hand_values() -> None:
    """-ln sigma(beta d_norm) over per-token means, beta = 1.

    Chosen: 4 tokens, policy -8, reference -8 - 4 ln 3: mean ratio ln 3; rejected: 2 tokens,
    policy = reference: 0. d_norm = ln 3, loss ln(4/3); objective rewards ln 3 and 0. The
    summed d would be 4 ln 3, and the rewards (TRL's, summed) are 4 ln 3 and 0.
    """
    logps = make_logps(pc=[-8.0], rc=[-8.0 - 4 * LN3], nc=[4], pr=[-3.0], rr=[-3.0], nr=[2])
    out = sigmoid_norm_loss(logps, 1.0)
    close(out.losses, [math.log(4 / 3)])
    close(out.chosen_rewards, [4 * LN3])
    close(out.rejected_rewards, [0.0])
    close(out.objective_chosen_rewards, [LN3])
    close(out.objective_rejected_rewards, [0.0])
    torch.testing.assert_close(out.losses, dpo_loss(token_average(logps), 1.0).losses)


def test_sft_objective_gradient_and_rewards() -> None:
    """SFT alone: -pi_c / n_c.

    dL/dpi_c = -1/n_c (raising the chosen lowers it), no rejected term; its rewards are DPO's,
    beta rho, for the metrics.
    """
    logps = make_logps(pc=[-6.0], rc=[-7.0], nc=[3], pr=[-1.0], rr=[-2.0], grad=True)
    out = sft_objective(logps, 0.5)
    close(out.losses, [2.0])
    close(out.chosen_rewards, [0.5])
    (grad,) = torch.autograd.grad(out.losses.sum(), logps.policy_chosen)
    close(grad, [-1 / 3])
    close(sft_objective(logps, 0.5, average=False).losses, [6.0])


@pytest.mark.parametrize(
    "fn",
    [dpo_loss, robust_loss, exo_pair_loss, aot_loss, aot_unpaired_loss],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize("x", [1e4, -1e4])
def test_smoothed_objectives_finite_at_extremes(fn, x: float) -> None:
    """With label smoothing 0.25, |beta d| = 1e4 keeps losses and gradients finite."""
    logps = ratios([x / 2], [-x / 2], grad=True)
    out = fn(logps, 1.0, label_smoothing=0.25)
    (grad,) = torch.autograd.grad(out.losses.sum(), logps.policy_chosen)
    assert torch.isfinite(out.losses).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("tau", [0.01, 0.05, 1.0])
@pytest.mark.parametrize("x", [1e4, -1e4, 88.0, -88.0])
def test_discopop_finite_for_every_tau(tau: float, x: float) -> None:
    """exp(-x) alone overflows at x = -88 in float32; the gated form stays finite for tau <= 1."""
    logps = ratios([x / 2], [-x / 2], grad=True)
    out = discopop_loss(logps, 1.0, tau=tau)
    (grad,) = torch.autograd.grad(out.losses.sum(), logps.policy_chosen)
    assert torch.isfinite(out.losses).all() and torch.isfinite(grad).all()
