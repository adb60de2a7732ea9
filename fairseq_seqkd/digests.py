"""Content digests: what the stage engine's keys and stamps hold, and the tools' records of the
files they read (a teacher, a monolingual text, a model directory).

A digest is the SHA-256 of a file's bytes, or of a directory's file names and contents, never
of sizes or times alone: a file rewritten in place with its modification time set back still
reads as changed. Digests are memoised on the file's identity (device, inode, size, mtime and
ctime), so a file read by several stages of one run is hashed once.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["content_digest", "file_sha256"]

_BLOCK = 1 << 20

# (device, inode, size, mtime_ns, ctime_ns) -> digest. ctime moves on every write and on
# every utime() call, and cannot be set back, so a file rewritten in place with its mtime
# restored is still rehashed.
_memo: dict[tuple[int, int, int, int, int], str] = {}


def _identity(stat: os.stat_result) -> tuple[int, int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (memoised on the file's identity)."""
    stat = os.stat(path)
    identity = _identity(stat)
    known = _memo.get(identity)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    value = digest.hexdigest()
    # a file changed while it was read gets no memo entry: its next digest reads it again
    if _identity(os.stat(path)) == identity:
        _memo[identity] = value
    return value


def _is_hidden(name: str) -> bool:
    return name.startswith(".")  # temp files of atomic writes, editors' and OS droppings


def content_digest(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, or of a directory's files: their relative paths and
    contents, in sorted order (hidden files, such as unfinished temporary files, left out)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in sorted(f for f in files if not _is_hidden(f)):
            full = Path(root) / name
            digest.update(full.relative_to(path).as_posix().encode("utf-8") + b"\0")
            digest.update(file_sha256(full).encode("ascii") + b"\n")
    return digest.hexdigest()
