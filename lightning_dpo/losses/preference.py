"""The configurable loss that Hydra instantiates: one objective or a weighted mix, plus options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lightning_dpo.losses import validation as check
from lightning_dpo.losses.core import LossOutput, PairLogps, logratios, output
from lightning_dpo.losses.registry import (
    LENGTH_NORMALISED,
    OBJECTIVE_PARAMS,
    OBJECTIVES,
    REWARD_OBJECTIVES,
)
from lightning_dpo.losses.sft import SftAverage, sft_loss
from lightning_dpo.losses.transforms import (
    apply_f_divergence,
    reference_free,
    token_average,
    wpo_weights,
)

_DEFAULTS = {
    "label_smoothing": 0.0,
    "discopop_tau": 0.05,
    "average_logps": False,
    "sft_average": "token",
    "f_divergence": "reverse_kl",
    "f_alpha": 0.5,
    "use_weighting": False,
    "ld_alpha": None,
    "reference_free": False,
}


class PreferenceLoss(nn.Module):
    """Configurable preference loss: one objective or a weighted mix, plus an optional SFT term.

    This is what Hydra instantiates (``conf/loss/*.yaml``, ``_target_:
    lightning_dpo.PreferenceLoss``); the configuration is validated at construction and every
    error names its ``loss.<field>``. The per-example loss is
    ``sum_k weight_k * objective_k * wpo_weight + sft_weight * sft``.

    Each objective reads the pairs through the options, in this order: ``reference_free``
    (log-ratios against 0), ``f_divergence`` (each summed log-ratio ``rho`` becomes
    ``f'(e^rho)``), then length normalisation (``average_logps``, ipo, sigmoid_norm: divide by
    the token count), so a normalised objective under an f-divergence reads ``f'(e^rho) / n``, as
    TRL. The reported rewards skip the last two steps (TRL's definition, for every objective);
    what the objective compares is in ``objective_*_rewards`` where it differs.

    It is an ``nn.Module`` only so that ``bco_pair``'s running reward mean (two buffers,
    ``bco_mean``/``bco_batches``) follows the LightningModule to its device, into checkpoints,
    and between train (updated) and eval (read only) modes. Other objectives hold no state.

    Args:
        objective: A name from :data:`~lightning_dpo.losses.OBJECTIVES`, a ``{name: weight}``
            mapping (``loss=mix``), or a list of names with ``weights``. ``sft`` in a mix is the
            SFT term.
        beta: Inverse temperature / regularisation strength, finite and > 0.
        sft_weight: Weight of the NLL term on the chosen response, >= 0 (or ``sft`` in a mix).
        gt_reward_scale: Multiplier of the ground-truth reward gap (RPO objectives).
        weights: Weights of a list of objectives (default all 1).
        label_smoothing: Label-flip rate in ``[0, 0.5)`` for dpo (cDPO), robust, exo_pair, aot,
            aot_unpaired.
        discopop_tau: Temperature of DiscoPOP's gate, in ``(0, 1]``.
        average_logps: Preference objectives see per-token mean log-probs instead of sums (IPO
            and sigmoid_norm always do).
        sft_average: Reduction of the SFT term: ``"token"`` (or ``True``; each pair's per-token
            mean NLL), ``"sum"`` (or ``False``; summed NLL) or ``"batch_token"`` (TRL's token
            mean over the batch, spread so that the batch mean of the per-example values is it;
            see :func:`~lightning_dpo.losses.sft_loss`).
        f_divergence: The divergence constraint, one of ``reverse_kl`` (DPO), ``forward_kl``,
            ``js_divergence``, ``alpha_divergence``: the map applied to each summed log-ratio.
            Anything but ``reverse_kl`` is refused unless every objective is one of
            :data:`~lightning_dpo.losses.F_DIVERGENCE_OBJECTIVES` (margin objectives).
        f_alpha: The alpha-divergence coefficient ``alpha`` of f-DPO, in ``(0, 1]``:
            ``f'(u) = (1 - u^-alpha) / alpha``; TRL's ``f_alpha_divergence_coef`` is
            ``1 - alpha``.
        use_weighting: WPO: weight each pair by how likely it is under the current policy.
        ld_alpha: LD-DPO: weight in ``[0, 1]`` of the response tokens past the shorter response
            of the pair, applied where the log-probs are summed (policy and reference alike, by
            :meth:`~lightning_dpo.PreferenceModule.sequence_logps`); ``None`` turns it off.
        reference_free: Log-ratios against zero instead of the reference log-probs.
    """

    def __init__(
        self,
        objective: str | Mapping[str, float] | Sequence[str] = "dpo",
        beta: float = 0.1,
        sft_weight: float = 0.0,
        gt_reward_scale: float = 1.0,
        *,
        weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        discopop_tau: float = 0.05,
        average_logps: bool = False,
        sft_average: bool | SftAverage = True,
        f_divergence: str = "reverse_kl",
        f_alpha: float = 0.5,
        use_weighting: bool = False,
        ld_alpha: float | None = None,
        reference_free: bool = False,
    ) -> None:
        super().__init__()
        terms = check.components(objective, weights)
        self.objective = objective if isinstance(objective, str) else dict(terms)
        self.beta = check.finite("beta", beta, "a finite number > 0")
        if self.beta <= 0:
            raise ValueError(f"loss.beta must be a finite number > 0, got {beta!r}")
        self.sft_weight = check.finite("sft_weight", sft_weight, "a finite number >= 0")
        if self.sft_weight < 0:
            raise ValueError(f"loss.sft_weight must be a finite number >= 0, got {sft_weight!r}")
        if "sft" in terms and self.sft_weight > 0:
            raise ValueError(
                "loss.sft_weight and an 'sft' entry in loss.objective both set the SFT term: "
                "use one"
            )
        self.sft_term_weight = terms.pop("sft", self.sft_weight)
        self.components = terms
        options = check.options(
            gt_reward_scale=gt_reward_scale,
            label_smoothing=label_smoothing,
            discopop_tau=discopop_tau,
            average_logps=average_logps,
            sft_average=sft_average,
            f_divergence=f_divergence,
            f_alpha=f_alpha,
            use_weighting=use_weighting,
            ld_alpha=ld_alpha,
            reference_free=reference_free,
        )
        for name, value in options.items():
            setattr(self, name, value)
        check.combinations(
            set(terms),
            label_smoothing=self.label_smoothing,
            f_divergence=self.f_divergence,
            use_weighting=self.use_weighting,
        )
        if "bco_pair" in terms:
            self.register_buffer("bco_mean", torch.zeros((), dtype=torch.float64))
            self.register_buffer("bco_batches", torch.zeros((), dtype=torch.long))

    @property
    def requires_rewards(self) -> bool:
        """Whether an objective of the loss needs ``chosen_reward``/``rejected_reward``."""
        return bool(set(self.components) & REWARD_OBJECTIVES)

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
            objective that transforms them compares (length-normalised and/or f-mapped) in
            ``objective_*_rewards`` (else ``None``);
            the weighted preference part in ``preference_losses`` (``None`` for ``sft`` alone),
            the unweighted NLL in ``sft_losses`` when there is an SFT term, and each objective's
            unweighted losses in ``terms`` for a mix of two or more.

        Raises:
            ValueError: If a reward objective lacks rewards, a length-normalised one lacks token
                counts, or WPO lacks its log-weights.
        """
        rewards = self._rewards(chosen_reward, rejected_reward)
        base = reference_free(logps) if self.reference_free else logps
        terms, scores = self._terms(base, rewards)
        preference = None
        if terms:
            preference = sum(weight * terms[name] for name, weight in self.components.items())
            if self.use_weighting:
                preference = preference * wpo_weights(logps)
        first = output(torch.zeros(()), *logratios(base), self.beta, scores=scores)
        return self._assemble(first, preference, logps, terms)

    def _terms(
        self, base: PairLogps, rewards: tuple[Tensor, Tensor] | None
    ) -> tuple[dict[str, Tensor], tuple[Tensor, Tensor] | None]:
        """Each objective's unweighted losses, and the first transformed view's log-ratios."""
        views: dict[bool, PairLogps] = {}
        terms: dict[str, Tensor] = {}
        scores: tuple[Tensor, Tensor] | None = None
        for name in self.components:
            normalised = name in LENGTH_NORMALISED or self.average_logps
            if normalised not in views:
                views[normalised] = self._prepare(base, name if normalised else None)
            terms[name] = self._objective(name, views[normalised], rewards).losses
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
        sft = sft_loss(logps, self.sft_average) if self.sft_term_weight > 0 else None
        if sft is None:
            total = preference
        elif preference is None:
            total = self.sft_term_weight * sft
        else:
            total = preference + self.sft_term_weight * sft
        assert total is not None  # validation guarantees a positive weight somewhere
        return first._replace(
            losses=total,
            sft_losses=sft,
            preference_losses=preference,
            terms=terms if len(terms) > 1 else None,
        )

    def _prepare(self, logps: PairLogps, normalised_for: str | None) -> PairLogps:
        """Apply f-divergence, then token averaging (``logps`` is already reference-free)."""
        logps = apply_f_divergence(logps, self.f_divergence, self.f_alpha)
        if normalised_for is not None:
            needed_by = (
                "loss.average_logps" if self.average_logps else f"objective {normalised_for!r}"
            )
            logps = token_average(logps, needed_by)
        return logps

    def _objective(
        self, name: str, logps: PairLogps, rewards: tuple[Tensor, Tensor] | None
    ) -> LossOutput:
        """Call one registered objective with its hyper-parameters."""
        kwargs: dict[str, object] = {
            arg: getattr(self, attr) for arg, attr in OBJECTIVE_PARAMS.get(name, {}).items()
        }
        if name in REWARD_OBJECTIVES:
            assert rewards is not None  # checked by _rewards
            kwargs["chosen_reward"], kwargs["rejected_reward"] = rewards
        if name == "bco_pair":
            kwargs["delta"] = self._bco_delta(logps)
        return OBJECTIVES[name](logps, beta=self.beta, **kwargs)

    def _bco_delta(self, logps: PairLogps) -> Tensor:
        """BCO's reward shift: the running mean over training batches of the batch mean reward.

        The BCO paper's ``delta`` (TRL 1.16's ``bco_pair`` has none). Updated in training mode
        only, as a mean of batch means; in eval mode the stored mean is read, or the batch's own
        mean before any training batch.
        """
        chosen, rejected = logratios(logps)
        batch_mean = (self.beta * torch.cat([chosen, rejected])).mean().detach()
        mean: Tensor = self.bco_mean
        if self.training:
            self.bco_batches += 1
            mean += (batch_mean.to(mean) - mean) / self.bco_batches
        elif int(self.bco_batches) == 0:
            return batch_mean
        return mean.to(batch_mean)

    def _rewards(
        self, chosen_reward: Tensor | None, rejected_reward: Tensor | None
    ) -> tuple[Tensor, Tensor] | None:
        """The rewards when an objective needs them, or a clear error saying which are missing."""
        if not self.requires_rewards:
            return None
        missing = [
            name
            for name, value in (
                ("chosen_reward", chosen_reward),
                ("rejected_reward", rejected_reward),
            )
            if value is None
        ]
        if missing:
            needs = sorted(set(self.components) & REWARD_OBJECTIVES)
            raise ValueError(
                f"loss objective {', '.join(map(repr, needs))} needs per-pair rewards: pass "
                f"`chosen_reward` and `rejected_reward` (missing: {', '.join(missing)})"
            )
        return chosen_reward, rejected_reward  # type: ignore[return-value]

    def extra_repr(self) -> str:
        """The configuration: the four core fields, then every option not at its default."""
        fields = {
            "objective": self.objective,
            "beta": self.beta,
            "sft_weight": self.sft_weight,
            "gt_reward_scale": self.gt_reward_scale,
        }
        fields.update(
            {
                name: getattr(self, name)
                for name, default in _DEFAULTS.items()
                if getattr(self, name) != default
            }
        )
        return ", ".join(f"{name}={value!r}" for name, value in fields.items())
