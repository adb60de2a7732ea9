"""Translations made by another system (OPUS-MT, NLLB, an LLM) as distillation targets.

No teacher runs. A translations file holds one raw translation per line of its source:

* ``--translations FILE``: one per sentence of the split being distilled, in order;
* ``--mono-translations FILE`` (one per ``--mono-source`` file, in the same order): one per
  **input line** of that source file, empty lines and lines skipped as too long included,
  which is what an external system's output has. Lines the monolingual reader skipped skip
  their translation too (the split's provenance says which lines were kept); the file is read
  only as far as its last kept line (``--mono-size`` may stop before its end).

A file whose line count differs from its source's is a one-line error naming both files and
both counts, before anything is written. Each translation is segmented with ``--spm-model``
(or taken as already segmented) and written as the only hypothesis of its sentence in an
n-best file (:mod:`.nbest` format) with the score :data:`NO_SCORE`, so selection
(``seq-kd``: the one hypothesis; empty ones, ``--max-len-ratio``, ``--max-repeats``,
``--dedup``) and binarization with the data-bin's target dictionary run unchanged.
:func:`check_translation_options` refuses what needs the teacher's scores or n-best.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fairseq.data import Dictionary

from ..atomic import atomic_open
from ..digests import file_sha256
from ..errors import SeqKDError
from ..textfiles import iter_text_lines
from .mono import Segmenter, UnkLines, read_provenance
from .nbest import Hypothesis, format_nbest_lines

__all__ = [
    "NO_SCORE",
    "TranslationSummary",
    "check_count",
    "check_mono_counts",
    "check_translation_options",
    "count_lines",
    "mono_translations",
    "parallel_translations",
]

logger = logging.getLogger(__name__)

Log = Callable[[str], None]

#: the score column of a translations n-best: there is no teacher score (selection refuses
#: --min-score and --filter-worst on an n-best whose scores are all 0)
NO_SCORE = 0.0


def check_translation_options(
    *, strategy: str, nbest: int | None = None, filter_worst: float = 0.0,
    min_score: float | None = None, option: str = "--translations",
) -> None:
    """Refuse, in one line, the build options that need the teacher's scores or n-best."""
    why = f"{option} gives one translation per sentence from another system, with no score"
    if filter_worst:
        raise SeqKDError(f"--filter-worst drops the sentences the teacher scores worst, but "
                         f"{why}; leave --filter-worst out")
    if min_score is not None:
        raise SeqKDError(f"--min-score drops hypotheses the teacher scores low, but {why}; "
                         f"leave --min-score out")
    if strategy == "seq-inter":
        raise SeqKDError(f"--strategy seq-inter picks among the teacher's n-best hypotheses, "
                         f"but {why}; use --strategy seq-kd")
    if nbest is not None and nbest != 1:
        raise SeqKDError(f"--nbest {nbest} asks for the teacher's n-best, but {why}; "
                         f"leave --nbest out")


def count_lines(path: str) -> int:
    """Lines of a text file as :func:`fairseq_seqkd.textfiles.iter_text_lines` counts them
    (a last line without a newline counts), without decoding them."""
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


@dataclass
class TranslationSummary:
    """What :func:`parallel_translations` or :func:`mono_translations` wrote."""

    output: str  # the n-best file
    sentences: int = 0  # n-best entries (one hypothesis each)
    empty: int = 0  # translations with no token (selection drops them)
    unk_heavy: int = 0
    first_unk_heavy: str | None = None
    segmentation: dict[str, Any] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)  # path, sha256, lines

    def record(self) -> dict[str, Any]:
        return {"sentences": self.sentences, "empty": self.empty, "unk_heavy": self.unk_heavy,
                "first_unk_heavy": self.first_unk_heavy, **self.segmentation,
                "files": self.files}

    def describe(self) -> str:
        return (f"translations: {self.sentences} sentences from "
                f"{', '.join(f['path'] for f in self.files)} ({self.empty} empty) "
                f"-> {self.output}")


def check_count(option: str, path: str, source: str, expected: int, unit: str) -> int:
    """The line count of the translations file ``path``, which must be ``expected`` (the
    ``unit`` s of ``source``); else a one-line error naming both files and both counts."""
    if not os.path.isfile(path):
        raise SeqKDError(f"{option}: {path} does not exist")
    lines = count_lines(path)
    if lines != expected:
        raise SeqKDError(f"{option} {path} has {lines} lines, but {source} has {expected} "
                         f"{unit}; give one translation per source {unit[:-1]}, in order")
    return lines


def _write_nbest(
    files: Sequence[str], picks: Iterable[tuple[int, int]], output: str, option: str,
    dictionary: Dictionary, spm_model: str | None, log: Log | None,
) -> TranslationSummary:
    """The n-best of the ``picks`` (file position, 1-based line; ascending), entry ``k`` for
    the ``k``-th pick, each file read once and only as far as its last pick."""
    segmenter = Segmenter(spm_model)
    summary = TranslationSummary(output=output, segmentation=segmenter.record())
    unk = UnkLines(dictionary, option, segmenter)
    index, previous = 0, -1
    with atomic_open(output) as out:
        for number, group in itertools.groupby(picks, key=lambda pick: pick[0]):
            if number <= previous:
                raise SeqKDError(f"{option}: the provenance of sentence {index} goes back to "
                                 f"an earlier file; delete the monolingual split and rerun")
            previous, path = number, files[number]
            with contextlib.closing(iter_text_lines(path)) as lines:
                at, text = 0, None
                for _, lineno in group:
                    if lineno <= at:
                        raise SeqKDError(f"{option}: line {lineno} of {path} is used twice or "
                                         f"out of order; delete the monolingual split and rerun")
                    while at < lineno:
                        text = next(lines, None)
                        at += 1
                    if text is None:
                        raise SeqKDError(f"{option} {path} has no line {lineno}")
                    tokens = segmenter(text)
                    summary.empty += not tokens
                    if tokens:
                        unk.check(tokens, f"{path}:{lineno}")
                    out.write(format_nbest_lines(index, [Hypothesis(" ".join(tokens), NO_SCORE)]))
                    index += 1
    summary.sentences = index
    summary.unk_heavy, summary.first_unk_heavy = unk.count, unk.first
    warning = unk.warning()
    if warning:
        (log or logger.warning)(warning)
    return summary


def parallel_translations(
    path: str, output: str, *, sentences: int, source: str, dictionary: Dictionary,
    spm_model: str | None = None, log: Log | None = None,
) -> TranslationSummary:
    """``--translations``: the n-best ``output`` with one translation per sentence ``0..N-1``
    of the split (``sentences`` = N; ``source`` names the split in the count error).

    ``dictionary`` (the data-bin's target dictionary) finds the translations with more than
    half their tokens unknown, for one warning through ``log``.
    """
    check_count("--translations", path, source, sentences, "sentences")
    summary = _write_nbest([path], ((0, i + 1) for i in range(sentences)), output,
                           "--translations", dictionary, spm_model, log)
    summary.files = [{"path": path, "sha256": file_sha256(path), "lines": sentences}]
    return summary


def check_mono_counts(paths: Sequence[str], sources: Sequence[str]) -> list[int]:
    """One ``--mono-translations`` file per ``--mono-source`` file, each with as many lines as
    its source; their line counts."""
    if len(paths) != len(sources):
        raise SeqKDError(
            f"--mono-translations is given {len(paths)} time(s) and --mono-source "
            f"{len(sources)}; give one translations file per source file, in the same order"
        )
    for source in sources:
        if not os.path.isfile(source):
            raise SeqKDError(f"--mono-source: {source} does not exist")
    return [check_count("--mono-translations", path, source, count_lines(source), "lines")
            for path, source in zip(paths, sources, strict=True)]


def mono_translations(
    paths: Sequence[str], sources: Sequence[str], provenance: str, output: str, *,
    dictionary: Dictionary, spm_model: str | None = None, log: Log | None = None,
) -> TranslationSummary:
    """``--mono-translations``: the n-best ``output`` of the monolingual split whose
    ``provenance`` :func:`fairseq_seqkd.distill.mono.prepare_mono` wrote; ``paths[j]`` holds
    one translation per input line of ``sources[j]``."""
    counts = check_mono_counts(paths, sources)
    summary = _write_nbest(paths, read_provenance(provenance), output, "--mono-translations",
                           dictionary, spm_model, log)
    summary.files = [{"path": p, "sha256": file_sha256(p), "lines": n}
                     for p, n in zip(paths, counts)]
    return summary
