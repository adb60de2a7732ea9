"""``seqkd-evaluate``: BLEU (sacrebleu) of fairseq checkpoints, greedy and with beam search.

Example::

    seqkd-evaluate data-bin --reference raw/test.tgt \\
        --model teacher=teacher/checkpoint_best.pt --model seq-kd=kd/checkpoint_best.pt \\
        --beams 1 5 --remove-bpe sentencepiece --cpu

Runs stock fairseq-generate on each checkpoint and beam size and scores the detokenized
hypotheses against the raw reference text; prints one row per model and the BLEU signature.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from fairseq_seqkd.atomic import atomic_write_text
from fairseq_seqkd.cli.entry import OneLineParser, run_main
from fairseq_seqkd.distill.evaluate import evaluate_checkpoints, format_scores

PROG = "seqkd-evaluate"


def _model(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=CHECKPOINT, got {spec!r}")
    return name, path


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter,
                      epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("data", help="data-bin holding the --subset split")
    p.add_argument("--model", type=_model, action="append", required=True,
                   metavar="NAME=CKPT", help="a checkpoint to score (repeatable)")
    p.add_argument("--reference", required=True, metavar="FILE",
                   help="raw reference text of --subset, line i = sentence i")
    p.add_argument("--subset", default="test")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 5], metavar="K")
    p.add_argument("--remove-bpe", default="sentencepiece")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    return p


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    scores = evaluate_checkpoints(args.data, args.model, args.reference, beams=args.beams,
                                  subset=args.subset, batch_size=args.batch_size,
                                  remove_bpe=args.remove_bpe, cpu=args.cpu)
    print(format_scores(scores, args.beams), flush=True)
    if args.json:
        atomic_write_text(args.json, json.dumps([asdict(s) for s in scores], indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-evaluate``; returns the exit status."""
    return run_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
