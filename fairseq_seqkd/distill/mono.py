"""Monolingual source text for the teacher: read, segment, filter and binarize it, streaming.

:func:`prepare_mono` turns ``--mono-source`` files into a source-only split that
``seqkd-generate`` decodes like any other. fairseq's ``load_langpair_dataset`` loads a split
whose target side is missing (the target dataset is None, as ``fairseq-interactive``'s input
is), so only ``<split>.<src>-<tgt>.<src>.bin/.idx`` is written, beside copies of both
dictionaries (the translation task loads both). Nothing is held in memory: the files are read
one line at a time and every kept line is written as it comes, so a 10M-line file costs time,
not memory.

Line by line, in the order of the files:

* the line must be UTF-8 (else a one-line error naming file and line);
* raw text is segmented with ``--spm-model`` (sentencepiece pieces, as the demo's and the
  benchmark's data are); without it the line is taken as already segmented into the teacher's
  dictionary (split on whitespace, as ``fairseq-preprocess`` does);
* a line with no token is skipped and counted as empty;
* a line with more tokens than the teacher's maximum source positions less one (the EOS) is
  **skipped** and counted as too long: cut, it would pair the start of a sentence with the
  teacher's translation of that fragment, and ``seqkd-generate`` skips such lines too;
* a kept line with more than half its tokens unknown to the dictionary is counted; one warning
  after the whole input gives the count and the first such line (the wrong ``--spm-model`` is
  the usual cause);
* ``--mono-size N`` stops after the N-th kept line; nothing after it is read.

Provenance: ``<split>.provenance.tsv`` has a header ``file<TAB>line`` and one row per sentence
of the split: the 0-based position of its ``--mono-source`` file and its 1-based line number.
``<split>.sources.json`` (:meth:`MonoSummary.record`) lists the files in that order, each with
its sha256 and its counts (lines read, kept, empty, too long, unk-heavy).

:func:`write_combined_split` writes the distilled data-bin's split: the parallel pairs first,
then the monolingual ones, in one split (fairseq's translation task concatenates ``train``,
``train1``, ... only with ``--upsample-primary 1``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from fairseq.data import ConcatDataset, Dictionary
from fairseq.tokenizer import tokenize_line

from ..atomic import atomic_open, atomic_write_text
from ..digests import file_sha256
from ..errors import SeqKDError
from ..spm import open_spm
from ..teacher import load_dictionary
from ..textfiles import iter_text_lines
from .binarize import binarize_lines, copy_file, write_subset

__all__ = [
    "MonoLine",
    "MonoReader",
    "MonoSummary",
    "PairsPart",
    "Segmenter",
    "SourceStats",
    "UnkLines",
    "prepare_mono",
    "read_provenance",
    "teacher_max_source_positions",
    "write_combined_split",
]

logger = logging.getLogger(__name__)

Log = Callable[[str], None]

PROVENANCE_SUFFIX = ".provenance.tsv"
SOURCES_SUFFIX = ".sources.json"
PROVENANCE_HEADER = "file\tline\n"
DEFAULT_MAX_SOURCE_POSITIONS = 1024  # fairseq's translation task, as seqkd-generate sets it up


# ------------------------------------------------------------------------------ segmentation


class Segmenter:
    """Raw text -> the tokens the dictionary looks up: sentencepiece pieces with a model, the
    whitespace-separated words without one. Tokens are split as ``Dictionary.encode_line``
    splits a line, so what is counted here is what is binarized."""

    def __init__(self, spm_model: str | None = None, option: str = "--spm-model"):
        self.spm_model = spm_model
        self._spm = None
        if spm_model is None:
            return
        self._spm = open_spm(spm_model, option)

    def __call__(self, line: str) -> list[str]:
        if self._spm is None:
            return tokenize_line(line)
        return tokenize_line(" ".join(self._spm.encode(line, out_type=str)))

    def record(self) -> dict[str, Any]:
        """What segmented the text, for a build record."""
        if self.spm_model is None:
            return {"spm_model": None}
        return {"spm_model": os.path.abspath(self.spm_model),
                "spm_sha256": file_sha256(self.spm_model)}


class UnkLines:
    """Lines with more than half their tokens ``<unk>``: counted, the first remembered, and
    warned about once, after the whole input."""

    def __init__(self, dictionary: Dictionary, what: str, segmenter: Segmenter):
        self.dictionary = dictionary
        self.what = what
        self.spm_model = segmenter.spm_model
        self.count = 0
        self.lines = 0
        self.first: str | None = None

    def check(self, tokens: Sequence[str], where: str) -> bool:
        """Count a line; whether more than half its tokens are unknown."""
        self.lines += 1
        unk = self.dictionary.unk()
        unknown = sum(1 for t in tokens if self.dictionary.index(t) == unk)
        if 2 * unknown <= len(tokens):
            return False
        self.count += 1
        if self.first is None:
            self.first = where
        return True

    def warning(self) -> str | None:
        """The one warning line (for a warning channel: no "warning:" in it), or None when no
        line is unk-heavy."""
        if not self.count:
            return None
        cause = (f"is --spm-model {self.spm_model} the model the teacher's data was segmented "
                 f"with?" if self.spm_model else
                 "without --spm-model the lines must already be segmented into the teacher's "
                 "dictionary; raw text needs --spm-model")
        return (f"{self.count} of {self.lines} {self.what} lines have more than half "
                f"their tokens <unk> after segmentation (first: {self.first}); {cause}")


# ------------------------------------------------------------------------------ reading


@dataclass
class SourceStats:
    """One ``--mono-source`` file: what was read of it and what became of its lines."""

    path: str
    sha256: str
    read: int = 0  # lines read (all of them, unless --mono-size stopped earlier)
    kept: int = 0
    empty: int = 0
    too_long: int = 0  # skipped: more tokens than the teacher's max source positions - 1
    unk_heavy: int = 0  # kept lines with more than half their tokens <unk>


@dataclass(frozen=True)
class MonoLine:
    """A kept line: its file (position in the sources), 1-based line number and tokens."""

    file: int
    line: int
    tokens: list[str]


class MonoReader:
    """The kept lines of ``sources``, read lazily: iterating reads one line at a time, and
    stops reading once ``size`` lines are kept. Counts go to :attr:`stats` as lines are read.
    Iterate once."""

    def __init__(
        self, sources: Sequence[str], dictionary: Dictionary, *, max_source_positions: int,
        size: int | None = None, segmenter: Segmenter | None = None,
    ):
        if not sources:
            raise SeqKDError("--mono-source: no file given")
        for path in sources:
            if not os.path.isfile(path):
                raise SeqKDError(f"--mono-source: {path} does not exist")
        if size is not None and (isinstance(size, bool) or size < 1):
            raise SeqKDError(f"--mono-size must be >= 1, got {size}")
        if max_source_positions < 2:
            raise SeqKDError(f"max source positions must be >= 2, got {max_source_positions}")
        self.sources = list(sources)
        self.max_tokens = max_source_positions - 1  # the EOS takes a position
        self.size = size
        self.segmenter = segmenter or Segmenter()
        self.unk = UnkLines(dictionary, "--mono-source", self.segmenter)
        self.stats = [SourceStats(path, file_sha256(path)) for path in self.sources]
        self.kept = 0

    def __iter__(self) -> Iterator[MonoLine]:
        for number, (path, stats) in enumerate(zip(self.sources, self.stats)):
            if self.size is not None and self.kept >= self.size:
                return
            lines = iter_text_lines(path)
            try:
                for lineno, line in enumerate(lines, start=1):
                    stats.read += 1
                    tokens = self.segmenter(line)
                    if not tokens:
                        stats.empty += 1
                        continue
                    if len(tokens) > self.max_tokens:
                        stats.too_long += 1
                        continue
                    stats.kept += 1
                    self.kept += 1
                    if self.unk.check(tokens, f"{path}:{lineno}"):
                        stats.unk_heavy += 1
                    yield MonoLine(number, lineno, tokens)
                    if self.size is not None and self.kept >= self.size:
                        return
            finally:
                lines.close()


def teacher_max_source_positions(states: Iterable[Mapping[str, Any]]) -> int:
    """The longest source (EOS included) every teacher takes, as ``seqkd-generate`` resolves it:
    the translation task's limit (1024) and each checkpoint's ``max_source_positions``."""
    limit = DEFAULT_MAX_SOURCE_POSITIONS
    for state in states:
        model = (state.get("cfg") or {}).get("model")
        value = (model.get("max_source_positions") if isinstance(model, Mapping)
                 else getattr(model, "max_source_positions", None))
        if value:
            limit = min(limit, int(value))
    return limit


# ------------------------------------------------------------------------------ the split


@dataclass
class MonoSummary:
    """What :func:`prepare_mono` wrote, and the record of it (``<split>.sources.json``)."""

    directory: str
    split: str
    langs: tuple[str, str]
    sentences: int
    max_source_positions: int
    size: int | None
    segmentation: dict[str, Any]
    sources: list[SourceStats] = field(default_factory=list)
    unk_heavy: int = 0
    first_unk_heavy: str | None = None

    @property
    def prefix(self) -> str:
        """``directory/<split>.<src>-<tgt>.<src>``: the binarized source (``.bin``/``.idx``)."""
        src, tgt = self.langs
        return os.path.join(self.directory, f"{self.split}.{src}-{tgt}.{src}")

    @property
    def provenance(self) -> str:
        return os.path.join(self.directory, self.split + PROVENANCE_SUFFIX)

    @property
    def record_path(self) -> str:
        return os.path.join(self.directory, self.split + SOURCES_SUFFIX)

    def totals(self) -> dict[str, int]:
        keys = ("read", "kept", "empty", "too_long", "unk_heavy")
        return {k: sum(getattr(s, k) for s in self.sources) for k in keys}

    def record(self) -> dict[str, Any]:
        """The JSON record: counts and hashes per source file, and how lines were treated."""
        return {
            "sentences": self.sentences, "split": self.split, "size": self.size,
            "max_source_positions": self.max_source_positions, "too_long": "skipped",
            **self.segmentation, "totals": self.totals(),
            "first_unk_heavy": self.first_unk_heavy,
            "sources": [asdict(s) for s in self.sources],
        }

    def describe(self) -> str:
        t = self.totals()
        return (f"monolingual source: {self.sentences} lines kept of {t['read']} read from "
                f"{len(self.sources)} file(s) ({t['empty']} empty, {t['too_long']} longer than "
                f"{self.max_source_positions - 1} tokens skipped, {t['unk_heavy']} unk-heavy) "
                f"-> {self.prefix}.bin")


def prepare_mono(
    sources: Sequence[str], data: str, directory: str, *, langs: tuple[str, str],
    max_source_positions: int, size: int | None = None, spm_model: str | None = None,
    split: str = "mono", log: Log | None = None,
) -> MonoSummary:
    """Write the kept lines of ``sources`` as a source-only split that the teacher decodes with
    ``seqkd-generate directory --gen-subset split``.

    ``data`` is the gold data-bin, whose ``dict.<lang>.txt`` (``langs`` = (source, target)) are
    copied into ``directory`` and encode the text. Every file is written under a temporary name
    and renamed when complete; a bad line raises :class:`SeqKDError` naming its file and line,
    and leaves the previous files in place. The unk warning goes to ``log``.
    """
    say: Log = log or logger.warning
    src, tgt = langs
    dict_files = [os.path.join(data, f"dict.{lang}.txt") for lang in (src, tgt)]
    for path in dict_files:
        if not os.path.isfile(path):
            raise SeqKDError(f"--data: {path} not found")
    src_dict = load_dictionary(dict_files[0], "--data")
    segmenter = Segmenter(spm_model)
    reader = MonoReader(sources, src_dict, max_source_positions=max_source_positions,
                        size=size, segmenter=segmenter)
    os.makedirs(directory, exist_ok=True)
    if os.path.samefile(directory, data):
        raise SeqKDError("the monolingual split's directory must differ from --data")
    summary = MonoSummary(
        directory=directory, split=split, langs=(src, tgt), sentences=0,
        max_source_positions=max_source_positions, size=size,
        segmentation=segmenter.record(), sources=reader.stats,
    )

    def kept_lines(provenance: Any) -> Iterator[str]:
        for item in reader:
            provenance.write(f"{item.file}\t{item.line}\n")
            yield " ".join(item.tokens)
        if not reader.kept:
            t = summary.totals()
            raise SeqKDError(
                f"--mono-source: no usable line in {', '.join(sources)} ({t['read']} read: "
                f"{t['empty']} empty, {t['too_long']} longer than {reader.max_tokens} tokens)"
            )

    with atomic_open(summary.provenance) as provenance:
        provenance.write(PROVENANCE_HEADER)
        written = binarize_lines(kept_lines(provenance), src_dict, summary.prefix)
    for path in dict_files:
        copy_file(path, os.path.join(directory, os.path.basename(path)))
    summary.sentences = written.sentences
    summary.unk_heavy, summary.first_unk_heavy = reader.unk.count, reader.unk.first
    atomic_write_text(summary.record_path,
                      json.dumps(summary.record(), indent=1, sort_keys=True) + "\n")
    warning = reader.unk.warning()
    if warning:
        say(warning)
    return summary


def read_provenance(path: str) -> Iterator[tuple[int, int]]:
    """``(file, line)`` of every sentence of a split written by :func:`prepare_mono`, lazily."""
    lines = iter_text_lines(path)
    try:
        header = next(lines, None)
        if header is None or header + "\n" != PROVENANCE_HEADER:
            raise SeqKDError(f"{path}: not a provenance file (no '{PROVENANCE_HEADER.strip()}' "
                             f"header); delete it and rerun")
        for lineno, row in enumerate(lines, start=2):
            fields = row.split("\t")
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                raise SeqKDError(f"{path}:{lineno}: expected 'file<TAB>line', got {row[:60]!r}; "
                                 f"delete it and rerun")
            yield int(fields[0]), int(fields[1])
    finally:
        lines.close()


# ------------------------------------------------------------------------------ the output


@dataclass
class PairsPart:
    """One part of a distilled split: a binarized source, the indices kept from it (ascending;
    a numpy array keeps a long list compact) and their targets (subword lines, one per kept
    index, in order; an iterator is read as it is written)."""

    source: Any  # a fairseq indexed dataset
    kept: Sequence[int]
    targets: Iterable[str]


def _counted(part: PairsPart, what: str) -> Iterator[str]:
    count = 0
    for target in part.targets:
        count += 1
        yield target
    if count != len(part.kept):
        raise SeqKDError(f"{what}: {count} targets for {len(part.kept)} kept sentences")


def write_combined_split(
    prefix: str, langs: tuple[str, str], dicts: tuple[Dictionary, Dictionary],
    parallel: PairsPart, mono: PairsPart, *, mono_provenance: str | None = None,
) -> dict[str, Any]:
    """Write ``prefix<src>.bin/.idx`` and ``prefix<tgt>.bin/.idx`` (``prefix`` such as
    ``OUT/train.src-tgt.``): the parallel part's pairs, then the monolingual part's.

    With ``mono_provenance`` (:func:`prepare_mono`'s file), ``prefix`` without its language
    pair gets ``.provenance.tsv``: one row per sentence, ``parallel<TAB>i`` (``i`` the
    sentence's 0-based index in the gold split) or ``file<TAB>line`` as in the mono one.
    Every file goes through a temporary name; the targets are written last.
    """
    src, tgt = langs
    src_dict, tgt_dict = dicts
    indices = np.concatenate([np.asarray(parallel.kept, dtype=np.int64),
                              len(parallel.source) + np.asarray(mono.kept, dtype=np.int64)])
    write_subset(ConcatDataset([parallel.source, mono.source]), indices, len(src_dict),
                 prefix + src)
    if mono_provenance is not None:
        split = os.path.basename(prefix).split(".")[0]
        out = os.path.join(os.path.dirname(prefix), split + PROVENANCE_SUFFIX)
        with atomic_open(out) as handle:
            handle.write("origin\tline\n")
            handle.writelines(f"parallel\t{i}\n" for i in parallel.kept)
            wanted = iter(mono.kept)
            want = next(wanted, None)
            for index, (file, line) in enumerate(read_provenance(mono_provenance)):
                if index == want:
                    handle.write(f"{file}\t{line}\n")
                    want = next(wanted, None)
            if want is not None:
                raise SeqKDError(f"{mono_provenance} has no row for sentence {want}")
    stats = binarize_lines(
        itertools.chain(_counted(parallel, "parallel part"), _counted(mono, "monolingual part")),
        tgt_dict, prefix + tgt,
    )
    return {"parallel": len(parallel.kept), "mono": len(mono.kept),
            "sentences": stats.sentences, "target_tokens": stats.tokens,
            "unknown_tokens": stats.unknown, "first_unknown": stats.first_unknown}
