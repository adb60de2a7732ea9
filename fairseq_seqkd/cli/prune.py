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
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor

from fairseq_seqkd.atomic import atomic_open
from fairseq_seqkd.cli.entry import OneLineParser, run_main
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.pruning import (
    DEFAULT_PRUNE_PARAMS,
    SCHEMES,
    compute_masks,
    format_sparsity_table,
    sparsity_table,
)
from fairseq_seqkd.pruning_hook import group_tied, prunable_tensors
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


# --------------------------------------------------------------------- shared with export


def check_output(output: str, inputs: Iterable[str]) -> None:
    """Refuse to overwrite an input and fail before any work on an unwritable path."""
    real = os.path.realpath(output)
    for path in inputs:
        same = os.path.realpath(path) == real
        if not same and os.path.exists(output) and os.path.exists(path):
            same = os.path.samefile(path, output)
        if same:
            raise SeqKDError(f"--output {output} is the input checkpoint {path}; "
                             "choose another file name")
    if os.path.isdir(output):
        raise SeqKDError(f"--output {output} is a directory")
    directory = os.path.dirname(real)
    if not os.path.isdir(directory):
        raise SeqKDError(f"--output {output}: directory {directory} does not exist")


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save`` through a temporary file beside ``path``: never half-written."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


_NOT_PARAMETERS = (".version", "._float_tensor")  # buffers fairseq keeps in its state dicts


def parameter_counts(model_state: Mapping[str, Tensor]) -> tuple[int, int]:
    """``(total, nonzero)`` over the floating tensors of a state dict, tied ones once."""
    total = nonzero = 0
    items = [(n, t) for n, t in model_state.items() if not n.endswith(_NOT_PARAMETERS)]
    for _names, tensor in group_tied(items, by_value=True):
        total += tensor.numel()
        nonzero += int(torch.count_nonzero(tensor).item())
    return total, nonzero


def plain_cfg(cfg: Any) -> Any:
    """A checkpoint's cfg as plain containers (what fairseq's trainer saves)."""
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return cfg


def fmt_count(total: int, nonzero: int) -> str:
    pct = 100.0 * nonzero / total if total else 0.0
    return f"{total:,} parameters, {nonzero:,} non-zero ({pct:.2f}%)"


# --------------------------------------------------------------------- pruning


def prune_state(
    state: dict[str, Any], ratio: float, scheme: str, pattern: str | None
) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """Prune ``state['model']`` in place; return the pruned tensors and their names."""
    if not 0.0 <= ratio < 1.0:
        raise SeqKDError(f"--prune-ratio must be in [0, 1), got {ratio}")
    if scheme not in SCHEMES:
        raise SeqKDError(f"--prune-scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")
    model = state["model"]
    weights, aliases = prunable_tensors(model.items(), pattern, by_value=True)
    masks = compute_masks(weights, ratio, scheme)
    with torch.no_grad():
        for name, mask in masks.items():
            for alias in aliases[name]:  # copies of a tied weight saved from GPU, too
                model[alias].masked_fill_(~mask, 0)
    return weights, aliases


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if not 0.0 <= args.prune_ratio < 1.0:
        raise SeqKDError(f"--prune-ratio must be in [0, 1), got {args.prune_ratio}")
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
