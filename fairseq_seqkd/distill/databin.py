"""A gold fairseq data-bin as the distillation tools read it: its language pair, dictionaries
and the split's files."""

from __future__ import annotations

import os
import re
from typing import Any

from fairseq.data import data_utils

from ..data.distilled import load_split
from ..digests import content_digest
from ..errors import SeqKDError
from ..teacher import load_dictionary

_DICT = re.compile(r"dict\..+\.txt")


def _split_file(name: str, split: str) -> bool:
    """Whether ``name`` belongs to ``split`` (``train.src-tgt.src.bin``; fairseq's extra shards
    ``train1.*`` too)."""
    return re.match(rf"{re.escape(split)}[0-9]*\.", name) is not None


def _plain_files(directory: str) -> list[str]:
    """The names of the visible regular files of ``directory``, sorted."""
    return sorted(name for name in os.listdir(directory)
                  if not name.startswith(".") and os.path.isfile(os.path.join(directory, name)))


def data_files(directory: str, split: str) -> dict[str, str]:
    """What decoding ``split`` reads from a data-bin: the split's files and the dictionaries,
    ``{name: path}``."""
    return {name: os.path.join(directory, name) for name in _plain_files(directory)
            if _split_file(name, split) or _DICT.fullmatch(name)}


def split_digests(directory: str, split: str) -> dict[str, str]:
    """The content digests of a split's files and the dictionaries, by file name: what a
    resumed decoding of it must find unchanged (seqkd-generate's and the CTranslate2 teacher's
    chunk manifests record them)."""
    return {f"{name} (sha256)": content_digest(path)
            for name, path in data_files(directory, split).items()}


class DataBin:
    """The gold data-bin: its language pair, dictionaries and the split's files.

    ``source_only``: the split may have no target side (a source-only split, as a teacher
    decodes monolingual text from it); fairseq finds it as ``<split>.<src>-<tgt>.<src>``, or
    under the reversed pair.
    """

    def __init__(self, directory: str, split: str, *, source_only: bool = False):
        if not os.path.isdir(directory):
            raise SeqKDError(f"--data: {directory} is not a directory")
        self.dir = os.path.abspath(directory)
        self.split = split
        src, tgt = data_utils.infer_language_pair(self.dir)
        if src is None or tgt is None:
            raise SeqKDError(
                f"--data: no binarized split in {directory} (expected files such as "
                f"{split}.src-tgt.src.bin from fairseq-preprocess)"
            )
        self.prefix = None
        self.src, self.tgt = src, tgt
        sides = (src,) if source_only else (src, tgt)
        for a, b in ((src, tgt), (tgt, src)):
            prefix = os.path.join(self.dir, f"{split}.{a}-{b}.")
            if all(os.path.isfile(prefix + f"{lang}.{ext}")
                   for lang in sides for ext in ("bin", "idx")):
                self.prefix = prefix
                break
        if self.prefix is None:
            raise SeqKDError(
                f"--data: {os.path.join(directory, f'{split}.{src}-{tgt}.{src}.bin')} (and its "
                f".idx, and the {tgt} side) not found; is --split {split} binarized?"
            )
        self.dict_files = {}
        self.dicts = {}
        for lang in (self.src, self.tgt):
            path = os.path.join(self.dir, f"dict.{lang}.txt")
            if not os.path.isfile(path):
                raise SeqKDError(f"--data: {path} not found")
            self.dicts[lang] = load_dictionary(path, "--data")
            self.dict_files[lang] = path

    @property
    def src_dict(self) -> Any:
        return self.dicts[self.src]

    @property
    def tgt_dict(self) -> Any:
        return self.dicts[self.tgt]

    @property
    def pair_prefix(self) -> str:
        """``<split>.<src>-<tgt>.``: the file names of the split, less the language and type."""
        return os.path.basename(self.prefix)

    def inputs(self, name: str = "data") -> dict[str, str]:
        """The split's files and the dictionaries, named for a stage key (``data/<file>``)."""
        return {f"{name}/{file}": path for file, path in data_files(self.dir, self.split).items()}

    def digests(self) -> dict[str, str]:
        """What a resumed decoding of this split must find unchanged: :func:`split_digests`."""
        return split_digests(self.dir, self.split)

    def dict_names(self) -> tuple[str, str]:
        """The source and target dictionaries, as errors name them."""
        return (f"--data {self.dict_files[self.src]}", f"--data {self.dict_files[self.tgt]}")

    def load(self, lang: str) -> Any:
        return load_split(self.prefix + lang, self.dicts[lang], "--data")

    def other_files(self) -> list[str]:
        """Every file to copy unchanged: dictionaries and the other splits."""
        return [name for name in _plain_files(self.dir)
                if not _split_file(name, self.split) and name != "preprocess.log"]
