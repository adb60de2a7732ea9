"""What ``seqkd-build`` is asked to build: its options, checked in one line each."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import SeqKDError
from .ct2_teacher import check_compute_options
from .select import SelectionOptions, check_choice
from .translations import check_translation_options

BPE_SCHEMES = ("sentencepiece", "subword_nmt", "none")
MONO_SPLIT = "mono"  # the monolingual text's split, in OUT_DIR/seqkd/mono/

Log = Callable[[str], None]


@dataclass
class BuildOptions:
    """What to build; the names are seqkd-build's options (``--max-len-ratio``: max_len_ratio)."""

    data: str  # fairseq data-bin of the gold data (fairseq-preprocess output)
    # teacher checkpoint (several joined by ':' decode as an ensemble) or CTranslate2 model
    # directory; None with --translations
    teacher: str | None
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
    teacher_threads: int | None = None  # threads the teacher decodes with (None: the engine's)
    teacher_quantization: str = "default"  # a CTranslate2 teacher's compute type
    # monolingual source text the teacher also translates: its pairs follow the parallel ones
    mono_source: list[str] = field(default_factory=list)
    mono_size: int | None = None  # the first N usable lines of the --mono-source files
    spm_model: str | None = None  # segments --mono-source and translations (else: as given)
    translations: str | None = None  # one translation per sentence of the split: no teacher
    mono_translations: list[str] = field(default_factory=list)  # one per --mono-source line

    @property
    def mono(self) -> bool:
        return bool(self.mono_source)

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
        self.mono_source = _listed(self.mono_source)
        self.mono_translations = _listed(self.mono_translations)
        self._check_sources(log)
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
        if self.split == MONO_SPLIT:
            raise SeqKDError(f"--split {MONO_SPLIT} is the monolingual split's own name; "
                             f"rename the data-bin's split")

    def _check_sources(self, log: Log) -> None:
        """Where the hypotheses come from: a teacher or translations, and the monolingual text."""
        if self.translations is None and self.teacher is None:
            raise SeqKDError("give --teacher (a fairseq checkpoint or a CTranslate2 model "
                             "directory) or --translations (translations made by another system)")
        if self.translations is not None and self.teacher is not None:
            raise SeqKDError("--translations replaces the teacher (no teacher runs): give "
                             "--teacher or --translations, not both")
        if self.mono_translations and self.translations is None:
            raise SeqKDError("--mono-translations comes with --translations: with translations "
                             "from another system no teacher runs")
        if self.mono_translations and not self.mono:
            raise SeqKDError("--mono-translations needs --mono-source: one translations file per "
                             "--mono-source file")
        if self.translations is not None:
            check_translation_options(strategy=self.strategy, nbest=self.nbest,
                                      filter_worst=self.filter_worst, min_score=self.min_score)
            if self.mono and not self.mono_translations:
                raise SeqKDError("--mono-source with --translations needs --mono-translations "
                                 "(one per --mono-source file): no teacher runs to translate it")
        if self.mono_size is not None and not self.mono:
            raise SeqKDError("--mono-size needs --mono-source")
        if self.mono_size is not None and (isinstance(self.mono_size, bool)
                                           or self.mono_size < 1):
            raise SeqKDError(f"--mono-size must be >= 1, got {self.mono_size}")
        if self.spm_model is not None and not (self.mono or self.translations):
            raise SeqKDError("--spm-model segments the text of --mono-source and --translations; "
                             "give one of them, or leave --spm-model out")
        check_compute_options(0 if self.teacher_threads is None else self.teacher_threads,
                              self.teacher_quantization)
        if self.mono and self.strategy == "seq-inter":
            log("warning: --strategy seq-inter picks the hypothesis closest to the reference, "
                "and --mono-source text has none: its sentences get the teacher's best hypothesis")


def _listed(paths: str | Sequence[str] | None) -> list[str]:
    """A repeatable file option as a list (one path given from Python as a string too)."""
    if paths is None:
        return []
    return [paths] if isinstance(paths, str) else list(paths)
