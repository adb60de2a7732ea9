"""gkd inside fairseq: word_kd at lambda 0, the on-policy step, seeding, DDP, real CLIs."""

import math
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.sequence_generator import SequenceGenerator
from torch import Tensor

from fairseq_seqkd.criterions.gkd import GKDCriterion, sample_student, update_is_on_policy
from fairseq_seqkd.divergences import generalized_jsd_full, tempered_log_probs
from fairseq_seqkd.errors import SeqKDError

from ..conftest import PLUGIN, TRAIN_ARGS, cli, epoch_losses, model_args, run_cli, train
from .test_word_kd import meter_value, setup, word_kd

pytestmark = pytest.mark.slow


def gkd(task, teacher: Path, **kw) -> GKDCriterion:
    return GKDCriterion(task, sentence_avg=False, label_smoothing=kw.pop("eps", 0.1),
                        teacher_path=str(teacher), **kw)


@pytest.mark.parametrize("topk", [0, 5])
def test_lambda_zero_beta_zero_is_word_kd_forward_kl(toy_bin, teacher_ckpt, topk):
    task, model, sample = setup(toy_bin)
    model.train()
    ours = gkd(task, teacher_ckpt, kd_alpha=0.7, kd_topk=topk, gkd_lambda=0.0, gkd_beta=0.0)
    theirs = word_kd(task, teacher_ckpt, kd_alpha=0.7, kd_topk=topk)
    torch.manual_seed(1)
    loss_a, size_a, log_a = ours(model, sample)
    torch.manual_seed(1)
    loss_b, size_b, log_b = theirs(model, sample)
    assert torch.equal(loss_a, loss_b) and size_a == size_b
    assert torch.equal(log_a["kd_loss"], log_b["kd_loss"]) and log_a["kd_loss"] > 0


def greedy_reference(model, task, sample, max_len_a: float, max_len_b: int) -> list[Tensor]:
    """fairseq's own SequenceGenerator, beam 1, on the model in eval mode."""
    model.eval()
    gen = SequenceGenerator([model], task.target_dictionary, beam_size=1, max_len_a=max_len_a,
                            max_len_b=max_len_b)
    return [hyps[0]["tokens"] for hyps in gen.generate([model], sample)]


def test_greedy_sampling_loop_equals_fairseq_generator(toy_bin, teacher_ckpt):
    task, _, sample = setup(toy_bin)
    [model], _ = checkpoint_utils.load_model_ensemble([str(teacher_ckpt)], task=task)
    d = task.target_dictionary
    width = sample["net_input"]["src_tokens"].size(1)
    max_lens = torch.full((sample["target"].size(0),), int(1.2 * width + 2))
    model.train()
    ours = sample_student(model, sample["net_input"], max_lens, d.eos(), d.pad())
    assert model.training  # decoded in eval mode, left as it was
    expected = greedy_reference(model, task, sample, 1.2, 2)
    assert any(len(e) < int(max_lens[0]) + 1 for e in expected)  # some stop on their own
    for row, want in zip(ours, expected):
        assert row[0] == d.eos()
        assert torch.equal(row[1:][row[1:].ne(d.pad())], want)


def test_samples_stop_at_max_len_and_are_reproducible(toy_bin):
    task, model, sample = setup(toy_bin)  # untrained: it rarely stops by itself
    d = task.target_dictionary
    max_lens = sample["net_input"]["src_lengths"] // 2 + 1
    draws = []
    for seed in (5, 5, 6):
        g = torch.Generator().manual_seed(seed)
        draws.append(sample_student(model, sample["net_input"], max_lens, d.eos(), d.pad(),
                                    temperature=2.0, generator=g))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    out = draws[0][:, 1:]
    lengths = out.ne(d.pad()).sum(1)  # tokens with the final </s>
    assert (lengths >= 2).all() and (lengths <= max_lens + 1).all()
    assert (out.eq(d.eos()).sum(1) == 1).all()  # one </s>, then padding only
    assert torch.equal(out.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1),
                       torch.full_like(lengths, d.eos()))


def test_on_policy_loss_is_jsd_on_the_students_own_output(toy_bin, teacher_ckpt):
    task, model, sample = setup(toy_bin)
    model.train()
    crit = gkd(task, teacher_ckpt, kd_alpha=0.6, gkd_lambda=1.0, gkd_beta=0.3,
               gkd_sampling="greedy", gkd_max_len_a=0.0, gkd_max_len_b=6)
    torch.manual_seed(0)
    loss, sample_size, log = crit(model, sample)
    assert model.training and log["on_policy"] == 1
    # independent recomputation: fairseq's greedy decoder, fairseq's teacher loader, float64
    hyps = greedy_reference(model, task, sample, 0.0, 6)
    model.train()
    pad, eos = task.target_dictionary.pad(), task.target_dictionary.eos()
    width = max(len(h) for h in hyps)
    target = torch.full((len(hyps), width), pad)
    prev = torch.full((len(hyps), width), pad)
    for i, h in enumerate(hyps):
        target[i, : len(h)] = h
        prev[i, 0], prev[i, 1 : len(h)] = eos, h[:-1]
    net_input = {**sample["net_input"], "prev_output_tokens": prev}
    [teacher], _ = checkpoint_utils.load_model_ensemble([str(teacher_ckpt)], task=task)
    teacher.eval()
    with torch.no_grad():
        lp_t = tempered_log_probs(teacher(**net_input)[0].double())
        lp_s = tempered_log_probs(model(**net_input)[0].double())
    jsd = generalized_jsd_full(lp_s, lp_t, 0.3).masked_fill(target.eq(pad), 0).sum()
    n = int(target.ne(pad).sum())
    assert sample_size == n == log["ntokens"] == log["sample_tokens"]
    assert loss.item() == pytest.approx(0.6 * jsd.item(), rel=1e-5)
    assert log["kd_loss"].item() == pytest.approx(jsd.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in crit.teacher.models[0].parameters())
    assert sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None) > 0
    model.eval()  # validation is off-policy, on the split's targets
    assert "on_policy" not in crit(model, sample)[2]


def test_on_policy_draw_is_per_update_seed():
    for lam in (0.0, 0.1, 0.5, 1.0):
        draws = [update_is_on_policy(seed, lam) for seed in range(4000)]
        assert sum(draws) / len(draws) == pytest.approx(lam, abs=0.02)
        assert draws == [update_is_on_policy(seed, lam) for seed in range(4000)]


def test_option_errors(toy_bin, teacher_ckpt, tmp_path):
    task, _, _ = setup(toy_bin)
    cases = [
        (dict(gkd_beta=1.5), r"--gkd-beta must be in \[0, 1\], got 1.5"),
        (dict(gkd_beta=-0.1), r"--gkd-beta must be in \[0, 1\]"),
        (dict(gkd_lambda=1.01), r"--gkd-lambda must be in \[0, 1\], got 1.01"),
        (dict(gkd_lambda=-1.0), r"--gkd-lambda must be in \[0, 1\]"),
        (dict(gkd_temperature=0.0), r"--gkd-temperature must be > 0, got 0.0"),
        (dict(gkd_temperature=-1.0), r"--gkd-temperature must be > 0"),
        (dict(gkd_max_len_b=-1), r"--gkd-max-len-a and --gkd-max-len-b must be >= 0"),
        (dict(gkd_sampling="beam"), r"--gkd-sampling must be one of sample, greedy"),
        (dict(kd_alpha=0.0), r"--gkd-lambda 0.5 > 0 needs --kd-alpha > 0"),
        (dict(kd_alpha=1.5, gkd_lambda=0.0), r"--kd-alpha must be in \[0, 1\]"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SeqKDError, match=message):
            gkd(task, teacher_ckpt, **kwargs)
    with pytest.raises(SeqKDError, match="--criterion gkd with --kd-alpha > 0 needs --teacher"):
        GKDCriterion(task, sentence_avg=False, label_smoothing=0.1)
    cached_task = SimpleNamespace(cfg=SimpleNamespace(teacher_cache=str(tmp_path)))
    with pytest.raises(SeqKDError, match=r"--teacher-cache .* cannot score the student's"):
        GKDCriterion(cached_task, sentence_avg=False, label_smoothing=0.1, gkd_lambda=0.2)


def test_cli_bad_input_is_one_line_before_any_update(toy_bin, teacher_ckpt, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    for extra, expected in [
        (("--gkd-beta", "2"), "--gkd-beta must be in [0, 1], got 2.0"),
        (("--gkd-lambda", "-0.5"), "--gkd-lambda must be in [0, 1], got -0.5"),
        (("--gkd-temperature", "0"), "--gkd-temperature must be > 0, got 0.0"),
        (("--task", "translation_kd", "--teacher-cache", cache),
         f"--teacher-cache {cache} cannot score the student's own outputs"),
    ]:
        proc = train(toy_bin, tmp_path / "save", "--criterion", "gkd", "--teacher-path",
                     teacher_ckpt, *extra, check=False, epochs=1, dim=16)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1].startswith(f"fairseq-seqkd: error: {expected}")
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "save" / "checkpoint_last.pt").exists()


def inner_losses(log: str) -> list[float]:
    """The per-update loss of ``--log-interval 1`` train_inner rows."""
    return [float(v) for v in re.findall(r"\| train_inner \| .*?\bloss=([^,]+),", log)]


def test_cli_lambda_zero_beta_zero_equals_word_kd_update_by_update(toy_bin, teacher_ckpt,
                                                                    tmp_path):
    common = ("--teacher-path", teacher_ckpt, "--kd-alpha", "1", "--label-smoothing", "0.1",
              "--max-update", "8")
    a = train(toy_bin, tmp_path / "gkd", "--criterion", "gkd", "--gkd-lambda", "0",
              "--gkd-beta", "0", *common, epochs=3, dim=16)
    b = train(toy_bin, tmp_path / "word_kd", "--criterion", "word_kd", *common, epochs=3, dim=16)
    losses = inner_losses(a.stdout + a.stderr)
    assert len(losses) == 8 and losses == inner_losses(b.stdout + b.stderr)
    sa, sb = (torch.load(p / "checkpoint_last.pt", map_location="cpu", weights_only=True)
              for p in (tmp_path / "gkd", tmp_path / "word_kd"))
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sb["model"])


def test_cli_on_policy_run_trains_and_logs_the_fraction(toy_bin, teacher_ckpt, tmp_path):
    save = tmp_path / "student"
    proc = train(toy_bin, save, "--criterion", "gkd", "--teacher-path", teacher_ckpt,
                 "--gkd-lambda", "0.5", "--gkd-beta", "0.1", "--kd-topk", "8", epochs=4, dim=16)
    log = proc.stdout + proc.stderr
    rows, valid = epoch_losses(log), epoch_losses(log, "valid")
    assert len(rows) == 4 and len(valid) == 4
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["kd_loss"]) for r in rows)
    # the logged fraction is the per-update draw from --seed 1 + the update number
    updates = [int(r["num_updates"]) for r in rows]
    draws = [update_is_on_policy(1 + u, 0.5) for u in range(updates[-1])]
    for row, first, last in zip(rows, [0, *updates], updates):
        assert row["on_policy"] == pytest.approx(sum(draws[first:last]) / (last - first),
                                                 abs=1e-3)
    assert 0.3 <= sum(draws) / len(draws) <= 0.7
    assert all(r["sample_len"] > 1 for r in rows if r["on_policy"] > 0)
    assert valid[-1]["loss"] < valid[0]["loss"]  # the student learns
    gen = run_cli("fairseq-generate", toy_bin, "--user-dir", PLUGIN, "--path",
                  save / "checkpoint_last.pt", "--beam", "2", "--cpu", "--batch-size", "16")
    assert len(re.findall(r"^H-\d+\t", gen.stdout, flags=re.M)) == 40


def ddp_train(toy_bin: Path, save: Path, port: int, *args: object):
    fairseq_train = shlex.join([
        cli("fairseq-train"), str(toy_bin), "--user-dir", PLUGIN,
        *map(str, (*model_args(16), *TRAIN_ARGS, *args)), "--max-epoch", "1",
        "--save-dir", str(save), "--distributed-backend", "gloo",
        "--distributed-init-method", "env://", "--distributed-world-size", "2",
        "--distributed-no-spawn", "--ddp-backend", "legacy_ddp",
    ])
    return run_cli("torchrun", "--nproc_per_node", "2", "--master_port", str(port),
                   "--no-python", "sh", "-c", f'exec {fairseq_train} --distributed-rank "$RANK"')


def test_distributed_two_gloo_ranks_each_decode_their_own_batch(toy_bin, teacher_ckpt,
                                                                tmp_path):
    """Greedy on-policy: 2 ranks x 1 batch == 1 process x update-freq 2; sampling: the
    draw is the same on both ranks (every update is wholly on- or off-policy)."""
    common = ("--criterion", "gkd", "--teacher-path", teacher_ckpt, "--max-tokens", "400",
              "--required-batch-size-multiple", "1")
    greedy = (*common, "--gkd-lambda", "1", "--gkd-sampling", "greedy", "--max-update", "1")
    train(toy_bin, tmp_path / "single", *greedy, "--update-freq", "2", epochs=1, dim=16)
    proc = ddp_train(toy_bin, tmp_path / "ddp", 29527, *greedy)
    assert "training on 2 devices" in proc.stderr + proc.stdout

    def meters(path: Path) -> list:
        state = torch.load(path / "checkpoint_last.pt", map_location="cpu", weights_only=True)
        return state["extra_state"]["metrics"]["train"]

    single, ddp = meters(tmp_path / "single"), meters(tmp_path / "ddp")
    for name in ("loss", "kd_loss", "on_policy", "sample_len"):
        assert meter_value(single, name) == pytest.approx(meter_value(ddp, name), abs=1e-5)
    assert meter_value(ddp, "on_policy") == 1.0
    proc = ddp_train(toy_bin, tmp_path / "ddp-sample", 29528, *common, "--gkd-lambda", "0.5",
                     "--max-update", "6")
    fractions = [float(v) for v in re.findall(r"\| train_inner \| .*?\bon_policy=([^,]+),",
                                              proc.stdout + proc.stderr)]
    assert fractions == [float(update_is_on_policy(1 + u, 0.5)) for u in range(6)]
