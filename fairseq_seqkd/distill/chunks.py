"""The committed chunks of a resumable run (``OUTPUT.parts/``) and which chunks a shard owns.

Shared by ``seqkd-generate`` and ``seqkd-cache-teacher``; the design (chunks, manifest,
resuming, sharding) is described in :mod:`fairseq_seqkd.distill.generate`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from ..atomic import atomic_open, atomic_write_text, fsync_path, umask
from ..errors import SeqKDError
from ..textfiles import read_text_lines

DEFAULT_CHUNK_SIZE = 10000
MANIFEST_VERSION = 2
PARTS_SUFFIX = ".parts"
SKIPPED_SUFFIX = ".skipped"
_MANIFEST = "manifest.json"


def skipped_path(output: str) -> str:
    return output + SKIPPED_SUFFIX


def read_skipped(path: str) -> list[tuple[int, int]]:
    """``(index, line number)`` of each sentence listed in a ``.skipped`` file (too long for the
    teacher); [] when there is no such file."""
    if not os.path.exists(path):
        return []
    out = []
    for lineno, line in enumerate(read_text_lines(path), start=1):
        if not (line.isascii() and line.isdigit()):
            raise SeqKDError(f"{path}:{lineno}: expected a sentence index, got {line[:40]!r}")
        out.append((int(line), lineno))
    return out


def owned_chunks(size: int, chunk_size: int, num_shards: int = 1, shard_id: int = 0) -> list[int]:
    """Ids of the chunks of a split of ``size`` sentences that shard ``shard_id`` decodes."""
    num_chunks = -(-size // chunk_size)
    return list(range(shard_id, num_chunks, num_shards))


def check_output_path(output: str, option: str = "--output") -> None:
    """Fail now, not after hours of decoding, if ``output`` cannot be written."""
    if os.path.isdir(output):
        raise SeqKDError(f"{option}: {output} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise SeqKDError(f"{option}: cannot write {output}: directory {directory} {what}")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(output)}.")
    except OSError as exc:
        raise SeqKDError(
            f"{option}: cannot write {output}: directory {directory} is not writable "
            f"({exc.strerror or exc})"
        ) from None
    os.close(fd)
    os.unlink(probe)


class ChunkStore:
    """``OUTPUT.parts/``: the manifest and the committed chunks of one (shard's) run."""

    def __init__(self, output: str, suffix: str = ".tsv"):
        self.output = output
        self.parts = output + PARTS_SUFFIX
        self.suffix = suffix  # "" for chunks that are directories (see commit_files)
        self._chunk_re = re.compile(r"chunk-([0-9]+)" + re.escape(suffix))

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.parts, _MANIFEST)

    def chunk_path(self, chunk: int) -> str:
        return os.path.join(self.parts, f"chunk-{chunk:06d}{self.suffix}")

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            with open(self.manifest_path, encoding="utf-8") as handle:
                manifest = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SeqKDError(
                f"cannot resume: {self.manifest_path} is unreadable ({exc}); delete {self.parts} "
                f"to start over"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
            raise SeqKDError(
                f"cannot resume: {self.manifest_path} was written by another version of "
                f"seqkd-generate; delete {self.parts} to start over"
            )
        return manifest

    def _compare(self, old: dict[str, Any], new: dict[str, Any], what: str) -> None:
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise SeqKDError(
                    f"cannot resume {self.parts}: {key} was {_show(old.get(key))} when it was "
                    f"started, now {_show(new.get(key))} ({what}); rerun with the same options, "
                    f"or delete {self.parts} to start over"
                )

    def check_options(self, opts: dict[str, Any]) -> None:
        """Refuse to resume with options that change the output (before loading anything)."""
        manifest = self.read_manifest()
        if manifest is not None:
            self._compare(manifest.get("options", {}), opts, "an option that changes the output")

    def start(self, opts: dict[str, Any], data: dict[str, Any]) -> set[int]:
        """Create or check the manifest; the ids of the chunks already committed."""
        manifest = self.read_manifest()
        if manifest is None:  # chunks without a manifest cannot be trusted: start afresh
            shutil.rmtree(self.parts, ignore_errors=True)
            os.makedirs(self.parts)
            atomic_write_text(
                self.manifest_path,
                json.dumps(
                    {"version": MANIFEST_VERSION, "options": opts, "data": data},
                    indent=1,
                    sort_keys=True,
                )
                + "\n",
            )
            return set()
        self._compare(manifest.get("options", {}), opts, "an option that changes the output")
        self._compare(manifest.get("data", {}), data, "the data changed")
        done = set()
        for name in os.listdir(self.parts):
            match = self._chunk_re.fullmatch(name)
            if match:
                done.add(int(match.group(1)))
            elif name.startswith(".") and name.endswith(".tmp"):  # left by a killed run
                path = os.path.join(self.parts, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
        return done

    def commit(self, chunk: int, text: str) -> None:
        atomic_write_text(self.chunk_path(chunk), text)

    def commit_files(self, chunk: int, write: Callable[[str], None]) -> None:
        """A chunk made of several files: ``write(directory)`` fills a temporary directory,
        which is renamed to :meth:`chunk_path` as a whole (so a chunk is all there or absent).
        """
        name = os.path.basename(self.chunk_path(chunk))
        tmp = tempfile.mkdtemp(dir=self.parts, prefix=f".{name}.", suffix=".tmp")
        try:
            write(tmp)
            for entry in os.listdir(tmp):
                fsync_path(os.path.join(tmp, entry))
            os.chmod(tmp, 0o777 & ~umask())
            os.rename(tmp, self.chunk_path(chunk))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def discard(self) -> None:
        """Remove the parts directory once its chunks are assembled elsewhere."""
        shutil.rmtree(self.parts)

    def assemble(self, chunks: Sequence[int], skipped: Sequence[int]) -> int:
        """Concatenate the chunks into the output; the number of hypotheses (lines)."""
        atomic_write_text(skipped_path(self.output), "".join(f"{i}\n" for i in skipped))
        lines = 0
        with atomic_open(self.output) as out:
            for chunk in chunks:
                with open(self.chunk_path(chunk), encoding="utf-8", newline="\n") as part:
                    text = part.read()
                lines += text.count("\n")
                out.write(text)
        shutil.rmtree(self.parts)
        return lines


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."

