"""seqkd-benchmark (the Multi30k driver) end to end on 200 generated sentences at the ``ci``
preset: every stage wires up, the page has every table, a second run skips everything."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_seqkd.experiments.benchmark import BENCHMARK_PRESETS, TABLE1, Benchmark
from fairseq_seqkd.experiments.benchmark_page import ResultsPage
from fairseq_seqkd.experiments.benchmark_targets import BleuTarget
from fairseq_seqkd.experiments.corpus import CorpusSpec, write_corpus
from fairseq_seqkd.experiments.decode import read_decoding_run
from fairseq_seqkd.experiments.measures import reference_nll

from ..conftest import cli, run_cli

REPO = Path(__file__).resolve().parents[2]

slow = pytest.mark.slow
PRESET = BENCHMARK_PRESETS["ci"]
SENTENCES = 40  # per test set


def make_corpus(directory: Path) -> Path:
    """200 training pairs, valid, test and a second test set ``test_extra``."""
    write_corpus(directory, CorpusSpec(train=200, valid=SENTENCES, test=SENTENCES))
    for lang in ("src", "tgt"):
        shutil.copyfile(directory / f"valid.{lang}", directory / f"test_extra.{lang}")
    return directory


def benchmark(corpus: Path, out: Path, *args: object, check: bool = True):
    return run_cli("seqkd-benchmark", "--preset", "ci", "--corpus", corpus, "--out", out,
                   "--jobs", "2", *args, check=check, timeout=900)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The benchmark's recipe, examples/multi30k/run_table1.sh, on the generated corpus."""
    root = tmp_path_factory.mktemp("bench")
    corpus = make_corpus(root / "corpus")
    env = {**os.environ, "OUT": str(root / "out"), "DOC": str(root / "doc" / "bench.md"),
           "OMP_NUM_THREADS": "1", "PATH": f"{Path(cli('seqkd-benchmark')).parent}:"
           + os.environ.get("PATH", "")}
    proc = subprocess.run([str(REPO / "examples" / "multi30k" / "run_table1.sh"), str(corpus),
                           "--preset", "ci", "--jobs", "2"], capture_output=True, text=True,
                          env=env, timeout=1800)  # a loaded 2-core machine: ~16 min
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


def last_updates(log: str) -> int:
    """fairseq-train's update count at its last epoch."""
    return int(re.findall(r"\| train \| .*\| num_updates (\d+)", log)[-1])


def tables(markdown: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table of a page: (header, rows)."""
    found, lines = [], markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-:"):
            if i > 0 and lines[i - 1].startswith("|"):
                continue
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
            found.append((header, rows))
    return found


@slow
def test_every_stage_ran_and_every_model_was_decoded(first_run):
    root, proc = first_run
    out = root / "out"
    bench = Benchmark(out, PRESET, corpus=root / "corpus")
    assert bench.test_sets == ("test", "test_extra")
    names = [s.name for s in bench.stages()]
    assert len(names) == len(set(names))
    for name in names:
        assert re.search(rf"\] {re.escape(name)}\s+done in \d+s", proc.stdout), name
    assert not list((out / "stamps").glob("*.started.json"))
    # the second test set went through sentencepiece and fairseq-preprocess as test1
    assert (out / "data-bin" / "test1.src-tgt.src.bin").stat().st_size > 0
    for model in bench.models:
        assert (out / model.checkpoint).is_file(), model.key
        for test_set in bench.test_sets:
            for beam in (1, PRESET.beam):  # one decoding process per model
                run = read_decoding_run(out / "eval", model.key, bench.subset(test_set), beam)
                assert run.sentences == len(run.hypotheses) == SENTENCES and run.tokens > 0
        assert (out / "logs" / f"eval-{model.key}.log").read_text().count("$ ") == 1
    for name in ("gold", "seq-kd", "seq-inter"):
        assert (out / f"cache-{name}" / "train.cache.json").is_file()
    # word-level rows read the cache (no teacher beside the student); fine-tuned rows start
    # from the model they extend
    word_kd = (out / "logs" / "word-kd-js.log").read_text()
    assert "--teacher-cache" in word_kd and "--kd-divergence js" in word_kd
    assert "--teacher-path" not in word_kd
    all_three = (out / "logs" / "all-three.log").read_text()
    assert "models/seq-kd-word-kd/checkpoint_best.pt" in all_three
    assert "data-seq-inter" in all_three and "cache-seq-inter" in all_three
    # GKD rows: the Seq-KD student fine-tuned with the teacher online, for as many updates as
    # Seq-KD + Word-KD (same data, epochs, lr, warm-up)
    budget = r"--lr \S+ .*--warmup-updates \d+ --max-tokens \d+ --max-epoch \d+"
    word_kd_log = (out / "logs" / "seq-kd-word-kd.log").read_text()
    for model in bench.gkd_models:
        gkd = (out / "logs" / f"{model.key}.log").read_text()
        assert "--criterion gkd" in gkd and "--gkd-lambda 0.5" in gkd
        assert "--teacher-path" in gkd and "--teacher-cache" not in gkd
        assert "--finetune-from-model $OUT/models/seq-kd/checkpoint_best.pt" in gkd
        assert re.search(budget, gkd)[0] == re.search(budget, word_kd_log)[0]
        assert last_updates(gkd) == last_updates(word_kd_log) > 0
    assert [m.key for m in bench.gkd_models] == ["seq-kd-gkd-0.1", "seq-kd-gkd-0.5"]
    # the filtered build reuses the Seq-KD build's n-best and drops the worst-scored 10 %
    build = (out / "logs" / "build-seq-kd-filtered.log").read_text()
    assert "[1/3] generate: skipped" in build and "worst-scored 10 %" in build
    kept = (out / "data-seq-kd-filtered" / "train.kept-indices").read_text().split()
    assert 150 < len(kept) <= 180  # 200 training pairs less 10 % (and any empty output)
    # epoch checkpoints kept and averaged, valid scored by best and average
    teacher_log = (out / "logs" / "teacher.log").read_text()
    assert "--keep-last-epochs 2 --patience 2" in teacher_log
    assert "--no-epoch-checkpoints --patience 2" in (out / "logs" / "baseline.log").read_text()
    assert (out / "models" / "teacher" / "checkpoint2.pt").is_file()
    avg = (out / "logs" / "avg-teacher.log").read_text()
    assert "seqkd-export --checkpoint-dir $OUT/models/teacher --average-last 2" in avg
    for name in ("teacher", "teacher-avg2"):
        assert reference_nll((out / "valid" / f"{name}.txt").read_text()) > 0
    # gradual pruning from the Seq-KD student at the student's lr, no patience
    for key, scheme in (("pruned-90", "class-blind"),
                        ("pruned-80-class-distribution", "class-distribution")):
        log = (out / "logs" / f"{key}.log").read_text()
        assert (f"--prune-scheme {scheme} --prune-schedule gradual --prune-at-update 0 "
                "--prune-end-update 2 --prune-interval 1") in log
        assert "--lr 0.01 " in log and "--patience" not in log
        # decoded from the last checkpoint, the one at the full sparsity
        decoded = (out / "logs" / f"eval-{key}.log").read_text()
        assert f"{key}=fairseq:$OUT/models/{key}/checkpoint_last.pt" in decoded
    # the 8-best Seq-Inter build, the Seq-KD data of Teacher + Seq-Inter, the seeds
    assert "--beam 8 --nbest 8" in (out / "logs" / "build-seq-inter-8.log").read_text()
    assert "--teacher $OUT/models/teacher-seq-inter/checkpoint_best.pt" in (
        out / "logs" / "build-seq-kd-strong.log").read_text()
    seeded = (out / "logs" / "all-three-seed2.log").read_text()
    assert "--seed 2 " in seeded
    assert "--finetune-from-model $OUT/models/seq-kd-word-kd-seed2/checkpoint_best.pt" in seeded
    assert [m.key for m in bench.seed_models] == ["seq-kd-seed2", "seq-kd-word-kd-seed2",
                                                  "all-three-seed2"]
    speed = sorted(p.name for p in (out / "speed").iterdir())
    assert len(speed) == 7 and "teacher.beam5.batch1.txt" in speed
    assert "seq-kd.beam1.batch1.txt" in speed and "deploy.json" in speed
    deploy = json.loads((out / "speed" / "deploy.json").read_text())
    runs = {(r["label"], r["batch"]): r for r in deploy}
    assert len(runs) == 2 * 7  # 3 fairseq + 4 CTranslate2 rows at batch 1 and 64
    assert runs["teacher", 1]["beam"] == runs["teacher (CT2 int8)", 64]["beam"] == 5
    assert runs["student (CT2 int8)", 64]["beam"] == 1
    assert all(r["sentences"] == SENTENCES and r["tokens"] > 0 and 0 <= r["bleu"] <= 100
               for r in deploy)
    int8, f32 = runs["student (CT2 int8)", 1], runs["student (CT2 float32)", 1]
    assert int8["size_bytes"] < f32["size_bytes"] and int8["params"] == f32["params"]


@slow
def test_results_page_has_every_table(first_run):
    root, proc = first_run
    page = (root / "doc" / "bench.md").read_text()
    assert page == (root / "out" / "results.md").read_text().replace(
        "results.png", "bench.png")
    found = tables(page)
    assert len(found) == 11
    (table1, seeds, averaging, source, pruning, sparsity, divergences, onpolicy, speed,
     deploy) = found[:10]
    header, rows = table1
    assert header[:6] == ["model", "params", "test greedy", "test beam 5",
                          "greedy vs baseline", "greedy = beam"]
    assert header[6] == "test_extra greedy / beam 5"
    assert [r[0] for r in rows][3:] == [m.label for m in TABLE1][3:]
    for row in rows:
        assert 0 <= float(row[2]) <= 100 and 0 <= float(row[3]) <= 100
        assert re.fullmatch(r"\d+\.\d%", row[5])
        assert re.fullmatch(r"[\d.]+ / [\d.]+", row[6])
    params = [int(r[1].replace(",", "")) for r in rows]
    assert params[0] == params[1] > 2 * params[2] and len(set(params[2:])) == 1
    assert [r[0] for r in divergences[1]] == ["kl (Word-KD above)", "js"]
    # seeds, averaging, the stronger source, pruning schemes
    assert [r[:2] for r in seeds[1]] == [["Seq-KD", "2"], ["Seq-KD + Word-KD", "2"],
                                         ["Seq-KD + Seq-Inter + Word-KD", "2"]]
    assert all(re.fullmatch(r"[\d.]+ ± [\d.]+", c) for r in seeds[1] for c in r[2:])
    assert re.search(r"Seed noise: [\d.]+ BLEU", page)
    assert re.search(r"- Seq-KD \+ Seq-Inter \+ Word-KD minus Seq-KD, mean greedy on test: "
                     r"[+-][\d.]+( \(< 2 std\))?\n", page)
    assert averaging[1][0][0].startswith("Teacher") and averaging[1][0][1] == "2"
    assert averaging[1][0][4] in ("best", "average") and float(averaging[1][0][2]) > 0
    assert re.search(r"On valid, the average has the lower valid NLL for [01] of 1 models", page)
    assert [r[0] for r in source[1]] == ["Seq-KD", "Seq-KD, data from Teacher + Seq-Inter",
                                         "Seq-KD + Seq-Inter", "Seq-KD + Seq-Inter (8-best)"]
    assert pruning[0][-1] == "valid loss by epoch"
    assert re.fullmatch(r"[\d.]+", pruning[1][1][6])  # one retraining epoch, one validation
    assert sparsity[0] == ["matrix", "Seq-KD, pruned 80%", "Seq-KD, pruned 90%",
                           "Seq-KD, pruned 80% class-distribution"]
    assert sparsity[1][0][0] == "encoder.embed_tokens"
    assert not any(r[0] == "decoder.embed_tokens" for r in sparsity[1])  # tied: counted once
    assert "*Run: `--part table1`.*" in page and "*Run: `--part extra`.*" in page
    # one list of targets, every line judged (the deployment target gives one line per check)
    assert page.count("## Targets against this run") == 1 and not re.search(r"issue \d", page)
    targets = page.split("## Targets against this run\n\n")[1].split("\n\n")[0].splitlines()
    bleu_targets = [t for t in PRESET.targets if isinstance(t, BleuTarget)]
    assert len(targets) > len(bleu_targets) == 5
    assert all(re.fullmatch(r"- .*: \*\*(met|MISSED)\*\*", t) for t in targets), targets
    assert re.fullmatch(r"- best GKD row greedy at least 0\.5 BLEU above Seq-KD \+ Word-KD greedy "
                        r"on test \(Seq-KD \+ GKD \(beta 0\.\d\) greedy [\d.]+ vs Seq-KD \+ "
                        r"Word-KD greedy [\d.]+: [+-][\d.]+; test_extra [+-][\d.]+\): "
                        r"\*\*(met|MISSED)\*\*", targets[4])
    assert targets[5].startswith("- best deployed student (")
    assert onpolicy[0][4] == "greedy vs Seq-KD + Word-KD"
    assert [r[0] for r in onpolicy[1]] == ["Seq-KD", "Seq-KD + Word-KD", "Seq-KD + GKD (beta 0.1)",
                                           "Seq-KD + GKD (beta 0.5)", "Seq-KD, filtered 10 %"]
    assert all(0 <= float(r[2]) <= 100 and re.fullmatch(r"[\d.]+ / [\d.]+", r[6])
               for r in onpolicy[1])
    assert onpolicy[1][1][4] == ""
    assert re.fullmatch(r"[+-]\d+\.\d\d( \(< 2 std\))?", onpolicy[1][2][4])
    nonzero = {r[0]: int(r[2].replace(",", "")) / int(r[1].replace(",", ""))
               for r in pruning[1]}
    assert nonzero["Seq-KD"] == 1.0
    assert nonzero["Seq-KD, pruned 90%"] < nonzero["Seq-KD, pruned 80%"] < 0.75
    assert nonzero["Seq-KD, pruned 80% class-distribution"] < 0.75
    assert len(speed[1]) == 6 and speed[1][0][:3] == ["teacher", "5", "40"]
    assert speed[1][0][5] == "1.0x"
    assert deploy[0][:6] == ["model", "engine", "beam", "batch", "tokens/s", "speed-up"]
    assert len(deploy[1]) == 14 and deploy[1][0][:2] == ["teacher", "fairseq"]
    assert deploy[1][0][5] == "1.0x"
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in page
    # exact commands, written as a user would type them, without this machine's paths
    commands = page.split("<details>")[1]
    assert "\nfairseq-train $OUT/data-bin --user-dir fairseq_seqkd" in commands
    assert "seqkd-cache-teacher $OUT/data-bin" in commands and str(root / "out") not in page
    logs = root / "doc" / "bench-logs"
    assert (logs / "teacher.log").read_text().startswith("$ ")
    assert str(root / "out") not in (logs / "results.json").read_text()
    assert (root / "doc" / "bench.png").read_bytes().startswith(b"\x89PNG")
    payload = json.loads((root / "out" / "results.json").read_text())
    assert set(payload["scores"]) == {m.key for m in Benchmark(
        root / "out", PRESET, corpus=root / "corpus").models}
    assert rows[4][2] in proc.stdout  # the terminal shows Table 1


@slow
def test_page_and_logs_hold_no_path_of_the_machine(first_run):
    root, _ = first_run
    doc, out = root / "doc", root / "out"
    machine = (str(root), str(REPO), sys.prefix)  # output, corpus and doc; plugin; venv
    written = [doc / "bench.md", *sorted((doc / "bench-logs").iterdir()),
               *sorted((out / "logs").iterdir())]
    assert len(written) > 60
    for path in written:
        text = path.read_text(encoding="utf-8")
        if path.parent == out / "logs":  # fairseq's own output there is the machine's
            text = "\n".join(line for line in text.splitlines() if line.startswith("$ "))
        found = [place for place in machine if place in text]
        assert not found, f"{path}: {found}"
    page = (doc / "bench.md").read_text(encoding="utf-8")
    assert "- Corpus `corpus` (`$CORPUS` below): 200 training pairs" in page
    assert '"input": "$CORPUS/train.src,$CORPUS/train.tgt"' in page
    logs = doc / "bench-logs"
    assert (logs / "baseline.log").read_text().startswith(
        "$ $VENV/bin/fairseq-train $OUT/data-bin --user-dir $REPO/fairseq_seqkd ")
    assert "encoded $CORPUS/train.src -> $OUT/spm/train.src" in (
        logs / "sentencepiece.log").read_text()


@slow
def test_second_run_skips_every_stage_and_report_only_runs_nothing(first_run):
    root, _ = first_run
    proc = benchmark(root / "corpus", root / "out")
    assert "started" not in proc.stdout and proc.stdout.count("skipped: done before") >= 30
    proc = benchmark(root / "corpus", root / "out", "--report-only")
    assert "skipped" not in proc.stdout and "| Seq-KD |" in proc.stdout
    # a person's reading of the run goes on the page right after the targets
    analysis = root / "analysis.md"
    analysis.write_text("### Why the targets were missed\n\nThe models are tiny.\n")
    benchmark(root / "corpus", root / "out", "--report-only", "--analysis", analysis)
    page = (root / "out" / "results.md").read_text()
    targets = page.index("## Targets against this run")
    assert targets < page.index("### Why the targets were missed") < page.index("![")
    proc = benchmark(root / "corpus", root / "out", "--report-only", "--analysis",
                     root / "missing.md", check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(
        f"seqkd-benchmark: error: --analysis: cannot read {root / 'missing.md'}")


def test_bad_corpus_gets_one_line_error(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    (corpus / "test_extra.tgt").write_text("one line\n")
    proc = benchmark(corpus, tmp_path / "out", check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"seqkd-benchmark: error: --corpus: {corpus / 'test_extra.src'} and "
                    f"{corpus / 'test_extra.tgt'} differ in line count")
    (corpus / "test_extra.tgt").unlink()
    proc = benchmark(corpus, tmp_path / "out", check=False)
    assert proc.stderr.strip().splitlines()[-1].endswith("has no test_extra.tgt beside it")
    proc = benchmark(tmp_path / "missing", tmp_path / "out", check=False)
    assert "--corpus" in proc.stderr.strip().splitlines()[-1] and proc.returncode != 0


def test_targets_take_the_best_of_every_student_row_and_judge_pruning_gkd_and_the_gap(tmp_path):
    bench = Benchmark(tmp_path / "out", PRESET, corpus=tmp_path / "corpus")

    def targets(beam5: dict[str, float], **greedy: float | None) -> list[str]:
        scores = {m.key: {"params": None, "nonzero": None, "same": None,
                          "test.beam1": greedy.get(m.key, 30.0),
                          "test.beam5": beam5.get(m.key, 31.0)} for m in bench.models}
        page = ResultsPage(bench, scores, [], [], "")
        return [line for line in page.targets() if line.startswith("- ")]

    best, gap, pruned_80, pruned_90, gkd, deploy = targets(
        {"teacher": 34.0, "seq-kd": 32.0}, **{"seq-kd-gkd-0.1": 33.6, "seq-kd": 31.6,
                                              "pruned-80": 31.0, "pruned-90": 30.0})
    # an on-policy row is a student too
    assert best.endswith("(Seq-KD + GKD (beta 0.1) greedy 33.60 vs Teacher beam 5 34.00: -0.40): "
                         "**met**")
    assert gap.endswith("(Seq-KD beam 5 32.00 vs Seq-KD greedy 31.60: +0.40): **met**")
    assert pruned_80.endswith("-0.60): **MISSED**") and pruned_90.endswith("-1.60): **MISSED**")
    assert gkd == ("- best GKD row greedy at least 0.5 BLEU above Seq-KD + Word-KD greedy on test "
                   "(Seq-KD + GKD (beta 0.1) greedy 33.60 vs Seq-KD + Word-KD greedy 30.00: "
                   "+3.60): **met**")
    assert deploy.endswith("**not measured yet**")  # no deployment measurement
    best, gap, _, _, gkd, _ = targets({"teacher": 34.0}, **{"seq-kd-gkd-0.1": None,
                                                            "seq-kd-gkd-0.5": 30.49})
    assert best.endswith("(Seq-KD + GKD (beta 0.5) greedy 30.49 vs Teacher beam 5 34.00: -3.51): "
                         "**MISSED**")
    assert gap.endswith("(Seq-KD beam 5 31.00 vs Seq-KD greedy 30.00: +1.00): **MISSED**")
    assert gkd.endswith("(Seq-KD + GKD (beta 0.5) greedy 30.49 vs Seq-KD + Word-KD greedy 30.00: "
                        "+0.49): **MISSED**")  # one GKD row done
    assert targets({}, **{"pruned-80": None})[2].endswith("**not measured yet**")
    assert targets({}, **{"seq-kd-gkd-0.1": None, "seq-kd-gkd-0.5": None})[4] == (
        "- best GKD row greedy at least 0.5 BLEU above Seq-KD + Word-KD greedy on test: "
        "**not measured yet**")


def test_a_partial_run_page_names_its_stages_and_lists_only_their_commands(tmp_path):
    """--only: the page says which stages the run had; the command list holds just those."""
    corpus = make_corpus(tmp_path / "corpus")
    bench = Benchmark(tmp_path / "out", BENCHMARK_PRESETS["ci"], corpus=corpus,
                      only=("eval-seq-kd",))
    how = "\n".join(ResultsPage(bench, {}, [], [], "").how())
    names = [n for n in re.findall(r"^# ([\w.-]+): ", how, flags=re.M) if n != "in-process"]
    assert names == ["sentencepiece", "preprocess", "teacher", "build-seq-kd", "seq-kd",
                     "eval-seq-kd"]
    assert f"`--only eval-seq-kd`, i.e. 6 of the {len(bench.stages())} stages" in how
    everything = Benchmark(tmp_path / "out", BENCHMARK_PRESETS["ci"], corpus=corpus)
    assert "This run" not in "\n".join(ResultsPage(everything, {}, [], [], "").how())


def test_parts_split_the_stage_list_and_pull_in_what_they_need(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    parts = {part: [s.name for s in Benchmark(tmp_path / "out", PRESET, corpus=corpus,
                                              part=part).selected_stages()]
             for part in ("table1", "extra")}
    everything = [s.name for s in Benchmark(tmp_path / "out", PRESET, corpus=corpus).stages()]
    assert set(parts["table1"]) | set(parts["extra"]) == set(everything)
    assert {"speed", "avg-teacher", "pruned-80", "pruned-90"} <= set(parts["table1"])
    assert "seq-kd-seed2" not in parts["table1"]
    # the comparisons beside table1's targets: the 20-best source, the other pruning schemes
    assert not {"pruned-80-class-distribution", "build-seq-inter-8"} & set(parts["table1"])
    assert {"seq-kd-seed2", "seq-kd-strong", "deploy-speed", "seq-kd-gkd-0.1",
            "pruned-80-class-distribution", "build-seq-inter-8",
            "seq-kd-seq-inter-8"} <= set(parts["extra"])
    # extra starts with what acts on the targets: the stronger source, then the seeds
    extra = parts["extra"]
    assert (extra.index("seq-kd-strong") < extra.index("seq-kd-seed2")
            < extra.index("build-seq-inter-8") < extra.index("pruned-80-class-distribution"))
    # the extra run reads the table1 run's models; they are pulled in (and skipped when done)
    assert {"teacher", "teacher-seq-inter", "cache-seq-inter"} <= set(parts["extra"])
    assert "eval-teacher" not in parts["extra"] and "speed" not in parts["extra"]
    proc = benchmark(corpus, tmp_path / "out", "--part", "extra", "--only", "speed",
                     check=False)
    assert proc.stderr.strip().splitlines()[-1] == (
        "seqkd-benchmark: error: --part and --only cannot be combined")
