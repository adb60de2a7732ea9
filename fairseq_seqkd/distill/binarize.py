"""Write distilled targets as a fairseq data-bin that stock ``fairseq-train`` reads.

The targets are encoded with the teacher's (= the data's) dictionary through fairseq's own
indexed-dataset builder, the format ``fairseq-preprocess`` writes (mmap, smallest fitting int
dtype). Every file is written under a temporary name in its destination directory and moved
into place when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from fairseq.data import Dictionary
from fairseq.data import indexed_dataset as fairseq_indexed

from ..atomic import temp_path_beside


@dataclass
class BinarizeStats:
    """What :func:`binarize_lines` wrote: sentences, tokens (with EOS), out-of-vocabulary."""

    sentences: int = 0
    tokens: int = 0
    unknown: int = 0
    first_unknown: str | None = None


class _AtomicDataset:
    """An mmap indexed-dataset builder writing ``prefix.bin/.idx`` via temporary files."""

    def __init__(self, prefix: str, vocab_size: int):
        self.prefix = prefix
        self.tmp_bin = temp_path_beside(prefix + ".bin")
        self.tmp_idx = temp_path_beside(prefix + ".idx")
        self.builder = fairseq_indexed.make_builder(self.tmp_bin, "mmap", vocab_size=vocab_size)

    def add(self, tokens: torch.Tensor) -> None:
        self.builder.add_item(tokens)

    def commit(self) -> None:
        self.builder.finalize(self.tmp_idx)
        os.replace(self.tmp_bin, self.prefix + ".bin")
        os.replace(self.tmp_idx, self.prefix + ".idx")

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.builder._data_file.close()
        for tmp in (self.tmp_bin, self.tmp_idx):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def binarize_lines(
    lines: Iterable[str], dictionary: Dictionary, prefix: str
) -> BinarizeStats:
    """Encode subword lines (EOS appended, no new symbols) into ``prefix.bin/.idx``.

    A token missing from ``dictionary`` becomes ``<unk>`` and is counted: with the teacher's
    dictionary there should be none, so a count above zero points at mismatched data.
    """
    stats = BinarizeStats()
    unk = dictionary.unk()
    unk_word = dictionary.unk_word

    def consumer(word: str, idx: int) -> None:
        if idx == unk and word != unk_word:
            stats.unknown += 1
            if stats.first_unknown is None:
                stats.first_unknown = word

    out = _AtomicDataset(prefix, len(dictionary))
    try:
        for line in lines:
            ids = dictionary.encode_line(
                line, add_if_not_exist=False, consumer=consumer, append_eos=True
            )
            out.add(ids)
            stats.sentences += 1
            stats.tokens += len(ids)
        out.commit()
    except BaseException:
        out.discard()
        raise
    return stats


def write_subset(dataset: Any, indices: Sequence[int], vocab_size: int, prefix: str) -> int:
    """Copy the token tensors of ``indices`` from an indexed dataset into ``prefix.bin/.idx``."""
    out = _AtomicDataset(prefix, vocab_size)
    try:
        for i in indices:
            out.add(dataset[i])
        out.commit()
    except BaseException:
        out.discard()
        raise
    return len(indices)


def copy_file(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` through a temporary file beside ``dst``."""
    tmp = temp_path_beside(dst)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def iter_token_lines(dataset: Any, dictionary: Dictionary) -> Iterator[str]:
    """Each sentence in index order as space-separated subword tokens, as ``Dictionary.string``
    renders it (EOS and BOS dropped, unknown words as ``<unk>``), which is the n-best file's
    format; one sentence in memory at a time."""
    symbols = dictionary.symbols
    ignore = {dictionary.eos()}
    if hasattr(dictionary, "bos_index"):
        ignore.add(dictionary.bos())
    for i in range(len(dataset)):
        yield " ".join(symbols[t] for t in dataset[i].tolist() if t not in ignore)


def token_lines(dataset: Any, dictionary: Dictionary) -> list[str]:
    """:func:`iter_token_lines` as a list."""
    return list(iter_token_lines(dataset, dictionary))
