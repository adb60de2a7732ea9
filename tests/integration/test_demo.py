"""seqkd-demo end to end at the ``ci`` preset, its skip/redo logic, and the report helpers."""

import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fairseq.data import Dictionary, data_utils

from fairseq_seqkd.distill.evaluate import bleu, parse_decoding
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.experiments.corpus import (
    CORPUS_VERSION,
    MONO_FILE,
    CorpusSpec,
    all_register_references,
    register_of,
    write_corpus,
)
from fairseq_seqkd.experiments.demo_models import MODELS as MODELS_WITHOUT_MONO
from fairseq_seqkd.experiments.demo_models import SEQ_KD_MONO
from fairseq_seqkd.experiments.demo_report import _every_register, demo_findings
from fairseq_seqkd.experiments.pipeline import DEPLOYED, Pipeline, StageRun
from fairseq_seqkd.experiments.presets import PRESETS
from fairseq_seqkd.experiments.report import ModelResult, format_table, plot_results

from ..conftest import cli, run_cli

slow = pytest.mark.slow

CI = Pipeline("unused", PRESETS["ci"])
STAGES = [s.name for s in CI.stages()]
MODELS = CI.models  # the built-in corpus's rows: Seq-KD + mono among them


def demo(out: Path, *args: object, check: bool = True):
    return run_cli("seqkd-demo", "--preset", "ci", "--out", out, "--jobs", "2", *args,
                   check=check, timeout=1800)  # a loaded 2-core machine: ~16 min


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    start = time.perf_counter()
    proc = demo(out)
    return out, proc, time.perf_counter() - start


@pytest.fixture
def copied_run(first_run, tmp_path):
    """The first run's output directory and a copy of it to change."""
    out = first_run[0]
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return out, copy


def table_rows(markdown: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert set(lines[1]) <= set("|-:")
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            break  # the stage-time table that follows
        rows.append(cells)
    return header, rows


def count(cell: str) -> float:
    m = re.fullmatch(r"([\d,.]+)([kM]?)", cell)
    assert m, cell
    return float(m.group(1).replace(",", "")) * {"": 1, "k": 1e3, "M": 1e6}[m.group(2)]


@slow
def test_every_stage_ran_and_left_its_artefact(first_run):
    out, proc, _ = first_run
    log = proc.stdout
    for name in STAGES:
        assert re.search(rf"\] {re.escape(name)}\s+done in \d+s", log), name
        assert (out / "stamps" / f"{name}.json").is_file()
        assert (out / "logs" / f"{name}.log").read_text().startswith("$ ") or name == \
            "sentencepiece"
    assert not list((out / "stamps").glob("*.started.json"))  # nothing left half-done
    for split in ("train", "valid", "test"):
        assert (out / "corpus" / f"{split}.src").is_file()
        assert (out / "spm" / f"{split}.tgt").is_file()
    assert (out / "spm" / "spm.model").is_file()
    for data in ("data-bin", "data-seq-kd", "data-seq-inter", "data-seq-kd-mono"):
        assert (out / data / "train.src-tgt.tgt.bin").stat().st_size > 0
    for model in MODELS:
        assert (out / model.checkpoint).is_file()
    for model in DEPLOYED:  # CTranslate2 directories, decoded by seqkd-translate's Translator
        assert (out / model.checkpoint / "model.bin").is_file()
        assert json.loads((out / model.checkpoint / "seqkd-export.json").read_text())[
            "quantization"] == "int8"
    # one eval process decoded every model at both beams, each sentence once
    eval_log = (out / "logs" / "eval.log").read_text()
    for model in (*MODELS, *DEPLOYED):
        runs = json.loads((out / "eval" / f"{model.key}.json").read_text())
        for beam in (1, 5):
            run = runs["test"][str(beam)]
            assert run["engine"] == model.engine and run["sentences"] == 100
            assert run["tokens"] > 100 and run["seconds"] > 0  # every sentence ends in </s>
            assert len((out / "eval" / f"{model.key}.test.beam{beam}.hyp").read_text()
                       .splitlines()) == 100
            assert re.search(rf"^{re.escape(model.key)} +test +\S+ +beam {beam}: 100 sentences",
                             eval_log, flags=re.M)
    assert eval_log.count("$ ") == 1
    assert "--encoder-layers 4 --decoder-layers 1" in (out / "logs" / "deep-shallow.log") \
        .read_text()
    # Word-KD rows read the teacher's top-k from a cache made once per training set
    for row, cache in (("word-kd", "cache-gold"), ("seq-kd-word-kd", "cache-seq-kd")):
        command = (out / "logs" / f"{row}.log").read_text().splitlines()[0]
        assert f"--teacher-cache $OUT/{cache}" in command and "--teacher-path" not in command
        assert (out / cache / "train.cache.json").is_file()
    # the Seq-Inter build selected from the Seq-KD build's n-best, without decoding again
    assert "[1/3] generate: skipped" in (out / "logs" / "build-seq-inter.log").read_text()
    # the GKD row fine-tunes the Seq-KD student on-policy for the preset's short budget
    gkd = (out / "logs" / "seq-kd-gkd.log").read_text()
    assert "--criterion gkd" in gkd and "--gkd-beta 0.1" in gkd and "--gkd-lambda 0.5" in gkd
    assert "--finetune-from-model $OUT/models/seq-kd/checkpoint_best.pt" in gkd
    updates = re.findall(r"\| train \| .*\| num_updates (\d+)", gkd)
    assert updates and int(updates[-1]) == PRESETS["ci"].gkd_updates
    assert re.search(r"\| train \| .*\| on_policy 0\.\d+ ", gkd)  # some updates sampled
    # the distilled targets are the teacher's, not the gold ones
    gold = (out / "data-bin" / "train.src-tgt.tgt.bin").read_bytes()
    assert (out / "data-seq-kd" / "train.src-tgt.tgt.bin").read_bytes() != gold
    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def train_split(data: Path, lang: str) -> list[list[int]]:
    """A data-bin's train split, one token-id list a sentence."""
    dictionary = Dictionary.load(str(data / f"dict.{lang}.txt"))
    dataset = data_utils.load_indexed_dataset(str(data / f"train.src-tgt.{lang}"), dictionary)
    return [dataset[i].tolist() for i in range(len(dataset))]


@slow
def test_seq_kd_mono_row_trains_on_the_seq_kd_pairs_plus_the_teachers_mono_pairs(first_run):
    out, _, _ = first_run
    spec = PRESETS["ci"].corpus
    mono = (out / "corpus" / MONO_FILE).read_text().splitlines()
    assert len(mono) == len(set(mono)) == spec.mono
    assert not set(mono) & {line for split in ("train", "valid", "test")
                            for line in (out / "corpus" / f"{split}.src").read_text()
                            .splitlines()}
    # the build reused the Seq-KD build's n-best and decoded only the monolingual text
    build = (out / "logs" / "build-seq-kd-mono.log").read_text()
    assert "--mono-source $OUT/corpus/mono.src --spm-model $OUT/spm/spm.model" in build
    assert "[2/5] generate: skipped" in build and "[3/5] generate-mono: running" in build
    # one train split: the Seq-KD pairs first, byte for byte, then the monolingual ones
    seqkd, both = out / "data-seq-kd", out / "data-seq-kd-mono"
    parallel = {lang: train_split(seqkd, lang) for lang in ("src", "tgt")}
    combined = {lang: train_split(both, lang) for lang in ("src", "tgt")}
    pairs = len(parallel["src"])
    assert pairs == spec.train
    extra = len(combined["src"]) - pairs
    assert 0 < extra <= spec.mono  # --max-repeats drops a looping translation: no reference
    assert len(combined["tgt"]) == pairs + extra
    for lang in ("src", "tgt"):
        assert combined[lang][:pairs] == parallel[lang]
    provenance = (both / "train.provenance.tsv").read_text().splitlines()[1:]
    assert len(provenance) == pairs + extra
    assert all(row.startswith("parallel	") for row in provenance[:pairs])
    assert all(row.startswith("0	") for row in provenance[pairs:])
    # the Seq-KD student's recipe for its own epochs: more data, more updates
    command = (out / "logs" / "seq-kd-mono.log").read_text().splitlines()[0]
    assert command.startswith("$ $VENV/bin/fairseq-train $OUT/data-seq-kd-mono ")
    assert f"--max-epoch {PRESETS['ci'].mono_student_epochs} " in command

    def updates(name: str) -> int:
        log = (out / "logs" / f"{name}.log").read_text()
        return int(re.findall(r"\| train \| .*\| num_updates (\d+)", log)[-1])

    assert updates("seq-kd-mono") > updates("seq-kd")
    # the results: its row, and a finding with the counts against Seq-KD and the teacher
    text = (out / "results.md").read_text()
    _, rows = table_rows(text)
    by_label = {r[0]: r for r in rows}
    mono_row, seq_row = by_label["Seq-KD + mono"], by_label["Seq-KD"]
    assert [r[0] for r in rows].index("Seq-KD + mono") == [r[0] for r in rows].index(
        "Seq-KD") + 1
    (finding,) = [line for line in text.splitlines() if "More distilled data" in line]
    assert f"translated {spec.mono:,} generated source sentences" in finding
    assert f"({extra:,} kept by the build's filters)" in finding
    assert f"trained on {pairs:,} + {extra:,} pairs" in finding
    assert f"greedy {mono_row[3]} BLEU vs {seq_row[3]} for the Seq-KD student" in finding
    assert f"and {rows[0][4]} for the teacher's beam 5" in finding
    payload = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    row = payload["Seq-KD + mono"]
    assert row["extra"]["parallel_pairs"] == pairs and row["extra"]["mono_pairs"] == extra
    delta = row["bleu_greedy"] - payload["Seq-KD"]["bleu_greedy"]
    assert f"({delta:+.2f}, {'better' if delta > 0 else 'worse'}" in finding or \
        f"({delta:+.2f}, no difference)" in finding


@slow
def test_results_table_has_one_row_per_model_and_numbers_parse(first_run):
    out, proc, _ = first_run
    text = (out / "results.md").read_text()
    header, rows = table_rows(text)
    assert header == ["model", "params", "non-zero", "BLEU greedy", "BLEU beam 5",
                      "tok/s greedy", "tok/s beam 5", "speed-up greedy", "speed-up beam 5",
                      "mixed greedy"]
    models = (*MODELS, *DEPLOYED)
    assert [r[0] for r in rows][2:] == [m.label for m in models][2:]
    assert rows[0][0] == "Teacher (d=32, 1+1 layers)"
    assert rows[1][0] == "Student (d=16, 1+1 layers), baseline"
    params = [count(r[1]) for r in rows]
    nonzero = [count(r[2]) for r in rows]
    for r in rows:
        for cell in r[3:5]:
            assert 0 <= float(cell) <= 100
        assert count(r[5]) > 0 and count(r[6]) > 0
        assert re.fullmatch(r"\d+\.\dx", r[7]) and re.fullmatch(r"\d+\.\dx", r[8])
        assert re.fullmatch(r"\d+\.\d%", r[9])
    assert rows[0][8] == "1.0x"  # the reference: the teacher with beam search
    keys = [m.key for m in models]
    assert params[0] > 2 * params[1]  # the teacher is several times larger
    same = [p for k, p in zip(keys, params) if k not in ("teacher", "deep-shallow",
                                                           "deep-shallow-ct2")]
    assert len(set(same)) == 1  # all other students have the same architecture
    # the deep-encoder student has more encoder layers; its CTranslate2 export counts the same
    assert params[keys.index("deep-shallow")] == params[keys.index("deep-shallow-ct2")] > \
        params[1]
    assert nonzero[1] == params[1]
    pruned = keys.index("pruned")
    assert nonzero[pruned] < 0.4 * params[pruned]  # 80 % of the weight matrices pruned
    assert "sacrebleu" in text and "nrefs:1|case:mixed|eff:no|tok:13a" in text
    assert "## What this run shows" in text and "Seq-KD student greedy" in text
    diag_header, diag = table_rows(text.split("every register as a reference")[1])
    assert diag_header[1] == "BLEU greedy, all registers" and len(diag) == len(models)
    for r in diag:
        assert 0 <= float(r[1]) <= 100 and re.fullmatch(r"\d+\.\d%", r[4])
    # the terminal shows the same table and the signature
    assert rows[3][3] in proc.stdout and "BLEU: sacrebleu nrefs:1" in proc.stdout
    payload = json.loads((out / "results.json").read_text())
    assert len(payload["rows"]) == len(models)
    assert "Deployed with CTranslate2 int8" in text
    assert {s["name"] for s in payload["stages"]} == set(STAGES)


@slow
def test_second_run_skips_every_stage(first_run):
    out, _, first_seconds = first_run
    table = table_rows((out / "results.md").read_text())
    start = time.perf_counter()
    proc = demo(out)
    seconds = time.perf_counter() - start
    for name in STAGES:
        assert re.search(rf"\] {re.escape(name)}\s+skipped: done before", proc.stdout), name
    assert " started " not in proc.stdout
    assert "nothing to do: every stage done before" in proc.stdout
    assert seconds < first_seconds / 3
    assert table_rows((out / "results.md").read_text()) == table  # same numbers


@slow
def test_a_changed_stage_is_redone_with_everything_downstream(copied_run):
    _, copy = copied_run
    # what a changed Seq-Inter recipe looks like to the driver: its stamp no longer matches
    stamp = copy / "stamps" / "seq-inter.json"
    data = json.loads(stamp.read_text())
    data["key"]["command"]["commands"][0].append("--an-older-option")
    stamp.write_text(json.dumps(data))
    proc = demo(copy)
    redone = set(re.findall(r"\] (\S+)\s+done in", proc.stdout))
    assert redone == {"seq-inter", "eval"}  # a retrained checkpoint: other bytes, eval redone
    assert re.search(r"\] seq-inter\s+started .*\(command changed\)", proc.stdout)
    assert re.search(r"\] eval\s+started .*\(input \$OUT/models/seq-inter/checkpoint_best.pt "
                     r"changed\)", proc.stdout)
    assert proc.stdout.count("skipped: done before") == len(STAGES) - 2


@slow
def test_interrupted_stage_leaves_nothing_half_written_and_resumes(copied_run):
    out, copy = copied_run
    (copy / "stamps" / "eval.json").unlink()
    proc = subprocess.Popen(
        [cli("seqkd-demo"), "--preset", "ci", "--out", str(copy)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 300
    while not (copy / "stamps" / "eval.started.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)  # the decoding process is running now
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted; run it again to resume" in stderr
    assert not (copy / "stamps" / "eval.json").exists()
    # the stage cleaned the earlier decodings and stopped before it decoded every model
    assert len(list((copy / "eval").glob("*.json"))) < len(MODELS) + len(DEPLOYED)
    assert not list((copy / "eval").glob(".*"))  # nor a temporary file
    rerun = demo(copy)
    assert re.search(r"\] eval\s+started .*\(an interrupted run, redone from clean\)",
                     rerun.stdout)
    assert rerun.stdout.count(" started ") == 1
    assert [r[:5] for r in table_rows((copy / "results.md").read_text())[1]] == \
        [r[:5] for r in table_rows((out / "results.md").read_text())[1]]  # same BLEU


@slow
def test_an_interrupted_teacher_training_resumes_from_its_last_checkpoint(copied_run):
    # what a run killed during the teacher's training leaves: its checkpoints and a started
    # stamp with the same key; fairseq-train then reads checkpoint_last.pt, which torch
    # refuses unless the plugin (--user-dir) allow-lists what fairseq checkpoints hold
    _, copy = copied_run
    done = copy / "stamps" / "teacher.json"
    key = json.loads(done.read_text())["key"]
    done.unlink()
    (copy / "stamps" / "teacher.started.json").write_text(json.dumps({"key": key}))
    before = (copy / "models" / "teacher" / "checkpoint_best.pt").read_bytes()
    proc = demo(copy, "--only", "teacher")
    assert re.search(r"\] teacher\s+started .*\(resuming an interrupted run\)", proc.stdout)
    log = (copy / "logs" / "teacher.log").read_text()
    assert "Loaded checkpoint" in log and "checkpoint_last.pt" in log
    assert (copy / "models" / "teacher" / "checkpoint_best.pt").read_bytes() == before
    assert done.exists() and not (copy / "stamps" / "teacher.started.json").exists()


@slow
def test_user_corpus_errors_are_one_line(tmp_path):
    proc = run_cli("seqkd-demo", "--corpus", tmp_path / "nope", "--out", tmp_path / "o",
                   check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("seqkd-demo: error: --corpus:")
    assert "Traceback" not in proc.stderr
    raw = tmp_path / "raw"
    raw.mkdir()
    for split in ("train", "valid", "test"):
        (raw / f"{split}.src").write_text("a b\nc d\n")
        (raw / f"{split}.tgt").write_text("x y\n" if split == "valid" else "x y\nz w\n")
    proc = run_cli("seqkd-demo", "--corpus", raw, "--out", tmp_path / "o", check=False)
    assert proc.returncode == 1
    assert re.search(r"valid\.src has 2 lines but .*valid\.tgt has 1", proc.stderr)
    assert not (tmp_path / "o").exists()  # nothing written for bad input


@slow
def test_dry_run_with_a_user_corpus_has_no_corpus_stage(tmp_path):
    proc = run_cli("seqkd-demo", "--corpus", tmp_path, "--preset", "small", "--dry-run")
    names = re.findall(r"^# (\S+):", proc.stdout, flags=re.M)
    assert names[0] == "sentencepiece" and "corpus" not in names
    assert "build-seq-kd-mono" not in names and "--mono-source" not in proc.stdout  # no text
    assert "--prune-ratio 0.8" in proc.stdout and "seqkd-export" in proc.stdout
    assert "--encoder-embed-dim 256" in proc.stdout  # the small teacher


# ------------------------------------------------------------------ the sentencepiece stage


def user_corpus(directory: Path, train: list[tuple[str, str]]) -> Path:
    """A user's raw corpus: ``train`` as the training pairs, its first 5 as valid and test."""
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        pairs = train if split == "train" else train[:5]
        for side, column in (("src", 0), ("tgt", 1)):
            (directory / f"{split}.{side}").write_text(
                "".join(pair[column] + "\n" for pair in pairs), encoding="utf-8")
    return directory


def run_sentencepiece(out: Path, corpus: Path, vocab_size: int) -> StageRun:
    """The demo's sentencepiece stage alone, as ``seqkd-demo --corpus --vocab-size --only
    sentencepiece`` runs it."""
    pipeline = Pipeline(out, replace(PRESETS["ci"], vocab_size=vocab_size), corpus=corpus,
                        stream=io.StringIO(), only=("sentencepiece",))
    (run,) = pipeline.run()
    return run


def latin_pairs() -> list[tuple[str, str]]:
    return [(f"a{i % 7} b{i % 5} c", f"x{i % 3} y{i % 11}") for i in range(60)]


def cjk_pairs() -> list[tuple[str, str]]:
    """Chinese-like text: 380 frequent characters and 40 that occur once a side (0.04 % of the
    characters), 420 in all."""
    rng = random.Random(0)
    common = [chr(0x4E00 + i) for i in range(380)]
    lines = ["".join(rng.choice(common) for _ in range(20)) for _ in range(5000)]
    for i in range(40):
        lines[i] = lines[i][:10] + chr(0x5000 + i) + lines[i][10:]
    return [(line, line[::-1]) for line in lines]


def test_only_with_an_unknown_stage_is_one_line_naming_the_option(tmp_path):
    proc = demo(tmp_path / "out", "--only", "teacher,no-such-stage", "--dry-run", check=False)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "--only: no stage named 'no-such-stage'" in proc.stderr
    listed = demo(tmp_path / "out", "--only", "seq-kd", "--dry-run")
    names = [n for n in re.findall(r"^# ([\w-]+):", listed.stdout, flags=re.M)
             if n != "in-process"]
    assert names == ["corpus", "sentencepiece", "preprocess", "teacher", "build-seq-kd",
                     "seq-kd"]


def test_an_edited_corpus_redoes_the_sentencepiece_stage(tmp_path):
    corpus = user_corpus(tmp_path / "raw", latin_pairs())
    out = tmp_path / "out"
    assert not run_sentencepiece(out, corpus, 60).skipped
    assert run_sentencepiece(out, corpus, 60).skipped
    # the same file names, other text: everything after the corpus is stale
    (corpus / "test.src").write_text("a1 q q q\n" * 5, encoding="utf-8")
    assert not run_sentencepiece(out, corpus, 60).skipped
    assert "q" in (out / "spm" / "test.src").read_text(encoding="utf-8")
    # the same text in another directory is the same corpus
    shutil.copytree(corpus, tmp_path / "moved")
    assert run_sentencepiece(out, tmp_path / "moved", 60).skipped
    log = (out / "logs" / "sentencepiece.log").read_text(encoding="utf-8")
    assert "'input': '$CORPUS/train.src,$CORPUS/train.tgt'" in log
    assert "encoded $CORPUS/test.src -> $OUT/spm/test.src" in log
    assert str(tmp_path) not in log


def test_a_rich_character_set_gets_a_coverage_that_fits_the_vocabulary(tmp_path):
    corpus = user_corpus(tmp_path / "raw", cjk_pairs())
    # at character coverage 1.0, 420 characters do not fit in 400 pieces
    assert not run_sentencepiece(tmp_path / "out", corpus, 400).skipped
    log = (tmp_path / "out" / "logs" / "sentencepiece.log").read_text(encoding="utf-8")
    assert "# 420 distinct characters" in log and "'character_coverage': 0.9995" in log
    encoded = (tmp_path / "out" / "spm" / "train.src").read_text(encoding="utf-8")
    assert len(encoded.splitlines()) == 5000
    # a Latin corpus keeps every character
    run_sentencepiece(tmp_path / "latin", user_corpus(tmp_path / "raw2", latin_pairs()), 60)
    log = (tmp_path / "latin" / "logs" / "sentencepiece.log").read_text(encoding="utf-8")
    assert "'character_coverage': 1.0" in log


def test_a_vocabulary_too_small_for_the_characters_is_one_line_naming_the_option(tmp_path):
    corpus = user_corpus(tmp_path / "raw", cjk_pairs())
    with pytest.raises(SeqKDError) as caught:
        run_sentencepiece(tmp_path / "out", corpus, 100)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("set a larger --vocab-size")
    assert message.startswith(f"sentencepiece cannot build a 100-piece vocabulary from "
                              f"{corpus / 'train.src'} and train.tgt (420 distinct characters")


@slow
def test_vocab_size_option_reaches_sentencepiece(tmp_path):
    corpus = user_corpus(tmp_path / "raw", cjk_pairs())
    proc = run_cli("seqkd-demo", "--corpus", corpus, "--out", tmp_path / "o", "--preset", "ci",
                   "--vocab-size", "100", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("seqkd-demo: error: sentencepiece cannot build a 100-piece")
    assert last.endswith("set a larger --vocab-size")
    proc = run_cli("seqkd-demo", "--corpus", corpus, "--vocab-size", "4", "--dry-run",
                   check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "seqkd-demo: error: --vocab-size must be >= 8, got 4")
    proc = run_cli("seqkd-benchmark", "--corpus", corpus, "--vocab-size", "3000", "--dry-run")
    assert "joint BPE model, 3000 pieces" in proc.stdout


# ------------------------------------------------------------------ report helpers (no CLI)

GENERATE_LOG = """\
S-1\tb
H-1\t-0.5\t▁b
D-1\t-0.5\tthe cat
S-0\ta
D-0\t-0.2\tthe dog
D-2\t-0.3\t
2024-01-01 | INFO | fairseq_cli.generate | Translated 3 sentences (7 tokens) in 0.5s \
(6.00 sentences/s, 14.00 tokens/s)
Generate test with beam=1: BLEU4 = 1.00
"""


def test_parse_generate_orders_by_id_and_reads_fairseqs_timing():
    d = parse_decoding(GENERATE_LOG)
    assert d.hypotheses == ["the dog", "the cat", ""]
    assert (d.sentences, d.tokens) == (3, 7)
    assert d.seconds == pytest.approx(0.5) and d.tokens_per_second == pytest.approx(14.0)
    # the time comes from the rates, which have more digits than "in 0.9s"
    fast = parse_decoding(GENERATE_LOG.replace("in 0.5s (6.00 sentences/s, 14.00 tokens/s)",
                                               "in 0.9s (3.21 sentences/s, 7.49 tokens/s)"))
    assert fast.seconds == pytest.approx(7 / 7.49) and fast.tokens_per_second == \
        pytest.approx(7.49)


def test_parse_generate_rejects_incomplete_output():
    with pytest.raises(SeqKDError, match="no 'Translated N sentences"):
        parse_decoding("D-0\t-1\tx\n", "gen.txt")
    with pytest.raises(SeqKDError, match=r"gen.txt: 2 D- lines for 3 .*missing ids: \[2\]"):
        parse_decoding(GENERATE_LOG.replace("D-2\t-0.3\t\n", ""), "gen.txt")
    with pytest.raises(SeqKDError, match=r"gen.txt:7: sentence id 1 appears twice"):
        parse_decoding(GENERATE_LOG.replace("D-2\t-0.3\t\n", "D-2\t-0.3\t\nD-1\t0\tx\n"),
                       "gen.txt")


def test_bleu_is_sacrebleus_corpus_bleu():
    score, signature = bleu(["the cat sat on the mat"] * 2, ["the cat sat on the mat"] * 2)
    assert score == pytest.approx(100.0)
    assert signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    with pytest.raises(SeqKDError, match="2 hypotheses for 1 references"):
        bleu(["a", "b"], ["a"])


def rows() -> list[ModelResult]:
    return [
        ModelResult("Teacher (d=128, 3+3 layers)", 1_234_567, 1_234_567, 45.471, 45.81,
                    1228.4, 542.2, 2.26, 1.0, 0.007),
        ModelResult("Seq-KD, pruned", 98_765, 19_753, 40.0, 40.5, 9000.0, 3000.0, 16.6,
                    5.53, None),
    ]


def test_all_register_references_reproduce_the_corpus(tmp_path):
    spec = CorpusSpec(train=40, valid=15, test=25, registers=3)
    write_corpus(tmp_path, spec)
    refs = all_register_references(spec, tmp_path)
    gold = (tmp_path / "test.tgt").read_text().splitlines()
    assert len(refs) == 3 and all(len(r) == 25 for r in refs)
    assert all(gold[i] in {r[i] for r in refs} for i in range(25))
    assert all(register_of(r[i]) in (k, None) for k, r in enumerate(refs) for i in range(25))
    with pytest.raises(SeqKDError, match=r"test\.src:1: not the source the corpus spec draws"):
        all_register_references(replace(spec, seed=2), tmp_path)  # another corpus
    with pytest.raises(SeqKDError, match=r"test\.src has 25 lines; the corpus spec draws 30"):
        all_register_references(replace(spec, test=30), tmp_path)


def test_the_demo_report_warns_why_it_has_no_every_register_column(tmp_path):
    pipeline = Pipeline(tmp_path, PRESETS["ci"])
    write_corpus(pipeline.raw, replace(PRESETS["ci"].corpus, seed=2))  # not the preset's
    warn = io.StringIO()
    assert _every_register(pipeline, warn) == []
    assert warn.getvalue() == (f"warning: no BLEU against every register: {pipeline.raw}/"
                               "test.src:1: not the source the corpus spec draws (generator "
                               f"version {CORPUS_VERSION})\n")
    write_corpus(pipeline.raw, PRESETS["ci"].corpus)
    assert len(_every_register(pipeline, warn)) == PRESETS["ci"].corpus.registers


def test_format_table_aligns_columns_and_formats_numbers():
    table = format_table(rows(), beam=5)
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1  # every line equally wide
    header, body = table_rows(table)
    assert header[4] == "BLEU beam 5" and header[-1] == "mixed greedy"
    assert body[0][1:] == ["1.23M", "1.23M", "45.47", "45.81", "1,228", "542", "2.3x", "1.0x",
                           "0.7%"]
    assert body[1][1:3] == ["99k", "20k"] and body[1][-1] == "-"
    assert "mixed greedy" not in format_table(rows(), mixing=False)


def test_plot_is_written_atomically(tmp_path):
    path = tmp_path / "plot.png"
    plot_results(rows(), path)
    assert path.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


@pytest.mark.parametrize(("mono_bleu", "versus_seq", "versus_teacher"), [
    (52.0, "(+2.00, better)", "(+1.00: its greedy output passes its teacher's beam search)"),
    (49.0, "(-1.00, worse)", "(-2.00: still below its teacher's beam search)"),
    (51.001, "(+1.00, better)", "(+0.00: level with its teacher's beam search)"),
])
def test_the_mono_finding_reads_right_whichever_way_the_numbers_fall(mono_bleu, versus_seq,
                                                                     versus_teacher):
    tiny = PRESETS["tiny"]  # its numbers spelled out, so tuning the preset changes nothing here
    preset = replace(tiny, corpus=replace(tiny.corpus, mono=16000), student_epochs=7,
                     mono_student_epochs=14)
    bleus = {"teacher": 51.0, "seq-kd": 50.0, "seq-kd-mono": mono_bleu}
    models = Pipeline("unused", preset).models
    rows = [ModelResult(m.label, 1000, 500, bleus.get(m.key, 40.0), bleus.get(m.key, 40.0),
                        1.0, 1.0, 1.0, 1.0) for m in (*models, *DEPLOYED)]
    rows[models.index(SEQ_KD_MONO)].extra.update(parallel_pairs=8000, mono_pairs=15000)
    (finding,) = [f for f in demo_findings(preset, models, rows) if "More distilled" in f]
    assert "translated 16,000 generated source sentences that are in no split (15,000 kept" \
        in finding
    # 23,000 pairs for twice the epochs: about 5.75x the updates
    assert "trained on 8,000 + 15,000 pairs for 14 epochs (the Seq-KD student: 7), about " \
        "5.8x the Seq-KD student's updates" in finding
    assert f"greedy {mono_bleu:.2f} BLEU vs 50.00 for the Seq-KD student {versus_seq}" in finding
    assert f"and 51.00 for the teacher's beam 5 {versus_teacher}" in finding
    assert "More distilled" not in " ".join(demo_findings(
        preset, MODELS_WITHOUT_MONO, [r for m, r in zip((*models, *DEPLOYED), rows, strict=True)
                                      if m != SEQ_KD_MONO]))
