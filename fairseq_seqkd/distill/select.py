"""Pure selection rules turning a teacher n-best into distillation targets.

Strategies (Kim & Rush, 2016):

* ``seq-kd``    - the teacher's best hypothesis (rank 0);
* ``seq-inter`` - among the k-best, the hypothesis most similar to the reference
  (ties go to the better rank; similarities in :mod:`fairseq_seqkd.distill.similarity`).

Score filters (the Bergamot / firefox-translations practice of dropping the distilled pairs the
teacher is least sure of) use the n-best's score column as it is: ``seqkd-generate`` writes
fairseq's length-normalised log-probability (nats per token; a ``fairseq-generate`` log prints
it in bits).

A sentence without any hypothesis is an error unless ``allow_missing``: a truncated n-best must
not turn into gold targets unnoticed.

This module imports only the standard library and sacrebleu (no fairseq / torch).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from ..errors import SeqKDError
from .nbest import Hypothesis, check_indices
from .similarity import SIMILARITIES, closest_hypotheses, remove_bpe

__all__ = [
    "FALLBACKS",
    "STRATEGIES",
    "Selection",
    "SelectionOptions",
    "WorstScored",
    "check_choice",
    "drop_reason",
    "repeat_run",
    "select_targets",
]

STRATEGIES = ("seq-kd", "seq-inter")
FALLBACKS = ("gold", "drop")
REPEAT_MAX_N = 4  # longest phrase --max-repeats looks for


def check_choice(value: str, allowed: Sequence[str], option: str) -> None:
    if value not in allowed:
        raise SeqKDError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass
class SelectionOptions:
    """How targets are chosen and filtered: the keyword arguments of :func:`select_targets`,
    named after ``seqkd-select``'s options (``--max-len-ratio``: ``max_len_ratio``)."""

    strategy: str = "seq-kd"
    sim: str = "bleu"
    remove_bpe_scheme: str | None = None  # undone before similarities (see remove_bpe)
    max_len_ratio: float | None = None
    max_repeats: int | None = None
    dedup: bool = False
    fallback: str = "gold"
    workers: int = 1
    filter_worst: float = 0.0
    min_score: float | None = None

    def check(self, sources: bool, references: bool) -> None:
        """Refuse bad values, and options that need the source or reference lines when they
        are not given, in one line; before any file is read."""
        check_choice(self.strategy, STRATEGIES, "--strategy")
        check_choice(self.sim, SIMILARITIES, "--sim")
        check_choice(self.fallback, FALLBACKS, "--fallback")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) \
                or self.workers < 1:
            raise SeqKDError(f"--workers must be >= 1, got {self.workers}")
        if self.remove_bpe_scheme is not None:
            remove_bpe("", self.remove_bpe_scheme)  # validates the scheme
        if not 0.0 <= self.filter_worst < 100.0:
            raise SeqKDError(
                f"--filter-worst must be in [0, 100) (a percentage), got {self.filter_worst}")
        if self.min_score is not None and math.isnan(self.min_score):
            raise SeqKDError("--min-score must be a number, got nan")
        if self.max_repeats is not None and (
                isinstance(self.max_repeats, bool) or not isinstance(self.max_repeats, int)
                or self.max_repeats < 1):
            raise SeqKDError(f"--max-repeats must be an integer >= 1, got {self.max_repeats!r}")
        if self.max_len_ratio is not None:
            if not self.max_len_ratio >= 1.0:
                raise SeqKDError(f"--max-len-ratio must be >= 1, got {self.max_len_ratio}")
            if not sources:
                raise SeqKDError("--max-len-ratio needs the source sentences (--source)")
        if self.strategy == "seq-inter" and not references:
            raise SeqKDError("--strategy seq-inter needs references (--reference)")
        if self.fallback == "gold" and not references:
            raise SeqKDError(
                "--fallback gold needs references (--reference); use --fallback drop without them"
            )


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


def _check_scores_present(nbest: Mapping[int, Sequence[Hypothesis]], option: str) -> None:
    """An n-best whose every score is 0 has a placeholder column, not teacher scores."""
    scores = [h.score for hyps in nbest.values() for h in hyps]
    if scores and all(score == 0.0 for score in scores):
        raise SeqKDError(
            f"{option} needs the teacher's scores, but every score in the n-best is 0 "
            f"(an n-best without scores)"
        )


class WorstScored:
    """``--filter-worst``: the floor(percent % of len(scores)) sentences with the lowest scores
    (ties: lower index). Built from the scores in index order; then called once per scored
    sentence, in index order, it says whether that sentence is one of them, holding only the
    cut and a tie count (a streaming selection needs no more).

    The percentage is taken as written (``Fraction(repr(percent))``), so 10 % of 30 is 3.
    """

    def __init__(self, scores: Sequence[float], percent: float):
        count = int(Fraction(repr(percent)) * len(scores) / 100)
        self.cut = heapq.nsmallest(count, scores)[-1] if count else -math.inf
        # the sentences scoring exactly the cut that are among the worst: the first ones
        self.ties = count - sum(1 for score in scores if score < self.cut) if count else 0

    def __call__(self, score: float) -> bool:
        if score < self.cut:
            return True
        if score == self.cut and self.ties > 0:
            self.ties -= 1
            return True
        return False


def _length_ratio_ok(src_tokens: str, tgt_tokens: str, max_ratio: float) -> bool:
    src_len = len(src_tokens.split())
    tgt_len = len(tgt_tokens.split())
    if src_len == 0 or tgt_len == 0:
        return src_len == tgt_len
    return src_len <= max_ratio * tgt_len and tgt_len <= max_ratio * src_len


def drop_reason(
    tokens: str, score: float, source: str | None, *, max_len_ratio: float | None,
    max_repeats: int | None, min_score: float | None, worst: bool,
    seen_pairs: set[tuple[str | None, str]] | None,
) -> str | None:
    """Why a chosen hypothesis is dropped (its report key), or None when it is kept: the
    filters of :func:`select_targets`, in their order. ``worst``: :class:`WorstScored` said so;
    ``seen_pairs``: the (source, target) pairs kept so far, with ``--dedup``."""
    if not tokens.strip():
        return "empty"
    if max_len_ratio is not None and not _length_ratio_ok(source or "", tokens, max_len_ratio):
        return "length_ratio"
    if max_repeats is not None and repeat_run(tokens.split()) > max_repeats:
        return "repeats"
    if min_score is not None and score < min_score:
        return "below_min_score"
    if worst:
        return "filter_worst"
    if seen_pairs is not None and (source, tokens) in seen_pairs:
        return "duplicate"
    return None


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
    allow_missing: bool = False,
    nbest_name: str | None = None,
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
    ``filter_worst``, duplicate. A dropped sentence keeps its reference
    (``fallback="gold"``) or gets no target (``fallback="drop"``).

    A sentence with no hypothesis at all raises :class:`SeqKDError` naming the first such index
    and ``nbest_name`` (the n-best file), unless ``allow_missing``: then it gets the fallback too.

    The report counts: ``sentences``, ``hypotheses`` (in the n-best), ``selected``
    (targets taken from the n-best), ``selected_rank_<r>`` and ``mean_selected_rank``,
    ``empty`` / ``length_ratio`` / ``repeats`` / ``below_min_score`` / ``filter_worst`` /
    ``duplicate`` (dropped hypotheses by reason),
    ``missing`` (no n-best entry), ``fallback_gold``, ``dropped`` (no target),
    ``kept`` and ``mean_similarity`` over the chosen hypotheses (before filtering;
    only when references are given, ``similarity_sentences`` says over how many).
    """
    SelectionOptions(
        strategy=strategy, sim=sim, remove_bpe_scheme=remove_bpe_scheme,
        max_len_ratio=max_len_ratio, max_repeats=max_repeats, dedup=dedup, fallback=fallback,
        workers=workers, filter_worst=filter_worst, min_score=min_score,
    ).check(sources is not None, references is not None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise SeqKDError(f"size must be an int >= 0, got {size!r}")
    for name, lines in (("sources", sources), ("references", references)):
        if lines is not None and len(lines) != size:
            raise SeqKDError(f"{name} have {len(lines)} lines but size is {size}")
    check_indices(nbest, size, nbest_name, allow_missing=allow_missing,
                  hint=f"; --allow-missing gives them the fallback ({fallback})")
    if min_score is not None:
        _check_scores_present(nbest, "--min-score")
    if filter_worst > 0:
        _check_scores_present(nbest, "--filter-worst")

    present = [i for i in range(size) if nbest.get(i)]
    num_hyps = sum(len(nbest[i]) for i in present)

    # 1. rank choice (and similarity) for every sentence with hypotheses
    chosen: dict[int, tuple[int, float | None]] = {}
    if references is None:
        for i in present:
            chosen[i] = (0, None)
    else:
        every_rank = strategy == "seq-inter"
        items = [(references[i], [h.tokens for h in (nbest[i] if every_rank else nbest[i][:1])])
                 for i in present]
        picks = closest_hypotheses(items, sim, remove_bpe_scheme, workers)
        chosen = dict(zip(present, picks, strict=True))

    # 2. filters and fallback, in index order (dedup depends on it)
    worst = WorstScored([nbest[i][chosen[i][0]].score for i in present], filter_worst)
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
            reason = drop_reason(
                tokens, score, src, max_len_ratio=max_len_ratio, max_repeats=max_repeats,
                min_score=min_score, worst=worst(score), seen_pairs=seen_pairs if dedup else None)
            if reason is not None:
                counts[reason] += 1
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
