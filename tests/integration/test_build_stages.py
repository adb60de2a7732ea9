"""seqkd-build's stages on the one stage engine: what redoes a stage (content, options, version),
what leaves it alone, and sentences the teacher could not decode."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

import fairseq_seqkd.version
from fairseq_seqkd.cli import build

from ..conftest import run_cli

pytestmark = pytest.mark.slow

PAIR = "valid.src-tgt."
BUILD = ("--strategy", "seq-kd", "--beam", "3", "--nbest", "3", "--cpu", "--batch-size", "200",
         "--split", "valid")  # the 60 sentences of the toy valid split: quick to decode
STAGES = ("generate", "select", "binarize")


def args(data: Path, teacher: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--teacher", str(teacher), "--output", str(out), *BUILD, *extra]


def stages(log: str) -> dict[str, str]:
    """{'generate': the reason it runs, or 'skipped'} from seqkd-build's log."""
    return {name: reason or "skipped" for name, reason in
            re.findall(r"\[\d/3\] (\w+): (?:running \((.*)\)(?=: |$)|skipped)", log, re.M)}


def built(out: Path) -> dict[str, bytes]:
    """What a build made: the n-best and the distilled split."""
    files = [out / "seqkd" / "generate" / "valid.nbest"] + [
        out / f"{PAIR}{lang}.{ext}" for lang in ("src", "tgt") for ext in ("bin", "idx")]
    return {f.name: f.read_bytes() for f in files}


@pytest.fixture(scope="module")
def valid_kd(toy_bin, teacher_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stages") / "kd"
    run_cli("seqkd-build", *args(toy_bin, teacher_ckpt, out))
    return out


def perturb_in_place(checkpoint: Path) -> None:
    """One embedding row of the checkpoint changed in the file itself (same size), its mtime
    set back: what ``cp -p`` of a retrained teacher, or a careless edit, leaves."""
    stat = checkpoint.stat()
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    row = state["model"]["encoder.embed_tokens.weight"][4]  # the most frequent symbol's
    old, new = row.numpy().tobytes(), (-3.0 * row).numpy().tobytes()
    data = checkpoint.read_bytes()
    assert old in data  # torch.save stores tensors' bytes as they are
    checkpoint.write_bytes(data.replace(old, new))  # every copy of the (tied) embedding
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (checkpoint.stat().st_size, checkpoint.stat().st_mtime_ns) == \
        (stat.st_size, stat.st_mtime_ns)
    changed = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert torch.equal(changed["model"]["encoder.embed_tokens.weight"][4], -3.0 * row)


def test_a_teacher_rewritten_in_place_redoes_the_decoding(valid_kd, toy_bin, teacher_ckpt,
                                                          tmp_path, capsys):
    teacher, out = tmp_path / "teacher.pt", tmp_path / "kd"
    shutil.copy2(teacher_ckpt, teacher)
    shutil.copytree(valid_kd, out)
    before = built(out)
    # the same bytes under another path: nothing to redo (keys hold contents, not paths)
    assert build.main(args(toy_bin, teacher, out)) == 0
    assert stages(capsys.readouterr().out) == {name: "skipped" for name in STAGES}

    perturb_in_place(teacher)
    assert build.main(args(toy_bin, teacher, out)) == 0
    assert stages(capsys.readouterr().out)["generate"] == "input teacher changed"
    fresh = tmp_path / "fresh"
    assert build.main(args(toy_bin, teacher, fresh)) == 0
    capsys.readouterr()
    assert built(out) == built(fresh)
    assert built(out)["valid.nbest"] != before["valid.nbest"]  # the teacher did change


def test_a_new_package_version_redoes_every_stage(valid_kd, toy_bin, teacher_ckpt, tmp_path,
                                                  capsys, monkeypatch):
    out = tmp_path / "kd"
    shutil.copytree(valid_kd, out)
    before = built(out)
    old = fairseq_seqkd.version.__version__
    monkeypatch.setattr(fairseq_seqkd.version, "__version__", "999.0")
    assert build.main(args(toy_bin, teacher_ckpt, out)) == 0
    log = capsys.readouterr().out
    assert stages(log) == {name: f"package version {old} -> 999.0" for name in STAGES}
    assert built(out) == before  # the same code: the same bytes
    record = json.loads((out / "seqkd" / "generate" / "done.json").read_text())
    assert record["key"]["version"] == "999.0"
    assert not (out / "stamps").exists() and not (out / "logs").exists()  # a user's data-bin
    # an unchanged rerun does nothing, and says so
    assert build.main(args(toy_bin, teacher_ckpt, out)) == 0
    log = capsys.readouterr().out
    assert stages(log) == {name: "skipped" for name in STAGES}
    assert "distilled data-bin up to date, nothing redone" in log.strip().splitlines()[-1]


def test_a_changed_output_is_redone_and_a_killed_stage_never_half_reused(valid_kd, toy_bin,
                                                                         teacher_ckpt, tmp_path,
                                                                         capsys, monkeypatch):
    out = tmp_path / "kd"
    shutil.copytree(valid_kd, out)
    before = built(out)
    target = out / f"{PAIR}tgt.bin"
    data = bytearray(target.read_bytes())
    data[0] ^= 1  # same size, other content
    target.write_bytes(bytes(data))
    assert build.main(args(toy_bin, teacher_ckpt, out)) == 0
    assert stages(capsys.readouterr().out) == {
        "generate": "skipped", "select": "skipped",
        "binarize": f"output {PAIR}tgt.bin changed"}
    assert built(out) == before

    # killed while binarizing with --fallback drop: back to the old options, the stage is
    # redone, not taken for done with half of the new outputs
    from fairseq_seqkd.distill import build_stages

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_stages, "binarize_lines", killed)
    assert build.main(args(toy_bin, teacher_ckpt, out, "--fallback", "drop",
                           "--max-len-ratio", "1.0")) == 130
    monkeypatch.undo()
    assert not (out / "seqkd" / "binarize" / "done.json").exists()
    assert build.main(args(toy_bin, teacher_ckpt, out)) == 0
    assert stages(capsys.readouterr().out)["binarize"] == (
        "an interrupted run, redone from clean: options changed (fallback: drop -> gold)")
    assert built(out) == before


class Killed(Exception):
    pass


def test_a_build_killed_while_decoding_resumes_from_its_chunks(toy_bin, teacher_ckpt, tmp_path,
                                                              capsys, monkeypatch):
    from fairseq_seqkd.distill import chunks, options

    monkeypatch.setattr(options, "DEFAULT_CHUNK_SIZE", 10)  # 6 chunks of the valid split
    fresh, out = tmp_path / "fresh", tmp_path / "kd"
    assert build.main(args(toy_bin, teacher_ckpt, fresh)) == 0
    real_commit, calls = chunks.ChunkStore.commit, []

    def commit(self, chunk, text):
        calls.append(chunk)
        if len(calls) == 3:
            raise Killed
        real_commit(self, chunk, text)

    monkeypatch.setattr(chunks.ChunkStore, "commit", commit)
    with pytest.raises(Killed):
        build.main(args(toy_bin, teacher_ckpt, out))
    monkeypatch.setattr(chunks.ChunkStore, "commit", real_commit)
    capsys.readouterr()
    parts = out / "seqkd" / "generate" / "valid.nbest.parts"
    assert len(list(parts.glob("chunk-*.tsv"))) == 2
    assert not (out / "seqkd" / "generate" / "done.json").exists()
    assert build.main(args(toy_bin, teacher_ckpt, out)) == 0
    log = capsys.readouterr().out
    assert stages(log) == {"generate": "resuming an unfinished run", "select": "first run",
                           "binarize": "first run"}
    assert "; 2 of 6 chunks resumed" in log
    assert built(out) == built(fresh)


@pytest.fixture(scope="module")
def long_bin(toy_raw, toy_bin, tmp_path_factory) -> Path:
    """The toy valid split with sentence 3 longer than the teacher's 1024 positions."""
    root = tmp_path_factory.mktemp("long")
    for side in ("src", "tgt"):
        lines = (toy_raw / f"valid.{side}").read_text().splitlines()
        lines[3] = " ".join([lines[3]] * 400)  # 1,200 tokens at least
        (root / f"valid.{side}").write_text("\n".join(lines) + "\n")
    run_cli("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt",
            "--validpref", root / "valid", "--destdir", root / "bin", "--workers", "1",
            "--srcdict", toy_bin / "dict.src.txt", "--tgtdict", toy_bin / "dict.tgt.txt")
    return root / "bin"


def test_a_sentence_the_teacher_skips_fails_the_build_unless_allowed(long_bin, teacher_ckpt,
                                                                    toy_bin, tmp_path, capsys):
    out = tmp_path / "kd"
    assert build.main(args(long_bin, teacher_ckpt, out)) == 1
    captured = capsys.readouterr()
    nbest = out / "seqkd" / "generate" / "valid.nbest"
    assert "1 sentences of valid are too long for the teacher" in captured.out
    assert captured.err.strip().splitlines()[-1] == (
        f"seqkd-build: error: {nbest}: no hypotheses for sentence index 3 (1 of 60 sentences "
        "missing); --allow-missing gives them the fallback (gold)")
    assert not (out / f"{PAIR}tgt.bin").exists()

    assert build.main(args(long_bin, teacher_ckpt, out, "--allow-missing")) == 0
    captured = capsys.readouterr()
    assert stages(captured.out) == {
        "generate": "skipped", "binarize": "first run",
        # the failed selection left its started stamp: cleaned and redone, said why
        "select": "an interrupted run, redone from clean: options changed (allow_missing: "
                  "False -> True)"}
    assert (f"seqkd-build: warning: 1 of 60 sentences have no hypotheses in {nbest} (the "
            f"first: sentence index 3); with --allow-missing they get the fallback (gold)"
            ) in captured.err.splitlines()
    report = json.loads((out / "seqkd" / "select" / "report.json").read_text())
    assert (report["missing"], report["fallback_gold"], report["allow_missing"]) == (1, 1, True)
    gold = (long_bin / f"{PAIR}tgt.idx").read_bytes()
    assert (out / f"{PAIR}tgt.idx").read_bytes() != gold  # teacher targets, sentence 3 gold
