"""``seqkd-cache-teacher``: the teacher's top-k per target token, computed once, memory-mapped.

Word-level KD runs the teacher at every training step; at scale that forward pass dominates the
step. This tool runs the teacher (or an ensemble, ``--path a.pt:b.pt``: member probabilities
averaged) once, teacher-forced over a binarized split's targets (gold or distilled data), and
stores for every target token its ``--kd-topk`` most probable ids and their log-probabilities at
temperature 1 (format: :mod:`fairseq_seqkd.distill.teacher_cache`)::

    seqkd-cache-teacher data-bin --path teacher.pt --gen-subset train --kd-topk 8 \\
        --max-tokens 8000 --output cache/               # resumable: rerun after a kill
    seqkd-cache-teacher data-bin --path teacher.pt --gen-subset valid --kd-topk 8 --output cache/
    fairseq-train data-bin --user-dir fairseq_seqkd --task translation_kd --teacher-cache cache \\
        --criterion word_kd --kd-topk 8 ...               # no --teacher-path: no teacher at all

    # 4 workers, then the merge (checks that every chunk is there exactly once)
    seqkd-cache-teacher data-bin --path t.pt --gen-subset train --num-shards 4 --shard-id $i \\
        --output cache.$i
    seqkd-cache-teacher --merge-shards cache.{0,1,2,3} --gen-subset train --output cache

Every ``fairseq-generate`` data/model option works (same parser: ``--max-tokens``,
``--batch-size``, ``--cpu``, ``--fp16``, ``--user-dir``, ``--model-overrides``...); the
chunks, manifest and batching are seqkd-generate's (:mod:`fairseq_seqkd.distill.generate`), so a
killed and resumed job, or sharded jobs merged, give the same bytes as one uninterrupted run.
A shard's ``--output`` holds its committed chunks (``SPLIT.parts/``) and ``SPLIT.shard.json``;
only the merge makes a cache. Bad input exits with status 1 after one
``seqkd-cache-teacher: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from fairseq import options, tasks, utils
from fairseq.data import data_utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import DictConfig
from tqdm import tqdm

from fairseq_seqkd.cli.entry import is_merge, summary_main
from fairseq_seqkd.distill.generate import (
    ChunkBatches,
    ChunkStore,
    add_chunk_size_argument,
    check_chunked_options,
    check_output_path,
    checkpoint_paths,
    data_fingerprint,
    json_plain,
    load_models,
    option_flag,
    owned_chunks,
    quiet_logger,
    resume_options,
)
from fairseq_seqkd.distill.teacher_cache import (
    CACHE_FORMAT,
    STORAGE,
    CacheMeta,
    assemble,
    cache_files,
    invalidate,
    target_checksum,
    write_chunk,
)
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.teacher import FrozenTeacher

logger = logging.getLogger(__name__)

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


# ------------------------------------------------------------------ options


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
    add_chunk_size_argument(group)
    return parser


def parse_args(argv: Sequence[str]) -> tuple[DictConfig, argparse.Namespace]:
    args = options.parse_args_and_arch(build_parser(), input_args=list(argv))
    return convert_namespace_to_omegaconf(args), args


def _check_options(cfg: DictConfig, args: argparse.Namespace) -> None:
    if args.kd_topk < 1:
        raise SeqKDError(f"--kd-topk must be >= 1, got {args.kd_topk}")
    check_chunked_options(cfg, args)


def cache_options(cfg: DictConfig, args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Options that change the cache's bytes: seqkd-generate's, less beam search's, plus ours."""
    beam = {option_flag(name) for name in json_plain(cfg.generation)}
    opts = {k: v for k, v in resume_options(cfg, args, device).items() if k not in beam}
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


# ------------------------------------------------------------------ building


def build_cache_argv(argv: Sequence[str]) -> CacheSummary:
    """Run ``seqkd-cache-teacher`` with command-line ``argv`` in this process."""
    cfg, args = parse_args(argv)
    return build_cache(cfg, args)


def build_cache(cfg: DictConfig, args: argparse.Namespace) -> CacheSummary:
    """Run the teacher over the owned chunks not committed yet, then assemble the cache."""
    start_time = time.perf_counter()
    _check_options(cfg, args)
    directory, split, k = args.output, cfg.dataset.gen_subset, args.kd_topk
    use_cuda = torch.cuda.is_available() and not cfg.common.cpu
    opts = cache_options(cfg, args, "cuda" if use_cuda else "cpu")  # checks --path exists
    _prepare_output(directory)
    store = ChunkStore(os.path.join(directory, split), suffix="")
    store.check_options(opts)  # before minutes of model loading

    utils.import_user_module(cfg.common)
    seed = cfg.common.seed if cfg.common.seed is not None else 1
    np.random.seed(seed)
    utils.set_torch_seed(seed)
    task = tasks.setup_task(cfg.task)
    models, saved_cfg = load_models(cfg, task)
    try:
        task.load_dataset(split, task_cfg=saved_cfg.task)
    except FileNotFoundError as exc:
        raise SeqKDError(f"--gen-subset {split}: not found in {cfg.task.data} ({exc})") from None
    dataset = task.dataset(split)
    if getattr(dataset, "tgt", True) is None:
        raise SeqKDError(f"--gen-subset {split} in {cfg.task.data} has no target side to cache")
    vocab = len(task.target_dictionary)
    if k > vocab:
        raise SeqKDError(f"--kd-topk {k} is larger than the target vocabulary ({vocab})")
    for model in models:
        if cfg.common.fp16:
            model.half()
        if use_cuda:
            model.cuda()
    teacher = FrozenTeacher(models, checkpoint_paths(cfg))

    size, chunk_size = len(dataset), args.chunk_size
    shards, shard = cfg.dataset.num_shards, cfg.dataset.shard_id
    chunks = owned_chunks(size, chunk_size, shards, shard)
    owned = np.zeros(size, dtype=bool)
    for chunk in chunks:
        owned[chunk * chunk_size:(chunk + 1) * chunk_size] = True
    _check_sizes(cfg, task, models, dataset, np.flatnonzero(owned).astype(np.int64), split)

    with data_utils.numpy_seed(seed + 1):  # seqkd-generate's (fairseq-generate's) order
        order = np.asarray(dataset.ordered_indices(), dtype=np.int64)
    order = order[owned[order]]
    order_chunk = order // chunk_size
    grouped = np.argsort(order_chunk, kind="stable")
    order, order_chunk = order[grouped], order_chunk[grouped]
    bounds = np.searchsorted(order_chunk, np.arange(-(-size // chunk_size) + 1))

    invalidate(directory, split)  # the old cache (if any) is no longer complete
    marker = shard_marker(directory, split)
    if os.path.exists(marker):
        os.unlink(marker)
    done = store.start(opts, data_fingerprint(dataset, split)) & set(chunks)
    todo = [c for c in chunks if c not in done]
    total = int(owned.sum())
    progress = tqdm(
        total=total, initial=sum(int(bounds[c + 1] - bounds[c]) for c in done), unit="sent",
        desc=PROG, file=sys.stderr, disable=cfg.common.no_progress_bar, dynamic_ncols=True,
        smoothing=0.05,
    )
    segments = {c: order[bounds[c]:bounds[c + 1]] for c in todo}
    computed, compute_start = 0, time.perf_counter()
    try:
        with quiet_logger("fairseq.tasks.fairseq_task"):
            for chunk, entries in _teacher_topk(cfg, task, teacher, dataset, segments,
                                                chunk_size, k, use_cuda, progress):
                store.commit_files(chunk, lambda d, e=entries: write_chunk(d, e, args.cache_dtype))
                computed += len(entries)
    finally:
        progress.close()
    compute_seconds = time.perf_counter() - compute_start

    tokens = int(np.asarray(dataset.tgt_sizes)[owned].sum())
    meta = CacheMeta(format=CACHE_FORMAT, split=split, k=k, dtype=args.cache_dtype, size=size,
                     vocab_size=vocab, teacher=":".join(os.path.abspath(p) for p in teacher.paths))
    summary = CacheSummary(
        output=directory, split=split, sentences=total, tokens=tokens, computed=computed,
        compute_seconds=compute_seconds, chunks=len(chunks), resumed_chunks=len(done),
    )
    if shards > 1:
        description = {**asdict(meta), "chunk_size": chunk_size, "num_shards": shards,
                       "shard_id": shard, "chunks": chunks}
        tmp = f"{marker}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(description, handle)
        os.replace(tmp, marker)
        summary.shard = f"{shard} of {shards}"
    else:
        assemble(directory, meta, [store.chunk_path(c) for c in chunks])
        store.discard()
        summary.bytes = sum(os.path.getsize(f) for f in cache_files(directory, split))
    summary.seconds = time.perf_counter() - start_time
    return summary


def _check_sizes(cfg: DictConfig, task: Any, models: list, dataset: Any, indices: np.ndarray,
                 split: str) -> None:
    """Every sentence must be cached: one the teacher cannot read is an error, not a gap."""
    max_positions = utils.resolve_max_positions(
        task.max_positions(), *[m.max_positions() for m in models]
    )
    _, ignored = dataset.filter_indices_by_size(indices, max_positions)
    if len(ignored):
        worst = int(ignored[0])
        raise SeqKDError(
            f"sentence {worst} of --gen-subset {split} is too long for the teacher (size "
            f"{dataset.size(worst)}, max positions {max_positions}); remove it from the data "
            f"(a cache must cover every sentence)"
        )
    max_tokens = cfg.dataset.max_tokens
    if max_tokens and len(indices):
        lengths = np.asarray(dataset.num_tokens_vec(indices))
        if lengths.max() > max_tokens:
            worst = int(indices[int(np.argmax(lengths))])
            raise SeqKDError(
                f"sentence {worst} of --gen-subset {split} has {int(lengths.max())} tokens, more "
                f"than --max-tokens {max_tokens}; raise --max-tokens"
            )


def _teacher_topk(
    cfg: DictConfig, task: Any, teacher: FrozenTeacher, dataset: Any,
    segments: dict[int, np.ndarray], chunk_size: int, k: int, use_cuda: bool, progress: tqdm,
) -> Iterator[tuple[int, list[Entry]]]:
    """Teacher-forced top-k of the chunks in ``segments``; yields ``(chunk, entries by index)``."""
    if not any(len(s) for s in segments.values()):
        return
    itr = task.get_batch_iterator(
        dataset=ChunkBatches(dataset, list(segments.values())),
        max_tokens=cfg.dataset.max_tokens,
        max_sentences=cfg.dataset.batch_size,
        max_positions=None,  # checked: every owned sentence fits
        required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
        seed=cfg.common.seed,
        num_workers=cfg.dataset.num_workers,
        data_buffer_size=cfg.dataset.data_buffer_size,
        disable_iterator_cache=True,
    ).next_epoch_itr(shuffle=False)
    pad = task.target_dictionary.pad()
    current, entries = -1, {}
    for sample in itr:
        if "net_input" not in sample:
            continue
        ids = sample["id"].tolist()
        chunk = ids[0] // chunk_size
        if chunk != current:
            if entries:
                raise RuntimeError(f"chunk {current} is incomplete: fairseq skipped sentences")
            current = chunk
        target = sample["target"]
        lengths = target.ne(pad).sum(dim=1).tolist()
        if use_cuda:
            sample = utils.move_to_cuda(sample)
        # the online criterion's computation: float32 log_softmax, ensemble mean of probabilities
        values, top = teacher.log_probs(sample["net_input"]).topk(k, dim=-1)
        values, top = values.float().cpu(), top.cpu()
        for row, (index, length) in enumerate(zip(ids, lengths)):
            entries[index] = (top[row, :length], values[row, :length],
                              target_checksum(target[row, :length]))
        progress.update(len(ids))
        if len(entries) == len(segments[chunk]):
            yield chunk, [entries[i] for i in sorted(entries)]
            entries = {}
    if entries:
        raise RuntimeError(f"chunk {current} is incomplete: fairseq skipped sentences")


# ------------------------------------------------------------------ merging shards


def build_merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} --merge-shards",
        description="Join the chunks of seqkd-cache-teacher shards (--num-shards/--shard-id).",
    )
    parser.add_argument("--merge-shards", nargs="+", required=True, metavar="DIR",
                        help="the shards' --output directories")
    parser.add_argument("--gen-subset", required=True, metavar="SPLIT", help="split to merge")
    parser.add_argument("--output", required=True, metavar="DIR", help="cache directory")
    return parser


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


# ------------------------------------------------------------------ entry point


def run(argv: list[str]) -> CacheSummary:
    """Build a cache, or merge shards when ``--merge-shards`` is given; raises SeqKDError."""
    if is_merge(argv):
        args = build_merge_parser().parse_args(argv)
        return merge_cache_shards(args.merge_shards, args.output, args.gen_subset)
    return build_cache_argv(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-cache-teacher``; returns the exit status."""
    return summary_main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
