"""Distilled targets delivered beside the gold ones (sequence-level interpolation).

``attach_distilled_targets`` wraps the gold ``LanguagePairDataset`` of the training split so that
every collated batch also carries ``sample["distilled"] = {"target", "prev_output_tokens",
"ntokens"}``: the teacher's target of the same sentences, in the batch's row order. Batching
counts the longer of the two targets of a sentence, so a batch built under ``--max-tokens`` fits
both decoder passes.

The distilled data is a data-bin written by ``seqkd-build`` (``--fallback gold``): the same
number of sentences as the gold split, in the same order, binarized with the same dictionaries.
A build with ``--fallback drop`` (``train.kept-indices``) lacks targets for some sentences and is
refused; rebuild it with ``--fallback gold`` to interpolate.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np
import torch
from fairseq import utils
from fairseq.data import BaseWrapperDataset, Dictionary, FairseqDataset, data_utils
from fairseq.data import indexed_dataset as fairseq_indexed

from ..errors import SeqKDError
from ..teacher import first_difference, load_dictionary

OPTION = "--distilled-data"
KEPT_INDICES_SUFFIX = ".kept-indices"


def check_dictionary_file(path: str, expected: Dictionary, what: str) -> None:
    """Refuse distilled data whose ``dict.<lang>.txt`` differs from the task's dictionary."""
    if not os.path.isfile(path):
        raise SeqKDError(
            f"{OPTION}: {path} is missing; expected a data-bin written by seqkd-build"
        )
    found = load_dictionary(path, OPTION)
    diff = first_difference(found, expected)
    if diff is not None:
        i, a, b = diff
        raise SeqKDError(
            f"{OPTION}: {path} differs from the {what} dictionary of the training data "
            f"({len(found)} vs {len(expected)} symbols; first difference at index {i}: "
            f"{a!r} vs {b!r}); build the distilled data from this data-bin with seqkd-build"
        )


def _split_prefix(directory: str, split: str, src: str, tgt: str, impl: str | None) -> str:
    """``<dir>/<split>.<src>-<tgt>.`` (or the reversed pair), as fairseq's translation task."""
    for a, b in ((src, tgt), (tgt, src)):
        prefix = os.path.join(directory, f"{split}.{a}-{b}.")
        if _exists(prefix + tgt, impl):
            return prefix
    raise SeqKDError(
        f"{OPTION}: {os.path.join(directory, f'{split}.{src}-{tgt}.{tgt}')}.bin/.idx not found; "
        f"expected the {split} split written by seqkd-build"
    )


def _exists(path: str, impl: str | None) -> bool:
    if impl is None:
        impl = fairseq_indexed.infer_dataset_impl(path)
    return impl is not None and fairseq_indexed.dataset_exists(path, impl)


# what fairseq's indexed-dataset readers raise for a truncated or foreign .idx/.bin: the
# header's assert, a short buffer (numpy, struct), an empty file that cannot be memory-mapped
CORRUPT_INDEX_ERRORS: tuple[type[Exception], ...] = (AssertionError, ValueError, struct.error)


def load_split(prefix: str, dictionary: Dictionary, what: str, impl: str | None = None) -> Any:
    """fairseq's indexed dataset at ``prefix`` (``impl``, or inferred from the files), with
    one-line errors naming ``what`` and the files when they are missing or corrupt."""
    impl = impl or fairseq_indexed.infer_dataset_impl(prefix)
    if impl is None:
        raise SeqKDError(f"{what}: {prefix}.bin/.idx not found")
    try:
        dataset = data_utils.load_indexed_dataset(prefix, dictionary, impl)
    except CORRUPT_INDEX_ERRORS as exc:
        raise SeqKDError(f"{what}: cannot read {prefix}.bin/.idx ({exc})") from exc
    if dataset is None:
        raise SeqKDError(f"{what}: cannot read {prefix}.bin/.idx")
    return dataset


def _first_mismatch(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.flatnonzero(a != b)[0])


def attach_distilled_targets(
    dataset: Any, cfg: Any, split: str, src_dict: Dictionary, tgt_dict: Dictionary,
    epoch: int = 1,
) -> DistilledPairDataset:
    """Wrap the gold ``dataset`` of ``split`` with the teacher targets of ``cfg.distilled_data``.

    Everything is checked here, at load time, so a mismatch is one line before training starts:
    the directory and its files exist, its dictionaries equal the task's, it has exactly as many
    sentences as the gold split and the same source lengths (the data is aligned by index).
    ``cfg.distilled_data`` may list several directories joined by ':' to follow fairseq's epoch
    sharding of ``cfg.data`` (one distilled directory per data shard).
    """
    directories = utils.split_paths(cfg.distilled_data)
    directory = directories[(epoch - 1) % len(directories)]
    if not os.path.isdir(directory):
        raise SeqKDError(f"{OPTION}: {directory} is not a directory")
    if not hasattr(dataset, "src_sizes") or getattr(dataset, "tgt_sizes", None) is None:
        raise SeqKDError(
            f"{OPTION}: the {split} split has no gold targets to interpolate with"
        )
    if getattr(dataset, "buckets", None) is not None:
        raise SeqKDError(f"{OPTION} does not support --num-batch-buckets; drop that option")
    kept = os.path.join(directory, split + KEPT_INDICES_SUFFIX)
    if os.path.exists(kept):
        raise SeqKDError(
            f"{OPTION}: {directory} was built with --fallback drop ({kept} exists), so its "
            f"{split} split is not aligned with the gold one; rebuild it with seqkd-build "
            f"--fallback gold to interpolate"
        )
    src, tgt = cfg.source_lang, cfg.target_lang
    check_dictionary_file(os.path.join(directory, f"dict.{tgt}.txt"), tgt_dict, "target")
    src_dict_file = os.path.join(directory, f"dict.{src}.txt")
    if os.path.isfile(src_dict_file):
        check_dictionary_file(src_dict_file, src_dict, "source")

    impl = cfg.dataset_impl
    prefix = _split_prefix(directory, split, src, tgt, impl)
    target_path = prefix + tgt
    distilled = load_split(target_path, tgt_dict, OPTION, impl)
    gold_name = os.path.join(utils.split_paths(cfg.data)[0], f"{split}.*")
    if len(distilled) != len(dataset):
        raise SeqKDError(
            f"{OPTION}: {target_path}.bin has {len(distilled)} sentences but the gold {split} "
            f"split ({gold_name}) has {len(dataset)}; the distilled data must be built from "
            f"this data-bin (seqkd-build --fallback gold) to stay aligned by sentence index"
        )
    # same source lengths sentence by sentence: catches data built from another corpus
    if not cfg.truncate_source and _exists(prefix + src, impl):
        source = load_split(prefix + src, src_dict, OPTION, impl)
        source_sizes = np.array(source.sizes)  # a copy: the mmap closes with `source`
        del source
        gold_sizes = np.asarray(dataset.src_sizes)
        if source_sizes.shape != gold_sizes.shape:
            raise SeqKDError(
                f"{OPTION}: {prefix + src}.bin has {len(source_sizes)} sentences but "
                f"{target_path}.bin has {len(distilled)}; rebuild it with seqkd-build"
            )
        if (source_sizes != gold_sizes).any():
            i = _first_mismatch(source_sizes, gold_sizes)
            raise SeqKDError(
                f"{OPTION}: {prefix + src}.bin is not aligned with the gold {split} split "
                f"({gold_name}): sentence {i} has {source_sizes[i]} source tokens there and "
                f"{gold_sizes[i]} in the gold data"
            )
    return DistilledPairDataset(dataset, distilled, tgt_dict)


class DistilledPairDataset(BaseWrapperDataset):
    """A gold ``LanguagePairDataset`` whose samples also hold the teacher's target.

    Sizes, filtering, ordering and batching use ``max(gold target, distilled target)`` as the
    target length, so ``--max-tokens`` and ``--max-target-positions`` hold for both decoder
    passes of a batch.
    """

    def __init__(self, dataset: Any, distilled: FairseqDataset, tgt_dict: Dictionary):
        super().__init__(dataset)
        self.distilled = distilled
        self.tgt_dict = tgt_dict
        self.distilled_sizes = np.array(distilled.sizes)
        self.src_sizes = np.asarray(dataset.src_sizes)
        self.batch_tgt_sizes = np.maximum(np.asarray(dataset.tgt_sizes), self.distilled_sizes)

    def distilled_item(self, index: int) -> torch.Tensor:
        """The distilled target, with the gold target's EOS/BOS conventions applied."""
        item = self.distilled[index]
        if getattr(self.dataset, "append_eos_to_target", False):
            eos = self.tgt_dict.eos()
            if len(item) == 0 or item[-1] != eos:
                item = torch.cat([item, torch.LongTensor([eos])])
        if getattr(self.dataset, "append_bos", False):
            bos = self.tgt_dict.bos()
            if len(item) == 0 or item[0] != bos:
                item = torch.cat([torch.LongTensor([bos]), item])
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.dataset[index]
        example["distilled"] = self.distilled_item(index)
        return example

    def collater(
        self, samples: list[dict[str, Any]], pad_to_length: dict[str, int] | None = None
    ) -> dict[str, Any]:
        batch = self.dataset.collater(samples, pad_to_length=pad_to_length)
        if not samples or not batch:
            return batch
        # the gold collater reorders rows by source length: follow its ids
        by_id = {int(s["id"]): s["distilled"] for s in samples}
        values = [by_id[int(i)] for i in batch["id"]]
        pad, eos = self.tgt_dict.pad(), getattr(self.dataset, "eos", self.tgt_dict.eos())
        left_pad = getattr(self.dataset, "left_pad_target", False)
        multiple = getattr(self.dataset, "pad_to_multiple", 1)
        length = pad_to_length.get("target") if pad_to_length else None

        def merge(move_eos_to_beginning: bool) -> torch.Tensor:
            return data_utils.collate_tokens(
                values, pad, eos, left_pad, move_eos_to_beginning,
                pad_to_length=length, pad_to_multiple=multiple,
            )

        target = merge(False)
        batch["distilled"] = {
            "target": target,
            "prev_output_tokens": merge(True),
            "ntokens": int(sum(v.ne(pad).sum().item() for v in values)),
        }
        return batch

    @property
    def sizes(self) -> np.ndarray:
        return np.vstack((self.src_sizes, self.batch_tgt_sizes)).T

    def num_tokens(self, index: int) -> int:
        return max(self.src_sizes[index], self.batch_tgt_sizes[index])

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return np.maximum(self.src_sizes[indices], self.batch_tgt_sizes[indices])

    def size(self, index: int) -> tuple[int, int]:
        return self.src_sizes[index], self.batch_tgt_sizes[index]

    def ordered_indices(self) -> np.ndarray:
        """``LanguagePairDataset``'s order (shuffle, then by target, then source length)."""
        if getattr(self.dataset, "shuffle", True):
            indices = np.random.permutation(len(self)).astype(np.int64)
        else:
            indices = np.arange(len(self), dtype=np.int64)
        indices = indices[np.argsort(self.batch_tgt_sizes[indices], kind="mergesort")]
        return indices[np.argsort(self.src_sizes[indices], kind="mergesort")]

    def filter_indices_by_size(self, indices: np.ndarray, max_sizes: Any):
        return data_utils.filter_paired_dataset_indices_by_size(
            self.src_sizes, self.batch_tgt_sizes, indices, max_sizes
        )

    def batch_by_size(
        self, indices: np.ndarray, max_tokens: int | None = None,
        max_sentences: int | None = None, required_batch_size_multiple: int = 1,
    ):
        # FairseqDataset's implementation, driven by this wrapper's num_tokens
        return FairseqDataset.batch_by_size(
            self, indices, max_tokens=max_tokens, max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple,
        )

    @property
    def supports_prefetch(self) -> bool:
        return bool(
            getattr(self.dataset, "supports_prefetch", False)
            and getattr(self.distilled, "supports_prefetch", False)
        )

    def prefetch(self, indices: np.ndarray) -> None:
        self.dataset.prefetch(indices)
        self.distilled.prefetch(indices)
