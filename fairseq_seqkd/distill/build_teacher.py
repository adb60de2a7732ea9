"""The teacher of a ``seqkd-build``: fairseq checkpoints or a CTranslate2 model directory.

``--teacher FILE[:FILE...]`` is a fairseq checkpoint (several decode as an ensemble), decoded by
``seqkd-generate`` (:mod:`.generate`); ``--teacher DIR`` is a CTranslate2 model (``seqkd-export
--format ctranslate2``, or any CTranslate2 model whose vocabularies are the data's dictionaries),
decoded by :mod:`.ct2_teacher`. Both write the same n-best format with the same scores (fairseq's
length-normalised log-probability), so selection, filters and binarization do not know which
ran. :class:`BuildTeacher` is what the stages need of either: the files their keys hold, the
options that change the n-best, the checks before anything is written, the longest source it
takes, and the decoding of a split.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import SeqKDError
from ..teacher import check_teacher_dictionaries, load_checkpoint_state, split_paths
from . import options
from .build_options import BuildOptions
from .ct2_teacher import check_ct2_model, ct2_generate_nbest, max_source_positions
from .databin import DataBin
from .generate import GenerationSummary, generate_nbest
from .mono import DEFAULT_MAX_SOURCE_POSITIONS, teacher_max_source_positions

__all__ = ["CTRANSLATE2", "FAIRSEQ", "BuildTeacher"]

FAIRSEQ = "fairseq"
CTRANSLATE2 = "ctranslate2"
CT2_BATCH_SIZE = 32  # sentences per CTranslate2 batch without --batch-size


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """``threads`` torch threads inside the block (None: as they are)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class BuildTeacher:
    """``opts.teacher`` as the stages of a build use it."""

    def __init__(self, opts: BuildOptions):
        assert opts.teacher is not None
        self.opts = opts
        if os.path.isdir(opts.teacher):
            self.engine, self.paths = CTRANSLATE2, [opts.teacher]
        else:
            self.engine, self.paths = FAIRSEQ, split_paths(opts.teacher, "--teacher")
            for path in self.paths:
                if not os.path.isfile(path):
                    raise SeqKDError(f"--teacher: {path} does not exist")
            if opts.teacher_quantization != "default":
                raise SeqKDError(
                    f"--teacher-quantization applies to a CTranslate2 teacher (a model "
                    f"directory); {opts.teacher} is a fairseq checkpoint")
            if opts.teacher_threads == 0:
                raise SeqKDError("--teacher-threads must be >= 1 for a fairseq teacher")
        self._max_positions: int | None = None

    @property
    def device(self) -> str:
        return "cuda" if torch.cuda.is_available() and not self.opts.cpu else "cpu"

    def inputs(self) -> dict[str, str]:
        """The teacher's files, named for a stage key (``teacher``, or ``teacher 1``, ... for an
        ensemble): their contents, not their paths, decide what a stage made from them is. A
        CTranslate2 directory counts by the content of all its files."""
        if len(self.paths) == 1:
            return {"teacher": self.paths[0]}
        return {f"teacher {i}": path for i, path in enumerate(self.paths, start=1)}

    def command(self) -> dict[str, Any]:
        """The options of the teacher's decoding that change its n-best (threads do not); a
        CTranslate2 teacher adds its engine and compute type (a fairseq teacher's are implied
        by its checkpoint's content)."""
        opts = self.opts
        command: dict[str, Any] = {
            "beam": opts.beam, "max_len_a": opts.max_len_a, "max_len_b": opts.max_len_b,
            "batch_size": opts.batch_size, "device": self.device}
        if self.engine == CTRANSLATE2:
            command.update(engine=CTRANSLATE2, quantization=opts.teacher_quantization)
        return command

    def check(self, data: DataBin) -> None:
        """The teacher must use the data's dictionaries (same symbols, same order); a directory
        must be a CTranslate2 model. Once per build: every stage that decodes asks."""
        if self._max_positions is not None:
            return
        if self.engine == CTRANSLATE2:
            check_ct2_model(self.paths[0], data.src_dict, data.tgt_dict, data.dict_names())
            self._max_positions = (max_source_positions(self.paths[0])
                                   or DEFAULT_MAX_SOURCE_POSITIONS)
            return
        limits = []
        for path in self.paths:
            state = load_checkpoint_state(path, "--teacher")
            check_teacher_dictionaries(path, state, (data.src_dict, data.tgt_dict),
                                       data.dict_names(), self.opts.teacher_data,
                                       langs=(data.src, data.tgt))
            limits.append(teacher_max_source_positions([state]))
            del state
        self._max_positions = min(limits)

    def max_source_positions(self, data: DataBin) -> int:
        """The longest source, ``</s>`` included, that the teacher decodes (checked first)."""
        self.check(data)
        assert self._max_positions is not None
        return self._max_positions

    def decode(self, directory: str, split: str, output: str, nbest: int) -> GenerationSummary:
        """The ``nbest``-best of ``split`` in the data-bin ``directory`` (a source-only split
        will do) into the n-best file ``output``, resumable from its committed chunks; sentences
        too long for the teacher are listed in ``output.skipped``."""
        opts = self.opts
        if self.engine == CTRANSLATE2:
            return ct2_generate_nbest(
                directory, split, self.paths[0], output, beam=opts.beam, nbest=nbest,
                max_len_a=opts.max_len_a or 0.0,
                max_len_b=200 if opts.max_len_b is None else opts.max_len_b,
                threads=opts.teacher_threads or 0, quantization=opts.teacher_quantization,
                batch_size=opts.batch_size or CT2_BATCH_SIZE,
                chunk_size=options.DEFAULT_CHUNK_SIZE, device=self.device)
        argv = [directory, "--path", opts.teacher, "--gen-subset", split,
                "--beam", str(opts.beam), "--nbest", str(nbest), "--output", output,
                # too long for the teacher: listed in .skipped, then an error or the fallback
                "--skip-invalid-size-inputs-valid-test"]
        if opts.teacher_data:
            argv += ["--teacher-data", opts.teacher_data]
        if opts.cpu:
            argv.append("--cpu")
        if opts.batch_size:
            argv += ["--batch-size", str(opts.batch_size)]
        for flag, value in (("--max-len-a", opts.max_len_a), ("--max-len-b", opts.max_len_b)):
            if value is not None:
                argv += [flag, str(value)]
        with _torch_threads(opts.teacher_threads):
            return generate_nbest(argv)
