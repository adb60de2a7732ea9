"""chrF and sacrebleu's paired bootstrap, as the results pages use them: corpus chrF with its
signature beside BLEU, and each system's BLEU and chrF difference to a baseline with a p-value.
No fairseq import."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Comparison", "chrf", "paired_bootstrap"]

#: the metrics every comparison reports, by sacrebleu's score names
METRICS = ("BLEU", "chrF2")


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")


@functools.lru_cache(maxsize=8)
def _chrf_scorer(references: tuple[str, ...]) -> Any:
    """A sacrebleu CHRF holding one test set's reference statistics (scoring many systems
    against it extracts them once)."""
    from sacrebleu.metrics import CHRF

    return CHRF(references=[list(references)])


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """sacrebleu corpus chrF (its defaults: character 6-grams, beta 2) and its signature."""
    _check(hypotheses, references)
    metric = _chrf_scorer(tuple(references))
    return metric.corpus_score(list(hypotheses), None).score, str(metric.get_signature())


@dataclass(frozen=True)
class Comparison:
    """One system against the baseline on one metric: both scores and the paired bootstrap's
    p-value of their difference (two-sided)."""

    score: float
    baseline: float
    p_value: float

    @property
    def delta(self) -> float:
        return self.score - self.baseline


def paired_bootstrap(baseline: Sequence[str], systems: Mapping[str, Sequence[str]],
                     references: Sequence[str], samples: int = 1000
                     ) -> tuple[dict[str, dict[str, Comparison]], dict[str, str]]:
    """sacrebleu's paired bootstrap resampling (``sacrebleu.significance.PairedTest``, test
    ``bs``; the seed is ``SACREBLEU_SEED``, 12345 unless set) of every system against
    ``baseline`` on BLEU and chrF: per system and metric name (:data:`METRICS`) a
    :class:`Comparison`, and each metric's signature.

    A system scoring exactly the baseline's score (its own output, or another with the same
    score) gets p = 1: sacrebleu's test counts the resamples whose centred difference
    *exceeds* the observed one, which never happens when every resampled difference is zero
    too, so it would report its smallest p-value, 1 / (samples + 1), for no difference."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    _check(baseline, references)
    for hypotheses in systems.values():
        _check(hypotheses, references)
    named = [("baseline", list(baseline)), *((n, list(h)) for n, h in systems.items())]
    log = logging.getLogger("sacrebleu")  # a line per system and metric at INFO otherwise
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        test = PairedTest(named, {"BLEU": BLEU(), "chrF": CHRF()}, [list(references)],
                          test_type="bs", n_samples=samples)
        signatures, results = test()
    finally:
        log.setLevel(level)
    comparisons: dict[str, dict[str, Comparison]] = {name: {} for name in systems}
    for metric in METRICS:
        base, *rest = results[metric]
        for name, result in zip(systems, rest, strict=True):
            comparisons[name][metric] = Comparison(
                result.score, base.score,
                1.0 if result.score == base.score else result.p_value)
    return comparisons, {metric: str(signatures[metric]) for metric in METRICS}
