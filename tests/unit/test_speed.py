"""The deployment speed table and issue 11's target verdicts, on hand-made rows."""

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
