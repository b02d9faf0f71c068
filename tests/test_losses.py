"""Tests for lightning_dpo.losses: hand-derived values, identities, gradients, stability, config."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_dpo.losses import (
    OBJECTIVES,
    REWARD_OBJECTIVES,
    LossOutput,
    PairLogps,
    PreferenceLoss,
    dpo_loss,
    ipo_loss,
    rpo_bwd_kl_loss,
    rpo_fwd_kl_loss,
    rpo_sq_loss,
    sft_loss,
)
from tests.helpers import LN2, LN3, close, make_logps, t

RPO_FNS = {"rpo_sq": rpo_sq_loss, "rpo_fwd_kl": rpo_fwd_kl_loss, "rpo_bwd_kl": rpo_bwd_kl_loss}


def logps_with_logit(x: float, beta: float, grad: bool = False) -> PairLogps:
    """A single pair whose summed log-ratio margin d satisfies beta * d = x."""
    d = x / beta
    return make_logps([-3.0 + d / 2], [-3.0 - d / 2], rc=[-3.0], rr=[-3.0], grad=grad)


def run_objective(name: str, logps: PairLogps, beta: float, g: float = 0.0) -> LossOutput:
    """Evaluate objective `name`; reward objectives get rewards with gap g (scale 1)."""
    if name in REWARD_OBJECTIVES:
        batch = logps.policy_chosen.shape[0]
        chosen = torch.full((batch,), g, dtype=torch.float32)
        rejected = torch.zeros(batch, dtype=torch.float32)
        return OBJECTIVES[name].function(logps, chosen, rejected, beta, 1.0)
    return OBJECTIVES[name].function(logps, beta=beta)


# ------------------------------------------------------------------------------------------
# Hand-derived values
# ------------------------------------------------------------------------------------------


def test_dpo_hand_values() -> None:
    """DPO with beta = 1/2 and margins d chosen so that beta*d is in {ln 3, -ln 3, 0}.

    sigmoid(ln 3) = 3/(3+1) = 3/4, so loss = -ln(3/4) = ln(4/3);
    sigmoid(-ln 3) = 1/4, so loss = ln 4 = 2 ln 2;  sigmoid(0) = 1/2, so loss = ln 2.
    Pair 1: chosen log-ratio -1 - (-2 - 2 ln 3) = 1 + 2 ln 3, rejected -4 - (-5) = 1, so
    d = 2 ln 3 and the rewards are beta * ratio = ln 3 + 1/2 and 1/2.
    Pair 2 swaps the ratios: d = -2 ln 3, rewards 1/2 and ln 3 + 1/2.
    Pair 3: both ratios are -4 (-9 - (-5), -7 - (-3)), d = 0, rewards -2 and -2.
    """
    beta = 0.5
    logps = make_logps(
        pc=[-1.0, -4.0, -9.0],
        rc=[-2.0 - 2 * LN3, -5.0, -5.0],
        pr=[-4.0, -1.0, -7.0],
        rr=[-5.0, -2.0 - 2 * LN3, -3.0],
    )
    out = dpo_loss(logps, beta)
    close(out.losses, [math.log(4 / 3), 2 * LN2, LN2])
    close(out.chosen_rewards, [LN3 + 0.5, 0.5, -2.0])
    close(out.rejected_rewards, [0.5, LN3 + 0.5, -2.0])


def test_ipo_hand_values() -> None:
    """IPO with beta = 1/4: the regression target is 1/(2 beta) = 2. All numbers are exact.

    Pair 1: chosen 4 tokens, policy -8 (mean -2), reference -12 (mean -3): mean ratio +1;
            rejected 2 tokens, policy -6 (mean -3), reference -4 (mean -2): mean ratio -1;
            d_norm = 1 - (-1) = 2, loss (2 - 2)^2 = 0; objective rewards 1/4 * 1 = 1/4 and -1/4.
            (The summed variant would give d = 4 - (-2) = 6 and loss 16.)
    Pair 2: chosen 5 tokens, -5 / -10 -> means -1 / -2, ratio +1;
            rejected 4 tokens, -4 / -8 -> means -1 / -2, ratio +1;
            d_norm = 0, loss (0 - 2)^2 = 4; objective rewards 1/4 and 1/4.
    Pair 3: chosen 2 tokens, -2 / -8 -> ratio -1 + 4 = +3; rejected 1 token, -4 / -2 -> -2;
            d_norm = 5, loss (5 - 2)^2 = 9; objective rewards 3/4 and -1/2.
    The rewards are TRL's, beta times the summed ratios: chosen 4, 5, 6 -> 1, 5/4, 3/2;
    rejected -2, 4, -2 -> -1/2, 1, -1/2.
    """
    logps = make_logps(
        pc=[-8.0, -5.0, -2.0],
        rc=[-12.0, -10.0, -8.0],
        nc=[4, 5, 2],
        pr=[-6.0, -4.0, -4.0],
        rr=[-4.0, -8.0, -2.0],
        nr=[2, 4, 1],
    )
    out = ipo_loss(logps, 0.25)
    close(out.losses, [0.0, 4.0, 9.0])
    close(out.chosen_rewards, [1.0, 1.25, 1.5])
    close(out.rejected_rewards, [-0.5, 1.0, -0.5])
    close(out.objective_chosen_rewards, [0.25, 0.25, 0.75])
    close(out.objective_rejected_rewards, [-0.25, 0.25, -0.5])


def test_rpo_sq_hand_values() -> None:
    """RPO-sq with beta = 1/2 and gt_reward_scale = 1/2; loss (beta d - g)^2.

    Pair 1: d = 4 so beta*d = 2; rewards 3 vs 1 with scale 1/2 -> g = 1;
    loss (2 - 1)^2 = 1. Pair 2: d = -2 so beta*d = -1; rewards 0 vs 2 -> g = -1;
    loss (-1 + 1)^2 = 0. Pair 3: d = 0, rewards 5 vs -1 -> g = 3, loss 9.
    Rewards are summed DPO rewards: beta * (policy - reference), references 0 here.
    """
    logps = make_logps(pc=[1.0, -3.0, -2.0], pr=[-3.0, -1.0, -2.0])
    out = rpo_sq_loss(logps, t(3.0, 0.0, 5.0), t(1.0, 2.0, -1.0), beta=0.5, gt_reward_scale=0.5)
    close(out.losses, [1.0, 0.0, 9.0])
    close(out.chosen_rewards, [0.5, -1.5, -1.0])
    close(out.rejected_rewards, [-1.5, -0.5, -1.0])


def kl_pairs() -> tuple[PairLogps, torch.Tensor, torch.Tensor]:
    """Two pairs with closed-form Bernoulli KLs (for beta = 1, gt_reward_scale = 1).

    Pair 1: beta*d = ln 3 (p = 3/4), g = 0 (q = 1/2).
    Pair 2: d = 0 (p = 1/2), g = -ln 3 (q = 1/4).
    """
    logps = make_logps(pc=[LN3 - 2.0, -2.0], pr=[-2.0, -2.0])
    return logps, t(0.7, 0.0), t(0.7, LN3)


def test_rpo_bwd_kl_hand_values() -> None:
    """KL(q || p) = q ln(q/p) + (1-q) ln((1-q)/(1-p)).

    Pair 1 (p = 3/4, q = 1/2): 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3).
    Pair 2 (p = 1/2, q = 1/4): 1/4 ln(1/2) + 3/4 ln(3/2) = 3/4 ln 3 - ln 2.
    """
    logps, rc, rr = kl_pairs()
    out = rpo_bwd_kl_loss(logps, rc, rr, beta=1.0, gt_reward_scale=1.0)
    close(out.losses, [0.5 * math.log(4 / 3), 0.75 * LN3 - LN2])


def test_rpo_fwd_kl_hand_values() -> None:
    """KL(p || q) = p ln(p/q) + (1-p) ln((1-p)/(1-q)).

    Pair 1 (p = 3/4, q = 1/2): 3/4 ln(3/2) + 1/4 ln(1/2) = 3/4 ln 3 - ln 2.
    Pair 2 (p = 1/2, q = 1/4): 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3).
    """
    logps, rc, rr = kl_pairs()
    out = rpo_fwd_kl_loss(logps, rc, rr, beta=1.0, gt_reward_scale=1.0)
    close(out.losses, [0.75 * LN3 - LN2, 0.5 * math.log(4 / 3)])
    close(out.chosen_rewards, [LN3 - 2.0, -2.0])


def test_sft_loss_hand_values() -> None:
    """-policy_chosen / chosen_tokens: -(-6)/3 = 2, -(-1)/4 = 1/4; float counts accepted."""
    logps = make_logps(pc=[-6.0, -1.0], pr=[0.0, 0.0], nc=[3, 4])
    close(sft_loss(logps), [2.0, 0.25])
    float_counts = PairLogps(**{**vars(logps), "chosen_tokens": t(3.0, 4.0)})
    close(sft_loss(float_counts), [2.0, 0.25])


# ------------------------------------------------------------------------------------------
# Identities
# ------------------------------------------------------------------------------------------


def test_dpo_zero_margin_is_ln2_with_zero_rewards() -> None:
    """Policy == reference: d = 0, loss = -ln(1/2) = ln 2, rewards 0."""
    logps = make_logps(pc=[-3.0, -7.0], pr=[-5.0, -1.0], rc=[-3.0, -7.0], rr=[-5.0, -1.0])
    out = dpo_loss(logps, 0.3)
    close(out.losses, [LN2, LN2])
    close(out.chosen_rewards, [0.0, 0.0])
    close(out.rejected_rewards, [0.0, 0.0])


def test_ipo_minimum_at_target_with_zero_gradient() -> None:
    """IPO is 0 with zero gradient at d_norm = 1/(2 beta).

    beta = 0.1: target 1/(2 beta) = 5. Chosen mean ratio 5 (policy -10 vs reference -20 over
    2 tokens), rejected ratio 0: loss 0 and d loss / d policy_chosen = 2 (d_norm - 5) / 2 = 0.
    """
    logps = make_logps(pc=[-10.0], rc=[-20.0], nc=[2], pr=[-3.0], rr=[-3.0], nr=[3], grad=True)
    out = ipo_loss(logps, 0.1)
    close(out.losses, [0.0], atol=1e-10)
    (grad,) = torch.autograd.grad(out.losses.sum(), logps.policy_chosen)
    assert grad.abs().item() < 1e-6


def test_ipo_is_length_normalised() -> None:
    """IPO averages log-probs over tokens (TRL convention) instead of summing (paper).

    Doubling the chosen response (token count and summed log-probs, same per-token values)
    leaves the IPO loss unchanged, whereas the summed-log-prob IPO of the paper would change:
    short d_norm = 1 - (-1/2) = 3/2, loss (3/2 - 1)^2 = 1/4; summed d = 4 vs 7.
    """
    beta = 0.5
    short = make_logps(pc=[-6.0], rc=[-9.0], nc=[3], pr=[-4.0], rr=[-3.0], nr=[2])
    long = make_logps(pc=[-12.0], rc=[-18.0], nc=[6], pr=[-4.0], rr=[-3.0], nr=[2])
    torch.testing.assert_close(ipo_loss(short, beta).losses, ipo_loss(long, beta).losses)
    close(ipo_loss(short, beta).losses, [(1.0 + 0.5 - 1.0) ** 2])

    def summed(lp: PairLogps) -> float:
        d = (lp.policy_chosen - lp.reference_chosen) - (lp.policy_rejected - lp.reference_rejected)
        return ((d - 1 / (2 * beta)) ** 2).item()

    assert summed(short) != pytest.approx(summed(long))


def test_rpo_equal_rewards_identities() -> None:
    """With equal rewards every RPO loss is 0 at d = 0 and positive elsewhere.

    g = 0 (q = 1/2). At d = 0 (p = 1/2): rpo_sq = 0, both KLs = 0. Away from d = 0 all three
    are positive, so d = 0 is the minimum.
    """
    at_zero = make_logps(pc=[-2.0], pr=[-5.0], rc=[-2.0], rr=[-5.0])
    for fn in RPO_FNS.values():
        close(fn(at_zero, t(1.5), t(1.5), 0.2, 3.0).losses, [0.0], atol=1e-7)
    for x in (-1.0, -0.1, 0.1, 1.0):
        off = logps_with_logit(x, beta=0.2)
        for fn in RPO_FNS.values():
            assert fn(off, t(1.5), t(1.5), 0.2, 3.0).losses.item() > 0.0


def test_rpo_sq_minimum_is_at_zero_margin_when_rewards_equal() -> None:
    """With g = 0, rpo_sq = (beta d)^2 is minimised at d = 0 with zero gradient there."""
    logps = logps_with_logit(0.0, beta=0.2, grad=True)
    out = rpo_sq_loss(logps, t(1.0), t(1.0), 0.2, 1.0)
    (grad,) = torch.autograd.grad(out.losses.sum(), logps.policy_chosen)
    assert grad.abs().item() < 1e-7


@pytest.mark.parametrize("x", [-5.0, -1.0, 0.0, 2.0, 8.0])
def test_rpo_bwd_kl_large_gap_approaches_dpo(x: float) -> None:
    """As g -> inf, q = sigmoid(g) -> 1, so KL(q || p) -> -ln p = -logsigmoid(beta d) = DPO."""
    logps = logps_with_logit(x, beta=0.5)
    rpo = rpo_bwd_kl_loss(logps, t(40.0), t(0.0), beta=0.5, gt_reward_scale=1.0)
    dpo = dpo_loss(logps, beta=0.5)
    torch.testing.assert_close(rpo.losses, dpo.losses, rtol=1e-5, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(-50, 50),
    st.floats(-50, 50),
    st.floats(0.01, 5.0),
    st.sampled_from(sorted(set(OBJECTIVES) - {"sft"})),
)
def test_losses_nonnegative_and_dpo_matches_softplus(
    d: float, g: float, beta: float, name: str
) -> None:
    """All preference objectives (default hyper-parameters) are >= 0; DPO is softplus(-beta d).

    SFT is left out: the summed "log-probs" built here exceed 0 for large d, which a real
    log-prob cannot.
    """
    logps = logps_with_logit(beta * d, beta)
    out = run_objective(name, logps, beta, g)
    assert torch.isfinite(out.losses).all()
    assert out.losses.item() >= -1e-6
    if name == "dpo":
        expected = F.softplus(torch.tensor(-beta * d, dtype=torch.float64)).item()
        assert out.losses.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


# ------------------------------------------------------------------------------------------
# Gradient direction
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(OBJECTIVES) - {"apo_down", "sft"}))
def test_gradient_pushes_chosen_up_and_rejected_down(name: str) -> None:
    """Raising policy_chosen lowers the loss; raising policy_rejected raises it.

    Holds below each objective's target margin: beta = 1/2, beta d = -1, so rho_c = -1 and
    rho_r = +1 (dpo, sigmoid_norm, robust, cdpo-style losses always; ipo: d_norm = -2 < 1/(2 beta)
    = 1; hinge: beta d = -1 < 1; rpo: beta d = -1 < g = 2; sppo_hard: rho_c = -1 < 1/(2 beta) = 1
    and rho_r = 1 > -1; nca_pair: sigmoid(beta rho_c) = sigmoid(-1/2) < 2/3; discopop, exo_pair,
    aot, aot_unpaired, bco_pair, apo_zero: monotone in the margin or in each log-ratio).
    apo_down (which lowers the chosen on purpose) and sft (no rejected term) are tested on
    their own in test_losses_objectives.py.
    """
    logps = logps_with_logit(-1.0, beta=0.5, grad=True)
    out = run_objective(name, logps, beta=0.5, g=2.0)
    g_chosen, g_rejected = torch.autograd.grad(
        out.losses.sum(), [logps.policy_chosen, logps.policy_rejected]
    )
    assert g_chosen.item() < 0
    assert g_rejected.item() > 0


def test_reference_receives_no_gradient_through_rewards() -> None:
    """Rewards are detached: backpropagating through them is impossible."""
    logps = logps_with_logit(1.0, beta=0.5, grad=True)
    out = dpo_loss(logps, 0.5)
    assert not out.chosen_rewards.requires_grad
    assert not out.rejected_rewards.requires_grad
    assert out.losses.requires_grad


# ------------------------------------------------------------------------------------------
# Shapes and stability
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_output_shapes_unreduced_and_detached(name: str) -> None:
    logps = make_logps(
        pc=[-1.0, -2.0, -3.0, -4.0], pr=[-2.0, -2.0, -1.0, -9.0], nc=[1, 2, 3, 4], grad=True
    )
    out = run_objective(name, logps, beta=0.1, g=0.5)
    assert isinstance(out, LossOutput)
    for tensor in (out.losses, out.chosen_rewards, out.rejected_rewards):
        assert tensor.shape == (4,)
        assert tensor.dtype == torch.float32
    assert not out.chosen_rewards.requires_grad
    assert not out.rejected_rewards.requires_grad
    assert out.sft_losses is None
    assert out.preference_losses is None


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("x", [1e4, -1e4, 1e3, -1e3])
def test_finite_at_extreme_margins(name: str, x: float) -> None:
    """|beta d| up to 1e4 of either sign (and reward gaps of either sign) stays finite."""
    for g in (-30.0, 0.0, 30.0):
        logps = make_logps(pc=[x / 2], pr=[-x / 2], nc=[1], nr=[1], grad=True)
        out = run_objective(name, logps, beta=1.0, g=g)
        grads = torch.autograd.grad(
            out.losses.sum(),
            [logps.policy_chosen, logps.policy_rejected],
            allow_unused=True,  # sft has no rejected term
        )
        assert torch.isfinite(out.losses).all()
        assert all(grad is None or torch.isfinite(grad).all() for grad in grads)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_bfloat16_inputs_computed_in_float32(name: str) -> None:
    """Bfloat16 log-probs are upcast to float32.

    Losses are float32, gradients bf16 and finite, and values equal the float32 computation on
    the same (bf16-representable) numbers.
    """
    values = {"pc": [-40.0, -3.0, -1000.0], "pr": [-38.0, -5.0, 500.0], "nc": [8, 2, 1]}
    bf16 = make_logps(**values, dtype=torch.bfloat16, grad=True)
    fp32 = make_logps(**values, dtype=torch.float32)
    out = run_objective(name, bf16, beta=0.1, g=1.0)
    assert out.losses.dtype == torch.float32
    torch.testing.assert_close(out.losses, run_objective(name, fp32, beta=0.1, g=1.0).losses)
    (grad,) = torch.autograd.grad(out.losses.sum(), bf16.policy_chosen)
    assert grad.dtype == torch.bfloat16
    assert torch.isfinite(grad).all()


def test_zero_token_response_does_not_divide_by_zero() -> None:
    """An empty response (sum 0, count 0) contributes a 0 mean instead of 0/0."""
    logps = make_logps(pc=[0.0], rc=[0.0], nc=[0], pr=[-2.0], rr=[-2.0], nr=[2])
    assert torch.isfinite(ipo_loss(logps, 0.5).losses).all()
    close(sft_loss(logps), [0.0])


def test_rpo_reward_shape_mismatch_raises() -> None:
    logps = make_logps(pc=[-1.0, -2.0], pr=[-2.0, -3.0])
    with pytest.raises(ValueError, match="chosen_reward"):
        rpo_sq_loss(logps, t(1.0), t(0.0, 1.0), 0.1, 1.0)


# ------------------------------------------------------------------------------------------
# PreferenceLoss
# ------------------------------------------------------------------------------------------


def test_registry_contents() -> None:
    assert set(OBJECTIVES) == {
        "dpo",
        "hinge",
        "ipo",
        "robust",
        "exo_pair",
        "nca_pair",
        "bco_pair",
        "sppo_hard",
        "aot",
        "aot_unpaired",
        "apo_zero",
        "apo_down",
        "discopop",
        "sigmoid_norm",
        "rpo_sq",
        "rpo_fwd_kl",
        "rpo_bwd_kl",
        "sft",
    }
    assert frozenset({"rpo_sq", "rpo_fwd_kl", "rpo_bwd_kl"}) == REWARD_OBJECTIVES


def test_defaults_and_repr() -> None:
    loss = PreferenceLoss()
    assert (loss.objective, loss.beta, loss.sft_weight) == ("dpo", 0.1, 0.0)
    assert repr(loss) == "PreferenceLoss(objective='dpo', beta=0.1, sft_weight=0.0)"
    smoothed = PreferenceLoss(partial(dpo_loss, label_smoothing=0.1), average_logps=True)
    assert repr(smoothed) == (
        "PreferenceLoss(objective='dpo(label_smoothing=0.1)', beta=0.1, sft_weight=0.0, "
        "average_logps=True)"
    )


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_requires_rewards(name: str) -> None:
    assert PreferenceLoss(objective=name).requires_rewards == (name in REWARD_OBJECTIVES)


def test_unknown_objective_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="objective") as info:
        PreferenceLoss(objective="kto")
    message = str(info.value)
    assert "kto" in message
    assert str(sorted(OBJECTIVES)) in message


@pytest.mark.parametrize("beta", [0.0, -1.0, math.nan, math.inf, -math.inf, "abc", None, True])
def test_bad_beta_refused(beta: object) -> None:
    with pytest.raises(ValueError, match=r"loss\.beta must be a finite number > 0"):
        PreferenceLoss(beta=beta)  # type: ignore[arg-type]


def test_bad_beta_message_exact() -> None:
    with pytest.raises(ValueError) as info:
        PreferenceLoss(beta=-1.0)
    assert str(info.value) == "loss.beta must be a finite number > 0, got -1.0"


@pytest.mark.parametrize("weight", [-0.1, math.nan, math.inf])
def test_bad_sft_weight_refused(weight: float) -> None:
    with pytest.raises(ValueError, match=r"loss\.sft_weight must be a finite number >= 0"):
        PreferenceLoss(sft_weight=weight)


@pytest.mark.parametrize("scale", [math.nan, math.inf, -math.inf])
def test_bad_gt_reward_scale_refused(scale: float) -> None:
    match = r"loss\.objective\.gt_reward_scale must be a finite number"
    with pytest.raises(ValueError, match=match):
        PreferenceLoss(partial(rpo_sq_loss, gt_reward_scale=scale))


def test_a_hyper_parameter_the_objective_does_not_take_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'dpo' takes the hyper-parameters \['label_smoothing'\]"):
        PreferenceLoss(partial(dpo_loss, tau=0.1))


def test_integer_config_values_accepted() -> None:
    loss = PreferenceLoss(partial(rpo_sq_loss, gt_reward_scale=-2), beta=1, sft_weight=0)
    assert (loss.beta, loss.sft_weight) == (1.0, 0.0)
    assert loss.objectives["rpo_sq"].keywords == {"gt_reward_scale": -2}


@pytest.mark.parametrize("name", sorted(REWARD_OBJECTIVES))
def test_reward_objective_without_rewards_refused(name: str) -> None:
    loss = PreferenceLoss(objective=name)
    logps = make_logps(pc=[-1.0], pr=[-2.0])
    for kwargs in ({}, {"chosen_reward": t(1.0)}, {"rejected_reward": t(1.0)}):
        with pytest.raises(ValueError) as info:
            loss(logps, **kwargs)
        message = str(info.value)
        assert name in message
        assert "chosen_reward" in message
        assert "rejected_reward" in message


def test_reward_shape_mismatch_refused() -> None:
    loss = PreferenceLoss(objective="rpo_fwd_kl")
    logps = make_logps(pc=[-1.0, -2.0], pr=[-2.0, -3.0])
    with pytest.raises(ValueError, match="rejected_reward"):
        loss(logps, t(1.0, 2.0), t(1.0, 2.0, 3.0))


def test_non_reward_objective_ignores_rewards() -> None:
    logps = make_logps(pc=[-1.0], pr=[-2.0])
    out = PreferenceLoss("dpo", beta=0.5)(logps, t(9.0), t(-9.0))
    torch.testing.assert_close(out.losses, dpo_loss(logps, 0.5).losses)


@pytest.mark.parametrize("name", sorted(set(OBJECTIVES) - {"sft", "bco_pair"}))
def test_without_sft_losses_equal_preference(name: str) -> None:
    """PreferenceLoss(name) equals the bare function (bco_pair's running shift: own test)."""
    logps = make_logps(pc=[-1.0, -5.0], pr=[-2.0, -1.0], nc=[2, 5])
    rewards = {"chosen_reward": t(1.0, 0.0), "rejected_reward": t(0.0, 0.5)}
    function = OBJECTIVES[name].function
    objective = partial(function, gt_reward_scale=2.0) if name in REWARD_OBJECTIVES else name
    out = PreferenceLoss(objective, beta=0.2)(logps, **rewards)
    expected = (
        OBJECTIVES[name].function(logps, *rewards.values(), 0.2, 2.0)
        if name in REWARD_OBJECTIVES
        else OBJECTIVES[name].function(logps, beta=0.2)
    )
    torch.testing.assert_close(out.losses, expected.losses)
    torch.testing.assert_close(out.preference_losses, expected.losses)
    torch.testing.assert_close(out.chosen_rewards, expected.chosen_rewards)
    assert out.sft_losses is None


def test_sft_weight_adds_weighted_nll() -> None:
    """Total = preference + sft_weight * NLL, with both parts reported.

    beta = 1/2, sft_weight = 1/4. Pair 1: d = 2 ln 3 -> DPO ln(4/3); chosen -6 over 3 tokens
    -> NLL 2; total ln(4/3) + 1/2. Pair 2: d = 0 -> ln 2; chosen -1 over 4 tokens -> NLL 1/4;
    total ln 2 + 1/16.
    """
    logps = make_logps(
        pc=[-6.0, -1.0], rc=[-6.0 - 2 * LN3, -1.0], nc=[3, 4], pr=[-2.0, -2.0], rr=[-2.0, -2.0]
    )
    out = PreferenceLoss("dpo", beta=0.5, sft_weight=0.25)(logps)
    close(out.preference_losses, [math.log(4 / 3), LN2])
    close(out.sft_losses, [2.0, 0.25])
    close(out.losses, [math.log(4 / 3) + 0.5, LN2 + 1 / 16])
    torch.testing.assert_close(out.losses, out.preference_losses + 0.25 * out.sft_losses)


def test_sft_weight_with_reward_objective_and_gradients() -> None:
    logps = make_logps(pc=[-3.0, -4.0], pr=[-2.0, -6.0], nc=[3, 2], grad=True)
    loss = PreferenceLoss(partial(rpo_bwd_kl_loss, gt_reward_scale=0.5), beta=0.3, sft_weight=2.0)
    out = loss(logps, t(1.0, 2.0), t(0.0, 0.0))
    pref = rpo_bwd_kl_loss(logps, t(1.0, 2.0), t(0.0, 0.0), 0.3, 0.5).losses
    torch.testing.assert_close(out.losses, pref + 2.0 * sft_loss(logps))
    out.losses.mean().backward()
    assert logps.policy_chosen.grad is not None
    assert torch.isfinite(logps.policy_chosen.grad).all()
