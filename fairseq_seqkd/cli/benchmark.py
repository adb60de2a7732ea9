"""``seqkd-benchmark``: the paper's Table 1, divergences, pruning and speed on a real corpus,
or (preset multi30k-mono) the deployed-student study.

Examples::

    seqkd-benchmark --corpus ../shared/data/multi30k-en-de --out runs/multi30k \\
        --doc docs/results/multi30k-v2.md --part table1   # about 3 hours on 2 CPU cores
    seqkd-benchmark ... --part extra                # the other rows, about 4 hours more
    seqkd-benchmark --corpus DIR --dry-run          # print every stage's commands
    seqkd-benchmark --corpus DIR --report-only      # write the page from what is done
    seqkd-benchmark --corpus DIR --only eval-deep-shallow,deploy-speed   # and their inputs
    seqkd-benchmark --preset multi30k-mono --corpus DIR --mono-source en.txt --part core

Every stage is skipped when its output is complete, and a killed run continues where it
stopped (fairseq-train resumes from checkpoint_last.pt). The page lists the exact commands.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from fairseq_seqkd.cli.demo import (
    add_only_option,
    check_parallelism,
    cores,
    print_stages,
    stop_on_sigterm,
    with_vocab_size,
)
from fairseq_seqkd.cli.entry import OneLineParser, run_main
from fairseq_seqkd.experiments import benchmark_page, mono_page
from fairseq_seqkd.experiments.benchmark import BENCHMARK_PRESETS, PARTS
from fairseq_seqkd.experiments.mono_models import PARTS as MONO_PARTS
from fairseq_seqkd.experiments.mono_study import MonoStudy, make_benchmark

PROG = "seqkd-benchmark"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--corpus", required=True, metavar="DIR",
                        help="raw parallel text: train/valid/test.{src,tgt}, and optionally "
                        "further test sets test_*.{src,tgt}")
    parser.add_argument("--out", default="runs/benchmark", metavar="DIR",
                        help="working directory: data, checkpoints, logs (default: "
                        "runs/benchmark)")
    parser.add_argument("--preset", default="multi30k", choices=sorted(BENCHMARK_PRESETS),
                        help="model sizes, epochs and targets: multi30k (default), ci (seconds, "
                        "tests), multi30k-mono (the deployed-student study) or ci-mono")
    parser.add_argument("--mono-source", metavar="FILE",
                        help="the study's monolingual source text, raw, one sentence a line "
                        "(segmented by the run's sentencepiece model; the preset sets how many "
                        "lines); default: mono.src in --corpus")
    parser.add_argument("--doc", metavar="FILE.md",
                        help="also write the results page here, its plot beside it (.png) and "
                        "the stage logs in FILE-logs/ (paths shown as $OUT)")
    parser.add_argument("--analysis", metavar="FILE.md",
                        help="Markdown put on the page after the targets: the reasons behind "
                        "the numbers, written after reading a run")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads per fairseq process (default 1)")
    parser.add_argument("--vocab-size", type=int, metavar="N",
                        help="joint sentencepiece vocabulary (default: the preset's)")
    parser.add_argument("--jobs", type=int, default=max(1, min(cores(), 4)), metavar="N",
                        help="independent stages run at once (default: the CPU cores, at most "
                        "4); the speed stage always runs alone")
    add_only_option(parser)
    parser.add_argument("--part", choices=(*PARTS, *MONO_PARTS),
                        help="run one part of the page, in the same --out: table1 (the "
                        "paper's table, averaging, pruning at 80 and 90 %%, speed; about 3 "
                        "hours on 2 cores with the multi30k preset), then extra (the stronger "
                        "Seq-KD source, seeds, 20-best Seq-Inter, the other pruning rows, "
                        "deployment, GKD, filtered; about 4 hours); for the study: core, "
                        "ensemble, final; a part on a fresh machine retrains what it needs; "
                        "default: all")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="print the stages and their commands, run nothing")
    mode.add_argument("--report-only", action="store_true",
                      help="write the results from the stages done so far, run nothing")
    return parser


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_parallelism(args)
    bench = make_benchmark(args.out, with_vocab_size(BENCHMARK_PRESETS[args.preset], args),
                           corpus=args.corpus, mono_source=args.mono_source,
                           threads=args.threads, jobs=args.jobs, only=args.only,
                           part=args.part)
    if args.dry_run:
        print_stages(bench)
        return 0
    begin = time.perf_counter()
    if not args.report_only:
        print(f"{PROG}: preset {args.preset}, corpus {args.corpus}, {args.jobs} job(s) x "
              f"{args.threads} thread(s) -> {args.out}", flush=True)
        stop_on_sigterm()
        bench.run()
    page = mono_page if isinstance(bench, MonoStudy) else benchmark_page
    table, _ = page.write_report(bench, doc=args.doc, analysis=args.analysis)
    print()
    print(table)
    where = os.path.join(args.out, "results.md") + (f" and {args.doc}" if args.doc else "")
    print(f"\n{PROG}: done in {time.perf_counter() - begin:.0f}s; results in {where}",
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-benchmark``; returns the exit status."""
    return run_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
