"""The options that apply across objectives, checked when the loss is built."""

from __future__ import annotations

from dataclasses import dataclass, fields

from lightning_dpo.losses.checks import flag, in_range
from lightning_dpo.losses.registry import F_DIVERGENCE_OBJECTIVES, QUANTILE_OBJECTIVES
from lightning_dpo.losses.sft import sft_mode
from lightning_dpo.losses.transforms import F_DIVERGENCES


@dataclass(frozen=True)
class LossOptions:
    """Cross-objective options of :class:`~lightning_dpo.losses.PreferenceLoss`, checked.

    Attributes:
        average_logps: Preference objectives see per-token mean log-probs instead of sums
            (ipo and sigmoid_norm always do).
        sft_average: Reduction of the SFT term: ``"token"`` (or ``True``; each pair's
            per-token mean NLL), ``"sum"`` (or ``False``) or ``"batch_token"`` (TRL's token
            mean over the batch; see :func:`~lightning_dpo.losses.sft_loss`). Stored as the name.
        f_divergence: ``reverse_kl`` (DPO), ``forward_kl``, ``js_divergence`` or
            ``alpha_divergence``: the map applied to each summed log-ratio.
        f_alpha: f-DPO's alpha in ``(0, 1]``: ``f'(u) = (1 - u^-alpha) / alpha``; TRL's
            ``f_alpha_divergence_coef`` is ``1 - alpha``.
        use_weighting: WPO: weight each pair by how likely it is under the current policy.
        ld_alpha: LD-DPO's weight in ``[0, 1]`` of the tokens past the shorter response of the
            pair (policy and reference alike); ``None`` turns it off.
        reference_free: Log-ratios against zero instead of the reference log-probs.

    Raises:
        ValueError: Naming the first ``loss.<option>`` out of range and what it must be.
    """

    average_logps: bool = False
    sft_average: bool | str = "token"
    f_divergence: str = "reverse_kl"
    f_alpha: float = 0.5
    use_weighting: bool = False
    ld_alpha: float | None = None
    reference_free: bool = False

    def __post_init__(self) -> None:
        if self.f_divergence not in F_DIVERGENCES:
            raise ValueError(
                f"loss.f_divergence must be one of {list(F_DIVERGENCES)}, got {self.f_divergence!r}"
            )
        checked = {
            "sft_average": sft_mode(self.sft_average),  # type: ignore[arg-type]
            "f_alpha": in_range("f_alpha", self.f_alpha, 0.0, 1.0, low_open=True, high_open=False),
            "ld_alpha": None
            if self.ld_alpha is None
            else in_range("ld_alpha", self.ld_alpha, 0.0, 1.0, low_open=False, high_open=False),
            **{
                name: flag(name, getattr(self, name))
                for name in ("average_logps", "use_weighting", "reference_free")
            },
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def changed(self) -> dict[str, object]:
        """The options not at their defaults, by name (for the loss's ``repr``)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != f.default
        }

    def check_objectives(self, names: set[str]) -> None:
        """Refuse options that some objective of the loss cannot honour.

        Args:
            names: The preference objectives of the loss (``sft`` excluded).

        Raises:
            ValueError: Naming the option and the objectives that cannot read it.
        """
        if self.f_divergence != "reverse_kl":
            f_divergence_objectives(names, self.f_divergence)
        if self.use_weighting and names & QUANTILE_OBJECTIVES:
            raise ValueError(
                "loss.use_weighting (WPO) weights pairs, but "
                f"{sorted(names & QUANTILE_OBJECTIVES)} return per-quantile losses"
            )


def f_divergence_objectives(names: set[str], f_divergence: str) -> None:
    """Refuse an f-divergence for objectives where f-DPO's ``beta log Z(x)`` does not cancel.

    Args:
        names: The preference objectives of the loss (``sft`` excluded).
        f_divergence: The configured divergence, not ``reverse_kl``.

    Raises:
        ValueError: If an objective is not in ``F_DIVERGENCE_OBJECTIVES``, or there is none.
    """
    refused = sorted(names - F_DIVERGENCE_OBJECTIVES)
    if refused:
        raise ValueError(
            f"loss.f_divergence={f_divergence!r} cannot apply to objective "
            f"{', '.join(map(repr, refused))}: f-DPO's reward beta * f'(pi/ref) holds only up "
            "to beta * log Z(x), which cancels in the chosen-minus-rejected margin of one "
            "pair but not in objectives that score each response on its own or sort across "
            f"the batch. It applies to {sorted(F_DIVERGENCE_OBJECTIVES)}; use "
            "f_divergence='reverse_kl' with the others"
        )
    if not names:
        raise ValueError(
            f"loss.f_divergence={f_divergence!r} applies to "
            f"{sorted(F_DIVERGENCE_OBJECTIVES)}; 'sft' alone does not read it"
        )
