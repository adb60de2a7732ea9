"""Selection without references, one sentence at a time: the targets of a monolingual split.

Monolingual source text has no reference, so whatever the strategy the teacher's best hypothesis
(rank 0) is taken, and a sentence without a usable one is dropped (there is no gold to fall back
on). The filters are :func:`~fairseq_seqkd.distill.select.select_targets`' own
(:func:`~fairseq_seqkd.distill.select.drop_reason`, :class:`~.select.WorstScored`), in the same
order and with the same report keys.

The n-best is read in index order, one sentence at a time, as seqkd-generate assembles it
(sorted by index); the sources, needed by ``--max-len-ratio`` and ``--dedup`` only, are read
alongside. Memory does not grow with the split, except one float a sentence for
``--filter-worst`` (a first pass over the scores finds the cut) and the kept pairs for
``--dedup``; the targets and their indices are written as they are chosen.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from ..atomic import atomic_open
from ..errors import SeqKDError
from ..textfiles import iter_text_lines
from .nbest import Hypothesis, NbestFormatError, parse_nbest_line
from .select import SelectionOptions, WorstScored, drop_reason

__all__ = ["iter_sorted_nbest", "select_best"]

COUNTS = ("empty", "length_ratio", "repeats", "below_min_score", "filter_worst", "duplicate",
          "missing")


def iter_sorted_nbest(path: str) -> Iterator[tuple[int, list[Hypothesis]]]:
    """``(index, hypotheses best first)`` of an n-best file sorted by index, one sentence at a
    time; an index out of order or ranks that are not ``0..k-1`` are a one-line error naming
    the file and line."""
    index, hyps, previous = -1, [], -1
    for lineno, line in enumerate(iter_text_lines(path), start=1):
        i, rank, hyp = parse_nbest_line(line, path, lineno)
        if i != index:
            if i < index:
                raise NbestFormatError(f"{path}:{lineno}: sentence index {i} after {index}; "
                                       f"the n-best must be sorted by index")
            if hyps:
                yield index, hyps
            index, hyps, previous = i, [], -1
        if rank != previous + 1:
            raise NbestFormatError(f"{path}:{lineno}: sentence index {i} has rank {rank} after "
                                   f"rank {previous}")
        hyps.append(hyp)
        previous = rank
    if hyps:
        yield index, hyps


def _best_scores(nbest_path: str) -> array:
    """The best hypothesis' score of every sentence in the n-best, in index order."""
    return array("d", (hyps[0].score for _, hyps in iter_sorted_nbest(nbest_path)))


def select_best(
    nbest_path: str, *, size: int, skipped: Collection[int], sources: Iterable[str] | None,
    options: SelectionOptions, targets_path: str, kept_path: str,
) -> dict[str, Any]:
    """Write the best hypothesis of each sentence ``0..size-1`` that passes the filters of
    ``options`` to ``targets_path`` (one a line) and its index to ``kept_path``; the report.

    Every sentence must be in the n-best or in ``skipped`` (too long for the teacher: counted as
    ``missing`` and dropped). ``sources`` (subword lines in index order) are read only when
    ``--max-len-ratio`` or ``--dedup`` needs them. Both files appear only when complete.
    """
    needs_sources = options.max_len_ratio is not None or options.dedup
    if needs_sources and sources is None:
        raise SeqKDError("--max-len-ratio and --dedup need the source sentences")
    worst = WorstScored(_best_scores(nbest_path) if options.filter_worst else [],
                        options.filter_worst)
    counts = dict.fromkeys(COUNTS, 0)
    hypotheses = kept = 0
    seen_pairs: set[tuple[str | None, str]] | None = set() if options.dedup else None
    source_lines = iter(sources) if needs_sources and sources is not None else None
    entries = iter_sorted_nbest(nbest_path)
    entry = next(entries, None)
    with atomic_open(targets_path) as targets, atomic_open(kept_path) as kept_file:
        for i in range(size):
            source = next(source_lines, None) if source_lines is not None else None
            if entry is None or entry[0] != i:  # entries are sorted and unique: entry[0] > i
                if i not in skipped:
                    raise SeqKDError(
                        f"{nbest_path} is incomplete: no hypotheses for sentence index {i}, "
                        f"which {os.path.basename(nbest_path)}.skipped does not list either")
                counts["missing"] += 1
                continue
            hyps = entry[1]
            hypotheses += len(hyps)
            entry = next(entries, None)
            best = hyps[0]
            reason = drop_reason(
                best.tokens, best.score, source, max_len_ratio=options.max_len_ratio,
                max_repeats=options.max_repeats, min_score=options.min_score,
                worst=worst(best.score), seen_pairs=seen_pairs)
            if reason is not None:
                counts[reason] += 1
                continue
            targets.write(best.tokens + "\n")
            kept_file.write(f"{i}\n")
            kept += 1
            if seen_pairs is not None:
                seen_pairs.add((source, best.tokens))
        if entry is not None:
            raise NbestFormatError(f"{nbest_path}: sentence index {entry[0]} is out of range "
                                   f"for a split of {size} sentences")
    return {"sentences": size, "hypotheses": hypotheses, "selected": kept, **counts,
            "dropped": size - kept, "kept": kept}
