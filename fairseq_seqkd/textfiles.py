"""Reading users' text files: UTF-8 lines with errors that name the file and line."""

from __future__ import annotations

from .errors import SeqKDError


def read_text_lines(path: str) -> list[str]:
    """Lines of a UTF-8 text file (split on '\\n' only), with a line-numbered decode error."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise SeqKDError(f"cannot read {path}: {exc.strerror or exc}") from None
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines = []
    for lineno, raw in enumerate(raw_lines, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise SeqKDError(
                f"{path}:{lineno}: invalid UTF-8 byte 0x{raw[exc.start]:02x} "
                f"at column {exc.start + 1}"
            ) from None
    return lines
