"""Smoke tests of the benchmarks: each runs end to end at its smallest size and prints its table.

No timing is asserted: the figures depend on the machine. What is checked is that every
configuration produced a row with finite, positive figures (or says plainly why not).
"""

from __future__ import annotations

import importlib
import logging
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_dpo.data.settings import DataSource, RecordSettings, TokenSettings

pytestmark = pytest.mark.slow  # the benchmarks' smoke runs, some in processes of their own

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


QUIETED_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning_dpo")


@pytest.fixture
def bench(monkeypatch):
    """Import a bench script by name, with ``bench/`` on ``sys.path`` as when run directly.

    The scripts set torch's thread count and quieten Lightning's loggers for their own
    process; both are put back for the tests that run after these.
    """
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    threads = torch.get_num_threads()
    levels = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}

    def load(name: str):
        return importlib.import_module(name)

    yield load
    torch.set_num_threads(threads)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def tiny_gguf(tmp_path, monkeypatch) -> Path:
    """A tiny GGUF model file, converted into this test's own cache."""
    pytest.importorskip("gguf")
    from tests.gguf_files import write_tiny_gguf

    monkeypatch.setenv("LIGHTNING_DPO_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    return path


def table_rows(output: str) -> list[list[str]]:
    """The cells of the Markdown table rows of ``output`` (header and rule excluded)."""
    lines = [line for line in output.splitlines() if line.startswith("| ")]
    assert len(lines) > 2, f"no table in the output:\n{output}"
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def positive(cell: str) -> float:
    value = float(cell)
    assert math.isfinite(value) and value > 0, cell
    return value


def test_swap_quick_checks_every_method_and_prints_ratios(bench, capsys):
    bench("bench_swap").main(["--quick"])
    rows = table_rows(capsys.readouterr().out)
    methods = [row[1] for row in rows]
    assert methods[0] == "one memcpy (the unit)" and rows[0][3] == "1.00"
    for expected in ("naive", "copy", "exchange", "callback bracket"):
        assert any(expected in method for method in methods), methods
    for row in rows:
        positive(row[2])
        positive(row[3])


def test_swap_naive_baseline_really_swaps(bench):
    """The baseline inside the benchmark swaps and restores, as the check before timing says."""
    swap = bench("bench_swap")
    models = bench("_models")
    model = models.build_llama("tiny")
    found = swap.brackets(model, swap.torch.device("cpu"))
    swap.check_swaps(model, found)  # raises if a method did not swap or restore
    broken = {"no-op": lambda: swap.naive_bracket(model, dict(model.state_dict()))}
    with pytest.raises(AssertionError, match="no-op"):
        swap.check_swaps(model, broken)


def test_throughput_quick_has_every_configuration(bench, capsys):
    bench("bench_throughput").main(["--quick"])
    rows = table_rows(capsys.readouterr().out)
    training = bench("_training")
    assert [row[1] for row in rows] == list(training.CONFIGURATIONS)
    for row in rows:
        if row[2] == training.NOT_AVAILABLE:
            assert row[1] == training.CACHE
            continue
        positive(row[2])
        positive(row[3])
    ceiling = next(row for row in rows if row[1] == training.REFERENCE_FREE)
    assert ceiling[3] == "1.00"


def test_accumulation_quick_runs_one_bracket_per_optimizer_step(bench, capsys):
    accumulation = bench("bench_accumulation")
    accumulation.main(["--quick", "--accumulate", "3"])
    output = capsys.readouterr().out
    rows = table_rows(output)
    configurations = accumulation.CONFIGURATIONS
    assert [row[1] for row in rows] == [configuration.name for configuration in configurations]
    for row, configuration in zip(rows, configurations, strict=True):
        if row[2] == accumulation.NOT_ON_CUDA:
            continue
        assert float(row[2]) == configuration.expected_brackets(3), row
        for cell in row[3:6]:
            positive(cell)
        if not configuration.windows and configuration.name != accumulation.REFERENCE_FREE:
            assert row[6] == "1.00", row
    brackets = {row[1]: row[2] for row in rows}
    assert brackets["swap (copy), per micro-batch"] == "3.00"
    assert brackets["swap (copy), per optimizer step"] == "1.00"
    assert rows[-1][1] == accumulation.REFERENCE_FREE and rows[-1][5] == "1.00"
    assert "bitwise equal in all" in output


def test_memory_quick_runs_each_configuration_in_its_own_process():
    result = subprocess.run(
        [sys.executable, str(BENCH_DIR / "bench_memory.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = table_rows(result.stdout)
    names = [row[0] for row in rows]
    assert names[0] == "weights only (no fit)" and "swap (exchange)" in names
    for row in rows:
        if row[1].startswith("not measured"):
            continue
        peak, above = positive(row[1]), positive(row[2])
        assert above < peak
    swap = next(row for row in rows if row[0] == "swap (exchange)")
    assert swap[3] == "1.00" and swap[4] == "1.00"
    assert re.search(r"Machine: torch \S+, \d+ intra-op threads", result.stdout)


def test_checkpoint_integrity_quick_times_save_stamp_and_verify(bench, capsys):
    bench("bench_checkpoint_integrity").main(["--quick"])
    (row,) = table_rows(capsys.readouterr().out)
    assert row[0] == "tiny"
    for cell in row[1:4]:
        positive(cell)
    for cell in row[4:]:
        positive(cell.split()[0])


def hh_shaped_file(path: Path, records: int = 60) -> Path:
    """Dialogues shaped like HH-RLHF's (a shared prompt, two last assistant turns)."""
    import json
    import random

    rng = random.Random(0)
    words = ["the", "a", "model", "answer", "list", "then", "we", "should", "not", "you"]

    def text(count: int) -> str:
        return " ".join(rng.choice(words) for _ in range(count))

    lines = []
    for _ in range(records):
        prompt = f"\n\nHuman: {text(rng.randint(5, 60))}\n\nAssistant:"
        row = {"chosen": prompt + " " + text(rng.randint(1, 20))}
        row["rejected"] = prompt + " " + text(rng.randint(1, 20))
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def tables(output: str) -> list[list[list[str]]]:
    """Each Markdown table of ``output``: its rows of cells (header and rule excluded)."""
    found, current = [], []
    for line in [*output.splitlines(), ""]:
        if line.startswith("| "):
            current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            found.append(current[2:])
            current = []
    return found


def test_layouts_quick_measures_every_layout(bench, capsys, tmp_path):
    data = hh_shaped_file(tmp_path / "hh.jsonl")
    bench("bench_layouts").main(["--data", str(data), "--quick"])
    positions, throughput = tables(capsys.readouterr().out)
    assert [row[0] for row in positions] == ["padded", "prefix_shared", "packed"] * 2
    for row in positions:
        assert positive(row[3]) >= 1.0  # positions per unique token: never below the limit
    packed_budget = positions[-1]
    assert float(packed_budget[3]) < float(positions[0][3])
    assert len(throughput) == 5
    for row in throughput:
        positive(row[3])


def test_logprobs_quick_has_every_variant(capsys):
    script = BENCH_DIR / "bench_logprobs.py"
    result = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, check=True
    )
    (rows,) = tables(result.stdout)
    assert [row[1] for row in rows] == ["plain", "logits, chunked", "response-only head"] * 2
    for row in rows:
        positive(row[2])


def test_gpu_check_runs_its_code_on_the_cpu_and_refuses_without_cuda(bench, capsys):
    """No GPU here: the CPU smoke mode runs every check's code; the default says why not."""
    gpu_check = bench("gpu_check")
    gpu_check.main(["--device", "cpu", "--quick"])
    (rows,) = tables(capsys.readouterr().out)
    names = [row[0] for row in rows]
    assert "bf16-mixed step-0 DPO loss" in names
    assert sum(name.endswith("response-only head, fp32") for name in names) == 3
    loss = next(row for row in rows if row[0] == "bf16-mixed step-0 DPO loss")
    assert abs(float(loss[1]) - math.log(2)) < 1e-3
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as stop:
            gpu_check.main([])
        assert stop.value.code == 2
        assert "no CUDA device here" in capsys.readouterr().out


def test_trl_bench_runs_this_package_alone_with_every_column(bench, capsys, tmp_path):
    """Without TRL installed (CI): this package's systems in their own processes, no ratios."""
    data = hh_shaped_file(tmp_path / "hh.jsonl")
    out = tmp_path / "table.md"
    args = ["--data", str(data), "--size", "tiny", "--steps", "4"]
    bench("bench_trl").main([*args, "--systems", "ours-full,ours-lora-ckpt", "--out", str(out)])
    printed, final = capsys.readouterr().out, out.read_text()
    assert printed.count("| system |") == 2 and printed.endswith(final + "\n")  # after each run
    rows = table_rows(final)
    assert [row[0].split(":")[0] for row in rows] == ["full", "LoRA, checkpointing"]
    for row in rows:
        positive(row[1])  # pairs/s
        assert row[2] == row[4] == row[7] == row[10] == "—"  # no TRL row to compare with
        assert positive(row[3].replace(",", "")) > float(row[5].replace(",", ""))  # peak > fixed
        assert positive(row[8]) >= 1.0  # positions per unique token: never below the limit
        assert 0 < float(row[9].rstrip("%")) <= 100  # MFU
    assert "initial adapter weights on every side identical" in final


def test_trl_bench_runs_a_real_model_from_its_gguf_with_its_chat_template(
    bench, capsys, tmp_path, tiny_gguf
):
    """``--gguf``: the converted model and its own tokenizer, the data through its template."""
    data = hh_shaped_file(tmp_path / "hh.jsonl", records=40)
    args = ["--data", str(data), "--gguf", str(tiny_gguf), "--steps", "4", "--systems", "ours-lora"]
    bench("bench_trl").main(args)
    printed = capsys.readouterr().out
    assert "Model tiny.gguf (chat template)" in printed
    (row,) = table_rows(printed)
    assert row[0].startswith("LoRA: ")
    positive(row[1])  # pairs/s


def test_trl_bench_gives_trl_conversations_its_chat_template_renders_to_our_ids(
    bench, tmp_path, tiny_gguf
):
    """What TRL makes of the conversational records: apply_chat_template, as DPOTrainer does.

    The prompt rendered with the generation prompt, and prompt + each response rendered
    whole, must give exactly the pair's prompt and prompt + response ids (TRL 1.16's
    conversational tokenisation); the benchmark checks the same with TRL itself.
    """
    from lightning_dpo import PreferenceDataModule
    from lightning_dpo.pretrained import Pretrained

    tokenizer = Pretrained(tiny_gguf.parent, tiny_gguf.name).load_tokenizer()
    data = hh_shaped_file(tmp_path / "hh.jsonl", records=20)
    module = PreferenceDataModule(
        tokenizer=tokenizer,
        source=DataSource(train_file=str(data)),
        tokens=TokenSettings(max_length=1024),
        records=RecordSettings(chat_template=True),
    )
    module.setup()
    pairs = module.train_pairs[:6]
    records = bench("bench_trl").pair_conversations(pairs, str(data))
    for pair, record in zip(pairs, records, strict=True):
        assert [message["role"] for message in record["chosen"]] == ["assistant"]

        def ids(messages, generation_prompt=False):
            return list(
                tokenizer.apply_chat_template(
                    messages, tokenize=True, add_generation_prompt=generation_prompt
                )["input_ids"]
            )

        assert ids(record["prompt"], generation_prompt=True) == list(pair.prompt_ids)
        for response, expected in (
            (record["chosen"], pair.chosen_ids),
            (record["rejected"], pair.rejected_ids),
        ):
            assert ids(record["prompt"] + response) == list(pair.prompt_ids + expected)


def test_trl_bench_names_its_systems(bench):
    trl_bench = bench("bench_trl")
    systems = trl_bench.all_systems()
    assert len(systems) == 9 and len({system.key for system in systems}) == 9
    assert [s.key for s in trl_bench.select_systems("off")][:3] == [
        "trl-full",
        "ours-full",
        "ours-full-padded",
    ]
    with pytest.raises(ValueError, match="valid: all, off, trl-full"):
        trl_bench.select_systems("ours-full,nope")


def test_real_model_aligns_a_gguf_through_train_py_and_prints_its_validations(
    bench, capsys, tmp_path, tiny_gguf
):
    data = hh_shaped_file(tmp_path / "hh.jsonl", records=100)
    out = tmp_path / "align"
    arguments = ["--gguf", str(tiny_gguf), "--data", str(data), "--out", str(out), "--steps", "2"]
    arguments += ["--val-every", "1", "--val-pairs", "8", "--max-length", "128"]
    bench("real_model").main(arguments)
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["1", "2"]  # a validation after each step
    for row in rows:
        assert 0.0 <= float(row[1]) <= 1.0  # reward accuracy
        assert float(row[3]) < 0 and float(row[4]) < 0  # log-probs
        positive(row[5])  # loss
    assert (out / "lora" / "training_curves.png").stat().st_size > 0
    assert "## step 2: policy" in (out / "lora" / "samples.md").read_text()
    assert not list(out.glob("**/*.ckpt"))  # no checkpoints


def test_real_model_compare_part_runs_bench_trl_on_the_gguf_and_keeps_its_table(
    bench, capsys, tmp_path, tiny_gguf
):
    data = hh_shaped_file(tmp_path / "hh.jsonl", records=40)
    out = tmp_path / "real"
    arguments = [
        "--part",
        "compare",
        "--gguf",
        str(tiny_gguf),
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    bench("real_model").main([*arguments, "--steps", "4", "--systems", "ours-full,ours-lora"])
    assert "Model tiny.gguf (chat template)" in capsys.readouterr().out
    rows = table_rows((out / "compare.md").read_text())
    assert [row[0].split(":")[0] for row in rows] == ["full", "LoRA"]
    real_model = bench("real_model")
    assert real_model.COMPARED.split(",") == [
        system.key for system in bench("bench_trl").all_systems() if system.layout == "packed"
    ]


def test_startup_times_a_cold_and_a_warm_start_of_a_gguf_run_part_by_part(
    bench, capsys, tmp_path, tiny_gguf
):
    data = hh_shaped_file(tmp_path / "hh.jsonl", records=40)
    arguments = ["--gguf", str(tiny_gguf), "--data", str(data), "--max-length", "128"]
    bench("startup").main(arguments)
    rows = {row[0]: (float(row[1]), float(row[2])) for row in table_rows(capsys.readouterr().out)}
    total = rows.pop("total: process start to first step's end")
    rest = rows.pop("Lightning, the rest (Trainer internals between hooks)")
    assert total[0] > 0 and total[1] > 0
    for cold, warm in rows.values():
        assert cold >= 0 and warm >= 0
    rounding = 0.005 * (len(rows) + 2)  # each figure printed to 0.01 s
    for column in (0, 1):  # the parts and the rest add up to the total
        added = sum(part[column] for part in rows.values()) + rest[column]
        assert math.isclose(added, total[column], abs_tol=rounding)
    sanity = next(part for part in rows if part.startswith("sanity validation ("))
    for part in (sanity, "first step (reference + policy, AdamW)"):
        assert rows[part][0] > 0 and rows[part][1] > 0


def test_store_verify_quick_checks_each_store_against_its_load(bench, capsys, tmp_path):
    data = hh_shaped_file(tmp_path / "hh.jsonl", records=40)
    bench("bench_store_verify").main(["--data", str(data), "--quick"])
    rows = table_rows(capsys.readouterr().out)
    assert [row[0].split(" (")[0] for row in rows] == [
        "token cache",
        "reference table",
        "checkpoint pre-flight",
    ]
    for row in rows:
        positive(row[2]), positive(row[3]), positive(row[4])  # check, load, their ratio


def test_checkpoint_write_quick_times_both_writers(bench, capsys, tmp_path):
    bench("bench_checkpoint_write").main(["--quick", "--dir", str(tmp_path)])
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["Lightning TorchCheckpointIO", "AtomicCheckpointIO"]
    for row in rows:
        positive(row[1]), positive(row[2]), positive(row[3])  # file MiB, seconds, ratio
    assert rows[0][3] == "1.00"
    assert list(tmp_path.iterdir()) == []  # the written checkpoints are removed
