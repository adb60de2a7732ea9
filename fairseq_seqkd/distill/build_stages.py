"""The stages of a sequence-level KD build, each a :class:`BuildStage` of the stage engine:

1. mono          - (``--mono-source``) :func:`fairseq_seqkd.distill.mono.prepare_mono` turns the
   monolingual text into a source-only split ``mono`` in ``seqkd/mono/``, streaming;
2. generate      - the teacher (:class:`~.build_teacher.BuildTeacher`: fairseq or CTranslate2)
   decodes the split (beam K, n-best) into ``seqkd/generate/<split>.nbest``, resumable chunk by
   chunk; with ``--translations`` the other system's translations become that n-best instead;
3. generate-mono - (``--mono-source``) the same for the monolingual split, one hypothesis a
   sentence (there is no reference to choose among several), or ``--mono-translations``;
4. select        - :func:`fairseq_seqkd.distill.select_run.run_selection`, as ``seqkd-select``
   runs it, picks one target per sentence of the split (sources and references read from the
   binarized split); the monolingual split's best hypotheses pass the same filters one sentence
   at a time (:func:`fairseq_seqkd.distill.select_stream.select_best`);
5. binarize      - the targets are encoded with the data's dictionaries into the output
   directory, the parallel pairs first and then the monolingual ones in one split (with
   ``<split>.provenance.tsv`` beside it), beside copies of every other split and the
   dictionaries, so stock ``fairseq-train OUT_DIR`` reads it.

Each names the options and the files its outputs depend on: the teacher and the data-bin's files
by content, the monolingual text and translations by content, and the outputs of the stages
before it. Without ``--mono-source`` a build is stages 2, 4 and 5. A stage works in its folder
``OUT_DIR/seqkd/<stage>/``, emptied before it is redone (unless it resumes: the decodings), and
its stamp records its outputs' content, so an output edited since redoes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..data.distilled import load_split
from ..errors import SeqKDError
from ..stages import Stage
from ..textfiles import iter_text_lines, read_text_lines
from .binarize import binarize_lines, copy_file, iter_token_lines, token_lines, write_subset
from .build_options import MONO_SPLIT, BuildOptions
from .build_teacher import BuildTeacher
from .chunks import read_skipped, skipped_path
from .databin import DataBin
from .mono import (
    DEFAULT_MAX_SOURCE_POSITIONS,
    PROVENANCE_SUFFIX,
    SOURCES_SUFFIX,
    PairsPart,
    prepare_mono,
    write_combined_split,
)
from .nbest import Hypothesis, check_indices, read_nbest
from .select_run import Warn, run_selection
from .select_stream import select_best
from .translations import mono_translations, parallel_translations

__all__ = ["WORK_DIR", "Build", "BuildStage", "Log", "build_stages", "read_generated"]

WORK_DIR = "seqkd"

Log = Callable[[str], None]


def summary_text(summary: dict[str, Any]) -> str:
    """A stage summary on one line (lists by their length)."""
    return ", ".join(f"{k} {len(v) if isinstance(v, list) else v}" for k, v in summary.items())


@dataclass
class BuildStage(Stage):
    """A stage of a build: in-process, keyed by its options and the files it reads."""

    show: Callable[[dict[str, Any]], str] = summary_text  # its summary, in the build's log


@dataclass
class Build:
    """What every stage of one build needs: its options, data, teacher and output."""

    opts: BuildOptions
    data: DataBin
    teacher: BuildTeacher | None  # None: --translations
    out: str  # the output directory, absolute
    say: Log
    warn: Warn

    def path(self, *parts: str) -> str:
        """A file of the build's work directory, ``OUT_DIR/seqkd/...``."""
        return os.path.join(self.out, WORK_DIR, *parts)

    def parallel_source(self) -> str:
        """The split as errors name it."""
        return f"the {self.opts.split} split of {self.data.dir}"

    # ---------------------------------------------------------------- the monolingual split

    @property
    def mono_prefix(self) -> str:
        """``seqkd/mono/mono.<src>-<tgt>.<src>``: the binarized monolingual source."""
        src, tgt = self.data.src, self.data.tgt
        return self.path("mono", f"{MONO_SPLIT}.{src}-{tgt}.{src}")

    def mono_files(self) -> dict[str, str]:
        """What decoding the monolingual split reads: its source and the dictionaries."""
        files = [self.mono_prefix + ".bin", self.mono_prefix + ".idx",
                 *(self.path("mono", f"dict.{lang}.txt") for lang in (self.data.src,
                                                                       self.data.tgt))]
        return {f"mono/{os.path.basename(f)}": f for f in files}

    def load_mono(self) -> Any:
        return load_split(self.mono_prefix, self.data.src_dict, "the monolingual split")

    def spm_input(self) -> dict[str, str]:
        return {"spm model": self.opts.spm_model} if self.opts.spm_model else {}


def build_stages(build: Build) -> list[BuildStage]:
    """The stages of ``build``, in order."""
    if not build.opts.mono:
        return [generate_stage(build), select_stage(build), binarize_stage(build)]
    return [mono_stage(build), generate_stage(build), generate_mono_stage(build),
            select_stage(build), binarize_stage(build)]


def _stage(build: Build, name: str, options: dict[str, Any], inputs: dict[str, str],
           outputs: list[str], run: Callable[[str], dict[str, Any]], description: str = "",
           check: Callable[[], None] | None = None, resumes: bool = False,
           show: Callable[[dict[str, Any]], str] = summary_text) -> BuildStage:
    """The stage ``name``: ``run(folder)`` writes ``outputs`` (relative to the output
    directory) and returns its summary; ``description`` follows the reason it runs."""
    folder = build.path(name)
    return BuildStage(name, description, [], [Path(build.out, rel) for rel in outputs],
                      func=lambda _log: run(folder), options=options, inputs=inputs,
                      check=check, resumes=resumes, clean=[Path(folder)],
                      mkdirs=[Path(folder)], record_outputs=True, show=show)


# ------------------------------------------------------------------------------ decoding


def _nbest_rel(stage: str, split: str) -> str:
    return f"{WORK_DIR}/{stage}/{split}.nbest"


def _decode_stage(build: Build, name: str, directory: str, split: str, nbest: int,
                  inputs: dict[str, str], what: str) -> BuildStage:
    """The teacher's ``nbest``-best of ``split`` in ``directory``."""
    teacher = build.teacher
    assert teacher is not None

    def run(folder: str) -> dict[str, Any]:
        generated = teacher.decode(directory, split, os.path.join(folder, f"{split}.nbest"),
                                   nbest)
        build.say(generated.describe())
        return {"engine": teacher.engine, "sentences": generated.sentences
                + len(generated.skipped), "decoded": generated.sentences,
                "skipped": len(generated.skipped), "hypotheses": generated.hypotheses,
                "beam": build.opts.beam, "nbest": nbest,
                "seconds": round(generated.seconds, 2)}

    nbest_rel = _nbest_rel(name, split)
    return _stage(
        build, name, {"split": split, "nbest": nbest, **teacher.command()},
        {**teacher.inputs(), **inputs}, [nbest_rel, skipped_path(nbest_rel)], run,
        f"beam {build.opts.beam}, {nbest}-best of {what} with {teacher.engine} teacher "
        f"{build.opts.teacher}", check=lambda: teacher.check(build.data), resumes=True,
    )


def _translations_stage(build: Build, name: str, split: str, inputs: dict[str, str],
                        write: Callable[[str], Any], what: str) -> BuildStage:
    """``write(nbest_path)`` turns another system's translations into the n-best of ``split``
    (one hypothesis a sentence, no score); nothing is skipped."""

    def run(folder: str) -> dict[str, Any]:
        nbest_path = os.path.join(folder, f"{split}.nbest")
        summary = write(nbest_path)
        atomic_write_text(skipped_path(nbest_path), "")
        build.say(summary.describe())
        return {"engine": "translations", **summary.record()}

    nbest_rel = _nbest_rel(name, split)
    return _stage(
        build, name, {"split": split, "engine": "translations"},
        {**inputs, **build.spm_input()}, [nbest_rel, skipped_path(nbest_rel)], run,
        f"{what}, as targets without a teacher",
        show=lambda r: f"{r['sentences']} translations ({r['empty']} empty, {r['unk_heavy']} "
                       f"more than half <unk>)")


def generate_stage(build: Build) -> BuildStage:
    """The teacher's n-best of the split, or the ``--translations`` of it."""
    opts, data = build.opts, build.data
    size = len(data.load(data.tgt))
    if opts.translations is None:
        assert opts.nbest is not None
        return _decode_stage(build, "generate", data.dir, opts.split, opts.nbest,
                             data.inputs(), f"{size} sentences")
    return _translations_stage(
        build, "generate", opts.split, {"translations": opts.translations, **data.inputs()},
        lambda nbest_path: parallel_translations(
            opts.translations, nbest_path, sentences=size, source=build.parallel_source(),
            dictionary=data.tgt_dict, spm_model=opts.spm_model, log=build.warn),
        f"--translations {opts.translations}")


def generate_mono_stage(build: Build) -> BuildStage:
    """The teacher's best hypothesis of each monolingual sentence, or the
    ``--mono-translations``."""
    opts = build.opts
    if opts.translations is None:
        return _decode_stage(build, "generate-mono", build.path("mono"), MONO_SPLIT, 1,
                             build.mono_files(), "the --mono-source sentences")
    provenance = build.path("mono", MONO_SPLIT + PROVENANCE_SUFFIX)
    return _translations_stage(
        build, "generate-mono", MONO_SPLIT,
        {**{f"mono-translations {i}": path
            for i, path in enumerate(opts.mono_translations, start=1)},
         "mono/provenance": provenance},
        lambda nbest_path: mono_translations(
            opts.mono_translations, opts.mono_source, provenance, nbest_path,
            dictionary=build.data.tgt_dict, spm_model=opts.spm_model, log=build.warn),
        "--mono-translations " + " ".join(opts.mono_translations))


def _show_mono(record: dict[str, Any]) -> str:
    totals = record["totals"]
    return (f"{record['sentences']} sentences kept of {totals['read']} lines read from "
            f"{len(record['sources'])} file(s): {totals['empty']} empty and {totals['too_long']} "
            f"longer than {record['max_source_positions'] - 1} tokens skipped, "
            f"{totals['unk_heavy']} more than half <unk>")


def mono_stage(build: Build) -> BuildStage:
    """The ``--mono-source`` text as a source-only split, lines too long for the teacher
    skipped (the teacher's maximum positions are read from it)."""
    opts, data, teacher = build.opts, build.data, build.teacher
    names = [os.path.basename(build.mono_prefix) + ext for ext in (".bin", ".idx")] + [
        f"dict.{lang}.txt" for lang in (data.src, data.tgt)] + [
        MONO_SPLIT + suffix for suffix in (PROVENANCE_SUFFIX, SOURCES_SUFFIX)]

    def run(folder: str) -> dict[str, Any]:
        limit = (teacher.max_source_positions(data) if teacher is not None
                 else DEFAULT_MAX_SOURCE_POSITIONS)
        summary = prepare_mono(opts.mono_source, data.dir, folder, langs=(data.src, data.tgt),
                               max_source_positions=limit, size=opts.mono_size,
                               spm_model=opts.spm_model, split=MONO_SPLIT, log=build.warn)
        build.say(summary.describe())
        return summary.record()

    return _stage(
        build, "mono", {"split": MONO_SPLIT, "size": opts.mono_size},
        {**{f"mono-source {i}": path for i, path in enumerate(opts.mono_source, 1)},
         **build.spm_input(), **(teacher.inputs() if teacher is not None else {}),
         **{f"data/dict.{lang}.txt": data.dict_files[lang] for lang in (data.src, data.tgt)}},
        [f"{WORK_DIR}/mono/{name}" for name in names], run,
        f"{len(opts.mono_source)} --mono-source file(s)"
        + (f", the first {opts.mono_size} usable lines" if opts.mono_size else ""),
        check=(lambda: teacher.check(data)) if teacher is not None else None, show=_show_mono,
    )


def read_generated(nbest_path: str, size: int) -> tuple[dict[int, list[Hypothesis]], list[int]]:
    """The n-best and the skipped indices; every index must be in exactly one of them."""
    nbest = read_nbest(nbest_path)
    check_indices(nbest, size, nbest_path, allow_missing=True)
    skipped = [index for index, _ in read_skipped(skipped_path(nbest_path))]
    missing = [i for i in range(size) if not nbest.get(i) and i not in set(skipped)]
    if missing:
        raise SeqKDError(
            f"{nbest_path} is incomplete: no hypotheses for sentence index {missing[0]} "
            f"({len(missing)} of {size} missing and not listed in {skipped_path(nbest_path)})"
        )
    return nbest, skipped


# ------------------------------------------------------------------------------ selection


def _show_report(report: dict[str, Any]) -> str:
    return "selection report:\n" + json.dumps(report, indent=2)


def _select_mono(build: Build, folder: str) -> dict[str, Any]:
    """The monolingual split's targets, one sentence at a time; its report."""
    opts, data = build.opts, build.data
    selection = opts.selection()
    nbest_path = build.path("generate-mono", f"{MONO_SPLIT}.nbest")
    source = build.load_mono()
    needs_sources = selection.max_len_ratio is not None or selection.dedup
    report = select_best(
        nbest_path, size=len(source),
        skipped={index for index, _ in read_skipped(skipped_path(nbest_path))},
        sources=iter_token_lines(source, data.src_dict) if needs_sources else None,
        options=selection, targets_path=os.path.join(folder, f"{MONO_SPLIT}.targets"),
        kept_path=os.path.join(folder, f"{MONO_SPLIT}.kept"))
    report = {"strategy": "best hypothesis (no reference)", **report}
    if opts.strategy == "seq-inter":  # counted in the build record, said once by the options
        report["best_hypothesis_for_seq_inter"] = report["selected"]
    return report


def select_stage(build: Build) -> BuildStage:
    """One target per sentence from the n-best, as ``seqkd-select`` chooses it; the
    monolingual split's best hypotheses after the same filters."""
    opts, data = build.opts, build.data
    selection = opts.selection()
    nbest_path = build.path("generate", f"{opts.split}.nbest")
    command = {"split": opts.split, "allow_missing": opts.allow_missing,
               **{k: v for k, v in asdict(selection).items() if k != "workers"},
               **({"mono": True} if opts.mono else {})}

    def run(folder: str) -> dict[str, Any]:
        sources = token_lines(data.load(data.src), data.src_dict)
        references = token_lines(data.load(data.tgt), data.tgt_dict)
        nbest, skipped = read_generated(nbest_path, len(references))
        if skipped:
            build.say(f"{len(skipped)} sentences of {opts.split} are too long for the teacher "
                      f"and have no hypotheses (listed in {skipped_path(nbest_path)})")
        chosen = run_selection(
            nbest, size=len(references), sources=sources, references=references,
            options=selection, nbest_name=nbest_path, allow_missing=opts.allow_missing,
            warn=build.warn,
        )
        del nbest, sources, references
        atomic_write_text(os.path.join(folder, f"{opts.split}.targets"), chosen.targets_text())
        atomic_write_text(os.path.join(folder, f"{opts.split}.kept"),
                          "".join(f"{i}\n" for i in chosen.kept))
        report = chosen.report
        if opts.mono:
            report["mono"] = _select_mono(build, folder)
        # the report holds a timing: written beside the outputs, not one of them, so a rerun
        # that selects the same targets leaves the binarized data alone
        atomic_write_text(os.path.join(folder, "report.json"),
                          json.dumps(report, indent=2) + "\n")
        return report

    inputs = {"generate/nbest": nbest_path, "generate/skipped": skipped_path(nbest_path),
              **data.inputs()}
    outputs = [f"{WORK_DIR}/select/{opts.split}.{name}" for name in ("targets", "kept")]
    if opts.mono:
        mono_nbest = build.path("generate-mono", f"{MONO_SPLIT}.nbest")
        inputs.update({"generate-mono/nbest": mono_nbest,
                       "generate-mono/skipped": skipped_path(mono_nbest), **build.mono_files()})
        outputs += [f"{WORK_DIR}/select/{MONO_SPLIT}.{name}" for name in ("targets", "kept")]
    return _stage(
        build, "select", command, inputs, outputs, run,
        opts.strategy + (f" by sentence {opts.sim}" if opts.strategy == "seq-inter" else "")
        + (f", dropping scores below {opts.min_score}" if opts.min_score is not None else "")
        + (f", dropping the worst-scored {opts.filter_worst:g} %" if opts.filter_worst else ""),
        show=_show_report,
    )


# ------------------------------------------------------------------------------ binarization


def _read_indices(path: str) -> np.ndarray:
    return np.fromiter((int(line) for line in iter_text_lines(path)), dtype=np.int64)


def binarize_stage(build: Build) -> BuildStage:
    """The distilled data-bin: the kept sources and their targets (the parallel pairs, then the
    monolingual ones), the rest copied."""
    opts, data, out = build.opts, build.data, build.out
    select_dir = build.path("select")
    targets_path = os.path.join(select_dir, f"{opts.split}.targets")
    kept_path = os.path.join(select_dir, f"{opts.split}.kept")
    mono_targets = os.path.join(select_dir, f"{MONO_SPLIT}.targets")
    mono_kept = os.path.join(select_dir, f"{MONO_SPLIT}.kept")
    copied = data.other_files()
    written = [data.pair_prefix + f"{lang}.{ext}" for lang in (data.src, data.tgt)
               for ext in ("bin", "idx")]
    kept_file = f"{opts.split}.kept-indices"
    provenance = opts.split + PROVENANCE_SUFFIX
    extra = ([provenance] if opts.mono else []) + ([kept_file] if opts.fallback == "drop" else [])

    def run(folder: str) -> dict[str, Any]:
        kept = [int(line) for line in read_text_lines(kept_path)]
        targets = read_text_lines(targets_path)
        if len(kept) != len(targets):
            raise SeqKDError(f"{select_dir} is inconsistent ({len(kept)} indices, "
                             f"{len(targets)} targets); delete it and rerun")
        for name in copied:
            copy_file(os.path.join(data.dir, name), os.path.join(out, name))
        source = data.load(data.src)
        prefix = os.path.join(out, data.pair_prefix)
        for name in (kept_file, provenance):  # left by an earlier build with other options
            if name not in extra and os.path.exists(os.path.join(out, name)):
                os.unlink(os.path.join(out, name))
        if opts.mono:
            stats = write_combined_split(
                prefix, (data.src, data.tgt), (data.src_dict, data.tgt_dict),
                PairsPart(source, kept, targets),
                PairsPart(build.load_mono(), _read_indices(mono_kept),
                          iter_text_lines(mono_targets)),
                mono_provenance=build.path("mono", MONO_SPLIT + PROVENANCE_SUFFIX))
            summary = {"sentences": stats["sentences"], "parallel": stats["parallel"],
                       "mono": stats["mono"], "gold_sentences": len(source),
                       "target_tokens": stats["target_tokens"],
                       "unknown_tokens": stats["unknown_tokens"]}
            first_unknown = stats["first_unknown"]
        else:
            write_subset(source, kept, len(data.src_dict), prefix + data.src)
            written_stats = binarize_lines(targets, data.tgt_dict, prefix + data.tgt)
            summary = {"sentences": written_stats.sentences, "gold_sentences": len(source),
                       "target_tokens": written_stats.tokens,
                       "unknown_tokens": written_stats.unknown}
            first_unknown = written_stats.first_unknown
        if opts.fallback == "drop":
            atomic_write_text(os.path.join(out, kept_file), "".join(f"{i}\n" for i in kept))
        if summary["unknown_tokens"]:
            build.say(f"warning: {summary['unknown_tokens']} target tokens are not in "
                      f"{data.dict_files[data.tgt]} (first: {first_unknown!r}) and became "
                      f"<unk>")
        return {**summary, "copied": copied}

    inputs = {"select/targets": targets_path, "select/kept": kept_path, **data.inputs(),
              **{f"data/{name}": os.path.join(data.dir, name) for name in copied}}
    if opts.mono:
        inputs.update({"select/mono-targets": mono_targets, "select/mono-kept": mono_kept,
                       "mono/provenance": build.path("mono", MONO_SPLIT + PROVENANCE_SUFFIX),
                       **build.mono_files()})
    return _stage(build, "binarize", {"split": opts.split, "fallback": opts.fallback,
                                      **({"mono": True} if opts.mono else {})},
                  inputs, [*copied, *written, *extra], run)
