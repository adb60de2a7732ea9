"""Reading users' text files: UTF-8 lines with errors that name the file and line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO

from .errors import SeqKDError


def iter_text_lines(path: str) -> Iterator[str]:
    """Lines of a UTF-8 text file (split on '\\n' only, '\\r' stripped), read one at a time,
    with a line-numbered decode error: a file of any size streams in constant memory."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (the with block below closes it)
    except OSError as exc:
        raise SeqKDError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        yield from decode_lines(handle, path)


def decode_lines(handle: IO[bytes], name: str) -> Iterator[str]:
    """:func:`iter_text_lines` of an open binary stream (stdin too), ``name`` in its errors;
    each line is yielded as soon as it is read."""
    for lineno, raw in enumerate(handle, start=1):
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SeqKDError(
                f"{name}:{lineno}: invalid UTF-8 byte 0x{raw[exc.start]:02x} "
                f"at column {exc.start + 1}"
            ) from None


def read_text_lines(path: str) -> list[str]:
    """Every line of a UTF-8 text file (see :func:`iter_text_lines`)."""
    return list(iter_text_lines(path))


def count_lines(path: str | os.PathLike) -> int:
    """Newline characters in a file (its line count when the last line ends with one), read
    in 1 MiB blocks."""
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
