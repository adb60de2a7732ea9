"""``seqkd-select``: turn a teacher n-best into sequence-level KD training targets.

Example::

    seqkd-select --nbest train.nbest --source train.bpe.de --reference train.bpe.en \\
        --strategy seq-inter --sim bleu --remove-bpe subword_nmt --workers 8 \\
        --output train.kd.en --output-source train.kd.de --report select.json

Bad input exits with status 1 after a single ``seqkd-select: error: ...`` line on
stderr; output files are written atomically, so nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from fairseq_seqkd.atomic import atomic_write_all
from fairseq_seqkd.cli.entry import OneLineParser, run_main
from fairseq_seqkd.distill.nbest import (
    Hypothesis,
    check_indices,
    read_generate_log,
    read_nbest,
)
from fairseq_seqkd.distill.select import (
    FALLBACKS,
    SIMILARITIES,
    STRATEGIES,
    check_max_repeats,
    check_score_filters,
    select_targets,
)
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.textfiles import read_text_lines

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


def _resolve_size(
    args: argparse.Namespace,
    nbest: dict[int, list[Hypothesis]],
    nbest_path: str,
    sources: list[str] | None,
    references: list[str] | None,
) -> int:
    counted = [
        (path, len(lines))
        for path, lines in ((args.source, sources), (args.reference, references))
        if lines is not None
    ]
    if len(counted) == 2 and counted[0][1] != counted[1][1]:
        (p1, n1), (p2, n2) = counted
        raise SeqKDError(f"line counts differ: {p1} has {n1} lines, {p2} has {n2}")
    nbest_size = max(nbest) + 1 if nbest else 0
    if args.size is not None:
        if args.size < 0:
            raise SeqKDError(f"--size must be >= 0, got {args.size}")
        for path, count in counted:
            if count != args.size:
                raise SeqKDError(f"{path} has {count} lines but --size is {args.size}")
        size = args.size
    elif counted:
        size = counted[0][1]
    else:
        size = nbest_size
    if nbest_size > size:
        against = " and ".join(f"{path} has {count} lines" for path, count in counted)
        if not against:
            against = f"--size is {size}"
        raise SeqKDError(
            f"{nbest_path} has hypotheses for sentence index {nbest_size - 1} "
            f"({len(nbest)} sentences, size {nbest_size}) but {against}"
        )
    check_indices(nbest, size, nbest_path, allow_missing=True)  # NbestFormatError: one line
    return size


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        raise SeqKDError(f"--workers must be >= 1, got {args.workers}")
    if args.output_source and not args.source:
        raise SeqKDError("--output-source needs --source")
    if args.strategy == "seq-inter" and not args.reference:
        raise SeqKDError("--strategy seq-inter needs --reference")
    if args.fallback == "gold" and not args.reference:
        raise SeqKDError("--fallback gold needs --reference (or use --fallback drop)")
    if args.max_len_ratio is not None and not args.source:
        raise SeqKDError("--max-len-ratio needs --source")
    if args.max_len_ratio is not None and not args.max_len_ratio >= 1:
        raise SeqKDError(f"--max-len-ratio must be >= 1, got {args.max_len_ratio}")
    if args.remove_bpe == "":
        raise SeqKDError("--remove-bpe: the BPE marker must not be empty")
    check_score_filters(args.filter_worst, args.min_score)
    check_max_repeats(args.max_repeats)

    nbest_path = args.nbest if args.nbest is not None else args.generate_log
    try:
        nbest = read_nbest(nbest_path) if args.nbest is not None else read_generate_log(
            nbest_path
        )
    except OSError as exc:
        raise SeqKDError(f"cannot read {nbest_path}: {exc.strerror or exc}") from None
    sources = read_text_lines(args.source) if args.source else None
    references = read_text_lines(args.reference) if args.reference else None
    size = _resolve_size(args, nbest, nbest_path, sources, references)

    start = time.perf_counter()
    selection = select_targets(
        nbest,
        size=size,
        sources=sources,
        references=references,
        strategy=args.strategy,
        sim=args.sim,
        remove_bpe_scheme=args.remove_bpe,
        max_len_ratio=args.max_len_ratio,
        max_repeats=args.max_repeats,
        dedup=args.dedup,
        fallback=args.fallback,
        workers=args.workers,
        filter_worst=args.filter_worst,
        min_score=args.min_score,
    )
    elapsed = time.perf_counter() - start

    kept = selection.kept_indices
    outputs = {args.output: "".join(f"{selection.targets[i]}\n" for i in kept)}
    if args.output_source:
        assert sources is not None
        outputs[args.output_source] = "".join(f"{sources[i]}\n" for i in kept)
    report = {
        "strategy": args.strategy,
        "sim": args.sim,
        "fallback": args.fallback,
        "filter_worst_percent": args.filter_worst,
        "min_score": args.min_score,
        **selection.report,
        "seconds": round(elapsed, 3),
    }
    if args.report:
        outputs[args.report] = json.dumps(report, indent=2, sort_keys=False) + "\n"
    for path in outputs:
        if os.path.isdir(path):
            raise SeqKDError(f"output path {path} is a directory")
    try:
        atomic_write_all(outputs)
    except OSError as exc:
        raise SeqKDError(f"cannot write outputs: {exc}") from None

    print(json.dumps(report, indent=2))
    hyps = selection.report["hypotheses"]
    rate = hyps / elapsed if elapsed > 0 else float("inf")
    print(
        f"{PROG}: {hyps} hypotheses for {size} sentences in {elapsed:.2f}s "
        f"({rate:,.0f} hypotheses/s, {args.workers} worker(s)); "
        f"kept {len(kept)} -> {args.output}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-select``; returns the exit status."""
    return run_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
