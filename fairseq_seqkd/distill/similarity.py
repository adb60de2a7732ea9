"""Sentence similarities for Seq-Inter, identical to sacrebleu's sentence-level functions.

Similarities are computed on detokenized text (``remove_bpe`` applied to both the hypothesis and
the reference) and equal sacrebleu's sentence-level functions with their defaults:

* ``bleu`` - ``sacrebleu.sentence_bleu(hyp, [ref]).score`` (13a, exp smoothing,
  effective order), re-implemented on cached reference n-grams for speed;
* ``chrf`` - ``sacrebleu.sentence_chrf(hyp, [ref]).score``;
* ``ter``  - ``sacrebleu.sentence_ter(hyp, [ref]).score`` (lower is better).

:func:`closest_hypotheses` scores many sentences at once, in worker processes when asked.
This module imports only the standard library and sacrebleu (no fairseq / torch).
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import SeqKDError

__all__ = [
    "SIMILARITIES",
    "SentenceScorer",
    "closest_hypotheses",
    "plain_similarity",
    "remove_bpe",
]

SIMILARITIES = ("bleu", "chrf", "ter")

#: similarities for which a lower score is better
LOWER_IS_BETTER = frozenset({"ter"})
#: sentences per task sent to a worker process
CHUNK_SENTENCES = 256

_BLEU_ORDER = 4
# whitespace other than the plain space (see SentenceScorer._bleu_words)
_OTHER_WHITESPACE = re.compile(r"[^\S ]")


# --------------------------------------------------------------------------- BPE


def remove_bpe(tokens: str, scheme: str | None) -> str:
    """Undo subword segmentation.

    * ``None`` / ``"none"``: unchanged;
    * ``"sentencepiece"``: drop spaces, turn ``'▁'`` into spaces, strip;
    * ``"subword_nmt"``: remove the ``"@@ "`` continuation marker;
    * any other string: a literal marker removed from ``tokens + " "`` (then
      right-stripped), e.g. ``"@@ "`` or ``"##"``.
    """
    if scheme is None or scheme == "none":
        return tokens
    if scheme == "sentencepiece":
        return tokens.replace(" ", "").replace("\u2581", " ").strip()
    if scheme == "subword_nmt":
        scheme = "@@ "
    if not scheme:
        raise SeqKDError("--remove-bpe: the BPE marker must not be empty")
    return (tokens + " ").replace(scheme, "").rstrip()


# ------------------------------------------------------------------ similarities


def plain_similarity(hyp: str, ref: str, sim: str) -> float:
    """The reference (slow) definition: one plain sacrebleu sentence call."""
    import sacrebleu

    if sim == "bleu":
        return sacrebleu.sentence_bleu(hyp, [ref]).score
    if sim == "chrf":
        return sacrebleu.sentence_chrf(hyp, [ref]).score
    if sim == "ter":
        return sacrebleu.sentence_ter(hyp, [ref]).score
    raise SeqKDError(f"--sim: unknown similarity {sim!r} (choose from {', '.join(SIMILARITIES)})")


def _ngram_iters(words: list[str]) -> tuple[Any, Any, Any, Any]:
    """Iterables over the 1..4-grams of ``words`` (unigrams as strings, others as tuples)."""
    return (
        words,
        itertools.pairwise(words),
        zip(words, words[1:], words[2:], strict=False),
        zip(words, words[1:], words[2:], words[3:], strict=False),
    )


def _reference_ngrams(words: list[str]) -> tuple[tuple[frozenset, dict], ...]:
    """Per order: (set of the reference's n-grams, {n-gram: count} of those seen > 1)."""
    out = []
    for grams in _ngram_iters(words):
        counts = Counter(grams)
        repeated = {gram: count for gram, count in counts.items() if count > 1}
        out.append((frozenset(counts), repeated))
    return tuple(out)


def _repeated_matches(
    words: list[str], n: int, hyp_set: set, ref_repeated: dict[Any, int]
) -> int:
    """Extra clipped matches of (n+1)-grams occurring more than once in both sentences."""
    extra = 0
    grams = words if n == 0 else list(zip(*(words[i:] for i in range(n + 1)), strict=False))
    for gram, ref_count in ref_repeated.items():
        if gram in hyp_set:
            count = grams.count(gram)
            if count > 1:
                extra += (count if count < ref_count else ref_count) - 1
    return extra


def _my_log(num: float) -> float:
    # sacrebleu.utils.my_log
    if num == 0.0:
        return -9999999999
    return math.log(num)


def _smoothed_bleu(correct: list[int], hyp_len: int, ref_len: int) -> float:
    """``BLEU.compute_bleu`` for smooth_method='exp', effective_order=True, order 4.

    Mirrors sacrebleu's arithmetic operation by operation so that the float result
    is bit-identical.
    """
    if not any(correct):
        return 0.0
    bp = 1.0
    if hyp_len < ref_len:
        bp = math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0
    precisions = [0.0] * _BLEU_ORDER
    smooth_mteval = 1.0
    eff_order = _BLEU_ORDER
    for n in range(1, _BLEU_ORDER + 1):
        total = hyp_len - n + 1
        if total <= 0:
            break
        eff_order = n
        matches = correct[n - 1]
        if matches == 0:
            smooth_mteval *= 2
            precisions[n - 1] = 100.0 / (smooth_mteval * total)
        else:
            precisions[n - 1] = 100.0 * matches / total
    return bp * math.exp(sum([_my_log(p) for p in precisions[:eff_order]]) / eff_order)


class SentenceScorer:
    """Sentence-level similarity with per-reference caching.

    ``prepare(ref)`` computes whatever depends only on the reference (BLEU: its 13a
    tokenization and n-gram counts; chrF: character n-grams; TER: its words) and
    ``score(hyp, prepared)`` scores one hypothesis against it. Results equal the
    plain ``sacrebleu.sentence_*`` call for the same strings.
    """

    def __init__(self, sim: str):
        if sim not in SIMILARITIES:
            raise SeqKDError(
                f"--sim: unknown similarity {sim!r} (choose from {', '.join(SIMILARITIES)})"
            )
        self.sim = sim
        self.lower_is_better = sim in LOWER_IS_BETTER
        from sacrebleu.metrics import BLEU, CHRF, TER

        if sim == "bleu":
            # the exact configuration of sacrebleu.sentence_bleu's defaults
            metric: Any = BLEU(
                lowercase=False,
                tokenize=BLEU.TOKENIZER_DEFAULT,
                force=False,
                smooth_method="exp",
                smooth_value=None,
                effective_order=True,
            )
            self._tokenize: Callable[[str], str] = metric.tokenizer
            self._fast = metric.max_ngram_order == _BLEU_ORDER
        elif sim == "chrf":
            metric = CHRF()
        else:
            metric = TER()
        self._metric = metric
        if sim != "bleu":
            self._fast = all(
                hasattr(metric, name)
                for name in (
                    "_cache_references",
                    "_preprocess_segment",
                    "_compute_segment_statistics",
                    "_aggregate_and_compute",
                )
            )

    def prepare(self, ref: str) -> Any:
        if not self._fast:
            return ref
        if self.sim == "bleu":
            words = self._bleu_words(ref)
            return len(words), _reference_ngrams(words)
        return self._metric._cache_references([[ref]])[0]

    def score(self, hyp: str, prepared: Any) -> float:
        if not self._fast:
            return self._metric.sentence_score(hyp, [prepared]).score
        if self.sim == "bleu":
            return self._bleu(hyp, prepared)
        metric = self._metric
        stats = metric._compute_segment_statistics(metric._preprocess_segment(hyp), prepared)
        return metric._aggregate_and_compute([stats]).score

    def _bleu_words(self, text: str) -> list[str]:
        """``tokenizer(text.rstrip()).split()`` as in ``BLEU._preprocess_segment``.

        The 13a tokenizer is word-local when the only whitespace is ' ': its first
        regex turns every space into three, and every later rule looks at a window of
        two characters and only inserts spaces, so no rule can act across a word
        boundary. Tokenizing word by word therefore gives the same tokens, and the
        tokenizer's LRU cache then hits for every frequent word. Text with any other
        whitespace goes through the tokenizer whole.
        """
        if _OTHER_WHITESPACE.search(text) is None:
            return " ".join(map(self._tokenize, text.split())).split()
        return self._tokenize(text.rstrip()).split()

    def _bleu(self, hyp: str, prepared: tuple[int, tuple[tuple[frozenset, dict], ...]]) -> float:
        ref_len, ref_ngrams = prepared
        words = self._bleu_words(hyp)
        hyp_len = len(words)
        correct = [0, 0, 0, 0]
        # Clipped matches sum(min(hyp_count, ref_count)) per order: every shared n-gram
        # counts once (a C-level set intersection); only n-grams repeated in BOTH the
        # hypothesis and the reference can count more than once (_repeated_matches).
        for n in range(min(hyp_len, _BLEU_ORDER)):
            if n == 0:
                grams: Any = words
            elif n == 1:
                grams = itertools.pairwise(words)
            elif n == 2:
                grams = zip(words, words[1:], words[2:], strict=False)
            else:
                grams = zip(words, words[1:], words[2:], words[3:], strict=False)
            ref_set, ref_repeated = ref_ngrams[n]
            hyp_set = set(grams)
            matches = len(hyp_set & ref_set)
            if matches == 0:
                break  # no n-gram match implies no (n+1)-gram match
            if ref_repeated and len(hyp_set) < hyp_len - n:
                matches += _repeated_matches(words, n, hyp_set, ref_repeated)
            correct[n] = matches
        return _smoothed_bleu(correct, hyp_len, ref_len)


# ------------------------------------------------------------------ the scoring


_PROCESS_SCORERS: dict[str, SentenceScorer] = {}


def _get_scorer(sim: str) -> SentenceScorer:
    scorer = _PROCESS_SCORERS.get(sim)
    if scorer is None:
        scorer = _PROCESS_SCORERS[sim] = SentenceScorer(sim)
    return scorer


# A task: (sim, bpe scheme, [(reference tokens, [hypothesis tokens, ...]), ...])
_Task = tuple[str, "str | None", list[tuple[str, list[str]]]]


def _score_task(task: _Task) -> list[tuple[int, float]]:
    """For each sentence: (rank of the best hypothesis, its similarity)."""
    sim, scheme, items = task
    scorer = _get_scorer(sim)
    lower = scorer.lower_is_better
    out = []
    for ref_tokens, hyp_tokens in items:
        prepared = scorer.prepare(remove_bpe(ref_tokens, scheme))
        seen: dict[str, float] = {}
        best_rank, best = -1, 0.0
        for rank, tokens in enumerate(hyp_tokens):
            text = remove_bpe(tokens, scheme)
            value = seen.get(text)
            if value is None:
                value = seen[text] = scorer.score(text, prepared)
            if best_rank < 0 or (value < best if lower else value > best):
                best_rank, best = rank, value
        out.append((best_rank, best))
    return out


def _mp_context() -> Any:
    # fork avoids re-importing the package (and fairseq/torch) in every worker
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def _scored(
    tasks: Iterator[_Task], workers: int
) -> Iterator[list[tuple[int, float]]]:
    """Run ``_score_task`` over ``tasks`` in order, with ``workers`` processes."""
    if workers <= 1:
        for task in tasks:
            yield _score_task(task)
        return
    with _mp_context().Pool(processes=workers) as pool:
        yield from pool.imap(_score_task, tasks, chunksize=1)



def closest_hypotheses(
    items: Sequence[tuple[str, Sequence[str]]], sim: str, scheme: str | None, workers: int
) -> list[tuple[int, float]]:
    """For each ``(reference tokens, [hypothesis tokens, ...])``: the rank of the hypothesis
    most similar to the reference (ties: the better rank) and its similarity, in order."""

    def tasks() -> Iterator[_Task]:
        for start in range(0, len(items), CHUNK_SENTENCES):
            chunk = [(ref, list(hyps)) for ref, hyps in items[start : start + CHUNK_SENTENCES]]
            yield (sim, scheme, chunk)

    num_tasks = -(-len(items) // CHUNK_SENTENCES)
    return [pick for results in _scored(tasks(), min(workers, num_tasks)) for pick in results]
