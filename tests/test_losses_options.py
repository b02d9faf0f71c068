"""Options across objectives, mixes, BCO's running shift, and errors that name their field.

Options: reference-free, token averaging, f-divergences, WPO weights, LD-DPO weights.
"""

from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lightning_dpo.losses import (
    OBJECTIVES,
    BcoPair,
    PairLogps,
    PreferenceLoss,
    aot_loss,
    bco_pair_loss,
    discopop_loss,
    dpo_loss,
    f_divergence_map,
    ipo_loss,
    robust_loss,
    sft_loss,
    sigmoid_norm_loss,
    wpo_weights,
)
from lightning_dpo.scoring import ScoringPlan, ld_token_weights, scored_tokens, sequence_logps
from tests.helpers import LN2, LN3, close, make_logps, t


def test_reference_free_compares_against_zero() -> None:
    """reference_free: rho = pi, whatever the references.

    pc = -1, pr = -1 - ln 3: beta d = ln 3 with beta = 1, loss ln(4/3), rewards -1, -1 - ln 3.
    """
    logps = make_logps(pc=[-1.0], pr=[-1.0 - LN3], rc=[-9.0], rr=[5.0])
    out = PreferenceLoss("dpo", beta=1.0, reference_free=True)(logps)
    close(out.losses, [math.log(4 / 3)])
    close(out.rejected_rewards, [-1.0 - LN3])


def test_average_logps_turns_dpo_into_sigmoid_norm() -> None:
    """average_logps divides every log-prob by its token count: DPO becomes sigmoid_norm."""
    logps = make_logps(pc=[-8.0, -3.0], rc=[-9.0, -1.0], nc=[4, 3], pr=[-2.0, -6.0], nr=[2, 5])
    averaged = PreferenceLoss("dpo", beta=2.0, average_logps=True)(logps)
    torch.testing.assert_close(averaged.losses, sigmoid_norm_loss(logps, 2.0).losses)
    assert not torch.allclose(averaged.losses, dpo_loss(logps, 2.0).losses)


@pytest.mark.parametrize(
    ("divergence", "alpha", "rho", "expected"),
    [
        # reverse KL: the identity.
        ("reverse_kl", 0.5, [LN2, -1.0], [LN2, -1.0]),
        # forward KL: 1 - 1/u; u = 2 -> 1/2, u = 1/2 -> -1.
        ("forward_kl", 0.5, [LN2, -LN2], [0.5, -1.0]),
        # JS: log(2u / (1 + u)); u = 1 -> 0, u = 3 -> ln(3/2).
        ("js_divergence", 0.5, [0.0, LN3], [0.0, math.log(1.5)]),
        # alpha = 1/2: (1 - u^-1/2) / (1/2); u = 4 -> 1, u = 1/4 -> -2.
        ("alpha_divergence", 0.5, [2 * LN2, -2 * LN2], [1.0, -2.0]),
        # alpha = 1 is forward KL.
        ("alpha_divergence", 1.0, [LN2, -LN2], [0.5, -1.0]),
    ],
)
def test_f_divergence_map_hand_values(divergence, alpha, rho, expected) -> None:
    close(f_divergence_map(t(*rho), divergence, alpha), expected, atol=1e-7)


def test_alpha_divergence_approaches_reverse_kl() -> None:
    """(1 - e^(-alpha rho)) / alpha -> rho as alpha -> 0."""
    rho = t(-2.0, 0.5, 3.0)
    torch.testing.assert_close(
        f_divergence_map(rho, "alpha_divergence", 1e-4), rho, rtol=1e-3, atol=1e-3
    )


def test_f_dpo_forward_kl_hand_values() -> None:
    """f-DPO, forward KL, beta = 1: rho_c = ln 2 -> 1/2, rho_r = -ln 2 -> -1; d = 3/2.

    Loss -ln sigma(3/2) = softplus(-3/2); the objective's rewards beta f'(u) = 1/2 and -1; the
    rewards (TRL's) beta rho = ln 2 and -ln 2.
    """
    logps = make_logps(pc=[LN2 - 1.0], rc=[-1.0], pr=[-LN2 - 2.0], rr=[-2.0])
    out = PreferenceLoss("dpo", beta=1.0, f_divergence="forward_kl")(logps)
    close(out.losses, [F.softplus(torch.tensor(-1.5, dtype=torch.float64)).item()])
    close(out.objective_chosen_rewards, [0.5])
    close(out.objective_rejected_rewards, [-1.0])
    close(out.chosen_rewards, [LN2])
    close(out.rejected_rewards, [-LN2])


@pytest.mark.parametrize("divergence", ["forward_kl", "js_divergence", "alpha_divergence"])
@pytest.mark.parametrize("name", ["dpo", "ipo", "hinge", "rpo_bwd_kl"])
def test_f_divergence_keeps_gradient_direction_and_finiteness(divergence, name) -> None:
    """The f-maps keep gradient signs, and stay finite at |rho| = 1e4 in float32 and bf16.

    f' is increasing, so each objective's gradient signs survive the map (at rho_c = -1,
    rho_r = 1, beta = 1/2); exp is continued linearly past e^30, so values and gradients stay
    finite. (apo_zero, tested here before, now refuses f-divergences.)
    """
    loss = PreferenceLoss(name, beta=0.5, f_divergence=divergence)
    rewards = {"chosen_reward": t(2.0), "rejected_reward": t(0.0)}
    for rho, check_sign in ((1.0, True), (1e4, False), (-1e4, False)):
        logps = make_logps(pc=[-rho], pr=[rho], grad=True)
        for dtype in (torch.float32, torch.bfloat16):
            cast = (
                make_logps(pc=[-rho], pr=[rho], dtype=dtype, grad=True)
                if dtype != torch.float32
                else logps
            )
            out = loss(cast, **rewards)
            g_c, g_r = torch.autograd.grad(
                out.losses.sum(), [cast.policy_chosen, cast.policy_rejected]
            )
            assert torch.isfinite(out.losses).all()
            assert torch.isfinite(g_c).all() and torch.isfinite(g_r).all()
            if check_sign:
                assert g_c.item() < 0 < g_r.item()


def test_wpo_weights_hand_values() -> None:
    """min(1, exp(w_c + w_r)): log-weights -ln 2 each -> 1/4; +1 and 0 -> clamped to 1."""
    logps = PairLogps(
        *(t(0.0, 0.0) for _ in range(4)),
        chosen_weight_logps=t(-LN2, 1.0),
        rejected_weight_logps=t(-LN2, 0.0),
    )
    close(wpo_weights(logps), [0.25, 1.0])


def test_wpo_weights_multiply_the_preference_term_only() -> None:
    """Total = w * DPO + sft_weight * NLL with w = 1/4; the weight carries no gradient."""
    logps = make_logps(pc=[-2.0], pr=[-3.0], nc=[2], grad=True)
    weighted = PairLogps(
        **{**vars(logps), "chosen_weight_logps": t(-LN2), "rejected_weight_logps": t(-LN2)}
    )
    out = PreferenceLoss("dpo", beta=1.0, sft_weight=0.5, use_weighting=True)(weighted)
    expected = 0.25 * dpo_loss(logps, 1.0).losses + 0.5 * sft_loss(logps)
    torch.testing.assert_close(out.losses, expected)
    torch.testing.assert_close(out.preference_losses, 0.25 * dpo_loss(logps, 1.0).losses)


def test_wpo_without_weights_says_what_is_missing() -> None:
    with pytest.raises(ValueError, match=r"use_weighting.*chosen_weight_logps, rejected_weight"):
        PreferenceLoss("dpo", use_weighting=True)(make_logps(pc=[-1.0], pr=[-2.0]))


PADDED = ScoringPlan("padded", chunk_size=None)
"""The plain path on padded rows, for the hand-built batches below."""


class FixedLogits(torch.nn.Module):
    """A 'causal LM' whose next-token distribution is the same at every position."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(probs).log()

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        """Logits of shape [N, T, V], identical at every position."""
        shape = (*input_ids.shape, self.logits.numel())
        return SimpleNamespace(logits=self.logits.expand(shape).clone())


def two_rows(chosen: int, rejected: int, token: int = 0) -> dict[str, torch.Tensor]:
    """One pair in the padded layout: a 1-token prompt, responses of `chosen` and `rejected`."""
    width = 1 + max(chosen, rejected)
    ids = torch.full((2, width), token)
    loss_mask = torch.zeros(2, width, dtype=torch.bool)
    loss_mask[0, 1 : 1 + chosen] = True
    loss_mask[1, 1 : 1 + rejected] = True
    return {"input_ids": ids, "attention_mask": torch.ones(2, width), "loss_mask": loss_mask}


def test_wpo_log_weights_from_the_token_distribution() -> None:
    """P = (1/2, 1/6, 1/6, 1/6): sum p^2 = 1/4 + 3/36 = 1/3.

    Token 0 (p = 1/2): log(1/2) - log(1/3) = ln(3/2); token 1 (p = 1/6): ln(1/2).
    Uniform p = 1/4: sum p^2 = 1/4, log-weight 0 (on-policy samples weigh 1).
    """
    for token, expected in ((0, math.log(1.5)), (1, -LN2)):
        out = sequence_logps(
            FixedLogits([0.5, 1 / 6, 1 / 6, 1 / 6]), two_rows(3, 2, token), PADDED, wpo_weights=True
        )
        close(out.wpo_log_weights, [expected, expected], atol=1e-6)
    uniform = sequence_logps(FixedLogits([0.25] * 4), two_rows(3, 2), PADDED, wpo_weights=True)
    close(uniform.wpo_log_weights, [0.0, 0.0], atol=1e-6)


def test_ld_token_weights_hand_values() -> None:
    """Chosen 3 tokens, rejected 5: l_p = 3, the rejected's 4th and 5th tokens weigh alpha."""
    scored = scored_tokens(two_rows(3, 5))
    weights = ld_token_weights(scored, scored.lengths, 0.25)
    close(weights, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.25, 0.25])  # chosen 3, rejected 5


def test_ld_alpha_sums_and_plain_sums() -> None:
    """LD-DPO sums with alpha = 1/2, and the plain sums beside them.

    Uniform p = 1/4: every token is -ln 4. Chosen 3 tokens: -3 ln 4 either way; rejected 5
    tokens: plain -5 ln 4, LD -(3 + 2 * 1/2) ln 4 = -4 ln 4.
    """
    out = sequence_logps(FixedLogits([0.25] * 4), two_rows(3, 5), PADDED, ld_alpha=0.5)
    ln4 = math.log(4.0)
    close(out.sums, [-3 * ln4, -4 * ln4], atol=1e-6)
    close(out.plain_sums, [-3 * ln4, -5 * ln4], atol=1e-6)
    close(out.token_counts, [3, 5])


def test_mix_is_the_weighted_sum_with_every_term_reported() -> None:
    """0.8 dpo + 0.2 bco_pair + 1.0 sft (eval mode: bco's shift is the batch mean reward)."""
    logps = make_logps(pc=[-1.0, -4.0], pr=[-3.0, -2.0], nc=[2, 4])
    loss = PreferenceLoss({"dpo": 0.8, "bco_pair": 0.2, "sft": 1.0}, beta=0.5).eval()
    out = loss(logps)
    delta = 0.5 * torch.cat([logps.policy_chosen, logps.policy_rejected]).mean()
    dpo, bco = dpo_loss(logps, 0.5).losses, bco_pair_loss(logps, 0.5, delta).losses
    torch.testing.assert_close(out.terms["dpo"], dpo)
    torch.testing.assert_close(out.terms["bco_pair"], bco)
    torch.testing.assert_close(out.preference_losses, 0.8 * dpo + 0.2 * bco)
    torch.testing.assert_close(out.losses, 0.8 * dpo + 0.2 * bco + sft_loss(logps))
    listed = PreferenceLoss(["dpo", "bco_pair", "sft"], beta=0.5, weights=[0.8, 0.2, 1.0]).eval()
    torch.testing.assert_close(listed(logps).losses, out.losses)


def test_bco_running_mean_of_training_batches() -> None:
    """Delta after batch k is the mean of the k batch-mean rewards; eval reads, never updates."""
    loss = PreferenceLoss("bco_pair", beta=1.0)
    first = make_logps(pc=[1.0, 3.0], pr=[-1.0, 1.0])  # batch mean reward (1+3-1+1)/4 = 1
    second = make_logps(pc=[4.0], pr=[2.0])  # batch mean 3 -> running mean (1 + 3) / 2 = 2
    torch.testing.assert_close(loss(first).losses, bco_pair_loss(first, 1.0, 1.0).losses)
    torch.testing.assert_close(loss(second).losses, bco_pair_loss(second, 1.0, 2.0).losses)
    loss.eval()
    torch.testing.assert_close(loss(first).losses, bco_pair_loss(first, 1.0, 2.0).losses)
    state = loss.state_dict()
    assert (float(state["stateful.bco_pair.mean"]), int(state["stateful.bco_pair.batches"])) == (
        2.0,
        2,
    )
    restored = PreferenceLoss(BcoPair(), beta=1.0)
    restored.load_state_dict(state)
    assert float(restored.stateful.bco_pair.mean) == 2.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (
            {"objective": partial(dpo_loss, label_smoothing=0.5)},
            "loss.objective.label_smoothing must be a number in [0, 0.5)",
        ),
        (
            {"objective": partial(robust_loss, label_smoothing=-0.1)},
            "loss.objective.label_smoothing",
        ),
        ({"objective": partial(aot_loss, label_smoothing=math.nan)}, "objective.label_smoothing"),
        (
            {"f_divergence": "alpha_divergence", "f_alpha": 0.0},
            "loss.f_alpha must be a number in (0, 1]",
        ),
        ({"f_alpha": 1.5}, "loss.f_alpha"),
        ({"f_alpha": -1}, "loss.f_alpha"),
        ({"f_divergence": "tv"}, "loss.f_divergence must be one of ['reverse_kl', 'forward_kl'"),
        (
            {"objective": partial(discopop_loss, tau=0.0)},
            "loss.objective.tau must be a number in (0, 1]",
        ),
        ({"objective": partial(discopop_loss, tau=2.0)}, "loss.objective.tau"),
        ({"ld_alpha": 1.5}, "loss.ld_alpha must be a number in [0, 1]"),
        ({"ld_alpha": -0.1}, "loss.ld_alpha"),
        ({"use_weighting": "false"}, "loss.use_weighting must be true or false"),
        ({"objective": {"dpo": -0.5}}, "loss.objective.dpo must be a finite weight >= 0"),
        ({"objective": ["dpo", "ipo"], "weights": [1.0, -1.0]}, "loss.objective.ipo must be"),
        ({"objective": ["dpo", "ipo"], "weights": [1.0]}, "loss.weights must have one weight"),
        ({"objective": {"dpo": 0.0}}, "at least one weight > 0"),
        ({"objective": ["dpo", "dpo"]}, "lists 'dpo' twice"),
        ({"objective": {"dpo": 1.0, "sft": 1.0}, "sft_weight": 0.5}, "both set the SFT term"),
        (
            {"objective": {"ipo": partial(ipo_loss, label_smoothing=0.1)}},
            "loss.objective.ipo: objective 'ipo' takes the hyper-parameters none besides beta",
        ),
        ({"objective": "aot", "f_divergence": "forward_kl"}, "cannot apply to objective 'aot'"),
        ({"objective": "aot_unpaired", "use_weighting": True}, "per-quantile"),
    ],
)
def test_bad_option_names_its_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError) as info:
        PreferenceLoss(**kwargs)
    assert field in str(info.value)


def test_unknown_objective_in_a_mix_lists_the_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        PreferenceLoss({"dpo": 1.0, "kto": 1.0})
    assert "kto" in str(info.value)
    assert str(sorted(OBJECTIVES)) in str(info.value)


@pytest.mark.parametrize(
    ("loss", "needed_by"),
    [
        (PreferenceLoss("ipo"), "objective 'ipo'"),
        (PreferenceLoss("sigmoid_norm"), "objective 'sigmoid_norm'"),
        (PreferenceLoss("dpo", average_logps=True), "loss.average_logps"),
        (PreferenceLoss("dpo", sft_weight=1.0), "per-token SFT term"),
    ],
)
def test_missing_lengths_say_who_needs_them(loss: PreferenceLoss, needed_by: str) -> None:
    logps = PairLogps(t(-1.0), t(-2.0), t(-1.0), t(-2.0))  # no token counts
    with pytest.raises(ValueError) as info:
        loss(logps)
    assert needed_by in str(info.value)
    assert "chosen_tokens" in str(info.value)


def test_repr_shows_options_that_differ_from_the_defaults() -> None:
    loss = PreferenceLoss({"dpo": 1.0, "sft": 0.5}, ld_alpha=0.5, f_divergence="js_divergence")
    assert repr(loss) == (
        "PreferenceLoss(objective={'dpo': 1.0, 'sft': 0.5}, beta=0.1, sft_weight=0.0, "
        "f_divergence='js_divergence', ld_alpha=0.5)"
    )
    assert loss.requires_rewards is False
    assert PreferenceLoss({"dpo": 1.0, "rpo_sq": 1.0}).requires_rewards is True
