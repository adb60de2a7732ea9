"""seqkd-export: a pruned translation_kd student that stock fairseq loads without the plugin."""

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fairseq_seqkd.checkpoints import parameter_counts
from fairseq_seqkd.cli import export as export_cli
from fairseq_seqkd.deploy import stock
from fairseq_seqkd.errors import SeqKDError

from ..conftest import BIN, PLUGIN, run_cli, train

pytestmark = pytest.mark.slow


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def student(toy_bin, tmp_path_factory) -> Path:
    """A pruned translation_kd student with three epoch checkpoints."""
    save = tmp_path_factory.mktemp("student")
    train(toy_bin, save, "--task", "translation_kd", "--prune-ratio", "0.5",
          "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
          epochs=3, dim=16)
    return save


@pytest.fixture(scope="module")
def exported(student, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("export") / "student.pt"
    proc = run_cli("seqkd-export", "--input", student / "checkpoint_last.pt", "--output", out)
    return out, proc.stdout


def test_export_is_plain_stock_and_reports_sizes(student, exported):
    out, report = exported
    state = load(out)
    source = load(student / "checkpoint_last.pt")
    assert set(state) == {"args", "cfg", "model", "criterion", "optimizer_history",
                          "task_state", "extra_state"}
    assert state["args"] is None and state["criterion"] is None and state["task_state"] == {}
    assert "last_optimizer_state" not in state and "metrics" not in state["extra_state"]
    cfg = state["cfg"]
    assert cfg["task"]["_name"] == "translation" and "prune_ratio" not in cfg["task"]
    assert cfg["common"]["user_dir"] is None
    assert isinstance(cfg["model"], dict)  # was an argparse.Namespace
    assert cfg["model"]["task"] == "translation" and cfg["model"]["user_dir"] is None
    assert not any(k.startswith(("prune_", "distilled_")) for k in cfg["model"])
    assert cfg["criterion"]["_name"] == "label_smoothed_cross_entropy"  # stock: kept
    assert state["optimizer_history"][-1]["num_updates"] == \
        source["optimizer_history"][-1]["num_updates"]
    for name, tensor in source["model"].items():
        assert torch.equal(state["model"][name], tensor), name
    total, nonzero = parameter_counts(state["model"])
    assert nonzero < 0.6 * total  # the 50 % pruned student
    size_in, size_out = (student / "checkpoint_last.pt").stat().st_size, out.stat().st_size
    assert size_out < size_in / 2  # no optimizer state, tied embeddings stored once
    assert f"file size: {size_in:,} -> {size_out:,} bytes" in report
    assert f"output: {total:,} parameters, {nonzero:,} non-zero" in report
    assert "task translation_kd -> translation" in report


STOCK_CHECK = textwrap.dedent("""
    import argparse, json, sys
    import torch
    out, raw = sys.argv[1], sys.argv[2]
    state = torch.load(out, map_location="cpu", weights_only=True)  # no allow-list
    try:
        torch.load(raw, map_location="cpu", weights_only=True)
        raw_loads = True
    except Exception:
        raw_loads = False
    def walk(x):
        if isinstance(x, dict):
            return any(walk(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return any(walk(v) for v in x)
        return isinstance(x, argparse.Namespace)
    from fairseq import checkpoint_utils
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([out])
    print(json.dumps({
        "namespace": walk(state), "raw_loads": raw_loads,
        "task": type(task).__name__, "model": type(models[0]).__name__,
        "plugin": "fairseq_seqkd" in sys.modules,
    }))
""")


def test_stock_fairseq_loads_and_decodes_without_the_plugin(toy_bin, student, exported):
    out, _ = exported
    raw = student / "checkpoint_last.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", STOCK_CHECK, str(out), str(raw)],
                          capture_output=True, text=True, env=env, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"namespace": False, "raw_loads": False, "task": "TranslationTask",
                      "model": "TransformerModel", "plugin": False}

    def hypotheses(*args) -> list[str]:
        gen = run_cli("fairseq-generate", toy_bin, *args, "--beam", "2", "--cpu",
                      "--batch-size", "16")
        return sorted(re.findall(r"^H-\d+\t.*$", gen.stdout, flags=re.M))

    stock = hypotheses("--path", out)  # no --user-dir
    assert len(stock) == 40
    assert stock == hypotheses("--path", raw, "--user-dir", PLUGIN)  # same model
    inter = subprocess.run(
        [str(BIN / "fairseq-interactive"), str(toy_bin), "--path", str(out), "--cpu",
         "--source-lang", "src", "--target-lang", "tgt", "--beam", "2"],
        input="w1 w2 w3\nw4 w5\n", capture_output=True, text=True, env=env, check=True,
    )
    assert len(re.findall(r"^H-\d+\t", inter.stdout, flags=re.M)) == 2


def test_average_last_matches_the_mean(student, tmp_path, capsys):
    out = tmp_path / "avg.pt"
    assert export_cli.main(["--checkpoint-dir", str(student), "--average-last", "2",
                            "--output", str(out)]) == 0
    report = capsys.readouterr().out
    assert "average of 2" in report and "checkpoint3.pt, " in report
    state = load(out)
    c2, c3 = load(student / "checkpoint2.pt"), load(student / "checkpoint3.pt")
    assert state["optimizer_history"][-1]["num_updates"] == \
        c3["optimizer_history"][-1]["num_updates"]  # metadata of the newest
    changed = 0
    for name, tensor in c3["model"].items():
        expected = ((tensor.double() + c2["model"][name].double()) / 2).to(tensor.dtype)
        assert torch.equal(state["model"][name], expected), name
        changed += not torch.equal(tensor, expected)
    assert changed > 10
    # the pruned zeros of both epochs are the same, so the average keeps them
    assert parameter_counts(state["model"]) == parameter_counts(c3["model"])


def test_plugin_criterion_and_options_are_rewritten():
    model = argparse.Namespace(arch="transformer", _name="transformer", task="translation_kd",
                               criterion="word_kd", user_dir="/x", teacher_path="t.pt",
                               kd_alpha=0.5, label_smoothing=0.1, prune_ratio=0.8,
                               encoder_embed_dim=16)
    cfg = stock.plain({
        "common": {"user_dir": "/x"}, "model": model,
        "task": {"_name": "translation_kd", "data": "bin", "prune_ratio": 0.8,
                 "distilled_data": "d"},
        "criterion": {"_name": "word_kd", "teacher_path": "t.pt", "kd_alpha": 0.5,
                      "label_smoothing": 0.1, "sentence_avg": False},
    })
    out, changes = stock.stock_cfg(cfg)
    assert out["criterion"]["_name"] == "label_smoothed_cross_entropy"
    assert out["criterion"]["label_smoothing"] == 0.1
    assert not {"teacher_path", "kd_alpha"} & set(out["criterion"])
    assert out["task"] == {"_name": "translation", "data": "bin"}
    assert out["model"] == {"arch": "transformer", "_name": "transformer",
                            "task": "translation", "criterion": "label_smoothed_cross_entropy",
                            "user_dir": None, "label_smoothing": 0.1, "encoder_embed_dim": 16}
    assert "criterion word_kd -> label_smoothed_cross_entropy" in changes
    cfg["criterion"]["label_smoothing"] = 0.0
    assert stock.stock_cfg(cfg)[0]["criterion"] == {"_name": "cross_entropy",
                                                        "sentence_avg": False}
    with pytest.raises(SeqKDError, match="not a plain value"):
        stock.plain({"x": object()})
    with pytest.raises(SeqKDError, match="not a stock fairseq architecture"):
        stock.stock_cfg({**cfg, "model": {"arch": "my_plugin_arch"}})


def test_bad_input_is_one_line_and_writes_nothing(student, tmp_path, capsys):
    last = student / "checkpoint_last.pt"
    before = last.read_bytes()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint")
    out = str(tmp_path / "o.pt")
    cases = [
        (["--input", str(junk), "--output", out], r"--input: .*junk.pt is not a fairseq"),
        (["--input", str(last), "--output", str(last)], r"is the input checkpoint"),
        (["--checkpoint-dir", str(student), "--average-last", "3", "--output",
          str(student / "checkpoint2.pt")], r"is the input checkpoint .*checkpoint2.pt"),
        (["--checkpoint-dir", str(student), "--average-last", "4", "--output", out],
         r"--average-last 4: .* has only 3 epoch checkpoint\(s\) named checkpointN.pt: "
         r"checkpoint1.pt .. checkpoint3.pt"),
        (["--checkpoint-dir", str(student), "--average-last", "0", "--output", out],
         r"--average-last must be >= 1"),
        (["--checkpoint-dir", str(student), "--output", out], r"needs --average-last"),
        (["--input", str(last), "--average-last", "2", "--output", out],
         r"--average-last needs --checkpoint-dir"),
        (["--checkpoint-dir", str(tmp_path), "--average-last", "1", "--output", out],
         r"has only 0 epoch checkpoint\(s\)"),
        (["--input", str(last)], r"required: --output"),
    ]
    for argv, message in cases:
        assert export_cli.main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("seqkd-export: error: ") and re.search(message, err[-1]), err
    assert last.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt"]  # nothing half-written
    proc = run_cli("seqkd-export", "--input", junk, "--output", out, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("seqkd-export: error: --input:")
