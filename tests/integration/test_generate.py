"""seqkd-generate: fairseq's own decoding, sharded, resumable after SIGKILL, byte-deterministic."""

import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fairseq_seqkd.version
from fairseq_seqkd.cli.generate import main
from fairseq_seqkd.distill import generate as gen
from fairseq_seqkd.distill.merge import merge_shards
from fairseq_seqkd.distill.nbest import (
    Hypothesis,
    check_indices,
    format_nbest_lines,
    read_generate_log,
    read_nbest,
)
from fairseq_seqkd.errors import SeqKDError

from ..conftest import PLUGIN, cli, run_cli
from .test_build_stages import perturb_in_place

pytestmark = pytest.mark.slow

TRAIN_SIZE = 600  # conftest's toy corpus
CHUNK = 50
DECODE = ("--beam", "4", "--nbest", "4", "--batch-size", "32", "--cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """In-process decoding like the CLI runs (OMP_NUM_THREADS=1): no spinning on busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def argv(data: Path, ckpt: Path, output: Path, *extra: object, split: str = "train") -> list[str]:
    return [str(data), "--path", str(ckpt), "--gen-subset", split, *DECODE,
            "--chunk-size", str(CHUNK), "--output", str(output), *map(str, extra)]


def last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


@pytest.fixture(scope="module")
def reference(toy_bin, teacher_ckpt, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """An uninterrupted run of the CLI contract that seqkd-build relies on."""
    out = tmp_path_factory.mktemp("reference") / "train.nbest"
    proc = run_cli("seqkd-generate", *argv(toy_bin, teacher_ckpt, out))
    return out, proc


def test_cli_contract_complete_nbest_progress_and_throughput(reference):
    out, proc = reference
    nbest = read_nbest(out)
    check_indices(nbest, TRAIN_SIZE, out)
    assert all(len(hyps) == 4 for hyps in nbest.values())
    assert all(h.score <= 0 for hyps in nbest.values() for h in hyps)
    assert all([h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
               for hyps in nbest.values())  # fairseq's order: best first
    assert Path(f"{out}.skipped").read_text() == ""  # created, empty: nothing skipped
    assert not Path(f"{out}.parts").exists()  # the chunks are removed once assembled
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    assert re.search(r"\d+/600 \[.*sent/s\]", proc.stderr)  # tqdm: sentences, rate, ETA
    final = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"seqkd-generate: 600 sentences \(0 skipped\), 2400 hypotheses -> {re.escape(str(out))}; "
        r"decoded 600 sentences, \d+ tokens in [\d.]+s \([\d.]+ sentences/s, [\d.]+ tokens/s\); "
        r"[\d.]+s in all", final,
    ), final


def compare_with_fairseq(ours: dict, theirs: dict) -> None:
    """Same tokens, same order; fairseq prints hypo['score'] / ln 2, we write hypo['score']."""
    for index, hyps in theirs.items():
        assert [h.tokens for h in ours[index]] == [h.tokens for h in hyps], index
        for mine, fs in zip(ours[index], hyps, strict=True):
            assert mine.score == pytest.approx(fs.score * math.log(2), abs=1e-4), index


def test_nbest_equals_plain_fairseq_generate(reference, toy_bin, teacher_ckpt, tmp_path):
    out, _ = reference
    log = tmp_path / "generate.log"
    proc = run_cli("fairseq-generate", toy_bin, "--user-dir", PLUGIN, "--path", teacher_ckpt,
                   "--gen-subset", "train", *DECODE)
    log.write_text(proc.stdout)
    theirs, ours = read_generate_log(log), read_nbest(out)
    assert set(theirs) == set(ours) and len(ours) == TRAIN_SIZE
    compare_with_fairseq(ours, theirs)


def test_decodes_the_last_batch_fairseq_generate_drops(toy_bin, teacher_ckpt, tmp_path):
    """fairseq drops a last batch that is not a multiple of 8 (fairseq#5036); we do not."""
    log = tmp_path / "generate.log"
    proc = run_cli("fairseq-generate", toy_bin, "--user-dir", PLUGIN, "--path", teacher_ckpt,
                   "--gen-subset", "valid", *DECODE)
    log.write_text(proc.stdout)
    theirs = read_generate_log(log)
    assert len(theirs) < 60  # 60 = 32 + 24 + 4: fairseq-generate loses 4 sentences
    out = tmp_path / "valid.nbest"
    assert main(argv(toy_bin, teacher_ckpt, out, "--chunk-size", "1000", split="valid")) == 0
    ours = read_nbest(out)
    check_indices(ours, 60, out)
    compare_with_fairseq(ours, theirs)  # one chunk: exactly fairseq's batches


def test_shards_merge_to_the_unsharded_bytes(reference, toy_bin, teacher_ckpt, tmp_path, capsys):
    out, _ = reference
    shards = [tmp_path / f"train.nbest.{i}" for i in range(3)]
    for i, shard in enumerate(shards):  # in-process, repeatedly, as seqkd-build calls it
        assert main(argv(toy_bin, teacher_ckpt, shard, "--num-shards", 3, "--shard-id", i)) == 0
        indices = set(read_nbest(shard))
        assert indices == {j for j in range(TRAIN_SIZE) if (j // CHUNK) % 3 == i}
    merged = tmp_path / "merged.nbest"
    assert main(["--merge-shards", *map(str, shards), "--output", str(merged),
                 "--expected-size", str(TRAIN_SIZE)]) == 0
    assert "from 3 shards" in capsys.readouterr().out
    assert merged.read_bytes() == out.read_bytes()
    assert Path(f"{merged}.skipped").read_text() == ""
    # a missing shard leaves a gap: one line naming the first missing index, nothing written
    gap = tmp_path / "gap.nbest"
    assert main(["--merge-shards", str(shards[0]), str(shards[2]), "--output", str(gap),
                 "--expected-size", str(TRAIN_SIZE)]) == 1
    assert re.search(r"error: sentence index 50 is missing: it is in none of the shards",
                     last_error(capsys))
    assert not gap.exists() and not Path(f"{gap}.skipped").exists()


def test_sigkill_and_rerun_gives_the_uninterrupted_bytes(reference, toy_bin, teacher_ckpt,
                                                         tmp_path):
    out, _ = reference
    target = tmp_path / "train.nbest"
    command = [cli("seqkd-generate"), *argv(toy_bin, teacher_ckpt, target)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first_chunk = Path(f"{target}.parts") / "chunk-000000.tsv"
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not first_chunk.exists():
            assert proc.poll() is None, "seqkd-generate exited before its first chunk"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    done = sorted(p.name for p in first_chunk.parent.glob("chunk-*.tsv"))
    assert 1 <= len(done) < TRAIN_SIZE // CHUNK, done  # killed mid-way
    assert not target.exists()
    rerun = run_cli("seqkd-generate", *argv(toy_bin, teacher_ckpt, target))
    assert target.read_bytes() == out.read_bytes()
    assert Path(f"{target}.skipped").read_text() == ""
    assert not first_chunk.parent.exists()
    assert re.search(rf"; {len(done)} of 12 chunks resumed$", rerun.stdout.strip())


class Interrupt(Exception):
    pass


def interrupt(args: list[str], monkeypatch) -> Path:
    """Run seqkd-generate ``args`` until a crash inside the commit of its third chunk; its
    parts directory."""
    real_commit, calls = gen.ChunkStore.commit, []

    def commit(self, chunk, text):
        calls.append(chunk)
        if len(calls) == 3:
            raise Interrupt
        real_commit(self, chunk, text)

    monkeypatch.setattr(gen.ChunkStore, "commit", commit)
    with pytest.raises(Interrupt):
        gen.generate_nbest(args)
    monkeypatch.setattr(gen.ChunkStore, "commit", real_commit)
    parts = Path(f"{args[args.index('--output') + 1]}.parts")
    assert sorted(p.name for p in parts.iterdir()) == [
        "chunk-000000.tsv", "chunk-000001.tsv", "manifest.json"]
    return parts


@pytest.fixture
def interrupted(toy_bin, teacher_ckpt, tmp_path, monkeypatch) -> Path:
    """A run stopped after its second chunk (a crash inside the commit of the third)."""
    target = tmp_path / "train.nbest"
    interrupt(argv(toy_bin, teacher_ckpt, target), monkeypatch)
    return target


@pytest.mark.parametrize("option, value", [
    ("--beam", "5"), ("--lenpen", "0.5"), ("--batch-size", "16"), ("--chunk-size", "25"),
    ("--max-len-b", "20"), ("--seed", "7"),
])
def test_resume_with_a_changed_option_is_refused(interrupted, toy_bin, teacher_ckpt, capsys,
                                                 option, value):
    parts = Path(f"{interrupted}.parts")
    before = {p.name: p.read_bytes() for p in parts.iterdir()}
    assert main(argv(toy_bin, teacher_ckpt, interrupted, option, value)) == 1
    line = last_error(capsys)
    assert line.startswith(f"seqkd-generate: error: cannot resume {parts}: {option} was ")
    assert f"now {value}" in line and "delete" in line
    assert {p.name: p.read_bytes() for p in parts.iterdir()} == before  # untouched
    assert not interrupted.exists()


def assert_refused(args: list[str], parts: Path, capsys, what: str) -> None:
    """The resume is refused in one line naming ``what``, and the parts are left as they are."""
    before = {p.name: p.read_bytes() for p in parts.iterdir()}
    assert main(args) == 1
    line = last_error(capsys)
    assert line.startswith(f"seqkd-generate: error: cannot resume {parts}: {what} was "), line
    assert {p.name: p.read_bytes() for p in parts.iterdir()} == before


def test_resume_with_other_teacher_bytes_of_the_same_size_and_mtime_is_refused(
        toy_bin, teacher_ckpt, tmp_path, capsys, monkeypatch):
    teacher, target = tmp_path / "teacher.pt", tmp_path / "valid.nbest"
    shutil.copy2(teacher_ckpt, teacher)
    args = argv(toy_bin, teacher, target, "--chunk-size", "10", split="valid")
    parts = interrupt(args, monkeypatch)
    perturb_in_place(teacher)
    assert_refused(args, parts, capsys, "--path (sha256)")


def test_resume_with_other_data_of_the_same_lengths_is_refused(toy_bin, teacher_ckpt, tmp_path,
                                                              capsys, monkeypatch):
    data, target = tmp_path / "bin", tmp_path / "valid.nbest"
    shutil.copytree(toy_bin, data)
    args = argv(data, teacher_ckpt, target, "--chunk-size", "10", split="valid")
    parts = interrupt(args, monkeypatch)
    split = data / "valid.src-tgt.src.bin"
    tokens = np.fromfile(split, dtype=np.uint16)  # the same sentence lengths (.idx unchanged)
    tokens[::-1].tofile(split)
    assert_refused(args, parts, capsys, "valid.src-tgt.src.bin (sha256)")


def test_resume_with_another_package_version_is_refused(interrupted, toy_bin, teacher_ckpt,
                                                        capsys, monkeypatch):
    monkeypatch.setattr(fairseq_seqkd.version, "__version__", "999.0")
    assert_refused(argv(toy_bin, teacher_ckpt, interrupted), Path(f"{interrupted}.parts"),
                   capsys, "package version")


def test_resume_after_an_interrupted_run(interrupted, reference, toy_bin, teacher_ckpt):
    summary = gen.generate_nbest(argv(toy_bin, teacher_ckpt, interrupted))
    assert interrupted.read_bytes() == reference[0].read_bytes()
    assert (summary.resumed_chunks, summary.chunks) == (2, 12)
    assert (summary.sentences, summary.decoded, summary.hypotheses) == (600, 500, 2400)


def write_shard(path: Path, indices: list[int], skipped: list[int] | None = None) -> Path:
    path.write_text("".join(
        format_nbest_lines(i, [Hypothesis(f"t{i}", -1.0), Hypothesis("", -2.5)])
        for i in indices
    ))
    if skipped is not None:
        Path(f"{path}.skipped").write_text("".join(f"{i}\n" for i in skipped))
    return path


@pytest.mark.parametrize("shards, size, message", [
    ({"a": [0, 2], "b": [1, 2]}, 3, r"b:3: sentence index 2 is also in .*a \(line 3\)"),
    ({"a": [0], "b": [2]}, 3, r"sentence index 1 is missing: it is in none of the shards"),
    ({"a": [0, 1], "b": [2]}, 2, r"b:1: sentence index 2 is out of range for --expected-size 2"),
    ({"a": [0], "b": [1, 2], "b.skipped": [2]}, 3,
     r"b:3: sentence index 2 has hypotheses but is listed as skipped in .*b.skipped"),
    ({"a": [0], "a.skipped": [1], "b": [2], "b.skipped": [1]}, 3,
     r"b.skipped:1: sentence index 1 is also listed in .*a.skipped"),
    ({"a": [1, 0]}, 2, r"a:3: sentence index 0 after 1"),
])
def test_merge_refuses_duplicates_and_gaps(tmp_path, capsys, shards, size, message):
    paths = []
    for name, indices in shards.items():
        if not name.endswith(".skipped"):
            paths.append(write_shard(tmp_path / name, indices, shards.get(f"{name}.skipped")))
    out = tmp_path / "merged.nbest"
    assert main(["--merge-shards", *map(str, paths), "--output", str(out),
                 "--expected-size", str(size)]) == 1
    line = last_error(capsys)
    assert line.startswith("seqkd-generate: error: ") and re.search(message, line), line
    assert not out.exists() and not Path(f"{out}.skipped").exists()
    assert not list(tmp_path.glob(".merged*"))  # no temp file left behind


def test_merge_keeps_skipped_indices(tmp_path):
    a = write_shard(tmp_path / "a", [0, 3], skipped=[])
    b = write_shard(tmp_path / "b", [2], skipped=[1, 4])
    summary = merge_shards([str(a), str(b)], str(tmp_path / "m"), 5)
    assert (summary.sentences, summary.hypotheses, summary.skipped) == (3, 6, [1, 4])
    assert (tmp_path / "m.skipped").read_text() == "1\n4\n"
    assert list(read_nbest(tmp_path / "m")) == [0, 2, 3]
    with pytest.raises(SeqKDError, match="out of range"):
        merge_shards([str(a), str(b)], str(tmp_path / "m2"), 4)


@pytest.fixture(scope="module")
def long_bin(toy_raw, toy_bin, tmp_path_factory) -> Path:
    """The toy test split with sentence 3 made 300 tokens long, binarized with toy_bin's dicts."""
    root = tmp_path_factory.mktemp("long")
    for side in ("src", "tgt"):
        lines = (toy_raw / f"test.{side}").read_text().splitlines()
        lines[3] = " ".join([lines[3]] * 60)
        (root / f"test.{side}").write_text("\n".join(lines) + "\n")
    run_cli("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt",
            "--testpref", root / "test", "--destdir", root / "bin", "--workers", "1",
            "--srcdict", toy_bin / "dict.src.txt", "--tgtdict", toy_bin / "dict.tgt.txt")
    return root / "bin"


def test_too_long_sentences_are_listed_not_dropped(long_bin, teacher_ckpt, tmp_path, capsys):
    out = tmp_path / "test.nbest"
    args = argv(long_bin, teacher_ckpt, out, "--max-source-positions", "50", split="test")
    assert main(args) == 1  # fairseq would raise: one line suggesting the flag instead
    line = last_error(capsys)
    assert re.fullmatch(r"seqkd-generate: error: sentence 3 of --gen-subset test is too long "
                        r"for the model .*; pass --skip-invalid-size-inputs-valid-test .*", line)
    assert not out.exists() and not Path(f"{out}.parts").exists()

    assert main([*args, "--skip-invalid-size-inputs-valid-test"]) == 0
    assert "39 sentences (1 skipped)" in capsys.readouterr().out
    assert Path(f"{out}.skipped").read_text() == "3\n"
    nbest = read_nbest(out)
    assert set(nbest) == set(range(40)) - {3}
    summary = gen.generate_nbest([*args, "--skip-invalid-size-inputs-valid-test",
                                  "--chunk-size", "1"])  # chunk 3: nothing to decode
    assert summary.skipped == [3] and summary.sentences == 39
    again = read_nbest(out)  # other batches: same hypotheses, scores up to float noise
    assert again.keys() == nbest.keys()
    for index, hyps in nbest.items():
        assert [h.tokens for h in again[index]] == [h.tokens for h in hyps]
        assert [h.score for h in again[index]] == pytest.approx([h.score for h in hyps], abs=1e-4)


def test_ensemble_of_one_teacher_twice(toy_bin, teacher_ckpt, tmp_path):
    single, double = tmp_path / "single.nbest", tmp_path / "double.nbest"
    gen.generate_nbest(argv(toy_bin, teacher_ckpt, single, split="valid"))
    gen.generate_nbest(argv(toy_bin, f"{teacher_ckpt}:{teacher_ckpt}", double, split="valid"))
    a, b = read_nbest(single), read_nbest(double)
    assert a.keys() == b.keys() and len(a) == 60
    for index in a:
        assert [h.tokens for h in a[index]] == [h.tokens for h in b[index]]
        assert [h.score for h in a[index]] == pytest.approx([h.score for h in b[index]], abs=1e-5)


def test_bad_input_is_one_line_before_any_work(toy_bin, teacher_ckpt, tmp_path, capsys):
    swapped = tmp_path / "swapped-bin"
    shutil.copytree(toy_bin, swapped)
    lines = (swapped / "dict.src.txt").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]  # same size, other symbols at index 4 and 5
    (swapped / "dict.src.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "file").write_text("")
    out = tmp_path / "out.nbest"
    cases = [
        (argv(toy_bin, tmp_path / "nope.pt", out), r"--path: .*nope.pt does not exist"),
        (argv(toy_bin, f"{teacher_ckpt}:{tmp_path / 'nope.pt'}", out),
         r"--path: .*nope.pt does not exist"),
        (argv(swapped, teacher_ckpt, out), r"source dictionaries differ: teacher .* has 64 "
         r"symbols, the data in .*swapped-bin has 64; first difference at index 4"),
        (argv(toy_bin, teacher_ckpt, tmp_path / "missing" / "out.nbest"),
         r"--output: cannot write .*: directory .*missing does not exist"),
        (argv(toy_bin, teacher_ckpt, tmp_path / "file" / "out.nbest"),
         r"--output: cannot write .*: directory .*file is not a directory"),
        (argv(toy_bin, teacher_ckpt, tmp_path), r"--output: .* is a directory"),
        (argv(toy_bin, teacher_ckpt, out, "--nbest", "5"), r"--nbest must be in \[1, --beam 4\]"),
        (argv(toy_bin, teacher_ckpt, out, "--chunk-size", "0"), r"--chunk-size must be >= 1"),
        (argv(toy_bin, teacher_ckpt, out, "--max-tokens", "5"),
         r"sentence \d+ of --gen-subset train has 9 tokens, more than --max-tokens 5"),
        (argv(toy_bin, teacher_ckpt, out, "--num-shards", "2", "--shard-id", "2"),
         r"--shard-id must be in \[0, --num-shards 2\), got 2"),
        (argv(toy_bin, teacher_ckpt, out, split="nosuchsplit"), r"--gen-subset nosuchsplit: not"),
    ]
    for args, message in cases:
        assert main(args) == 1, message
        line = last_error(capsys)
        assert line.startswith("seqkd-generate: error: ") and re.search(message, line), line
        assert not out.exists() and not Path(f"{out}.parts").exists()
    # the installed console script: one line, no traceback
    proc = run_cli("seqkd-generate", *argv(toy_bin, tmp_path / "nope.pt", out), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("nope.pt does not exist")


def test_killed_while_assembling_then_rerun(reference, toy_bin, teacher_ckpt, tmp_path,
                                            monkeypatch):
    target = tmp_path / "train.nbest"
    real_assemble = gen.ChunkStore.assemble

    def assemble(self, chunks, skipped):
        raise Interrupt

    monkeypatch.setattr(gen.ChunkStore, "assemble", assemble)
    with pytest.raises(Interrupt):
        gen.generate_nbest(argv(toy_bin, teacher_ckpt, target))
    monkeypatch.setattr(gen.ChunkStore, "assemble", real_assemble)
    assert not target.exists() and len(list(Path(f"{target}.parts").glob("chunk-*"))) == 12
    summary = gen.generate_nbest(argv(toy_bin, teacher_ckpt, target))
    assert (summary.resumed_chunks, summary.decoded) == (12, 0)  # nothing decoded twice
    assert target.read_bytes() == reference[0].read_bytes()
