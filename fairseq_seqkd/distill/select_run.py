"""One selection run, as ``seqkd-select`` and ``seqkd-build`` do it: the checks, the targets, the
JSON report, and what is said about sentences the n-best lacks.

:func:`run_selection` is the run on an n-best in memory (the build reads the split from its
data-bin); :func:`select_files` is ``seqkd-select``: the n-best (or a ``fairseq-generate`` log)
and the text files in, the targets, their sources and the report out, written atomically.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..atomic import atomic_write_all
from ..errors import SeqKDError
from ..textfiles import read_text_lines
from .nbest import Hypothesis, check_indices, read_generate_log, read_nbest
from .select import Selection, SelectionOptions, select_targets

__all__ = ["SelectionRun", "run_selection", "select_files"]

Warn = Callable[[str], None]


@dataclass
class SelectionRun:
    """The targets of one run and its report (the options, the counts, the time)."""

    selection: Selection
    report: dict[str, Any]
    seconds: float

    @property
    def kept(self) -> list[int]:
        return self.selection.kept_indices

    def targets_text(self) -> str:
        """The kept targets, one a line."""
        return "".join(f"{self.selection.targets[i]}\n" for i in self.kept)


def run_selection(
    nbest: Mapping[int, Sequence[Hypothesis]],
    *,
    size: int,
    sources: Sequence[str] | None,
    references: Sequence[str] | None,
    options: SelectionOptions,
    nbest_name: str,
    allow_missing: bool = False,
    warn: Warn,
) -> SelectionRun:
    """:func:`~fairseq_seqkd.distill.select.select_targets` with the report both tools write.

    A sentence the n-best lacks is an error naming it and ``nbest_name`` unless
    ``allow_missing``; then ``warn`` hears how many got the fallback (the report counts them as
    ``missing``).
    """
    start = time.perf_counter()
    selection = select_targets(nbest, size=size, sources=sources, references=references,
                               allow_missing=allow_missing, nbest_name=nbest_name,
                               **asdict(options))
    seconds = time.perf_counter() - start
    missing = selection.report["missing"]
    if missing:
        first = next(i for i in range(size) if not nbest.get(i))
        warn(f"{missing} of {size} sentences have no hypotheses in {nbest_name} (the first: "
             f"sentence index {first}); with --allow-missing they get the fallback "
             f"({options.fallback})")
    report = {"strategy": options.strategy, "sim": options.sim, "fallback": options.fallback,
              "filter_worst_percent": options.filter_worst, "min_score": options.min_score,
              "allow_missing": allow_missing, **selection.report, "seconds": round(seconds, 3)}
    return SelectionRun(selection, report, seconds)


def _size(
    size: int | None, nbest: Mapping[int, Sequence[Hypothesis]], nbest_path: str,
    counted: list[tuple[str, int]],
) -> int:
    """The number of sentences: ``size``, else the text files' line count, else the n-best's
    last index + 1; the text files and the n-best must agree with it."""
    if len(counted) == 2 and counted[0][1] != counted[1][1]:
        (p1, n1), (p2, n2) = counted
        raise SeqKDError(f"line counts differ: {p1} has {n1} lines, {p2} has {n2}")
    nbest_size = max(nbest) + 1 if nbest else 0
    if size is not None:
        if size < 0:
            raise SeqKDError(f"--size must be >= 0, got {size}")
        for path, count in counted:
            if count != size:
                raise SeqKDError(f"{path} has {count} lines but --size is {size}")
    elif counted:
        size = counted[0][1]
    else:
        size = nbest_size
    if nbest_size > size:
        against = " and ".join(f"{path} has {count} lines" for path, count in counted)
        raise SeqKDError(
            f"{nbest_path} has hypotheses for sentence index {nbest_size - 1} "
            f"({len(nbest)} sentences, size {nbest_size}) but {against or f'--size is {size}'}"
        )
    check_indices(nbest, size, nbest_path, allow_missing=True)
    return size


def select_files(
    nbest_path: str,
    *,
    generate_log: bool = False,
    source: str | None = None,
    reference: str | None = None,
    size: int | None = None,
    options: SelectionOptions,
    output: str,
    output_source: str | None = None,
    report: str | None = None,
    allow_missing: bool = False,
    warn: Warn,
) -> SelectionRun:
    """``seqkd-select``: targets from an n-best file (or a ``fairseq-generate`` log when
    ``generate_log``) and the source / reference lines, written to ``output`` (with their
    sources to ``output_source`` and the report to ``report``), all or nothing."""
    if output_source and not source:
        raise SeqKDError("--output-source needs --source")
    options.check(source is not None, reference is not None)
    for path in (output, output_source, report):
        if path and os.path.isdir(path):
            raise SeqKDError(f"output path {path} is a directory")
    nbest = read_generate_log(nbest_path) if generate_log else read_nbest(nbest_path)
    sources = read_text_lines(source) if source else None
    references = read_text_lines(reference) if reference else None
    counted = [(path, len(lines)) for path, lines in ((source, sources), (reference, references))
               if lines is not None]
    run = run_selection(
        nbest, size=_size(size, nbest, nbest_path, counted), sources=sources,
        references=references, options=options, nbest_name=nbest_path,
        allow_missing=allow_missing, warn=warn,
    )
    outputs = {output: run.targets_text()}
    if output_source:
        assert sources is not None
        outputs[output_source] = "".join(f"{sources[i]}\n" for i in run.kept)
    if report:
        outputs[report] = json.dumps(run.report, indent=2) + "\n"
    try:
        atomic_write_all(outputs)
    except OSError as exc:
        raise SeqKDError(f"cannot write outputs: {exc}") from None
    return run
