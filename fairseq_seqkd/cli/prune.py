"""``seqkd-prune``: magnitude-prune a fairseq checkpoint offline (See et al. 2016).

Example::

    seqkd-prune --input student/checkpoint_best.pt --output student.p80.pt \\
        --prune-ratio 0.8 --prune-scheme class-blind

The output is the same fairseq checkpoint (optimizer state and all) with the smallest weights
set to exactly zero, so retraining it with ``--task translation_kd --prune-ratio 0.8
--restore-file student.p80.pt`` rebuilds the identical masks from its zeros. Tied tensors
(``--share-all-embeddings``) are pruned once. The file is written to a temporary name and
renamed; bad input exits with status 1 after one ``seqkd-prune: error: ...`` line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fairseq_seqkd.checkpoints import (
    check_output,
    fmt_count,
    parameter_counts,
    plain_cfg,
    prune_state,
    save_atomic,
)
from fairseq_seqkd.cli.entry import OneLineParser, run_main
from fairseq_seqkd.pruning import (
    DEFAULT_PRUNE_PARAMS,
    SCHEMES,
    check_ratio,
    format_sparsity_table,
    sparsity_table,
)
from fairseq_seqkd.teacher import load_checkpoint_state

PROG = "seqkd-prune"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, metavar="CKPT", help="fairseq checkpoint")
    parser.add_argument("--output", required=True, metavar="CKPT", help="pruned checkpoint")
    parser.add_argument(
        "--prune-ratio", type=float, required=True, metavar="R",
        help="fraction of the prunable weights set to zero, in [0, 1)",
    )
    parser.add_argument("--prune-scheme", choices=SCHEMES, default="class-blind")
    parser.add_argument(
        "--prune-params", default=DEFAULT_PRUNE_PARAMS, metavar="REGEX",
        help="regex choosing the prunable tensors by name (never biases or layer norms); "
        "default: every weight matrix incl. embeddings and output projection",
    )
    return parser


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_ratio(args.prune_ratio)  # before the checkpoint is read
    check_output(args.output, [args.input])
    state = load_checkpoint_state(args.input, "--input")
    before = parameter_counts(state["model"])
    weights, aliases = prune_state(state, args.prune_ratio, args.prune_scheme, args.prune_params)
    after = parameter_counts(state["model"])
    state["cfg"] = plain_cfg(state["cfg"])
    save_atomic(state, args.output)

    print(format_sparsity_table(sparsity_table(weights)))
    for name, names in aliases.items():
        if len(names) > 1:
            print(f"(tied: {name} = {', '.join(names[1:])})")
    print(f"{PROG}: {args.prune_scheme} {args.prune_ratio:g}: {args.input} -> {args.output}")
    print(f"  before: {fmt_count(*before)}")
    print(f"  after:  {fmt_count(*after)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-prune``; returns the exit status."""
    return run_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
