"""What ``seqkd-build`` is asked to build: its options, checked in one line each."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SeqKDError
from .select import SelectionOptions, check_choice

BPE_SCHEMES = ("sentencepiece", "subword_nmt", "none")

Log = Callable[[str], None]


@dataclass
class BuildOptions:
    """What to build; the names are seqkd-build's options (``--max-len-ratio``: max_len_ratio)."""

    data: str  # fairseq data-bin of the gold data (fairseq-preprocess output)
    teacher: str  # teacher checkpoint; several joined by ':' decode as an ensemble
    output: str  # data-bin to write (created); its seqkd/ folder holds the stages
    strategy: str  # seq-kd: the teacher's best; seq-inter: the n-best closest to the reference
    sim: str = "bleu"  # seq-inter's sentence similarity (ter: lower is better)
    beam: int = 5
    nbest: int | None = None  # hypotheses kept: 1 for seq-kd, beam for seq-inter by default
    remove_bpe: str = "none"  # subword segmentation undone before similarities
    max_len_ratio: float | None = None  # drop hypotheses whose length ratio exceeds it
    max_repeats: int | None = None  # drop hypotheses with a phrase repeated more often in a row
    dedup: bool = False  # drop repeated (source, target) pairs
    filter_worst: float = 0.0  # drop this % of sentences whose chosen target scores lowest
    min_score: float | None = None  # drop hypotheses whose n-best score is below it
    fallback: str = "gold"  # gold: keep the reference when no hypothesis is usable; drop
    allow_missing: bool = False  # a sentence without hypotheses gets the fallback, not an error
    workers: int = 1  # processes scoring similarities
    cpu: bool = False  # decode on the CPU
    batch_size: int | None = None  # sentences per decoding batch
    # fairseq-generate's output cap, max_len_a * source length + max_len_b (None: fairseq's
    # 0 and 200): a teacher caught in a loop stops there instead of at 200 tokens
    max_len_a: float | None = None
    max_len_b: int | None = None
    split: str = "train"
    teacher_data: str | None = None  # directory of the teacher's dict.*.txt (--teacher-data)

    def selection(self) -> SelectionOptions:
        """The selection's options, as ``seqkd-select`` takes them."""
        return SelectionOptions(
            strategy=self.strategy, sim=self.sim,
            remove_bpe_scheme=None if self.remove_bpe == "none" else self.remove_bpe,
            max_len_ratio=self.max_len_ratio, max_repeats=self.max_repeats, dedup=self.dedup,
            fallback=self.fallback, workers=self.workers, filter_worst=self.filter_worst,
            min_score=self.min_score,
        )

    def check(self, log: Log) -> None:
        """Refuse bad values in one line; fill in the default ``nbest``."""
        check_choice(self.remove_bpe, BPE_SCHEMES, "--remove-bpe")
        # the build reads sources and references from the data-bin
        self.selection().check(sources=True, references=True)
        if self.beam < 1:
            raise SeqKDError(f"--beam must be >= 1, got {self.beam}")
        if self.nbest is None:
            self.nbest = 1 if self.strategy == "seq-kd" else self.beam
        if not 1 <= self.nbest <= self.beam:
            raise SeqKDError(f"--nbest must be in [1, --beam {self.beam}], got {self.nbest}")
        if self.strategy == "seq-inter" and self.nbest == 1:
            log("warning: seq-inter with --nbest 1 selects the teacher's best, as seq-kd does")
        if self.max_len_a is not None and self.max_len_a < 0:
            raise SeqKDError(f"--max-len-a must be >= 0, got {self.max_len_a}")
        if self.max_len_b is not None and self.max_len_b < 1:
            raise SeqKDError(f"--max-len-b must be >= 1, got {self.max_len_b}")
        if self.batch_size is not None and self.batch_size < 1:
            raise SeqKDError(f"--batch-size must be >= 1, got {self.batch_size}")
        # recorded as floats, so filter_worst=10 from Python and --filter-worst 10 match
        self.filter_worst = float(self.filter_worst)
        if self.min_score is not None:
            self.min_score = float(self.min_score)
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.split):
            raise SeqKDError(f"--split must be a split name such as train, got {self.split!r}")
