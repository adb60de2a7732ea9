"""fairseq's prefetch threads no longer abort the interpreter's exit (status 134)."""

import os
import subprocess
import sys
import textwrap

import pytest

from ..conftest import train

pytestmark = pytest.mark.slow

# fairseq's BufferedIterator over torch work, left producing when the program ends: without
# the plugin's atexit callback this exits 134 ("terminate called without an active exception")
PRODUCING_AT_EXIT = textwrap.dedent("""
    import torch
    from fairseq.data import iterators

    import fairseq_seqkd  # noqa: F401

    class Batches(torch.utils.data.Dataset):
        def __len__(self):
            return 10**6

        def __getitem__(self, i):
            return torch.randn(64, 64) @ torch.randn(64, 64)

    loader = torch.utils.data.DataLoader(Batches(), batch_size=1, num_workers=0)
    it = iterators.BufferedIterator(10**6, loader)  # never full: always inside torch code
    next(it)
    print("consumed one batch")
""")


def test_exit_with_a_prefetch_thread_inside_torch_code_is_clean():
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", PRODUCING_AT_EXIT], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "consumed one batch" in proc.stdout
        assert "terminate called" not in proc.stderr


def test_fairseq_train_stopped_by_max_update_mid_epoch_exits_0(toy_bin, tmp_path):
    """--max-update 6 stops in the second of three 4-batch epochs; exit 0 every time."""
    for run in range(3):
        save = tmp_path / f"run{run}"
        proc = train(toy_bin, save, "--criterion", "cross_entropy", "--max-update", "6",
                     "--no-epoch-checkpoints", epochs=100, dim=16, check=False)
        log = proc.stdout + proc.stderr
        assert "Stopping training due to num_updates: 6 >= max_update: 6" in log
        assert "epoch 002:      2 / 4" in log  # in mid-epoch
        assert proc.returncode == 0, log[-2000:]
        assert (save / "checkpoint_last.pt").exists()
