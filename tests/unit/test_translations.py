"""External translations as targets (fairseq_seqkd.distill.translations): counts, bad input,
the n-best they become and what selection does with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fairseq.data import Dictionary

from fairseq_seqkd.distill.mono import prepare_mono
from fairseq_seqkd.distill.nbest import read_nbest
from fairseq_seqkd.distill.select import select_targets
from fairseq_seqkd.distill.translations import (
    NO_SCORE,
    check_translation_options,
    count_lines,
    mono_translations,
    parallel_translations,
)
from fairseq_seqkd.errors import SeqKDError

WORDS = ["alpha", "beta", "gamma", "delta"]


def make_dictionary(symbols: list[str]) -> Dictionary:
    dictionary = Dictionary()
    for symbol in symbols:
        dictionary.add_symbol(symbol)
    dictionary.finalize()
    return dictionary


TGT = make_dictionary([w.upper() for w in WORDS])


def write(path: Path, content: bytes | str) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def tokens_of(path: Path) -> dict[int, str]:
    return {i: hyps[0].tokens for i, hyps in read_nbest(path).items()}


# ------------------------------------------------------------------------- options


@pytest.mark.parametrize(("options", "message"), [
    ({"filter_worst": 5.0}, r"^--filter-worst drops the sentences the teacher scores worst, "
                            r"but --translations gives one translation per sentence from "
                            r"another system, with no score; leave --filter-worst out$"),
    ({"min_score": -1.0}, r"^--min-score .* leave --min-score out$"),
    ({"strategy": "seq-inter"}, r"^--strategy seq-inter picks among the teacher's n-best .* "
                                r"use --strategy seq-kd$"),
    ({"nbest": 4}, r"^--nbest 4 asks for the teacher's n-best"),
])
def test_options_that_need_teacher_scores_are_refused(options, message):
    with pytest.raises(SeqKDError, match=message):
        check_translation_options(**{"strategy": "seq-kd", **options})


def test_options_without_scores_pass():
    check_translation_options(strategy="seq-kd")
    check_translation_options(strategy="seq-kd", nbest=1, filter_worst=0.0, min_score=None)
    with pytest.raises(SeqKDError, match=r"--mono-translations gives one translation"):
        check_translation_options(strategy="seq-kd", min_score=0.0,
                                  option="--mono-translations")


# ------------------------------------------------------------------------- parallel


def test_count_lines_counts_as_the_reader_does(tmp_path):
    assert count_lines(write(tmp_path / "a", "")) == 0
    assert count_lines(write(tmp_path / "b", "x\n\ny")) == 3
    assert count_lines(write(tmp_path / "c", "x\r\n\n")) == 2


def test_parallel_translations_become_a_one_best_without_scores(tmp_path):
    path = write(tmp_path / "t.txt", "ALPHA  BETA\r\n\nGAMMA\n")
    out = tmp_path / "train.nbest"
    summary = parallel_translations(path, str(out), sentences=3, source="the split",
                                    dictionary=TGT)
    assert out.read_text() == ("0\t0\t0.000000\tALPHA BETA\n1\t0\t0.000000\t\n"
                               "2\t0\t0.000000\tGAMMA\n")
    assert (summary.sentences, summary.empty) == (3, 1)
    assert summary.files[0]["lines"] == 3 and len(summary.files[0]["sha256"]) == 64
    nbest = read_nbest(out)
    assert all(h.score == NO_SCORE for hyps in nbest.values() for h in hyps)
    # selection runs unchanged: the empty translation falls back to the reference ...
    selection = select_targets(nbest, size=3, sources=["a b", "c", "d"],
                               references=["R0", "R1", "R2"], strategy="seq-kd")
    assert selection.targets == ["ALPHA BETA", "R1", "GAMMA"]
    # ... and refuses the score filters, which have no scores to read
    with pytest.raises(SeqKDError, match=r"--min-score needs the teacher's scores"):
        select_targets(nbest, size=3, sources=None, references=["a", "b", "c"],
                       strategy="seq-kd", min_score=-1.0)


def test_a_line_count_that_differs_names_both_counts_and_files(tmp_path):
    path = write(tmp_path / "t.txt", "ALPHA\nBETA\n")
    out = tmp_path / "train.nbest"
    with pytest.raises(SeqKDError, match=(
            rf"^--translations {path} has 2 lines, but data/train.src-tgt.src has 3 "
            r"sentences; give one translation per source sentence, in order$")):
        parallel_translations(path, str(out), sentences=3, source="data/train.src-tgt.src",
                              dictionary=TGT)
    assert list(tmp_path.iterdir()) == [Path(path)]


def test_a_translation_that_is_not_utf8_names_file_and_line(tmp_path):
    path = write(tmp_path / "t.txt", b"ALPHA\nBETA \xe9\n")
    out = tmp_path / "train.nbest"
    with pytest.raises(SeqKDError, match=rf"^{path}:2: invalid UTF-8 byte 0xe9 at column 6$"):
        parallel_translations(path, str(out), sentences=2, source="s", dictionary=TGT)
    assert list(tmp_path.iterdir()) == [Path(path)]  # no n-best, no temporary file


def test_unk_heavy_translations_warn_once(tmp_path):
    path = write(tmp_path / "t.txt", "ALPHA\nalpha beta\nBETA\nxx yy ALPHA\n")
    messages: list[str] = []
    summary = parallel_translations(path, str(tmp_path / "n"), sentences=4, source="s",
                                    dictionary=TGT, log=messages.append)
    assert (summary.unk_heavy, summary.first_unk_heavy) == (2, f"{path}:2")
    assert len(messages) == 1 and messages[0].startswith(
        f"2 of 4 --translations lines have more than half their tokens <unk> "
        f"after segmentation (first: {path}:2)")


# ------------------------------------------------------------------------- monolingual


@pytest.fixture
def data(tmp_path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    make_dictionary(WORDS).save(str(directory / "dict.src.txt"))
    TGT.save(str(directory / "dict.tgt.txt"))
    return directory


def prepare(tmp_path: Path, data: Path, sources: list[str], **kw):
    return prepare_mono(sources, str(data), str(tmp_path / "mono"), langs=("src", "tgt"),
                        max_source_positions=4, log=lambda _: None, **kw)


def test_skipped_source_lines_skip_their_translation(tmp_path, data):
    a = write(tmp_path / "a.txt", "alpha\n\nalpha beta gamma delta\nbeta\n")
    b = write(tmp_path / "b.txt", "gamma delta\n\n")
    ta = write(tmp_path / "ta.txt", "ALPHA\nEMPTY\nTOO LONG\nBETA\n")
    tb = write(tmp_path / "tb.txt", "GAMMA DELTA\nEMPTY\n")
    summary = prepare(tmp_path, data, [a, b])
    out = tmp_path / "mono.nbest"
    result = mono_translations([ta, tb], [a, b], summary.provenance, str(out), dictionary=TGT)
    assert tokens_of(out) == {0: "ALPHA", 1: "BETA", 2: "GAMMA DELTA"}
    assert result.sentences == summary.sentences == 3
    assert [f["lines"] for f in result.files] == [4, 2]


def test_mono_translations_are_read_only_as_far_as_the_last_kept_line(tmp_path, data):
    a = write(tmp_path / "a.txt", "alpha\nbeta\ngamma\n")
    ta = write(tmp_path / "ta.txt", b"ALPHA\nBETA\n\xff\n")  # the third is never read
    summary = prepare(tmp_path, data, [a], size=2)
    out = tmp_path / "mono.nbest"
    mono_translations([ta], [a], summary.provenance, str(out), dictionary=TGT)
    assert tokens_of(out) == {0: "ALPHA", 1: "BETA"}


def test_mono_translation_counts_are_per_source_file(tmp_path, data):
    a = write(tmp_path / "a.txt", "alpha\n\nbeta\n")
    ta = write(tmp_path / "ta.txt", "ALPHA\nBETA\n")  # the empty line's translation is missing
    summary = prepare(tmp_path, data, [a])
    out = tmp_path / "mono.nbest"
    with pytest.raises(SeqKDError, match=rf"^--mono-translations {ta} has 2 lines, but {a} "
                                         r"has 3 lines; give one translation per source line"):
        mono_translations([ta], [a], summary.provenance, str(out), dictionary=TGT)
    with pytest.raises(SeqKDError, match=r"^--mono-translations is given 2 time\(s\) and "
                                         r"--mono-source 1; give one translations file per"):
        mono_translations([ta, ta], [a], summary.provenance, str(out), dictionary=TGT)
    assert not out.exists()
