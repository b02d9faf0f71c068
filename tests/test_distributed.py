"""Two CPU processes (gloo): DDP and FSDP2 give every rank the single-process reference."""

from __future__ import annotations

import pytest
import torch

from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.data.settings import BatchSettings, DataSource
from lightning_dpo.reference.cache.store import compute_pair_logps, read_verified_table
from tests.helpers import PAGE, initial_policy, reference_logps, run_two_ranks

pytestmark = pytest.mark.slow  # every test runs two ranks in processes of their own


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_every_rank_gets_the_single_process_reference(tmp_path, strategy):
    ranks = run_two_ranks(strategy, tmp_path)
    initial = initial_policy()
    for rank in ranks:
        assert len(rank["batches"]) == 4
        assert rank["brackets"] == 4
        for batch in rank["batches"]:
            expected = reference_logps(initial, batch)
            assert torch.equal(batch[rank["key"]], expected)
    # The two ranks trained on different batches but hold the same reference.
    assert not torch.equal(ranks[0]["batches"][0]["input_ids"], ranks[1]["batches"][0]["input_ids"])
    full_bytes = sum(4 * torch.Size(s).numel() for s in ranks[0]["snapshot_shapes"].values())
    if strategy == "ddp":  # one snapshot for the node: half its pages on each rank (PSS)
        assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]
        assert ranks[0]["snapshot_bytes"] == full_bytes
        pss = [rank["shared_pss"] for rank in ranks]
        assert full_bytes <= sum(pss) <= full_bytes + 64 * len(ranks[0]["snapshot_shapes"]) + PAGE
        assert all(value <= 0.5 * full_bytes + PAGE for value in pss)
    else:  # each rank holds only its shards: half of the weights
        total = ranks[0]["snapshot_bytes"] + ranks[1]["snapshot_bytes"]
        unsharded = sum(p.numel() * 4 for p in initial.parameters())
        assert total == unsharded
        assert max(r["snapshot_bytes"] for r in ranks) <= 0.6 * unsharded


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_accumulation_swaps_once_per_optimizer_step_on_every_rank(tmp_path, strategy):
    """accumulate_grad_batches=3: one bracket per optimizer step on every rank.

    The distributed sampler still splits the data between ranks, each rank runs one
    bracket per optimizer step (FSDP2's forwards gather shards: the ranks' bracket
    sequences must match), and every micro-batch gets the reference.
    """
    ranks = run_two_ranks(strategy, tmp_path, "--accumulate", "3")
    initial = initial_policy()
    for rank in ranks:
        # 32 pairs per rank in batches of 4: 8 micro-batches per epoch, stepped 3 + 3 + 2;
        # the 4th step takes 3 micro-batches of the second epoch.
        assert len(rank["batches"]) == 8 + 3
        assert rank["brackets"] == 4
        for batch in rank["batches"]:
            assert torch.equal(batch[rank["key"]], reference_logps(initial, batch))
    first = [b["pair_index"] for b in ranks[0]["batches"][:8]]
    second = [b["pair_index"] for b in ranks[1]["batches"][:8]]
    assert not set(torch.cat(first).tolist()) & set(torch.cat(second).tolist())


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_reference_cache_computed_by_two_ranks_is_the_single_process_one(tmp_path, strategy):
    """Each rank scores its share of the cache pass: the gathered table is bitwise one process's.

    It then loads under any number of processes (the key knows no world size).
    """
    cache = tmp_path / "cache"
    ranks = run_two_ranks(strategy, tmp_path / "first", "--cache", str(cache))
    tables = sorted(cache.glob("*.pt"))
    assert len(tables) == 2  # train and val, written once
    datamodule = PreferenceDataModule(
        source=DataSource(num_train=64, num_val=16),
        batches=BatchSettings(batch_size=4, layout="packed"),
    )
    datamodule.setup()
    initial = initial_policy()
    written = {path.name: read_verified_table(path) for path in tables}
    for split in ("train", "val"):
        single = compute_pair_logps(
            datamodule.ordered_dataloader(split), lambda b: reference_logps(initial, b)
        )
        assert any(torch.equal(single, table) for table in written.values()), split
    for rank in ranks:  # every step's reference came from the table
        for batch in rank["batches"]:
            index = batch["pair_index"]
            expected = torch.cat([table_of(written, index)[:, 0], table_of(written, index)[:, 1]])
            assert torch.equal(batch[rank["key"]], expected)
    # 64 + 16 pairs in batches of 4: 20 batches, 10 per rank, then 4 policy forwards.
    assert [rank["forwards"] for rank in ranks] == [10 + 4, 10 + 4]
    again = run_two_ranks(strategy, tmp_path / "second", "--cache", str(cache))
    assert sorted(cache.glob("*.pt")) == tables
    assert [rank["forwards"] for rank in again] == [4, 4]  # loaded: no reference forward


def table_of(tables: dict, index: torch.Tensor) -> torch.Tensor:
    """The rows of the training table (the one that holds 64 pairs) at ``index``."""
    (train,) = [table for table in tables.values() if table.shape[0] == 64]
    return train[index]
