"""Sequence-level KD data in one call: teacher n-best -> selected targets -> distilled data-bin.

:func:`build_distilled_data` is ``seqkd-build``: a build is its stages
(:mod:`fairseq_seqkd.distill.build_stages`: mono, generate, generate-mono, select, binarize) run
over the one stage engine (:mod:`fairseq_seqkd.distill.stage_records`), each recorded in
``OUT_DIR/seqkd/<stage>/``.

A stage is skipped when its record holds the same key (its options, the content of every file
it reads - the teacher's files, the data-bin's files, the monolingual text and translations, the
outputs of the stage before - and the package version) and its outputs still have the recorded
content; otherwise it is redone, and with it every stage whose inputs change, each saying why. A
killed build resumes: the decodings from their committed chunks, any other stage from scratch.
With ``fallback="gold"`` (the default) the train split stays aligned by index with the gold one,
so ``OUT_DIR`` also serves as ``--distilled-data`` (not with monolingual text, whose pairs
follow the gold ones); with ``fallback="drop"`` only the kept sentences are written, their gold
indices listed in ``<split>.kept-indices``, and such data is refused as ``--distilled-data``. A
sentence without any hypothesis (too long for the teacher) is an error unless
``allow_missing``.

The teacher is a fairseq checkpoint (an ensemble: several joined by ':') or a CTranslate2 model
directory (:mod:`.build_teacher`); with ``translations`` no teacher runs and another system's
translations are the targets (:mod:`.translations`). ``mono_source`` files add the teacher's
translations of monolingual source text after the parallel pairs, in the same split
(:mod:`.mono`), with ``<split>.provenance.tsv`` beside it.

Bad input raises :class:`~fairseq_seqkd.errors.SeqKDError` (one line) before anything is written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import SeqKDError
from .build_options import BuildOptions
from .build_stages import Build, build_stages
from .build_teacher import BuildTeacher
from .databin import DataBin
from .stage_records import WORK_DIR, Log, run_stages
from .translations import check_count, check_mono_counts

__all__ = ["WORK_DIR", "BuildSummary", "build_distilled_data"]

logger = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    """What :func:`build_distilled_data` did: each stage's recorded summary, and which ran."""

    output: str  # the data-bin, as given
    fallback: str
    generate: dict[str, Any] = field(default_factory=dict)
    select: dict[str, Any] = field(default_factory=dict)  # the selection report
    binarize: dict[str, Any] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)  # stages run by this call (others: skipped)
    # with --mono-source: the text's record (counts and sha256 per file) and its decoding
    mono: dict[str, Any] = field(default_factory=dict)
    generate_mono: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The final line."""
        aligned = self.fallback == "gold" and not self.mono
        also = f"; or --distilled-data {self.output}" if aligned else ""
        state = "ready" if self.ran else "up to date, nothing redone"
        pairs = (f"{self.binarize.get('parallel')} parallel + {self.binarize.get('mono')} "
                 f"monolingual pairs; " if self.mono else "")
        return (f"distilled data-bin {state}: {os.path.abspath(self.output)} "
                f"({pairs}fairseq-train {self.output}{also})")


def build_distilled_data(
    data: str, teacher: str | None, output: str, strategy: str, *, log: Log | None = None,
    warn: Log | None = None, **options: Any,
) -> BuildSummary:
    """Build (or resume, or bring up to date) the distilled data-bin ``output``.

    ``teacher`` is a checkpoint (several joined by ':'), a CTranslate2 model directory, or None
    with ``translations=``. ``options`` are the other fields of :class:`BuildOptions` (``beam=5,
    sim="bleu", mono_source=["mono.en"], ...``); ``log`` receives one progress message at a time
    (default: this module's logger), ``warn`` the warnings about the data (default: the
    logger's warnings). Raises :class:`SeqKDError` for bad input, before anything is written.
    """
    say: Log = log or logger.info
    opts = BuildOptions(data=data, teacher=teacher, output=output, strategy=strategy, **options)
    opts.check(say)
    bin_ = DataBin(opts.data, opts.split)
    build_teacher = BuildTeacher(opts) if opts.teacher is not None else None
    out = os.path.abspath(opts.output)
    if os.path.exists(out) and not os.path.isdir(out):
        raise SeqKDError(f"--output: {opts.output} exists and is not a directory")
    if os.path.isdir(out) and os.path.samefile(out, bin_.dir):
        raise SeqKDError("--output must differ from --data (it would overwrite the gold split)")
    build = Build(opts, bin_, build_teacher, out, say, warn or logger.warning)
    if opts.translations is not None:  # cheap, and wrong counts are found before any work
        check_count("--translations", opts.translations, build.parallel_source(),
                    len(bin_.load(bin_.tgt)), "sentences")
        if opts.mono:
            check_mono_counts(opts.mono_translations, opts.mono_source)
    run = run_stages(out, build_stages(build), say)
    summaries = {name.replace("-", "_"): summary for name, summary in run.summaries.items()}
    return BuildSummary(output=opts.output, fallback=opts.fallback, ran=run.ran, **summaries)
