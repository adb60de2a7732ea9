"""The CTranslate2 teacher (distill/ct2_teacher.py) against seqkd-generate's fairseq teacher on the
tiny teacher exported in float32, and benchmarks/teacher_decode_speed.py end to end."""

import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from fairseq.data import Dictionary, data_utils

from fairseq_seqkd.distill.binarize import binarize_lines, token_lines
from fairseq_seqkd.distill.ct2_teacher import CT2Teacher, ct2_generate_nbest
from fairseq_seqkd.distill.generate import generate_nbest
from fairseq_seqkd.distill.merge import merge_shards
from fairseq_seqkd.distill.nbest import check_indices, read_nbest
from fairseq_seqkd.errors import SeqKDError

from ..conftest import PLUGIN, REPO, run_cli

pytestmark = pytest.mark.slow

BEAM = 5


def load_split(data: Path, split: str = "train") -> tuple[object, Dictionary, Dictionary]:
    dicts = [Dictionary.load(str(data / f"dict.{lang}.txt")) for lang in ("src", "tgt")]
    source = data_utils.load_indexed_dataset(str(data / f"{split}.src-tgt.src"), dicts[0])
    return source, *dicts


def copy_data(data: Path, directory: Path) -> Path:
    """A copy of the data-bin (to change it)."""
    shutil.copytree(data, directory)
    return directory


@pytest.fixture(scope="module")
def ct2_dir(teacher_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ct2-teacher") / "float32"
    run_cli("seqkd-export", "--input", teacher_ckpt, "--format", "ctranslate2",
            "--quantization", "float32", "--output", out)
    return out


@pytest.fixture(scope="module")
def fairseq_nbest(toy_bin, teacher_ckpt, tmp_path_factory) -> Path:
    """seqkd-generate's 5-best of the training split (600 sentences), beam 5, on the CPU."""
    out = tmp_path_factory.mktemp("fairseq-nbest") / "train.nbest"
    generate_nbest([str(toy_bin), "--path", str(teacher_ckpt), "--user-dir", PLUGIN,
                    "--gen-subset", "train", "--beam", str(BEAM), "--nbest", str(BEAM),
                    "--batch-size", "32", "--cpu", "--num-workers", "0", "--no-progress-bar",
                    "--output", str(out)])
    return out


def ct2_nbest(ct2_dir: Path, data: Path, output: Path, **options) -> object:
    return ct2_generate_nbest(str(data), "train", str(ct2_dir), str(output),
                              **{"beam": BEAM, "nbest": BEAM, "batch_size": 32, **options})


def test_best_hypotheses_and_scores_match_fairseq(ct2_dir, toy_bin, fairseq_nbest, tmp_path):
    out = tmp_path / "ct2.nbest"
    summary = ct2_nbest(ct2_dir, toy_bin, out)
    ours, theirs = read_nbest(out), read_nbest(fairseq_nbest)
    check_indices(ours, 600, out)
    assert summary.sentences == 600 and summary.skipped == []
    assert (tmp_path / "ct2.nbest.skipped").read_text() == ""
    assert not (tmp_path / "ct2.nbest.parts").exists()
    same = sum(ours[i][0].tokens == theirs[i][0].tokens for i in theirs)
    assert same / len(theirs) >= 0.95, same
    # the scores are fairseq's hypo["score"] (natural log, normalised with </s>), not the
    # base-2 H- lines: equal hypotheses score the same in both engines
    pairs = [(a.score, b.score) for i in theirs for a in ours[i] for b in theirs[i]
             if a.tokens == b.tokens]
    assert len(pairs) >= 0.7 * 600 * BEAM
    assert max(abs(a - b) for a, b in pairs) < 1e-4
    for hyps in ours.values():
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_hypotheses_cut_at_the_cap_score_as_fairseq(ct2_dir, toy_bin, teacher_ckpt, tmp_path):
    """--max-len-b 3 cuts most hypotheses: fairseq ends them with a forced </s> and so does
    the score here (fairseq with batch size 1, whose cap is each sentence's own)."""
    reference = tmp_path / "fairseq.nbest"
    generate_nbest([str(toy_bin), "--path", str(teacher_ckpt), "--user-dir", PLUGIN,
                    "--gen-subset", "test", "--beam", str(BEAM), "--nbest", "1",
                    "--batch-size", "1", "--cpu", "--num-workers", "0", "--no-progress-bar",
                    "--max-len-a", "0", "--max-len-b", "3", "--output", str(reference)])
    ct2_generate_nbest(str(toy_bin), "test", str(ct2_dir), str(tmp_path / "ct2.nbest"),
                       beam=BEAM, nbest=1, max_len_a=0, max_len_b=3)
    ours, theirs = read_nbest(tmp_path / "ct2.nbest"), read_nbest(reference)
    assert max(len(h[0].tokens.split()) for h in ours.values()) == 3
    same = [i for i in theirs if ours[i][0].tokens == theirs[i][0].tokens]
    assert len(same) >= 0.75 * len(theirs)  # 34 of 40 here: fairseq keeps other beams
    assert any(len(theirs[i][0].tokens.split()) == 3 for i in same)
    assert max(abs(ours[i][0].score - theirs[i][0].score) for i in same) < 1e-4


def test_resumed_and_sharded_runs_write_the_same_bytes(ct2_dir, toy_bin, tmp_path, monkeypatch):
    whole = tmp_path / "whole.nbest"
    ct2_nbest(ct2_dir, toy_bin, whole, chunk_size=100, nbest=2)
    shards = [tmp_path / f"shard{i}.nbest" for i in range(2)]
    for i, shard in enumerate(shards):
        ct2_nbest(ct2_dir, toy_bin, shard, chunk_size=100, nbest=2, num_shards=2, shard_id=i)
    merge_shards([str(s) for s in shards], str(tmp_path / "merged.nbest"), 600)
    assert (tmp_path / "merged.nbest").read_bytes() == whole.read_bytes()

    # killed after two chunks, then run again: only the missing chunks are decoded
    resumed = tmp_path / "resumed.nbest"
    decode = CT2Teacher.nbest
    calls = []

    def dies_on_the_third_chunk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return decode(self, *args, **kwargs)

    monkeypatch.setattr(CT2Teacher, "nbest", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        ct2_nbest(ct2_dir, toy_bin, resumed, chunk_size=100, nbest=2)
    monkeypatch.setattr(CT2Teacher, "nbest", decode)
    assert not resumed.exists()
    assert len(list((tmp_path / "resumed.nbest.parts").glob("chunk-*.tsv"))) == 2
    with pytest.raises(SeqKDError, match=r"--beam was 5 when it was started, now 4"):
        ct2_nbest(ct2_dir, toy_bin, resumed, chunk_size=100, nbest=2, beam=4)
    summary = ct2_nbest(ct2_dir, toy_bin, resumed, chunk_size=100, nbest=2)
    assert summary.resumed_chunks == 2 and summary.decoded == 400
    assert resumed.read_bytes() == whole.read_bytes()


def test_resuming_needs_the_same_data_content_and_package_version(ct2_dir, toy_bin, tmp_path,
                                                                  monkeypatch):
    """The manifest holds the split's files by content: a source rewritten with the same
    sentence lengths is not resumed; nor is a run started by another package version."""
    import fairseq_seqkd.version

    data = copy_data(toy_bin, tmp_path / "data")
    out = tmp_path / "out.nbest"
    decode, calls = CT2Teacher.nbest, []

    def dies_on_the_second_chunk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return decode(self, *args, **kwargs)

    monkeypatch.setattr(CT2Teacher, "nbest", dies_on_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        ct2_nbest(ct2_dir, data, out, chunk_size=100, nbest=1)
    monkeypatch.setattr(CT2Teacher, "nbest", decode)
    monkeypatch.setattr(fairseq_seqkd.version, "__version__", "999.0")
    with pytest.raises(SeqKDError, match=r"cannot resume .*: version was \S+ when it was "
                                         r"started, now \"999.0\""):
        ct2_nbest(ct2_dir, data, out, chunk_size=100, nbest=1)
    monkeypatch.undo()

    source = load_split(data)[0]
    first = source[0].tolist()
    assert len(set(first[:-1])) > 1
    binary = data / "train.src-tgt.src.bin"
    stat = binary.stat()
    content = binary.read_bytes()
    width = len(content) // int(source.sizes.sum())
    head = bytes(content[:width * (len(first) - 1)])
    words = [head[i:i + width] for i in range(0, len(head), width)]
    binary.write_bytes(b"".join(reversed(words)) + content[len(head):])  # same lengths
    os.utime(binary, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(SeqKDError, match=r"train.src-tgt.src.bin \(sha256\) was .* \(the data "
                                         r"changed\)"):
        ct2_nbest(ct2_dir, data, out, chunk_size=100, nbest=1)


def test_empty_and_too_long_sources_are_listed_as_skipped(ct2_dir, toy_bin, tmp_path):
    model = tmp_path / "short"
    shutil.copytree(ct2_dir, model)
    manifest = json.loads((model / "seqkd-export.json").read_text())
    manifest["architecture"]["max_source_positions"] = 6  # 5 tokens and </s>
    (model / "seqkd-export.json").write_text(json.dumps(manifest))
    source, src_dict, _ = load_split(toy_bin, "test")
    lines = token_lines(source, src_dict)
    lines[3] = ""  # an empty line
    data = tmp_path / "data"
    data.mkdir()
    for lang in ("src", "tgt"):
        shutil.copyfile(toy_bin / f"dict.{lang}.txt", data / f"dict.{lang}.txt")
    binarize_lines(lines, src_dict, str(data / "test.src-tgt.src"))  # a source-only split
    out = tmp_path / "out.nbest"
    summary = ct2_generate_nbest(str(data), "test", str(model), str(out), beam=2)
    long = [i for i, line in enumerate(lines) if len(line.split()) + 1 > 6]
    assert long and summary.skipped == sorted([3, *long])
    assert (tmp_path / "out.nbest.skipped").read_text() == "".join(
        f"{i}\n" for i in summary.skipped)
    assert set(read_nbest(out)) == set(range(len(lines))) - set(summary.skipped)


def test_refuses_what_is_not_a_model_and_other_vocabularies(ct2_dir, toy_bin, tmp_path):
    _, src_dict, tgt_dict = load_split(toy_bin, "test")
    out = tmp_path / "out.nbest"

    def refused(model: Path, pattern: str) -> None:
        with pytest.raises(SeqKDError) as info:
            ct2_generate_nbest(str(toy_bin), "test", str(model), str(out))
        message = str(info.value)
        assert "\n" not in message and re.search(pattern, message), message
        assert not out.exists() and not Path(f"{out}.parts").exists()

    refused(tmp_path / "missing", rf"--teacher {tmp_path / 'missing'}: not a CTranslate2 model")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", r"empty: not a CTranslate2 model directory \(no model.bin\)")
    other = tmp_path / "other"
    shutil.copytree(ct2_dir, other)
    vocab = json.loads((other / "shared_vocabulary.json").read_text())
    vocab[5], vocab[6] = vocab[6], vocab[5]
    (other / "shared_vocabulary.json").write_text(json.dumps(vocab))
    refused(other, rf"source vocabulary differs from --data {toy_bin / 'dict.src.txt'} at "
                   rf"position 5: "
                   rf"'{re.escape(vocab[5])}' in the model, '{re.escape(vocab[6])}' in the "
                   rf"dictionary")
    with pytest.raises(SeqKDError, match="--teacher-quantization must be one of"):
        CT2Teacher(str(ct2_dir), src_dict, tgt_dict, quantization="int3")


def test_speed_benchmark_runs_end_to_end(toy_raw, toy_bin, teacher_ckpt, tmp_path, capsys,
                                         monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "teacher_decode_speed", REPO / "benchmarks" / "teacher_decode_speed.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look themselves up
    spec.loader.exec_module(bench)
    assert bench.main(["--corpus", str(toy_raw), "--data", str(toy_bin), "--teacher",
                       str(teacher_ckpt), "--spm-model", "none", "--work", str(tmp_path),
                       "--sentences", "60", "--rounds", "2", "--json",
                       str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == [
        "| fairseq", "| CTranslate2 float32", "| CTranslate2 int8"]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [len(r["rates"]) for r in rows] == [2, 2, 2]
    assert rows[0]["identical"] == 1.0 and rows[1]["identical"] >= 0.95
    assert all(r["bleu"] is not None for r in rows)
    assert "float32 best hypotheses identical on at least 98 %" in out
