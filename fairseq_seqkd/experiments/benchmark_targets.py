"""The benchmark's targets, as data: each preset lists the lines its page judges
(``BenchmarkPreset.targets``), each line what it measures, the comparison, the threshold and
the test sets it is judged on. :func:`target_lines` evaluates a list against a run: met, MISSED
or not measured yet, with the numbers behind each verdict. A new preset's targets are a new
list here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..deploy.speed import SpeedRow, deployment_targets
from .benchmark_models import DEPLOY_CT2, DEPLOY_REFERENCE, DEPLOY_SAME_ENGINE
from .demo_models import ModelSpec

__all__ = ["MULTI30K_TARGETS", "BleuTarget", "DeploymentTarget", "Target",
           "target_lines"]

@dataclass(frozen=True)
class BleuTarget:
    """BLEU of ``model`` decoded ``decoding`` minus BLEU of ``versus`` decoded
    ``versus_decoding``, compared (``comparison``) with ``threshold``.

    ``model`` and ``versus`` are model keys or groups of rows ("students": every trained
    student row; "gkd": the on-policy rows; see ``Benchmark.target_rows``), a group standing
    for its best row by that decoding's BLEU on the first test set. ``decoding``: "greedy",
    or "beam" (the preset's beam). ``test_sets``: "first" judges the first test set and shows
    the others, "every" judges each one."""

    what: str  # the line's text; "{limit}" is the threshold's magnitude, "{beam}" the beam
    model: str
    versus: str
    comparison: Literal[">=", "<="]
    threshold: float
    decoding: Literal["greedy", "beam"] = "greedy"
    versus_decoding: Literal["greedy", "beam"] = "greedy"
    test_sets: Literal["first", "every"] = "first"


@dataclass(frozen=True)
class DeploymentTarget:
    """The deployment rows' lines (:func:`~fairseq_seqkd.deploy.speed.deployment_targets`):
    the best deployed student at least ``min_speedup`` times the teacher's fairseq beam
    tokens/s at every batch size, its BLEU at most ``max_bleu_drop`` below the same student in
    fairseq, and at least ``min_same_engine`` times the teacher in CTranslate2 int8."""

    min_speedup: float
    max_bleu_drop: float
    min_same_engine: float


Target = BleuTarget | DeploymentTarget

#: The Multi30k benchmark's targets (also judged on the ``ci`` preset's tiny run).
MULTI30K_TARGETS: tuple[Target, ...] = (
    BleuTarget("best student greedy within {limit} BLEU of the teacher's beam {beam}",
               "students", "teacher", ">=", -0.5, versus_decoding="beam"),
    BleuTarget("Seq-KD beam-minus-greedy gap at most {limit} BLEU",
               "seq-kd", "seq-kd", "<=", 0.5, decoding="beam"),
    BleuTarget("80% pruned (class-blind) within {limit} BLEU of its unpruned student, greedy",
               "pruned-80", "seq-kd", ">=", -0.5),
    BleuTarget("90% pruned (class-blind) within {limit} BLEU of its unpruned student, greedy",
               "pruned-90", "seq-kd", ">=", -1.5),
    BleuTarget("best GKD row greedy at least {limit} BLEU above Seq-KD + Word-KD greedy",
               "gkd", "seq-kd-word-kd", ">=", 0.5),
    DeploymentTarget(min_speedup=25.0, max_bleu_drop=0.5, min_same_engine=8.0),
)

def _line(text: str, ok: bool | None) -> str:
    return f"- {text}: **{'not measured yet' if ok is None else ('met' if ok else 'MISSED')}**"


def _bleu_line(target: BleuTarget, scores: Mapping[str, Mapping[str, Any]],
               rows: Mapping[str, Sequence[ModelSpec]], test_sets: Sequence[str],
               beam: int) -> str:
    first = test_sets[0]
    text = target.what.format(limit=f"{abs(target.threshold):g}", beam=beam) + (
        f" on {first}" if target.test_sets == "first" else " on every test set")

    def column(decoding: str, test_set: str) -> str:
        return f"{test_set}.beam{1 if decoding == 'greedy' else beam}"

    def best(name: str, decoding: str) -> ModelSpec | None:
        done = [m for m in rows[name] if scores[m.key][column(decoding, first)] is not None]
        return max(done, key=lambda m: scores[m.key][column(decoding, first)], default=None)

    a, b = best(target.model, target.decoding), best(target.versus, target.versus_decoding)
    if a is None or b is None:
        return _line(text, None)
    pairs = [(scores[a.key][column(target.decoding, t)],
              scores[b.key][column(target.versus_decoding, t)]) for t in test_sets]
    if any(x is None or y is None for x, y in pairs):
        return _line(text, None)
    deltas = [x - y for x, y in pairs]
    judged = deltas[:1] if target.test_sets == "first" else deltas
    ok = all(d >= target.threshold if target.comparison == ">=" else d <= target.threshold
             for d in judged)

    def decoded(decoding: str) -> str:
        return "greedy" if decoding == "greedy" else f"beam {beam}"

    (x, y), rest = pairs[0], ", ".join(
        f"{t} {d:+.2f}" for t, d in zip(test_sets[1:], deltas[1:], strict=True))
    numbers = (f"{a.label} {decoded(target.decoding)} {x:.2f} vs {b.label} "
               f"{decoded(target.versus_decoding)} {y:.2f}: {deltas[0]:+.2f}"
               + (f"; {rest}" if rest else ""))
    return _line(f"{text} ({numbers})", ok)


def _deployment_lines(target: DeploymentTarget, rows: Sequence[SpeedRow]) -> list[str]:
    deployed = [label for label in DEPLOY_CT2 if label != DEPLOY_SAME_ENGINE]
    twins = {label: label.split(" (")[0] for label in deployed}  # its fairseq row
    lines = [t.line() for t in deployment_targets(
        rows, DEPLOY_REFERENCE, DEPLOY_SAME_ENGINE, deployed, twins,
        min_speedup=target.min_speedup, max_bleu_drop=target.max_bleu_drop,
        min_same_engine=target.min_same_engine)] if rows else []
    return lines or [_line(
        f"best deployed student at least {target.min_speedup:g}x the {DEPLOY_REFERENCE} "
        f"tokens/s at every batch size, its BLEU at most {target.max_bleu_drop:g} below the same "
        f"student's fairseq greedy, at least {target.min_same_engine:g}x "
        f"{DEPLOY_SAME_ENGINE}", None)]


def target_lines(targets: Sequence[Target], scores: Mapping[str, Mapping[str, Any]],
                 rows: Mapping[str, Sequence[ModelSpec]], test_sets: Sequence[str], beam: int,
                 deploy_rows: Sequence[SpeedRow] = ()) -> list[str]:
    """One Markdown list line per target (a deployment target gives one per check it can
    make), in the list's order. ``scores``: per model key, BLEU per ``"TEST.beamB"`` column
    (None when not measured); ``rows``: every name a target may use (model keys and
    groups) -> its rows; ``deploy_rows``: the deployment measurement, if made."""
    lines: list[str] = []
    for target in targets:
        if isinstance(target, DeploymentTarget):
            lines += _deployment_lines(target, deploy_rows)
        else:
            lines.append(_bleu_line(target, scores, rows, test_sets, beam))
    return lines
