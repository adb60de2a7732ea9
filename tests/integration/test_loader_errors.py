"""The loaders of checkpoints, dictionaries and indexed data: a bad file is one line naming it,
while an error that fairseq or torch raises on a good file keeps its traceback."""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.data import Dictionary, data_utils
from fairseq.data import indexed_dataset as fairseq_indexed

from fairseq_seqkd import teacher
from fairseq_seqkd.cli import prune as prune_cli
from fairseq_seqkd.data.distilled import load_split
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.teacher import load_checkpoint_state, load_dictionary


def _checkpoint(path) -> str:
    torch.save({"model": {"w": torch.ones(2, 2)}, "cfg": {"model": None}, "args": None}, path)
    return str(path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def _not_checkpoints(tmp_path) -> list[tuple[str, str]]:
    good = (tmp_path / "good.pt").read_bytes()
    files = {
        "empty.pt": b"",
        "text.pt": b"hello world\n",
        "truncated.pt": good[: len(good) // 2],
        "evil.pt": pickle.dumps({"model": _Payload()}, protocol=4),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as archive:
        archive.writestr("notes.txt", "x")
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    torch.save({"model": {}, "cfg": argparse.ArgumentParser}, tmp_path / "global.pt")
    torch.save({"weights": {}}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    return [
        ("empty.pt", "empty file"),
        ("text.pt", "not a file torch.save wrote"),
        ("truncated.pt", "truncated or corrupt zip archive"),
        ("evil.pt", "torch's safe unpickler refuses it: "),  # then torch's words
        ("zip.pt", "a zip archive without the data.pkl of torch.save"),
        ("tensor.pt", "a Tensor without 'model' and 'cfg' entries"),
        ("global.pt", "it pickles argparse.ArgumentParser, which torch's safe unpickler refuses"),
        ("legacy.pt", "a dict without 'model' and 'cfg' entries"),
    ]


def test_a_file_that_is_no_checkpoint_is_one_line_naming_why(tmp_path):
    _checkpoint(tmp_path / "good.pt")
    for name, reason in _not_checkpoints(tmp_path):
        path = str(tmp_path / name)
        with pytest.raises(SeqKDError) as info:
            load_checkpoint_state(path, "--input")
        assert str(info.value).startswith(f"--input: {path} is not a fairseq checkpoint ({reason}")
        assert str(info.value).endswith(")") and "\n" not in str(info.value)


def test_an_error_on_a_good_checkpoint_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """A fairseq or torch version problem is not the user's file: no one-line disguise."""
    path = _checkpoint(tmp_path / "good.pt")
    assert teacher.why_not_a_checkpoint(path) is None

    def incompatible(*_args, **_kwargs):
        raise RuntimeError("an incompatible fairseq")

    monkeypatch.setattr(checkpoint_utils, "load_checkpoint_to_cpu", incompatible)
    with pytest.raises(RuntimeError, match="an incompatible fairseq"):
        load_checkpoint_state(path)
    with pytest.raises(RuntimeError, match="an incompatible fairseq"):  # through a console tool
        prune_cli.main(["--input", path, "--output", str(tmp_path / "out.pt"),
                        "--prune-ratio", "0.5"])
    assert capsys.readouterr().err == "" and not (tmp_path / "out.pt").exists()


def test_dictionary_loader(tmp_path, monkeypatch):
    path = tmp_path / "dict.tgt.txt"
    for content, reason in ((b"a 1\nb\n", "is not a fairseq dictionary (Incorrect dictionary"),
                            (b"a 1\na 2\n", "is not a fairseq dictionary (Duplicate word"),
                            (b"a 1\n\xff 2\n", "is not UTF-8 text (byte 4)")):
        path.write_bytes(content)
        with pytest.raises(SeqKDError) as info:
            load_dictionary(str(path), "--data")
        assert str(info.value).startswith(f"--data: {path} {reason}")
    path.write_bytes(b"a 1\nb 2\n")
    assert load_dictionary(str(path), "--data").symbols[-2:] == ["a", "b"]

    def broken(*_args, **_kwargs):
        raise KeyError("a fairseq bug")

    monkeypatch.setattr(Dictionary, "add_from_file", broken)
    with pytest.raises(KeyError):
        load_dictionary(str(path), "--data")


def test_indexed_data_loader(tmp_path, monkeypatch):
    prefix = str(tmp_path / "train.src-tgt.tgt")
    builder = fairseq_indexed.make_builder(prefix + ".bin", "mmap", vocab_size=100)
    for _ in range(10):
        builder.add_item(torch.arange(1, 6))
    builder.finalize(prefix + ".idx")
    assert len(load_split(prefix, Dictionary(), "--data")) == 10
    with pytest.raises(SeqKDError, match=r"^--data: .*nope\.bin/\.idx not found$"):
        load_split(str(tmp_path / "nope"), Dictionary(), "--data")
    idx = (tmp_path / "train.src-tgt.tgt.idx").read_bytes()
    (tmp_path / "train.src-tgt.tgt.idx").write_bytes(idx[: len(idx) // 2])
    with pytest.raises(SeqKDError, match=r"^--data: cannot read .*train\.src-tgt\.tgt\.bin/\.idx"):
        load_split(prefix, Dictionary(), "--data", "mmap")

    def broken(*_args, **_kwargs):
        raise KeyError("a fairseq bug")

    monkeypatch.setattr(data_utils, "load_indexed_dataset", broken)
    with pytest.raises(KeyError):
        load_split(prefix, Dictionary(), "--data", "mmap")
