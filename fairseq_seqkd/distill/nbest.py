"""The n-best file format shared by the teacher generator and ``seqkd-select``.

Format (UTF-8 text, no header), one line per hypothesis::

    {index}\\t{rank}\\t{score}\\t{tokens}

* ``index``  - sentence index in the binarized split (int >= 0);
* ``rank``   - 0..k-1, 0 being the teacher's best hypothesis;
* ``score``  - the hypothesis' log-prob score, written as ``f"{score:.6f}"``;
* ``tokens`` - the hypothesis as space-separated subword tokens of the teacher's
  dictionary (may be the empty string).

Lines are sorted by ``(index, rank)``. :func:`format_nbest_lines` produces the
exact bytes for one sentence so that every writer emits identical files.

It also holds the one parser of stock ``fairseq-generate`` output
(:func:`read_generate_output`), which the distillation tools, ``seqkd-evaluate`` and the demo
share: every malformed ``H-``/``D-``/``T-`` line is a one-line error naming file and line.

This module is pure Python (no fairseq / torch import).
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

from ..atomic import atomic_write_text
from ..errors import SeqKDError
from ..textfiles import iter_text_lines

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "GenerateOutput",
    "Hypothesis",
    "NbestFormatError",
    "Timing",
    "check_indices",
    "format_nbest_lines",
    "parse_generate_output",
    "parse_nbest_line",
    "read_generate_log",
    "read_generate_output",
    "read_nbest",
    "write_nbest",
]

_EXPECTED = "expected 'index<TAB>rank<TAB>score<TAB>tokens'"
_UINT_RE = re.compile(r"[0-9]+")
# fairseq-generate lines we read: H-{id}\t{score}\t{tokens}, D-{id}\t{score}\t{detok},
# T-{id}\t{reference} and the final timing line
_GEN_KIND_RE = re.compile(r"([HDT])-")
_GEN_SCORED_LINE_RE = re.compile(r"([HD])-([0-9]+)\t([^\t]*)\t(.*)", re.DOTALL)
_GEN_TARGET_LINE_RE = re.compile(r"T-([0-9]+)\t(.*)", re.DOTALL)
_GEN_TRANSLATED_RE = re.compile(
    r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s "
    r"\(([\d.]+|inf|nan) sentences/s, ([\d.]+|inf|nan) tokens/s\)"
)
_FORBIDDEN_TOKEN_CHARS = ("\t", "\n", "\r")


class NbestFormatError(SeqKDError):
    """A malformed n-best file or fairseq-generate log (message is a single line)."""


@dataclass(frozen=True)
class Hypothesis:
    """One teacher hypothesis: subword tokens (space separated) and its log-prob score."""

    tokens: str
    score: float


def _shorten(text: str, limit: int = 80) -> str:
    """``repr`` of ``text`` cut to ``limit`` characters (always a single line)."""
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def format_nbest_lines(index: int, hyps: Sequence[Hypothesis]) -> str:
    """The exact text (with trailing newlines) for the n-best list of one sentence.

    ``hyps`` must be ordered best first; their position becomes the rank.
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"n-best index must be an int >= 0, got {index!r}")
    parts = []
    for rank, hyp in enumerate(hyps):
        tokens = hyp.tokens
        for ch in _FORBIDDEN_TOKEN_CHARS:
            if ch in tokens:
                raise ValueError(
                    f"hypothesis tokens for index {index} rank {rank} contain {ch!r}: "
                    f"{_shorten(tokens)}"
                )
        score = float(hyp.score)
        if math.isnan(score):
            raise ValueError(f"hypothesis score for index {index} rank {rank} is NaN")
        parts.append(f"{index}\t{rank}\t{score:.6f}\t{tokens}\n")
    return "".join(parts)


def write_nbest(path: PathLike, entries: Iterable[tuple[int, Sequence[Hypothesis]]]) -> None:
    """Atomically write an n-best file.

    ``entries`` yields ``(index, hypotheses best first)``; it may come in any order
    (it is sorted by index here). A duplicate index raises ``ValueError`` and leaves
    no file behind. An index with an empty hypothesis list writes no line.
    """
    items = sorted(entries, key=lambda entry: entry[0])
    for prev, cur in itertools.pairwise(items):
        if prev[0] == cur[0]:
            raise ValueError(f"write_nbest: duplicate sentence index {cur[0]}")
    # format everything before touching the file system: a bad entry leaves nothing
    text = [format_nbest_lines(index, hyps) for index, hyps in items]
    atomic_write_text(path, "".join(text))


def _parse_score(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value) or text != text.strip():
        return None
    return value


def parse_nbest_line(line: str, name: str, lineno: int) -> tuple[int, int, Hypothesis]:
    """``(index, rank, hypothesis)`` of one n-best line (its end of line stripped), or
    :class:`NbestFormatError` naming the file and line."""
    fields = line.split("\t", 3)
    if (
        len(fields) != 4
        or not _UINT_RE.fullmatch(fields[0])
        or not _UINT_RE.fullmatch(fields[1])
    ):
        raise NbestFormatError(f"{name}:{lineno}: {_EXPECTED}, got {_shorten(line)}")
    score = _parse_score(fields[2])
    if score is None:
        raise NbestFormatError(
            f"{name}:{lineno}: {_EXPECTED}, got {_shorten(line)} "
            f"(score {fields[2]!r} is not a number)"
        )
    if "\t" in fields[3]:
        raise NbestFormatError(
            f"{name}:{lineno}: {_EXPECTED}, got {_shorten(line)} (tab inside tokens)"
        )
    return int(fields[0]), int(fields[1]), Hypothesis(tokens=fields[3], score=score)


def read_nbest(path: PathLike) -> dict[int, list[Hypothesis]]:
    """Read an n-best file into ``{index: [Hypothesis rank 0, rank 1, ...]}``.

    Raises :class:`NbestFormatError` (one line, naming file and line number) for a
    malformed line, a duplicate ``(index, rank)`` or ranks of an index that are not exactly
    ``0..k-1``, and :class:`SeqKDError` for a non-UTF-8 byte. The result is ordered by index.
    """
    name = os.fspath(path)
    by_index: dict[int, dict[int, Hypothesis]] = {}
    first_line: dict[int, int] = {}
    for lineno, line in enumerate(iter_text_lines(name), start=1):
        index, rank, hypothesis = parse_nbest_line(line, name, lineno)
        ranks = by_index.get(index)
        if ranks is None:
            ranks = by_index[index] = {}
            first_line[index] = lineno
        if rank in ranks:
            raise NbestFormatError(
                f"{name}:{lineno}: duplicate hypothesis (index {index}, rank {rank})"
            )
        ranks[rank] = hypothesis

    result: dict[int, list[Hypothesis]] = {}
    for index in sorted(by_index):
        ranks = by_index[index]
        k = len(ranks)
        if max(ranks) != k - 1:  # ranks are distinct ints >= 0, so this checks 0..k-1
            missing = min(set(range(k)) - set(ranks))
            raise NbestFormatError(
                f"{name}:{first_line[index]}: ranks of index {index} are not contiguous "
                f"0..{k - 1}: rank {missing} is missing (found {sorted(ranks)[:10]})"
            )
        result[index] = [ranks[r] for r in range(k)]
    return result


def check_indices(
    nbest: Mapping[int, Sequence[Hypothesis]],
    expected_size: int,
    path: PathLike | None = None,
    *,
    allow_missing: bool = False,
    hint: str = "",
) -> None:
    """Check that the n-best covers exactly the indices ``0..expected_size-1``.

    Raises :class:`NbestFormatError` naming the first out-of-range index, or (unless
    ``allow_missing``) the first index without any hypothesis, followed by ``hint``.
    """
    where = f"{os.fspath(path)}: " if path is not None else ""
    bad = [i for i in nbest if not 0 <= i < expected_size]
    if bad:
        raise NbestFormatError(
            f"{where}sentence index {min(bad)} is out of range for a split of "
            f"{expected_size} sentences (valid indices 0..{expected_size - 1}; "
            f"{len(bad)} index(es) out of range)"
        )
    if allow_missing:
        return
    missing = [i for i in range(expected_size) if not nbest.get(i)]
    if missing:
        raise NbestFormatError(
            f"{where}no hypotheses for sentence index {missing[0]} "
            f"({len(missing)} of {expected_size} sentences missing){hint}"
        )


@dataclass(frozen=True)
class Timing:
    """fairseq-generate's ``Translated N sentences (M tokens) in Xs`` line."""

    sentences: int
    tokens: int
    seconds: float  # generation only (no start-up or checkpoint loading)


@dataclass
class GenerateOutput:
    """What stock ``fairseq-generate`` printed, by sentence index (ordered by index).

    ``hypotheses``: the ``H-`` lines (subword tokens), best first; ``detokenized``: the ``D-``
    lines (after ``--remove-bpe``), best first; ``targets``: the ``T-`` lines; ``timing``: the
    final timing line, ``None`` when fairseq-generate did not get that far.
    """

    hypotheses: dict[int, list[Hypothesis]] = field(default_factory=dict)
    detokenized: dict[int, list[Hypothesis]] = field(default_factory=dict)
    targets: dict[int, str] = field(default_factory=dict)
    timing: Timing | None = None


def _timing(match: re.Match[str]) -> Timing:
    sentences = int(match.group(1).replace(",", ""))
    tokens = int(match.group(2).replace(",", ""))
    # "in Xs" is rounded to 0.1 s, too coarse for a test set decoded in a second; the rates
    # carry two decimals, so the time is recovered from them
    rate = float(match.group(5)) if tokens else float(match.group(4))
    seconds = (tokens if tokens else sentences) / rate if rate > 0 else float(match.group(3))
    return Timing(sentences, tokens, seconds)


def _parse_generate(lines: Iterable[tuple[int, str]], name: str, nbest: bool) -> GenerateOutput:
    out = GenerateOutput()
    for lineno, line in lines:
        kind = _GEN_KIND_RE.match(line)
        if kind is None:
            timing = _GEN_TRANSLATED_RE.search(line)
            if timing is not None:
                out.timing = _timing(timing)
            continue
        if kind.group(1) == "T":
            target = _GEN_TARGET_LINE_RE.fullmatch(line)
            if target is None:
                raise NbestFormatError(
                    f"{name}:{lineno}: expected 'T-<index><TAB>text' from fairseq-generate, "
                    f"got {_shorten(line)}"
                )
            out.targets[int(target.group(1))] = target.group(2)
            continue
        match = _GEN_SCORED_LINE_RE.fullmatch(line)
        score = _parse_score(match.group(3)) if match else None
        if match is None or score is None:
            raise NbestFormatError(
                f"{name}:{lineno}: expected '{line[0]}-<index><TAB><score><TAB>text' "
                f"from fairseq-generate, got {_shorten(line)}"
            )
        text = match.group(4)
        if match.group(1) == "H" and "\t" in text:
            raise NbestFormatError(
                f"{name}:{lineno}: expected 'H-<index><TAB><score><TAB>text' "
                f"from fairseq-generate, got {_shorten(line)} (tab inside tokens)"
            )
        index = int(match.group(2))
        found = (out.hypotheses if match.group(1) == "H" else out.detokenized).setdefault(index, [])
        if found and not nbest:
            raise NbestFormatError(
                f"{name}:{lineno}: sentence id {index} appears twice ({match.group(1)}- lines; "
                "expected one hypothesis per sentence, fairseq-generate --nbest 1)"
            )
        found.append(Hypothesis(text, score))
    out.hypotheses = {i: out.hypotheses[i] for i in sorted(out.hypotheses)}
    out.detokenized = {i: out.detokenized[i] for i in sorted(out.detokenized)}
    out.targets = {i: out.targets[i] for i in sorted(out.targets)}
    return out


def read_generate_output(path: PathLike, *, nbest: bool = True) -> GenerateOutput:
    """Parse the output of stock ``fairseq-generate`` (stdout or ``--results-path`` file).

    ``S-``/``P-`` and any other lines (logging, BLEU summary, ...) are ignored, in any order;
    several ``H-``/``D-`` lines of one index (``--nbest``) keep their order of appearance,
    which is best first in fairseq's output. A malformed ``H-``, ``D-`` or ``T-`` line or,
    unless ``nbest``, a second hypothesis of one sentence raises :class:`NbestFormatError`
    naming the file and line; an unreadable file or a non-UTF-8 byte, :class:`SeqKDError`.
    """
    name = os.fspath(path)
    return _parse_generate(enumerate(iter_text_lines(name), start=1), name, nbest)


def parse_generate_output(text: str, name: str = "<fairseq-generate output>", *,
                          nbest: bool = True) -> GenerateOutput:
    """:func:`read_generate_output` on text already in memory; ``name`` is the file named in
    errors."""
    lines = (line[:-1] if line.endswith("\r") else line for line in text.split("\n"))
    return _parse_generate(enumerate(lines, start=1), name, nbest)


def read_generate_log(path: PathLike) -> dict[int, list[Hypothesis]]:
    """The ``H-`` lines (subword tokens) of plain ``fairseq-generate`` output as
    ``{index: [best, ...]}``; see :func:`read_generate_output`."""
    return read_generate_output(path).hypotheses
