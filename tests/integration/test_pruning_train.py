"""Pruning during retraining: exact sparsity through real fairseq-train runs and resumes.

Runs of task ``translation_kd`` on the toy corpus (dim 16, 1 layer): one-shot pruning kept
exact through Adam steps and a kill/resume, the gradual schedule resumed mid-interval against
an uninterrupted run, fp16 (FP16Optimizer master copies), ``seqkd-prune`` offline and the
retraining of its output, and every bad option as one error before the first update.
"""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.optim.fp16_optimizer import FP16Optimizer

from fairseq_seqkd.checkpoints import parameter_counts
from fairseq_seqkd.cli import prune as prune_cli
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.pruning import compute_masks, cubic_sparsity, prunable_tensors
from fairseq_seqkd.pruning_hook import PruningHook, PruningSchedule

from ..conftest import PLUGIN, TRAIN_ARGS, model_args, run_cli, train

slow = pytest.mark.slow
KD = ("--task", "translation_kd")


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def prunable(state: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's prunable tensors (tied ones once), as the hook selects them."""
    return prunable_tensors(state["model"].items(), None, by_value=True)[0]


def zeros(state: dict) -> dict[str, torch.Tensor]:
    return {n: t == 0 for n, t in prunable(state).items()}


def n_zeros(pattern: dict[str, torch.Tensor]) -> int:
    return sum(int(z.sum()) for z in pattern.values())


def same_pattern(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def updates(state: dict) -> int:
    return state["optimizer_history"][-1]["num_updates"]


def log_of(proc) -> str:
    return proc.stdout + proc.stderr


def train_sparsity(log: str) -> list[float]:
    return [float(v) for v in re.findall(r"\| train \| epoch .*\| sparsity ([\d.]+)", log)]


def setup(data: Path, *extra: str, dim: int = 16):
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        [str(data), "--user-dir", PLUGIN, *KD, *map(str, model_args(dim)),
         *map(str, TRAIN_ARGS), *extra],
    )
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(0)
    return cfg, task, task.build_model(cfg.model)


# --------------------------------------------------------------------------- schedule


def test_schedule_steps_and_targets():
    s = PruningSchedule(0.9, "class-blind", at_update=5, end_update=30, interval=10)
    assert [t for t in range(40) if s.is_mask_step(t)] == [5, 15, 25, 30]
    assert [s.last_mask_step(t) for t in (4, 5, 14, 15, 29, 30, 99)] == [None, 5, 5, 15, 25, 30, 30]
    assert s.target(4) == 0.0 and s.target(5) == 0.0  # cubic schedule starts at 0
    assert s.target(20) == pytest.approx(cubic_sparsity(15, 0.9, 5, 30))
    assert s.target(30) == s.target(1000) == 0.9
    one_shot = PruningSchedule(0.8, "class-uniform", at_update=7, end_update=7)
    assert [t for t in range(20) if one_shot.is_mask_step(t)] == [7]
    assert one_shot.target(6) == 0.0 and one_shot.target(7) == one_shot.target(50) == 0.8


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--prune-ratio", "1.0"), r"--prune-ratio must be in \[0, 1\), got 1.0"),
        (("--prune-ratio", "-0.1"), r"--prune-ratio must be in \[0, 1\), got -0.1"),
        (("--prune-ratio", "0.5", "--prune-at-update", "20", "--prune-end-update", "10"),
         r"--prune-end-update \(10\) must be >= --prune-at-update \(20\)"),
        (("--prune-ratio", "0.5", "--prune-schedule", "gradual"),
         r"gradual needs --prune-end-update > --prune-at-update \(0\), got 0"),
        (("--prune-ratio", "0.5", "--prune-schedule", "gradual", "--prune-end-update", "9",
          "--prune-interval", "0"), r"--prune-interval must be >= 1, got 0"),
    ],
)
def test_bad_options_fail_at_task_setup(toy_bin, extra, message):
    with pytest.raises(SeqKDError, match=message):
        setup(toy_bin, *extra)


def test_unknown_scheme_and_unmatched_regex_are_one_error(toy_bin):
    _cfg, _task, model = setup(toy_bin, "--prune-ratio", "0.5")
    cfg = SimpleNamespace(prune_ratio=0.5, prune_scheme="class-random", prune_params=".*",
                          prune_at_update=0, prune_schedule="one-shot", prune_end_update=0,
                          prune_interval=100)
    with pytest.raises(SeqKDError, match=r"--prune-scheme must be one of class-blind"):
        PruningHook.from_config(cfg)
    hook = PruningHook(PruningSchedule(0.5, "class-blind"), r"^nothing\.matches$")
    with pytest.raises(SeqKDError, match=r"--prune-params '\^nothing.*' matches no parameter; "
                                         r"names look like: encoder\."):
        hook.attach(model)
    # biases and layer norms are never candidates, whatever the regex says
    with pytest.raises(SeqKDError, match="matches no parameter"):
        PruningHook(PruningSchedule(0.5, "class-blind"), r"bias|layer_norm").attach(model)


def test_no_pruning_without_ratio(toy_bin):
    _cfg, task, _model = setup(toy_bin)
    assert task.pruning is None


@slow
def test_cli_unmatched_regex_stops_before_the_first_update(toy_bin, tmp_path):
    proc = train(toy_bin, tmp_path / "save", *KD, "--prune-ratio", "0.5", "--prune-params",
                 "no_such_weight", check=False, epochs=1, dim=16)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fairseq-seqkd: error: --prune-params 'no_such_weight' matches no")
    assert "num_updates" not in proc.stdout + proc.stderr
    assert not list((tmp_path / "save").glob("*.pt"))  # not even fairseq's crash.pt


@slow
def test_cli_store_ema_is_refused_before_the_first_update(toy_bin, tmp_path):
    """fairseq's EMA weights are not masked: the combination is refused in one line."""
    proc = train(toy_bin, tmp_path / "save", *KD, "--prune-ratio", "0.5", "--store-ema",
                 check=False, epochs=1, dim=16)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "fairseq-seqkd: error: --store-ema cannot be combined with --prune-ratio: fairseq's "
        "EMA copy of the weights would not be pruned (its pruned weights only decay); train "
        "without --store-ema"
    )
    assert "num_updates" not in proc.stdout + proc.stderr
    assert not list((tmp_path / "save").glob("checkpoint*.pt"))


# --------------------------------------------------------------------------- tied weights


def test_tied_embeddings_are_pruned_once(toy_bin):
    _cfg, _task, model = setup(toy_bin, "--prune-ratio", "0.5")
    weights, aliases = prunable_tensors(model.named_parameters(remove_duplicate=False), None)
    assert aliases["encoder.embed_tokens.weight"] == [
        "encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
        "decoder.output_projection.weight",
    ]
    assert not any("bias" in n or "norm" in n for n in weights)
    assert len({id(w) for w in weights.values()}) == len(weights)
    # a regex naming only the decoder's alias still selects the shared tensor, once
    only, _ = prunable_tensors(model.named_parameters(remove_duplicate=False), "output_proj")
    assert list(only) == ["encoder.embed_tokens.weight"]
    # copies saved from GPU (separate storage) are grouped by value, fully pruned ones never
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["encoder.layers.0.fc2.weight"].zero_()
    state["decoder.layers.0.fc2.weight"].zero_()
    by_value, copies = prunable_tensors(state.items(), None, by_value=True)
    assert by_value.keys() == weights.keys() and copies == aliases


# --------------------------------------------------------------------------- fp16 masters


def _fake_step(model, opt):
    opt.zero_grad()
    opt.backward(sum((p.float() * torch.randn(p.shape)).sum() for p in model.parameters()))
    opt.step()


@pytest.mark.parametrize("flat", [False, True])
def test_fp16_optimizer_master_copies_stay_pruned(toy_bin, flat):
    cfg, _task, model = setup(toy_bin, "--prune-ratio", "0.6", "--fp16",
                              "--fp16-no-flatten-grads")
    model = model.half()
    params = [p for p in model.parameters() if p.requires_grad]
    if flat:  # fairseq's flat layout (CUDA builds it keyed by device index; None on CPU)
        from fairseq import optim

        buf = torch.cat([p.data.float().view(-1) for p in params])
        flat32 = torch.nn.Parameter(buf)
        flat32.grad = torch.zeros_like(buf)
        opt = FP16Optimizer(cfg, params, optim.build_optimizer(cfg.optimizer, [flat32]),
                            {None: flat32})
    else:
        opt = FP16Optimizer.build_optimizer(cfg, params)
        assert isinstance(opt.fp32_params, list)
    hook = PruningHook.from_config(cfg.task)
    hook.attach(model)
    hook.before_train_step(model, 0, opt)
    for t in range(3):
        _fake_step(model, opt)
        hook.after_optimizer_step(model, t, opt)
    names = {id(p): n for n, p in model.named_parameters()}
    if flat:
        offset, masters = 0, {}
        for p in params:
            masters[names[id(p)]] = flat32.data[offset : offset + p.numel()].view(p.shape)
            offset += p.numel()
    else:
        masters = {names[id(p)]: p32.data for p, p32 in zip(params, opt.fp32_params)}
    pruned = 0
    for name, mask in hook.masks.items():
        assert (model.get_parameter(name)[~mask] == 0).all(), name
        assert (masters[name][~mask] == 0).all(), name  # the fp32 copy too
        assert torch.equal(masters[name].half(), model.get_parameter(name).data), name
        pruned += int((~mask).sum())
    n = sum(m.numel() for m in hook.masks.values())
    assert pruned == round(0.6 * n)
    # without the hook Adam moves pruned weights: the test above can fail
    _fake_step(model, opt)
    assert any((model.get_parameter(n)[~m] != 0).any() for n, m in hook.masks.items())


# --------------------------------------------------------------------------- real training


@pytest.fixture(scope="module")
def one_shot(toy_bin, tmp_path_factory):
    """class-blind 80 % at update 10; killed at 25 (--max-update), resumed to 50."""
    save = tmp_path_factory.mktemp("one_shot")
    common = (*KD, "--prune-ratio", "0.8", "--prune-at-update", "10")
    first = train(toy_bin, save, *common, "--max-update", "25", epochs=100, dim=16)
    at_25 = load(save / "checkpoint_last.pt")
    second = train(toy_bin, save, *common, "--max-update", "50", epochs=100, dim=16)
    return save, at_25, log_of(first), log_of(second)


@slow
def test_one_shot_sparsity_is_exact_through_adam_and_resume(one_shot, toy_bin):
    save, at_25, log1, log2 = one_shot
    at_50 = load(save / "checkpoint_last.pt")
    assert updates(at_25) == 25 and updates(at_50) == 50
    n = sum(t.numel() for t in prunable(at_50).values())
    z25, z50 = zeros(at_25), zeros(at_50)
    assert n_zeros(z25) == n_zeros(z50) == round(0.8 * n)
    assert same_pattern(z25, z50)  # the mask survived the restart and 25 more Adam steps
    # before --prune-at-update nothing is pruned (epoch 2 ends at update 8)
    assert n_zeros(zeros(load(save / "checkpoint2.pt"))) < 0.01 * n
    assert "pruning at update 10: target sparsity 0.8000" in log1
    assert "masks rebuilt at update 25 match the zero pattern" in log2
    sparsity = train_sparsity(log1)
    assert sparsity[0] == 0.0 and sparsity[-1] == pytest.approx(0.8, abs=1e-4)
    assert train_sparsity(log2)[-1] == pytest.approx(0.8, abs=1e-4)
    # the masks are not in the state dict: a stock model's keys, loadable strictly
    _cfg, _task, model = setup(toy_bin)
    assert list(at_50["model"]) == list(model.state_dict())
    model.load_state_dict(at_50["model"], strict=True)


@pytest.fixture(scope="module")
def gradual(toy_bin, tmp_path_factory):
    """class-distribution, 0 -> 90 % from update 0 to 30 every 10; killed at 15, resumed."""
    common = (*KD, "--prune-ratio", "0.9", "--prune-scheme", "class-distribution",
              "--prune-schedule", "gradual", "--prune-end-update", "30", "--prune-interval",
              "10", "--save-interval-updates", "10")
    save = tmp_path_factory.mktemp("gradual")
    train(toy_bin, save, *common, "--max-update", "15", epochs=100, dim=16)
    at_15 = load(save / "checkpoint_last.pt")
    log = log_of(train(toy_bin, save, *common, "--max-update", "40", epochs=100, dim=16))
    return save, at_15, log


def _at(save: Path, update: int) -> dict:
    """The checkpoint saved at ``update`` (an epoch or a --save-interval-updates one)."""
    found = [s for s in map(load, save.glob("checkpoint[0-9_]*.pt")) if updates(s) == update]
    assert found, update
    return found[0]


@slow
def test_gradual_schedule_reaches_its_target_through_a_resume(gradual):
    save, at_15, log = gradual
    n = sum(t.numel() for t in prunable(at_15).values())
    expected = {t: round(cubic_sparsity(t, 0.9, 0, 30) * n) for t in (10, 20, 30)}
    assert 0 < expected[10] < expected[20] < expected[30] == round(0.9 * n)
    assert n_zeros(zeros(at_15)) == expected[10]  # mid-interval: the masks of update 10
    assert "masks rebuilt at update 15 match the zero pattern" in log
    assert "pruning at update 30: target sparsity 0.9000" in log
    previous = zeros(at_15)
    for t in (20, 30, 40):
        pattern = zeros(_at(save, t))
        assert n_zeros(pattern) == expected[min(t, 30)], t  # the target at the end update
        assert all((previous[k] <= pattern[k]).all() for k in pattern)  # pruned stay pruned
        previous = pattern
    assert train_sparsity(log)[-1] == pytest.approx(0.9, abs=1e-4)


def _perturb(model):
    """Stand-in for an optimizer step: every weight moves, pruned ones too."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)


@pytest.mark.parametrize("extra", [
    ("--prune-scheme", "class-distribution", "--prune-schedule", "gradual",
     "--prune-at-update", "2", "--prune-end-update", "30", "--prune-interval", "5"),
    ("--prune-scheme", "class-uniform", "--prune-at-update", "3"),
])
def test_masks_rebuilt_on_resume_are_identical(toy_bin, extra):
    """A new hook on restored weights (what fairseq resume gives) finds the same masks."""
    cfg, _task, model = setup(toy_bin, "--prune-ratio", "0.8", *extra)
    hook = PruningHook.from_config(cfg.task)
    hook.before_train_step(model, 0)
    torch.manual_seed(3)
    for t in range(17):
        _perturb(model)
        hook.after_optimizer_step(model, t)
    restored = setup(toy_bin, "--prune-ratio", "0.8", *extra)[2]
    restored.load_state_dict(model.state_dict())
    fresh = PruningHook.from_config(cfg.task)
    fresh.before_train_step(restored, 17)
    assert hook.masks.keys() == fresh.masks.keys()
    assert all(torch.equal(hook.masks[k], fresh.masks[k]) for k in hook.masks)
    assert fresh.sparsity == hook.sparsity > 0


@slow
def test_fp16_training_keeps_exact_sparsity(toy_bin, tmp_path):
    save = tmp_path / "fp16"
    train(toy_bin, save, *KD, "--prune-ratio", "0.7", "--prune-scheme", "class-uniform",
          "--fp16", "--fp16-no-flatten-grads", "--max-update", "30", "--no-epoch-checkpoints",
          epochs=100, dim=16)
    state = load(save / "checkpoint_last.pt")
    assert updates(state) == 30
    assert state["cfg"]["common"]["fp16"]
    for name, tensor in prunable(state).items():
        assert n_zeros({name: tensor == 0}) == round(0.7 * tensor.numel()), name


# --------------------------------------------------------------------------- seqkd-prune


@slow
@pytest.mark.parametrize("scheme", ["class-blind", "class-uniform", "class-distribution"])
def test_seqkd_prune_offline_matches_the_hook(one_shot, toy_bin, tmp_path, capsys, scheme):
    save = one_shot[0]
    student = save / "checkpoint2.pt"  # 8 updates, before --prune-at-update 10
    out = tmp_path / "pruned.pt"
    assert prune_cli.main(["--input", str(student), "--output", str(out), "--prune-ratio",
                           "0.7", "--prune-scheme", scheme]) == 0
    report = capsys.readouterr().out
    state, original = load(out), load(student)
    pruned = prunable(state)
    n = sum(t.numel() for t in pruned.values())
    if scheme == "class-uniform":
        for name, t in pruned.items():
            assert int((t == 0).sum()) == round(0.7 * t.numel()), name
    else:
        assert n_zeros(zeros(state)) == round(0.7 * n)
    # the tied embedding is one tensor in the file, pruned once
    m = state["model"]
    assert torch.equal(m["encoder.embed_tokens.weight"], m["decoder.output_projection.weight"])
    # same masks as the training hook computes on the model
    _cfg, _task, model = setup(toy_bin)
    model.load_state_dict(original["model"])
    weights, _ = prunable_tensors(model.named_parameters(remove_duplicate=False), None)
    masks = compute_masks(weights, 0.7, scheme)
    assert all(torch.equal(~masks[k], pruned[k] == 0) for k in masks)
    # only the model changed
    assert state["last_optimizer_state"].keys() == original["last_optimizer_state"].keys()
    assert updates(state) == updates(original)
    k = n_zeros(zeros(state))
    total, nonzero = parameter_counts(original["model"])
    after = parameter_counts(state["model"])
    assert after[0] == total and after[1] <= total - k < nonzero
    assert f"before: {total:,} parameters, {nonzero:,} non-zero" in report
    assert f"after:  {total:,} parameters, {after[1]:,} non-zero" in report
    assert re.search(rf"TOTAL +- +{n - k}/{n} +{100 * k / n:.2f}%", report)


@slow
def test_seqkd_prune_bad_input(tmp_path, capsys, one_shot):
    student = one_shot[0] / "checkpoint2.pt"
    before = student.read_bytes()
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint\n")
    cases = [
        (["--input", str(student), "--output", str(student), "--prune-ratio", "0.5"],
         "is the input checkpoint"),
        (["--input", str(junk), "--output", str(tmp_path / "o.pt"), "--prune-ratio", "0.5"],
         "--input: .*junk.pt is not a fairseq checkpoint"),
        (["--input", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "o.pt"),
          "--prune-ratio", "0.5"], "missing.pt does not exist"),
        (["--input", str(student), "--output", str(tmp_path / "o.pt"), "--prune-ratio", "1"],
         r"--prune-ratio must be in \[0, 1\)"),
        (["--input", str(student), "--output", str(tmp_path / "o.pt"), "--prune-ratio", "0.5",
          "--prune-params", "zzz"], "--prune-params 'zzz' matches no parameter"),
        (["--input", str(student), "--output", str(tmp_path / "no" / "o.pt"),
          "--prune-ratio", "0.5"], "directory .* does not exist"),
    ]
    for argv, message in cases:
        assert prune_cli.main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert re.search(message, err[-1]) and err[-1].startswith("seqkd-prune: error: "), err
    assert student.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt"]  # nothing half-written


@slow
def test_retraining_an_offline_pruned_checkpoint_keeps_its_masks(one_shot, toy_bin, tmp_path):
    student = one_shot[0] / "checkpoint2.pt"
    pruned = tmp_path / "p.pt"
    run_cli("seqkd-prune", "--input", student, "--output", pruned, "--prune-ratio", "0.7",
            "--prune-scheme", "class-uniform")
    save = tmp_path / "retrain"
    proc = train(toy_bin, save, *KD, "--prune-ratio", "0.7", "--prune-scheme",
                 "class-uniform", "--restore-file", pruned, "--reset-optimizer",
                 "--reset-dataloader", "--reset-meters", "--reset-lr-scheduler",
                 "--max-update", "20", "--no-epoch-checkpoints", epochs=100, dim=16)
    assert "masks rebuilt at update 0 match the zero pattern" in log_of(proc)
    after = load(save / "checkpoint_last.pt")
    assert updates(after) == 20
    assert same_pattern(zeros(load(pruned)), zeros(after))


def test_a_retried_update_is_masked_again(toy_bin):
    """AMP retries a batch with the same update number: the mask step must not be skipped."""
    cfg, _task, model = setup(toy_bin, "--prune-ratio", "0.5", "--prune-at-update", "4")
    hook = PruningHook.from_config(cfg.task)
    hook.before_train_step(model, 0)
    assert hook.masks is None  # nothing before --prune-at-update
    for t in range(4):
        _perturb(model)
        hook.after_optimizer_step(model, t)
    masks = {k: m.clone() for k, m in hook.masks.items()}
    _perturb(model)
    hook.after_optimizer_step(model, 3)  # the retry: same update number
    assert all(torch.equal(masks[k], hook.masks[k]) for k in masks)
    assert all((hook.weights[k][~m] == 0).all() for k, m in masks.items())
