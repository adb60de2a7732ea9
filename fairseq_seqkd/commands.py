"""Finding the console scripts (fairseq's and the project's) that the tools run."""

import shutil
import sys
from pathlib import Path

from .errors import SeqKDError


def console_script(name: str) -> str:
    """A console script installed beside this interpreter (the venv), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SeqKDError(f"{name} is not installed (looked in {candidate.parent} and PATH)")
    return found
