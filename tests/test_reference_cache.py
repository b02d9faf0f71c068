"""Reference log-prob cache: hit, miss, invalidation, equality, resume, sweep reuse."""

from __future__ import annotations

import copy
import logging
import subprocess
import sys

import pytest
import torch

from lightning_dpo import ReferenceSwapCallback
from lightning_dpo.batch import REFERENCE_LOGPS_KEY
from lightning_dpo.errors import CheckpointError
from lightning_dpo.reference.cache.source import CachedSource
from lightning_dpo.reference.cache.store import (
    TABLE_KEY,
    ReferenceLogpsCache,
    compute_pair_logps,
    read_verified_table,
)
from tests.helpers import (
    CONF_DIR,
    FAST_OVERRIDES,
    LEAN_OVERRIDES,
    RecordBatches,
    dpo_module,
    flip_bytes_in_the_middle,
    make_bare_trainer,
    reference_logps,
    script_env,
    small_datamodule,
)


class CacheSpy:
    """Counts the cache tables loaded (hits) and written (misses) since the last reset."""

    def __init__(self, monkeypatch) -> None:
        self.hits = self.misses = 0
        load, save = ReferenceLogpsCache.load, ReferenceLogpsCache.save

        def counting_load(store, key):
            table = load(store, key)
            self.hits += table is not None
            return table

        def counting_save(store, key, table):
            self.misses += 1
            return save(store, key, table)

        monkeypatch.setattr(ReferenceLogpsCache, "load", counting_load)
        monkeypatch.setattr(ReferenceLogpsCache, "save", counting_save)

    def counts(self) -> tuple[int, int]:
        """``(misses, hits)`` since the last call."""
        counts, self.hits, self.misses = (self.misses, self.hits), 0, 0
        return counts


@pytest.fixture
def cache_spy(monkeypatch):
    return CacheSpy(monkeypatch)


def _fit(tmp_path, policy, tokenizer, cache_dir, max_steps=3, **data):
    reference = ReferenceSwapCallback(logps_cache_dir=str(cache_dir))
    recorder = RecordBatches()
    module, datamodule = dpo_module(policy), small_datamodule(tokenizer, **data)
    # as train.py: the layout and head probes run here, before the forwards are counted
    datamodule.connect(plan=module.plan_scoring(datamodule.requested_layout))
    assert module.plan.response_only
    forwards = {"n": 0}
    handle = policy.register_forward_hook(lambda *_: forwards.__setitem__("n", forwards["n"] + 1))
    trainer = make_bare_trainer(tmp_path, [reference, recorder], max_steps=max_steps)
    trainer.fit(module, datamodule=datamodule)
    handle.remove()
    return reference, recorder, forwards["n"]


def test_cache_miss_then_hit_with_no_reference_forward(tmp_path, tiny_policy, tokenizer, cache_spy):
    initial = copy.deepcopy(tiny_policy)
    first, recorded, forwards_first = _fit(tmp_path, tiny_policy, tokenizer, tmp_path / "c")
    assert isinstance(first.source, CachedSource) and first.weights is None
    assert cache_spy.counts() == (2, 0)
    assert len(list((tmp_path / "c").glob("*.pt"))) == 2  # train and val
    for batch in recorded.batches:  # equal to the plain reference (to fp32 rounding)
        torch.testing.assert_close(batch[REFERENCE_LOGPS_KEY], reference_logps(initial, batch))

    _, _, forwards_second = _fit(tmp_path, copy.deepcopy(initial), tokenizer, tmp_path / "c")
    assert cache_spy.counts() == (0, 2)
    # 3 training steps, policy forward only; the first run also ran the cache passes.
    assert forwards_second == 3
    assert forwards_first == 3 + len(first.source.tables["train"]) // 8 + 2


def test_cache_table_is_bitwise_the_plain_bracket_on_the_same_batches(tiny_policy, tokenizer):
    datamodule = small_datamodule(tokenizer)
    datamodule.setup()
    model = copy.deepcopy(tiny_policy).eval()

    def forward(batch):
        return reference_logps(model, batch)

    table = compute_pair_logps(datamodule.ordered_dataloader("val"), forward)
    lookup = CachedSource({"val": table}, keys={"val": "k"})
    for batch in datamodule.ordered_dataloader("val"):
        assert torch.equal(lookup.logps("val", batch, None), reference_logps(model, batch))


@pytest.mark.parametrize("change", ["weights", "data", "max_length"])
def test_any_key_change_invalidates(tmp_path, tiny_policy, tokenizer, change, cache_spy):
    _fit(tmp_path, copy.deepcopy(tiny_policy), tokenizer, tmp_path / "c")
    assert cache_spy.counts() == (2, 0)
    policy, data = copy.deepcopy(tiny_policy), {}
    if change == "weights":
        with torch.no_grad():
            policy.lm_head.weight[0, 0] += 1e-3
    elif change == "data":
        data["seed"] = 1
    else:
        data["max_length"] = 40
    _fit(tmp_path, policy, tokenizer, tmp_path / "c", **data)
    assert cache_spy.counts()[0] == 2


def test_resume_with_cache_uses_the_cached_reference(tmp_path, tiny_policy, tokenizer, cache_spy):
    initial = copy.deepcopy(tiny_policy)
    callback = ReferenceSwapCallback(logps_cache_dir=str(tmp_path / "c"))
    trainer = make_bare_trainer(tmp_path, [callback], max_steps=3)
    trainer.fit(dpo_module(tiny_policy), datamodule=small_datamodule(tokenizer))
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    recorder = RecordBatches()
    cache_spy.counts()
    resumed = ReferenceSwapCallback(logps_cache_dir=str(tmp_path / "c"))
    make_bare_trainer(tmp_path, [resumed, recorder], max_steps=5).fit(
        dpo_module(copy.deepcopy(tiny_policy)),
        datamodule=small_datamodule(tokenizer),
        ckpt_path=tmp_path / "a.ckpt",
    )
    assert cache_spy.counts() == (0, 2)
    for batch in recorder.batches:
        torch.testing.assert_close(batch[REFERENCE_LOGPS_KEY], reference_logps(initial, batch))
    for path in (tmp_path / "c").glob("*.pt"):
        path.unlink()
    with pytest.raises(RuntimeError, match=r"cache .* is missing"):
        make_bare_trainer(
            tmp_path, [ReferenceSwapCallback(logps_cache_dir=str(tmp_path / "c"))], max_steps=5
        ).fit(
            dpo_module(copy.deepcopy(tiny_policy)),
            datamodule=small_datamodule(tokenizer),
            ckpt_path=tmp_path / "a.ckpt",
        )


def damage_flipped(path):
    flip_bytes_in_the_middle(path)


def damage_values(path):  # the values changed, the fingerprint kept: read back silently before
    stored = torch.load(path, weights_only=True)
    stored[TABLE_KEY][0, 0] += 1.0
    torch.save(stored, path)


def damage_old_format(path):  # a table written without a fingerprint
    torch.save(torch.load(path, weights_only=True)[TABLE_KEY], path)


DAMAGES = pytest.mark.parametrize(
    ("damage", "reported"),
    [
        (damage_flipped, "does not verify"),
        (damage_values, "its values do not match the fingerprint saved with them"),
        (damage_old_format, "no fingerprint saved with the table"),
    ],
    ids=["flipped-bytes", "changed-values", "no-fingerprint"],
)


@DAMAGES
def test_a_cached_table_that_does_not_verify_is_reported_recomputed_and_replaced(
    tmp_path, tiny_policy, tokenizer, caplog, damage, reported
):
    initial = copy.deepcopy(tiny_policy)
    first, _, _ = _fit(tmp_path, copy.deepcopy(initial), tokenizer, tmp_path / "c")
    paths = sorted((tmp_path / "c").glob("*.pt"))
    for path in paths:
        damage(path)
    with caplog.at_level(logging.WARNING, logger="lightning_dpo.reference.cache.build"):
        second, _, _ = _fit(tmp_path, copy.deepcopy(initial), tokenizer, tmp_path / "c")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for path in paths:  # each named, with what failed
        assert any(str(path) in w and reported in w for w in warnings), warnings
    for split in ("train", "val"):  # recomputed: bitwise the first run's tables
        assert torch.equal(second.source.tables[split], first.source.tables[split])
    for path in paths:  # replaced by a table that verifies
        assert any(torch.equal(read_verified_table(path), t) for t in first.source.tables.values())


@DAMAGES
def test_resume_refuses_a_cached_table_that_no_longer_verifies(
    tmp_path, tiny_policy, tokenizer, damage, reported
):
    callback = ReferenceSwapCallback(logps_cache_dir=str(tmp_path / "c"))
    trainer = make_bare_trainer(tmp_path, [callback], max_steps=2)
    trainer.fit(dpo_module(copy.deepcopy(tiny_policy)), datamodule=small_datamodule(tokenizer))
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    for path in (tmp_path / "c").glob("*.pt"):
        damage(path)
    resumed = ReferenceSwapCallback(logps_cache_dir=str(tmp_path / "c"))
    with pytest.raises(CheckpointError, match=r"reference cache .*\.pt does not verify") as error:
        make_bare_trainer(tmp_path, [resumed], max_steps=4).fit(
            dpo_module(copy.deepcopy(tiny_policy)),
            datamodule=small_datamodule(tokenizer),
            ckpt_path=tmp_path / "a.ckpt",
        )
    assert reported in str(error.value)


def test_cache_and_tr_dpo_exclude_each_other():
    with pytest.raises(ValueError, match="exclude each other"):
        ReferenceSwapCallback(logps_cache_dir="x", sync_every=2)


@pytest.mark.slow
def test_sweep_over_losses_and_betas_computes_the_cache_once(tmp_path):
    sweep_dir, cache_dir = tmp_path / "sweep", tmp_path / "cache"
    command = [
        sys.executable,
        "train.py",
        "-m",
        "loss=dpo,ipo",
        "loss.beta=0.1,0.2",
        f"callbacks.reference.logps_cache_dir={cache_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        *FAST_OVERRIDES,
        *LEAN_OVERRIDES,
        "trainer.max_steps=2",
    ]
    repo = CONF_DIR.parent
    env = script_env()
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = [(sweep_dir / str(job) / "train.log").read_text() for job in range(4)]
    assert logs[0].count("computed, cached") == 2
    for later in logs[1:]:
        assert later.count("loaded from cache") == 2
        assert "computed, cached" not in later
    assert len(list(cache_dir.glob("*.pt"))) == 2
