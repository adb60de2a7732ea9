"""The deployed-student study (seqkd-benchmark with a MonoPreset): its stage list and parts at
the multi30k-mono preset (dry runs), and the whole plan end to end at the ci-mono preset on a
generated corpus, through examples/multi30k/run.sh: every row on the page with chrF and
p-values, and the page kept whole by a later run on a fresh output directory."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fairseq_seqkd.experiments.benchmark_presets import BENCHMARK_PRESETS
from fairseq_seqkd.experiments.corpus import write_corpus
from fairseq_seqkd.experiments.mono_results import valid_curve
from fairseq_seqkd.experiments.mono_study import MonoStudy

from ..conftest import cli, run_cli
from .test_benchmark import tables

REPO = Path(__file__).resolve().parents[2]
PRESET = BENCHMARK_PRESETS["ci-mono"]


def make_corpus(directory: Path) -> tuple[Path, Path]:
    """The ci-mono preset's corpus with a second test set, and its monolingual source moved
    out of the corpus (as Multi30k's is)."""
    write_corpus(directory, PRESET.corpus)
    for lang in ("src", "tgt"):
        shutil.copyfile(directory / f"valid.{lang}", directory / f"test_extra.{lang}")
    mono = directory.parent / "mono.en"
    shutil.move(directory / "mono.src", mono)
    return directory, mono


def dry_run(corpus: Path, mono: Path, out: Path, *args: str) -> list[str]:
    proc = run_cli("seqkd-benchmark", "--preset", "multi30k-mono", "--corpus", corpus,
                   "--mono-source", mono, "--out", out, "--dry-run", *args)
    return [n for n in re.findall(r"^# ([\w.-]+): ", proc.stdout, flags=re.M)
            if n != "in-process"]


CORE = ["sentencepiece", "preprocess", "teacher", "eval-teacher", "teacher-ct2",
        "build-seq-kd", "seq-kd", "eval-seq-kd", "build-seq-kd-mono", "seq-kd-mono",
        "eval-seq-kd-mono", "seq-kd-mono-converged", "eval-seq-kd-mono-converged",
        "seq-kd-seed2", "eval-seq-kd-seed2", "seq-kd-mono-seed2", "eval-seq-kd-mono-seed2",
        "seq-kd-seed3", "eval-seq-kd-seed3", "seq-kd-mono-seed3", "eval-seq-kd-mono-seed3"]
ENSEMBLE = ["teacher-seed2", "eval-teacher-seed2", "eval-teacher-ensemble",
            "build-seq-kd-mono-ensemble", "seq-kd-mono-ensemble", "eval-seq-kd-mono-ensemble",
            "seq-kd-mono-ensemble-converged", "eval-seq-kd-mono-ensemble-converged"]
FINAL = ["gkd-0.1", "eval-gkd-0.1", "gkd-0.5", "eval-gkd-0.5", "size-4-1-d128",
         "eval-size-4-1-d128", "size-4-1-d256", "eval-size-4-1-d256",
         "deploy-export", "deploy-speed",
         # the best row's further seeds, last (deployment does not read them): GKD's seed k
         # fine-tunes its start row's seed k
         "seq-kd-mono-ensemble-converged-seed2", "eval-seq-kd-mono-ensemble-converged-seed2",
         "gkd-0.1-seed2", "eval-gkd-0.1-seed2",
         "seq-kd-mono-ensemble-converged-seed3", "eval-seq-kd-mono-ensemble-converged-seed3",
         "gkd-0.1-seed3", "eval-gkd-0.1-seed3"]


def test_dry_run_lists_the_study_part_by_part(tmp_path):
    corpus, mono = make_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    assert dry_run(corpus, mono, out) == CORE + ENSEMBLE + FINAL
    # a part on a fresh machine: its stages and what they read, the teachers retrained
    assert dry_run(corpus, mono, out, "--part", "ensemble") == [
        "sentencepiece", "preprocess", "teacher", *ENSEMBLE]
    assert dry_run(corpus, mono, out, "--part", "final") == [
        "sentencepiece", "preprocess", "teacher", "teacher-seed2", "build-seq-kd-mono-ensemble",
        "seq-kd-mono-ensemble", "seq-kd-mono-ensemble-converged", *FINAL]
    proc = run_cli("seqkd-benchmark", "--preset", "multi30k-mono", "--corpus", corpus,
                   "--mono-source", mono, "--out", out, "--dry-run")
    commands = proc.stdout
    # rows 2 and 3 train for the same number of updates, the second teacher as the first
    assert commands.count("--max-update 2500 ") == 6 + 1 + 2  # 3 seeds x 2, ensemble, sizes
    teacher = re.search(r"# teacher: .*\n(.*)\n", commands)[1]
    second = re.search(r"# teacher-seed2: .*\n(.*)\n", commands)[1]
    assert second == teacher.replace("--seed 1 ", "--seed 2 ").replace(
        "models/teacher ", "models/teacher-seed2 ")
    assert f"--mono-source {mono} --spm-model" in commands
    assert re.search(r"--teacher \S+/models/teacher/checkpoint_best.pt:\S+/models/"
                     r"teacher-seed2/checkpoint_best.pt", commands)
    assert "--criterion gkd" in commands and "--lr 0.0005 " in commands
    # GKD's online teacher is the one that made its start row's data: here the ensemble
    gkd = re.search(r"# gkd-0\.1: .*\n(.*)\n", commands)[1]
    assert re.search(r"--teacher-path \S+/models/teacher/checkpoint_best\.pt:\S+/models/"
                     r"teacher-seed2/checkpoint_best\.pt ", gkd)
    # the best row is a GKD row: its seed 2 fine-tunes its start row's seed 2, with seed 2
    gkd2 = re.search(r"# gkd-0\.1-seed2: .*\n(.*)\n", commands)[1]
    assert "--seed 2 " in gkd2 and re.search(
        r"models/seq-kd-mono-ensemble-converged-seed2/checkpoint_best\.pt", gkd2)
    # a deployed row's stock export keeps its whole name (gkd-0.1 and gkd-0.5 stay apart)
    assert re.search(r"models/gkd-0\.1/checkpoint_best\.pt --output \S+/deploy/gkd-0\.1\.pt\n",
                     commands)


def test_a_plan_needs_its_monolingual_source_and_its_parts(tmp_path):
    corpus, _ = make_corpus(tmp_path / "corpus")
    proc = run_cli("seqkd-benchmark", "--preset", "ci-mono", "--corpus", corpus,
                   "--out", tmp_path / "out", "--mono-source", tmp_path / "none.en",
                   check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(
        f"seqkd-benchmark: error: --mono-source: {tmp_path / 'none.en'} does not exist")
    proc = run_cli("seqkd-benchmark", "--preset", "ci-mono", "--corpus", corpus, "--out",
                   tmp_path / "out", "--part", "table1", "--dry-run", check=False)
    assert proc.stderr.strip().splitlines()[-1] == (
        "seqkd-benchmark: error: --part must be one of core, ensemble, final, got 'table1'")
    proc = run_cli("seqkd-benchmark", "--preset", "ci", "--corpus", corpus, "--out",
                   tmp_path / "out", "--mono-source", corpus / "train.src", "--dry-run",
                   check=False)
    assert "--mono-source: preset ci trains no row" in proc.stderr


def test_valid_curve_reads_updates_losses_and_why_training_stopped():
    log = ("| valid | epoch 001 | valid on 'valid' subset | loss 7.345 | nll_loss 6.5 | "
           "num_updates 250\n| train_inner | epoch 001: 50 / 99 loss=3, num_updates=300, lr=1\n"
           "| valid | epoch 002 | valid on 'valid' subset | loss 6.9 | ppl 2 | num_updates 500 "
           "| best_loss 6.9\n| early stop since valid performance hasn't improved for last 2 "
           "runs\n")
    assert valid_curve(log) == ([(250, 7.345), (500, 6.9)], 500, "patience")
    assert valid_curve("| train | num_updates 12 |\ndone training in 3.0 seconds")[1:] == (
        12, "done")
    assert valid_curve("")[1:] == (None, None)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    corpus, mono = make_corpus(root / "corpus")
    env = {**os.environ, "OUT": str(root / "out"), "DOC": str(root / "doc" / "study.md"),
           "MONO": str(mono), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(cli('seqkd-benchmark')).parent}:" + os.environ.get("PATH", "")}
    proc = subprocess.run([str(REPO / "examples" / "multi30k" / "run.sh"), str(corpus),
                           "--preset", "ci-mono", "--jobs", "2"], capture_output=True,
                          text=True, env=env, timeout=1800)  # ~7 min on a loaded 2-core box
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


@pytest.mark.slow
def test_the_whole_plan_writes_every_row_with_chrf_and_p_values(study_run):
    root, proc = study_run
    study = MonoStudy(root / "out", PRESET, root / "corpus", mono_source=root / "mono.en")
    for stage in study.stages():
        assert re.search(rf"\] {re.escape(stage.name)}\s+done in \d+s", proc.stdout), stage.name
    page = (root / "doc" / "study.md").read_text()
    every = tables(page)
    found = {tuple(header): rows for header, rows in every}
    results = next(rows for header, rows in found.items() if header[:3] == (
        "model", "part", "params"))
    assert [r[0] for r in results] == ["Teacher (d=32, 1+1 layers)",
                                       *(m.label for m in study.models[1:] if "-seed" not in
                                         m.key or m.key == "teacher-seed2")]
    for row in results:  # BLEU / chrF, greedy and beam, every test set
        assert all(re.fullmatch(r"\d+\.\d\d / \d+\.\d\d", cell) for cell in row[3:]), row
    assert re.search(r"chrF sacrebleu `nrefs:1\|case:mixed\|eff:yes\|nc:6\|nw:0\|space:no", page)
    significance = [rows for header, rows in every if header[2:4] == [
        "vs Seq-KD", "vs teacher beam 5"]]
    assert len(significance) == 2  # test and test_extra
    labels = ["Teacher (d=32, 1+1 layers)", *(m.label for m in study.models[1:])]
    assert [r[0] for r in significance[0]] == labels
    p_cell = r"[+-]\d+\.\d\d \(p = [01]\.\d{3}\)"
    for row in significance[0]:
        assert re.fullmatch(p_cell, row[3]) or row[0].startswith("Seq-KD, seed") or (
            row[0] == "Seq-KD"), row
        assert re.fullmatch(p_cell, row[6]), row
    # the targets: one list, each line judged or waiting, with no issue numbers
    targets = page.split("## Targets against this run\n\n")[1].split("\n\n")[0].splitlines()
    assert len(targets) == len(PRESET.targets) and not re.search(r"issue \d", page)
    assert all(re.fullmatch(r"- .*: \*\*(met|MISSED)\*\*", t) for t in targets), targets
    assert re.search(r"p = \d\.\d{3}", targets[1])
    # the monolingual data is in the mono builds; convergence, GKD cost, sizes, stage costs
    data = next(rows for header, rows in found.items() if header[0] == "data")
    assert data[0][2:4] == ["400", "0"] and int(data[1][3]) > 0 and data[2][2] == "400"
    curves = next(rows for header, rows in found.items() if header[-1].startswith("valid loss"))
    assert {r[0] for r in curves} >= {"Seq-KD", "Seq-KD + mono", "Teacher, seed 2"}
    assert all(re.fullmatch(r"(\d+:\d+\.\d\d ?)+", r[4]) for r in curves)
    assert next(r for r in curves if r[0] == "Seq-KD")[1] == "24"  # exactly the budget
    gkd = next(rows for header, rows in found.items() if header[1] == "starts from")
    assert len(gkd) == 2 and all(float(r[3]) > 0 for r in gkd)
    sizes = next(rows for header, rows in found.items() if header[3] == "CT2 int8 MiB")
    assert len(sizes) == 3 and all(re.fullmatch(r"[\d,]+", c) for r in sizes for c in r[4:6])
    stages = next(rows for header, rows in found.items() if header == ("stage", "part",
                                                                       "wall s", "CPU s"))
    assert [r[0] for r in stages] == [s.name for s in study.stages()]
    assert str(root) not in page and "$MONO" in page


@pytest.mark.slow
def test_a_fresh_machine_keeps_the_earlier_rows_from_the_archive(study_run):
    root, _ = study_run
    doc = root / "doc" / "study.md"
    before = doc.read_text()
    fresh = root / "fresh"  # nothing of the first run's output directory survives
    run_cli("seqkd-benchmark", "--preset", "ci-mono", "--corpus", root / "corpus",
            "--mono-source", root / "mono.en", "--out", fresh, "--doc", doc, "--report-only",
            timeout=600)
    after = doc.read_text()
    assert after.split("## How it was run")[0] == before.split("## How it was run")[0]
    assert not (fresh / "models").exists()
