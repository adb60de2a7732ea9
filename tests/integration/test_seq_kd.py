"""Sequence-level KD end to end: seqkd-build, stock fairseq-train on its output, interpolation."""

import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch
from fairseq import options, tasks
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.data import Dictionary, data_utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from fairseq_seqkd.cli import build
from fairseq_seqkd.criterions.seq_kd_interpolation import SeqKDInterpolationCriterion
from fairseq_seqkd.distill.binarize import binarize_lines, token_lines, write_subset
from fairseq_seqkd.distill.nbest import read_nbest
from fairseq_seqkd.errors import SeqKDError

from ..conftest import (
    PLUGIN,
    TRAIN_ARGS,
    epoch_losses,
    model_args,
    preprocess,
    run_cli,
    write_toy_corpus,
)

pytestmark = pytest.mark.slow

PAIR = "train.src-tgt."
BUILD = ("--beam", "3", "--nbest", "3", "--cpu", "--batch-size", "200")


def load(prefix: Path, dictionary: Dictionary):
    return data_utils.load_indexed_dataset(str(prefix), dictionary)


def lines(directory: Path, lang: str) -> list[str]:
    d = Dictionary.load(str(directory / f"dict.{lang}.txt"))
    return token_lines(load(directory / f"{PAIR}{lang}", d), d)


def stages(stdout: str) -> dict[str, str]:
    """{'generate': 'skipped' | 'running', ...} from seqkd-build's log."""
    return dict(re.findall(r"\[\d/3\] (\w+): (skipped|running)", stdout))


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inter_dir(toy_bin, teacher_ckpt, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("seqkd") / "inter"
    proc = run_cli("seqkd-build", "--data", toy_bin, "--teacher", teacher_ckpt, "--output", out,
                   "--strategy", "seq-inter", "--sim", "bleu", *BUILD)
    return out, proc.stdout


@pytest.fixture(scope="module")
def kd_dir(inter_dir, toy_bin, teacher_ckpt) -> tuple[Path, str]:
    """Seq-KD data from a copy of the seq-inter build: the n-best is reused, not decoded again."""
    out = inter_dir[0].parent / "kd"
    shutil.copytree(inter_dir[0], out)
    proc = run_cli("seqkd-build", "--data", toy_bin, "--teacher", teacher_ckpt, "--output", out,
                   "--strategy", "seq-kd", *BUILD)
    return out, proc.stdout


# ---------------------------------------------------------------------------- seqkd-build


def test_build_writes_a_data_bin_aligned_with_the_gold_split(toy_bin, inter_dir, kd_dir):
    (inter, log_i), (kd, log_k) = inter_dir, kd_dir
    assert stages(log_i) == {"generate": "running", "select": "running", "binarize": "running"}
    # switching strategy reuses the n-best and redoes what depends on the strategy
    assert stages(log_k) == {"generate": "skipped", "select": "running", "binarize": "running"}
    assert "options changed (strategy: seq-inter -> seq-kd)" in log_k
    nbest = read_nbest(kd / "seqkd" / "generate" / "train.nbest")
    assert len(nbest) == 600 and all(len(h) == 3 for h in nbest.values())
    gold_src, gold_tgt = lines(toy_bin, "src"), lines(toy_bin, "tgt")
    for out in (inter, kd):
        # dictionaries and the other splits are copies; the source side is the gold one
        for name in ("dict.src.txt", "dict.tgt.txt", "valid.src-tgt.tgt.bin",
                     "test.src-tgt.src.idx"):
            assert (out / name).read_bytes() == (toy_bin / name).read_bytes()
        for ext in ("bin", "idx"):
            assert (out / f"{PAIR}src.{ext}").read_bytes() == \
                (toy_bin / f"{PAIR}src.{ext}").read_bytes()
        assert not (out / "train.kept-indices").exists()
    kd_targets, inter_targets = lines(kd, "tgt"), lines(inter, "tgt")
    assert len(kd_targets) == len(inter_targets) == len(gold_src) == 600
    assert kd_targets == [nbest[i][0].tokens for i in range(600)]  # the teacher's best
    assert all(t in [h.tokens for h in nbest[i]] for i, t in enumerate(inter_targets))
    assert kd_targets != gold_tgt
    report_k = json.loads((kd / "seqkd" / "select" / "report.json").read_text())
    report_i = json.loads((inter / "seqkd" / "select" / "report.json").read_text())
    assert report_k["mean_selected_rank"] == 0 and report_i["mean_selected_rank"] > 0
    # seq-inter picks the hypothesis closest to the reference, never a worse one than rank 0
    assert report_i["mean_similarity"] > report_k["mean_similarity"]
    assert '"mean_similarity"' in log_k  # the selection report is printed


def test_rerun_skips_every_stage_and_touches_nothing(kd_dir, toy_bin, teacher_ckpt):
    kd, _ = kd_dir
    before = snapshot(kd)
    proc = run_cli("seqkd-build", "--data", toy_bin, "--teacher", teacher_ckpt, "--output", kd,
                   "--strategy", "seq-kd", *BUILD)
    assert stages(proc.stdout) == {s: "skipped" for s in ("generate", "select", "binarize")}
    assert '"mean_similarity"' in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith(
        "seqkd-build: distilled data-bin up to date, nothing redone: ")
    assert snapshot(kd) == before


def test_lost_output_is_rebuilt_from_the_recorded_stages(kd_dir, toy_bin, teacher_ckpt,
                                                         tmp_path, capsys):
    out = tmp_path / "kd"
    shutil.copytree(kd_dir[0], out)
    target = out / f"{PAIR}tgt.bin"
    expected = target.read_bytes()
    target.unlink()  # a build killed while binarizing, or a user's mistake
    args = ["--data", str(toy_bin), "--teacher", str(teacher_ckpt), "--output", str(out),
            "--strategy", "seq-kd", *BUILD]
    assert build.main(args) == 0
    log = capsys.readouterr().out
    assert stages(log) == {"generate": "skipped", "select": "skipped", "binarize": "running"}
    assert "binarize: running (output train.src-tgt.tgt.bin is missing)" in log
    assert target.read_bytes() == expected
    # a killed selection (its stamp never written) is redone; it reproduces the same bytes,
    # so the binarized data it feeds stays as it is
    (out / "seqkd" / "select" / "done.json").unlink()
    before = snapshot(out)
    assert build.main(args) == 0
    assert stages(capsys.readouterr().out) == {
        "generate": "skipped", "select": "running", "binarize": "skipped"}
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k.startswith("train.")} == \
        {k: v for k, v in before.items() if k.startswith("train.")}


def test_fallback_drop_writes_kept_indices(kd_dir, toy_bin, teacher_ckpt, tmp_path, capsys):
    out = tmp_path / "drop"
    shutil.copytree(kd_dir[0], out)
    assert build.main(["--data", str(toy_bin), "--teacher", str(teacher_ckpt), "--output",
                       str(out), "--strategy", "seq-kd", "--fallback", "drop",
                       "--max-len-ratio", "1.0", *BUILD]) == 0
    report = json.loads((out / "seqkd" / "select" / "report.json").read_text())
    kept = [int(x) for x in (out / "train.kept-indices").read_text().split()]
    assert 0 < len(kept) == report["kept"] < 600 and report["length_ratio"] > 0
    src, gold_src = lines(out, "src"), lines(toy_bin, "src")
    tgt = lines(out, "tgt")
    assert src == [gold_src[i] for i in kept]
    assert all(len(s.split()) == len(t.split()) for s, t in zip(src, tgt))
    with pytest.raises(SeqKDError, match=r"built with --fallback drop .*train.kept-indices"):
        setup_task(toy_bin, "--distilled-data", out)[0].load_dataset("train")
    # back to --fallback gold in the same folder: the kept-indices file goes away
    assert build.main(["--data", str(toy_bin), "--teacher", str(teacher_ckpt), "--output",
                       str(out), "--strategy", "seq-kd", *BUILD]) == 0
    assert not (out / "train.kept-indices").exists()
    assert lines(out, "tgt") == lines(kd_dir[0], "tgt")
    capsys.readouterr()


def test_fallback_switch_with_nothing_dropped_rewrites_kept_indices(kd_dir, toy_bin,
                                                                    teacher_ckpt, tmp_path,
                                                                    capsys):
    """No filter drops anything, so the selection's bytes are the same under either fallback;
    the binarized data must still follow the switch (a stale train.kept-indices would make the
    aligned data unusable as --distilled-data)."""
    out = tmp_path / "switch"
    shutil.copytree(kd_dir[0], out)
    args = ["--data", str(toy_bin), "--teacher", str(teacher_ckpt), "--output", str(out),
            "--strategy", "seq-kd", *BUILD]
    assert build.main([*args, "--fallback", "drop"]) == 0
    assert stages(capsys.readouterr().out) == {
        "generate": "skipped", "select": "running", "binarize": "running"}
    kept = (out / "train.kept-indices").read_text().split()
    assert kept == [str(i) for i in range(600)]  # nothing dropped, all listed
    assert build.main([*args, "--fallback", "gold"]) == 0
    assert stages(capsys.readouterr().out)["binarize"] == "running"
    assert not (out / "train.kept-indices").exists()
    assert lines(out, "tgt") == lines(kd_dir[0], "tgt")
    setup_task(toy_bin, "--distilled-data", out)[0].load_dataset("train")  # accepted


def best_scores(nbest_file: Path) -> dict[int, float]:
    """Each sentence's rank-0 score, read from the n-best text itself (not via read_nbest)."""
    scores = {}
    for line in nbest_file.read_text(encoding="utf-8").splitlines():
        index, rank, score, _ = line.split("\t", 3)
        if rank == "0":
            scores[int(index)] = float(score)
    return scores


def lowest(scores: dict[int, float], percent: int) -> set[int]:
    """The floor(percent %) lowest-scored sentences, ties to the lower index."""
    return set(sorted(scores, key=lambda i: (scores[i], i))[:len(scores) * percent // 100])


def test_filter_worst_drops_the_lowest_scored_and_a_new_percentage_redoes_only_selection(
        kd_dir, toy_bin, teacher_ckpt, tmp_path, capsys):
    out = tmp_path / "worst"
    shutil.copytree(kd_dir[0], out)
    nbest_file = out / "seqkd" / "generate" / "train.nbest"
    scores = best_scores(nbest_file)
    best = {i: h[0].tokens for i, h in read_nbest(nbest_file).items()}
    assert len(scores) == 600 and all(best.values())  # no empty hypothesis is counted first
    gold_src = lines(toy_bin, "src")
    args = ["--data", toy_bin, "--teacher", teacher_ckpt, "--output", out,
            "--strategy", "seq-kd", "--fallback", "drop", *BUILD]
    proc = run_cli("seqkd-build", *args, "--filter-worst", "10")
    assert stages(proc.stdout) == {"generate": "skipped", "select": "running",
                                   "binarize": "running"}
    assert "options changed (fallback: gold -> drop, filter_worst: 0.0 -> 10.0)" in proc.stdout
    assert '"filter_worst": 60,' in proc.stdout  # the printed selection report counts them

    def check(percent: int) -> None:
        report = json.loads((out / "seqkd" / "select" / "report.json").read_text())
        expected = lowest(scores, percent)
        assert report["filter_worst_percent"] == percent and report["min_score"] is None
        assert report["filter_worst"] == report["dropped"] == len(expected) == 6 * percent
        kept = [int(x) for x in (out / "train.kept-indices").read_text().split()]
        assert set(range(600)) - set(kept) == expected and report["kept"] == len(kept)
        assert max(scores[i] for i in expected) <= min(scores[i] for i in kept)
        assert lines(out, "tgt") == [best[i] for i in kept]
        assert lines(out, "src") == [gold_src[i] for i in kept]

    check(10)
    generate_files = snapshot(out / "seqkd" / "generate")
    assert build.main([*map(str, args), "--filter-worst", "20"]) == 0
    log = capsys.readouterr().out
    assert stages(log) == {"generate": "skipped", "select": "running", "binarize": "running"}
    assert "options changed (filter_worst: 10.0 -> 20.0)" in log
    assert snapshot(out / "seqkd" / "generate") == generate_files  # not decoded again
    check(20)


def test_score_filters_with_fallback_gold_keep_the_split_aligned(kd_dir, toy_bin,
                                                                 teacher_ckpt, tmp_path,
                                                                 capsys):
    out = tmp_path / "gold"
    shutil.copytree(kd_dir[0], out)
    scores = best_scores(out / "seqkd" / "generate" / "train.nbest")
    threshold = sorted(scores.values())[30]
    below = {i for i, s in scores.items() if s < threshold}
    worst = lowest(scores, 10)
    assert 0 < len(below) <= 30 and below <= worst
    assert build.main(["--data", str(toy_bin), "--teacher", str(teacher_ckpt), "--output",
                       str(out), "--strategy", "seq-kd", "--filter-worst", "10",
                       "--min-score", repr(threshold), *BUILD]) == 0
    log = capsys.readouterr().out
    assert stages(log) == {"generate": "skipped", "select": "running", "binarize": "running"}
    report = json.loads((out / "seqkd" / "select" / "report.json").read_text())
    # min_score comes first; filter_worst counts the rest of the worst 10 %
    assert report["min_score"] == threshold and report["below_min_score"] == len(below)
    assert report["filter_worst"] == len(worst) - len(below)
    assert report["fallback_gold"] == len(worst) and report["kept"] == 600
    assert not (out / "train.kept-indices").exists()
    gold_tgt, kd_tgt = lines(toy_bin, "tgt"), lines(kd_dir[0], "tgt")
    assert lines(out, "tgt") == [gold_tgt[i] if i in worst else kd_tgt[i] for i in range(600)]
    setup_task(toy_bin, "--distilled-data", out)[0].load_dataset("train")  # still aligned


def test_max_repeats_replaces_looping_targets_by_gold_and_redoes_only_selection(
        kd_dir, toy_bin, teacher_ckpt, tmp_path, capsys):
    from fairseq_seqkd.distill.select import repeat_run

    out = tmp_path / "loops"
    shutil.copytree(kd_dir[0], out)
    best = {i: h[0].tokens for i, h in read_nbest(out / "seqkd" / "generate" /
                                                  "train.nbest").items()}
    looping = {i for i, t in best.items() if repeat_run(t.split()) > 1}
    assert 0 < len(looping) < 600  # the toy teacher repeats a token somewhere, not everywhere
    assert build.main(["--data", str(toy_bin), "--teacher", str(teacher_ckpt), "--output",
                       str(out), "--strategy", "seq-kd", "--max-repeats", "1", *BUILD]) == 0
    log = capsys.readouterr().out
    assert stages(log) == {"generate": "skipped", "select": "running", "binarize": "running"}
    report = json.loads((out / "seqkd" / "select" / "report.json").read_text())
    assert report["repeats"] == report["fallback_gold"] == len(looping)
    gold_tgt = lines(toy_bin, "tgt")
    assert lines(out, "tgt") == [gold_tgt[i] if i in looping else best[i] for i in range(600)]


def test_python_api_builds_the_same_data_as_the_cli(kd_dir, toy_bin, teacher_ckpt, tmp_path):
    from fairseq_seqkd.distill.build import build_distilled_data

    out = tmp_path / "api"
    shutil.copytree(kd_dir[0] / "seqkd" / "generate", out / "seqkd" / "generate")  # no decoding
    messages: list[str] = []
    summary = build_distilled_data(str(toy_bin), str(teacher_ckpt), str(out), "seq-kd", beam=3,
                                   nbest=3, cpu=True, batch_size=200, log=messages.append)
    assert summary.ran == ["select", "binarize"] and summary.select["mean_selected_rank"] == 0
    assert summary.binarize["sentences"] == 600
    assert any(m.startswith("[3/3] binarize: done") for m in messages)
    for ext in ("bin", "idx"):
        name = f"{PAIR}tgt.{ext}"
        assert (out / name).read_bytes() == (kd_dir[0] / name).read_bytes()
    with pytest.raises(SeqKDError, match=r"--fallback must be one of gold, drop, got 'keep'"):
        build_distilled_data(str(toy_bin), str(teacher_ckpt), str(out), "seq-kd",
                             fallback="keep")
    with pytest.raises(SeqKDError, match=r"--filter-worst must be in \[0, 100\)"):
        build_distilled_data(str(toy_bin), str(teacher_ckpt), str(out), "seq-kd",
                             filter_worst=100)


@pytest.mark.parametrize("args, message", [
    (["--sim", "meteor"], r"argument --sim: invalid choice: 'meteor'"),
    (["--nbest", "4"], r"--nbest must be in \[1, --beam 3\], got 4"),
    (["--teacher", "nope.pt"], r"--teacher: nope.pt does not exist"),
    (["--data", "no-such-dir"], r"--data: no-such-dir is not a directory"),
    (["--filter-worst", "100"], r"--filter-worst must be in \[0, 100\) \(a percentage\), "
                                r"got 100.0$"),
    (["--filter-worst", "-5"], r"--filter-worst must be in \[0, 100\) .*got -5.0$"),
    (["--filter-worst", "ten"], r"argument --filter-worst: invalid float value: 'ten'"),
    (["--min-score", "nan"], r"--min-score must be a number, got nan$"),
    (["--max-repeats", "0"], r"--max-repeats must be an integer >= 1, got 0$"),
    (["--max-len-a", "-1"], r"--max-len-a must be >= 0, got -1\.0$"),
    (["--max-len-b", "0"], r"--max-len-b must be >= 1, got 0$"),
])
def test_bad_input_is_one_line_and_writes_nothing(toy_bin, teacher_ckpt, tmp_path, capsys,
                                                  args, message):
    out = tmp_path / "out"
    base = {"--data": str(toy_bin), "--teacher": str(teacher_ckpt), "--output": str(out),
            "--strategy": "seq-inter", "--beam": "3"}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    argv = [x for kv in base.items() for x in kv] + ["--cpu"]
    assert build.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seqkd-build: error: ")
    assert re.search(message, err[0]), err[0]
    assert not out.exists()


def test_max_len_caps_the_teachers_hypotheses_and_is_recorded(toy_bin, teacher_ckpt, tmp_path):
    out = tmp_path / "capped"
    run_cli("seqkd-build", "--data", toy_bin, "--teacher", teacher_ckpt, "--output", out,
            "--strategy", "seq-kd", *BUILD, "--max-len-a", "0", "--max-len-b", "3")
    generate = out / "seqkd" / "generate"
    rows = [line.split("\t") for line in (generate / "train.nbest").read_text().splitlines()]
    assert len({int(r[0]) for r in rows}) == 600
    # the toy targets have 3 to 8 words; uncapped, the teacher writes most of them in full
    assert max(len(r[3].split()) for r in rows) <= 3
    record = json.loads((generate / "done.json").read_text())
    assert record["key"]["command"]["max_len_a"] == 0
    assert record["key"]["command"]["max_len_b"] == 3


def test_teacher_with_other_dictionaries_is_refused(teacher_ckpt, tmp_path, capsys):
    write_toy_corpus(tmp_path / "raw", seed=5, sizes={"train": 50, "valid": 5, "test": 5},
                     prefix="v")
    other = preprocess(tmp_path / "raw", tmp_path / "bin")
    out = tmp_path / "out"
    assert build.main(["--data", str(other), "--teacher", str(teacher_ckpt), "--output",
                       str(out), "--strategy", "seq-kd", "--cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert re.search(r"seqkd-build: error: source dictionaries differ: teacher .*checkpoint_"
                     r"last.pt has \d+ symbols, --data .*dict.src.txt has \d+; first "
                     r"difference at index 4", err[0]), err[0]
    assert not out.exists()


# ---------------------------------------------------------------------------- training


def test_stock_fairseq_trains_and_generates_on_the_distilled_data(kd_dir, tmp_path):
    kd, _ = kd_dir
    save = tmp_path / "student"
    # no --user-dir: the distilled data-bin is plain fairseq data
    proc = run_cli("fairseq-train", kd, "--task", "translation", *model_args(16), *TRAIN_ARGS,
                   "--criterion", "label_smoothed_cross_entropy", "--max-epoch", "2",
                   "--save-dir", save)
    rows = epoch_losses(proc.stdout + proc.stderr)
    assert len(rows) == 2 and rows[1]["loss"] < rows[0]["loss"]
    # fairseq 0.12 cannot torch.load its own checkpoints under torch >= 2.6 (weights_only);
    # the plugin allow-lists what they pickle, so generation loads it
    gen = run_cli("fairseq-generate", kd, "--user-dir", PLUGIN, "--path",
                  save / "checkpoint_last.pt", "--beam", "2", "--cpu", "--batch-size", "64",
                  "--required-batch-size-multiple", "1")
    assert len(re.findall(r"^H-\d+\t", gen.stdout, flags=re.M)) == 40


def test_interpolation_trains_and_logs_both_nlls(toy_bin, kd_dir, tmp_path):
    kd, _ = kd_dir
    proc = run_cli(
        "fairseq-train", toy_bin, "--user-dir", PLUGIN, "--task", "translation_kd",
        "--distilled-data", kd, "--criterion", "seq_kd_interpolation", "--kd-alpha", "0.5",
        "--label-smoothing", "0.1", *model_args(16), *TRAIN_ARGS, "--max-epoch", "3",
        "--save-dir", tmp_path / "inter",
    )
    log = proc.stdout + proc.stderr
    train, valid = epoch_losses(log), epoch_losses(log, "valid")
    assert len(train) == 3 and train[-1]["loss"] < train[0]["loss"]
    assert train[-1]["distilled_nll_loss"] < train[0]["distilled_nll_loss"]
    assert "distilled_nll_loss" not in valid[0]  # validation: the gold term only


def test_misaligned_data_fails_at_load_in_one_line(toy_bin, kd_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(kd_dir[0], bad)
    tgt_dict = Dictionary.load(str(bad / "dict.tgt.txt"))
    binarize_lines(lines(kd_dir[0], "tgt")[:599], tgt_dict, str(bad / f"{PAIR}tgt"))
    proc = run_cli(
        "fairseq-train", toy_bin, "--user-dir", PLUGIN, "--task", "translation_kd",
        "--distilled-data", bad, "--criterion", "seq_kd_interpolation", *model_args(16),
        *TRAIN_ARGS, "--max-epoch", "1", "--save-dir", tmp_path / "save", check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"fairseq-seqkd: error: --distilled-data: .*bad/train.src-tgt.tgt.bin "
                        r"has 599 sentences but the gold train split .* has 600; .*", last)
    assert not (tmp_path / "save" / "checkpoint_last.pt").exists()


# ---------------------------------------------------------------------------- in process


def setup_task(data: Path, *extra: object, dim: int = 16):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser,
        [str(data), "--user-dir", PLUGIN, "--task", "translation_kd",
         *map(str, model_args(dim)), *map(str, TRAIN_ARGS), *map(str, extra)],
    )
    cfg = convert_namespace_to_omegaconf(args)
    return tasks.setup_task(cfg.task), cfg


@pytest.fixture(scope="module")
def interp(toy_bin, kd_dir):
    """translation_kd with the Seq-KD data, a fresh model with dropout, one batch."""
    task, cfg = setup_task(toy_bin, "--distilled-data", kd_dir[0], "--dropout", "0.2")
    task.load_dataset("train")
    torch.manual_seed(0)
    model = task.build_model(cfg.model)
    ds = task.dataset("train")
    sample = ds.collater([ds[i] for i in range(0, 600, 37)])
    return task, model, sample


def test_batches_carry_the_distilled_target_of_each_row(interp, kd_dir, toy_bin):
    task, _, sample = interp
    ds = task.dataset("train")
    d = task.target_dictionary
    distilled = load(kd_dir[0] / f"{PAIR}tgt", d)
    gold = load(toy_bin / f"{PAIR}tgt", d)
    got = sample["distilled"]
    assert got["target"].size(0) == sample["target"].size(0) == len(range(0, 600, 37))
    for row, idx in enumerate(sample["id"].tolist()):  # rows are sorted by source length
        want = distilled[idx]
        assert torch.equal(got["target"][row][got["target"][row].ne(d.pad())], want)
        assert torch.equal(sample["target"][row][sample["target"][row].ne(d.pad())], gold[idx])
        prev = got["prev_output_tokens"][row]
        assert torch.equal(prev[prev.ne(d.pad())], torch.cat([want[-1:], want[:-1]]))
    assert got["ntokens"] == sum(len(distilled[i]) for i in sample["id"].tolist())
    # batching counts the longer target, so both decoder passes fit --max-tokens
    longer = [max(len(gold[i]), len(distilled[i])) for i in range(600)]
    assert any(len(distilled[i]) > len(gold[i]) for i in range(600))
    assert [ds.num_tokens(i) for i in range(600)] == \
        [max(ds.src_sizes[i], longer[i]) for i in range(600)]
    for batch in ds.batch_by_size(ds.ordered_indices(), max_tokens=400):
        width = max(max(len(distilled[i]), len(gold[i]), ds.src_sizes[i]) for i in batch)
        assert len(batch) * width <= 400


def test_alpha_zero_is_label_smoothed_cross_entropy_to_the_last_digit(interp):
    task, model, sample = interp
    model.train()  # dropout on: both criteria must consume the RNG identically
    stock = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)
    ours = SeqKDInterpolationCriterion(task, sentence_avg=False, label_smoothing=0.1,
                                       kd_alpha=0.0)
    torch.manual_seed(1)
    loss_a, size_a, log_a = stock(model, sample)
    torch.manual_seed(1)
    loss_b, size_b, log_b = ours(model, sample)
    assert torch.equal(loss_a, loss_b) and size_a == size_b
    assert torch.equal(log_a["nll_loss"], log_b["nll_loss"])


def test_loss_is_the_documented_mixture_and_the_encoder_runs_once(interp):
    task, model, sample = interp
    model.eval()
    ours = SeqKDInterpolationCriterion(task, sentence_avg=False, label_smoothing=0.1,
                                       kd_alpha=0.3)
    calls = []
    hook = model.encoder.register_forward_hook(lambda *a: calls.append(1))
    loss, size, log = ours(model, sample)
    hook.remove()
    assert len(calls) == 1
    stock = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)
    gold, gold_size, gold_log = stock(model, sample)
    d = sample["distilled"]
    as_gold = {**sample, "target": d["target"], "ntokens": d["ntokens"],
               "net_input": {**sample["net_input"], "prev_output_tokens": d["prev_output_tokens"]}}
    dist, _, dist_log = stock(model, as_gold)
    assert size == gold_size == sample["ntokens"]  # normalised by the gold tokens
    assert loss.item() == pytest.approx(0.7 * gold.item() + 0.3 * dist.item(), rel=1e-6)
    assert log["nll_loss"].item() == pytest.approx(gold_log["nll_loss"].item(), rel=1e-6)
    assert log["distilled_nll_loss"].item() == \
        pytest.approx(dist_log["nll_loss"].item(), rel=1e-6)
    assert log["distilled_ntokens"] == d["ntokens"]
    # validation batches have no distilled target: the gold term alone
    plain = {k: v for k, v in sample.items() if k != "distilled"}
    assert ours(model, plain)[0].item() == pytest.approx(gold.item(), rel=1e-6)
    model.train()
    with pytest.raises(SeqKDError, match="the training batch has no distilled targets"):
        ours(model, plain)


def test_gradients_match_through_a_ddp_wrapper(interp):
    """The gold pass goes through the model's forward, so torch DDP's reducer sees it."""
    import torch.distributed as dist
    from fairseq.distributed import ModuleProxyWrapper
    from torch.nn.parallel import DistributedDataParallel

    task, model, sample = interp
    model.eval()
    crit = SeqKDInterpolationCriterion(task, sentence_avg=False, label_smoothing=0.1,
                                       kd_alpha=0.5)
    model.zero_grad()
    crit(model, sample)[0].backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    with socket.socket() as sock:  # a free port: other test runs may share this machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    try:
        wrapped = ModuleProxyWrapper(DistributedDataParallel(model))
        for _ in range(2):  # a second step fails if the reducer missed the first one
            model.zero_grad()
            crit(wrapped, sample)[0].backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, plain[name], rtol=1e-5, atol=1e-7)
    finally:
        dist.destroy_process_group()


def test_criterion_needs_distilled_data(toy_bin):
    task, _ = setup_task(toy_bin)
    with pytest.raises(SeqKDError, match=r"needs --task translation_kd --distilled-data DIR"):
        SeqKDInterpolationCriterion(task, sentence_avg=False, label_smoothing=0.1)
    with pytest.raises(SeqKDError, match=r"--kd-alpha must be in \[0, 1\], got 1.5"):
        SeqKDInterpolationCriterion(task, sentence_avg=False, label_smoothing=0.1, kd_alpha=1.5)


def _bad_copy(kd: Path, tmp: Path, name: str) -> Path:
    out = tmp / name
    shutil.copytree(kd, out, ignore=shutil.ignore_patterns("seqkd"))
    return out


def test_bad_distilled_data_is_refused_at_load(toy_bin, kd_dir, tmp_path):
    kd = kd_dir[0]
    cases = []
    cases.append((tmp_path / "absent", r"--distilled-data: .*absent is not a directory"))
    missing = _bad_copy(kd, tmp_path, "missing")
    os.unlink(missing / f"{PAIR}tgt.idx")
    cases.append((missing, r"missing/train.src-tgt.tgt.bin/.idx not found"))
    other_dict = _bad_copy(kd, tmp_path, "dict")
    text = (other_dict / "dict.tgt.txt").read_text().splitlines()
    text[0], text[1] = text[1], text[0]
    (other_dict / "dict.tgt.txt").write_text("\n".join(text) + "\n")
    cases.append((other_dict, r"dict/dict.tgt.txt differs from the target dictionary of the "
                              r"training data \(\d+ vs \d+ symbols; first difference at index 4"))
    shuffled = _bad_copy(kd, tmp_path, "shuffled")  # same size, another sentence order
    d = Dictionary.load(str(kd / "dict.src.txt"))
    src = load(kd / f"{PAIR}src", d)
    order = sorted(range(len(src)), key=lambda i: (len(src[i]), i))
    write_subset(src, order, len(d), str(shuffled / f"{PAIR}src"))
    cases.append((shuffled, r"shuffled/train.src-tgt.src.bin is not aligned with the gold "
                            r"train split .*: sentence \d+ has \d+ source tokens there and \d+"))
    for directory, message in cases:
        task, _ = setup_task(toy_bin, "--distilled-data", directory)
        task.load_dataset("valid")  # only the training split carries distilled targets
        with pytest.raises(SeqKDError, match=message):
            task.load_dataset("train")
