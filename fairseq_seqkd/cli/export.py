"""``seqkd-export``: a deployable student, as a stock fairseq checkpoint or a CTranslate2 model.

Examples::

    seqkd-export --input student/checkpoint_best.pt --output student.pt
    seqkd-export --checkpoint-dir student --average-last 5 --output student.avg5.pt
    seqkd-export --input student/checkpoint_best.pt --format ctranslate2 \\
        --quantization int8 --spm-model spm.model --output student-ct2

    fairseq-generate data-bin --path student.pt --beam 5     # no --user-dir
    seqkd-translate student-ct2 < input.txt > output.txt

``--format fairseq`` (the default) writes a checkpoint that stock fairseq loads without the
plugin (see :mod:`fairseq_seqkd.deploy.stock`); ``--format ctranslate2`` converts it with
CTranslate2's own fairseq converter into a self-contained directory that ``seqkd-translate``
serves (see :mod:`fairseq_seqkd.deploy.ct2_export`). Outputs are written to a temporary name
and renamed; bad input exits with status 1 after one ``seqkd-export: error: ...`` line, and
nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fairseq_seqkd.checkpoints import fmt_count
from fairseq_seqkd.cli.entry import OneLineParser, run_main
from fairseq_seqkd.deploy.ct2_export import QUANTIZATIONS, export_ctranslate2
from fairseq_seqkd.deploy.stock import checkpoint_inputs, export_stock

PROG = "seqkd-export"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="CKPT", help="the fairseq checkpoint to export")
    source.add_argument(
        "--checkpoint-dir", metavar="DIR",
        help="directory of epoch checkpoints (checkpointN.pt); needs --average-last",
    )
    parser.add_argument(
        "--average-last", type=int, metavar="N",
        help="average the model weights of the last N epoch checkpoints of --checkpoint-dir",
    )
    parser.add_argument(
        "--output", required=True, metavar="PATH",
        help="exported checkpoint (--format fairseq) or model directory (--format ctranslate2)",
    )
    parser.add_argument("--format", choices=("fairseq", "ctranslate2"), default="fairseq",
                        help="a stock fairseq checkpoint (default) or a CTranslate2 model "
                        "directory for seqkd-translate")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default="int8",
                        help="CTranslate2 weight type (default int8); --format ctranslate2 only")
    parser.add_argument("--spm-model", metavar="FILE",
                        help="sentencepiece model copied into the CTranslate2 directory, so that "
                        "seqkd-translate reads and writes raw text; --format ctranslate2 only")
    parser.add_argument("--data", metavar="DIR",
                        help="directory with the model's dict.*.txt (default: the training "
                        "data directory the checkpoint records); --format ctranslate2 only")
    parser.add_argument("--force", action="store_true",
                        help="replace a non-empty --output directory that is not an earlier "
                        "export; --format ctranslate2 only")
    return parser


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    paths = checkpoint_inputs(args.input, args.checkpoint_dir, args.average_last)
    if args.format == "ctranslate2":
        manifest = export_ctranslate2(
            paths, args.output, quantization=args.quantization, spm_model=args.spm_model,
            data=args.data, force=args.force,
        )
        print(f"{PROG}: {manifest.describe()}")
        return 0
    given = [f"--{name.replace('_', '-')}" for name in ("spm_model", "data", "force")
             if getattr(args, name)]
    if args.quantization != parser.get_default("quantization"):
        given.append("--quantization")
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        parser.error(f"{', '.join(given)} {verb} only with --format ctranslate2")
    result = export_stock(paths, args.output)
    what = paths[0] if len(paths) == 1 else f"average of {len(paths)}: {', '.join(paths)}"
    print(f"{PROG}: {what} -> {args.output}")
    print(f"  config: {'; '.join(result.changes) or 'already stock'}; optimizer state dropped")
    print(f"  file size: {result.size_in:,} -> {result.size_out:,} bytes "
          f"({100.0 * result.size_out / result.size_in:.1f}%)")
    print(f"  input:  {fmt_count(*result.before)}")
    print(f"  output: {fmt_count(*result.after)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-export``; returns the exit status."""
    return run_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
