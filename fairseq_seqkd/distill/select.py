"""Pure selection rules turning a teacher n-best into distillation targets.

Strategies (Kim & Rush, 2016):

* ``seq-kd``    - the teacher's best hypothesis (rank 0);
* ``seq-inter`` - among the k-best, the hypothesis most similar to the reference
  (ties go to the better rank).

Similarities are computed on detokenized text (``remove_bpe`` applied to both the
hypothesis and the reference) and are *identical* to sacrebleu's sentence-level
functions with their defaults:

* ``bleu`` - ``sacrebleu.sentence_bleu(hyp, [ref]).score`` (13a, exp smoothing,
  effective order), re-implemented on cached reference n-grams for speed;
* ``chrf`` - ``sacrebleu.sentence_chrf(hyp, [ref]).score``;
* ``ter``  - ``sacrebleu.sentence_ter(hyp, [ref]).score`` (lower is better).

Score filters (the Bergamot / firefox-translations practice of dropping the distilled pairs the
teacher is least sure of) use the n-best's score column as it is: ``seqkd-generate`` writes
fairseq's length-normalised log-probability (nats per token; a ``fairseq-generate`` log prints
it in bits).

This module imports only the standard library and sacrebleu (no fairseq / torch).
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from fairseq_seqkd.distill.nbest import Hypothesis

from ..errors import SeqKDError

__all__ = [
    "FALLBACKS",
    "SIMILARITIES",
    "STRATEGIES",
    "Selection",
    "SentenceScorer",
    "check_max_repeats",
    "check_score_filters",
    "plain_similarity",
    "remove_bpe",
    "repeat_run",
    "select_targets",
]

STRATEGIES = ("seq-kd", "seq-inter")
SIMILARITIES = ("bleu", "chrf", "ter")
FALLBACKS = ("gold", "drop")
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

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is strictly better than ``b``."""
        return a < b if self.lower_is_better else a > b


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


# ------------------------------------------------------------------ selection


@dataclass
class Selection:
    """Result of :func:`select_targets`.

    ``targets[i]`` is the subword-token target of sentence ``i`` (the chosen
    hypothesis, or the reference for a gold fallback), ``None`` when dropped.
    ``kept_indices`` lists the ``i`` with a target, ascending.
    """

    targets: list[str | None]
    kept_indices: list[int] = field(default_factory=list)
    report: dict[str, int | float] = field(default_factory=dict)


def _check_choice(value: str, allowed: Sequence[str], option: str, what: str) -> None:
    if value not in allowed:
        raise SeqKDError(
            f"{option}: unknown {what} {value!r} (choose from {', '.join(allowed)})"
        )


def check_score_filters(filter_worst: float, min_score: float | None) -> None:
    """Refuse ``--filter-worst`` outside [0, 100) and a ``--min-score`` that is not a number."""
    if not 0.0 <= filter_worst < 100.0:
        raise SeqKDError(f"--filter-worst must be in [0, 100) (a percentage), got {filter_worst}")
    if min_score is not None and math.isnan(min_score):
        raise SeqKDError("--min-score must be a number, got nan")


def check_max_repeats(max_repeats: int | None) -> None:
    """``--max-repeats`` is None or an int >= 1."""
    if max_repeats is not None and (isinstance(max_repeats, bool) or not isinstance(
            max_repeats, int) or max_repeats < 1):
        raise SeqKDError(f"--max-repeats must be an integer >= 1, got {max_repeats!r}")


def _check_scores_present(nbest: Mapping[int, Sequence[Hypothesis]], option: str) -> None:
    """An n-best whose every score is 0 has a placeholder column, not teacher scores."""
    scores = [h.score for hyps in nbest.values() for h in hyps]
    if scores and all(score == 0.0 for score in scores):
        raise SeqKDError(
            f"{option} needs the teacher's scores, but every score in the n-best is 0 "
            f"(an n-best without scores)"
        )


REPEAT_MAX_N = 4  # longest phrase --max-repeats looks for


def _worst_scored(scores: Mapping[int, float], percent: float) -> set[int]:
    """The floor(percent % of len(scores)) sentences with the lowest scores (ties: lower index).

    The percentage is taken as written (``Fraction(repr(percent))``), so 10 % of 30 is 3.
    """
    count = int(Fraction(repr(percent)) * len(scores) / 100)
    return set(sorted(scores, key=lambda i: (scores[i], i))[:count])


def _length_ratio_ok(src_tokens: str, tgt_tokens: str, max_ratio: float) -> bool:
    src_len = len(src_tokens.split())
    tgt_len = len(tgt_tokens.split())
    if src_len == 0 or tgt_len == 0:
        return src_len == tgt_len
    return src_len <= max_ratio * tgt_len and tgt_len <= max_ratio * src_len


def repeat_run(tokens: Sequence[str], max_n: int = REPEAT_MAX_N) -> int:
    """The most consecutive copies of one n-gram (``1 <= n <= max_n``) in ``tokens``: 3 for
    ``a b a b a b``, 1 for a sequence without an immediate repetition (0 when empty).

    A teacher stuck in a decoding loop repeats a short phrase until the length cap; a
    translation almost never repeats a phrase three times in a row.
    """
    best = 1 if tokens else 0
    for n in range(1, max_n + 1):
        streak = 0  # consecutive positions i with tokens[i] == tokens[i - n]
        for i in range(n, len(tokens)):
            streak = streak + 1 if tokens[i] == tokens[i - n] else 0
            best = max(best, 1 + streak // n)
    return best


def select_targets(
    nbest: Mapping[int, Sequence[Hypothesis]],
    *,
    size: int,
    sources: Sequence[str] | None,
    references: Sequence[str] | None,
    strategy: str,
    sim: str = "bleu",
    remove_bpe_scheme: str | None = None,
    max_len_ratio: float | None = None,
    max_repeats: int | None = None,
    dedup: bool = False,
    fallback: str = "gold",
    workers: int = 1,
    filter_worst: float = 0.0,
    min_score: float | None = None,
) -> Selection:
    """Choose one distillation target per sentence ``0..size-1``.

    Per sentence: pick a hypothesis (``strategy``), then drop it if it is empty, if
    its length ratio to the source exceeds ``max_len_ratio`` either way (subword
    tokens), if some phrase of up to :data:`REPEAT_MAX_N` tokens occurs more than
    ``max_repeats`` times in a row (a decoding loop, :func:`repeat_run`), or (``dedup``) if
    the same (source, target) pair was already kept.
    Score filters: ``min_score`` drops a hypothesis whose n-best score is below it;
    ``filter_worst`` drops the ``filter_worst`` % of the sentences with a chosen hypothesis
    whose chosen hypothesis scores lowest (floor of the count; a sentence that an earlier
    filter drops is counted there). The order is empty, length ratio, repeats, ``min_score``,
    ``filter_worst``, duplicate. A dropped or missing sentence keeps its reference
    (``fallback="gold"``) or gets no target (``fallback="drop"``).

    The report counts: ``sentences``, ``hypotheses`` (in the n-best), ``selected``
    (targets taken from the n-best), ``selected_rank_<r>`` and ``mean_selected_rank``,
    ``empty`` / ``length_ratio`` / ``repeats`` / ``below_min_score`` / ``filter_worst`` /
    ``duplicate`` (dropped hypotheses by reason),
    ``missing`` (no n-best entry), ``fallback_gold``, ``dropped`` (no target),
    ``kept`` and ``mean_similarity`` over the chosen hypotheses (before filtering;
    only when references are given, ``similarity_sentences`` says over how many).
    """
    _check_choice(strategy, STRATEGIES, "--strategy", "strategy")
    _check_choice(sim, SIMILARITIES, "--sim", "similarity")
    _check_choice(fallback, FALLBACKS, "--fallback", "fallback")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise SeqKDError(f"size must be an int >= 0, got {size!r}")
    if workers < 1:
        raise SeqKDError(f"--workers must be >= 1, got {workers}")
    if remove_bpe_scheme is not None:
        remove_bpe("", remove_bpe_scheme)  # validates the scheme
    check_score_filters(filter_worst, min_score)
    if min_score is not None:
        _check_scores_present(nbest, "--min-score")
    if filter_worst > 0:
        _check_scores_present(nbest, "--filter-worst")
    for name, lines in (("sources", sources), ("references", references)):
        if lines is not None and len(lines) != size:
            raise SeqKDError(f"{name} have {len(lines)} lines but size is {size}")
    if strategy == "seq-inter" and references is None:
        raise SeqKDError("--strategy seq-inter needs references (--reference)")
    if fallback == "gold" and references is None:
        raise SeqKDError(
            "--fallback gold needs references (--reference); use --fallback drop without them"
        )
    if max_len_ratio is not None:
        if not max_len_ratio >= 1.0:
            raise SeqKDError(f"--max-len-ratio must be >= 1, got {max_len_ratio}")
        if sources is None:
            raise SeqKDError("--max-len-ratio needs the source sentences (--source)")
    check_max_repeats(max_repeats)
    out_of_range = [i for i in nbest if not (isinstance(i, int) and 0 <= i < size)]
    if out_of_range:
        first = min(out_of_range, key=lambda i: (not isinstance(i, int), i))
        raise SeqKDError(
            f"n-best has sentence index {first} out of range for size {size} "
            f"(valid 0..{size - 1})"
        )

    present = [i for i in range(size) if nbest.get(i)]
    num_hyps = sum(len(nbest[i]) for i in present)
    score_all = strategy == "seq-inter"

    # 1. rank choice (and similarity) for every sentence with hypotheses
    chosen: dict[int, tuple[int, float | None]] = {}
    if references is None:
        for i in present:
            chosen[i] = (0, None)
    else:

        def tasks() -> Iterator[_Task]:
            for start in range(0, len(present), CHUNK_SENTENCES):
                items = []
                for i in present[start : start + CHUNK_SENTENCES]:
                    hyps = nbest[i] if score_all else nbest[i][:1]
                    items.append((references[i], [h.tokens for h in hyps]))
                yield (sim, remove_bpe_scheme, items)

        num_tasks = -(-len(present) // CHUNK_SENTENCES)
        position = 0
        for results in _scored(tasks(), min(workers, num_tasks)):
            for rank, value in results:
                chosen[present[position]] = (rank, value)
                position += 1

    # 2. filters and fallback, in index order (dedup depends on it)
    worst = _worst_scored(
        {i: nbest[i][rank].score for i, (rank, _) in chosen.items()}, filter_worst
    )
    counts = {"empty": 0, "length_ratio": 0, "repeats": 0, "below_min_score": 0,
              "filter_worst": 0, "duplicate": 0, "missing": 0, "fallback_gold": 0}
    rank_hist: Counter = Counter()
    sims: list[float] = []
    seen_pairs: set[tuple[str | None, str]] = set()
    targets: list[str | None] = [None] * size
    for i in range(size):
        src = sources[i] if sources is not None else None
        target: str | None = None
        pick = chosen.get(i)
        if pick is None:
            counts["missing"] += 1
        else:
            rank, value = pick
            if value is not None:
                sims.append(value)
            tokens, score = nbest[i][rank].tokens, nbest[i][rank].score
            if not tokens.strip():
                counts["empty"] += 1
            elif max_len_ratio is not None and not _length_ratio_ok(
                src or "", tokens, max_len_ratio
            ):
                counts["length_ratio"] += 1
            elif max_repeats is not None and repeat_run(tokens.split()) > max_repeats:
                counts["repeats"] += 1
            elif min_score is not None and score < min_score:
                counts["below_min_score"] += 1
            elif i in worst:
                counts["filter_worst"] += 1
            elif dedup and (src, tokens) in seen_pairs:
                counts["duplicate"] += 1
            else:
                target = tokens
                rank_hist[rank] += 1
        if target is None and fallback == "gold":
            assert references is not None
            target = references[i]
            counts["fallback_gold"] += 1
        if target is not None:
            targets[i] = target
            if dedup:
                seen_pairs.add((src, target))

    kept = [i for i, t in enumerate(targets) if t is not None]
    selected = sum(rank_hist.values())
    report: dict[str, int | float] = {
        "sentences": size,
        "hypotheses": num_hyps,
        "selected": selected,
        "mean_selected_rank": (
            sum(r * c for r, c in rank_hist.items()) / selected if selected else 0.0
        ),
    }
    for r in sorted(rank_hist):
        report[f"selected_rank_{r}"] = rank_hist[r]
    report.update(counts)
    report["dropped"] = size - len(kept)
    report["kept"] = len(kept)
    report["similarity_sentences"] = len(sims)
    report["mean_similarity"] = sum(sims) / len(sims) if sims else 0.0
    return Selection(targets=targets, kept_indices=kept, report=report)
