"""TRL's conventions: rewards, f-divergences (map, order, refusals, gradients), SFT reductions.

Notation: rho = pi - ref a response's summed log-ratio, n its token count, f' the f-DPO map.
The values are chosen so that f' is exact: forward KL at u = 4 is 1 - 1/4 = 3/4, at u = 1/2 it
is 1 - 2 = -1.
"""

from __future__ import annotations

import math

import pytest
import torch

from lightning_dpo.losses import (
    F_DIVERGENCE_OBJECTIVES,
    F_DIVERGENCES,
    OBJECTIVES,
    REWARD_OBJECTIVES,
    PairLogps,
    PreferenceLoss,
    f_divergence_map,
    sft_loss,
)
from tests.helpers import LN2, close, make_logps, t

E30 = math.exp(30.0)
F_OPTIONS = [
    {"f_divergence": "forward_kl"},
    {"f_divergence": "js_divergence"},
    {"f_divergence": "alpha_divergence", "f_alpha": 0.5},
    {"f_divergence": "alpha_divergence", "f_alpha": 0.01},
]
REWARDS = {"chosen_reward": t(2.0), "rejected_reward": t(0.0)}
ALL_F_OPTIONS = [{}, *F_OPTIONS, {"average_logps": True}, {"reference_free": True}]


def pair() -> PairLogps:
    """rho_c = -3 - (-5) = 2 over 4 tokens, rho_r = -4 - (-3) = -1 over 2 tokens."""
    return make_logps(pc=[-3.0], rc=[-5.0], nc=[4], pr=[-4.0], rr=[-3.0], nr=[2])


@pytest.mark.parametrize("options", ALL_F_OPTIONS, ids=repr)
@pytest.mark.parametrize("name", sorted(F_DIVERGENCE_OBJECTIVES))
def test_rewards_are_beta_times_the_summed_logratio(name: str, options: dict) -> None:
    """TRL's rewards whatever the objective and option: beta rho, summed, not mapped.

    beta = 1/2: rewards 1/2 * 2 = 1 and 1/2 * (-1) = -1/2. Reference-free: against 0, so
    1/2 * (-3) = -3/2 and 1/2 * (-4) = -2. (ipo and sigmoid_norm used to report
    beta rho / n = 1/4 and -1/4; the f-divergences beta f'(e^rho).)
    """
    out = PreferenceLoss(name, beta=0.5, **options)(pair(), **REWARDS)
    expected = ([-1.5], [-2.0]) if options.get("reference_free") else ([1.0], [-0.5])
    close(out.chosen_rewards, expected[0])
    close(out.rejected_rewards, expected[1])


def test_ld_dpo_rewards_use_the_ld_weighted_sums() -> None:
    """LD-DPO: rewards from policy_chosen (the LD-weighted sums, as TRL), not the plain sums.

    LD sums -4 (policy) and -6 (reference): rho_c = 2, reward beta rho_c = 1 (beta = 1/2); the
    plain chosen sum -5, which only the SFT term reads, would give 1/2.
    """
    logps = PairLogps(t(-4.0), t(-1.0), t(-6.0), t(-1.0), t(5.0), t(1.0), sft_chosen=t(-5.0))
    out = PreferenceLoss("dpo", beta=0.5, ld_alpha=0.5, sft_weight=1.0)(logps)
    close(out.chosen_rewards, [1.0])
    close(out.sft_losses, [1.0])  # -(-5) / 5 tokens


def test_objective_rewards_are_what_the_objective_compares() -> None:
    """ipo: beta rho / n = 1/2 * 2/4 = 1/4 and 1/2 * (-1)/2 = -1/4; dpo: None (same as rewards)."""
    out = PreferenceLoss("ipo", beta=0.5)(pair())
    close(out.objective_chosen_rewards, [0.25])
    close(out.objective_rejected_rewards, [-0.25])
    plain = PreferenceLoss("dpo", beta=0.5)(pair())
    assert plain.objective_chosen_rewards is None and plain.objective_rejected_rewards is None


def forward_kl_pair() -> PairLogps:
    """rho_c = ln 4 over 3 tokens (f' = 3/4), rho_r = -ln 2 over 2 tokens (f' = -1)."""
    return make_logps(pc=[2 * LN2 - 1.0], rc=[-1.0], nc=[3], pr=[-LN2], nr=[2])


def test_normalised_objectives_map_first_then_divide() -> None:
    """IPO under forward KL reads f'(e^rho) / n (TRL's order), not f'(e^(rho / n)).

    f'(4) / 3 = 1/4 and f'(1/2) / 2 = -1/2: d_norm = 3/4, beta = 1, target 1/2, loss
    (3/4 - 1/2)^2 = 1/16; objective rewards 1/4 and -1/2, rewards ln 4 and -ln 2. The other
    order gives (1 - 4^(-1/3)) - (1 - 2^(1/2)) = 0.784..., loss 0.080... sigmoid_norm reads the
    same d_norm: softplus(-3/4); dpo with average_logps is sigmoid_norm.
    """
    logps = forward_kl_pair()
    ipo = PreferenceLoss("ipo", beta=1.0, f_divergence="forward_kl")(logps)
    close(ipo.losses, [1 / 16])
    close(ipo.objective_chosen_rewards, [0.25])
    close(ipo.objective_rejected_rewards, [-0.5])
    close(ipo.chosen_rewards, [2 * LN2])
    close(ipo.rejected_rewards, [-LN2])
    norm = PreferenceLoss("sigmoid_norm", beta=1.0, f_divergence="forward_kl")(logps)
    close(norm.losses, [math.log1p(math.exp(-0.75))])
    averaged = PreferenceLoss("dpo", beta=1.0, f_divergence="forward_kl", average_logps=True)
    torch.testing.assert_close(averaged(logps).losses, norm.losses)


def test_alpha_is_the_complement_of_trls_coefficient() -> None:
    """Ours (1 - u^-alpha) / alpha, TRL's (u^(c-1) - 1) / (c - 1): equal for c = 1 - alpha.

    u = 16, alpha = 3/4 (c = 1/4): 16^(-3/4) = 1/8, ours (7/8) / (3/4) = 7/6, TRL's
    (1/8 - 1) / (-3/4) = 7/6.
    """
    close(f_divergence_map(t(4 * LN2), "alpha_divergence", 0.75), [7 / 6])


def test_f_map_is_exact_up_to_e30_then_tangent() -> None:
    """Forward KL, -expm1(-rho) for -rho <= 30, then the tangent: C1 with slope e^30.

    rho = -29: 1 - e^29, slope e^29. rho = -31: 1 - e^30 - e^30 * 1 = 1 - 2 e^30, slope e^30.
    alpha = 1/2 at rho = -62 (exponent 31): (1 - 2 e^30) / (1/2) = 2 - 4 e^30, slope e^30.
    """
    rho = t(-29.0, -31.0, grad=True)
    mapped = f_divergence_map(rho, "forward_kl")
    close(mapped, [1 - math.exp(29.0), 1 - 2 * E30])
    (grad,) = torch.autograd.grad(mapped.sum(), rho)
    close(grad, [math.exp(29.0), E30])
    rho = t(-62.0, grad=True)
    mapped = f_divergence_map(rho, "alpha_divergence", 0.5)
    close(mapped, [2 - 4 * E30])
    close(torch.autograd.grad(mapped.sum(), rho)[0], [E30])


@pytest.mark.parametrize(
    ("options", "slope"),
    [
        ({}, 1.0),
        ({"f_divergence": "forward_kl"}, E30),
        ({"f_divergence": "js_divergence"}, 1.0),
        ({"f_divergence": "alpha_divergence", "f_alpha": 0.5}, E30),
        ({"f_divergence": "alpha_divergence", "f_alpha": 0.01}, math.exp(10.0)),
    ],
    ids=repr,
)
def test_gradient_at_summed_logratio_minus_1e3(options: dict, slope: float) -> None:
    """DPO, beta = 1/2, rho_c = -1e3, rho_r = 0: dL/drho_c = -beta sigma(-beta d) f'' = -slope/2.

    sigma(-beta d) = 1 (d is hugely negative). The map's slope at rho = -1e3: forward KL and
    alpha = 1/2 are past the tangent point (exponents 1e3, 500): e^30; alpha = 0.01: exact,
    e^10; JS: sigma(-rho) = 1; reverse KL: 1. The former cap at e^20 gave 0 here.
    """
    logps = make_logps(pc=[-1e3], pr=[0.0], grad=True)
    out = PreferenceLoss("dpo", beta=0.5, **options)(logps)
    (grad,) = torch.autograd.grad(out.losses.sum(), logps.policy_chosen)
    close(grad, [-slope / 2])


NONVANISHING = sorted(F_DIVERGENCE_OBJECTIVES - {"exo_pair", "rpo_fwd_kl"})


@pytest.mark.parametrize("options", F_OPTIONS, ids=repr)
@pytest.mark.parametrize("name", NONVANISHING)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_f_divergences_finite_with_gradient_at_minus_1e4(name, options, dtype) -> None:
    """rho_c = -1e4, rho_r = 1e4 (beta = 1/2): finite losses and gradients, chosen gradient < 0.

    These objectives keep a gradient as beta d -> -inf (exo_pair and rpo_fwd_kl saturate: their
    true gradient vanishes there, so they are only checked for finiteness below).
    """
    logps = make_logps(pc=[-1e4], pr=[1e4], dtype=dtype, grad=True)
    out = PreferenceLoss(name, beta=0.5, **options)(logps, **REWARDS)
    (grad,) = torch.autograd.grad(out.losses.sum(), logps.policy_chosen)
    assert torch.isfinite(out.losses).all() and torch.isfinite(grad).all()
    assert grad.item() < 0


@pytest.mark.parametrize("options", F_OPTIONS, ids=repr)
@pytest.mark.parametrize("name", ["exo_pair", "rpo_fwd_kl"])
def test_saturating_objectives_stay_finite_at_minus_1e4(name, options) -> None:
    logps = make_logps(pc=[-1e4], pr=[1e4], dtype=torch.bfloat16, grad=True)
    out = PreferenceLoss(name, beta=0.5, **options)(logps, **REWARDS)
    (grad,) = torch.autograd.grad(out.losses.sum(), logps.policy_chosen)
    assert torch.isfinite(out.losses).all() and torch.isfinite(grad).all()


REFUSED = sorted(set(OBJECTIVES) - F_DIVERGENCE_OBJECTIVES - {"sft"})


@pytest.mark.parametrize("divergence", F_DIVERGENCES[1:])
@pytest.mark.parametrize("name", REFUSED)
def test_f_divergence_refused_where_log_z_does_not_cancel(name: str, divergence: str) -> None:
    """nca_pair, bco_pair, sppo_hard, apo_*, aot, aot_unpaired: refused, naming the objective."""
    assert set(REFUSED) == {
        "nca_pair",
        "bco_pair",
        "sppo_hard",
        "apo_zero",
        "apo_down",
        "aot",
        "aot_unpaired",
    }
    with pytest.raises(ValueError) as info:
        PreferenceLoss(name, f_divergence=divergence)
    message = str(info.value)
    assert f"loss.f_divergence={divergence!r} cannot apply to objective {name!r}" in message
    assert "log Z" in message


def test_f_divergence_refused_in_a_mix_names_only_the_offender() -> None:
    with pytest.raises(ValueError) as info:
        PreferenceLoss({"dpo": 1.0, "apo_zero": 0.5}, f_divergence="js_divergence")
    assert "cannot apply to objective 'apo_zero':" in str(info.value)
    with pytest.raises(ValueError, match=r"loss\.f_divergence='forward_kl' applies to .*'sft'"):
        PreferenceLoss("sft", f_divergence="forward_kl")
    for name in sorted(F_DIVERGENCE_OBJECTIVES):
        objective = {name: 1.0, "sft": 0.5}
        loss = PreferenceLoss(objective, f_divergence="forward_kl")
        assert loss.options.f_divergence == "forward_kl"
    assert set(REWARD_OBJECTIVES) <= F_DIVERGENCE_OBJECTIVES


def sft_pairs() -> PairLogps:
    """Chosen NLL 6 over 3 tokens and 1 over 1 token: 4 tokens, NLL 7 in the batch."""
    return make_logps(pc=[-6.0, -1.0], pr=[-1.0, -1.0], nc=[3, 1])


def test_sft_batch_token_mean_is_trls() -> None:
    """batch_token: nll_i * B / N = 6 * 2/4 = 3 and 1 * 2/4 = 1/2, mean 7/4 = 7 NLL / 4 tokens.

    "token" gives the mean of per-pair means (2 + 1) / 2 = 3/2, "sum" the NLLs 6 and 1.
    """
    logps = sft_pairs()
    close(sft_loss(logps, "batch_token"), [3.0, 0.5])
    close(sft_loss(logps, "token"), [2.0, 1.0])
    close(sft_loss(logps, True), [2.0, 1.0])
    close(sft_loss(logps, "sum"), [6.0, 1.0])
    close(sft_loss(logps, False), [6.0, 1.0])
    loss = PreferenceLoss("sft", sft_average="batch_token")
    close(loss(logps).losses.mean().reshape(1), [7 / 4])
    assert "sft_average='batch_token'" in repr(loss)
    assert PreferenceLoss(sft_average=False).options.sft_average == "sum"


def test_sft_batch_token_gradient_is_per_batch_token() -> None:
    """d(mean)/d(pi_c) = -1/N = -1/4 for every pair, whatever its own length."""
    logps = make_logps(pc=[-6.0, -1.0], pr=[-1.0, -1.0], nc=[3, 1], grad=True)
    mean = PreferenceLoss("dpo", sft_weight=1.0, sft_average="batch_token")(logps).sft_losses
    (grad,) = torch.autograd.grad(mean.mean(), logps.policy_chosen)
    close(grad, [-0.25, -0.25])


@pytest.mark.parametrize("value", ["mean", "tokens", 1, None])
def test_bad_sft_average_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"loss\.sft_average must be one of \['token', 'sum'"):
        PreferenceLoss(sft_average=value)  # type: ignore[arg-type]
