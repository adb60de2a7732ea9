"""``seqkd-build``: teacher n-best -> selected targets -> distilled data-bin, in one command.

Example::

    seqkd-build --data data-bin --teacher teacher/checkpoint_best.pt --output data-kd \\
        --strategy seq-inter --beam 35 --sim bleu --remove-bpe sentencepiece --workers 2

The stages (mono, generate, generate-mono, select, binarize), their records in
``OUT_DIR/seqkd/<stage>/`` and how a killed or changed build resumes are described in
:mod:`fairseq_seqkd.distill.build`, whose
:func:`~fairseq_seqkd.distill.build.build_distilled_data` this command calls. A rerun redoes
exactly the stages whose options, input contents (teacher, data, monolingual text) or package
version changed, and says so. With ``--fallback gold`` (the default) the train split stays
aligned by index with the gold one, so ``OUT_DIR`` also serves as ``--distilled-data``; with
``--fallback drop`` only the kept sentences are written, their gold indices listed in
``<split>.kept-indices``. A sentence too long for the teacher has no hypothesis: an error naming
it, unless ``--allow-missing`` (then it gets the fallback, and the count goes to stderr).

``--teacher`` is a fairseq checkpoint or a CTranslate2 model directory (``--teacher-threads``,
``--teacher-quantization``); ``--translations FILE`` takes another system's translations
instead, and no teacher runs. ``--mono-source FILE`` (repeatable) adds the teacher's
translations of monolingual source text, segmented with ``--spm-model``, after the parallel
pairs in the same split.

``--filter-worst P`` and ``--min-score S`` filter on the teacher's n-best scores as in
``seqkd-select`` (a sentence they drop keeps its reference under ``--fallback gold``); changing
them redoes the selection and binarization, not the decoding.

Bad input exits with status 1 after a single ``seqkd-build: error: ...`` line on stderr, before
anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fairseq_seqkd.cli.entry import OneLineParser, run_main
from fairseq_seqkd.cli.select import add_allow_missing_option, add_score_filter_options
from fairseq_seqkd.distill.build import build_distilled_data
from fairseq_seqkd.distill.build_options import BPE_SCHEMES
from fairseq_seqkd.distill.ct2_teacher import COMPUTE_TYPES
from fairseq_seqkd.distill.options import TEACHER_DATA_HELP
from fairseq_seqkd.distill.select import FALLBACKS, STRATEGIES
from fairseq_seqkd.distill.similarity import SIMILARITIES

PROG = "seqkd-build"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Build sequence-level KD training data (Kim & Rush, 2016): teacher beam "
        "search, target selection and binarization, resumable stage by stage.",
    )
    p.add_argument("--data", required=True, metavar="DATA_BIN",
                   help="fairseq data-bin of the gold data (fairseq-preprocess output)")
    p.add_argument("--teacher", default=None, metavar="CKPT[:CKPT2]|CT2_DIR",
                   help="teacher checkpoint (several joined by ':' decode as an ensemble), or a "
                   "CTranslate2 model directory whose vocabularies are the data's dictionaries "
                   "(seqkd-export --format ctranslate2); required unless --translations")
    p.add_argument("--output", required=True, metavar="OUT_DIR",
                   help="data-bin to write (created); its seqkd/ folder holds the stages")
    p.add_argument("--strategy", choices=STRATEGIES, required=True,
                   help="seq-kd: the teacher's best hypothesis; seq-inter: the hypothesis of "
                   "the n-best closest to the reference by --sim")
    p.add_argument("--sim", choices=SIMILARITIES, default="bleu",
                   help="sentence similarity for seq-inter (sacrebleu's sentence-level "
                   "defaults; ter: lower is better)")
    p.add_argument("--beam", type=int, default=5, metavar="K", help="beam size (default 5)")
    p.add_argument("--nbest", type=int, default=None, metavar="K",
                   help="hypotheses kept per sentence (default: 1 for seq-kd, --beam for "
                   "seq-inter)")
    p.add_argument("--remove-bpe", choices=BPE_SCHEMES, default="none",
                   help="undo this subword segmentation before computing similarities")
    p.add_argument("--max-len-ratio", type=float, default=None, metavar="R",
                   help="drop a hypothesis whose subword length ratio to the source exceeds R "
                   "either way")
    p.add_argument("--dedup", action="store_true", help="drop repeated (source, target) pairs")
    add_score_filter_options(p)
    p.add_argument("--fallback", choices=FALLBACKS, default="gold",
                   help="gold: a sentence without a usable hypothesis (a filter dropped it, or "
                   "none with --allow-missing) keeps its reference (the split stays aligned); "
                   "drop: it is left out")
    add_allow_missing_option(p)
    p.add_argument("--workers", type=int, default=1, metavar="W",
                   help="processes scoring similarities")
    p.add_argument("--cpu", action="store_true", help="decode on the CPU")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="sentences per decoding batch")
    p.add_argument("--max-len-a", type=float, default=None, metavar="A",
                   help="as fairseq-generate's: hypotheses end at A * source length + "
                   "--max-len-b tokens (default 0)")
    p.add_argument("--max-len-b", type=int, default=None, metavar="B",
                   help="as fairseq-generate's (default 200)")
    p.add_argument("--split", default="train", help="split to distill (default: train)")
    p.add_argument("--teacher-data", default=None, metavar="DIR", help=TEACHER_DATA_HELP)
    p.add_argument("--teacher-threads", type=int, default=None, metavar="N",
                   help="CPU threads the teacher decodes with (default: the engine's own; 0 "
                   "for a CTranslate2 teacher is its default)")
    p.add_argument("--teacher-quantization", choices=COMPUTE_TYPES, default="default",
                   metavar="TYPE",
                   help="a CTranslate2 teacher's compute type: one of "
                   f"{', '.join(COMPUTE_TYPES)} (default: the model's own)")
    mono = p.add_argument_group("monolingual source text and translations from other systems")
    mono.add_argument("--mono-source", action="append", metavar="FILE",
                      help="source-language text the teacher also translates (repeatable); its "
                      "pairs follow the parallel ones in the split, OUT_DIR/SPLIT.provenance.tsv "
                      "says where each line came from")
    mono.add_argument("--mono-size", type=int, default=None, metavar="N",
                      help="use the first N usable lines of the --mono-source files (default: "
                      "all)")
    mono.add_argument("--spm-model", default=None, metavar="MODEL",
                      help="sentencepiece model that segments --mono-source and translations "
                      "(the data-bin's own); without it, lines are taken as already segmented")
    mono.add_argument("--translations", default=None, metavar="FILE",
                      help="one raw translation per sentence of --split, made by any system: "
                      "they are the targets and no teacher runs")
    mono.add_argument("--mono-translations", action="append", metavar="FILE",
                      help="with --translations: one translation per line of each --mono-source "
                      "file, in the same order (repeatable)")
    return p


def say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def _run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    say(build_distilled_data(**vars(args), log=say, warn=warn).describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-build``; returns the exit status."""
    return run_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
