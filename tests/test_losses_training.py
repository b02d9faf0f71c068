"""The loss family end to end.

Every conf/loss name runs, mixes log their terms, and the per-token options reach the
reference forward as well as the policy's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_dpo import (
    PreferenceDataModule,
    PreferenceLoss,
    PreferenceModule,
    ReferenceSwapCallback,
)
from lightning_dpo.batch import REFERENCE_LOGPS_KEY
from lightning_dpo.data.settings import DataSource
from lightning_dpo.losses import OBJECTIVES
from lightning_dpo.training import train
from tests.helpers import (
    CONF_DIR,
    FAST_OVERRIDES,
    LEAN_OVERRIDES,
    REPO,
    compose_train_config,
    make_bare_trainer,
    script_env,
)

LOSS_NAMES = sorted(path.stem for path in (CONF_DIR / "loss").glob("*.yaml"))


def test_every_objective_has_a_config() -> None:
    """One conf/loss/<name>.yaml per objective, plus `rpo` (= rpo_bwd_kl) and `mix`."""
    assert set(LOSS_NAMES) == set(OBJECTIVES) | {"rpo", "mix"}


@pytest.mark.slow
def test_multirun_over_every_loss_name(tmp_path) -> None:
    """`python train.py -m loss=<every name> ++trainer.fast_dev_run=true` runs every job."""
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable,
        "train.py",
        "-m",
        f"loss={','.join(LOSS_NAMES)}",
        "++trainer.fast_dev_run=true",
        f"hydra.sweep.dir={sweep_dir}",
        *FAST_OVERRIDES,
        *LEAN_OVERRIDES,
    ]
    env = script_env()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    assert len(jobs) == len(LOSS_NAMES)
    ran = {
        (job / ".hydra" / "overrides.yaml").read_text().split("loss=")[1].split()[0] for job in jobs
    }
    assert ran == set(LOSS_NAMES)


def test_mix_logs_each_term_and_checkpoints_the_bco_shift(tmp_path) -> None:
    cfg = compose_train_config(tmp_path, ["loss=mix", *FAST_OVERRIDES])
    metrics = train(cfg)
    for stage in ("train", "val"):
        for name in ("loss", "loss/preference", "loss/sft", "loss/dpo", "loss/bco_pair"):
            assert f"{stage}/{name}" in metrics, f"{stage}/{name}"
        # summed, unmapped log-ratios: the objective's rewards are rewards/*, not logged twice
        assert f"{stage}/objective_rewards/chosen" not in metrics
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert int(state["loss.stateful.bco_pair.batches"]) == cfg.trainer.max_steps
    assert torch.isfinite(state["loss.stateful.bco_pair.mean"])


def test_every_option_at_once_trains(tmp_path) -> None:
    """LD-DPO, WPO, alpha-divergence and token averaging together, then reference-free."""
    options = [
        "loss.ld_alpha=0.5",
        "loss.use_weighting=true",
        "loss.f_divergence=alpha_divergence",
        "loss.f_alpha=0.3",
        "loss.average_logps=true",
        "loss.sft_weight=0.1",
        "loss.sft_average=false",
    ]
    for overrides in (options, ["loss=ipo", "loss.reference_free=true"]):
        cfg = compose_train_config(
            tmp_path, [*overrides, *FAST_OVERRIDES, "++trainer.fast_dev_run=true"]
        )
        metrics = train(cfg)
        assert all(torch.isfinite(torch.tensor(value)) for value in metrics.values())
        # both runs transform what the objective compares (f-map, length normalisation)
        for name in ("train/objective_rewards/chosen", "val/objective_rewards/margins"):
            assert name in metrics, name


class CaptureFirstBatch(Callback):
    """Runs after ReferenceSwapCallback: keeps its reference log-probs and the policy's own."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Record both sides' log-probs of the first batch."""
        if batch_idx == 0:
            with torch.no_grad():
                self.policy = pl_module.sequence_logps(batch)
            self.reference = batch[REFERENCE_LOGPS_KEY].clone()


def test_ld_alpha_applies_to_the_reference_forward_too(tiny_policy, tokenizer, tmp_path) -> None:
    """The reference log-probs are LD-weighted like the policy's.

    Before the first step policy == reference, so with LD-DPO on both sides the reference
    log-probs equal the policy's LD-weighted sums, and differ from the plain sums (the
    responses here differ in length, unlike the embedded task's).
    """
    rows = [
        {"prompt": f"{i}{i + 3}>", "chosen": str(i) * (1 + i % 3), "rejected": "98" * (2 + i % 2)}
        for i in range(1, 9)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    capture = CaptureFirstBatch()
    module = PreferenceModule(
        tiny_policy,
        loss=PreferenceLoss("dpo", ld_alpha=0.25),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    trainer = make_bare_trainer(tmp_path, [ReferenceSwapCallback(), capture], max_steps=1)
    datamodule = PreferenceDataModule(
        tokenizer, source=DataSource(train_file=str(data), val_file=str(data))
    )
    trainer.fit(module, datamodule=datamodule)
    torch.testing.assert_close(capture.reference, capture.policy.sums)
    assert capture.policy.plain_sums is not None
    assert not torch.allclose(capture.reference, capture.policy.plain_sums)
