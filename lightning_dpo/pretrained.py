"""Where a pretrained model lives on disk, and loading its model and tokenizer (never a download).

``model.pretrained`` names either a directory written by ``save_pretrained`` or a GGUF file
(the llama.cpp ecosystem's single-file checkpoints). A GGUF file is read through
``transformers``' own GGUF support (the ``gguf`` package; quantised weights are dequantised
to float32, tokenizer and chat template included), and converted **once** into a plain
Hugging Face directory (safetensors) in the cache (``$LIGHTNING_DPO_CACHE/gguf``, default
``~/.cache/lightning_dpo/gguf``): reading a GGUF file's metadata costs ``transformers`` about
25 s for a 135M model on one core, each time the model or the tokenizer is loaded, while the
converted directory loads in well under a second. The entry is keyed by the GGUF file's
content (xxh3) and the versions that convert it, carries an xxh3 fingerprint of each of its
files, and is verified before use: an entry that does not verify is reported and rebuilt.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import xxhash
from filelock import FileLock
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from lightning_dpo.integrity import directory_problem, file_fingerprint, write_manifest

log = logging.getLogger(__name__)

GGUF_SUFFIX = ".gguf"
MANIFEST = "lightning_dpo_gguf.json"
"""The converted entry's record: its source, and the fingerprint of each of its files."""
CONVERSION_VERSION = 1


@dataclass(frozen=True)
class Pretrained:
    """A pretrained checkpoint as ``from_pretrained`` takes it.

    Attributes:
        directory: The directory ``from_pretrained`` reads.
        gguf_file: The GGUF file's name inside ``directory``, or ``None`` for a
            ``save_pretrained`` directory.
    """

    directory: Path
    gguf_file: str | None = None

    def load_model(self) -> nn.Module:
        """The causal LM, its weights in float (dequantised from GGUF)."""
        if self.gguf_file is None:
            return AutoModelForCausalLM.from_pretrained(self.directory, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            self.directory, gguf_file=self.gguf_file, local_files_only=True
        )
        return plain_float_model(model)

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        """The model's tokenizer (with its chat template, if it has one)."""
        if self.gguf_file is None:
            return AutoTokenizer.from_pretrained(self.directory, local_files_only=True)
        return AutoTokenizer.from_pretrained(
            self.directory, gguf_file=self.gguf_file, local_files_only=True
        )


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a GGUF file (by its ending)."""
    return os.fspath(path).lower().endswith(GGUF_SUFFIX)


def plain_float_model(model: nn.Module) -> nn.Module:
    """Forget that a model came from GGUF: its weights are plain floats once dequantised.

    ``transformers`` marks a model read from GGUF as quantised (``hf_quantizer``, a
    ``quantization_config``) and then refuses ``save_pretrained``; the weights it holds are
    already float32, so the quantizer's own ``remove_quantization_config`` drops the mark
    (``model.dequantize()`` is not implemented for GGUF) and the model saves and reloads
    as any other.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    return model


def require_gguf_package(path: str | os.PathLike[str]) -> None:
    """Raise a clear error when the ``gguf`` package that reads GGUF files is missing.

    Raises:
        ImportError: Naming the file and the extra to install.
    """
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(
            f"model.pretrained={os.fspath(path)!r} is a GGUF file, which transformers reads "
            "with the gguf package: pip install 'lightning-dpo[gguf]' (or pip install gguf)"
        )


def cache_root() -> Path:
    """Where converted GGUF files go: ``$LIGHTNING_DPO_CACHE/gguf`` (``~/.cache/lightning_dpo``)."""
    base = os.environ.get("LIGHTNING_DPO_CACHE") or "~/.cache/lightning_dpo"
    return Path(base).expanduser() / "gguf"


def _conversion_key(source_fingerprint: str) -> str:
    """The entry's name: the GGUF content and the versions of what converts it."""
    versions = [importlib.metadata.version(p) for p in ("transformers", "gguf")]
    payload = json.dumps([CONVERSION_VERSION, source_fingerprint, versions])
    return xxhash.xxh3_128_hexdigest(payload.encode())


def _entry_problem(entry: Path) -> str | None:
    """What is wrong with a converted entry, or ``None`` when every file verifies."""
    return directory_problem(entry, MANIFEST)


def _convert(gguf: Path, entry: Path, source_fingerprint: str) -> None:
    """Dequantise ``gguf`` into a ``save_pretrained`` directory at ``entry`` (atomic rename)."""
    pretrained = Pretrained(gguf.parent, gguf.name)
    model, tokenizer = pretrained.load_model(), pretrained.load_tokenizer()
    staging = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    record = {"source": os.fspath(gguf), "source_fingerprint": source_fingerprint}
    write_manifest(staging, MANIFEST, record)
    shutil.rmtree(entry, ignore_errors=True)
    os.replace(staging, entry)


def _size_mib(entry: Path) -> float:
    return sum(p.stat().st_size for p in entry.iterdir()) / 2**20


@lru_cache(maxsize=8)
def _converted(gguf: Path, size: int, mtime_ns: int, root: Path) -> Path:
    """The verified converted entry of ``gguf`` under ``root``, converting it if needed.

    Memoised per process on the file's size and modification time, so that the tokenizer
    and the model of one run verify the entry once.
    """
    source_fingerprint = file_fingerprint(gguf)
    entry = root / _conversion_key(source_fingerprint)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(os.fspath(entry) + ".lock"):
        problem = _entry_problem(entry) if entry.exists() else None
        if entry.exists() and problem is None:
            return entry
        if problem is not None:
            log.warning("Converted GGUF %s does not verify (%s): converting anew", entry, problem)
        _convert(gguf, entry, source_fingerprint)
    log.info(
        "%s: dequantised to float and saved once as a Hugging Face directory at %s "
        "(%.0f MiB); later runs load that",
        gguf,
        entry,
        _size_mib(entry),
    )
    return entry


def resolve_pretrained(path: str | os.PathLike[str]) -> Pretrained:
    """The local checkpoint ``path`` names, a GGUF file converted once (see the module doc).

    Args:
        path: A ``save_pretrained`` directory or a ``.gguf`` file.

    Returns:
        What ``from_pretrained`` reads: the directory, or the converted GGUF's directory
        (the GGUF file itself when the cache cannot be written, with a warning).

    Raises:
        FileNotFoundError: ``path`` is neither a local directory nor a GGUF file.
        ImportError: A GGUF file without the ``gguf`` package.
    """
    local = Path(path).expanduser()
    if is_gguf(local) and local.is_file():
        require_gguf_package(path)
        stat = local.stat()
        try:
            entry = _converted(local.resolve(), stat.st_size, stat.st_mtime_ns, cache_root())
        except OSError as error:
            log.warning("Cannot cache the converted GGUF (%s): reading %s directly", error, local)
            return Pretrained(local.parent, local.name)
        return Pretrained(entry)
    if local.is_dir():
        return Pretrained(local)
    raise FileNotFoundError(
        f"model.pretrained={os.fspath(path)!r} is neither a local directory nor a .gguf file: "
        "lightning-dpo loads models from disk only (a save_pretrained directory or a GGUF "
        "file; leave pretrained unset for the tiny default)"
    )
