"""Sequence-level KD data in one call: teacher n-best -> selected targets -> distilled data-bin.

:func:`build_distilled_data` is ``seqkd-build``: a build is its stages
(:mod:`fairseq_seqkd.distill.build_stages`: generate, select, binarize) run over the one stage
engine (:mod:`fairseq_seqkd.distill.stage_records`), each recorded in ``OUT_DIR/seqkd/<stage>/``.

A stage is skipped when its record holds the same key (its options, the content of every file
it reads - the teacher checkpoints, the data-bin's files, the outputs of the stage before - and
the package version) and its outputs still have the recorded content; otherwise it is redone,
and with it every stage whose inputs change, each saying why. A killed build resumes: the
decoding from its committed chunks, any other stage from scratch. With ``fallback="gold"``
(the default) the train split stays aligned by index with the gold one, so ``OUT_DIR`` also
serves as ``--distilled-data``; with ``fallback="drop"`` only the kept sentences are written,
their gold indices listed in ``<split>.kept-indices``, and such data is refused as
``--distilled-data``. A sentence without any hypothesis (too long for the teacher) is an error
unless ``allow_missing``.

Bad input raises :class:`~fairseq_seqkd.errors.SeqKDError` (one line) before anything is written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import SeqKDError
from .build_options import BuildOptions
from .build_stages import binarize_stage, generate_stage, select_stage
from .databin import DataBin, teacher_paths
from .stage_records import WORK_DIR, Log, run_stages

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

    def describe(self) -> str:
        """The final line."""
        also = f"; or --distilled-data {self.output}" if self.fallback == "gold" else ""
        state = "ready" if self.ran else "up to date, nothing redone"
        return (f"distilled data-bin {state}: {os.path.abspath(self.output)} "
                f"(fairseq-train {self.output}{also})")


def build_distilled_data(
    data: str, teacher: str, output: str, strategy: str, *, log: Log | None = None,
    warn: Log | None = None, **options: Any,
) -> BuildSummary:
    """Build (or resume, or bring up to date) the distilled data-bin ``output``.

    ``options`` are the other fields of :class:`BuildOptions` (``beam=5, sim="bleu", ...``);
    ``log`` receives one progress message at a time (default: this module's logger), ``warn``
    the warnings about the data (default: the logger's warnings). Raises :class:`SeqKDError`
    for bad input, before anything is written.
    """
    say: Log = log or logger.info
    opts = BuildOptions(data=data, teacher=teacher, output=output, strategy=strategy, **options)
    opts.check(say)
    bin_ = DataBin(opts.data, opts.split)
    teachers = teacher_paths(opts.teacher)
    out = os.path.abspath(opts.output)
    if os.path.exists(out) and not os.path.isdir(out):
        raise SeqKDError(f"--output: {opts.output} exists and is not a directory")
    if os.path.isdir(out) and os.path.samefile(out, bin_.dir):
        raise SeqKDError("--output must differ from --data (it would overwrite the gold split)")
    run = run_stages(out, [
        generate_stage(opts, bin_, teachers, say),
        select_stage(opts, bin_, out, say, warn or logger.warning),
        binarize_stage(opts, bin_, out, say),
    ], say)
    return BuildSummary(output=opts.output, fallback=opts.fallback, ran=run.ran,
                        **{name: run.summaries[name] for name in ("generate", "select",
                                                                  "binarize")})
