"""Raw text in, raw text out, with a CTranslate2 export of a student (``seqkd-translate``).

Decoding follows fairseq's: the source ends with ``</s>``, the decoder starts from ``</s>``, and
the output length is capped per batch at ``max_len_a * longest source + max_len_b`` (fairseq's
``--max-len-a/-b``, counted with the source's ``</s>``). With a sentencepiece model in the
directory, lines are encoded and decoded inside, the way ``fairseq-generate --remove-bpe
sentencepiece`` decodes; without one, lines are the model's own space-separated tokens.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import SeqKDError
from .ct2_export import CT2_FILES, MANIFEST, SPM_MODEL, Manifest, read_manifest

SPM_SPACE = "\u2581"


@dataclass
class TranslateStats:
    """What a run translated: counts for the tokens/s summary."""

    lines: int = 0
    empty: int = 0
    source_tokens: int = 0
    target_tokens: int = 0
    truncated: int = 0
    seconds: float = 0.0  # time inside CTranslate2 only
    truncated_lines: list[int] = field(default_factory=list)

    def describe(self, max_tokens: int) -> str:
        rate = self.target_tokens / self.seconds if self.seconds > 0 else 0.0
        text = (f"{self.lines:,} lines ({self.empty:,} empty), {self.source_tokens:,} source and "
                f"{self.target_tokens:,} target tokens in {self.seconds:.4f}s of decoding: "
                f"{rate:,.0f} target tokens/s")
        if self.truncated:
            text += (f"; {self.truncated:,} line(s) longer than {max_tokens} tokens truncated "
                     f"(first: line {self.truncated_lines[0]})")
        return text


_SUMMARY = re.compile(
    r"([\d,]+) lines \(([\d,]+) empty\), ([\d,]+) source and ([\d,]+) target tokens in "
    r"([\d.]+)s of decoding")


def parse_translate_summary(text: str, source: str = "<seqkd-translate output>"
                            ) -> TranslateStats:
    """The counts of a :meth:`TranslateStats.describe` line (seqkd-translate's stderr)."""
    found = [m for line in text.splitlines() if (m := _SUMMARY.search(line))]
    if not found:
        raise SeqKDError(f"{source}: no seqkd-translate summary line ('N lines (E empty), ... "
                         "in Xs of decoding'); did seqkd-translate finish?")
    lines, empty, src, tgt, seconds = found[-1].groups()
    return TranslateStats(lines=int(lines.replace(",", "")), empty=int(empty.replace(",", "")),
                          source_tokens=int(src.replace(",", "")),
                          target_tokens=int(tgt.replace(",", "")), seconds=float(seconds))


class Translator:
    """A CTranslate2 student loaded from a ``seqkd-export --format ctranslate2`` directory.

    >>> translator = Translator("student-ct2", threads=1)
    >>> translator.translate(["A man rides a horse."])          # doctest: +SKIP
    ['Ein Mann reitet ein Pferd.']
    """

    def __init__(self, model_dir: str | os.PathLike, threads: int = 1, device: str = "cpu",
                 compute_type: str = "default"):
        model_dir = os.fspath(model_dir)
        self.manifest: Manifest = read_manifest(model_dir)
        missing = [n for n in (*CT2_FILES, *self._dict_names()) if
                   not os.path.isfile(os.path.join(model_dir, n))]
        if self.manifest.spm_model and not os.path.isfile(os.path.join(model_dir, SPM_MODEL)):
            missing.append(SPM_MODEL)
        if missing:
            raise SeqKDError(f"{model_dir} is incomplete: {', '.join(missing)} missing "
                             "(export it again with seqkd-export --format ctranslate2)")
        import ctranslate2

        try:
            self._model = ctranslate2.Translator(
                model_dir, device=device, compute_type=compute_type, inter_threads=1,
                intra_threads=threads,
            )
        except RuntimeError as exc:  # CTranslate2's errors for an unreadable model.bin
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SeqKDError(f"{model_dir}: CTranslate2 cannot load the model ({first})") from exc
        self._spm = None
        if self.manifest.spm_model:
            import sentencepiece

            self._spm = sentencepiece.SentencePieceProcessor(
                model_file=os.path.join(model_dir, SPM_MODEL))
        arch = self.manifest.architecture
        # the source's </s> takes one position
        self.max_source_tokens = int(arch.get("max_source_positions") or 1024) - 1
        self.max_target_tokens = int(arch.get("max_target_positions") or 1024) - 1
        self.model_dir = model_dir

    def _dict_names(self) -> list[str]:
        return [f"dict.{lang}.txt" for lang in (self.manifest.source_lang,
                                                self.manifest.target_lang)]

    # ------------------------------------------------------------------ tokens

    def encode(self, line: str) -> list[str]:
        """A raw line as the model's source tokens."""
        if self._spm is not None:
            return self._spm.encode(line, out_type=str)
        return line.split()

    def decode(self, tokens: Sequence[str]) -> str:
        """The model's target tokens as a raw line (fairseq's ``--remove-bpe sentencepiece``)."""
        if self._spm is not None:
            return "".join(tokens).replace(SPM_SPACE, " ").strip()
        return " ".join(tokens)

    def translate_tokens(
        self, sources: Sequence[Sequence[str]], beam: int = 1, batch_size: int = 32,
        max_len_a: float = 0.0, max_len_b: int = 200,
    ) -> list[list[str]]:
        """Target tokens for each source token list, in order; ``[]`` for an empty source.

        As fairseq-generate does, sources are sorted by length and decoded ``batch_size`` at a
        time, so each batch's output length cap is the one fairseq would apply.
        """
        if beam < 1 or batch_size < 1:
            raise SeqKDError(f"beam and batch size must be >= 1, got {beam} and {batch_size}")
        results: list[list[str]] = [[] for _ in sources]
        order = sorted((i for i, tokens in enumerate(sources) if tokens),
                       key=lambda i: len(sources[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            longest = max(len(sources[i]) for i in batch) + 1  # fairseq counts </s>
            max_len = min(self.max_target_tokens, math.floor(max_len_a * longest + max_len_b))
            out = self._model.translate_batch(
                [list(sources[i]) for i in batch], beam_size=beam, max_batch_size=0,
                max_decoding_length=max(1, max_len), max_input_length=0,
                return_scores=False,
            )
            for i, result in zip(batch, out, strict=True):
                results[i] = result.hypotheses[0]
        return results

    def translate(self, lines: Sequence[str], beam: int = 1, batch_size: int = 32,
                  stats: TranslateStats | None = None, first_line: int = 1,
                  max_len_a: float = 0.0, max_len_b: int = 200) -> list[str]:
        """Raw lines in, raw lines out, one for one; empty in, empty out.

        Over-long lines are cut to the model's maximum source length and counted in ``stats``
        (``first_line`` numbers the lines for that report).
        """
        stats = stats if stats is not None else TranslateStats()
        sources: list[list[str]] = []
        for number, line in enumerate(lines, start=first_line):
            tokens = self.encode(line) if line.strip() else []
            if len(tokens) > self.max_source_tokens:
                tokens = tokens[:self.max_source_tokens]
                stats.truncated += 1
                stats.truncated_lines.append(number)
            sources.append(tokens)
            stats.empty += not tokens
            stats.source_tokens += len(tokens)
        begin = time.perf_counter()
        targets = self.translate_tokens(sources, beam, batch_size, max_len_a, max_len_b)
        stats.seconds += time.perf_counter() - begin
        stats.lines += len(sources)
        stats.target_tokens += sum(len(t) for t in targets)
        return [self.decode(t) for t in targets]

    def translate_stream(self, lines: Iterable[str], beam: int = 1, batch_size: int = 32,
                         buffer_size: int = 1024, stats: TranslateStats | None = None,
                         max_len_a: float = 0.0, max_len_b: int = 200) -> Iterator[str]:
        """Translate an iterable of lines ``buffer_size`` at a time (sorted into batches within
        the buffer), yielding the outputs in input order as each buffer is done; with
        ``buffer_size`` 1, stdin works interactively."""
        stats = stats if stats is not None else TranslateStats()
        buffer: list[str] = []
        first = 1
        for line in lines:
            buffer.append(line)
            if len(buffer) >= buffer_size:
                yield from self.translate(buffer, beam, batch_size, stats, first,
                                          max_len_a, max_len_b)
                first += len(buffer)
                buffer = []
        if buffer:
            yield from self.translate(buffer, beam, batch_size, stats, first,
                                      max_len_a, max_len_b)


__all__ = ["MANIFEST", "TranslateStats", "Translator", "parse_translate_summary"]
