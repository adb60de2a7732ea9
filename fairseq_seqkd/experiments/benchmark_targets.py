"""The benchmark's targets, as data: each preset lists the lines its page judges
(``BenchmarkPreset.targets``), each line what it measures, the comparison, the threshold and
the test sets it is judged on. :func:`target_lines` evaluates a list against a run: met, MISSED
or not measured yet, with the numbers behind each verdict; :func:`mono_target_lines` does the
same for the deployed-student study's targets, judged on seed means with p-values. A new
preset's targets are a new list here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..deploy.speed import SpeedRow, deployment_targets
from .benchmark_models import DEPLOY_CT2, DEPLOY_REFERENCE, DEPLOY_SAME_ENGINE
from .demo_models import ModelSpec

__all__ = ["MONO_TARGETS", "MULTI30K_TARGETS", "BleuTarget", "DeployedTarget",
           "DeploymentTarget", "MeanTarget", "MonoTarget", "Target", "mono_target_lines",
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


# ------------------------------------------------------------------ the deployed-student study


@dataclass(frozen=True)
class MeanTarget:
    """Seed-mean BLEU of ``model`` decoded ``decoding`` minus that of ``versus`` decoded
    ``versus_decoding``, at least ``thresholds[i]`` on test set i (the last threshold for the
    test sets after it; ``test_sets`` "first" judges the first one only and shows the others);
    with ``max_p``, the paired bootstrap's p-value on the first test set also below it (the
    largest of the seed pairs measured: seed k of ``model`` against seed k of ``versus``).
    ``model`` and ``versus`` are row keys or groups, a group standing for its row with the
    best seed mean on the first test set."""

    what: str  # "{limit}": the first threshold's magnitude, "{beam}": the beam, "{p}": max_p
    model: str
    versus: str
    thresholds: tuple[float, ...]
    decoding: Literal["greedy", "beam"] = "greedy"
    versus_decoding: Literal["greedy", "beam"] = "greedy"
    test_sets: Literal["first", "every"] = "first"
    max_p: float | None = None


@dataclass(frozen=True)
class DeployedTarget:
    """The deployed student with the highest BLEU among the CTranslate2 int8 rows (greedy),
    within ``max_drop`` BLEU of the teacher's fairseq beam row and at least ``min_speedup``
    times its tokens/s at every batch size."""

    max_drop: float
    min_speedup: float


MonoTarget = MeanTarget | DeployedTarget

#: The deployed-student study's targets.
MONO_TARGETS: tuple[MonoTarget, ...] = (
    MeanTarget("best student greedy within {limit} BLEU of the teacher's beam {beam} (within 1 "
               "on the other test sets), seed mean", "students", "teacher", (-0.5, -1.0),
               versus_decoding="beam", test_sets="every"),
    MeanTarget("Seq-KD + mono at least {limit} BLEU above Seq-KD, greedy, seed mean, p < {p}",
               "seq-kd-mono", "seq-kd", (1.0,), max_p=0.05),
    DeployedTarget(max_drop=1.0, min_speedup=25.0),
    MeanTarget("best GKD row greedy at least {limit} BLEU above the student it starts from, "
               "p < {p}", "gkd", "gkd-start", (0.3,), max_p=0.05),
)


def _decoded(decoding: str, beam: int) -> str:
    return "greedy" if decoding == "greedy" else f"beam {beam}"


def _mean_line(target: MeanTarget, means: Mapping[str, Mapping[str, float | None]],
               seeds: Mapping[str, int], p_value: Callable[[str, str], float | None],
               rows: Mapping[str, Sequence[ModelSpec]], test_sets: Sequence[str],
               beam: int) -> str:
    first = test_sets[0]
    text = target.what.format(limit=f"{abs(target.thresholds[0]):g}", beam=beam,
                              p=f"{target.max_p:g}" if target.max_p is not None else "")
    text += f" on {first}" if target.test_sets == "first" else " on every test set"

    def column(decoding: str, test_set: str) -> str:
        return f"{test_set}.beam{1 if decoding == 'greedy' else beam}"

    def best(name: str, decoding: str) -> ModelSpec | None:
        done = [m for m in rows[name] if means.get(m.key, {}).get(column(decoding, first))
                is not None]
        return max(done, key=lambda m: means[m.key][column(decoding, first)], default=None)

    a, b = best(target.model, target.decoding), best(target.versus, target.versus_decoding)
    if a is None or b is None:
        return _line(text, None)
    pairs = [(means[a.key].get(column(target.decoding, t)),
              means[b.key].get(column(target.versus_decoding, t))) for t in test_sets]
    if any(x is None or y is None for x, y in pairs):
        return _line(text, None)
    deltas = [x - y for x, y in pairs]  # type: ignore[operator]
    limits = [target.thresholds[min(i, len(target.thresholds) - 1)]
              for i in range(len(test_sets))]
    judged = 1 if target.test_sets == "first" else len(test_sets)
    ok = all(d >= limit for d, limit in zip(deltas[:judged], limits, strict=False))
    p = p_value(a.key, b.key) if target.max_p is not None else None
    if target.max_p is not None:
        if p is None:
            return _line(text, None)
        ok = ok and p < target.max_p
    (x, y), rest = pairs[0], ", ".join(
        f"{t} {d:+.2f}" for t, d in zip(test_sets[1:], deltas[1:], strict=True))
    numbers = (f"{a.label} {_decoded(target.decoding, beam)} {x:.2f} ({seeds.get(a.key, 1)} "
               f"seed(s)) vs {b.label} {_decoded(target.versus_decoding, beam)} {y:.2f} "
               f"({seeds.get(b.key, 1)} seed(s)): {deltas[0]:+.2f}"
               + ("" if p is None else f", p = {p:.3f}") + (f"; {rest}" if rest else ""))
    return _line(f"{text} ({numbers})", ok)


def _deployed_line(target: DeployedTarget, rows: Sequence[SpeedRow], reference: str,
                   beam: int) -> str:
    text = (f"best deployed student (CTranslate2 int8, greedy) within {target.max_drop:g} BLEU "
            f"of the teacher's fairseq beam {beam} and at least {target.min_speedup:g}x its "
            "tokens/s at every batch size")
    by = {(r.label, r.batch): r for r in rows}
    batches = sorted(r.batch for r in rows if r.label == reference)
    students = sorted({r.label for r in rows if r.engine == "ctranslate2 int8"
                       and r.label != f"{reference} (CT2 int8)"})
    if not batches or not students:
        return _line(text, None)
    last = batches[-1]
    measured = [s for s in students if all((s, b) in by for b in batches)]
    if not measured:
        return _line(text, None)
    best = max(measured, key=lambda s: by[s, last].bleu or 0.0)
    ours, theirs = by[best, last].bleu or 0.0, by[reference, last].bleu or 0.0
    speedups = {b: by[best, b].tokens_per_second / by[reference, b].tokens_per_second
                for b in batches}
    ok = theirs - ours <= target.max_drop and min(speedups.values()) >= target.min_speedup
    ratios = ", ".join(f"batch {b}: {s:.1f}x" for b, s in speedups.items())
    return _line(f"{text} ({best} {ours:.2f} vs {reference} {theirs:.2f}: "
                 f"{ours - theirs:+.2f}; {ratios})", ok)


def mono_target_lines(targets: Sequence[MonoTarget],
                      means: Mapping[str, Mapping[str, float | None]],
                      seeds: Mapping[str, int], p_value: Callable[[str, str], float | None],
                      rows: Mapping[str, Sequence[ModelSpec]], test_sets: Sequence[str],
                      beam: int, deploy_rows: Sequence[SpeedRow] = (),
                      deploy_reference: str = "teacher") -> list[str]:
    """One Markdown line per target, in the list's order: met, MISSED or not measured yet,
    with its numbers. ``means``: per row key the seed-mean BLEU per ``"TEST.beamB"`` column;
    ``seeds``: how many seeds each mean has; ``p_value(a, b)``: the p-value a target with
    ``max_p`` reads (None: not measured); ``rows``: every name a target may use -> its rows;
    ``deploy_rows``: the deployment measurement, ``deploy_reference`` its teacher row."""
    return [_deployed_line(t, deploy_rows, deploy_reference, beam)
            if isinstance(t, DeployedTarget)
            else _mean_line(t, means, seeds, p_value, rows, test_sets, beam) for t in targets]
