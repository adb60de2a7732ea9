"""Files that appear complete or not at all: temp file beside the target, fsync, rename.

Every tool of the project writes through here, so a job killed at any moment leaves either the
old file or the new one, never half of one.
"""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_path_beside(path: str) -> str:
    """A new empty file next to ``path`` with the permissions a plain ``open`` would give."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~umask())  # mkstemp's 0600 would hide the file from other users
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """A file (``"w"`` UTF-8 text, or ``"wb"``) that appears at ``path`` only if the block ends
    without error."""
    path = os.fspath(path)
    tmp = temp_path_beside(path)
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_path(path: str | os.PathLike) -> None:
    """Force a closed file's bytes to disk, before it is renamed into place."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def replace_synced(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a finished temporary file into place, its bytes on disk first.

    For files written by other libraries' writers (fairseq's indexed-dataset builder).
    """
    fsync_path(tmp)
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_all(files: dict[str, str]) -> None:
    """Several text files, all written to temp files before any is moved into place."""
    temps: list[tuple[str, str]] = []
    try:
        for path, text in files.items():
            tmp = temp_path_beside(path)
            temps.append((tmp, path))
            with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
