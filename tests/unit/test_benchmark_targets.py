"""The benchmark's targets as data: one list per preset, each line evaluated from made-up
numbers to met, MISSED or not measured yet, with the numbers behind the verdict."""

import dataclasses

import pytest

from fairseq_seqkd.deploy.speed import SpeedRow
from fairseq_seqkd.experiments.benchmark import Benchmark
from fairseq_seqkd.experiments.benchmark_presets import BENCHMARK_PRESETS, MonoPreset
from fairseq_seqkd.experiments.benchmark_targets import (
    MULTI30K_TARGETS,
    BleuTarget,
    DeploymentTarget,
    target_lines,
)
from fairseq_seqkd.experiments.pipeline import ModelSpec

TESTS = ("test", "test2")
TEACHER, SEQ_KD = ModelSpec("teacher", "Teacher", "t", "t.pt"), ModelSpec("seq-kd", "Seq-KD",
                                                                           "s", "s.pt")
GKD = (ModelSpec("gkd-a", "GKD a", "a", "a.pt"), ModelSpec("gkd-b", "GKD b", "b", "b.pt"))
ROWS = {"teacher": (TEACHER,), "seq-kd": (SEQ_KD,), "gkd": GKD}


def scores(**bleu: tuple[float | None, ...]) -> dict[str, dict[str, float | None]]:
    """Per model key, (greedy, beam 5) BLEU on ``test`` then on ``test2``."""
    return {key: {f"{t}.beam{b}": values[2 * i + j] for i, t in enumerate(TESTS)
                  for j, b in enumerate((1, 5))} for key, values in bleu.items()}


def line(target: BleuTarget, **bleu: tuple[float | None, ...]) -> str:
    (only,) = target_lines([target], scores(**bleu), ROWS, TESTS, beam=5)
    return only


WITHIN = BleuTarget("best GKD row greedy within {limit} BLEU of the teacher's beam {beam}",
                    "gkd", "teacher", ">=", -0.5, versus_decoding="beam")
GAP = BleuTarget("Seq-KD gap at most {limit} BLEU", "seq-kd", "seq-kd", "<=", 0.5,
                 decoding="beam")


def test_a_group_stands_for_its_best_row_and_the_other_test_sets_are_shown():
    met = line(WITHIN, teacher=(40.0, 36.0, 40.0, 35.0), **{"gkd-a": (35.6, 0, 33.0, 0),
                                                             "gkd-b": (35.5, 0, 36.0, 0)})
    assert met == ("- best GKD row greedy within 0.5 BLEU of the teacher's beam 5 on test "
                   "(GKD a greedy 35.60 vs Teacher beam 5 36.00: -0.40; test2 -2.00): **met**")
    missed = line(WITHIN, teacher=(40.0, 36.0, 40.0, 35.0), **{"gkd-a": (35.4, 0, 33.0, 0),
                                                                "gkd-b": (None, 0, 36.0, 0)})
    assert missed.endswith("(GKD a greedy 35.40 vs Teacher beam 5 36.00: -0.60; test2 -2.00): "
                           "**MISSED**")


def test_the_threshold_is_inclusive_and_the_comparison_is_the_lines_own():
    assert line(GAP, **{"seq-kd": (30.0, 30.5, 30.0, 33.0)}).endswith(
        "(Seq-KD beam 5 30.50 vs Seq-KD greedy 30.00: +0.50; test2 +3.00): **met**")
    assert line(GAP, **{"seq-kd": (30.0, 30.51, 30.0, 30.0)}).endswith("+0.51; test2 +0.00): "
                                                                         "**MISSED**")
    above = dataclasses.replace(GAP, comparison=">=")
    assert line(above, **{"seq-kd": (30.0, 30.51, 30.0, 30.0)}).endswith("**met**")


def test_every_test_set_is_judged_when_the_line_says_so():
    every = dataclasses.replace(GAP, test_sets="every")
    assert line(every, **{"seq-kd": (30.0, 30.5, 30.0, 33.0)}) == (
        "- Seq-KD gap at most 0.5 BLEU on every test set (Seq-KD beam 5 30.50 vs Seq-KD greedy "
        "30.00: +0.50; test2 +3.00): **MISSED**")
    assert line(every, **{"seq-kd": (30.0, 30.5, 30.0, 30.1)}).endswith("**met**")


def test_a_missing_number_is_not_measured_yet():
    for bleu in ({"teacher": (40.0, None, 40.0, 35.0), "gkd-a": (35.0, 0, 35.0, 0),
                  "gkd-b": (None, 0, 0, 0)},
                 {"teacher": (40.0, 36.0, 40.0, None), "gkd-a": (35.0, 0, 35.0, 0),
                  "gkd-b": (None, 0, 0, 0)},
                 {"teacher": (40.0, 36.0, 40.0, 35.0), "gkd-a": (None, 0, 35.0, 0),
                  "gkd-b": (None, 0, 0, 0)}):
        assert line(WITHIN, **bleu) == ("- best GKD row greedy within 0.5 BLEU of the "
                                         "teacher's beam 5 on test: **not measured yet**")


def deploy_rows(student_speedup: float) -> list[SpeedRow]:
    """The fairseq teacher at 100 tokens/s, its CT2 twin 4x faster, the deployed students
    ``student_speedup`` times it (CT2 float32 a little slower), BLEU 0.2 under their twins."""
    made = []
    for batch in (1, 64):
        made += [SpeedRow("teacher", "fairseq", 5, batch, 10, 100, 1.0, 36.0),
                 SpeedRow("teacher (CT2 int8)", "ctranslate2 int8", 5, batch, 10, 400, 1.0, 36.0)]
        for name in ("student", "deep-shallow"):
            made.append(SpeedRow(name, "fairseq", 1, batch, 10, 500, 1.0, 34.0))
            made.append(SpeedRow(f"{name} (CT2 int8)", "ctranslate2 int8", 1, batch, 10,
                                 int(100 * student_speedup), 1.0, 33.8))
        made.append(SpeedRow("student (CT2 float32)", "ctranslate2 float32", 1, batch, 10,
                             int(90 * student_speedup), 1.0, 33.8))
    return made


def test_deployment_lines_use_the_targets_thresholds():
    target = DeploymentTarget(min_speedup=25.0, max_bleu_drop=0.5, min_same_engine=8.0)
    lines = target_lines([target], {}, {}, TESTS, 5, deploy_rows(30.0))
    assert lines[0] == ("- best deployed student (student (CT2 int8)) at least 25x the teacher "
                        "tokens/s at every batch size (batch 1: 30.0x, batch 64: 30.0x): **met**")
    assert lines[1].endswith("(33.80 vs 34.00, -0.20): **met**")
    assert [x.endswith("7.5x (at least 8x): **MISSED**") for x in lines[2:]] == [True, True]
    stricter = dataclasses.replace(target, min_speedup=31.0, max_bleu_drop=0.1,
                                   min_same_engine=7.0)
    assert [x.rsplit("**", 2)[1] for x in target_lines([stricter], {}, {}, TESTS, 5,
                                                        deploy_rows(30.0))] == [
        "MISSED", "MISSED", "met", "met"]
    (waiting,) = target_lines([target], {}, {}, TESTS, 5, [])
    assert waiting.startswith("- best deployed student at least 25x the teacher tokens/s")
    assert waiting.endswith("**not measured yet**")


def test_lines_keep_the_lists_order():
    made = scores(teacher=(40.0, 36.0, 40.0, 35.0), **{"seq-kd": (30.0, 30.2, 30.0, 30.0),
                                                        "gkd-a": (35.6, 0, 33.0, 0),
                                                        "gkd-b": (None, 0, 0, 0)})
    lines = target_lines([GAP, DeploymentTarget(25, 0.5, 8), WITHIN], made, ROWS, TESTS, 5, [])
    assert [x[:12] for x in lines] == ["- Seq-KD gap", "- best deplo", "- best GKD r"]


@pytest.mark.parametrize("name", sorted(n for n, p in BENCHMARK_PRESETS.items()
                                         if p.targets and not isinstance(p, MonoPreset)))
def test_each_preset_has_one_list_naming_its_own_rows(name, tmp_path):
    preset = BENCHMARK_PRESETS[name]
    assert preset.targets == MULTI30K_TARGETS
    bench = Benchmark(tmp_path / "out", preset, corpus=tmp_path / "corpus")
    rows = bench.target_rows()
    assert all(t.model in rows and t.versus in rows
               for t in preset.targets if isinstance(t, BleuTarget))
    assert rows["gkd"] == bench.gkd_models and bench.gkd_models[0] in rows["students"]
    # the pruned rows the targets judge are the ones --part table1 runs
    assert {m.key for m in bench.pruned_models if bench.part_of(m.key) == "table1"} == {
        "pruned-80", "pruned-90"}


def test_a_target_naming_no_row_of_the_benchmark_is_refused(tmp_path):
    typo = dataclasses.replace(MULTI30K_TARGETS[2], model="pruned-70")
    preset = dataclasses.replace(BENCHMARK_PRESETS["ci"], targets=(typo,))
    with pytest.raises(ValueError, match="pruned-70"):
        Benchmark(tmp_path / "out", preset, corpus=tmp_path / "corpus")
