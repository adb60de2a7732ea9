"""One-line user errors for bad input, without a Python traceback."""

import sys
from types import TracebackType


class SeqKDError(ValueError):
    """Bad input from the user: a missing file, an invalid option, mismatched data."""


def install_error_hook() -> None:
    """Print a :class:`SeqKDError` that escapes a CLI as one line, not a traceback.

    fairseq's CLIs do not catch exceptions; a user who passed a wrong ``--teacher-path``
    should read one line naming it, not forty lines of trainer internals.
    """
    previous = sys.excepthook
    if getattr(previous, "_seqkd_hook", False):
        return

    def hook(
        exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, SeqKDError):
            print(f"fairseq-seqkd: error: {exc}", file=sys.stderr)
        else:
            previous(exc_type, exc, tb)

    hook._seqkd_hook = True  # type: ignore[attr-defined]
    sys.excepthook = hook
