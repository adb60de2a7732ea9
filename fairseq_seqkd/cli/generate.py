"""``seqkd-generate``: decode a binarized split with the teacher into an n-best file.

Every ``fairseq-generate`` option works (same parser, same generator); ours are ``--output``
(required), ``--chunk-size`` and ``--teacher-data`` (where the teacher's ``dict.*.txt`` are, when
the data directory recorded in its checkpoint is gone); ``--num-shards``/``--shard-id`` split
the work::

    seqkd-generate data-bin --path teacher.pt --gen-subset train --beam 5 --nbest 5 \\
        --batch-size 128 --output train.nbest            # resumable: rerun after a kill

    # 4 workers, then the merge (checks every index is present exactly once)
    seqkd-generate data-bin --path t.pt --gen-subset train --beam 5 --nbest 5 \\
        --num-shards 4 --shard-id $i --output train.nbest.$i
    seqkd-generate --merge-shards train.nbest.{0,1,2,3} --output train.nbest \\
        --expected-size $(wc -l < train.bpe.de)

Writes ``OUTPUT`` (``index<TAB>rank<TAB>score<TAB>tokens``, see
:mod:`fairseq_seqkd.distill.nbest`) and ``OUTPUT.skipped`` (sentences too long for the model,
with ``--skip-invalid-size-inputs-valid-test``). The design (chunks, manifest, sharding) is in
:mod:`fairseq_seqkd.distill.generate`. Bad input exits with status 1 after one
``seqkd-generate: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from fairseq_seqkd.cli.entry import is_merge, summary_main
from fairseq_seqkd.distill.generate import GenerationSummary, generate_nbest
from fairseq_seqkd.distill.merge import merge_shards

PROG = "seqkd-generate"


def build_merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} --merge-shards",
        description="Join the n-best files of seqkd-generate shards (--num-shards/--shard-id).",
    )
    parser.add_argument(
        "--merge-shards", nargs="+", required=True, metavar="SHARD",
        help="shard n-best files; SHARD.skipped files are read when present",
    )
    parser.add_argument("--output", required=True, metavar="FILE", help="merged n-best file")
    parser.add_argument(
        "--expected-size", type=int, required=True, metavar="N",
        help="sentences in the split: every index 0..N-1 must be in one shard or skipped",
    )
    return parser


def run(argv: list[str]) -> GenerationSummary:
    """Generate, or merge shards when ``--merge-shards`` is given; raises SeqKDError."""
    if is_merge(argv):
        args = build_merge_parser().parse_args(argv)
        return merge_shards(args.merge_shards, args.output, args.expected_size)
    return generate_nbest(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-generate``; returns the exit status."""
    return summary_main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
