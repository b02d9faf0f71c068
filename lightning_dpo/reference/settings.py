"""The reference callback's settings, checked when it is built."""

from __future__ import annotations

from typing import Literal

from lightning_dpo.reference.weights.placement import SNAPSHOT_DTYPES, SWAP_MODES

ReferenceMode = Literal["auto", "snapshot", "disable_adapters"]
MODES = ("auto", "snapshot", "disable_adapters")


def check_settings(
    mode: str,
    snapshot_dtype: str | None,
    swap_mode: str,
    sync_every: int | None,
    sync_alpha: float,
    logps_cache_dir: str | None,
) -> None:
    """Refuse settings that cannot work, naming the valid choices.

    Raises:
        ValueError: The first setting that is out of range or excludes another.
    """
    if mode not in MODES:
        raise ValueError(f"ReferenceSwapCallback mode must be one of {MODES}, got {mode!r}")
    if snapshot_dtype not in SNAPSHOT_DTYPES:
        raise ValueError(
            f"snapshot_dtype must be one of {list(SNAPSHOT_DTYPES)}, got {snapshot_dtype!r}"
        )
    if swap_mode not in SWAP_MODES:
        raise ValueError(f"swap_mode must be one of {SWAP_MODES}, got {swap_mode!r}")
    if sync_every is not None and (not isinstance(sync_every, int) or sync_every < 1):
        raise ValueError(f"sync_every must be a positive integer or None, got {sync_every!r}")
    if not 0.0 < sync_alpha <= 1.0:
        raise ValueError(f"sync_alpha must be in (0, 1], got {sync_alpha!r}")
    if sync_every is not None and mode == "disable_adapters":
        raise ValueError(
            "TR-DPO (sync_every) cannot update a reference that is the bare base model "
            "(mode='disable_adapters'): use mode='auto' or 'snapshot', which keep a "
            "frozen copy of the adapter as the reference"
        )
    if logps_cache_dir is not None and sync_every is not None:
        raise ValueError(
            "logps_cache_dir (a fixed precomputed reference) and sync_every (TR-DPO, a "
            "moving reference) exclude each other: set one of them to null"
        )
