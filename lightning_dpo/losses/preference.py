"""The loss Hydra instantiates: objectives with their weights, an SFT term, and the options."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from lightning_dpo.losses.checks import finite
from lightning_dpo.losses.core import LossOutput, PairLogps, logratios, output
from lightning_dpo.losses.options import LossOptions
from lightning_dpo.losses.registry import LENGTH_NORMALISED, REWARD_OBJECTIVES
from lightning_dpo.losses.sft import SftAverage, sft_loss
from lightning_dpo.losses.terms import Objective, describe, resolve_terms
from lightning_dpo.losses.transforms import (
    apply_f_divergence,
    reference_free,
    token_average,
    wpo_weights,
)


class PreferenceLoss(nn.Module):
    """Preference loss: one objective or a weighted mix, an SFT term, cross-objective options.

    This is what Hydra instantiates (``conf/loss/*.yaml``): each objective is a partial of its
    pure function carrying its own hyper-parameters (see :mod:`lightning_dpo.losses.terms`),
    and this class keeps only the weights and what applies across objectives. The per-example
    loss is ``sum_k weight_k * objective_k * wpo_weight + sft_weight * sft``.

    Each objective reads the pairs through the options, in this order: ``reference_free``
    (log-ratios against 0), ``f_divergence`` (each summed log-ratio ``rho`` becomes
    ``f'(e^rho)``), then length normalisation (``average_logps``, ipo, sigmoid_norm: divide by
    the token count), so a normalised objective under an f-divergence reads ``f'(e^rho) / n``, as
    TRL. The reported rewards skip the last two steps (TRL's definition, for every objective);
    what the objective compares is in ``objective_*_rewards`` where it differs.

    It is an ``nn.Module`` so that an objective with state (``bco_pair``'s running reward mean,
    :class:`~lightning_dpo.losses.bco.BcoPair`) follows the LightningModule to its device, into
    checkpoints and between train and eval modes.

    Args:
        objective: A name from :data:`~lightning_dpo.losses.OBJECTIVES`, an objective function
            or a partial of one, a ``{name: weight}`` mapping or ``{name: objective}`` with
            ``weights``, or a list with ``weights``. ``sft`` in a mix is the SFT term.
        beta: Inverse temperature / regularisation strength, finite and > 0.
        sft_weight: Weight of the NLL term on the chosen response, >= 0 (or ``sft`` in a mix).
        weights: The weights of a ``{name: objective}`` mix (missing: 1) or of a list.
        **options: :class:`~lightning_dpo.losses.options.LossOptions`: ``average_logps``,
            ``sft_average``, ``f_divergence``, ``f_alpha``, ``use_weighting``, ``ld_alpha``,
            ``reference_free``.
    """

    def __init__(
        self,
        objective: object = "dpo",
        beta: float = 0.1,
        sft_weight: float = 0.0,
        *,
        weights: Mapping[str, float] | Sequence[float] | None = None,
        average_logps: bool = False,
        sft_average: bool | SftAverage = "token",
        f_divergence: str = "reverse_kl",
        f_alpha: float = 0.5,
        use_weighting: bool = False,
        ld_alpha: float | None = None,
        reference_free: bool = False,
    ) -> None:
        super().__init__()
        objectives, weight_of = resolve_terms(objective, weights)
        self.beta = _checked("beta", beta, lambda value: value > 0, "a finite number > 0")
        self.sft_weight = _checked(
            "sft_weight", sft_weight, lambda value: value >= 0, "a finite number >= 0"
        )
        if "sft" in objectives and self.sft_weight > 0:
            raise ValueError(
                "loss.sft_weight and an 'sft' entry in loss.objective both set the SFT term: "
                "use one"
            )
        self.objective = _description(objectives, weight_of)
        self.sft_term_weight = weight_of.pop("sft", self.sft_weight)
        objectives.pop("sft", None)
        self.weights = weight_of
        self.objectives: dict[str, Objective] = objectives
        self.stateful = nn.ModuleDict(
            {name: o for name, o in objectives.items() if isinstance(o, nn.Module)}
        )
        self.options = LossOptions(
            average_logps, sft_average, f_divergence, f_alpha, use_weighting, ld_alpha,
            reference_free,
        )  # fmt: skip
        self.options.check_objectives(set(objectives))

    @property
    def requires_rewards(self) -> bool:
        """Whether an objective of the loss needs ``chosen_reward``/``rejected_reward``."""
        return bool(set(self.objectives) & REWARD_OBJECTIVES)

    @property
    def reference_free(self) -> bool:
        """Whether the loss compares against zeros instead of the reference (no reference)."""
        return self.options.reference_free

    @property
    def ld_alpha(self) -> float | None:
        """LD-DPO's weight of the excess tokens, applied where log-probs are summed."""
        return self.options.ld_alpha

    @property
    def use_weighting(self) -> bool:
        """Whether WPO's per-pair weights are needed (the policy forward computes them)."""
        return self.options.use_weighting

    def forward(
        self,
        logps: PairLogps,
        chosen_reward: Tensor | None = None,
        rejected_reward: Tensor | None = None,
    ) -> LossOutput:
        """Compute the per-example loss.

        Args:
            logps: Log-probabilities of the pairs (plus token counts, and WPO log-weights when
                ``use_weighting``).
            chosen_reward: ``[B]`` ground-truth rewards of the chosen responses; required by the
                RPO objectives, ignored by the others.
            rejected_reward: ``[B]`` ground-truth rewards of the rejected responses; likewise.

        Returns:
            Unreduced ``[B]`` total losses; detached rewards ``beta * (pi - ref)``, summed (TRL's
            definition, the same for every objective), and ``beta`` times the scores the first
            objective that transforms them compares in ``objective_*_rewards`` (else ``None``);
            the weighted preference part in ``preference_losses`` (``None`` for ``sft`` alone),
            the unweighted NLL in ``sft_losses`` when there is an SFT term, and each objective's
            unweighted losses in ``terms`` for a mix of two or more.

        Raises:
            ValueError: If a reward objective lacks rewards, a length-normalised one lacks token
                counts, or WPO lacks its log-weights.
        """
        rewards = self._rewards(chosen_reward, rejected_reward)
        base = reference_free(logps) if self.options.reference_free else logps
        terms, scores = self._terms(base, rewards)
        preference = None
        if terms:
            preference = sum(weight * terms[name] for name, weight in self.weights.items())
            if self.options.use_weighting:
                preference = preference * wpo_weights(logps)
        first = output(torch.zeros(()), *logratios(base), self.beta, scores=scores)
        return self._assemble(first, preference, logps, terms)

    def _terms(
        self, base: PairLogps, rewards: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], tuple[Tensor, Tensor] | None]:
        """Each objective's unweighted losses, and the first transformed view's log-ratios."""
        views: dict[bool, PairLogps] = {}
        terms: dict[str, Tensor] = {}
        scores: tuple[Tensor, Tensor] | None = None
        for name, objective in self.objectives.items():
            normalised = name in LENGTH_NORMALISED or self.options.average_logps
            if normalised not in views:
                views[normalised] = self._prepare(base, name if normalised else None)
            extra = rewards if name in REWARD_OBJECTIVES else {}
            terms[name] = objective(views[normalised], beta=self.beta, **extra).losses
            if scores is None and views[normalised] is not base:
                scores = logratios(views[normalised])
        return terms, scores

    def _assemble(
        self,
        first: LossOutput,
        preference: Tensor | None,
        logps: PairLogps,
        terms: dict[str, Tensor],
    ) -> LossOutput:
        """Add the SFT term and package the parts with the rewards in ``first``."""
        sft = sft_loss(logps, self.options.sft_average) if self.sft_term_weight > 0 else None
        if sft is None:
            total = preference
        elif preference is None:
            total = self.sft_term_weight * sft
        else:
            total = preference + self.sft_term_weight * sft
        assert total is not None  # resolve_terms guarantees a positive weight somewhere
        return first._replace(
            losses=total,
            sft_losses=sft,
            preference_losses=preference,
            terms=terms if len(terms) > 1 else None,
        )

    def _prepare(self, logps: PairLogps, normalised_for: str | None) -> PairLogps:
        """Apply f-divergence, then token averaging (``logps`` is already reference-free)."""
        logps = apply_f_divergence(logps, self.options.f_divergence, self.options.f_alpha)
        if normalised_for is not None:
            needed_by = (
                "loss.average_logps"
                if self.options.average_logps
                else f"objective {normalised_for!r}"
            )
            logps = token_average(logps, needed_by)
        return logps

    def _rewards(self, chosen_reward: Tensor | None, rejected_reward: Tensor | None) -> dict:
        """The rewards when an objective needs them, or a clear error saying which are missing."""
        if not self.requires_rewards:
            return {}
        given = {"chosen_reward": chosen_reward, "rejected_reward": rejected_reward}
        missing = [name for name, value in given.items() if value is None]
        if missing:
            needs = sorted(set(self.objectives) & REWARD_OBJECTIVES)
            raise ValueError(
                f"loss objective {', '.join(map(repr, needs))} needs per-pair rewards: pass "
                f"`chosen_reward` and `rejected_reward` (missing: {', '.join(missing)})"
            )
        return given

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        """The configuration: objective, beta and SFT weight, then the changed options."""
        fields = {"objective": self.objective, "beta": self.beta, "sft_weight": self.sft_weight}
        fields.update(self.options.changed())
        return ", ".join(f"{name}={value!r}" for name, value in fields.items())


def _checked(name: str, value: object, valid: Callable[[float], bool], requirement: str) -> float:
    """``value`` as a finite float that is ``valid``, else an error naming ``loss.<name>``."""
    number = finite(name, value, requirement)
    if not valid(number):
        raise ValueError(f"loss.{name} must be {requirement}, got {value!r}")
    return number


def _description(objectives: dict[str, Objective], weight_of: dict[str, float]) -> object:
    """The objective for ``repr``: its name (with a partial's hyper-parameters) or the mix."""
    if len(weight_of) > 1:
        return dict(weight_of)
    name, objective = next(iter(objectives.items()))
    return describe(name, objective)
