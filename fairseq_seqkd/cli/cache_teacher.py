"""``seqkd-cache-teacher``: the teacher's top-k per target token, computed once, memory-mapped.

Word-level KD runs the teacher at every training step; at scale that forward pass dominates the
step. This tool runs the teacher (or an ensemble, ``--path a.pt:b.pt``: member probabilities
averaged) once, teacher-forced over a binarized split's targets (gold or distilled data), and
stores for every target token its ``--kd-topk`` most probable ids and their log-probabilities at
temperature 1 (format: :mod:`fairseq_seqkd.data.teacher_cache`)::

    seqkd-cache-teacher data-bin --path teacher.pt --gen-subset train --kd-topk 8 \\
        --max-tokens 8000 --output cache/               # resumable: rerun after a kill
    seqkd-cache-teacher data-bin --path teacher.pt --gen-subset valid --kd-topk 8 --output cache/
    fairseq-train data-bin --user-dir fairseq_seqkd --task translation_kd --teacher-cache cache \\
        --criterion word_kd --kd-topk 8 ...               # no --teacher-path: no teacher at all

    # 4 workers, then the merge (checks that every chunk is there exactly once)
    seqkd-cache-teacher data-bin --path t.pt --gen-subset train --num-shards 4 --shard-id $i \\
        --output cache.$i
    seqkd-cache-teacher --merge-shards cache.{0,1,2,3} --gen-subset train --output cache

Every ``fairseq-generate`` data/model option works (same parser: ``--max-tokens``,
``--batch-size``, ``--cpu``, ``--fp16``, ``--user-dir``, ``--model-overrides``...), and
``--teacher-data`` as in seqkd-generate. The work is :mod:`fairseq_seqkd.distill.cache_build`'s
(resumable, sharded, byte-deterministic). Bad input exits with status 1 after one
``seqkd-cache-teacher: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from fairseq_seqkd.cli.entry import is_merge, summary_main
from fairseq_seqkd.distill.cache_build import (
    PROG,
    CacheSummary,
    build_cache_argv,
    merge_cache_shards,
)


def build_merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} --merge-shards",
        description="Join the chunks of seqkd-cache-teacher shards (--num-shards/--shard-id).",
    )
    parser.add_argument("--merge-shards", nargs="+", required=True, metavar="DIR",
                        help="the shards' --output directories")
    parser.add_argument("--gen-subset", required=True, metavar="SPLIT", help="split to merge")
    parser.add_argument("--output", required=True, metavar="DIR", help="cache directory")
    return parser


def run(argv: list[str]) -> CacheSummary:
    """Build a cache, or merge shards when ``--merge-shards`` is given; raises SeqKDError."""
    if is_merge(argv):
        args = build_merge_parser().parse_args(argv)
        return merge_cache_shards(args.merge_shards, args.output, args.gen_subset)
    return build_cache_argv(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-cache-teacher``; returns the exit status."""
    return summary_main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
