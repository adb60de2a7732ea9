"""Monolingual source text (fairseq_seqkd.distill.mono): bad input, laziness, the split."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import sentencepiece
from fairseq.data import Dictionary

from fairseq_seqkd.data.distilled import load_split
from fairseq_seqkd.distill.binarize import binarize_lines, token_lines
from fairseq_seqkd.distill.mono import (
    MonoReader,
    PairsPart,
    Segmenter,
    prepare_mono,
    read_provenance,
    teacher_max_source_positions,
    write_combined_split,
)
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.textfiles import iter_text_lines

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
# words a 12-piece sentencepiece model holds whole, and a model of another script
SPM_WORDS = ["lo", "ol", "llo", "ool", "lolo", "olol"]
OTHER_WORDS = ["альфа", "бета", "фаль"]
LANGS = ("src", "tgt")


def make_dictionary(symbols: list[str]) -> Dictionary:
    dictionary = Dictionary()
    for symbol in symbols:
        dictionary.add_symbol(symbol)
    dictionary.finalize()
    return dictionary


@pytest.fixture
def data(tmp_path) -> Path:
    """A data-bin's dictionaries (joined): the words, upper-cased words for the target."""
    directory = tmp_path / "data"
    directory.mkdir()
    make_dictionary(WORDS).save(str(directory / "dict.src.txt"))
    make_dictionary([w.upper() for w in WORDS] + WORDS).save(str(directory / "dict.tgt.txt"))
    return directory


def write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def prepare(tmp_path: Path, data: Path, sources: list[Path], **kw) -> object:
    kw.setdefault("max_source_positions", 1024)
    messages: list[str] = []
    summary = prepare_mono([str(s) for s in sources], str(data), str(tmp_path / "mono"),
                           langs=LANGS, log=messages.append, **kw)
    summary.messages = messages
    return summary


def split_lines(summary) -> list[str]:
    dictionary = Dictionary.load(str(Path(summary.directory) / "dict.src.txt"))
    return token_lines(load_split(summary.prefix, dictionary, "test"), dictionary)


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ------------------------------------------------------------------------- bad input


def test_non_utf8_line_names_file_and_line_and_writes_nothing(tmp_path, data):
    good = write(tmp_path / "a.txt", "alpha beta\n")
    bad = write(tmp_path / "b.txt", b"gamma\ndelta\nzeta \xff eta\n")
    with pytest.raises(SeqKDError, match=rf"^{bad}:3: invalid UTF-8 byte 0xff at column 6$"):
        prepare(tmp_path, data, [good, bad])
    assert files_in(tmp_path / "mono") == []  # no split, no provenance, no temporary file


def test_a_failed_run_leaves_the_previous_split_in_place(tmp_path, data):
    source = write(tmp_path / "a.txt", "alpha beta\ngamma\n")
    summary = prepare(tmp_path, data, [source])
    before = {n: (tmp_path / "mono" / n).read_bytes() for n in files_in(tmp_path / "mono")}
    write(source, b"alpha\n\xc3\n")
    with pytest.raises(SeqKDError, match=r"a.txt:2: invalid UTF-8"):
        prepare(tmp_path, data, [source])
    after = {n: (tmp_path / "mono" / n).read_bytes() for n in files_in(tmp_path / "mono")}
    assert after == before
    assert split_lines(summary) == ["alpha beta", "gamma"]


def test_empty_lines_are_skipped_and_counted(tmp_path, data):
    source = write(tmp_path / "a.txt", "alpha\n\n   \t \nbeta gamma\r\n\r\ndelta")
    summary = prepare(tmp_path, data, [source])
    assert split_lines(summary) == ["alpha", "beta gamma", "delta"]
    stats = summary.sources[0]
    assert (stats.read, stats.kept, stats.empty, stats.too_long) == (6, 3, 3, 0)
    assert list(read_provenance(summary.provenance)) == [(0, 1), (0, 4), (0, 6)]


def test_lines_longer_than_the_max_positions_less_eos_are_skipped(tmp_path, data):
    # max source positions 4: 3 tokens and the EOS fit, 4 tokens do not
    source = write(tmp_path / "a.txt", "alpha beta gamma\nalpha beta gamma delta\nzeta\n")
    summary = prepare(tmp_path, data, [source], max_source_positions=4)
    assert split_lines(summary) == ["alpha beta gamma", "zeta"]
    assert (summary.sources[0].too_long, summary.sources[0].kept) == (1, 2)
    assert list(read_provenance(summary.provenance)) == [(0, 1), (0, 3)]
    assert summary.record()["too_long"] == "skipped"


def test_no_usable_line_is_an_error(tmp_path, data):
    source = write(tmp_path / "a.txt", "\n\nalpha beta gamma delta\n")
    with pytest.raises(SeqKDError, match=r"no usable line .* \(3 read: 2 empty, 1 longer than "
                                         r"3 tokens\)$"):
        prepare(tmp_path, data, [source], max_source_positions=4)
    assert files_in(tmp_path / "mono") == []


def test_unk_heavy_lines_warn_once_with_count_and_first_line(tmp_path, data):
    a = write(tmp_path / "a.txt", "alpha beta\nalpha qq\nqq rr alpha\n")  # half: no warning
    b = write(tmp_path / "b.txt", "beta\nqq rr ss\nalpha\nqq\n")
    summary = prepare(tmp_path, data, [a, b])
    assert [s.unk_heavy for s in summary.sources] == [1, 2]
    assert summary.unk_heavy == 3 and summary.first_unk_heavy == f"{a}:3"
    assert len(summary.messages) == 1
    message = summary.messages[0]
    assert message.startswith(f"3 of 7 --mono-source lines have more than half their "
                              f"tokens <unk> after segmentation (first: {a}:3)")
    assert "raw text needs --spm-model" in message
    assert len(split_lines(summary)) == 7  # warned about, still kept


def test_no_warning_without_unk_heavy_lines(tmp_path, data):
    source = write(tmp_path / "a.txt", "alpha qq\nbeta\n")
    assert prepare(tmp_path, data, [source]).messages == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"size": 0}, r"^--mono-size must be >= 1, got 0$"),
    ({"spm_model": "missing.model"}, r"^--spm-model missing.model does not exist$"),
    ({"max_source_positions": 1}, r"max source positions must be >= 2"),
])
def test_bad_options(tmp_path, data, kwargs, message):
    source = write(tmp_path / "a.txt", "alpha\n")
    with pytest.raises(SeqKDError, match=message):
        prepare(tmp_path, data, [source], **kwargs)


def test_missing_source_and_non_model_spm(tmp_path, data):
    with pytest.raises(SeqKDError, match=r"^--mono-source: .*nope.txt does not exist$"):
        prepare(tmp_path, data, [tmp_path / "nope.txt"])
    source = write(tmp_path / "a.txt", "alpha\n")
    with pytest.raises(SeqKDError, match=r"is not a sentencepiece model$"):
        prepare(tmp_path, data, [source], spm_model=str(source))


# ------------------------------------------------------------------------- streaming


def test_the_reader_is_lazy(tmp_path):
    """Taking a line reads no further than that line: line 3 is not UTF-8, and only the third
    ``next`` finds out."""
    source = write(tmp_path / "a.txt", b"alpha\nbeta\n\xff\n")
    reader = MonoReader([str(source)], make_dictionary(WORDS), max_source_positions=10)
    lines = iter(reader)
    assert next(lines).tokens == ["alpha"]
    assert reader.stats[0].read == 1
    assert next(lines).tokens == ["beta"]
    with pytest.raises(SeqKDError, match=r"a.txt:3: invalid UTF-8"):
        next(lines)
    assert next(iter_text_lines(str(source))) == "alpha"


def test_mono_size_stops_reading_after_the_last_usable_line(tmp_path, data):
    a = write(tmp_path / "a.txt", "alpha\n\nbeta\n")
    b = write(tmp_path / "b.txt", b"gamma\n\nalpha beta gamma delta\ndelta\n\xff\n")
    c = write(tmp_path / "c.txt", b"\xff\n")
    summary = prepare(tmp_path, data, [a, b, c], size=4, max_source_positions=4)
    assert split_lines(summary) == ["alpha", "beta", "gamma", "delta"]
    assert [(s.read, s.kept, s.empty, s.too_long) for s in summary.sources] == [
        (3, 2, 1, 0), (4, 2, 1, 1), (0, 0, 0, 0)]
    assert list(read_provenance(summary.provenance)) == [(0, 1), (0, 3), (1, 1), (1, 4)]


# ------------------------------------------------------------------------- the record


def test_record_gives_counts_and_hashes_per_file(tmp_path, data):
    a = write(tmp_path / "a.txt", "alpha\n\n")
    b = write(tmp_path / "b.txt", "beta gamma\n")
    summary = prepare(tmp_path, data, [a, b])
    record = json.loads(Path(summary.record_path).read_text())
    assert record == json.loads(json.dumps(summary.record()))
    assert [s["sha256"] for s in record["sources"]] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    assert [s["path"] for s in record["sources"]] == [str(a), str(b)]
    assert record["totals"] == {"read": 3, "kept": 2, "empty": 1, "too_long": 0,
                                "unk_heavy": 0}
    assert record["spm_model"] is None and record["sentences"] == 2
    mono = tmp_path / "mono"
    assert (mono / "dict.src.txt").read_bytes() == (data / "dict.src.txt").read_bytes()
    assert (mono / "dict.tgt.txt").read_bytes() == (data / "dict.tgt.txt").read_bytes()
    assert not (mono / "mono.src-tgt.tgt.bin").exists()  # source only
    assert (mono / "mono.provenance.tsv").read_text() == "file\tline\n0\t1\n1\t1\n"


def test_a_broken_provenance_file_is_named(tmp_path):
    path = write(tmp_path / "p.tsv", "file\tline\n0\t1\n0\tx\n")
    with pytest.raises(SeqKDError, match=rf"^{path}:3: expected 'file<TAB>line'"):
        list(read_provenance(str(path)))
    write(path, "0\t1\n")
    with pytest.raises(SeqKDError, match=r"not a provenance file"):
        list(read_provenance(str(path)))


def test_teacher_max_source_positions():
    class Legacy:  # an old checkpoint's model config, a Namespace
        max_source_positions = 256

    states = [{"cfg": {"model": {"max_source_positions": 512}}}, {"cfg": {"model": Legacy()}}]
    assert teacher_max_source_positions(states[:1]) == 512
    assert teacher_max_source_positions(states) == 256
    assert teacher_max_source_positions([{"cfg": {"model": {}}}]) == 1024


# ------------------------------------------------------------------------- sentencepiece


def train_spm(tmp_path: Path, name: str, words: list[str]) -> tuple[str, list[str]]:
    rng = random.Random(0)
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) for _ in range(300)]
    text = tmp_path / f"{name}.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(tmp_path / name), vocab_size=12, minloglevel=2,
        hard_vocab_limit=False, character_coverage=1.0)
    return str(tmp_path / f"{name}.model"), lines


def test_raw_text_is_segmented_as_the_pipeline_segments_it(tmp_path):
    model, lines = train_spm(tmp_path, "spm", SPM_WORDS)
    processor = sentencepiece.SentencePieceProcessor(model_file=model)
    # the pieces fairseq-preprocess would have seen: the data's dictionary
    encoded = [" ".join(p) for p in processor.encode(lines, out_type=str)]
    assert encoded[0] == " ".join(f"▁{word}" for word in lines[0].split())
    dictionary = make_dictionary(sorted({t for line in encoded for t in line.split()}))
    data = tmp_path / "data"
    data.mkdir()
    dictionary.save(str(data / "dict.src.txt"))
    dictionary.save(str(data / "dict.tgt.txt"))
    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join(lines[:20]) + "\n", encoding="utf-8")
    summary = prepare(tmp_path, data, [raw], spm_model=model)
    assert split_lines(summary) == encoded[:20]
    assert summary.messages == []
    assert summary.record()["spm_sha256"] == hashlib.sha256(Path(model).read_bytes()).hexdigest()

    wrong, _ = train_spm(tmp_path, "wrong", OTHER_WORDS)
    summary = prepare(tmp_path, data, [raw], spm_model=wrong)
    assert summary.unk_heavy == 20 and summary.first_unk_heavy == f"{raw}:1"
    assert summary.messages[0].endswith(
        f"is --spm-model {wrong} the model the teacher's data was segmented with?")
    assert Segmenter(None)("  alpha\tbeta  ") == ["alpha", "beta"]


# ------------------------------------------------------------------------- one split


def test_combined_split_holds_parallel_pairs_then_mono(tmp_path, data):
    src_dict = Dictionary.load(str(data / "dict.src.txt"))
    tgt_dict = Dictionary.load(str(data / "dict.tgt.txt"))
    gold = ["alpha", "beta gamma", "delta"]
    binarize_lines(gold, src_dict, str(tmp_path / "gold"))
    mono_source = write(tmp_path / "m.txt", "zeta\n\neta theta\nalpha alpha\n")
    summary = prepare(tmp_path, data, [mono_source])
    out = tmp_path / "out"
    out.mkdir()
    prefix = str(out / "train.src-tgt.")
    parallel = PairsPart(load_split(str(tmp_path / "gold"), src_dict, "gold"), [0, 2],
                         iter(["ALPHA", "DELTA"]))
    mono = PairsPart(load_split(summary.prefix, src_dict, "mono"), [0, 2],
                     (t for t in ["ZETA", "ALPHA ALPHA"]))
    counts = write_combined_split(prefix, LANGS, (src_dict, tgt_dict), parallel, mono,
                                  mono_provenance=summary.provenance)
    assert counts["parallel"] == 2 and counts["mono"] == 2 and counts["sentences"] == 4
    sources = token_lines(load_split(prefix + "src", src_dict, "out"), src_dict)
    targets = token_lines(load_split(prefix + "tgt", tgt_dict, "out"), tgt_dict)
    assert sources == ["alpha", "delta", "zeta", "alpha alpha"]
    assert targets == ["ALPHA", "DELTA", "ZETA", "ALPHA ALPHA"]
    assert (out / "train.provenance.tsv").read_text() == (
        "origin\tline\nparallel\t0\nparallel\t2\n0\t1\n0\t4\n")


def test_combined_split_refuses_a_target_count_that_differs(tmp_path, data):
    src_dict = Dictionary.load(str(data / "dict.src.txt"))
    binarize_lines(["alpha", "beta"], src_dict, str(tmp_path / "gold"))
    dataset = load_split(str(tmp_path / "gold"), src_dict, "gold")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SeqKDError, match=r"^monolingual part: 1 targets for 2 kept sentences$"):
        write_combined_split(str(out / "train.src-tgt."), LANGS, (src_dict, src_dict),
                             PairsPart(dataset, [0], ["ALPHA"]),
                             PairsPart(dataset, [0, 1], ["ALPHA"]))
    assert not (out / "train.src-tgt.tgt.bin").exists()
