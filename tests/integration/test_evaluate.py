"""seqkd-evaluate: BLEU of checkpoints from stock fairseq-generate, against an independent
scoring of fairseq-generate's own output."""

import json
import re

import pytest
import sacrebleu

from ..conftest import PLUGIN, run_cli

slow = pytest.mark.slow


@slow
def test_bleu_of_a_checkpoint_greedy_and_beam(toy_bin, toy_raw, teacher_ckpt, tmp_path):
    scores = tmp_path / "scores.json"
    proc = run_cli("seqkd-evaluate", toy_bin, "--reference", toy_raw / "test.tgt",
                   "--model", f"teacher={teacher_ckpt}", "--beams", "1", "2",
                   "--remove-bpe", "@@ ", "--batch-size", "16", "--cpu", "--json", scores)
    got = json.loads(scores.read_text())
    assert [(s["model"], s["beam"], s["sentences"]) for s in got] == [
        ("teacher", 1, 40), ("teacher", 2, 40)]
    # independently: fairseq-generate's D- lines in sentence order, scored by sacrebleu
    generate = run_cli("fairseq-generate", toy_bin, "--user-dir", PLUGIN, "--path", teacher_ckpt,
                       "--gen-subset", "test", "--beam", "1", "--batch-size", "16",
                       "--required-batch-size-multiple", "1", "--cpu")
    hyps = dict(re.findall(r"^D-(\d+)\t[^\t]*\t(.*)$", generate.stdout, flags=re.M))
    refs = (toy_raw / "test.tgt").read_text().splitlines()
    expected = sacrebleu.corpus_bleu([hyps[str(i)] for i in range(len(refs))], [refs])
    assert got[0]["bleu"] == pytest.approx(expected.score, abs=1e-9)
    assert 0 < got[0]["bleu"] < 100 and 0 <= got[1]["bleu"] <= 100
    assert got[0]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert got[0]["tokens_per_second"] > 0
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["model", "greedy", "beam", "2", "tokens/s", "(beam", "1)"]
    assert lines[2].split()[:3] == ["teacher", f"{got[0]['bleu']:.2f}", f"{got[1]['bleu']:.2f}"]
    assert lines[-1].startswith("sacreBLEU signature: nrefs:1")


@slow
def test_bad_input_is_one_line(toy_bin, toy_raw, teacher_ckpt, tmp_path):
    def error(*args: object) -> str:
        proc = run_cli("seqkd-evaluate", toy_bin, *args, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        return proc.stderr.strip().splitlines()[-1]

    ref = toy_raw / "test.tgt"
    assert error("--reference", ref, "--model", "teacher") == (
        "seqkd-evaluate: error: argument --model: expected NAME=CHECKPOINT, got 'teacher'")
    assert error("--reference", ref, "--model", f"t={tmp_path / 'no.pt'}") == (
        f"seqkd-evaluate: error: --model t: {tmp_path / 'no.pt'} does not exist")
    assert error("--reference", ref, "--model", f"t={teacher_ckpt}", "--beams", "0") == (
        "seqkd-evaluate: error: beam sizes must be >= 1, got [0]")
    short = tmp_path / "short.tgt"
    short.write_text("".join(ref.read_text().splitlines(keepends=True)[:39]))
    assert error("--reference", short, "--model", f"t={teacher_ckpt}", "--beams", "1",
                 "--remove-bpe", "@@ ", "--cpu") == (
        "seqkd-evaluate: error: 40 hypotheses for 39 references; the test set and the "
        "decoded data-bin differ")
