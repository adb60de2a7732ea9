"""The demo's one-process evaluation: its files and their checks (no model needed)."""

import json

import pytest

from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.experiments.decode import (
    build_parser,
    decoding_json,
    hypothesis_file,
    read_decoding_run,
)


def write_run(directory, key: str, hypotheses: list[str], sentences: int) -> None:
    hypothesis_file(directory, key, "test", 1).write_text("".join(h + "\n" for h in hypotheses))
    decoding_json(directory, key).write_text(json.dumps({"test": {"1": {
        "engine": "fairseq", "sentences": sentences, "tokens": 12, "seconds": 0.5}}}))


def test_a_run_reads_back_with_empty_hypotheses_kept_in_place(tmp_path):
    write_run(tmp_path, "seq-kd", ["a b", "", "c"], 3)
    run = read_decoding_run(tmp_path, "seq-kd", "test", 1)
    assert run.hypotheses == ["a b", "", "c"] and run.tokens_per_second == 24


def test_a_short_hypothesis_file_or_a_missing_run_is_one_line(tmp_path):
    write_run(tmp_path, "seq-kd", ["a b", "c"], 3)
    with pytest.raises(SeqKDError, match=r"seq-kd\.test\.beam1\.hyp: 2 lines for 3 decoded"):
        read_decoding_run(tmp_path, "seq-kd", "test", 1)
    with pytest.raises(SeqKDError, match=r"seq-kd\.json: no decoding of test at beam 5"):
        read_decoding_run(tmp_path, "seq-kd", "test", 5)
    with pytest.raises(SeqKDError, match=r"teacher\.json: no decoding of test at beam 1"):
        read_decoding_run(tmp_path, "teacher", "test", 1)


@pytest.mark.parametrize("spec", ["noengine", "k=onnx:path", "=fairseq:x", "k=fairseq:"])
def test_a_bad_model_spec_names_the_option(spec, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data", "d", "--output-dir", "o", "--model", spec])
    assert "expected KEY=ENGINE:PATH" in capsys.readouterr().err
