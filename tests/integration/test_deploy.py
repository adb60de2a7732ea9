"""seqkd-export --format ctranslate2 and seqkd-translate on tiny models made with fairseq."""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sentencepiece
import torch

from fairseq_seqkd.cli import translate as translate_cli
from fairseq_seqkd.deploy.ct2_export import MANIFEST, read_manifest
from fairseq_seqkd.deploy.translator import Translator

from ..conftest import cli, preprocess, run_cli, train

pytestmark = pytest.mark.slow


def fairseq_greedy(data: Path, checkpoint: Path, *extra: object) -> list[str]:
    """fairseq-generate's greedy hypotheses on the test split, in test-set order."""
    proc = run_cli(
        "fairseq-generate", data, "--path", checkpoint, "--beam", "1", "--batch-size", "16",
        "--required-batch-size-multiple", "1", "--cpu", "--num-workers", "0", *extra,
    )
    hyps = {}
    for line in proc.stdout.splitlines():
        if line.startswith("D-"):
            ident, _, text = line[2:].split("\t")
            hyps[int(ident)] = text
    return [hyps[i] for i in range(len(hyps))]


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def export(checkpoint: Path, output: Path, *extra: object, check: bool = True,
           flag: str = "--input") -> subprocess.CompletedProcess:
    return run_cli("seqkd-export", flag, checkpoint, "--format", "ctranslate2",
                   "--output", output, *extra, check=check)


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def ct2(teacher_ckpt, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ct2")
    return {q: (export(teacher_ckpt, out / q, "--quantization", q), out / q)[1]
            for q in ("float32", "int8")}


def test_float32_greedy_matches_fairseq(ct2, teacher_ckpt, toy_bin, toy_raw, tmp_path):
    reference = fairseq_greedy(toy_bin, teacher_ckpt, "--user-dir",
                               str(Path(__file__).parents[2] / "fairseq_seqkd"))
    outputs = {}
    for quant, directory in ct2.items():
        out = tmp_path / f"{quant}.txt"
        proc = run_cli("seqkd-translate", directory, "--input", toy_raw / "test.src",
                       "--output", out, "--batch-size", "16")
        outputs[quant] = lines(out)
        assert len(outputs[quant]) == len(reference) == 40
        assert "target tokens/s" in proc.stderr and proc.stdout == ""
    same = sum(a == b for a, b in zip(outputs["float32"], reference))
    assert same / len(reference) >= 0.98, (same, outputs["float32"][:3], reference[:3])
    # int8 on this barely trained toy flips many near-ties; its BLEU cost is measured on real
    # data by benchmarks/decode_speed.py, not asserted here


def test_manifest_and_directory_are_self_contained(ct2, teacher_ckpt, tmp_path):
    directory = ct2["int8"]
    manifest = read_manifest(str(directory))
    digest = hashlib.sha256(teacher_ckpt.read_bytes()).hexdigest()
    assert manifest.source_sha256 == [digest]
    assert manifest.source_checkpoints == [str(teacher_ckpt.resolve())]
    assert manifest.quantization == "int8" and manifest.spm_model is None
    assert manifest.architecture["encoder_layers"] == 1
    assert manifest.architecture["encoder_embed_dim"] == 48
    assert {"model.bin", "config.json", "dict.src.txt", "dict.tgt.txt", MANIFEST} <= \
        {p.name for p in directory.iterdir()}
    assert leftovers(directory) == [] and leftovers(directory.parent) == []
    # self-contained: a copy elsewhere translates without the source checkpoint or data
    moved = tmp_path / "moved"
    os.rename(directory, moved)
    try:
        assert len(Translator(moved).translate(["w1 w2 w3", "", "w4"])) == 3
    finally:
        os.rename(moved, directory)
    # int8 matrices take less space than float32 (tiny model: biases and norms stay float)
    assert (directory / "model.bin").stat().st_size < \
        0.75 * (ct2["float32"] / "model.bin").stat().st_size


def test_every_checkpoint_kind_converts(teacher_ckpt, toy_bin, toy_raw, tmp_path):
    """Trained, averaged, pruned and stock-exported checkpoints all convert; the stock export
    of a checkpoint gives the CTranslate2 model of that checkpoint."""
    save = tmp_path / "student"
    train(toy_bin, save, "--criterion", "label_smoothed_cross_entropy", "--label-smoothing",
          "0.1", epochs=3, dim=16)
    run_cli("seqkd-prune", "--input", save / "checkpoint_last.pt", "--output",
            tmp_path / "pruned.pt", "--prune-ratio", "0.5")
    run_cli("seqkd-export", "--input", teacher_ckpt, "--output", tmp_path / "stock.pt")
    made = {
        "averaged": export(save, tmp_path / "avg", "--average-last", "2", "--quantization",
                           "float32", flag="--checkpoint-dir"),
        "pruned": export(tmp_path / "pruned.pt", tmp_path / "pruned", "--data", toy_bin),
        "stock": export(tmp_path / "stock.pt", tmp_path / "stock", "--quantization", "float32"),
    }
    assert "CTranslate2 float32" in made["averaged"].stdout
    assert len(read_manifest(str(tmp_path / "avg")).source_checkpoints) == 2
    pruned = read_manifest(str(tmp_path / "pruned"))
    assert pruned.nonzero < 0.6 * pruned.parameters
    source = lines(toy_raw / "test.src")
    ours = Translator(tmp_path / "stock").translate(source)
    assert ours == Translator(_float32(teacher_ckpt, tmp_path)).translate(source)


def _float32(checkpoint: Path, tmp_path: Path) -> Path:
    out = tmp_path / "direct"
    export(checkpoint, out, "--quantization", "float32")
    return out


@pytest.fixture(scope="module")
def spm_model(toy_raw, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A sentencepiece model, the corpus encoded with it, binarized, and a model trained on it."""
    root = tmp_path_factory.mktemp("spm")
    raw = root / "raw"
    raw.mkdir()
    for name in ("train", "valid", "test"):  # raw text with capitals and punctuation
        for lang in ("src", "tgt"):
            text = [ln.capitalize() + "." for ln in lines(toy_raw / f"{name}.{lang}")]
            (raw / f"{name}.{lang}").write_text("\n".join(text) + "\n")
    sentencepiece.SentencePieceTrainer.train(
        input=f"{raw / 'train.src'},{raw / 'train.tgt'}", model_prefix=str(root / "spm"),
        vocab_size=60, model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1,
        pad_id=-1, unk_id=0, num_threads=1, minloglevel=2,
    )
    sp = sentencepiece.SentencePieceProcessor(model_file=str(root / "spm.model"))
    enc = root / "enc"
    enc.mkdir()
    for path in raw.iterdir():
        pieces = [" ".join(sp.encode(ln, out_type=str)) for ln in lines(path)]
        (enc / path.name).write_text("\n".join(pieces) + "\n")
    data = preprocess(enc, root / "bin")
    train(data, root / "model", "--criterion", "label_smoothed_cross_entropy",
          "--label-smoothing", "0.1", "--no-epoch-checkpoints", epochs=6, dim=32)
    return root / "spm.model", data, raw


def test_sentencepiece_inside_matches_fairseq_remove_bpe(spm_model, tmp_path):
    spm, data, raw = spm_model
    checkpoint = data.parent / "model" / "checkpoint_last.pt"
    out = tmp_path / "ct2"
    export(checkpoint, out, "--quantization", "float32", "--spm-model", spm)
    assert read_manifest(str(out)).spm_model == "spm.model"
    proc = subprocess.run([cli("seqkd-translate"), out, "--no-progress-bar"],
                          input=(raw / "test.src").read_bytes(), capture_output=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = proc.stdout.decode("utf-8").splitlines()
    reference = fairseq_greedy(data, checkpoint, "--user-dir",
                               str(Path(__file__).parents[2] / "fairseq_seqkd"),
                               "--remove-bpe", "sentencepiece")
    assert len(ours) == len(reference) == 40
    same = sum(a == b for a, b in zip(ours, reference))
    assert same / len(ours) >= 0.98, (ours[:2], reference[:2])
    assert not any("\u2581" in line for line in ours)  # pieces joined back into words


# --------------------------------------------------------------------- bad input


def _one_line_error(proc: subprocess.CompletedProcess, prog: str, *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{prog}: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize(("change", "option"), [
    ({"decoder_attention_heads": 1}, "--decoder-attention-heads"),
    ({"no_token_positional_embeddings": True}, "--no-token-positional-embeddings"),
])
def test_export_names_an_option_the_converter_cannot_take(teacher_ckpt, tmp_path, change,
                                                           option):
    run_cli("seqkd-export", "--input", teacher_ckpt, "--output", tmp_path / "stock.pt")
    state = torch.load(tmp_path / "stock.pt", weights_only=True)
    state["cfg"]["model"].update(change)
    torch.save(state, tmp_path / "odd.pt")
    proc = export(tmp_path / "odd.pt", tmp_path / "out", check=False)
    _one_line_error(proc, "seqkd-export", option, "odd.pt")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_export_refuses_bad_inputs_and_outputs(teacher_ckpt, tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "nodicts").mkdir()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me\n")
    cases = [
        (["--input", tmp_path / "missing.pt"], ["missing.pt", "does not exist"]),
        (["--input", tmp_path / "corrupt.pt"], ["corrupt.pt", "not a fairseq checkpoint"]),
        (["--input", teacher_ckpt, "--data", tmp_path / "nodicts"], ["dict.src.txt"]),
        (["--input", teacher_ckpt, "--spm-model", tmp_path / "corrupt.pt"], ["--spm-model"]),
    ]
    for argv, needles in cases:
        proc = run_cli("seqkd-export", *argv, "--format", "ctranslate2", "--output",
                       tmp_path / "out", check=False)
        _one_line_error(proc, "seqkd-export", *needles)
        assert not (tmp_path / "out").exists()
    proc = export(teacher_ckpt, taken, check=False)
    _one_line_error(proc, "seqkd-export", "--force", "not an earlier seqkd-export")
    assert (taken / "notes.txt").read_text() == "keep me\n"
    export(teacher_ckpt, taken, "--force")
    assert not (taken / "notes.txt").exists() and (taken / MANIFEST).is_file()
    before = (taken / "model.bin").stat().st_mtime_ns
    export(teacher_ckpt, taken, "--quantization", "float32")  # an earlier export: replaced
    assert read_manifest(str(taken)).quantization == "float32"
    assert (taken / "model.bin").stat().st_mtime_ns != before
    assert leftovers(tmp_path) == []
    proc = run_cli("seqkd-export", "--input", teacher_ckpt, "--output", tmp_path / "x.pt",
                   "--spm-model", "spm.model", check=False)
    _one_line_error(proc, "seqkd-export", "--spm-model", "only with --format ctranslate2")


def test_translate_refuses_missing_and_incomplete_directories(ct2, tmp_path):
    proc = run_cli("seqkd-translate", tmp_path / "none", check=False)
    _one_line_error(proc, "seqkd-translate", "none", "not a directory")
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in ct2["int8"].iterdir():
        if path.name != "model.bin":
            (broken / path.name).write_bytes(path.read_bytes())
    proc = run_cli("seqkd-translate", broken, check=False)
    _one_line_error(proc, "seqkd-translate", "incomplete", "model.bin")


def test_translate_bad_lines_empty_lines_and_long_lines(ct2, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"w1 w2\nw3 \xff w4\nw5\n")
    out = tmp_path / "out.txt"
    proc = run_cli("seqkd-translate", ct2["int8"], "--input", bad, "--output", out,
                   "--buffer-size", "1", check=False)
    _one_line_error(proc, "seqkd-translate", "bad.txt:2: invalid UTF-8")
    assert not out.exists() and leftovers(tmp_path) == []

    text = "w1 w2 w3\n\nw4 w5\n   \n" + " ".join(["w7"] * 1500) + "\nw6\n"
    proc = subprocess.run([cli("seqkd-translate"), ct2["int8"], "--batch-size", "2"],
                          input=text.encode(), capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    got = proc.stdout.decode().split("\n")
    assert len(got) == 7 and got[-1] == ""  # six lines, each ended by a newline
    assert got[1] == "" and got[3] == "" and got[0] and got[2] and got[5]
    stderr = proc.stderr.decode()
    assert "1 line(s) longer than 1023 tokens truncated (first: line 5)" in stderr
    assert "6 lines (2 empty)" in stderr


def test_interrupted_translation_leaves_no_output(ct2, tmp_path):
    """SIGTERM while stdin is still open: no --output file, no temporary file."""
    out = tmp_path / "out.txt"
    proc = subprocess.Popen([cli("seqkd-translate"), ct2["int8"], "--output", out,
                             "--buffer-size", "1"], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdin.write(b"w1 w2\nw3 w4\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 300
    while not leftovers(tmp_path) and time.monotonic() < deadline:  # the temp file, written
        time.sleep(0.2)
    assert leftovers(tmp_path), "the translation never started"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.stdin.close()
    assert proc.wait(timeout=60) == 130
    assert "interrupted" in proc.stderr.read().decode()
    assert not out.exists() and leftovers(tmp_path) == []


def test_python_api_and_cli_agree(ct2, toy_raw, tmp_path, capsys):
    source = lines(toy_raw / "test.src")
    translator = Translator(ct2["float32"], threads=1)
    api = translator.translate(source, batch_size=64)
    assert translate_cli.main([str(ct2["float32"]), "--input", str(toy_raw / "test.src"),
                               "--batch-size", "3", "--no-progress-bar"]) == 0
    assert capsys.readouterr().out.splitlines() == api  # order kept whatever the batching
    manifest = json.loads((ct2["float32"] / MANIFEST).read_text())
    assert manifest["format"] == "ctranslate2" and translator.manifest.quantization == "float32"
