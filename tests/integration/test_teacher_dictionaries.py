"""The teacher's dictionaries are compared symbol by symbol in every tool, or the tool refuses.

A teacher checkpoint records the data directory it was trained on; its ``dict.*.txt`` there are
the teacher's vocabulary. When that directory is gone (a copied checkpoint), equal vocabulary
sizes prove nothing: a reordered dictionary of the same size would pass and every token id would
mean another word. seqkd-generate, seqkd-cache-teacher and seqkd-build then ask for
``--teacher-data``, and compare with the dictionaries found there.
"""

import re
import shutil
from pathlib import Path

import pytest
import torch
from fairseq.data import Dictionary

from fairseq_seqkd.cli import build, cache_teacher, generate
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.teacher import check_teacher_dictionaries

pytestmark = pytest.mark.slow

DECODE = ("--beam", "2", "--nbest", "1", "--batch-size", "32", "--cpu")


@pytest.fixture(scope="module")
def copied_teacher(teacher_ckpt, tmp_path_factory) -> Path:
    """The toy teacher, its recorded data directory pointing where nothing is."""
    root = tmp_path_factory.mktemp("copied")
    state = torch.load(teacher_ckpt, map_location="cpu", weights_only=False)
    state["cfg"]["task"]["data"] = str(root / "gone")
    path = root / "teacher.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def reordered_bin(toy_bin, tmp_path_factory) -> Path:
    """The toy data-bin with two target symbols swapped: same size, other ids."""
    out = tmp_path_factory.mktemp("reordered") / "bin"
    shutil.copytree(toy_bin, out)
    lines = (out / "dict.tgt.txt").read_text().splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]
    (out / "dict.tgt.txt").write_text("".join(lines))
    return out


def one_error(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err
    return err[0]


def generate_args(data: Path, teacher: Path, out: Path, *extra: object) -> list[str]:
    return [str(data), "--path", str(teacher), "--gen-subset", "valid", *DECODE,
            "--output", str(out), *map(str, extra)]


def cache_args(data: Path, teacher: Path, out: Path, *extra: object) -> list[str]:
    return [str(data), "--path", str(teacher), "--gen-subset", "valid", "--cpu",
            "--max-tokens", "1000", "--no-progress-bar", "--output", str(out), *map(str, extra)]


def build_args(data: Path, teacher: Path, out: Path, *extra: object) -> list[str]:
    return ["--data", str(data), "--teacher", str(teacher), "--output", str(out),
            "--strategy", "seq-kd", "--split", "valid", *DECODE, *map(str, extra)]


TOOLS = [
    (generate.main, generate_args, "seqkd-generate"),
    (cache_teacher.main, cache_args, "seqkd-cache-teacher"),
    (build.main, build_args, "seqkd-build"),
]


@pytest.mark.parametrize("main, args, prog", TOOLS)
def test_missing_teacher_dictionaries_are_an_error_not_a_size_check(
    main, args, prog, copied_teacher, reordered_bin, tmp_path, capsys
):
    out = tmp_path / "out"
    assert main(args(reordered_bin, copied_teacher, out)) == 1
    line = one_error(capsys, prog)
    assert re.search(r"teacher .*teacher.pt: its dict.\*.txt files are not in .*gone \(the data "
                     r"directory recorded in it\), .*pass --teacher-data DIR", line), line
    # a --teacher-data without them is named as such
    assert main(args(reordered_bin, copied_teacher, out, "--teacher-data",
                     tmp_path / "missing")) == 1
    assert "not in --teacher-data" in one_error(capsys, prog)


@pytest.mark.parametrize("main, args, prog", TOOLS)
def test_teacher_data_finds_a_reordered_dictionary(main, args, prog, copied_teacher, toy_bin,
                                                   reordered_bin, tmp_path, capsys):
    assert main(args(reordered_bin, copied_teacher, tmp_path / "out", "--teacher-data",
                     toy_bin)) == 1
    line = one_error(capsys, prog)
    assert re.search(r"target dictionaries differ: teacher .*teacher.pt has \d+ symbols, .* "
                     r"first difference at index 4", line), line


def test_teacher_data_lets_a_copied_teacher_decode(copied_teacher, toy_bin, tmp_path, capsys):
    out = tmp_path / "valid.nbest"
    assert generate.main(generate_args(toy_bin, copied_teacher, out, "--teacher-data",
                                       toy_bin)) == 0
    assert len(out.read_text().splitlines()) == 60


def test_same_size_without_dictionaries_is_refused_in_process():
    """The library check itself: no size-only pass, with or without a data directory."""
    ours = Dictionary()
    for word in ("a", "b", "c"):
        ours.add_symbol(word)
    rows = torch.zeros(len(ours), 2)
    state = {"cfg": {"task": {"data": "/nonexistent/seqkd-data"}},
             "model": {"encoder.embed_tokens.weight": rows,
                       "decoder.output_projection.weight": rows}}
    with pytest.raises(SeqKDError, match=r"not in /nonexistent/seqkd-data .*--teacher-data"):
        check_teacher_dictionaries("t.pt", state, (ours, ours), "the data")
    state["model"]["decoder.output_projection.weight"] = torch.zeros(len(ours) + 1, 2)
    with pytest.raises(SeqKDError, match=r"target dictionaries differ: teacher t.pt has 8 "
                       r"symbols, the data has 7"):
        check_teacher_dictionaries("t.pt", state, (ours, ours), "the data")
