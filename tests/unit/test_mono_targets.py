"""The deployed-student study's targets from made-up numbers: seed means per test set, the
paired bootstrap's p-value, the best deployed int8 student; met, MISSED or not measured yet."""

from fairseq_seqkd.deploy.speed import SpeedRow
from fairseq_seqkd.experiments.benchmark_targets import (
    MONO_TARGETS,
    DeployedTarget,
    MeanTarget,
    mono_target_lines,
)
from fairseq_seqkd.experiments.pipeline import ModelSpec

TESTS = ("test", "test1", "test2")
ROWS = {key: (ModelSpec(key, label, key, f"{key}.pt"),) for key, label in (
    ("teacher", "Teacher"), ("seq-kd", "Seq-KD"), ("seq-kd-mono", "Seq-KD + mono"),
    ("gkd-0.1", "GKD 0.1"), ("start", "Start"))}
ROWS |= {"students": ROWS["seq-kd"] + ROWS["seq-kd-mono"] + ROWS["gkd-0.1"],
         "gkd": ROWS["gkd-0.1"], "gkd-start": ROWS["start"]}
BEST, MONO, DEPLOYED, GKD = MONO_TARGETS


def means(**greedy_beam: tuple[float, ...]) -> dict[str, dict[str, float]]:
    """Per row (greedy, beam 5) on each of TESTS in turn."""
    return {key: {f"{t}.beam{b}": v[2 * i + j] for i, t in enumerate(TESTS)
                  for j, b in enumerate((1, 5))} for key, v in greedy_beam.items()}


def lines(targets, made, p=lambda a, b: 0.01, deploy=()):
    return mono_target_lines(targets, made, {"seq-kd": 3, "seq-kd-mono": 3}, p, ROWS, TESTS, 5,
                             deploy)


def test_best_student_is_judged_on_every_test_set_with_its_own_limit():
    made = means(teacher=(0, 40.0, 0, 35.0, 0, 33.0), **{"seq-kd": (38.0,) * 6,
                                                         "seq-kd-mono": (39.6, 0, 34.1, 0,
                                                                         32.0, 0)})
    (line,) = lines([BEST], made)
    # test -0.40 (limit 0.5), test1 -0.90 and test2 -1.00 (limit 1.0)
    assert line.startswith("- best student greedy within 0.5 BLEU of the teacher's beam 5")
    assert "(Seq-KD + mono greedy 39.60 (3 seed(s)) vs Teacher beam 5 40.00 (1 seed(s)): " \
           "-0.40; test1 -0.90, test2 -1.00)" in line and line.endswith("**met**")
    made["seq-kd-mono"]["test2.beam1"] = 31.9
    assert lines([BEST], made)[0].endswith("test2 -1.10): **MISSED**")


def test_a_gain_needs_its_size_and_its_p_value():
    made = means(**{"seq-kd": (36.0,) * 6, "seq-kd-mono": (37.2,) * 6})
    (met,) = lines([MONO], made)
    assert met.endswith("(Seq-KD + mono greedy 37.20 (3 seed(s)) vs Seq-KD greedy 36.00 "
                        "(3 seed(s)): +1.20, p = 0.010; test1 +1.20, test2 +1.20): **met**")
    assert lines([MONO], made, p=lambda a, b: 0.2)[0].endswith("**MISSED**")
    assert lines([MONO], made, p=lambda a, b: None)[0].endswith("**not measured yet**")
    made["seq-kd-mono"]["test.beam1"] = 36.9
    assert lines([MONO], made)[0].endswith("**MISSED**")
    # the start of the GKD rows is a group of its own
    gkd = means(**{"gkd-0.1": (30.4,) * 6, "start": (30.0,) * 6})
    assert lines([GKD], gkd, p=lambda a, b: (a, b) == ("gkd-0.1", "start") and 0.04)[0] \
        .endswith("+0.40, p = 0.040; test1 +0.40, test2 +0.40): **met**")
    assert lines([GKD], means(start=(30.0,) * 6))[0].endswith("**not measured yet**")


def test_the_best_deployed_int8_student_against_the_teachers_fairseq_beam():
    def run(label: str, engine: str, batch: int, tokens: int, bleu: float) -> SpeedRow:
        return SpeedRow(label, engine, 1, batch, 100, tokens, 1.0, bleu)

    rows = [run("teacher", "fairseq", 1, 100, 40.0), run("teacher", "fairseq", 64, 1000, 40.0),
            run("teacher (CT2 int8)", "ctranslate2 int8", 1, 900, 40.0),
            run("teacher (CT2 int8)", "ctranslate2 int8", 64, 9000, 40.0),
            run("a (CT2 int8)", "ctranslate2 int8", 1, 3000, 39.2),
            run("a (CT2 int8)", "ctranslate2 int8", 64, 26000, 39.2),
            run("b (CT2 int8)", "ctranslate2 int8", 1, 9000, 38.0),
            run("b (CT2 int8)", "ctranslate2 int8", 64, 90000, 38.0),
            run("a (CT2 float32)", "ctranslate2 float32", 1, 9000, 45.0),
            run("a (CT2 float32)", "ctranslate2 float32", 64, 90000, 45.0)]
    (line,) = lines([DEPLOYED], {}, deploy=rows)
    # a: the best int8 BLEU (the teacher's own int8 export and float32 rows are not candidates)
    assert line.endswith("(a (CT2 int8) 39.20 vs teacher 40.00: -0.80; batch 1: 30.0x, "
                         "batch 64: 26.0x): **met**")
    slower = [r if r.label != "a (CT2 int8)" or r.batch != 64 else
              run("a (CT2 int8)", "ctranslate2 int8", 64, 24000, 39.2) for r in rows]
    assert lines([DEPLOYED], {}, deploy=slower)[0].endswith("batch 64: 24.0x): **MISSED**")
    assert lines([DeployedTarget(0.5, 25.0)], {}, deploy=rows)[0].endswith("**MISSED**")
    assert lines([DEPLOYED], {})[0].endswith("**not measured yet**")


def test_lines_keep_the_lists_order_and_wait_for_missing_rows():
    waiting = lines(MONO_TARGETS, {})
    assert [x[:12] for x in waiting] == ["- best stude", "- Seq-KD + m", "- best deplo",
                                         "- best GKD r"]
    assert all(x.endswith("**not measured yet**") for x in waiting)
    one = MeanTarget("x {limit}", "seq-kd", "teacher", (1.0,))
    assert lines([one], means(**{"seq-kd": (1.0,) * 6}))[0] == "- x 1 on test: " \
        "**not measured yet**"
