"""One-line user errors for bad input; every other exception keeps its traceback."""

import os
import sys
import traceback
from types import TracebackType

DEBUG_VARIABLE = "SEQKD_DEBUG"


class SeqKDError(ValueError):
    """Bad input from the user: a missing file the user named, an invalid option, mismatched
    data. Code that opens a path the user gave raises it, naming the option or file; a missing
    file anywhere else is a bug and keeps its traceback."""


def user_error_message(exc: BaseException) -> str | None:
    """The one line to show for a user error, or None for an internal error.

    User errors are :class:`SeqKDError` (and subclasses) only; any other exception, a
    ``FileNotFoundError``, ``ValueError`` or ``OSError`` included, is a bug or an environment
    problem whose traceback must reach the user.
    """
    if isinstance(exc, SeqKDError):
        return " ".join(str(exc).split())
    return None


def debugging() -> bool:
    """Whether ``SEQKD_DEBUG`` asks for the traceback behind one-line errors too."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def print_user_error(prog: str, exc: BaseException) -> None:
    """``prog: error: <one line>`` on stderr, after the traceback under ``SEQKD_DEBUG=1``."""
    if debugging():
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"{prog}: error: {user_error_message(exc)}", file=sys.stderr)


def is_fairseq_console_script(argv0: str) -> bool:
    """Whether ``argv0`` (``sys.argv[0]``) is one of fairseq's command-line tools.

    ``fairseq-train`` and its siblings are console scripts named ``fairseq-*``;
    ``python -m fairseq_cli.train`` runs a module file inside the ``fairseq_cli`` package.
    """
    path = os.path.abspath(argv0) if argv0 else ""
    return os.path.basename(path).startswith("fairseq-") or (
        os.path.basename(os.path.dirname(path)) == "fairseq_cli"
    )


def install_error_hook() -> None:
    """Print a :class:`SeqKDError` that escapes a CLI as one line, not a traceback.

    fairseq's CLIs do not catch exceptions; a user who passed a wrong ``--teacher-path``
    should read one line naming it, not forty lines of trainer internals. Any other
    exception goes to the previous hook with its traceback.
    """
    previous = sys.excepthook
    if getattr(previous, "_seqkd_hook", False):
        return

    def hook(
        exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, SeqKDError):
            print_user_error("fairseq-seqkd", exc)
        else:
            previous(exc_type, exc, tb)

    hook._seqkd_hook = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def install_error_hook_in_fairseq_cli() -> bool:
    """Install the hook only inside a fairseq console script (``--user-dir`` import).

    fairseq's CLIs would print the plugin's option errors as tracebacks; a Python program
    or test that imports the plugin keeps its own ``sys.excepthook``. Returns whether the
    hook was installed.
    """
    if not is_fairseq_console_script(sys.argv[0] if sys.argv else ""):
        return False
    install_error_hook()
    return True
