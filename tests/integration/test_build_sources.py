"""seqkd-build's sources of targets beyond the parallel split decoded by a fairseq teacher:
monolingual source text (--mono-source), a CTranslate2 teacher (--teacher DIR) and translations
made by another system (--translations), on the tiny fixtures, through the console script."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fairseq.data import Dictionary, data_utils
from fairseq.tasks.translation import load_langpair_dataset

from fairseq_seqkd.cli import build
from fairseq_seqkd.data.teacher_cache import read_meta
from fairseq_seqkd.digests import file_sha256
from fairseq_seqkd.distill.binarize import token_lines
from fairseq_seqkd.distill.nbest import read_nbest
from fairseq_seqkd.distill.select import repeat_run

from ..conftest import PLUGIN, run_cli, write_toy_corpus

pytestmark = pytest.mark.slow

PAIR = "valid.src-tgt."
LANGS = ("src", "tgt")
BUILD = ("--beam", "3", "--cpu", "--batch-size", "200", "--split", "valid")  # 60 sentences
STAGES = ("mono", "generate", "generate-mono", "select", "binarize")


def stages(log: str) -> dict[str, str]:
    """{'generate': the reason it runs, or 'skipped'} from seqkd-build's log."""
    return {name: reason or "skipped" for name, reason in
            re.findall(r"\[\d/\d\] ([\w-]+): (?:running \((.*?)\)(?=: |$)|skipped)", log, re.M)}


def dicts(data: Path) -> tuple[Dictionary, Dictionary]:
    return tuple(Dictionary.load(str(data / f"dict.{lang}.txt")) for lang in LANGS)


def split_lines(data: Path, lang: str, split: str = "valid") -> list[str]:
    d = Dictionary.load(str(data / f"dict.{lang}.txt"))
    return token_lines(data_utils.load_indexed_dataset(str(data / f"{split}.src-tgt.{lang}"), d),
                       d)


def built(out: Path) -> dict[str, bytes]:
    """What a build made: the n-bests, the distilled split and its provenance."""
    files = [out / "seqkd/generate/valid.nbest", out / "seqkd/generate-mono/mono.nbest",
             out / "valid.provenance.tsv"] + [
        out / f"{PAIR}{lang}.{ext}" for lang in LANGS for ext in ("bin", "idx")]
    return {f.name: f.read_bytes() for f in files}


def record(out: Path, stage: str) -> dict:
    return json.loads((out / "seqkd" / stage / "done.json").read_text())["summary"]


@pytest.fixture(scope="module")
def mono(tmp_path_factory) -> dict:
    """Two monolingual files: new sentences of the toy language with an empty line, a line over
    the teacher's 1,024 positions and a line mostly out of the dictionary."""
    raw = tmp_path_factory.mktemp("mono-raw")
    write_toy_corpus(raw, seed=7, sizes={"mono": 80})
    lines = (raw / "mono.src").read_text().splitlines()
    first = [*lines[:40], "", " ".join(["w1"] * 1100), "q1 q2 q3 w4"]
    second = ["  ", *lines[40:]]
    (raw / "a.txt").write_text("\n".join(first) + "\n")
    (raw / "b.txt").write_text("\r\n".join(second))
    kept = [*lines[:40], "q1 q2 q3 w4", *lines[40:]]
    return {"files": [raw / "a.txt", raw / "b.txt"], "kept": kept, "raw": raw,
            "lines": {"a": first, "b": second}}


def mono_args(mono: dict) -> list[str]:
    return [arg for path in mono["files"] for arg in ("--mono-source", str(path))]


@pytest.fixture(scope="module")
def ct2_teacher(teacher_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ct2") / "float32"
    run_cli("seqkd-export", "--input", teacher_ckpt, "--format", "ctranslate2",
            "--quantization", "float32", "--output", out)
    return out


@pytest.fixture(scope="module")
def inter_mono(toy_bin, teacher_ckpt, mono, tmp_path_factory) -> tuple[Path, object]:
    """Seq-Inter with --max-repeats 2 on the valid split and the two monolingual files."""
    out = tmp_path_factory.mktemp("inter-mono") / "kd"
    proc = run_cli("seqkd-build", "--data", toy_bin, "--teacher", teacher_ckpt, "--output", out,
                   "--strategy", "seq-inter", "--max-repeats", "2", *BUILD, *mono_args(mono))
    return out, proc


def test_mono_pairs_follow_the_parallel_ones_with_their_provenance(inter_mono, toy_bin, mono):
    out, proc = inter_mono
    a, b = (str(path) for path in mono["files"])
    # said once: Seq-Inter has no reference in the monolingual text
    assert proc.stdout.count("--mono-source text has none: its sentences get the teacher's best "
                             "hypothesis") == 1
    # the unk-heavy line, once, on stderr; the empty and the too long lines skipped and counted
    unk = [line for line in proc.stderr.splitlines() if "more than half" in line]
    assert unk == [f"seqkd-build: warning: 1 of 81 --mono-source lines have more than half "
                   f"their tokens <unk> after segmentation (first: {a}:43); without --spm-model "
                   f"the lines must already be segmented into the teacher's dictionary; raw "
                   f"text needs --spm-model"]
    assert "(2 empty, 1 longer than 1023 tokens skipped, 1 unk-heavy)" in proc.stdout
    sources = record(out, "mono")["sources"]
    assert [(s["path"], s["sha256"], s["read"], s["kept"], s["empty"], s["too_long"],
             s["unk_heavy"]) for s in sources] == [
        (a, file_sha256(a), 43, 41, 1, 1, 1), (b, file_sha256(b), 41, 40, 1, 0, 0)]

    # the same filters as the parallel part: --max-repeats drops the looping best hypotheses
    mono_nbest = read_nbest(out / "seqkd/generate-mono/mono.nbest")
    assert sorted(mono_nbest) == list(range(81)) and {len(h) for h in mono_nbest.values()} == {1}
    looping = {i for i, hyps in mono_nbest.items() if repeat_run(hyps[0].tokens.split()) > 2}
    report = json.loads((out / "seqkd/select/report.json").read_text())
    assert report == record(out, "select")
    part = report["mono"]
    assert looping and part["repeats"] == len(looping)
    assert part["kept"] == part["best_hypothesis_for_seq_inter"] == 81 - len(looping)
    assert report["strategy"] == "seq-inter" and report["sentences"] == 60

    # one split: the 60 gold-aligned pairs, then the kept monolingual ones in order
    src_dict, tgt_dict = dicts(toy_bin)
    pairs = load_langpair_dataset(
        str(out), "valid", "src", src_dict, "tgt", tgt_dict, combine=False, dataset_impl=None,
        upsample_primary=1, left_pad_source=True, left_pad_target=False,
        max_source_positions=1024, max_target_positions=1024)
    kept = [i for i in range(81) if i not in looping]
    assert len(pairs) == 60 + len(kept)
    sources_out = [src_dict.string(pairs[i]["source"]) for i in range(len(pairs))]
    targets_out = [tgt_dict.string(pairs[i]["target"]) for i in range(len(pairs))]
    assert sources_out[:60] == split_lines(toy_bin, "src")
    assert sources_out[60:] == [mono["kept"][i] for i in kept]
    assert targets_out[60:] == [mono_nbest[i][0].tokens for i in kept]
    assert record(out, "binarize")["parallel"] == 60
    assert record(out, "binarize")["mono"] == len(kept)

    rows = (out / "valid.provenance.tsv").read_text().splitlines()
    line_of = [(0, n) for n in [*range(1, 41), 43]] + [(1, n) for n in range(2, 42)]
    assert rows == ["origin\tline", *(f"parallel\t{i}" for i in range(60)),
                    *(f"{line_of[i][0]}\t{line_of[i][1]}" for i in kept)]
    assert f"({60} parallel + {len(kept)} monolingual pairs; fairseq-train" in proc.stdout
    assert "--distilled-data" not in proc.stdout.splitlines()[-1]  # not aligned with the gold


def test_a_rerun_skips_every_stage_and_a_new_size_redoes_only_the_mono_part(
        inter_mono, toy_bin, teacher_ckpt, mono, tmp_path, capsys):
    out = tmp_path / "kd"
    shutil.copytree(inter_mono[0], out)
    argv = ["--data", str(toy_bin), "--teacher", str(teacher_ckpt), "--output", str(out),
            "--strategy", "seq-inter", "--max-repeats", "2", *BUILD, *mono_args(mono)]
    assert build.main(argv) == 0
    assert stages(capsys.readouterr().out) == dict.fromkeys(STAGES, "skipped")
    assert build.main([*argv, "--mono-size", "30"]) == 0
    log = capsys.readouterr().out
    reasons = stages(log)
    assert reasons.pop("mono") == "options changed (size: None -> 30)"
    assert reasons.pop("generate") == "skipped"
    assert all(reason.startswith("input ") for reason in reasons.values()), reasons
    assert record(out, "mono")["sentences"] == 30
    assert len(read_nbest(out / "seqkd/generate-mono/mono.nbest")) == 30


class Killed(Exception):
    pass


@pytest.mark.parametrize("engine", ["fairseq", "ctranslate2"])
def test_a_build_killed_while_decoding_the_mono_text_resumes_to_the_same_bytes(
        engine, toy_bin, teacher_ckpt, ct2_teacher, mono, tmp_path, capsys, monkeypatch):
    from fairseq_seqkd.distill import chunks, options

    monkeypatch.setattr(options, "DEFAULT_CHUNK_SIZE", 10)  # 6 parallel chunks, 9 mono ones
    teacher = teacher_ckpt if engine == "fairseq" else ct2_teacher
    fresh, out = tmp_path / "fresh", tmp_path / "kd"

    def argv(output: Path) -> list[str]:
        return ["--data", str(toy_bin), "--teacher", str(teacher), "--output", str(output),
                "--strategy", "seq-kd", *BUILD, *mono_args(mono)]

    assert build.main(argv(fresh)) == 0
    real_commit, calls = chunks.ChunkStore.commit, []

    def commit(self, chunk, text):
        calls.append(chunk)
        if len(calls) == 6 + 3:  # the parallel split's chunks, then two of the mono text
            raise Killed
        real_commit(self, chunk, text)

    monkeypatch.setattr(chunks.ChunkStore, "commit", commit)
    with pytest.raises(Killed):
        build.main(argv(out))
    monkeypatch.setattr(chunks.ChunkStore, "commit", real_commit)
    capsys.readouterr()
    parts = out / "seqkd/generate-mono/mono.nbest.parts"
    assert len(list(parts.glob("chunk-*.tsv"))) == 2
    assert build.main(argv(out)) == 0
    log = capsys.readouterr().out
    assert stages(log) == {"mono": "skipped", "generate": "skipped",
                           "generate-mono": "resuming an unfinished run", "select": "first run",
                           "binarize": "first run"}
    assert "; 2 of 9 chunks resumed" in log
    assert built(out) == built(fresh)


def test_the_teacher_cache_runs_on_the_combined_split(inter_mono, teacher_ckpt, tmp_path):
    out = inter_mono[0]
    size = record(out, "binarize")["sentences"]
    assert size > 60
    proc = run_cli("seqkd-cache-teacher", out, "--user-dir", PLUGIN, "--path", teacher_ckpt,
                   "--gen-subset", "valid", "--cpu", "--max-tokens", "1000", "--output",
                   tmp_path / "cache", "--no-progress-bar")
    assert f"{size} sentences" in proc.stdout
    assert read_meta(str(tmp_path / "cache"), "valid").size == size


def test_a_ctranslate2_teacher_builds_the_fairseq_teachers_targets(toy_bin, teacher_ckpt,
                                                                   ct2_teacher, tmp_path):
    targets = {}
    for name, teacher in (("fairseq", teacher_ckpt), ("ctranslate2", ct2_teacher)):
        out = tmp_path / name
        run_cli("seqkd-build", "--data", toy_bin, "--teacher", teacher, "--output", out,
                "--strategy", "seq-kd", "--beam", "5", "--cpu", "--batch-size", "64",
                "--teacher-threads", "1")
        assert record(out, "generate")["engine"] == name
        targets[name] = (out / "seqkd/select/train.targets").read_text().splitlines()
    assert len(targets["fairseq"]) == len(targets["ctranslate2"]) == 600
    same = sum(a == b for a, b in zip(targets["fairseq"], targets["ctranslate2"], strict=True))
    assert same >= 0.95 * 600, same


def test_ctranslate2_options_in_the_key(toy_bin, ct2_teacher, tmp_path, capsys):
    out = tmp_path / "kd"
    argv = ["--data", str(toy_bin), "--teacher", str(ct2_teacher), "--output", str(out),
            "--strategy", "seq-kd", *BUILD]
    assert build.main([*argv, "--teacher-threads", "1"]) == 0
    capsys.readouterr()
    assert build.main([*argv, "--teacher-threads", "2"]) == 0  # threads: same n-best
    assert set(stages(capsys.readouterr().out).values()) == {"skipped"}
    assert build.main([*argv, "--teacher-quantization", "int8"]) == 0
    assert stages(capsys.readouterr().out)["generate"] == (
        "options changed (quantization: default -> int8)")


def refused(argv: list[str], pattern: str, out: Path, capsys) -> None:
    """Exit 1 with one error line matching ``pattern``, and nothing written."""
    assert build.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(f"seqkd-build: error: {pattern}", err[0]), err
    assert not out.exists()


def test_what_is_not_a_ctranslate2_model_and_other_vocabularies_are_refused(
        toy_bin, ct2_teacher, mono, tmp_path, capsys):
    out = tmp_path / "kd"
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--data", str(toy_bin), "--output", str(out), "--strategy", "seq-kd", *BUILD,
            *mono_args(mono)]
    refused([*args, "--teacher", str(empty)],
            rf"--teacher {empty}: not a CTranslate2 model directory \(no model.bin\); give a "
            rf"seqkd-export --format ctranslate2 directory", out, capsys)
    other = tmp_path / "other"
    shutil.copytree(ct2_teacher, other)
    vocab = json.loads((other / "shared_vocabulary.json").read_text())
    vocab[7], vocab[8] = vocab[8], vocab[7]
    (other / "shared_vocabulary.json").write_text(json.dumps(vocab))
    refused([*args, "--teacher", str(other)],
            rf"--teacher {other}: its source vocabulary differs from --data "
            rf"{toy_bin / 'dict.src.txt'} at position 7: '{vocab[7]}' in the model, "
            rf"'{vocab[8]}' in the dictionary .*", out, capsys)
    refused([*args, "--teacher", str(ct2_teacher), "--teacher-quantization", "int3"],
            r"argument --teacher-quantization: invalid choice: 'int3' .*", out, capsys)


def test_a_mono_line_that_is_not_utf8_is_named_and_nothing_is_written(
        toy_bin, teacher_ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"w1 w2\nw3 w4\nw5 \xff w6\n")
    out = tmp_path / "kd"
    assert build.main(["--data", str(toy_bin), "--teacher", str(teacher_ckpt), "--output",
                       str(out), "--strategy", "seq-kd", *BUILD, "--mono-source",
                       str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"seqkd-build: error: {bad}:3: invalid UTF-8 byte 0xff at column 4"]
    assert not (out / f"{PAIR}tgt.bin").exists()
    assert not list(out.glob("seqkd/mono/*.bin"))


def test_translations_from_another_system_are_the_targets(toy_bin, mono, tmp_path, capsys):
    """No teacher: one translation per sentence of the split and per monolingual input line;
    an empty translation gives its sentence the reference (parallel) or drops it (mono)."""
    references = split_lines(toy_bin, "tgt")
    translations = [" ".join(reversed(r.split())) for r in references]
    translations[5] = ""
    (tmp_path / "valid.hyp").write_text("\n".join(translations) + "\n")
    per_line = {"a": [f"W{i % 30}" for i in range(43)], "b": [f"W{i % 7} W1" for i in range(41)]}
    per_line["b"][10] = ""
    for name in ("a", "b"):
        (tmp_path / f"{name}.hyp").write_text("\n".join(per_line[name]) + "\n")
    kept_lines = [("a", n) for n in [*range(40), 42]] + [("b", n) for n in range(1, 41)]
    hyps = [per_line[name][n] for name, n in kept_lines]
    out = tmp_path / "kd"
    argv = ["--data", str(toy_bin), "--output", str(out), "--strategy", "seq-kd", *BUILD,
            "--translations", str(tmp_path / "valid.hyp"), *mono_args(mono),
            "--mono-translations", str(tmp_path / "a.hyp"),
            "--mono-translations", str(tmp_path / "b.hyp")]
    assert build.main(argv) == 0
    assert record(out, "generate")["engine"] == "translations"
    assert split_lines(out, "tgt") == [
        *(references[i] if i == 5 else t for i, t in enumerate(translations)),
        *(h for h in hyps if h)]
    assert json.loads((out / "seqkd/select/report.json").read_text())["mono"]["empty"] == 1

    # a count that differs names both; options that need teacher scores are refused
    out2 = tmp_path / "kd2"
    (tmp_path / "short.hyp").write_text("\n".join(translations[:-1]) + "\n")
    base = ["--data", str(toy_bin), "--output", str(out2), "--strategy", "seq-kd", *BUILD]
    capsys.readouterr()
    refused([*base, "--translations", str(tmp_path / "short.hyp")],
            rf"--translations {tmp_path / 'short.hyp'} has 59 lines, but the valid split of "
            rf"{toy_bin} has 60 sentences; give one translation per source sentence, in order",
            out2, capsys)
    refused([*base, "--translations", str(tmp_path / "valid.hyp"), "--min-score", "-1"],
            r"--min-score drops hypotheses the teacher scores low, but --translations gives one "
            r"translation per sentence from another system, with no score; leave --min-score "
            r"out", out2, capsys)
    refused([*base, "--translations", str(tmp_path / "valid.hyp"), *mono_args(mono),
             "--mono-translations", str(tmp_path / "a.hyp"),
             "--mono-translations", str(tmp_path / "a.hyp")],
            rf"--mono-translations {tmp_path / 'a.hyp'} has 43 lines, but {mono['files'][1]} "
            rf"has 41 lines; give one translation per source line, in order", out2, capsys)
