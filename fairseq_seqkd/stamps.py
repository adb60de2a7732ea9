"""Keys and stamps: whether a stage's outputs are still what its command and inputs made.

A stage's *key* is its exact command (argument lists, or the options of an in-process step), a
content digest (:mod:`.digests`) of every input file or directory, and the package version:
contents, never sizes or times alone, so a teacher copied in with ``cp -p``, a data-bin
re-preprocessed to the same lengths or a fixed bug in a tool (a new version) all redo what
depends on them. A :class:`Stamp` records the key of a finished stage with what the stage says
of itself (timings, a summary) and, where asked, its outputs' content: the stage is done while
its key is the same and its outputs are there, unchanged. When it is not, the stamp says why in
a few words. The stage runner (:mod:`.stages`) and the built-in corpus's writer decide with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .digests import content_digest
from .version import __version__

__all__ = ["Stamp", "stage_key"]


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


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _difference(old: Mapping[str, Any], new: Mapping[str, Any], options: bool = False) -> str:
    """Why a stamp no longer matches, in a few words: what of the key changed (with
    ``options``, the command is a dict of options, and those that changed are named)."""
    if old.get("version") != new.get("version"):
        return f"package version {old.get('version', 'unknown')} -> {new.get('version')}"
    if old.get("command") != new.get("command"):
        if not options:
            return "command changed"
        before, after = old.get("command") or {}, new["command"]
        return "options changed (" + ", ".join(
            f"{k}: {before.get(k)} -> {after.get(k)}" for k in _changed(before, after)) + ")"
    changed = _changed(old.get("inputs") or {}, new.get("inputs") or {})
    if changed:
        return f"input {changed[0]} changed" + (
            f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
    extra = _changed(old, new)
    return f"{extra[0]} changed" if extra else "unchanged"


class Stamp:
    """The record of a finished stage: its key and what the stage reports about itself
    (timings, a summary, the content of its outputs, named relative to ``root``), written
    atomically once every output exists."""

    def __init__(self, path: str | os.PathLike, root: str | os.PathLike = "."):
        self.path, self.root = Path(path), Path(root)

    def read(self) -> dict[str, Any] | None:
        try:
            stamp = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):  # none yet, or not JSON: not done
            return None
        return stamp if isinstance(stamp, dict) else None

    def matches(self, key: Mapping[str, Any], outputs: Sequence[str | os.PathLike] = ()) -> bool:
        """Whether the stage is done: the same key, every output still there (and the same
        content, where recorded)."""
        return self.why_redo(key, outputs) is None

    def why_redo(self, key: Mapping[str, Any], outputs: Sequence[str | os.PathLike] = (),
                 options: bool = False) -> str | None:
        """A few words on why the stage runs - first run, what of its key changed (see
        :func:`_difference`), an output changed or missing - or None: it is done."""
        stamp = self.read()
        if stamp is None:
            return "first run"
        if stamp.get("key") != _plain(dict(key)):
            return _difference(stamp.get("key") or {}, _plain(dict(key)), options)
        for name, digest in (stamp.get("outputs") or {}).items():
            path = self.root / name
            if not path.exists():
                return f"output {name} is missing"
            if content_digest(path) != digest:
                return f"output {name} changed"
        missing = [os.fspath(p) for p in outputs if not os.path.exists(p)]
        return f"output {missing[0]} is missing" if missing else None

    def write(self, key: Mapping[str, Any], outputs: Sequence[str | os.PathLike] = (),
              **record: Any) -> None:
        """Record ``key`` and ``record``, and the content of ``outputs`` (which
        :meth:`why_redo` then checks)."""
        if outputs:
            record["outputs"] = {os.path.relpath(p, self.root): content_digest(p)
                                 for p in outputs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"key": _plain(dict(key)), **record},
                                                indent=1, sort_keys=True) + "\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
