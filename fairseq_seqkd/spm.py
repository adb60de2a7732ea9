"""Opening a user's sentencepiece model, with a one-line error for a path that is none."""

from __future__ import annotations

import os
from typing import Any

from .errors import SeqKDError


def open_spm(path: str, option: str = "--spm-model") -> Any:
    """A ``sentencepiece.SentencePieceProcessor`` for ``path``; a missing file or one that is
    not a model is a :class:`SeqKDError` naming ``option``."""
    if not os.path.isfile(path):
        raise SeqKDError(f"{option} {path} does not exist")
    import sentencepiece

    try:
        return sentencepiece.SentencePieceProcessor(model_file=path)
    except RuntimeError as exc:  # sentencepiece's "could not parse ModelProto"
        raise SeqKDError(f"{option} {path} is not a sentencepiece model") from exc
