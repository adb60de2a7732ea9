"""``seqkd-translate``: serve a student exported with ``seqkd-export --format ctranslate2``.

Examples::

    seqkd-translate student-ct2 < input.en > output.de
    seqkd-translate student-ct2 --input test.en --output test.de --beam 1 --batch-size 64
    echo "A man rides a horse." | seqkd-translate student-ct2 --buffer-size 1

Raw text in, raw text out, one output line per input line, in order; an empty line gives an
empty line. Like ``fairseq-interactive`` it reads stdin and writes stdout by default. A file
given with ``--output`` appears only when the run is complete. A tokens/s summary goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from fairseq_seqkd.atomic import atomic_open
from fairseq_seqkd.cli.entry import OneLineParser, run_main
from fairseq_seqkd.deploy.translator import TranslateStats, Translator
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.textfiles import count_lines, decode_lines, iter_text_lines

PROG = "seqkd-translate"
FILE_BUFFER = 1024  # lines sorted into batches together when reading a file


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("model_dir", metavar="DIR",
                        help="a seqkd-export --format ctranslate2 directory")
    parser.add_argument("--input", metavar="FILE", help="raw text, one sentence a line "
                        "(default: stdin)")
    parser.add_argument("--output", metavar="FILE", help="translations (default: stdout)")
    parser.add_argument("--beam", type=int, default=1, metavar="N",
                        help="beam size; 1 is greedy decoding (default)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N",
                        help="sentences decoded together (default 32)")
    parser.add_argument("--buffer-size", type=int, metavar="N",
                        help="lines read before decoding, sorted by length into batches "
                        f"(default: {FILE_BUFFER} from --input, --batch-size from stdin)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads for decoding (default 1)")
    parser.add_argument("--max-len-a", type=float, default=0.0, metavar="A",
                        help="output length cap a*source+b, as in fairseq-generate (default 0)")
    parser.add_argument("--max-len-b", type=int, default=200, metavar="B",
                        help="see --max-len-a (default 200)")
    parser.add_argument("--no-progress-bar", action="store_true",
                        help="no progress bar when reading --input")
    return parser


def _check(args: argparse.Namespace) -> None:
    for option in ("beam", "batch_size", "threads", "buffer_size"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise SeqKDError(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    if args.input is not None and not os.path.isfile(args.input):
        raise SeqKDError(f"--input {args.input} does not exist")
    if args.output is not None:
        if os.path.isdir(args.output):
            raise SeqKDError(f"--output {args.output} is a directory")
        if args.input is not None and os.path.exists(args.output) and \
                os.path.samefile(args.input, args.output):
            raise SeqKDError(f"--output {args.output} is the --input file")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    _check(args)
    translator = Translator(args.model_dir, threads=args.threads)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)  # no partial --output on kill
    stats = TranslateStats()
    buffer = args.buffer_size or (FILE_BUFFER if args.input else args.batch_size)
    lines: Iterator[str] = (iter_text_lines(args.input) if args.input
                            else decode_lines(sys.stdin.buffer, "<stdin>"))
    if args.input and not args.no_progress_bar:
        from tqdm import tqdm

        lines = iter(tqdm(lines, total=count_lines(args.input), unit=" lines",
                          file=sys.stderr, desc=PROG, leave=False))
    outputs = translator.translate_stream(
        lines, beam=args.beam, batch_size=args.batch_size, buffer_size=buffer,
        stats=stats, max_len_a=args.max_len_a, max_len_b=args.max_len_b,
    )
    if args.output is None:
        for out in outputs:
            sys.stdout.write(out + "\n")
            if buffer <= args.batch_size:
                sys.stdout.flush()
        sys.stdout.flush()
    else:
        with atomic_open(args.output) as handle:
            for out in outputs:
                handle.write(out + "\n")
    print(f"{PROG}: {stats.describe(translator.max_source_tokens)} (beam {args.beam}, batch "
          f"{args.batch_size}, {args.threads} thread(s))", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-translate``; returns the exit status."""
    return run_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
