"""Selection without references, one sentence at a time (distill/select_stream.py): the same
targets, drops and counts as select_targets with the best hypothesis and no fallback."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fairseq_seqkd.distill.nbest import Hypothesis, NbestFormatError, write_nbest
from fairseq_seqkd.distill.select import SelectionOptions, select_targets
from fairseq_seqkd.distill.select_stream import iter_sorted_nbest, select_best
from fairseq_seqkd.errors import SeqKDError

H = Hypothesis


def run(tmp_path: Path, nbest: dict[int, list[Hypothesis]], size: int, options: SelectionOptions,
        sources: list[str] | None = None, skipped: set[int] = frozenset()) -> tuple[dict, list,
                                                                                      list]:
    path = tmp_path / "n.nbest"
    write_nbest(path, nbest.items())
    report = select_best(str(path), size=size, skipped=skipped, sources=sources, options=options,
                         targets_path=str(tmp_path / "t"), kept_path=str(tmp_path / "k"))
    targets = (tmp_path / "t").read_text().splitlines()
    kept = [int(i) for i in (tmp_path / "k").read_text().splitlines()]
    return report, kept, targets


@pytest.mark.parametrize("seed", range(12))
def test_the_same_targets_and_counts_as_select_targets(tmp_path, seed):
    rng = random.Random(seed)
    words = ["a", "b", "c", "d@@", "e"]
    size = rng.randint(5, 40)
    sources = [" ".join(rng.choices(words, k=rng.randint(1, 6))) for _ in range(size)]
    nbest = {}
    for i in range(size):
        if rng.random() < 0.15:
            continue  # skipped by the teacher
        hyps = []
        for _ in range(rng.randint(1, 3)):
            tokens = " ".join(rng.choices(words[:3], k=rng.choice([0, 1, 2, 4, 7])))
            hyps.append(H(tokens, round(rng.choice([-0.5, -1.0, rng.uniform(-3, 0)]), 6)))
        nbest[i] = hyps
    options = SelectionOptions(
        strategy="seq-kd", fallback="drop", max_len_ratio=rng.choice([None, 1.5, 3.0]),
        max_repeats=rng.choice([None, 1, 2]), min_score=rng.choice([None, -2.0]),
        filter_worst=rng.choice([0.0, 10.0, 33.0]), dedup=rng.choice([False, True]))
    report, kept, targets = run(tmp_path, nbest, size, options, sources,
                                set(range(size)) - set(nbest))
    expected = select_targets(nbest, size=size, sources=sources, references=None,
                              strategy="seq-kd", fallback="drop", allow_missing=True,
                              max_len_ratio=options.max_len_ratio,
                              max_repeats=options.max_repeats, min_score=options.min_score,
                              filter_worst=options.filter_worst, dedup=options.dedup)
    assert kept == expected.kept_indices
    assert targets == [expected.targets[i] for i in kept]
    for key in ("empty", "length_ratio", "repeats", "below_min_score", "filter_worst",
                "duplicate", "missing", "dropped", "kept", "selected", "hypotheses"):
        assert report[key] == expected.report[key], key


def test_sources_are_read_only_when_a_filter_needs_them(tmp_path):
    nbest = {0: [H("x", -1.0)], 1: [H("y", -1.0)]}
    report, kept, _ = run(tmp_path, nbest, 2, SelectionOptions(fallback="drop"), sources=None)
    assert kept == [0, 1] and report["kept"] == 2
    with pytest.raises(SeqKDError, match="--max-len-ratio and --dedup need the source"):
        run(tmp_path, nbest, 2, SelectionOptions(fallback="drop", dedup=True), sources=None)


def test_a_sentence_neither_decoded_nor_skipped_is_an_error_and_nothing_is_written(tmp_path):
    nbest = {0: [H("x", -1.0)], 2: [H("z", -1.0)]}
    with pytest.raises(SeqKDError, match=r"is incomplete: no hypotheses for sentence index 1, "
                                         r"which n.nbest.skipped does not list either"):
        run(tmp_path, nbest, 3, SelectionOptions(fallback="drop"))
    assert not (tmp_path / "t").exists() and not (tmp_path / "k").exists()
    report, kept, _ = run(tmp_path, nbest, 3, SelectionOptions(fallback="drop"), skipped={1})
    assert kept == [0, 2] and report["missing"] == 1
    with pytest.raises(NbestFormatError, match="sentence index 2 is out of range for a split "
                                               "of 2 sentences"):
        run(tmp_path, nbest, 2, SelectionOptions(fallback="drop"), skipped={1})


def test_an_unsorted_nbest_or_a_rank_gap_is_named(tmp_path):
    path = tmp_path / "n"
    path.write_text("0\t0\t-1.0\ta\n0\t1\t-2.0\tb\n1\t0\t-1.0\tc\n")
    assert [(i, [h.tokens for h in hyps]) for i, hyps in iter_sorted_nbest(str(path))] == [
        (0, ["a", "b"]), (1, ["c"])]
    path.write_text("1\t0\t-1.0\ta\n0\t0\t-1.0\tb\n")
    with pytest.raises(NbestFormatError, match=r":2: sentence index 0 after 1; the n-best "
                                               r"must be sorted by index"):
        list(iter_sorted_nbest(str(path)))
    path.write_text("0\t0\t-1.0\ta\n0\t2\t-1.0\tb\n")
    with pytest.raises(NbestFormatError, match=r":2: sentence index 0 has rank 2 after rank 0"):
        list(iter_sorted_nbest(str(path)))
