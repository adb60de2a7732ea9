"""The stages of a sequence-level KD build, each a :class:`~.stage_records.BuildStage`:

1. generate - :func:`fairseq_seqkd.distill.generate.generate_nbest` decodes the split with the
   teacher (beam K, n-best) into ``seqkd/generate/<split>.nbest``, resumable chunk by chunk;
2. select   - :func:`fairseq_seqkd.distill.select_run.run_selection`, as ``seqkd-select`` runs it,
   picks one target per sentence; sources and references are read from the binarized split;
3. binarize - the targets are encoded with the data's dictionaries (checked equal to the
   teacher's) into the output directory, beside copies of every other split and the
   dictionaries, so stock ``fairseq-train OUT_DIR`` reads it.

Each names the options and the files its outputs depend on: the teacher checkpoints and the
data-bin's files by content, and the outputs of the stage before it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

import torch

from ..atomic import atomic_write_text
from ..errors import SeqKDError
from ..textfiles import read_text_lines
from .binarize import binarize_lines, copy_file, token_lines, write_subset
from .build_options import BuildOptions
from .chunks import read_skipped, skipped_path
from .databin import DataBin, check_teachers, teacher_inputs
from .generate import generate_nbest
from .nbest import Hypothesis, check_indices, read_nbest
from .select_run import Warn, run_selection
from .stage_records import WORK_DIR, BuildStage, Log

__all__ = ["binarize_stage", "generate_stage", "read_generated", "select_stage"]


def _nbest_rel(split: str) -> str:
    return f"{WORK_DIR}/generate/{split}.nbest"


def generate_stage(opts: BuildOptions, data: DataBin, teachers: list[str], say: Log) -> BuildStage:
    """The teacher's n-best of the split (``opts``: the build's options)."""
    size = len(data.load(data.tgt))
    command = {
        "split": opts.split, "beam": opts.beam, "nbest": opts.nbest,
        "max_len_a": opts.max_len_a, "max_len_b": opts.max_len_b,
        "batch_size": opts.batch_size,
        "device": "cuda" if torch.cuda.is_available() and not opts.cpu else "cpu",
    }

    def run(folder: str) -> dict[str, Any]:
        nbest_path = os.path.join(folder, f"{opts.split}.nbest")
        argv = [data.dir, "--path", opts.teacher, "--gen-subset", opts.split,
                "--beam", str(opts.beam), "--nbest", str(opts.nbest), "--output", nbest_path,
                # too long for the teacher: listed in .skipped, then an error or the fallback
                "--skip-invalid-size-inputs-valid-test"]
        if opts.teacher_data:
            argv += ["--teacher-data", opts.teacher_data]
        if opts.cpu:
            argv.append("--cpu")
        if opts.batch_size:
            argv += ["--batch-size", str(opts.batch_size)]
        for flag, value in (("--max-len-a", opts.max_len_a), ("--max-len-b", opts.max_len_b)):
            if value is not None:
                argv += [flag, str(value)]
        generated = generate_nbest(argv)
        say(generated.describe())
        return {"sentences": size, "decoded": generated.sentences,
                "skipped": len(generated.skipped), "hypotheses": generated.hypotheses,
                "beam": opts.beam, "nbest": opts.nbest, "seconds": round(generated.seconds, 2)}

    nbest_rel = _nbest_rel(opts.split)
    return BuildStage(
        name="generate", command=command, inputs={**teacher_inputs(teachers), **data.inputs()},
        outputs=[nbest_rel, skipped_path(nbest_rel)], run=run,
        check=lambda: check_teachers(teachers, data, opts.teacher_data), resumable=True,
        announce=f": beam {opts.beam}, {opts.nbest}-best of {size} sentences with "
                 f"{opts.teacher}",
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


def _show_report(report: dict[str, Any]) -> str:
    return "selection report:\n" + json.dumps(report, indent=2)


def select_stage(opts: BuildOptions, data: DataBin, out: str, say: Log, warn: Warn) -> BuildStage:
    """One target per sentence from the n-best, as ``seqkd-select`` chooses it."""
    selection = opts.selection()
    nbest_path = os.path.join(out, _nbest_rel(opts.split))
    command = {"split": opts.split, "allow_missing": opts.allow_missing,
               **{k: v for k, v in asdict(selection).items() if k != "workers"}}

    def run(folder: str) -> dict[str, Any]:
        sources = token_lines(data.load(data.src), data.src_dict)
        references = token_lines(data.load(data.tgt), data.tgt_dict)
        nbest, skipped = read_generated(nbest_path, len(references))
        if skipped:
            say(f"{len(skipped)} sentences of {opts.split} are too long for the teacher and have "
                f"no hypotheses (listed in {skipped_path(nbest_path)})")
        chosen = run_selection(
            nbest, size=len(references), sources=sources, references=references,
            options=selection, nbest_name=nbest_path, allow_missing=opts.allow_missing,
            warn=warn,
        )
        atomic_write_text(os.path.join(folder, f"{opts.split}.targets"), chosen.targets_text())
        atomic_write_text(os.path.join(folder, f"{opts.split}.kept"),
                   "".join(f"{i}\n" for i in chosen.kept))
        # the report holds a timing: written beside the outputs, not one of them, so a rerun
        # that selects the same targets leaves the binarized data alone
        atomic_write_text(os.path.join(folder, "report.json"),
                          json.dumps(chosen.report, indent=2) + "\n")
        return chosen.report

    return BuildStage(
        name="select", command=command,
        inputs={"generate/nbest": nbest_path, "generate/skipped": skipped_path(nbest_path),
                **data.inputs()},
        outputs=[f"{WORK_DIR}/select/{opts.split}.{name}" for name in ("targets", "kept")],
        run=run, show=_show_report,
        announce=(f": {opts.strategy}"
                  + (f" by sentence {opts.sim}" if opts.strategy == "seq-inter" else "")
                  + (f", dropping scores below {opts.min_score}"
                     if opts.min_score is not None else "")
                  + (f", dropping the worst-scored {opts.filter_worst:g} %"
                     if opts.filter_worst else "")),
    )


def binarize_stage(opts: BuildOptions, data: DataBin, out: str, say: Log) -> BuildStage:
    """The distilled data-bin: the kept sources and their targets, the rest copied."""
    select_dir = os.path.join(out, WORK_DIR, "select")
    targets_path = os.path.join(select_dir, f"{opts.split}.targets")
    kept_path = os.path.join(select_dir, f"{opts.split}.kept")
    copied = data.other_files()
    written = [data.pair_prefix + f"{lang}.{ext}" for lang in (data.src, data.tgt)
               for ext in ("bin", "idx")]
    kept_file = f"{opts.split}.kept-indices"

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
        write_subset(source, kept, len(data.src_dict), prefix + data.src)
        stats = binarize_lines(targets, data.tgt_dict, prefix + data.tgt)
        if opts.fallback == "drop":
            atomic_write_text(os.path.join(out, kept_file), "".join(f"{i}\n" for i in kept))
        elif os.path.exists(os.path.join(out, kept_file)):
            os.unlink(os.path.join(out, kept_file))
        if stats.unknown:
            say(f"warning: {stats.unknown} target tokens are not in "
                f"{data.dict_files[data.tgt]} (first: {stats.first_unknown!r}) and became <unk>")
        return {"sentences": stats.sentences, "gold_sentences": len(source),
                "target_tokens": stats.tokens, "unknown_tokens": stats.unknown, "copied": copied}

    return BuildStage(
        name="binarize", command={"split": opts.split, "fallback": opts.fallback},
        inputs={"select/targets": targets_path, "select/kept": kept_path, **data.inputs(),
                **{f"data/{name}": os.path.join(data.dir, name) for name in copied}},
        outputs=[*copied, *written, *([kept_file] if opts.fallback == "drop" else [])],
        run=run,
    )
