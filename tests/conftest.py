"""Shared fixtures: a tiny corpus, its binarization and a teacher, made with fairseq's CLIs."""

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGIN = str(REPO / "fairseq_seqkd")
BIN = Path(sys.executable).parent


def cli(name: str) -> str:
    """Path of a console script installed beside this interpreter (fairseq-train, ...)."""
    path = BIN / name
    if not path.exists():
        raise RuntimeError(f"{name} is not installed in {BIN}")
    return str(path)


def run_cli(
    name: str, *args: object, check: bool = True, env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run a fairseq / seqkd console script; on failure show its output's tail."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [cli(name), *map(str, args)], capture_output=True, text=True, env=full_env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{name} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
            f"--- stderr\n{proc.stderr[-5000:]}"
        )
    return proc


def write_toy_corpus(directory: Path, seed: int, sizes: dict[str, int], prefix: str = "w") -> None:
    """A learnable toy language pair: the target is the reversed, re-spelled source."""
    rng = random.Random(seed)
    words = [f"{prefix}{i}" for i in range(30)]
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        src, tgt = [], []
        for _ in range(n):
            sent = [rng.choice(words) for _ in range(rng.randint(3, 8))]
            src.append(" ".join(sent))
            tgt.append(" ".join(w.upper() for w in reversed(sent)))
        (directory / f"{split}.src").write_text("\n".join(src) + "\n")
        (directory / f"{split}.tgt").write_text("\n".join(tgt) + "\n")


def preprocess(raw: Path, dest: Path, *extra: object) -> Path:
    run_cli(
        "fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt",
        "--trainpref", raw / "train", "--validpref", raw / "valid", "--testpref", raw / "test",
        "--destdir", dest, "--joined-dictionary", "--workers", "1", *extra,
    )
    return dest


TINY_ARCH = (
    "--arch", "transformer", "--share-all-embeddings",
    "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
)


def model_args(dim: int) -> tuple[object, ...]:
    return (
        *TINY_ARCH,
        "--encoder-embed-dim", dim, "--decoder-embed-dim", dim,
        "--encoder-ffn-embed-dim", 2 * dim, "--decoder-ffn-embed-dim", 2 * dim,
    )


TRAIN_ARGS = (
    "--optimizer", "adam", "--lr", "0.005", "--max-tokens", "1500", "--cpu",
    "--no-progress-bar", "--log-interval", "1", "--seed", "1", "--dropout", "0.0",
    "--num-workers", "0",
)


def train(data: Path, save_dir: Path, *args: object, epochs: int = 3, dim: int = 32,
          **kw) -> subprocess.CompletedProcess:
    return run_cli(
        "fairseq-train", data, "--user-dir", PLUGIN, *model_args(dim), *TRAIN_ARGS,
        "--max-epoch", epochs, "--save-dir", save_dir, *args, **kw,
    )


def epoch_losses(log: str, split: str = "train") -> list[dict[str, float]]:
    """The per-epoch ``| train | epoch N | loss ...`` rows of a fairseq-train log."""
    rows = []
    for line in log.splitlines():
        m = re.search(rf"\| {split} \| epoch \d+ \| (.*)", line)
        if m:
            rows.append({k: float(v) for k, v in re.findall(r"(\w+) ([-\d.]+)", m.group(1))})
    return rows


@pytest.fixture(scope="session")
def toy_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    write_toy_corpus(raw, seed=0, sizes={"train": 600, "valid": 60, "test": 40})
    return raw


@pytest.fixture(scope="session")
def toy_bin(toy_raw, tmp_path_factory) -> Path:
    return preprocess(toy_raw, tmp_path_factory.mktemp("bin"))


@pytest.fixture(scope="session")
def teacher_ckpt(toy_bin, tmp_path_factory) -> Path:
    """A teacher trained for a few seconds with stock label_smoothed_cross_entropy."""
    save = tmp_path_factory.mktemp("teacher")
    train(toy_bin, save, "--criterion", "label_smoothed_cross_entropy",
          "--label-smoothing", "0.1", "--no-epoch-checkpoints", epochs=8, dim=48)
    return save / "checkpoint_last.pt"
