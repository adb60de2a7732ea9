"""One chunked teacher run over a binarized split: what seqkd-generate and the teacher cache share.

fairseq loads the task, the models (``checkpoint_utils.load_model_ensemble``, as
``fairseq-generate`` does) and the split; :class:`ChunkRunner` then finds the chunks this shard
owns, checks the sentences' sizes, batches each chunk on its own (:class:`ChunkBatches`) in
``fairseq-generate``'s order, and hands every finished chunk, reassembled from its batches in
index order, to the tool to commit. What a batch computes (beam search, or the teacher's
teacher-forced top-k) is the tool's ``batch`` function.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fairseq import checkpoint_utils, tasks, utils
from fairseq.data import BaseWrapperDataset, data_utils
from omegaconf import DictConfig
from tqdm import tqdm

from ..errors import SeqKDError
from ..teacher import check_teacher_dictionaries, load_checkpoint_state
from .chunks import ChunkStore, owned_chunks
from .options import checkpoint_paths, data_digests, device, plain_loading

logger = logging.getLogger(__name__)


class ChunkBatches(BaseWrapperDataset):
    """The split, batched chunk by chunk: no batch crosses a chunk, none depends on another chunk.

    ``segments`` are the chunks' indices in fairseq's batching order. fairseq's own
    ``batch_by_size`` batches each segment on its own, so one ``task.get_batch_iterator`` (one
    DataLoader, with fairseq's ``--num-workers`` prefetching) serves the whole run while a chunk
    gets the same batches whichever chunks precede it.
    """

    def __init__(self, dataset: Any, segments: Sequence[np.ndarray]):
        super().__init__(dataset)
        self._segments = [s for s in segments if len(s)]

    def ordered_indices(self) -> np.ndarray:
        if not self._segments:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(self._segments)

    def batch_by_size(
        self, indices: np.ndarray, max_tokens: int | None = None,
        max_sentences: int | None = None, required_batch_size_multiple: int = 1,
    ) -> list[np.ndarray]:
        if len(indices) != sum(len(s) for s in self._segments):
            raise RuntimeError("the chunk batches were filtered after they were planned")
        batches: list[np.ndarray] = []
        for segment in self._segments:
            batches.extend(_fairseq_batches(
                self.dataset, segment, max_tokens, max_sentences, required_batch_size_multiple
            ))
        return batches


def _fairseq_batches(
    dataset: Any, indices: np.ndarray, max_tokens: int | None, max_sentences: int | None,
    required_batch_size_multiple: int,
) -> list[np.ndarray]:
    """fairseq's batches of ``indices``, plus the last one that fairseq silently drops.

    ``data_utils.batch_by_size`` discards a last batch whose size is not a multiple of
    ``--required-batch-size-multiple`` (8 by default; facebookresearch/fairseq#5036), so
    ``fairseq-generate`` loses up to 7 sentences per split. The dropped batch is valid (fairseq
    built it under the same limits), so it is decoded here instead.
    """
    batches = list(dataset.batch_by_size(
        indices, max_tokens=max_tokens, max_sentences=max_sentences,
        required_batch_size_multiple=required_batch_size_multiple,
    ))
    if sum(len(b) for b in batches) < len(indices):
        batched = np.concatenate(batches) if batches else np.empty(0, dtype=np.int64)
        batches.append(np.asarray(indices)[~np.isin(indices, batched)])
    return batches


def load_models(
    cfg: DictConfig, task: Any, teacher_data: str | None = None
) -> tuple[list[torch.nn.Module], Any]:
    """The ``--path`` checkpoints, each checked against the task's dictionaries first."""
    overrides = ast.literal_eval(cfg.common_eval.model_overrides)
    models, saved_cfg = [], None
    for path in checkpoint_paths(cfg):
        state = None
        if plain_loading(cfg):
            state = load_checkpoint_state(path, "--path")
            check_teacher_dictionaries(
                path, state, (getattr(task, "source_dictionary", None), task.target_dictionary),
                f"the data in {str(task.cfg.data).split(os.pathsep)[0]}", teacher_data,
                langs=(getattr(task.cfg, "source_lang", None) or "src",
                       getattr(task.cfg, "target_lang", None) or "tgt"),
            )
            if overrides:
                state = None  # fairseq re-reads it, applying --model-overrides
        try:
            loaded, model_cfg = checkpoint_utils.load_model_ensemble(
                [path],
                arg_overrides=overrides,
                task=task,
                suffix=cfg.checkpoint.checkpoint_suffix,
                strict=(cfg.checkpoint.checkpoint_shard_count == 1),
                num_shards=cfg.checkpoint.checkpoint_shard_count,
                state=state,
            )
        except (OSError, KeyError, RuntimeError) as exc:
            # a missing file, a checkpoint without the expected entries, or weights of another
            # architecture (torch's state-dict mismatch); any other RuntimeError is no user error
            if isinstance(exc, RuntimeError) and "loading state_dict" not in str(exc):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SeqKDError(f"--path: cannot load {path} into the task's model ({first})") from exc
        models.extend(loaded)
        saved_cfg = saved_cfg or model_cfg
    return models, saved_cfg


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a chatty fairseq logger (per-chunk batch-iterator INFO lines)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


@dataclass
class RunStats:
    """What :meth:`ChunkRunner.run` did."""

    resumed: set[int]  # owned chunks found committed
    sentences: int = 0  # sentences run through the models
    seconds: float = 0.0  # wall time of the batches


class ChunkRunner:
    r"""The models over the chunks of ``--gen-subset`` that this shard (``--shard-id``) owns.

    Loading follows ``fairseq-generate``: ``--user-dir``, the seed, the task, the models (checked
    against the data's dictionaries, ``--teacher-data``), ``--fp16``, the device. ``keep`` marks
    the sentences to run: the owned ones, less any the tool :meth:`skip`\ s.
    """

    def __init__(self, cfg: DictConfig, args: argparse.Namespace, inference: bool):
        utils.import_user_module(cfg.common)
        self.cfg = cfg
        self.seed: int = cfg.common.seed if cfg.common.seed is not None else 1
        np.random.seed(self.seed)
        utils.set_torch_seed(self.seed)
        self.use_cuda = device(cfg) == "cuda"
        self.task = tasks.setup_task(cfg.task)
        self.models, saved_cfg = load_models(cfg, self.task, args.teacher_data)
        self.split: str = cfg.dataset.gen_subset
        try:
            self.task.load_dataset(self.split, task_cfg=saved_cfg.task)
        except FileNotFoundError as exc:
            raise SeqKDError(
                f"--gen-subset {self.split}: not found in {cfg.task.data} ({exc})"
            ) from None
        self.dataset = self.task.dataset(self.split)
        for model in self.models:
            if cfg.common.fp16:
                model.half()
            if self.use_cuda:
                model.cuda()
            if inference:
                model.prepare_for_inference_(cfg)
        self.size, self.chunk_size = len(self.dataset), args.chunk_size
        self.chunks = owned_chunks(
            self.size, self.chunk_size, cfg.dataset.num_shards, cfg.dataset.shard_id
        )
        self.keep = np.zeros(self.size, dtype=bool)
        for chunk in self.chunks:
            self.keep[chunk * self.chunk_size:(chunk + 1) * self.chunk_size] = True

    @property
    def sentences(self) -> int:
        """How many sentences the run covers (resumed chunks included)."""
        return int(self.keep.sum())

    def max_positions(self) -> Any:
        return utils.resolve_max_positions(
            self.task.max_positions(), *[m.max_positions() for m in self.models]
        )

    def too_long(self) -> list[int]:
        """The kept sentences longer than the task's and models' max positions, ascending."""
        indices = np.flatnonzero(self.keep).astype(np.int64)
        _, ignored = self.dataset.filter_indices_by_size(indices, self.max_positions())
        return sorted(int(i) for i in ignored)

    def skip(self, indices: Sequence[int]) -> None:
        self.keep[np.asarray(indices, dtype=np.int64)] = False

    def check_max_tokens(self) -> None:
        """A sentence longer than ``--max-tokens`` would fit no batch: say so before any work."""
        max_tokens = self.cfg.dataset.max_tokens
        kept = np.flatnonzero(self.keep)
        if not max_tokens or not len(kept):
            return
        try:
            lengths = np.asarray(self.dataset.num_tokens_vec(kept))
        except NotImplementedError:
            lengths = np.array([self.dataset.num_tokens(i) for i in kept], dtype=np.int64)
        if lengths.max() > max_tokens:
            worst = int(kept[int(np.argmax(lengths))])
            raise SeqKDError(
                f"sentence {worst} of --gen-subset {self.split} has {int(lengths.max())} tokens, "
                f"more than --max-tokens {max_tokens}; raise --max-tokens"
            )

    def run(
        self, store: ChunkStore, opts: dict[str, Any], desc: str,
        batch: Callable[[dict[str, Any]], list[Any]],
        commit: Callable[[int, list[Any]], None],
    ) -> RunStats:
        """Start or resume ``store`` and run every owned chunk it does not hold yet.

        ``batch(sample)`` returns one result per row, in ``sample["id"]`` order (the sample is on
        the models' device); ``commit(chunk, results)`` receives each chunk's results in index
        order as soon as its last batch is done (``[]`` for a chunk with nothing kept).
        """
        chunk_size = self.chunk_size
        # fairseq-generate's batching order for the whole split, cut into chunks
        with data_utils.numpy_seed(self.seed + 1):
            order = np.asarray(self.dataset.ordered_indices(), dtype=np.int64)
        order = order[self.keep[order]]
        order_chunk = order // chunk_size
        grouped = np.argsort(order_chunk, kind="stable")
        order, order_chunk = order[grouped], order_chunk[grouped]
        bounds = np.searchsorted(order_chunk, np.arange(-(-self.size // chunk_size) + 1))

        stats = RunStats(store.start(opts, data_digests(self.cfg)))
        stats.resumed &= set(self.chunks)
        if stats.resumed:
            logger.info("resuming %s: %d of %d chunks already done", store.parts,
                        len(stats.resumed), len(self.chunks))
        segments = {c: order[bounds[c]:bounds[c + 1]] for c in self.chunks
                    if c not in stats.resumed}
        already = sum(int(bounds[c + 1] - bounds[c]) for c in stats.resumed)
        progress = tqdm(
            total=self.sentences, initial=already,
            unit="sent", desc=desc, file=sys.stderr, disable=self.cfg.common.no_progress_bar,
            dynamic_ncols=True, smoothing=0.05,
        )
        start = time.perf_counter()
        try:
            with quiet_logger("fairseq.tasks.fairseq_task"):
                for chunk, results in self._chunks(segments, batch, progress):
                    commit(chunk, results)
                    stats.sentences += len(results)
        finally:
            progress.close()
        stats.seconds = time.perf_counter() - start
        return stats

    def _chunks(
        self, segments: dict[int, np.ndarray], batch: Callable[[dict[str, Any]], list[Any]],
        progress: tqdm,
    ) -> Iterator[tuple[int, list[Any]]]:
        """``(chunk, results by index)`` of the chunks in ``segments``, each as it completes."""
        for chunk, segment in segments.items():
            if len(segment) == 0:  # every sentence of the chunk is skipped
                yield chunk, []
        if not any(len(segment) for segment in segments.values()):
            return
        cfg = self.cfg
        itr = self.task.get_batch_iterator(
            dataset=ChunkBatches(self.dataset, list(segments.values())),
            max_tokens=cfg.dataset.max_tokens,
            max_sentences=cfg.dataset.batch_size,
            max_positions=None,  # already filtered: the skipped sentences are in no segment
            required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
            seed=cfg.common.seed,
            num_workers=cfg.dataset.num_workers,
            data_buffer_size=cfg.dataset.data_buffer_size,
            disable_iterator_cache=True,
        ).next_epoch_itr(shuffle=False)
        current, results = -1, {}
        for sample in itr:
            if "net_input" not in sample:
                continue
            ids = sample["id"].tolist()
            chunk = ids[0] // self.chunk_size
            if chunk != current:
                if results:
                    raise RuntimeError(f"chunk {current} is incomplete: fairseq skipped sentences")
                current = chunk
                utils.set_torch_seed(self.seed + chunk)  # --sampling: the same wherever resumed
            if self.use_cuda:
                sample = utils.move_to_cuda(sample)
            results.update(zip(ids, batch(sample), strict=True))
            progress.update(len(ids))
            if len(results) == len(segments[chunk]):
                yield chunk, [results[i] for i in sorted(results)]
                results = {}
        if results:
            raise RuntimeError(f"chunk {current} is incomplete: fairseq skipped sentences")
