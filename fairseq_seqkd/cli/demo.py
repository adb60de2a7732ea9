"""``seqkd-demo``: Kim & Rush (2016) end to end in one command, on a built-in corpus.

Examples::

    seqkd-demo                                   # built-in corpus, ~10 minutes on 2 CPU cores
    seqkd-demo --corpus ../shared/data/multi30k-en-de --preset small --out demo-multi30k
    seqkd-demo --dry-run                         # print every stage's commands, run nothing

Teacher, baseline student, Word-KD, Seq-KD, Seq-Inter, Seq-KD + Word-KD, deep-shallow, GKD and
pruned Seq-KD students are trained with stock ``fairseq-train`` and the project's own tools,
the Seq-KD students exported to CTranslate2 int8, then every model is decoded greedily and with
beam search in one process, alone (fairseq's generation pipeline, as ``fairseq-generate`` runs
it, and ``seqkd-translate``'s Translator). On the built-in corpus a Seq-KD + mono student also
trains on the teacher's translations of extra generated source sentences (``seqkd-build
--mono-source``). The results table goes to the terminal and to ``OUT/results.md`` with a plot
``OUT/results.png``. Completed stages are skipped on a second run (delete ``OUT`` to start
over).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TypeVar

from fairseq_seqkd.cli.entry import OneLineParser, run_main
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.experiments.pipeline import Pipeline
from fairseq_seqkd.experiments.presets import PRESETS, Preset, preset_for

PROG = "seqkd-demo"
P = TypeVar("P", bound=Preset)


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--out", default="demo-out", metavar="DIR",
                        help="output directory (default: demo-out)")
    parser.add_argument("--corpus", metavar="DIR",
                        help="raw parallel text train/valid/test.{src,tgt} instead of the "
                        "built-in corpus (no mode-mixing column then)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                        help="model sizes and epochs: ci (seconds, for tests), tiny (default, "
                        "~10 minutes on 2 cores), small (bigger models, for real data)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads per fairseq process (default 1: tiny models run "
                        "faster as several one-thread processes than as one multi-threaded)")
    parser.add_argument("--vocab-size", type=int, metavar="N",
                        help="joint sentencepiece vocabulary (default: the preset's); raise it "
                        "for a script with many characters (Japanese, Chinese)")
    parser.add_argument("--jobs", type=int, default=max(1, min(cores(), 4)), metavar="N",
                        help="independent training/distillation stages run at once (default: "
                        "the CPU cores, at most 4); the decoding stage always runs alone")
    add_only_option(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the stages and their commands, run nothing")
    return parser


def add_only_option(parser: argparse.ArgumentParser) -> None:
    """--only, shared by seqkd-demo and seqkd-benchmark."""
    parser.add_argument("--only", type=stage_names, default=(), metavar="STAGE[,STAGE...]",
                        help="run just these stages (names as --dry-run prints them) and the "
                        "stages they need; the report shows what has been done so far")


def stage_names(value: str) -> tuple[str, ...]:
    """``a,b`` -> ``("a", "b")``; an empty name is an error."""
    names = tuple(name.strip() for name in value.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty stage name in {value!r}")
    return names


def check_parallelism(args: argparse.Namespace) -> None:
    """--threads and --jobs, shared by seqkd-demo and seqkd-benchmark."""
    if args.threads < 1:
        raise SeqKDError(f"--threads must be >= 1, got {args.threads}")
    if args.jobs < 1:
        raise SeqKDError(f"--jobs must be >= 1, got {args.jobs}")


def with_vocab_size(preset: P, args: argparse.Namespace) -> P:
    """The preset with --vocab-size applied (shared by seqkd-demo and seqkd-benchmark)."""
    if args.vocab_size is None:
        return preset
    if args.vocab_size < 8:
        raise SeqKDError(f"--vocab-size must be >= 8, got {args.vocab_size}")
    return dataclasses.replace(preset, vocab_size=args.vocab_size)


def print_stages(pipeline: Pipeline) -> None:
    """--dry-run: every stage and its commands, nothing run."""
    for stage in pipeline.selected_stages():
        print(f"# {stage.name}: {stage.description}")
        for command in stage.commands:
            print(shlex.join(command))
        if stage.func is not None:
            print(f"# in-process: {stage.func_key}")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # stops the running commands; the next run resumes


def stop_on_sigterm() -> None:
    """SIGTERM stops the running commands like Ctrl-C (the next run resumes)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_parallelism(args)
    pipeline = Pipeline(args.out, with_vocab_size(preset_for(args.preset), args),
                        corpus=args.corpus, threads=args.threads, jobs=args.jobs,
                        only=args.only)
    if args.dry_run:
        print_stages(pipeline)
        return 0
    corpus = args.corpus or "built-in synthetic corpus"
    print(f"{PROG}: preset {args.preset}, {corpus}, {args.jobs} job(s) x {args.threads} "
          f"thread(s) -> {args.out}", flush=True)
    begin = time.perf_counter()
    stop_on_sigterm()
    pipeline.run()
    if "eval" not in {stage.name for stage in pipeline.selected_stages()}:
        print(f"{PROG}: done in {time.perf_counter() - begin:.0f}s; --only left out the eval "
              f"stage, so no results table; logs in {os.path.join(args.out, 'logs')}/",
              flush=True)
        return 0
    table, _ = pipeline.report()
    seconds = time.perf_counter() - begin
    print()
    print(table)
    print(f"\n{PROG}: done in {seconds:.0f}s; results in {os.path.join(args.out, 'results.md')}"
          f" and {os.path.join(args.out, 'results.png')}, logs in "
          f"{os.path.join(args.out, 'logs')}/", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-demo``; returns the exit status."""
    return run_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
