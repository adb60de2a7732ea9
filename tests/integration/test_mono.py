"""Monolingual source text end to end on the tiny fixtures: prepared as fairseq-preprocess would
binarize it, decoded by the teacher (one hypothesis per kept line), appended to the parallel
pairs in one split that fairseq's translation task loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from fairseq.data import Dictionary, data_utils
from fairseq.tasks.translation import load_langpair_dataset

from fairseq_seqkd.distill.binarize import token_lines
from fairseq_seqkd.distill.generate import generate_nbest
from fairseq_seqkd.distill.mono import (
    PairsPart,
    prepare_mono,
    read_provenance,
    teacher_max_source_positions,
    write_combined_split,
)
from fairseq_seqkd.distill.nbest import read_nbest
from fairseq_seqkd.teacher import load_checkpoint_state

from ..conftest import run_cli, write_toy_corpus

pytestmark = pytest.mark.slow

LANGS = ("src", "tgt")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load(prefix: str, dictionary: Dictionary):
    return data_utils.load_indexed_dataset(prefix, dictionary)


def test_mono_text_is_decoded_and_appended_after_the_parallel_pairs(
    toy_bin, teacher_ckpt, tmp_path
):
    raw = tmp_path / "raw"
    write_toy_corpus(raw, seed=7, sizes={"mono": 80})  # new sentences, in no split
    lines = (raw / "mono.src").read_text().splitlines()
    long_line = " ".join(["w1"] * 1100)  # over the teacher's 1024 positions
    first = [*lines[:40], "", long_line, "q1 q2 q3 w4"]
    second = ["  ", *lines[40:]]
    (raw / "a.txt").write_text("\n".join(first) + "\n")
    (raw / "b.txt").write_text("\r\n".join(second))
    # all but the empty lines and the long one; the unk-heavy line is kept, with a warning
    kept = [*lines[:40], "q1 q2 q3 w4", *lines[40:]]

    max_positions = teacher_max_source_positions([load_checkpoint_state(str(teacher_ckpt))])
    assert max_positions == 1024
    messages: list[str] = []
    mono_dir = tmp_path / "mono"
    summary = prepare_mono([str(raw / "a.txt"), str(raw / "b.txt")], str(toy_bin),
                           str(mono_dir), langs=LANGS, max_source_positions=max_positions,
                           log=messages.append)
    assert summary.sentences == len(kept) == 81
    assert summary.totals() == {"read": 84, "kept": 81, "empty": 2, "too_long": 1,
                                "unk_heavy": 1}
    assert len(messages) == 1 and f"(first: {raw / 'a.txt'}:43)" in messages[0]

    # byte for byte what fairseq-preprocess --only-source writes for the kept lines
    (raw / "kept.src").write_text("\n".join(kept) + "\n")
    reference = tmp_path / "preprocessed"
    run_cli("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt",
            "--only-source", "--srcdict", toy_bin / "dict.src.txt", "--testpref",
            raw / "kept", "--destdir", reference, "--workers", "1")
    for ext in ("bin", "idx"):
        assert Path(f"{summary.prefix}.{ext}").read_bytes() == (
            reference / f"test.src-tgt.src.{ext}").read_bytes()

    # the teacher decodes the source-only split: one hypothesis per kept line
    nbest_path = tmp_path / "mono.nbest"
    generated = generate_nbest([
        str(mono_dir), "--path", str(teacher_ckpt), "--gen-subset", "mono", "--beam", "2",
        "--nbest", "1", "--batch-size", "16", "--cpu", "--chunk-size", "30",
        "--output", str(nbest_path),
    ])
    nbest = read_nbest(nbest_path)
    assert sorted(nbest) == list(range(summary.sentences))
    assert all(len(hyps) == 1 for hyps in nbest.values())
    assert Path(f"{nbest_path}.skipped").read_text() == ""
    assert generated.sentences == summary.sentences

    # one split: the gold pairs first, then the kept monolingual pairs with the teacher's
    # translations; the provenance follows every sentence back to its origin
    src_dict = Dictionary.load(str(toy_bin / "dict.src.txt"))
    tgt_dict = Dictionary.load(str(toy_bin / "dict.tgt.txt"))
    gold_src = load(str(toy_bin / "train.src-tgt.src"), src_dict)
    gold_tgt = token_lines(load(str(toy_bin / "train.src-tgt.tgt"), tgt_dict), tgt_dict)
    out = tmp_path / "out"
    out.mkdir()
    for lang in LANGS:
        shutil.copyfile(toy_bin / f"dict.{lang}.txt", out / f"dict.{lang}.txt")
    mono_kept = [i for i in sorted(nbest) if nbest[i][0].tokens]
    write_combined_split(
        str(out / "train.src-tgt."), LANGS, (src_dict, tgt_dict),
        PairsPart(gold_src, range(len(gold_src)), gold_tgt),
        PairsPart(load(summary.prefix, src_dict), mono_kept,
                  (nbest[i][0].tokens for i in mono_kept)),
        mono_provenance=summary.provenance,
    )
    pairs = load_langpair_dataset(
        str(out), "train", "src", src_dict, "tgt", tgt_dict, combine=True, dataset_impl=None,
        upsample_primary=-1, left_pad_source=True, left_pad_target=False,
        max_source_positions=1024, max_target_positions=1024,
    )
    assert len(pairs) == 600 + len(mono_kept)
    last = pairs[len(pairs) - 1]
    assert src_dict.string(last["source"]) == kept[mono_kept[-1]]
    assert tgt_dict.string(last["target"]) == nbest[mono_kept[-1]][0].tokens
    rows = (out / "train.provenance.tsv").read_text().splitlines()
    origins = list(read_provenance(summary.provenance))
    assert rows[1] == "parallel\t0" and len(rows) == 1 + len(pairs)
    assert rows[-1] == "{}\t{}".format(*origins[mono_kept[-1]])
    assert origins[mono_kept[-1]][0] == 1  # the last kept line is in the second file
