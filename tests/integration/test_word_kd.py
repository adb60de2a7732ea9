"""word_kd inside fairseq: same batch as stock criteria, teacher isolation, real CLIs."""

import math
import re
import shlex
from pathlib import Path

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from fairseq_seqkd.criterions.word_kd import WordKDCriterion
from fairseq_seqkd.divergences import divergence_full, tempered_log_probs
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


def setup(data: Path, *extra: str, dim: int = 16):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser,
        [str(data), "--user-dir", PLUGIN, "--task", "translation", *map(str, model_args(dim)),
         *map(str, TRAIN_ARGS), *extra],
    )
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    torch.manual_seed(0)
    model = task.build_model(cfg.model)
    ds = task.dataset("valid")
    sample = ds.collater([ds[i] for i in range(12)])
    return task, model, sample


def word_kd(task, teacher: Path, **kw) -> WordKDCriterion:
    return WordKDCriterion(task, sentence_avg=False, label_smoothing=kw.pop("eps", 0.1),
                           teacher_path=str(teacher), **kw)


def test_alpha_zero_is_label_smoothed_cross_entropy_to_the_last_digit(toy_bin, teacher_ckpt):
    task, model, sample = setup(toy_bin)
    model.train()
    stock = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)
    ours = word_kd(task, teacher_ckpt, kd_alpha=0.0)
    torch.manual_seed(1)
    loss_a, size_a, log_a = stock(model, sample)
    torch.manual_seed(1)
    loss_b, size_b, log_b = ours(model, sample)
    assert torch.equal(loss_a, loss_b) and size_a == size_b
    assert torch.equal(log_a["nll_loss"], log_b["nll_loss"])
    assert ours.teacher is None  # alpha 0 never loads nor runs a teacher


@pytest.mark.parametrize("topk", [0, 5])
def test_loss_is_the_documented_mixture(toy_bin, teacher_ckpt, topk):
    task, model, sample = setup(toy_bin)
    model.eval()
    t = 2.0
    crit = word_kd(task, teacher_ckpt, kd_alpha=0.3, kd_temperature=t, kd_topk=topk)
    loss, _, log = crit(model, sample)
    stock = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)
    gold, _, _ = stock(model, sample)
    # independent recomputation: teacher loaded with fairseq's own loader, float64 math
    [teacher], _ = checkpoint_utils.load_model_ensemble([str(teacher_ckpt)], task=task)
    teacher.eval()
    with torch.no_grad():
        t_logits = teacher(**sample["net_input"])[0].double()
        s_logits = model(**sample["net_input"])[0].double()
    lp_t = tempered_log_probs(t_logits, t)
    if topk:
        keep = lp_t.topk(topk, -1).indices
        mask = torch.full_like(lp_t, -math.inf).scatter(-1, keep, 0.0)
        lp_t = torch.log_softmax(lp_t + mask, -1)
    kd = divergence_full(tempered_log_probs(s_logits, t), lp_t, "kl")
    kd = kd.masked_fill(sample["target"].eq(task.target_dictionary.pad()), 0).sum() * t * t
    expected = 0.7 * gold.double() + 0.3 * kd
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert log["kd_loss"].item() == pytest.approx(kd.item(), rel=1e-5)


def test_teacher_is_frozen_and_outside_the_student(toy_bin, teacher_ckpt):
    task, model, sample = setup(toy_bin)
    crit = word_kd(task, teacher_ckpt, kd_alpha=0.5)
    crit.train()
    model.train()
    assert list(crit.parameters()) == []  # nothing for fairseq's optimizer to pick up
    assert crit.state_dict() == {}  # nothing saved into the student's checkpoint
    teacher = crit.teacher.models[0]
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    loss, _, _ = crit(model, sample)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training  # dropout stays off while the criterion trains
    # the teacher follows the student's dtype (--bf16 / --fp16) on first use
    model.to(torch.bfloat16)
    crit(model, sample)
    assert next(teacher.parameters()).dtype == torch.bfloat16


@pytest.fixture(scope="module")
def second_teacher(toy_bin, tmp_path_factory) -> Path:
    """Another teacher of the toy data (same dictionary): other size, seed and training."""
    save = tmp_path_factory.mktemp("teacher2")
    train(toy_bin, save, "--criterion", "label_smoothed_cross_entropy", "--label-smoothing",
          "0.1", "--no-epoch-checkpoints", "--seed", "2", epochs=3, dim=24)
    return save / "checkpoint_last.pt"


def test_ensemble_averages_member_probabilities(toy_bin, teacher_ckpt, second_teacher):
    """Two different teachers: the KD target is the mean of their probabilities (float64)."""
    task, model, sample = setup(toy_bin)
    model.eval()
    t = 2.0
    ensemble = word_kd(task, f"{teacher_ckpt}:{second_teacher}", kd_alpha=1.0,
                       kd_temperature=t)
    assert len(ensemble.teacher.models) == 2
    loss = ensemble(model, sample)[0]
    members = []
    for path in (teacher_ckpt, second_teacher):
        [teacher], _ = checkpoint_utils.load_model_ensemble([str(path)], task=task)
        teacher.eval()
        with torch.no_grad():
            members.append(tempered_log_probs(teacher(**sample["net_input"])[0].double(), t))
    with torch.no_grad():
        student = tempered_log_probs(model(**sample["net_input"])[0].double(), t)
    pad = sample["target"].eq(task.target_dictionary.pad())

    def kd_to(target_lprobs):
        return divergence_full(student, target_lprobs, "kl").masked_fill(pad, 0).sum() * t * t

    mean_probs = torch.logsumexp(torch.stack(members), 0) - math.log(2)
    expected = kd_to(mean_probs)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the reference tells the rules apart: neither member alone, nor the mean of log-probs
    for wrong in (*members, torch.log_softmax(torch.stack(members).mean(0), -1)):
        assert abs(kd_to(wrong).item() - expected.item()) > 1e-3 * expected.item()


def test_option_errors(toy_bin, teacher_ckpt, tmp_path):
    task, _, _ = setup(toy_bin)
    vocab = len(task.target_dictionary)
    cases = [
        (dict(kd_alpha=1.5), r"--kd-alpha must be in \[0, 1\], got 1.5"),
        (dict(kd_temperature=0.0), r"--kd-temperature must be > 0"),
        (dict(kd_topk=-1), r"--kd-topk must be 0 .* got -1"),
        (dict(kd_topk=vocab + 1), rf"\[1, {vocab}\]"),
        (dict(kd_divergence="hellinger"), r"--kd-divergence must be one of kl, reverse_kl"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SeqKDError, match=message):
            word_kd(task, teacher_ckpt, **kwargs)
    with pytest.raises(SeqKDError, match=r"--teacher-path: .*nope.pt does not exist"):
        word_kd(task, tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(SeqKDError, match=r"junk.pt is not a fairseq checkpoint"):
        word_kd(task, junk)


@pytest.fixture(scope="module")
def train_only_cache(toy_bin, teacher_ckpt, tmp_path_factory) -> Path:
    """A teacher cache of the train split only: the valid split has none."""
    cache = tmp_path_factory.mktemp("cache")
    run_cli("seqkd-cache-teacher", toy_bin, "--user-dir", PLUGIN, "--path", teacher_ckpt,
            "--gen-subset", "train", "--cpu", "--max-tokens", "1000", "--kd-topk", "8",
            "--no-progress-bar", "--output", cache)
    return cache


def test_teacher_cache_without_a_valid_cache_is_refused(toy_bin, train_only_cache, tmp_path):
    """Validation would be the gold loss alone, and checkpoint_best chosen on it."""
    proc = train(toy_bin, tmp_path / "save", "--task", "translation_kd", "--teacher-cache",
                 train_only_cache, "--criterion", "word_kd", "--kd-topk", "8",
                 "--label-smoothing", "0.1", check=False, epochs=1, dim=16)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        f"fairseq-seqkd: error: --teacher-cache {train_only_cache} has no cache for the valid "
        f"split: its loss would be the gold loss alone, not the training loss, and "
        f"checkpoint_best would be chosen on it; run seqkd-cache-teacher DATA --path TEACHER "
        f"--gen-subset valid --kd-topk K --output {train_only_cache}, or pass "
        f"--disable-validation"
    )
    assert not (tmp_path / "save" / "checkpoint_last.pt").exists()
    # the same through the API; and a batch without cached entries is never scored on gold
    _, model, plain_sample = setup(toy_bin)
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(
        options.get_training_parser(),
        [str(toy_bin), "--user-dir", PLUGIN, "--task", "translation_kd", "--teacher-cache",
         str(train_only_cache), *map(str, model_args(16)), *map(str, TRAIN_ARGS)]))
    task = tasks.setup_task(cfg.task)
    with pytest.raises(SeqKDError, match="has no cache for the valid split"):
        task.load_dataset("valid")
    crit = WordKDCriterion(task, sentence_avg=False, label_smoothing=0.1, kd_topk=8)
    model.eval()
    with pytest.raises(SeqKDError, match="a validation batch without cached teacher entries"):
        crit(model, plain_sample)


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory) -> tuple[Path, Path]:
    """A teacher whose dictionary differs from the toy data's (other words)."""
    root = tmp_path_factory.mktemp("other")
    write_toy_corpus(root / "raw", seed=5, sizes={"train": 200, "valid": 20, "test": 20},
                     prefix="v")
    data = preprocess(root / "raw", root / "bin")
    train(data, root / "ckpt", "--criterion", "label_smoothed_cross_entropy", epochs=1, dim=16)
    return root / "ckpt" / "checkpoint_last.pt", data


def test_dictionary_mismatch_names_sizes_and_first_symbol(toy_bin, teacher_ckpt, other_teacher):
    task, _, _ = setup(toy_bin)
    other, _ = other_teacher
    with pytest.raises(SeqKDError) as err:
        word_kd(task, other)
    message = str(err.value)
    assert re.search(r"source dictionaries differ: teacher .* has \d+ symbols, "
                     r"the student's data has \d+; first difference at index 4", message)
    with pytest.raises(SeqKDError, match="ensemble member source dictionaries differ"):
        word_kd(task, f"{teacher_ckpt}:{other}")


def test_cli_errors_are_one_line_before_training(toy_bin, other_teacher, tmp_path):
    other, _ = other_teacher
    for teacher, expected in [
        (tmp_path / "missing.pt", "does not exist"),
        (other, "source dictionaries differ"),
    ]:
        proc = train(toy_bin, tmp_path / "save", "--criterion", "word_kd", "--teacher-path",
                     teacher, check=False, epochs=1)
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("fairseq-seqkd: error: --teacher-path") or expected in last
        assert expected in last and "Traceback" not in proc.stderr
        assert not (tmp_path / "save" / "checkpoint_last.pt").exists()


def test_selective_distillation_restricts_the_kd_term(toy_bin, teacher_ckpt):
    task, model, sample = setup(toy_bin)
    model.train()
    full = word_kd(task, teacher_ckpt, kd_alpha=1.0)
    everything = word_kd(task, teacher_ckpt, kd_alpha=1.0, kd_selection="batch",
                         kd_selection_rate=1.0)
    half = word_kd(task, teacher_ckpt, kd_alpha=1.0, kd_selection="global",
                   kd_selection_rate=0.5)
    torch.manual_seed(0)
    kd_full = full(model, sample)[2]["kd_loss"]
    torch.manual_seed(0)
    assert torch.equal(everything(model, sample)[2]["kd_loss"], kd_full)
    torch.manual_seed(0)
    kd_half = half(model, sample)[2]["kd_loss"]
    assert 0 < kd_half < kd_full
    assert half.queue.values.numel() == int(sample["target"].ne(1).sum())
    model.eval()  # validation scores every token and leaves the queue alone
    assert torch.equal(half(model, sample)[2]["kd_loss"], full(model, sample)[2]["kd_loss"])
    with pytest.raises(SeqKDError, match="--kd-selection-rate"):
        word_kd(task, teacher_ckpt, kd_selection="batch", kd_selection_rate=0.0)


@pytest.mark.parametrize("extra", [
    (),
    ("--kd-topk", "8", "--kd-divergence", "js", "--kd-selection", "global",
     "--kd-selection-queue-size", "500"),
])
def test_cli_student_trains_saves_no_teacher_and_generates(toy_bin, teacher_ckpt, tmp_path,
                                                           extra):
    save = tmp_path / "student"
    proc = train(toy_bin, save, "--criterion", "word_kd", "--teacher-path", teacher_ckpt,
                 "--label-smoothing", "0.1", *extra, epochs=4, dim=16)
    log = proc.stdout + proc.stderr
    train_rows, valid_rows = epoch_losses(log), epoch_losses(log, "valid")
    assert len(train_rows) == 4 and len(valid_rows) == 4
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]  # the student learns
    assert "kd_loss" in train_rows[0] and "kd_loss" in valid_rows[0]
    state = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    teacher = torch.load(teacher_ckpt, map_location="cpu", weights_only=True)
    student_shapes = {tuple(v.shape) for v in state["model"].values()}
    assert state["criterion"] in (None, {}) or not state["criterion"]
    assert state["model"]["encoder.embed_tokens.weight"].shape[1] == 16
    assert not {tuple(v.shape) for v in teacher["model"].values() if v.dim() == 2} & \
        {s for s in student_shapes if len(s) == 2 and 48 in s}
    opt_state = state["last_optimizer_state"]["state"]
    n_student = sum(p.numel() for p in setup(toy_bin, dim=16)[1].parameters())
    assert sum(s["exp_avg"].numel() for s in opt_state.values()) == n_student
    gen = run_cli("fairseq-generate", toy_bin, "--user-dir", PLUGIN, "--path",
                  save / "checkpoint_last.pt", "--beam", "2", "--cpu", "--batch-size", "16")
    assert len(re.findall(r"^H-\d+\t", gen.stdout, flags=re.M)) == 40


def test_distributed_two_gloo_ranks_match_single_process(toy_bin, teacher_ckpt, tmp_path):
    """2 ranks x 1 batch == 1 process x update-freq 2: same loss, to 1e-5."""
    common = ("--criterion", "word_kd", "--teacher-path", teacher_ckpt, "--max-update", "1",
              "--max-tokens", "400", "--required-batch-size-multiple", "1")
    train(toy_bin, tmp_path / "single", *common, "--update-freq", "2", epochs=1, dim=16)
    # fairseq's torchrun detection divides by the CUDA device count (0 on CPU), so each
    # rank passes its rank explicitly, and torch DDP refuses device_ids for CPU modules, so
    # fairseq's own legacy_ddp all-reduce is used: fairseq's own flags, no patch
    fairseq_train = shlex.join([
        cli("fairseq-train"), str(toy_bin), "--user-dir", PLUGIN,
        *map(str, (*model_args(16), *TRAIN_ARGS, *common)), "--max-epoch", "1",
        "--save-dir", str(tmp_path / "ddp"), "--distributed-backend", "gloo",
        "--distributed-init-method", "env://", "--distributed-world-size", "2",
        "--distributed-no-spawn", "--ddp-backend", "legacy_ddp",
    ])
    proc = run_cli("torchrun", "--nproc_per_node", "2", "--master_port", "29517", "--no-python",
                   "sh", "-c", f'exec {fairseq_train} --distributed-rank "$RANK"')
    assert "initialized host" in proc.stderr + proc.stdout
    assert "training on 2 devices" in proc.stderr + proc.stdout

    def train_loss(path: Path) -> tuple[list, int]:
        state = torch.load(path / "checkpoint_last.pt", map_location="cpu", weights_only=True)
        updates = state["optimizer_history"][-1]["num_updates"]
        return state["extra_state"]["metrics"]["train"], updates

    (single, n1), (ddp, n2) = train_loss(tmp_path / "single"), train_loss(tmp_path / "ddp")
    assert n1 == n2 == 1
    for name in ("loss", "nll_loss", "kd_loss"):
        a, b = meter_value(single, name), meter_value(ddp, name)
        assert a == pytest.approx(b, abs=1e-5), name


def meter_value(meters, name: str) -> float:
    """The raw (unrounded) average of a meter in a checkpoint's saved metrics."""
    for _priority, meter_name, _kind, state in meters:
        if meter_name == name:
            return float(state["sum"]) / float(state["count"])
    raise KeyError(name)
