"""The offline teacher cache: the teacher's top-k per target token, memory-mapped.

For a binarized split it holds, per sentence and in the dataset's index order, the teacher's k
most probable token ids (int32) and their log-probabilities (float16 by default, or float32)
at every target position, teacher-forced on that sentence's target. Files in the cache
directory, all written through temporary names:

    {split}.topk-ids.bin/.idx      fairseq MMapIndexedDataset, int32, T x k values a sentence
    {split}.topk-lprobs.bin/.idx   the same layout; float16 (or float32) bits stored as uint16
                                   (uint32), since fairseq's format has no float16 code
    {split}.checksums.npy          a CRC-32 of every sentence's target tokens (uint32)
    {split}.cache.json             k, dtype, number of sentences, vocabulary size, teacher;
                                   written last: a cache without it is incomplete

The checksums tie every entry to the target it was computed for: a cache made for other data
(another split, re-binarized or distilled targets) is refused at load time or, for a single
sentence, when that sentence is read, never silently misaligned.

Size: k x (4 + 2) bytes a target token with float16 (k = 8: 48 bytes; float32: 64), plus 28
bytes a sentence (two indexes of 12, the checksum 4); 4.5M sentences of 30 tokens are about
6.6 GB on disk with float16 (8.8 GB with float32), read lazily through memory maps. Measured on
the toy corpus (6.5 tokens a sentence): 52.4 bytes a target token with float16.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset
from fairseq.data.indexed_dataset import (
    MMapIndexedDataset,
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)
from torch import Tensor

from ..atomic import atomic_open, atomic_write_text, replace_synced
from ..errors import SeqKDError
from .distilled import CORRUPT_INDEX_ERRORS

CACHE_FORMAT = 1
STORAGE = {"float16": (np.float16, np.uint16), "float32": (np.float32, np.uint32)}
OPTION = "--teacher-cache"


def target_checksum(target: Tensor) -> int:
    """CRC-32 of a sentence's target token ids, independent of their integer dtype."""
    return zlib.crc32(np.ascontiguousarray(target.numpy(), dtype=np.int64).tobytes())


@dataclass(frozen=True)
class CacheMeta:
    format: int
    split: str
    k: int
    dtype: str
    size: int
    vocab_size: int
    teacher: str


def cache_prefix(directory: str, split: str, what: str) -> str:
    return os.path.join(directory, f"{split}.{what}")


def meta_path(directory: str, split: str) -> str:
    return os.path.join(directory, f"{split}.cache.json")


class CacheWriter:
    """Appends sentences' top-k entries; :meth:`finish` makes the files visible atomically."""

    def __init__(self, prefix_ids: str, prefix_lprobs: str, dtype: str):
        if dtype not in STORAGE:
            raise SeqKDError(f"--cache-dtype must be one of {', '.join(STORAGE)}, got {dtype!r}")
        self.float_type, self.bits_type = STORAGE[dtype]
        self.prefixes = (prefix_ids, prefix_lprobs)
        self.tmp = tuple(f"{p}.tmp{os.getpid()}" for p in self.prefixes)
        self.ids = MMapIndexedDatasetBuilder(data_file_path(self.tmp[0]), dtype=np.int32)
        self.lprobs = MMapIndexedDatasetBuilder(data_file_path(self.tmp[1]), dtype=self.bits_type)

    def add(self, ids: Tensor, lprobs: Tensor) -> None:
        """One sentence: ``ids`` and ``lprobs`` of shape (target length, k)."""
        self.ids.add_item(ids.to(torch.int32).flatten())
        bits = lprobs.float().numpy().astype(self.float_type).view(self.bits_type).ravel()
        self.lprobs.add_item(torch.from_numpy(bits.astype(np.int64)))

    def merge(self, prefix_ids: str, prefix_lprobs: str) -> None:
        self.ids.merge_file_(prefix_ids)
        self.lprobs.merge_file_(prefix_lprobs)

    def finish(self) -> None:
        for builder, tmp, final in zip((self.ids, self.lprobs), self.tmp, self.prefixes):
            builder.finalize(index_file_path(tmp))
            replace_synced(data_file_path(tmp), data_file_path(final))
            replace_synced(index_file_path(tmp), index_file_path(final))


def checksums_path(directory: str, split: str) -> str:
    return os.path.join(directory, f"{split}.checksums.npy")


def write_meta(directory: str, meta: CacheMeta, checksums: Sequence[int]) -> None:
    """Checksums, then the description that marks the cache complete."""
    if len(checksums) != meta.size:
        raise ValueError(f"{len(checksums)} checksums for {meta.size} sentences")
    with atomic_open(checksums_path(directory, meta.split), "wb") as handle:
        np.save(handle, np.asarray(checksums, dtype=np.uint32))
    atomic_write_text(meta_path(directory, meta.split), json.dumps(asdict(meta)))


def invalidate(directory: str, split: str) -> None:
    """Remove a split's completeness marker before its files are rewritten.

    Otherwise a job killed between replacing the data files and writing the new description
    would leave the old description vouching for new files.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(meta_path(directory, split))


CHUNK_IDS, CHUNK_LPROBS, CHUNK_CHECKSUMS = "topk-ids", "topk-lprobs", "checksums.npy"


def write_chunk(directory: str, entries: Sequence[tuple[Tensor, Tensor, int]], dtype: str) -> None:
    """A run of consecutive sentences as a small cache: ``(ids, lprobs, checksum)`` each."""
    writer = CacheWriter(os.path.join(directory, CHUNK_IDS),
                         os.path.join(directory, CHUNK_LPROBS), dtype)
    for ids, lprobs, _ in entries:
        writer.add(ids, lprobs)
    writer.finish()
    np.save(os.path.join(directory, CHUNK_CHECKSUMS),
            np.asarray([c for _, _, c in entries], dtype=np.uint32))


def assemble(directory: str, meta: CacheMeta, chunk_dirs: Sequence[str]) -> None:
    """Concatenate chunks (in sentence order) into the split's cache, description last."""
    invalidate(directory, meta.split)
    writer = CacheWriter(cache_prefix(directory, meta.split, "topk-ids"),
                         cache_prefix(directory, meta.split, "topk-lprobs"), meta.dtype)
    checksums = []
    for chunk in chunk_dirs:
        writer.merge(os.path.join(chunk, CHUNK_IDS), os.path.join(chunk, CHUNK_LPROBS))
        checksums.append(np.load(os.path.join(chunk, CHUNK_CHECKSUMS)))
    writer.finish()
    write_meta(directory, meta, np.concatenate(checksums) if checksums else [])


def cache_files(directory: str, split: str) -> list[str]:
    """The files of a split's cache (all of them, for sizes and comparisons)."""
    files = [data_file_path(cache_prefix(directory, split, w)) for w in ("topk-ids", "topk-lprobs")]
    files += [index_file_path(cache_prefix(directory, split, w))
              for w in ("topk-ids", "topk-lprobs")]
    return [*files, checksums_path(directory, split), meta_path(directory, split)]


def read_meta(directory: str, split: str) -> CacheMeta:
    path = meta_path(directory, split)
    if not os.path.isfile(path):
        raise SeqKDError(f"{OPTION}: {path} not found; make it with seqkd-cache-teacher")
    try:
        with open(path, encoding="utf-8") as f:
            return CacheMeta(**json.load(f))
    except (ValueError, TypeError) as exc:
        raise SeqKDError(f"{OPTION}: {path} is not a teacher-cache description ({exc})") from exc


class TeacherCache:
    """Read side: checked against the data it is used with, then read lazily per sentence."""

    def __init__(self, directory: str, split: str, size: int, k: int | None = None,
                 vocab_size: int | None = None):
        self.directory, self.split = directory, split
        path = meta_path(directory, split)
        self.meta = read_meta(directory, split)
        if self.meta.format != CACHE_FORMAT or self.meta.dtype not in STORAGE:
            raise SeqKDError(
                f"{OPTION}: {path} has format {self.meta.format} / dtype {self.meta.dtype!r}; "
                f"this version reads format {CACHE_FORMAT} with {' or '.join(STORAGE)}"
            )
        if self.meta.split != split:
            raise SeqKDError(f"{OPTION}: {path} describes split {self.meta.split!r}, not {split!r}")
        if self.meta.size != size:
            raise SeqKDError(
                f"{OPTION}: {path} was made for {self.meta.size} sentences, the {split} split "
                f"has {size}: a cache of other data"
            )
        if k is not None and k != self.meta.k:
            raise SeqKDError(
                f"{OPTION}: {path} holds the teacher's top {self.meta.k}, but --kd-topk is {k}"
            )
        if vocab_size is not None and vocab_size != self.meta.vocab_size:
            raise SeqKDError(
                f"{OPTION}: {path} was made with a {self.meta.vocab_size}-symbol dictionary, "
                f"the data has {vocab_size}"
            )
        checksums = checksums_path(directory, split)
        try:
            self.checksums = np.load(checksums, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise SeqKDError(f"{OPTION}: {checksums} is missing or corrupt ({exc})") from exc
        if len(self.checksums) != size:
            raise SeqKDError(f"{OPTION}: {checksums} holds {len(self.checksums)} checksums for "
                             f"{size} sentences")
        self.float_type, self.bits_type = STORAGE[self.meta.dtype]
        ids_prefix = cache_prefix(directory, split, "topk-ids")
        self._open_index(ids_prefix, np.int32)
        self._open_index(cache_prefix(directory, split, "topk-lprobs"), self.bits_type)
        self._map()

    def __getstate__(self) -> dict[str, Any]:
        # memory maps do not pickle (DataLoader workers under spawn): reopen them there
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("ids", "lprobs_index", "lprobs_bits", "checksums")}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._map()

    def _map(self) -> None:
        self.checksums = np.load(checksums_path(self.directory, self.split), mmap_mode="r")
        self.ids = MMapIndexedDataset(cache_prefix(self.directory, self.split, "topk-ids"))
        prefix = cache_prefix(self.directory, self.split, "topk-lprobs")
        self.lprobs_index = MMapIndexedDataset.Index(index_file_path(prefix))
        self.lprobs_bits = np.memmap(data_file_path(prefix), dtype=self.bits_type, mode="r")

    def _open_index(self, prefix: str, dtype: Any) -> MMapIndexedDataset.Index:
        for f in (index_file_path(prefix), data_file_path(prefix)):
            if not os.path.isfile(f):
                raise SeqKDError(f"{OPTION}: {f} is missing (an interrupted cache job?)")
        try:
            index = MMapIndexedDataset.Index(index_file_path(prefix))
        except CORRUPT_INDEX_ERRORS as exc:
            raise SeqKDError(
                f"{OPTION}: {index_file_path(prefix)} is truncated or corrupt"
            ) from exc
        expected = int(index.sizes.astype(np.int64).sum()) * np.dtype(index.dtype).itemsize
        actual = os.path.getsize(data_file_path(prefix))
        if np.dtype(index.dtype) != np.dtype(dtype):
            raise SeqKDError(
                f"{OPTION}: {index_file_path(prefix)} holds {np.dtype(index.dtype)} values, "
                f"expected {np.dtype(dtype)} (--cache-dtype {self.meta.dtype})"
            )
        if (len(index) != self.meta.size or actual != expected
                or np.any(index.sizes.astype(np.int64) % self.meta.k)):
            raise SeqKDError(
                f"{OPTION}: {data_file_path(prefix)} is truncated or corrupt "
                f"({actual} bytes for {len(index)} sentences, expected {expected})"
            )
        return index

    def __len__(self) -> int:
        return self.meta.size

    def check(self, index: int, target: Tensor) -> None:
        if target_checksum(target) != int(self.checksums[index]):
            raise SeqKDError(
                f"{OPTION}: sentence {index} of {meta_path(self.directory, self.split)} was "
                f"computed for another target (checksum mismatch): a cache of other data; "
                f"rebuild it for this data with seqkd-cache-teacher"
            )

    def entry(self, index: int, target: Tensor) -> tuple[Tensor, Tensor]:
        """(ids, log-probs) of shape (len(target), k), after checking the target's checksum."""
        self.check(index, target)
        k = self.meta.k
        ids = self.ids[index].view(-1, k)
        pointer, count = self.lprobs_index[index]
        start = pointer // np.dtype(self.bits_type).itemsize
        bits = self.lprobs_bits[start : start + count]
        lprobs = torch.from_numpy(bits.view(self.float_type).astype(np.float32)).view(-1, k)
        if ids.size(0) != target.numel():
            raise SeqKDError(
                f"{OPTION}: sentence {index} has {ids.size(0)} cached positions for a target of "
                f"{target.numel()} tokens"
            )
        return ids, lprobs


class CachedTeacherDataset(BaseWrapperDataset):
    """Adds each sentence's cached top-k to the batch: ``sample["teacher_topk"]``.

    ``(log-probs, ids)``, each (batch, target length, k), in the batch's row order (fairseq's
    collater sorts rows by source length); padding positions hold id 0 and log-prob 0 and are
    masked by the criterion with the target's padding.
    """

    def __init__(self, dataset: Any, cache: TeacherCache):
        super().__init__(dataset)
        self.cache = cache

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        item["teacher_topk"] = self.cache.entry(index, item["target"])
        return item

    def collater(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self.dataset.collater(samples)
        if not batch:
            return batch
        by_id = {s["id"]: s["teacher_topk"] for s in samples}
        rows = [by_id[int(i)] for i in batch["id"]]
        length, k = batch["target"].size(1), self.cache.meta.k
        ids = torch.zeros(len(rows), length, k, dtype=torch.long)
        lprobs = torch.zeros(len(rows), length, k)
        for b, (row_ids, row_lprobs) in enumerate(rows):
            ids[b, : row_ids.size(0)] = row_ids
            lprobs[b, : row_lprobs.size(0)] = row_lprobs
        batch["teacher_topk"] = (lprobs, ids)
        return batch


SPOT_CHECKS = 64


def attach_teacher_cache(dataset: Any, directory: str, split: str, vocab_size: int,
                         k: int | None = None) -> CachedTeacherDataset:
    """Wrap ``dataset``; a cache of other data fails here, not in the middle of training.

    Besides size, k and vocabulary, the checksums of up to ``SPOT_CHECKS`` evenly spaced
    sentences are compared now (reading every target of a large corpus would slow every start);
    every other sentence is checked when it is read.
    """
    cache = TeacherCache(directory, split, len(dataset), k=k, vocab_size=vocab_size)
    size = len(dataset)
    for index in np.unique(np.linspace(0, size - 1, min(size, SPOT_CHECKS)).astype(np.int64)):
        cache.check(int(index), dataset[int(index)]["target"])
    return CachedTeacherDataset(dataset, cache)

