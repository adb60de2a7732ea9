"""The CUDA paths on tiny models: word_kd --fp16 with a teacher, seqkd-generate, the teacher
cache, and pruning under fairseq's FP16Optimizer. Skipped, with the reason, without CUDA;
about a minute on one GPU (``pytest -m gpu tests/gpu``)."""

from pathlib import Path

import pytest
import torch

from fairseq_seqkd.pruning import prunable_tensors

from ..conftest import PLUGIN, TRAIN_ARGS, epoch_losses, model_args, run_cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

GPU_TRAIN_ARGS = tuple(a for a in TRAIN_ARGS if a != "--cpu")


def gpu_train(data: Path, save: Path, *args: object, epochs: int = 2):
    return run_cli("fairseq-train", data, "--user-dir", PLUGIN, *model_args(16), *GPU_TRAIN_ARGS,
                   "--max-epoch", epochs, "--save-dir", save, "--fp16", *args)


def test_word_kd_fp16_with_a_teacher(toy_bin, teacher_ckpt, tmp_path):
    proc = gpu_train(toy_bin, tmp_path / "s", "--criterion", "word_kd", "--teacher-path",
                     teacher_ckpt, "--label-smoothing", "0.1", "--kd-topk", "8")
    rows = epoch_losses(proc.stdout + proc.stderr)
    assert len(rows) == 2 and all(0 < r["kd_loss"] < 100 for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_seqkd_generate_on_gpu(toy_bin, teacher_ckpt, tmp_path):
    out = tmp_path / "test.nbest"
    run_cli("seqkd-generate", toy_bin, "--user-dir", PLUGIN, "--path", teacher_ckpt,
            "--gen-subset", "test", "--beam", "2", "--nbest", "2", "--max-tokens", "1000",
            "--output", out)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 80  # 40 test sentences x 2 hypotheses
    assert {int(line.split("\t")[0]) for line in lines} == set(range(40))


def test_teacher_cache_on_gpu_feeds_word_kd_fp16(toy_bin, teacher_ckpt, tmp_path):
    cache = tmp_path / "cache"
    for split in ("train", "valid"):
        run_cli("seqkd-cache-teacher", toy_bin, "--user-dir", PLUGIN, "--path", teacher_ckpt,
                "--gen-subset", split, "--kd-topk", "8", "--max-tokens", "1000",
                "--no-progress-bar", "--output", cache)
    proc = gpu_train(toy_bin, tmp_path / "s", "--task", "translation_kd", "--teacher-cache",
                     cache, "--criterion", "word_kd", "--kd-topk", "8", "--label-smoothing",
                     "0.1")
    log = proc.stdout + proc.stderr
    assert epoch_losses(log, "valid")[0]["kd_loss"] > 0
    assert "loaded teacher" not in log


def test_pruning_under_the_fp16_optimizer(toy_bin, tmp_path):
    save = tmp_path / "s"
    gpu_train(toy_bin, save, "--task", "translation_kd", "--criterion", "cross_entropy",
              "--prune-ratio", "0.5", "--max-update", "10", "--no-epoch-checkpoints", epochs=100)
    state = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    weights = prunable_tensors(state["model"].items(), None, by_value=True)[0]
    total = sum(w.numel() for w in weights.values())
    zero = sum(int((w == 0).sum()) for w in weights.values())
    assert zero / total == pytest.approx(0.5, abs=0.01)
