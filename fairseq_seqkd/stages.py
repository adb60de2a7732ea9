"""The one stage engine: a stage is done when its stamp still matches what made its outputs.

A stamp records a stage's *key*: the exact command (argument lists, or the options of an
in-process step), a content digest of every input file or directory, and the package version.
A stage whose key is unchanged and whose outputs exist is skipped; any other stage is redone
(or resumed, where its tool can resume). Keys hold contents, never paths' sizes or times alone:
a teacher copied in with ``cp -p``, a data-bin re-preprocessed to the same lengths, or a fixed
bug in a tool (a new version) all redo what depends on them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .version import __version__

__all__ = [
    "Stamp",
    "content_digest",
    "file_sha256",
    "stage_key",
]

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


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists), so a key compares equal to the
    stamp it was written to."""
    return json.loads(json.dumps(value, sort_keys=True))


def stage_key(
    command: Any,
    inputs: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike] = (),
    version: str = __version__,
) -> dict[str, Any]:
    """What a stage's outputs depend on: its command (any JSON value: argument lists, an
    in-process step's options), the content digest of each input (named by ``inputs``' keys,
    or by the paths as given) and the package version."""
    if not isinstance(inputs, Mapping):
        inputs = {os.fspath(p): p for p in inputs}
    digests = {name: content_digest(p) for name, p in sorted(inputs.items())}
    return _plain({"command": command, "inputs": digests, "version": version})


def _difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Why a stamp no longer matches, in a few words: what of the key changed."""
    if old.get("version") != new.get("version"):
        return f"package version {old.get('version')} -> {new.get('version')}"
    if old.get("command") != new.get("command"):
        return "command changed"
    before, after = old.get("inputs") or {}, new.get("inputs") or {}
    changed = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    if changed:
        return f"input {changed[0]} changed" + (
            f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
    extra = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return f"{extra[0]} changed" if extra else "unchanged"


class Stamp:
    """The record of a finished stage: its key and what the stage reports about itself
    (timings, a summary), written atomically once every output exists."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> dict[str, Any] | None:
        try:
            stamp = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return stamp if isinstance(stamp, dict) else None

    def matches(self, key: Mapping[str, Any], outputs: Sequence[str | os.PathLike] = ()) -> bool:
        """Whether the stage is done: the same key, and every output still there."""
        stamp = self.read()
        return (stamp is not None and stamp.get("key") == _plain(dict(key))
                and all(os.path.exists(p) for p in outputs))

    def why_redo(self, key: Mapping[str, Any], outputs: Sequence[str | os.PathLike] = ()) -> str:
        """A few words on why the stage runs: first run, what of its key changed, or which
        output is missing."""
        stamp = self.read()
        if stamp is None:
            return "first run"
        if stamp.get("key") != _plain(dict(key)):
            return _difference(stamp.get("key") or {}, _plain(dict(key)))
        missing = [os.fspath(p) for p in outputs if not os.path.exists(p)]
        return f"output {missing[0]} is missing" if missing else "done"

    def write(self, key: Mapping[str, Any], **record: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"key": _plain(dict(key)), **record},
                                                indent=1, sort_keys=True) + "\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
