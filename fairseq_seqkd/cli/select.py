"""``seqkd-select``: turn a teacher n-best into sequence-level KD training targets.

Example::

    seqkd-select --nbest train.nbest --source train.bpe.de --reference train.bpe.en \\
        --strategy seq-inter --sim bleu --remove-bpe subword_nmt --workers 8 \\
        --output train.kd.en --output-source train.kd.de --report select.json

A sentence with no hypothesis in the n-best is an error naming it, unless ``--allow-missing``
(then it gets the ``--fallback``, and the count goes to stderr and the report). Bad input exits
with status 1 after a single ``seqkd-select: error: ...`` line on stderr; output files are
written atomically, so nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fairseq_seqkd.cli.entry import OneLineParser, run_main
from fairseq_seqkd.distill.select import FALLBACKS, STRATEGIES, SelectionOptions
from fairseq_seqkd.distill.select_run import select_files
from fairseq_seqkd.distill.similarity import SIMILARITIES

PROG = "seqkd-select"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Select sequence-level KD targets (Kim & Rush, 2016) from a teacher n-best.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--nbest", metavar="FILE", help="n-best file (index, rank, score, tokens)")
    source.add_argument(
        "--generate-log", metavar="FILE", help="stdout of fairseq-generate (H- lines are used)"
    )
    parser.add_argument("--source", metavar="FILE", help="source subword lines, one per sentence")
    parser.add_argument(
        "--reference", metavar="FILE", help="reference subword lines, one per sentence"
    )
    parser.add_argument(
        "--size",
        type=int,
        metavar="N",
        help="number of sentences in the split (default: line count of --source/--reference)",
    )
    parser.add_argument("--strategy", choices=STRATEGIES, default="seq-kd")
    parser.add_argument("--sim", choices=SIMILARITIES, default="bleu")
    parser.add_argument(
        "--remove-bpe",
        metavar="SCHEME",
        default=None,
        help="'sentencepiece', 'subword_nmt' or a literal marker such as '@@ ' "
        "(applied before computing similarities)",
    )
    parser.add_argument("--max-len-ratio", type=float, metavar="R", default=None)
    parser.add_argument(
        "--dedup", action="store_true", help="drop repeated (source, target) pairs"
    )
    add_score_filter_options(parser)
    parser.add_argument("--fallback", choices=FALLBACKS, default="gold")
    add_allow_missing_option(parser)
    parser.add_argument("--workers", type=int, default=1, metavar="N")
    parser.add_argument("--output", required=True, metavar="FILE", help="selected targets")
    parser.add_argument(
        "--output-source", metavar="FILE", help="source lines matching --output (needs --source)"
    )
    parser.add_argument("--report", metavar="FILE", help="write the report as JSON")
    return parser


def add_score_filter_options(parser: argparse.ArgumentParser) -> None:
    """``--max-repeats``, ``--filter-worst`` and ``--min-score``, for every tool that selects
    targets."""
    parser.add_argument(
        "--max-repeats", type=int, default=None, metavar="K",
        help="drop a hypothesis in which a phrase of up to 4 subword tokens occurs more than K "
        "times in a row (a teacher's decoding loop); 2 keeps every ordinary sentence",
    )
    parser.add_argument(
        "--filter-worst", type=float, default=0.0, metavar="P",
        help="drop the P %% of sentences whose chosen hypothesis has the lowest teacher score "
        "(the n-best's length-normalised log-probability); 0 <= P < 100 [0]",
    )
    parser.add_argument(
        "--min-score", type=float, default=None, metavar="S",
        help="drop hypotheses whose n-best score is below S (nats per token for seqkd-generate's "
        "n-best; fairseq-generate logs print bits)",
    )


def add_allow_missing_option(parser: argparse.ArgumentParser) -> None:
    """``--allow-missing``, for every tool that selects targets."""
    parser.add_argument(
        "--allow-missing", action="store_true",
        help="give a sentence with no hypothesis in the n-best (a truncated n-best, or one the "
        "teacher skipped as too long) the --fallback, and say how many on stderr; without it "
        "such a sentence is an error naming it",
    )


def warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    options = SelectionOptions(
        strategy=args.strategy, sim=args.sim, remove_bpe_scheme=args.remove_bpe,
        max_len_ratio=args.max_len_ratio, max_repeats=args.max_repeats, dedup=args.dedup,
        fallback=args.fallback, workers=args.workers, filter_worst=args.filter_worst,
        min_score=args.min_score,
    )
    run = select_files(
        args.nbest if args.nbest is not None else args.generate_log,
        generate_log=args.nbest is None, source=args.source, reference=args.reference,
        size=args.size, options=options, output=args.output, output_source=args.output_source,
        report=args.report, allow_missing=args.allow_missing, warn=warn,
    )
    print(json.dumps(run.report, indent=2))
    hyps, size = run.report["hypotheses"], run.report["sentences"]
    rate = hyps / run.seconds if run.seconds > 0 else float("inf")
    print(
        f"{PROG}: {hyps} hypotheses for {size} sentences in {run.seconds:.2f}s "
        f"({rate:,.0f} hypotheses/s, {args.workers} worker(s)); "
        f"kept {len(run.kept)} -> {args.output}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-select``; returns the exit status."""
    return run_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
