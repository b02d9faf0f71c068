"""The batch plan: token budgets, per-rank dealing, windows, step pair counts, resumable order."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch

from lightning_dpo import PreferenceLoss, PreferenceModule, ReferenceSwapCallback
from lightning_dpo.data.batches.plan import BatchPlan
from tests.helpers import make_bare_trainer, small_datamodule

SIZES = [5, 40, 12, 33, 8, 21, 17, 3, 29, 11, 26, 14, 9, 38, 2, 19, 23, 7, 31, 16]


def flat(batches) -> list[int]:
    return [index for batch in batches for index in batch]


def test_token_budget_batches_hold_every_pair_once_within_the_budget():
    plan = BatchPlan(SIZES, max_tokens=60, shuffle=True, seed=3)
    batches = plan.micro_batches()
    assert sorted(flat(batches)) == list(range(len(SIZES)))
    assert all(sum(SIZES[i] for i in batch) <= 60 for batch in batches)
    # Sorted by length within the pool: neighbouring sizes share a batch.
    assert max(SIZES[i] for i in batches[0]) - min(SIZES[i] for i in batches[0]) < 30


def test_a_pair_longer_than_the_budget_is_a_batch_of_its_own():
    plan = BatchPlan([100, 5, 5], max_tokens=50)
    assert sorted(plan.micro_batches()) == [(0,), (1, 2)]


def test_order_depends_on_seed_and_epoch_only():
    def batches(seed, epoch):
        plan = BatchPlan(SIZES, max_tokens=60, shuffle=True, seed=seed)
        plan.set_epoch(epoch)
        return plan.micro_batches()

    assert batches(0, 2) == batches(0, 2)  # a resumed run replays the epoch
    assert batches(0, 2) != batches(0, 3)
    assert batches(0, 2) != batches(1, 2)
    fixed = BatchPlan(list(range(10)), batch_size=4, shuffle=True, seed=5)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(5)).tolist()
    assert flat(fixed.micro_batches()) == expected  # the same order as before budgets


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_get_equal_counts_of_disjoint_micro_batches(ranks):
    plans = [
        BatchPlan(SIZES, max_tokens=45, window=2, shuffle=True, num_replicas=ranks, rank=r)
        for r in range(ranks)
    ]
    fetches = [list(plan) for plan in plans]
    assert len({len(f) for f in fetches}) == 1
    assert len({plan.micro_batch_count() for plan in plans}) == 1
    mine = [[batch for fetch in f for batch in fetch.micro_batches] for f in fetches]
    everything = plans[0].micro_batches()
    assert set(flat(everything)) == set(flat(b for m in mine for b in m))
    if len(everything) % ranks == 0:  # nothing repeated to even the ranks out
        assert sorted(flat(b for m in mine for b in m)) == list(range(len(SIZES)))
    for step, per_rank in enumerate(zip(*fetches, strict=True)):
        pairs = sum(len(batch) for fetch in per_rank for batch in fetch.micro_batches)
        assert {fetch.step_pairs for fetch in per_rank} == {pairs}, step


def test_ungrouped_micro_batches_still_know_their_step():
    grouped = list(BatchPlan(list(range(10)), batch_size=3, window=2))
    single = list(BatchPlan(list(range(10)), batch_size=3, window=2, grouped=False))
    assert [len(f.micro_batches) for f in grouped] == [2, 2]
    assert [f.micro_batches for f in single] == [(b,) for f in grouped for b in f.micro_batches]
    assert [f.step_pairs for f in single] == [6, 6, 4, 4]  # the last step: pairs 7 to 10


def _trained(tmp_path, tiny_policy, tokenizer, batch_size, accumulate, **data):
    module = PreferenceModule(
        copy.deepcopy(tiny_policy), PreferenceLoss("dpo"), partial(torch.optim.SGD, lr=1.0)
    )
    trainer = make_bare_trainer(
        tmp_path, [ReferenceSwapCallback()], max_steps=1, accumulate_grad_batches=accumulate
    )
    datamodule = small_datamodule(tokenizer, batch_size=batch_size, num_train=4, **data)
    trainer.fit(module, datamodule=datamodule)
    return torch.cat([p.detach().flatten() for p in module.policy.parameters()])


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_every_pair_of_an_optimizer_step_weighs_the_same(tmp_path, tiny_policy, tokenizer, layout):
    """4 pairs as micro-batches of 3 and 1 (accumulated) or one batch of 4: the same step.

    Lightning would average each micro-batch's mean: the lone pair would weigh 3 times
    the others. With ``step_pairs`` each pair weighs 1/4 either way.
    """
    one = _trained(tmp_path / "one", tiny_policy, tokenizer, 4, 1, layout=layout)
    split = _trained(tmp_path / "split", tiny_policy, tokenizer, 3, 2, layout=layout)
    initial = torch.cat([p.detach().flatten() for p in tiny_policy.parameters()])
    assert not torch.allclose(one, initial)
    torch.testing.assert_close(split, one, rtol=0, atol=1e-6)
