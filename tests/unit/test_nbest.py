"""Tests of the n-best file format (fairseq_seqkd.distill.nbest)."""

from __future__ import annotations

import os
import random

import pytest

from fairseq_seqkd.distill.nbest import (
    Hypothesis,
    NbestFormatError,
    Timing,
    check_indices,
    format_nbest_lines,
    parse_generate_output,
    read_generate_log,
    read_generate_output,
    read_nbest,
    write_nbest,
)
from fairseq_seqkd.errors import SeqKDError

H = Hypothesis


def test_format_exact_bytes():
    text = format_nbest_lines(3, [H("▁a b", -0.1234567), H("", -2.0), H("x@@ y", 0.0)])
    assert text == (
        "3\t0\t-0.123457\t▁a b\n"
        "3\t1\t-2.000000\t\n"
        "3\t2\t0.000000\tx@@ y\n"
    )
    assert format_nbest_lines(0, []) == ""


@pytest.mark.parametrize("tokens", ["a\tb", "a\nb", "a\rb"])
def test_format_rejects_separators_in_tokens(tokens):
    with pytest.raises(ValueError, match="index 1 rank 0"):
        format_nbest_lines(1, [H(tokens, -1.0)])


def test_format_rejects_negative_index():
    with pytest.raises(ValueError):
        format_nbest_lines(-1, [H("a", -1.0)])


def test_round_trip(tmp_path):
    entries = {
        0: [H("das ist gut", -0.5), H("das ist", -1.25)],
        1: [H("", -3.0)],
        4: [H("ü ö ä ▁x", -0.000001), H("a", -7.5), H("b c", -8.0)],
    }
    path = tmp_path / "train.nbest"
    # any input order; written sorted by (index, rank)
    write_nbest(path, [(4, entries[4]), (0, entries[0]), (1, entries[1])])
    got = read_nbest(path)
    assert list(got) == [0, 1, 4]
    for index, hyps in entries.items():
        assert [h.tokens for h in got[index]] == [h.tokens for h in hyps]
        assert [h.score for h in got[index]] == [float(f"{h.score:.6f}") for h in hyps]
    text = path.read_text(encoding="utf-8")
    assert text == "".join(format_nbest_lines(i, entries[i]) for i in (0, 1, 4))
    # no temp file left behind
    assert os.listdir(tmp_path) == ["train.nbest"]


def test_write_is_atomic_on_error(tmp_path):
    path = tmp_path / "out.nbest"
    path.write_text("old\n", encoding="utf-8")
    with pytest.raises(ValueError):
        write_nbest(path, [(0, [H("ok", -1.0)]), (1, [H("bad\ttoken", -1.0)])])
    with pytest.raises(ValueError, match="duplicate"):
        write_nbest(path, [(0, [H("a", -1.0)]), (0, [H("b", -1.0)])])
    assert path.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["out.nbest"]


def _write_bytes(tmp_path, data: bytes, name="nbest.txt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_malformed_line_reports_file_and_line(tmp_path):
    lines = [f"{i}\t0\t-1.000000\ttok {i}" for i in range(16)] + ["16 0 -1.0 spaces not tabs"]
    path = _write_bytes(tmp_path, ("\n".join(lines) + "\n").encode())
    with pytest.raises(NbestFormatError) as info:
        read_nbest(path)
    message = str(info.value)
    assert f"{path}:17: expected 'index<TAB>rank<TAB>score<TAB>tokens', got" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "bad_line",
    [
        "x\t0\t-1.0\ta",
        "0\t-1\t-1.0\ta",
        "0\t0\tnan\ta",
        "0\t0\tabc\ta",
        "0\t0",
        "",
        "0\t0\t-1\ta\tb",
    ],
)
def test_malformed_variants(tmp_path, bad_line):
    path = _write_bytes(tmp_path, f"0\t0\t-1.0\tok\n{bad_line}\n".encode())
    with pytest.raises(NbestFormatError, match=r"nbest\.txt:2: "):
        read_nbest(path)


def test_non_utf8_reports_line(tmp_path):
    path = _write_bytes(tmp_path, b"0\t0\t-1.0\tok\n1\t0\t-1.0\tbad \xff byte\n")
    with pytest.raises(SeqKDError, match=r"nbest\.txt:2: invalid UTF-8"):
        read_nbest(path)


def test_duplicate_rank(tmp_path):
    path = _write_bytes(tmp_path, b"0\t0\t-1.0\ta\n0\t1\t-2.0\tb\n0\t1\t-3.0\tc\n")
    with pytest.raises(NbestFormatError, match=r"nbest\.txt:3: duplicate .*index 0, rank 1"):
        read_nbest(path)


def test_non_contiguous_ranks(tmp_path):
    path = _write_bytes(tmp_path, b"0\t0\t-1.0\ta\n1\t0\t-1.0\ta\n1\t2\t-2.0\tb\n")
    with pytest.raises(NbestFormatError, match=r"nbest\.txt:2: .*index 1.*rank 1 is missing"):
        read_nbest(path)
    path = _write_bytes(tmp_path, b"5\t1\t-1.0\ta\n", name="n2.txt")
    with pytest.raises(NbestFormatError, match="rank 0 is missing"):
        read_nbest(path)


def test_crlf_and_empty_tokens(tmp_path):
    path = _write_bytes(tmp_path, b"0\t0\t-1.5\t\r\n0\t1\t-2.5\ta b\r\n")
    assert read_nbest(path) == {0: [H("", -1.5), H("a b", -2.5)]}
    assert read_nbest(_write_bytes(tmp_path, b"", name="empty.txt")) == {}


def test_check_indices():
    nbest = {0: [H("a", -1.0)], 1: [H("b", -1.0)], 3: [H("c", -1.0)]}
    check_indices(nbest, 4, "x.nbest", allow_missing=True)
    with pytest.raises(NbestFormatError, match=r"x\.nbest: no hypotheses for sentence index 2"):
        check_indices(nbest, 4, "x.nbest")
    with pytest.raises(NbestFormatError, match="sentence index 3 is out of range"):
        check_indices(nbest, 3, "x.nbest")
    check_indices({0: [H("a", -1.0)], 1: [H("b", -1.0)]}, 2)


GENERATE_BLOCKS = {
    0: [
        "S-0\tein Haus",
        "T-0\ta house",
        "H-0\t-0.31\ta house",
        "D-0\t-0.31\ta house",
        "P-0\t-0.2 -0.4 -0.3",
        "H-0\t-0.52\tthe house",
        "D-0\t-0.52\tthe house",
        "P-0\t-0.5 -0.6 -0.3",
    ],
    7: [
        "S-7\tes ist",
        "T-7\tit is",
        "H-7\t-1.25\tit is@@ n't",
        "D-7\t-1.25\tit isn't",
        "P-7\t-1 -1 -2",
        "H-7\t-2\t",
        "D-7\t-2\t",
    ],
    12: ["S-12\tx", "H-12\t-0.001\ty ▁z", "D-12\t-0.001\ty z", "P-12\t-0.001"],
}


def test_read_generate_log_shuffled_with_info_lines(tmp_path):
    info = [
        "2024-01-01 12:00:00 | INFO | fairseq_cli.generate | {'_name': None}",
        "2024-01-01 12:00:01 | INFO | fairseq.data.data_utils | loaded 3 examples",
        "Generate test with beam=5: BLEU4 = 31.20, 60.1/36.4/24.2/16.5 (BP=1.000)",
        "Hello world",
        "",
    ]
    rng = random.Random(3)
    for trial in range(5):
        # sentences come out in any order; within a sentence fairseq prints best first
        blocks = list(GENERATE_BLOCKS.items())
        rng.shuffle(blocks)
        lines = [line for _, block in blocks for line in block]
        for line in info:
            lines.insert(rng.randrange(len(lines) + 1), line)
        path = tmp_path / f"gen{trial}.log"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        got = read_generate_log(path)
        assert list(got) == [0, 7, 12]
        assert got[0] == [H("a house", -0.31), H("the house", -0.52)]
        assert got[7] == [H("it is@@ n't", -1.25), H("", -2.0)]
        assert got[12] == [H("y ▁z", -0.001)]


def test_read_generate_log_interleaved_sentences(tmp_path):
    # lines of different sentences interleaved: H lines keep their relative order
    lines = ["H-1\t-1\tb1", "H-0\t-1\ta1", "S-1\tsrc", "H-1\t-2\tb2", "H-0\t-3\ta2"]
    path = tmp_path / "gen.log"
    path.write_text("\n".join(lines), encoding="utf-8")
    got = read_generate_log(path)
    assert got == {0: [H("a1", -1.0), H("a2", -3.0)], 1: [H("b1", -1.0), H("b2", -2.0)]}


@pytest.mark.parametrize(
    "bad", ["H-3\tnot-a-score\ttokens", "H-3 -0.5 tokens", "H-x\t-1\ttok", "D-3\t-0.5"]
)
def test_read_generate_log_malformed(tmp_path, bad):
    path = tmp_path / "gen.log"
    path.write_text(f"S-3\tsrc\nH-2\t-1\tok\n{bad}\n", encoding="utf-8")
    with pytest.raises(NbestFormatError, match=r"gen\.log:3: "):
        read_generate_log(path)


def test_read_generate_log_non_utf8(tmp_path):
    path = tmp_path / "gen.log"
    path.write_bytes(b"H-0\t-1\tok\nH-1\t-1\t\xc3\x28\n")
    with pytest.raises(SeqKDError, match=r"gen\.log:2: invalid UTF-8"):
        read_generate_log(path)


def test_read_generate_output_keeps_detokenized_targets_and_timing(tmp_path):
    path = tmp_path / "gen.log"
    path.write_text(
        "S-1\tb\nT-1\tthe cat\nH-1\t-0.5\t▁the ▁cat\nD-1\t-0.5\tthe cat\n"
        "T-0\tthe\tdog\nH-0\t-0.25\t▁dog\nD-0\t-0.25\tdog\nD-0\t-0.75\tdogs\n"
        "2024-01-01 | INFO | fairseq_cli.generate | Translated 2 sentences (5 tokens) in 0.1s "
        "(20.00 sentences/s, 50.00 tokens/s)\n", encoding="utf-8")
    out = read_generate_output(path)
    assert out.hypotheses == {0: [H("▁dog", -0.25)], 1: [H("▁the ▁cat", -0.5)]}
    assert out.detokenized == {0: [H("dog", -0.25), H("dogs", -0.75)], 1: [H("the cat", -0.5)]}
    assert out.targets == {0: "the\tdog", 1: "the cat"}  # a reference may hold a tab
    # the time comes from the rates, which have more digits than "in 0.1s"
    assert out.timing == Timing(sentences=2, tokens=5, seconds=0.1)
    assert read_generate_output(tmp_path / "gen.log").timing.seconds == pytest.approx(5 / 50)
    with pytest.raises(NbestFormatError, match=r"gen\.log:8: sentence id 0 appears twice"):
        read_generate_output(path, nbest=False)
    assert parse_generate_output(path.read_text(encoding="utf-8")) == out
    assert parse_generate_output("H-0\t-1\tok\n").timing is None


@pytest.mark.parametrize("bad", ["T-3 the reference", "T-x\tref", "D-3\t-0.5", "D-3\tnan\tx"])
def test_read_generate_output_rejects_a_malformed_line(tmp_path, bad):
    path = tmp_path / "gen.log"
    path.write_text(f"S-3\tsrc\nD-2\t-1\tok\n{bad}\n", encoding="utf-8")
    with pytest.raises(NbestFormatError, match=rf"gen\.log:3: expected '{bad[0]}-<index>"):
        read_generate_output(path)
    with pytest.raises(SeqKDError, match=r"<fairseq-generate output>:3: "):
        parse_generate_output(path.read_text(encoding="utf-8"))


def test_read_generate_output_of_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(SeqKDError, match=r"^cannot read .*missing\.log: No such file"):
        read_generate_output(tmp_path / "missing.log")
