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

This module is pure Python (no fairseq / torch import).
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

from ..atomic import atomic_write_text
from ..errors import SeqKDError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "Hypothesis",
    "NbestFormatError",
    "check_indices",
    "format_nbest_lines",
    "read_generate_log",
    "read_nbest",
    "write_nbest",
]

_EXPECTED = "expected 'index<TAB>rank<TAB>score<TAB>tokens'"
_UINT_RE = re.compile(r"[0-9]+")
# fairseq-generate lines we care about: H-{id}\t{score}\t{tokens}, D-{id}\t{score}\t{detok}
_GEN_SCORED_RE = re.compile(r"([HD])-")
_GEN_SCORED_LINE_RE = re.compile(r"([HD])-([0-9]+)\t([^\t]*)\t(.*)", re.DOTALL)
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


def _iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` with the end of line stripped.

    Decodes line by line so that a non-UTF-8 byte is reported with its line number.
    """
    name = os.fspath(path)
    with open(name, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise NbestFormatError(
                    f"{name}:{lineno}: invalid UTF-8 byte 0x{raw[exc.start]:02x} "
                    f"at column {exc.start + 1}"
                ) from None
            yield lineno, text


def _parse_score(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value) or text != text.strip():
        return None
    return value


def read_nbest(path: PathLike) -> dict[int, list[Hypothesis]]:
    """Read an n-best file into ``{index: [Hypothesis rank 0, rank 1, ...]}``.

    Raises :class:`NbestFormatError` (one line, naming file and line number) for a
    malformed line, a non-UTF-8 byte, a duplicate ``(index, rank)`` or ranks of an
    index that are not exactly ``0..k-1``. The result is ordered by index.
    """
    name = os.fspath(path)
    by_index: dict[int, dict[int, Hypothesis]] = {}
    first_line: dict[int, int] = {}
    for lineno, line in _iter_lines(name):
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
        index, rank = int(fields[0]), int(fields[1])
        ranks = by_index.get(index)
        if ranks is None:
            ranks = by_index[index] = {}
            first_line[index] = lineno
        if rank in ranks:
            raise NbestFormatError(
                f"{name}:{lineno}: duplicate hypothesis (index {index}, rank {rank})"
            )
        ranks[rank] = Hypothesis(tokens=fields[3], score=score)

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
) -> None:
    """Check that the n-best covers exactly the indices ``0..expected_size-1``.

    Raises :class:`NbestFormatError` naming the first out-of-range index, or (unless
    ``allow_missing``) the first index without any hypothesis.
    """
    where = f"{os.fspath(path)}: " if path is not None else ""
    bad = [i for i in nbest if not (0 <= i < expected_size)]
    if bad:
        raise NbestFormatError(
            f"{where}sentence index {min(bad)} is out of range for a split of "
            f"{expected_size} sentences (valid indices 0..{expected_size - 1}; "
            f"{len(bad)} index(es) out of range)"
        )
    if allow_missing:
        return
    present = sum(1 for i in range(expected_size) if nbest.get(i))
    if present != expected_size:
        first = next(i for i in range(expected_size) if not nbest.get(i))
        raise NbestFormatError(
            f"{where}no hypotheses for sentence index {first} "
            f"({expected_size - present} of {expected_size} sentences missing)"
        )


def read_generate_log(path: PathLike) -> dict[int, list[Hypothesis]]:
    """Parse the stdout of plain ``fairseq-generate`` into ``{index: [best, ...]}``.

    Uses the ``H-{index}\\t{score}\\t{tokens}`` lines (subword tokens); several
    ``H-`` lines of one index (``--nbest``) keep their order of appearance, which is
    best first in fairseq's output. ``S-``/``T-``/``P-``/``D-`` and any other lines
    (logging, BLEU summary, ...) are ignored, in any order; a malformed ``H-`` or
    ``D-`` line raises :class:`NbestFormatError` with its line number.
    """
    name = os.fspath(path)
    result: dict[int, list[Hypothesis]] = {}
    for lineno, line in _iter_lines(name):
        if not _GEN_SCORED_RE.match(line):
            continue
        match = _GEN_SCORED_LINE_RE.fullmatch(line)
        score = _parse_score(match.group(3)) if match else None
        if match is None or score is None:
            kind = line[0]
            raise NbestFormatError(
                f"{name}:{lineno}: expected '{kind}-<index><TAB><score><TAB>text' "
                f"from fairseq-generate, got {_shorten(line)}"
            )
        if match.group(1) != "H":
            continue
        tokens = match.group(4)
        if "\t" in tokens:
            raise NbestFormatError(
                f"{name}:{lineno}: expected 'H-<index><TAB><score><TAB>text' "
                f"from fairseq-generate, got {_shorten(line)} (tab inside tokens)"
            )
        result.setdefault(int(match.group(2)), []).append(Hypothesis(tokens, score))
    return {index: result[index] for index in sorted(result)}
