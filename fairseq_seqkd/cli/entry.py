"""What every ``seqkd-*`` console script does around its work: logging, exit codes, errors."""

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import SeqKDError, print_user_error, user_error_message


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors reach ``run_main`` as one line, like any other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SeqKDError(message)


def run_main(
    prog: str,
    run: Callable[[list[str]], int],
    argv: Sequence[str] | None,
) -> int:
    """Run ``run(argv)``: bad input is one line on stderr and exit 1, never a traceback.

    Bad input is a :class:`SeqKDError`; anything else (an internal ``ValueError``,
    ``OSError`` or missing file too) propagates with its traceback. ``SEQKD_DEBUG=1`` prints
    the traceback behind a one-line error as well.

    ``argv`` None means a console script: fairseq's imports leave the root logger at DEBUG, so
    logging is set up the way fairseq's own CLIs do.
    """
    if argv is None:
        argv = sys.argv[1:]
        logging.basicConfig(
            format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
            datefmt="%Y-%m-%d %H:%M:%S",
            level=os.environ.get("LOGLEVEL", "INFO").upper(),
            stream=sys.stderr,
            force=True,
        )
    try:
        return run(list(argv))
    except SystemExit as exc:  # --help, or an argparse error it already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; run it again to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if user_error_message(exc) is None:
            raise
        print_user_error(prog, exc)
        return 1


def is_merge(argv: Sequence[str]) -> bool:
    """Whether a sharded tool was asked to join its shards (``--merge-shards``)."""
    return any(a == "--merge-shards" or a.startswith("--merge-shards=") for a in argv)


def summary_main(prog: str, run: Callable[[list[str]], Any], argv: Sequence[str] | None) -> int:
    """``run_main`` for the tools whose ``run`` returns a summary with a ``describe()`` line."""

    def work(args: list[str]) -> int:
        print(run(args).describe(), flush=True)
        return 0

    return run_main(prog, work, argv)
