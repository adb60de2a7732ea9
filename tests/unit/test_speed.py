"""The deployment speed table and deployment target verdicts, on hand-made rows."""

from fairseq_seqkd.deploy.speed import SpeedRow, deployment_targets, speed_table


def rows(speedup_1: float, speedup_64: float, student_bleu: float) -> list[SpeedRow]:
    """Teacher 100 and 1000 tokens/s at batch 1 and 64; the CT2 teacher 4x faster; the
    deployed student ``speedup_1``/``speedup_64`` times the fairseq teacher."""
    made = []
    for batch, teacher_tps, speedup in ((1, 100.0, speedup_1), (64, 1000.0, speedup_64)):
        made += [
            SpeedRow("teacher", "fairseq", 5, batch, 10, int(teacher_tps), 1.0, 36.0),
            SpeedRow("teacher (CT2 int8)", "ctranslate2 int8", 5, batch, 10,
                     int(4 * teacher_tps), 1.0, 36.1),
            SpeedRow("student", "fairseq", 1, batch, 10, int(5 * teacher_tps), 1.0, 34.0),
            SpeedRow("student (CT2 int8)", "ctranslate2 int8", 1, batch, 10,
                     int(speedup * teacher_tps), 1.0, student_bleu),
        ]
    return made


def verdicts(made: list[SpeedRow]) -> list[bool]:
    return [t.met for t in deployment_targets(
        made, "teacher", "teacher (CT2 int8)", ["student (CT2 int8)"],
        {"student (CT2 int8)": "student"})]


def test_targets_met_at_every_batch_size():
    # 30x at both batch sizes; BLEU -0.3; same engine 7.5x at both (missed)
    assert verdicts(rows(30.0, 30.0, 33.7)) == [True, True, False, False]


def test_speed_target_needs_every_batch_size_and_bleu_drop_counts():
    # batch 1: 20x (missed), batch 64: 100x; BLEU -0.6 (missed); same engine 5x and 25x
    assert verdicts(rows(20.0, 100.0, 33.4)) == [False, False, False, True]


def test_table_speed_up_is_against_the_reference_at_the_same_batch():
    table = speed_table(rows(30.0, 15.0, 33.7), "teacher")
    lines = table.splitlines()
    assert lines[2].startswith("| teacher | fairseq | 5 | 1 | 100 | 1.0x | 36.00 |")
    assert "| student (CT2 int8) | ctranslate2 int8 | 1 | 1 | 3,000 | 30.0x | 33.70 |" in table
    assert "| student (CT2 int8) | ctranslate2 int8 | 1 | 64 | 15,000 | 15.0x |" in table


def test_best_deployed_student_is_the_fastest_within_the_bleu_bound():
    """A faster int8 student that loses 0.8 BLEU is not the best; the slower one that loses
    nothing is (the Multi30k deep-shallow student against the 2+2 one)."""
    made = rows(40.0, 40.0, 33.2)  # "student (CT2 int8)": 40x, -0.8 BLEU
    for batch, teacher_tps in ((1, 100.0), (64, 1000.0)):
        made += [SpeedRow("deep-shallow", "fairseq", 1, batch, 10, int(5 * teacher_tps), 1.0,
                          34.5),
                 SpeedRow("deep-shallow (CT2 int8)", "ctranslate2 int8", 1, batch, 10,
                          int(30 * teacher_tps), 1.0, 34.5)]
    twins = {"student (CT2 int8)": "student", "deep-shallow (CT2 int8)": "deep-shallow"}
    targets = deployment_targets(made, "teacher", "teacher (CT2 int8)",
                                 ["student (CT2 int8)", "deep-shallow (CT2 int8)"], twins)
    assert "(deep-shallow (CT2 int8))" in targets[0].text and targets[0].met
    assert "34.50 vs 34.50, +0.00" in targets[1].text and targets[1].met
    # when no student is within the bound, the fastest is judged (and its BLEU target missed)
    worse = [r if r.label != "deep-shallow (CT2 int8)" else
             SpeedRow(r.label, r.engine, r.beam, r.batch, r.sentences, r.tokens, r.seconds, 33.5)
             for r in made]
    targets = deployment_targets(worse, "teacher", "teacher (CT2 int8)",
                                 ["student (CT2 int8)", "deep-shallow (CT2 int8)"], twins)
    assert "(student (CT2 int8))" in targets[0].text and not targets[1].met
