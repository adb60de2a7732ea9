"""Joining ``seqkd-generate`` shards (``--merge-shards``): every index in exactly one shard.

Lines are copied in index order, verbatim up to their end of line, so shards decoded with the
same ``--chunk-size`` merge to the bytes of the unsharded run (see
:mod:`fairseq_seqkd.distill.generate`).
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Iterator, Sequence

from ..atomic import atomic_open, atomic_write_text
from ..errors import SeqKDError
from ..textfiles import iter_text_lines
from .chunks import check_output_path, read_skipped, skipped_path
from .generate import GenerationSummary
from .nbest import parse_nbest_line


def _shard_lines(path: str, shard: int) -> Iterator[tuple[int, int, int, int, str]]:
    """``(index, rank, shard, line number, line)`` of a shard, checking format and order."""
    prev_index, prev_rank = -1, -1
    for lineno, line in enumerate(iter_text_lines(path), start=1):
        index, rank, _ = parse_nbest_line(line, path, lineno)
        if index == prev_index:
            if rank != prev_rank + 1:
                raise SeqKDError(
                    f"{path}:{lineno}: sentence index {index} has rank {rank} after rank "
                    f"{prev_rank}"
                )
        elif index < prev_index:
            raise SeqKDError(
                f"{path}:{lineno}: sentence index {index} after {prev_index}; a shard must be "
                f"sorted by index (as seqkd-generate writes it)"
            )
        elif rank != 0:
            raise SeqKDError(f"{path}:{lineno}: sentence index {index} starts at rank {rank}")
        prev_index, prev_rank = index, rank
        yield index, rank, shard, lineno, line + "\n"


def merge_shards(paths: Sequence[str], output: str, expected_size: int) -> GenerationSummary:
    """Join shard n-best files into ``output`` (+ ``output.skipped``), checking coverage.

    Every index ``0..expected_size-1`` must be in exactly one shard or listed in exactly one
    ``SHARD.skipped`` file; lines are copied verbatim, in index order, so the result is byte
    identical to an unsharded run with the same ``--chunk-size``. Streams: memory does not grow
    with the split (only with the number of skipped sentences).
    """
    start_time = time.perf_counter()
    if not paths:
        raise SeqKDError("--merge-shards needs at least one shard file")
    if expected_size < 0:
        raise SeqKDError(f"--expected-size must be >= 0, got {expected_size}")
    if os.path.abspath(output) in {os.path.abspath(p) for p in paths}:
        raise SeqKDError(f"--output {output} is also one of the shards")
    check_output_path(output)
    skipped: dict[int, str] = {}
    for path in paths:
        spath = skipped_path(path)
        for index, lineno in read_skipped(spath):
            if index >= expected_size:
                raise SeqKDError(
                    f"{spath}:{lineno}: sentence index {index} is out of range for "
                    f"--expected-size {expected_size}"
                )
            if index in skipped:
                raise SeqKDError(
                    f"{spath}:{lineno}: sentence index {index} is also listed in {skipped[index]}"
                )
            skipped[index] = spath

    def gap_error(index: int) -> SeqKDError:
        for shard, path in enumerate(paths):  # an unsorted or malformed shard explains it better
            for _ in _shard_lines(path, shard):
                pass
        return SeqKDError(
            f"sentence index {index} is missing: it is in none of the shards "
            f"({', '.join(paths)}) nor in their .skipped files"
        )

    streams = [_shard_lines(path, shard) for shard, path in enumerate(paths)]
    next_index, prev = 0, None  # prev: (index, shard, lineno) of the last line written
    sentences = lines = 0
    with atomic_open(output) as out:
        for index, _rank, shard, lineno, line in heapq.merge(*streams):
            if prev is not None and index == prev[0]:
                if shard != prev[1]:
                    raise SeqKDError(
                        f"{paths[shard]}:{lineno}: sentence index {index} is also in "
                        f"{paths[prev[1]]} (line {prev[2]}); shards overlap"
                    )
            else:
                if index >= expected_size:
                    raise SeqKDError(
                        f"{paths[shard]}:{lineno}: sentence index {index} is out of range for "
                        f"--expected-size {expected_size}"
                    )
                if index in skipped:
                    raise SeqKDError(
                        f"{paths[shard]}:{lineno}: sentence index {index} has hypotheses but is "
                        f"listed as skipped in {skipped[index]}"
                    )
                for gap in range(next_index, index):
                    if gap not in skipped:
                        raise gap_error(gap)
                next_index = index + 1
                sentences += 1
            prev = (index, shard, lineno)
            out.write(line)
            lines += 1
        for gap in range(next_index, expected_size):
            if gap not in skipped:
                raise gap_error(gap)
        atomic_write_text(skipped_path(output), "".join(f"{i}\n" for i in sorted(skipped)))
    return GenerationSummary(
        output=output, sentences=sentences, hypotheses=lines, skipped=sorted(skipped),
        seconds=time.perf_counter() - start_time, merged_shards=len(paths),
    )
