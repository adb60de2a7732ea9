"""Sequence-level KD data in one call: teacher n-best -> selected targets -> distilled data-bin.

:func:`build_distilled_data` is ``seqkd-build``: a build is its stages
(:mod:`fairseq_seqkd.distill.build_stages`: mono, generate, generate-mono, select, binarize) run
in order by the one stage engine (:mod:`fairseq_seqkd.stages`), each stamped in
``OUT_DIR/seqkd/<stage>/`` (``done.json``; ``started.json`` while it runs) and said on one line.

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
from pathlib import Path
from typing import Any

from .. import version
from ..errors import SeqKDError
from ..stages import StageRun, StageRunner
from .build_options import BuildOptions
from .build_stages import WORK_DIR, Build, BuildStage, Log, build_stages
from .build_teacher import BuildTeacher
from .databin import DataBin
from .translations import check_count, check_mono_counts

__all__ = ["WORK_DIR", "BuildSummary", "build_distilled_data"]

logger = logging.getLogger(__name__)


class BuildRunner(StageRunner):
    """The stage engine as seqkd-build runs it: each stage's stamps in its folder, no logs (its
    step says what it does), and a line a stage to ``say``: skipped, running (why), done."""

    resuming = "resuming an unfinished run"

    def __init__(self, out: str, say: Log):
        super().__init__(out, version=version.__version__)
        self._say = say

    def say(self, message: str) -> None:
        self._say(message)

    def stamp_path(self, name: str, started: bool = False) -> Path:
        return self.out / WORK_DIR / name / ("started.json" if started else "done.json")

    def log_path(self, name: str) -> None:
        return None

    def tag(self, stage: BuildStage, index: int, total: int) -> str:
        return f"[{index}/{total}] {stage.name}:"

    def say_skipped(self, tag: str, stage: BuildStage, key: dict[str, Any],
                    record: dict[str, Any]) -> None:
        self.say(f"{tag} skipped, up to date ({self.stamp_path(stage.name)}): "
                 f"{stage.show(record['summary'])}")

    def say_started(self, tag: str, stage: BuildStage, why: str, log_path: None) -> None:
        self.say(f"{tag} running ({why})" + (f": {stage.description}" if stage.description
                                             else ""))

    def say_done(self, tag: str, stage: BuildStage, run: StageRun) -> None:
        self.say(f"{tag} done: {stage.show(run.summary)}")

    def say_nothing_to_do(self) -> None:
        """Nothing: the build's last line says it is up to date."""


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
    runs = BuildRunner(out, say).run(build_stages(build))
    return BuildSummary(output=opts.output, fallback=opts.fallback,
                        ran=[run.name for run in runs if not run.skipped],
                        **{run.name.replace("-", "_"): run.summary for run in runs})
