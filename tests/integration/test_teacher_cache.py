"""seqkd-cache-teacher and word_kd --teacher-cache: real fairseq CLIs on the toy corpus."""

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from fairseq_seqkd.criterions.word_kd import WordKDCriterion
from fairseq_seqkd.data.teacher_cache import (
    TeacherCache,
    attach_teacher_cache,
    cache_files,
)
from fairseq_seqkd.distill.cache_build import build_cache_argv
from fairseq_seqkd.errors import SeqKDError

from ..conftest import (
    PLUGIN,
    TRAIN_ARGS,
    cli,
    epoch_losses,
    model_args,
    preprocess,
    run_cli,
    train,
    write_toy_corpus,
)

pytestmark = pytest.mark.slow

CHUNK = 50  # 12 chunks of the 600-sentence train split: something to kill, resume and shard


def cache_args(data: Path, teacher: Path, output: Path, split: str = "train",
               *extra: object) -> list[object]:
    return [data, "--user-dir", PLUGIN, "--path", teacher, "--gen-subset", split, "--cpu",
            "--max-tokens", "1000", "--chunk-size", CHUNK, "--output", output, *extra]


def build(data: Path, teacher: Path, output: Path, split: str = "train", *extra: object,
          check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("seqkd-cache-teacher", *cache_args(data, teacher, output, split, *extra),
                   "--no-progress-bar", check=check)


def file_bytes(directory: Path, split: str = "train") -> dict[str, bytes]:
    return {os.path.basename(f): Path(f).read_bytes() for f in cache_files(str(directory), split)}


@pytest.fixture(scope="module")
def caches(toy_bin, teacher_ckpt, tmp_path_factory) -> dict[str, Path]:
    """float32 caches of train and valid, and a float16 cache of train."""
    root = tmp_path_factory.mktemp("caches")
    out = {"f32": root / "f32", "f16": root / "f16"}
    proc = build(toy_bin, teacher_ckpt, out["f32"], "train", "--cache-dtype", "float32")
    assert "600 sentences" in proc.stdout and "bytes/token" in proc.stdout
    build(toy_bin, teacher_ckpt, out["f32"], "valid", "--cache-dtype", "float32")
    build(toy_bin, teacher_ckpt, out["f16"], "train")  # float16: the default
    return out


def make_task(data: Path, *extra: object, dim: int = 16):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, [str(data), "--user-dir", PLUGIN, *map(str, model_args(dim)),
                 *map(str, TRAIN_ARGS), *map(str, extra)],
    )
    cfg = convert_namespace_to_omegaconf(args)
    return tasks.setup_task(cfg.task), cfg


def cached_setup(data: Path, cache: Path, split: str = "valid"):
    task, cfg = make_task(data, "--task", "translation_kd", "--teacher-cache", cache)
    task.load_dataset(split)
    torch.manual_seed(0)
    model = task.build_model(cfg.model)
    ds = task.dataset(split)
    return task, model, ds.collater([ds[i] for i in range(24)])


def test_cache_files_are_fairseq_indexed_datasets_in_dataset_order(toy_bin, teacher_ckpt,
                                                                     caches):
    task, _ = make_task(toy_bin, "--task", "translation")
    task.load_dataset("valid")
    ds = task.dataset("valid")
    cache = TeacherCache(str(caches["f32"]), "valid", len(ds), k=8,
                         vocab_size=len(task.target_dictionary))
    assert cache.meta.k == 8 and cache.meta.dtype == "float32" and len(cache) == 60
    for index in (0, 17, 59):
        ids, lprobs = cache.entry(index, ds[index]["target"])
        assert ids.shape == lprobs.shape == (len(ds[index]["target"]), 8)
        assert torch.all(lprobs[:, :-1] >= lprobs[:, 1:])  # top-k, sorted
        assert torch.all(lprobs <= 0) and torch.all(lprobs.exp().sum(-1) <= 1 + 1e-5)
    # bytes per target token, for the README: k x (4 + 2) with float16 plus the index
    tokens = int(np.asarray(task.dataset("valid").tgt_sizes).sum())
    task.load_dataset("train")
    train_tokens = int(np.asarray(task.dataset("train").tgt_sizes).sum())
    f16 = sum(len(b) for b in file_bytes(caches["f16"]).values())
    f32 = sum(len(b) for b in file_bytes(caches["f32"]).values())
    print(f"\ncache bytes/target token: float16 {f16 / train_tokens:.2f}, "
          f"float32 {f32 / train_tokens:.2f} ({train_tokens} tokens, 600 sentences)")
    assert 48 <= f16 / train_tokens < 48 + 40  # data + index/checksums (short sentences here)
    assert tokens > 0


def test_cached_and_online_top8_word_kd_give_the_same_loss(toy_bin, teacher_ckpt, caches):
    task, model, sample = cached_setup(toy_bin, caches["f32"])
    model.eval()
    lprobs, ids = sample["teacher_topk"]
    assert lprobs.shape == ids.shape == (*sample["target"].shape, 8)
    online_task, _ = make_task(toy_bin, "--task", "translation")
    online_sample = {k: v for k, v in sample.items() if k != "teacher_topk"}
    for temperature in (1.0, 2.0):
        kw = dict(sentence_avg=False, label_smoothing=0.1, kd_alpha=0.5, kd_topk=8,
                  kd_temperature=temperature)
        cached = WordKDCriterion(task, **kw)
        online = WordKDCriterion(online_task, teacher_path=str(teacher_ckpt), **kw)
        assert cached.teacher is None and cached.cached
        loss_c, _, log_c = cached(model, sample)
        loss_o, _, log_o = online(model, online_sample)
        ntokens = sample["ntokens"]
        print(f"\nT={temperature}: cached float32 vs online: loss {loss_c.item():.6f} vs "
              f"{loss_o.item():.6f}, |diff| {abs(loss_c - loss_o).item():.2e} "
              f"({abs(loss_c - loss_o).item() / ntokens:.2e} per token)")
        # float32 sums of ~1000: one unit in the last place is 1.2e-4, so compare relatively
        assert loss_c.item() == pytest.approx(loss_o.item(), rel=1e-6)
        assert log_c["kd_loss"].item() == pytest.approx(log_o["kd_loss"].item(), rel=1e-6)
    # float16 storage: report the difference (train split: the valid one is float32 only)
    task16, model16, sample16 = cached_setup(toy_bin, caches["f16"], split="train")
    task32, _, sample32 = cached_setup(toy_bin, caches["f32"], split="train")
    assert torch.equal(sample16["id"], sample32["id"])
    model16.eval()
    kw = dict(sentence_avg=False, label_smoothing=0.1, kd_alpha=0.5, kd_topk=8)
    loss16 = WordKDCriterion(task16, **kw)(model16, sample16)[0]
    loss32 = WordKDCriterion(task32, **kw)(model16, sample32)[0]
    rel = abs(loss16 - loss32).item() / loss32.item()
    print(f"float16 cache vs float32: loss {loss16.item():.6f} vs {loss32.item():.6f}, "
          f"relative {rel:.2e} ({abs(loss16 - loss32).item() / sample16['ntokens']:.2e} per "
          f"token)")
    assert 0 < rel < 1e-3


def test_word_kd_trains_from_the_cache_without_a_teacher(toy_bin, caches, tmp_path):
    proc = train(toy_bin, tmp_path / "student", "--task", "translation_kd", "--teacher-cache",
                 caches["f32"], "--criterion", "word_kd", "--kd-topk", "8",
                 "--label-smoothing", "0.1", epochs=4, dim=16)
    log = proc.stdout + proc.stderr
    rows, valid = epoch_losses(log), epoch_losses(log, "valid")
    assert len(rows) == 4 and rows[-1]["loss"] < rows[0]["loss"]
    assert rows[0]["kd_loss"] > 0 and valid[0]["kd_loss"] > 0  # valid has a cache too
    assert "loaded teacher" not in log  # no teacher is loaded, let alone run


def test_cli_errors_are_one_line(toy_bin, teacher_ckpt, caches, tmp_path):
    def fails(*args: object) -> str:
        proc = train(toy_bin, tmp_path / "save", "--task", "translation_kd",
                     "--criterion", "word_kd", "--label-smoothing", "0.1", *args,
                     check=False, epochs=1, dim=16)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert not (tmp_path / "save" / "checkpoint_last.pt").exists()
        return proc.stderr.strip().splitlines()[-1]

    last = fails("--teacher-cache", caches["f32"], "--kd-topk", "4")
    assert last.startswith("fairseq-seqkd: error: --kd-topk is 4") and "top 8" in last
    empty = tmp_path / "empty"
    empty.mkdir()
    last = fails("--teacher-cache", empty, "--kd-topk", "8")
    assert "train.cache.json not found; make it with seqkd-cache-teacher" in last
    last = fails("--teacher-cache", caches["f32"], "--kd-topk", "8", "--teacher-path",
                 teacher_ckpt)
    assert "not both" in last


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    """Another corpus of the same words and train size, a smaller valid split."""
    root = tmp_path_factory.mktemp("other")
    write_toy_corpus(root / "raw", seed=7, sizes={"train": 600, "valid": 50, "test": 40})
    return preprocess(root / "raw", root / "bin")


def test_a_cache_of_other_data_is_refused_at_load_time(toy_bin, teacher_ckpt, caches,
                                                       other_data, tmp_path):
    task, _ = make_task(other_data, "--task", "translation")
    vocab = len(task.target_dictionary)
    task.load_dataset("train")
    task.load_dataset("valid")
    with pytest.raises(SeqKDError, match=r"sentence 0 of .*train.cache.json was computed for "
                       r"another target \(checksum mismatch\)"):
        attach_teacher_cache(task.dataset("train"), str(caches["f32"]), "train", vocab)
    with pytest.raises(SeqKDError, match=r"made for 60 sentences, the valid split has 50"):
        attach_teacher_cache(task.dataset("valid"), str(caches["f32"]), "valid", vocab)
    with pytest.raises(SeqKDError, match=r"-symbol dictionary, the data has"):
        attach_teacher_cache(task.dataset("train"), str(caches["f32"]), "train", vocab + 1)
    # a single tampered target is caught when its sentence is read
    own, _ = make_task(toy_bin, "--task", "translation")
    own.load_dataset("valid")
    wrapped = attach_teacher_cache(own.dataset("valid"), str(caches["f32"]), "valid", vocab)
    target = wrapped.dataset[5]["target"].clone()
    target[0] += 1
    with pytest.raises(SeqKDError, match=r"sentence 5 of .*\(checksum mismatch\)"):
        wrapped.cache.entry(5, target)
    # through fairseq-train: one line, before any update
    proc = train(other_data, tmp_path / "save", "--task", "translation_kd", "--teacher-cache",
                 caches["f32"], "--criterion", "word_kd", "--kd-topk", "8", check=False,
                 epochs=1, dim=16)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # fairseq-train loads valid first: its size
    assert last.startswith("fairseq-seqkd: error: --teacher-cache") and "other data" in last


def test_truncated_or_incomplete_cache_files_are_clear_errors(toy_bin, caches, tmp_path):
    task, _ = make_task(toy_bin, "--task", "translation")
    task.load_dataset("valid")
    ds, vocab = task.dataset("valid"), len(task.target_dictionary)
    cases = [
        ("valid.topk-lprobs.bin", lambda p: p.write_bytes(p.read_bytes()[:-100]),
         r"valid.topk-lprobs.bin is truncated or corrupt \(\d+ bytes for 60 sentences"),
        ("valid.topk-ids.idx", lambda p: p.write_bytes(p.read_bytes()[:30]),
         r"valid.topk-ids.idx is truncated or corrupt"),
        ("valid.topk-ids.bin", lambda p: p.unlink(), r"valid.topk-ids.bin is missing"),
        ("valid.checksums.npy", lambda p: p.write_bytes(b"junk"),
         r"valid.checksums.npy is missing or corrupt"),
        ("valid.cache.json", lambda p: p.unlink(),
         r"valid.cache.json not found; make it with seqkd-cache-teacher"),
    ]
    for i, (name, damage, message) in enumerate(cases):
        copy = tmp_path / f"copy{i}"
        copy.mkdir()
        for f in cache_files(str(caches["f32"]), "valid"):
            (copy / os.path.basename(f)).write_bytes(Path(f).read_bytes())
        attach_teacher_cache(ds, str(copy), "valid", vocab)  # intact: fine
        damage(copy / name)
        with pytest.raises(SeqKDError, match=message):
            attach_teacher_cache(ds, str(copy), "valid", vocab)


def test_killed_and_resumed_job_gives_identical_bytes(toy_bin, teacher_ckpt, caches, tmp_path):
    out = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    argv = [cli("seqkd-cache-teacher"),
            *map(str, cache_args(toy_bin, teacher_ckpt, out, "train", "--cache-dtype",
                                 "float32", "--batch-size", "8"))]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / "train.parts"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and sum(n.startswith("chunk-") for n in os.listdir(parts)) >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the job finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sum(n.startswith("chunk-") for n in os.listdir(parts))
    assert 3 <= done < 12 and not (out / "train.cache.json").exists()
    with pytest.raises(SeqKDError, match=r"train.cache.json not found"):
        attach_teacher_cache(list(range(600)), str(out), "train", 0)
    # a resume with other options is refused, naming the option
    bad = build(toy_bin, teacher_ckpt, out, "train", "--cache-dtype", "float16",
                "--batch-size", "8", check=False)
    assert bad.returncode == 1
    assert "cannot resume" in bad.stderr and "--cache-dtype" in bad.stderr.splitlines()[-1]
    again = build(toy_bin, teacher_ckpt, out, "train", "--cache-dtype", "float32",
                  "--batch-size", "8")
    assert f"{done} of 12 chunks resumed" in again.stdout
    assert not parts.exists()
    fresh = tmp_path / "fresh"
    build(toy_bin, teacher_ckpt, fresh, "train", "--cache-dtype", "float32", "--batch-size", "8")
    assert file_bytes(out) == file_bytes(fresh)


def test_shards_merged_equal_the_unsharded_cache(toy_bin, teacher_ckpt, caches, tmp_path):
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    for i, shard in enumerate(shards):
        proc = build(toy_bin, teacher_ckpt, shard, "train", "--cache-dtype", "float32",
                     "--num-shards", 3, "--shard-id", i)
        assert f"shard {i} of 3" in proc.stdout
        assert not (shard / "train.cache.json").exists()
    merged = tmp_path / "merged"
    bad = run_cli("seqkd-cache-teacher", "--merge-shards", shards[0], shards[2],
                  "--gen-subset", "train", "--output", merged, check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        "seqkd-cache-teacher: error: --merge-shards: shard 1 of 3 is missing"
    )
    proc = run_cli("seqkd-cache-teacher", "--merge-shards", *shards, "--gen-subset", "train",
                   "--output", merged)
    assert "from 3 shards" in proc.stdout
    assert file_bytes(merged) == file_bytes(caches["f32"])


def test_every_cache_file_is_on_disk_before_it_is_renamed_into_place(toy_bin, teacher_ckpt,
                                                                      tmp_path, monkeypatch):
    """A crash after the rename must not leave a complete-looking cache of empty blocks."""
    synced, renames = set(), []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd: int) -> None:
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def moved(real):
        def move(src, dst, *args, **kwargs):
            renames.append((os.path.realpath(src), os.path.realpath(dst),
                            os.path.realpath(src) in synced))
            return real(src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", moved(real_replace))
    monkeypatch.setattr(os, "rename", moved(real_rename))
    out = tmp_path / "cache"
    shard = tmp_path / "shard"
    build_cache_argv(list(map(str, cache_args(toy_bin, teacher_ckpt, out, "valid"))))
    build_cache_argv(list(map(str, cache_args(toy_bin, teacher_ckpt, shard, "valid",
                                              "--num-shards", 2, "--shard-id", 0))))
    files = [*cache_files(str(out), "valid"), str(shard / "valid.shard.json")]
    for path in map(os.path.realpath, files):
        moves = [synced_first for _, dst, synced_first in renames if dst == path]
        assert moves and all(moves), path
    chunks = [src for src, dst, _ in renames if os.path.basename(dst).startswith("chunk-")]
    assert chunks  # chunk directories: every file in them synced before the rename
    expected = {f"{w}.{e}" for w in ("topk-ids", "topk-lprobs") for e in ("bin", "idx")}
    for chunk in chunks:
        inside = {os.path.relpath(p, chunk) for p in synced if p.startswith(chunk + os.sep)}
        assert expected | {"checksums.npy"} <= inside, (chunk, inside)
