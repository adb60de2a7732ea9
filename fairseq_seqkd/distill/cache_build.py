"""Building the teacher cache (``seqkd-cache-teacher``): the teacher's top-k per target token.

The teacher (or an ensemble, ``--path a.pt:b.pt``: member probabilities averaged) runs once,
teacher-forced over a binarized split's targets, and the cache keeps for every target token its
``--kd-topk`` most probable ids and their log-probabilities at temperature 1 (format:
:mod:`fairseq_seqkd.data.teacher_cache`). The run is seqkd-generate's
(:mod:`fairseq_seqkd.distill.runner`: the same chunks, manifest and batching), so a killed and
resumed job, or sharded jobs merged (:func:`merge_cache_shards`), give the same bytes as one
uninterrupted run. A shard's output directory holds its committed chunks (``SPLIT.parts/``) and
``SPLIT.shard.json``; only the merge makes a cache. Every file is written through a temporary
name, its bytes on disk (fsync) before the rename.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import DictConfig

from ..atomic import atomic_write_text
from ..data.teacher_cache import (
    CACHE_FORMAT,
    STORAGE,
    CacheMeta,
    assemble,
    cache_files,
    invalidate,
    target_checksum,
    write_chunk,
)
from ..errors import SeqKDError
from ..teacher import FrozenTeacher
from .chunks import ChunkStore, check_output_path
from .options import (
    add_chunked_arguments,
    check_chunked_options,
    checkpoint_paths,
    device,
    json_plain,
    option_flag,
    resume_options,
)
from .runner import ChunkRunner

PROG = "seqkd-cache-teacher"
DEFAULT_TOPK = 8
SHARD_SUFFIX = ".shard.json"

Entry = tuple[torch.Tensor, torch.Tensor, int]


@dataclass
class CacheSummary:
    """What one :func:`build_cache` or :func:`merge_cache_shards` call produced."""

    output: str
    split: str
    sentences: int  # sentences of the split (of the shard's chunks for a shard run)
    tokens: int = 0  # target tokens of those sentences
    bytes: int = 0  # size of the cache's files (0 for a shard run: no cache yet)
    computed: int = 0  # sentences run through the teacher by this call
    compute_seconds: float = 0.0
    seconds: float = 0.0
    chunks: int = 0
    resumed_chunks: int = 0
    shard: str = ""  # "i of N" for a shard run
    merged_shards: int = 0

    def describe(self) -> str:
        """The final summary line."""
        if self.shard:
            what = f"shard {self.shard}: {self.sentences} sentences -> {self.output} (merge next)"
        else:
            per = self.bytes / max(self.tokens, 1)
            what = (f"{self.sentences} sentences, {self.tokens} target tokens -> {self.output} "
                    f"({self.split}): {self.bytes} bytes, {per:.1f} bytes/token")
        if self.merged_shards:
            return f"{PROG} --merge-shards: {what} from {self.merged_shards} shards"
        rate = self.computed / max(self.compute_seconds, 1e-9)
        resumed = f"; {self.resumed_chunks} of {self.chunks} chunks resumed" if \
            self.resumed_chunks else ""
        return (f"{PROG}: {what}; teacher ran on {self.computed} sentences in "
                f"{self.compute_seconds:.2f}s ({rate:.1f} sentences/s); {self.seconds:.2f}s in "
                f"all{resumed}")


def build_parser() -> argparse.ArgumentParser:
    """fairseq's generation parser (data, model, batching, sharding) plus ours."""
    parser = options.get_generation_parser(default_task="translation")
    parser.prog = PROG
    group = parser.add_argument_group(PROG)
    group.add_argument(
        "--output", required=True, metavar="DIR",
        help="cache directory (created if missing): SPLIT.topk-ids/.topk-lprobs (.bin/.idx), "
        "SPLIT.checksums.npy, SPLIT.cache.json; unfinished work in DIR/SPLIT.parts/",
    )
    group.add_argument(
        "--kd-topk", type=int, default=DEFAULT_TOPK, metavar="K",
        help="teacher tokens kept per target position (word_kd must use the same --kd-topk)",
    )
    group.add_argument(
        "--cache-dtype", choices=tuple(STORAGE), default="float16",
        help="storage of the log-probabilities: float16 (half the bytes) or float32 (exact)",
    )
    add_chunked_arguments(group)
    return parser


def parse_args(argv: Sequence[str]) -> tuple[DictConfig, argparse.Namespace]:
    args = options.parse_args_and_arch(build_parser(), input_args=list(argv))
    return convert_namespace_to_omegaconf(args), args


def cache_options(cfg: DictConfig, args: argparse.Namespace, where: str) -> dict[str, Any]:
    """Options that change the cache's bytes: seqkd-generate's, less beam search's, plus ours."""
    beam = {option_flag(name) for name in json_plain(cfg.generation)}
    opts = {k: v for k, v in resume_options(cfg, args, where).items() if k not in beam}
    opts["tool"] = PROG
    opts["--kd-topk"] = args.kd_topk
    opts["--cache-dtype"] = args.cache_dtype
    return opts


def _prepare_output(directory: str) -> None:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise SeqKDError(f"--output {directory} is a file; give a directory")
    parent = os.path.dirname(os.path.abspath(directory))
    if not os.path.isdir(parent):
        raise SeqKDError(f"--output {directory}: parent directory {parent} does not exist")
    os.makedirs(directory, exist_ok=True)
    check_output_path(os.path.join(directory, "probe"))


def shard_marker(directory: str, split: str) -> str:
    return os.path.join(directory, split + SHARD_SUFFIX)


def build_cache_argv(argv: Sequence[str]) -> CacheSummary:
    """Run ``seqkd-cache-teacher`` with command-line ``argv`` in this process."""
    cfg, args = parse_args(argv)
    return build_cache(cfg, args)


def build_cache(cfg: DictConfig, args: argparse.Namespace) -> CacheSummary:
    """Run the teacher over the owned chunks not committed yet, then assemble the cache."""
    start_time = time.perf_counter()
    if args.kd_topk < 1:
        raise SeqKDError(f"--kd-topk must be >= 1, got {args.kd_topk}")
    check_chunked_options(cfg, args)
    directory, k = args.output, args.kd_topk
    opts = cache_options(cfg, args, device(cfg))  # checks --path exists
    _prepare_output(directory)
    store = ChunkStore(os.path.join(directory, cfg.dataset.gen_subset), suffix="")
    store.check_options(opts)  # before minutes of model loading

    runner = ChunkRunner(cfg, args, inference=False)
    split, dataset = runner.split, runner.dataset
    if getattr(dataset, "tgt", True) is None:
        raise SeqKDError(f"--gen-subset {split} in {cfg.task.data} has no target side to cache")
    vocab = len(runner.task.target_dictionary)
    if k > vocab:
        raise SeqKDError(f"--kd-topk {k} is larger than the target vocabulary ({vocab})")
    too_long = runner.too_long()
    if too_long:  # every sentence must be cached: one the teacher cannot read is an error
        raise SeqKDError(
            f"sentence {too_long[0]} of --gen-subset {split} is too long for the teacher (size "
            f"{dataset.size(too_long[0])}, max positions {runner.max_positions()}); remove it "
            f"from the data (a cache must cover every sentence)"
        )
    runner.check_max_tokens()
    teacher = FrozenTeacher(runner.models, checkpoint_paths(cfg))

    invalidate(directory, split)  # the old cache (if any) is no longer complete
    marker = shard_marker(directory, split)
    if os.path.exists(marker):
        os.unlink(marker)

    def commit(chunk: int, entries: list[Entry]) -> None:
        store.commit_files(chunk, lambda d: write_chunk(d, entries, args.cache_dtype))

    pad = runner.task.target_dictionary.pad()
    stats = runner.run(store, opts, PROG, _teacher_topk(teacher, k, pad), commit)

    tokens = int(np.asarray(dataset.tgt_sizes)[runner.keep].sum())
    meta = CacheMeta(format=CACHE_FORMAT, split=split, k=k, dtype=args.cache_dtype,
                     size=runner.size, vocab_size=vocab,
                     teacher=":".join(os.path.abspath(p) for p in teacher.paths))
    summary = CacheSummary(
        output=directory, split=split, sentences=runner.sentences, tokens=tokens,
        computed=stats.sentences, compute_seconds=stats.seconds, chunks=len(runner.chunks),
        resumed_chunks=len(stats.resumed),
    )
    shards, shard = cfg.dataset.num_shards, cfg.dataset.shard_id
    if shards > 1:
        description = {**asdict(meta), "chunk_size": runner.chunk_size, "num_shards": shards,
                       "shard_id": shard, "chunks": runner.chunks}
        atomic_write_text(marker, json.dumps(description))
        summary.shard = f"{shard} of {shards}"
    else:
        assemble(directory, meta, [store.chunk_path(c) for c in runner.chunks])
        store.discard()
        summary.bytes = sum(os.path.getsize(f) for f in cache_files(directory, split))
    summary.seconds = time.perf_counter() - start_time
    return summary


def _teacher_topk(
    teacher: FrozenTeacher, k: int, pad: int
) -> Callable[[dict[str, Any]], list[Entry]]:
    """Per sentence of a batch: its target's top-k ids, log-probabilities and checksum."""

    def batch(sample: dict[str, Any]) -> list[Entry]:
        target = sample["target"].cpu()
        lengths = target.ne(pad).sum(dim=1).tolist()
        # the online criterion's computation: float32 log_softmax, ensemble mean of probabilities
        values, top = teacher.log_probs(sample["net_input"]).topk(k, dim=-1)
        values, top = values.float().cpu(), top.cpu()
        return [(top[row, :length], values[row, :length], target_checksum(target[row, :length]))
                for row, length in enumerate(lengths)]

    return batch


def _read_shard(directory: str, split: str) -> dict[str, Any]:
    path = shard_marker(directory, split)
    if not os.path.isfile(path):
        raise SeqKDError(f"--merge-shards: {path} not found: shard {directory} is unfinished or "
                         f"not a sharded {split} run")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise SeqKDError(f"--merge-shards: {path} is unreadable ({exc})") from None


def merge_cache_shards(directories: Sequence[str], output: str, split: str) -> CacheSummary:
    """Assemble the shards' chunks, in chunk order, into ``output``: the unsharded run's bytes."""
    start_time = time.perf_counter()
    if os.path.abspath(output) in {os.path.abspath(d) for d in directories}:
        raise SeqKDError(f"--output {output} is also one of the shards")
    shards = [_read_shard(d, split) for d in directories]
    first = shards[0]
    same = ("format", "split", "k", "dtype", "size", "vocab_size", "teacher", "chunk_size",
            "num_shards")
    for directory, shard in zip(directories, shards):
        for key in same:
            if shard.get(key) != first.get(key):
                raise SeqKDError(
                    f"--merge-shards: {shard_marker(directory, split)} has {key} "
                    f"{shard.get(key)!r}, {shard_marker(directories[0], split)} has "
                    f"{first.get(key)!r}: shards of different runs"
                )
    by_id = {}
    for directory, shard in zip(directories, shards):
        if shard["shard_id"] in by_id:
            raise SeqKDError(f"--merge-shards: {directory} and {by_id[shard['shard_id']]} are "
                             f"both shard {shard['shard_id']}")
        by_id[shard["shard_id"]] = directory
    missing = sorted(set(range(first["num_shards"])) - set(by_id))
    if missing:
        raise SeqKDError(f"--merge-shards: shard {missing[0]} of {first['num_shards']} is missing")
    chunk_dirs = []
    for chunk in range(-(-first["size"] // first["chunk_size"])):
        owner = by_id[chunk % first["num_shards"]]
        path = ChunkStore(os.path.join(owner, split), suffix="").chunk_path(chunk)
        if not os.path.isdir(path):
            raise SeqKDError(f"--merge-shards: chunk {chunk} is missing: {path} not found")
        chunk_dirs.append(path)
    _prepare_output(output)
    meta = CacheMeta(**{key: first[key] for key in CacheMeta.__dataclass_fields__})
    assemble(output, meta, chunk_dirs)
    summary = CacheSummary(
        output=output, split=split, sentences=meta.size, merged_shards=len(directories),
        bytes=sum(os.path.getsize(f) for f in cache_files(output, split)),
        seconds=time.perf_counter() - start_time, chunks=len(chunk_dirs),
    )
    summary.tokens = int(sum(os.path.getsize(os.path.join(c, "topk-ids.bin")) for c in chunk_dirs)
                         // (4 * meta.k))
    return summary
