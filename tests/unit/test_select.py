"""Tests of target selection (fairseq_seqkd.distill.select) and the seqkd-select CLI."""

from __future__ import annotations

import json
import math
import os
import random
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairseq_seqkd.cli.select import main
from fairseq_seqkd.distill import similarity
from fairseq_seqkd.distill.nbest import Hypothesis, write_nbest
from fairseq_seqkd.distill.select import repeat_run, select_targets
from fairseq_seqkd.distill.similarity import plain_similarity, remove_bpe
from fairseq_seqkd.errors import SeqKDError

from .test_similarity import WORDS

H = Hypothesis


def test_seq_inter_picks_hand_computed_best_with_tie_to_better_rank():
    nbest = {
        0: [
            H("the dog sat on mat", -0.1),  # BLEU 20.8 (see test_similarity)
            H("the c@@ at sat on a mat", -0.2),  # -> "the cat sat on a mat": 53.73
            H("the cat sat on a m@@ at", -0.3),  # same text, same score: tie -> rank 1
            H("a mat", -0.4),
        ]
    }
    sel = select_targets(
        nbest,
        size=1,
        sources=["die Katze saß auf der Matte"],
        references=["the cat sat on the m@@ at"],
        strategy="seq-inter",
        remove_bpe_scheme="subword_nmt",
    )
    assert sel.targets == ["the c@@ at sat on a mat"]
    assert sel.report["selected_rank_1"] == 1
    assert sel.report["mean_similarity"] == pytest.approx(53.7284965911771, rel=1e-12)
    kd = select_targets(
        nbest, size=1, sources=None, references=["the cat sat on the m@@ at"],
        strategy="seq-kd", remove_bpe_scheme="subword_nmt",
    )
    assert kd.targets == ["the dog sat on mat"]
    assert kd.report["selected_rank_0"] == 1

    # TER: lower is better
    ter = select_targets(
        {0: [H("x y z", -1.0), H("the cat sat", -2.0)]}, size=1, sources=None,
        references=["the cat sat"], strategy="seq-inter", sim="ter",
    )
    assert ter.targets == ["the cat sat"]
    assert ter.report["mean_similarity"] == 0.0



# ------------------------------------------------ identical to a plain sacrebleu loop

def _random_nbest(seed: int, size: int, max_k: int):
    rng = random.Random(seed)
    vocab = [w + suffix for w in WORDS for suffix in ("", "@@")]
    references, nbest = [], {}
    for i in range(size):
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 15))]
        references.append(" ".join(ref))
        hyps = []
        for _ in range(rng.randint(1, max_k)):
            words = list(ref)
            for _ in range(rng.randint(0, 4)):
                op = rng.random()
                pos = rng.randrange(len(words) + 1)
                if op < 0.4:
                    words.insert(pos, rng.choice(vocab))
                elif words and op < 0.8:
                    words[min(pos, len(words) - 1)] = rng.choice(vocab)
                elif words:
                    del words[min(pos, len(words) - 1)]
            hyps.append(" ".join(words))
        if rng.random() < 0.2:
            hyps.append(hyps[0])  # exact duplicates -> ties
        nbest[i] = [H(t, -0.1 * r) for r, t in enumerate(hyps)]
    return nbest, references


def _plain_choice(nbest, references, sim, scheme):
    targets, sims = [], []
    lower = sim == "ter"
    for i, hyps in nbest.items():
        ref = remove_bpe(references[i], scheme)
        best_rank, best = None, None
        for rank, hyp in enumerate(hyps):
            value = plain_similarity(remove_bpe(hyp.tokens, scheme), ref, sim)
            if best is None or (value < best if lower else value > best):
                best_rank, best = rank, value
        tokens = hyps[best_rank].tokens
        targets.append(tokens if tokens.strip() else None)
        sims.append(best)
    return targets, sum(sims) / len(sims)


@pytest.mark.parametrize(
    "sim,size", [("bleu", 150), ("chrf", 60), ("ter", 30)]
)
@pytest.mark.parametrize("workers", [1, 2])
def test_identical_choices_to_plain_loop(sim, size, workers, monkeypatch):
    monkeypatch.setattr(similarity, "CHUNK_SENTENCES", 16)  # several tasks per worker
    nbest, references = _random_nbest(seed=size, size=size, max_k=8)
    expected, expected_mean = _plain_choice(nbest, references, sim, "subword_nmt")
    sel = select_targets(
        nbest, size=size, sources=None, references=references, strategy="seq-inter",
        sim=sim, remove_bpe_scheme="subword_nmt", fallback="drop", workers=workers,
    )
    assert sel.targets == expected
    assert sel.report["mean_similarity"] == expected_mean
    assert sel.report["hypotheses"] == sum(len(h) for h in nbest.values())


def test_workers_deterministic_over_many_chunks():
    nbest, references = _random_nbest(seed=7, size=700, max_k=4)  # > 2 chunks of 256
    kwargs = dict(size=700, sources=None, references=references, strategy="seq-inter",
                  fallback="drop")
    one = select_targets(nbest, workers=1, **kwargs)
    two = select_targets(nbest, workers=2, **kwargs)
    assert one == two


# ------------------------------------------------------- filters and fallback


def _filter_case():
    sources = ["a b c", "d e", "f g", "a b c", "h i", "j k l"]
    references = ["R0", "R1", "R2", "R3", "R4", "R5"]
    nbest = {
        0: [H("x y z", -1.0)],
        1: [H("", -1.0), H("not chosen by seq-kd", -2.0)],
        2: [H("one two three four five six seven", -1.0)],  # 7 vs 2 tokens
        3: [H("x y z", -1.0)],  # same (source, target) as sentence 0
        # 4 missing
        5: [H("p q r s", -1.0), H("p q", -2.0)],
    }
    return nbest, sources, references


def test_filters_with_gold_fallback():
    nbest, sources, references = _filter_case()
    sel = select_targets(
        nbest, size=6, sources=sources, references=references, strategy="seq-kd",
        max_len_ratio=3.0, dedup=True, fallback="gold", allow_missing=True,
    )
    assert sel.targets == ["x y z", "R1", "R2", "R3", "R4", "p q r s"]
    assert sel.kept_indices == [0, 1, 2, 3, 4, 5]
    r = sel.report
    assert (r["empty"], r["length_ratio"], r["duplicate"], r["missing"]) == (1, 1, 1, 1)
    assert (r["fallback_gold"], r["dropped"], r["selected"], r["kept"]) == (4, 0, 2, 6)
    assert r["selected_rank_0"] == 2 and r["mean_selected_rank"] == 0.0
    assert r["sentences"] == 6 and r["hypotheses"] == 7


def test_filters_with_drop_fallback():
    nbest, sources, _references = _filter_case()
    sel = select_targets(
        nbest, size=6, sources=sources, references=None, strategy="seq-kd",
        max_len_ratio=3.0, dedup=True, fallback="drop", allow_missing=True,
    )
    assert sel.targets == ["x y z", None, None, None, None, "p q r s"]
    assert sel.kept_indices == [0, 5]
    r = sel.report
    assert (r["empty"], r["length_ratio"], r["duplicate"], r["missing"]) == (1, 1, 1, 1)
    assert (r["fallback_gold"], r["dropped"], r["selected"]) == (0, 4, 2)
    assert r["similarity_sentences"] == 0
    # without the filters only the empty and the missing sentences go
    plain = select_targets(nbest, size=6, sources=sources, references=None,
                           strategy="seq-kd", fallback="drop", allow_missing=True)
    assert plain.kept_indices == [0, 2, 3, 5]


def test_a_missing_sentence_is_an_error_unless_allowed():
    nbest, sources, references = _filter_case()  # sentence 4 has no hypothesis
    kwargs = dict(size=6, sources=sources, references=references, strategy="seq-kd")
    with pytest.raises(SeqKDError, match=r"^train.nbest: no hypotheses for sentence index 4 "
                                         r"\(1 of 6 sentences missing\); --allow-missing "
                                         r"gives them the fallback \(gold\)$"):
        select_targets(nbest, nbest_name="train.nbest", **kwargs)
    with pytest.raises(SeqKDError, match=r"^no hypotheses for sentence index 4 .*\(drop\)$"):
        select_targets(nbest, **{**kwargs, "fallback": "drop"})
    sel = select_targets(nbest, allow_missing=True, **kwargs)
    assert sel.targets[4] == "R4" and sel.report["missing"] == 1
    complete = {**nbest, 4: [H("h i", -1.0)]}
    assert select_targets(complete, **kwargs).report["missing"] == 0


def test_length_ratio_both_directions():
    nbest = {0: [H("a", -1.0)], 1: [H("a b c d", -1.0)], 2: [H("a b", -1.0)]}
    sel = select_targets(nbest, size=3, sources=["a b c d", "a", "a b c d"], references=None,
                         strategy="seq-kd", max_len_ratio=2.0, fallback="drop")
    assert sel.kept_indices == [2]
    assert sel.report["length_ratio"] == 2


def test_argument_errors():
    nbest = {0: [H("a", -1.0)]}
    base = dict(size=1, sources=None, references=["a"])
    with pytest.raises(ValueError, match=r"--strategy.*seq-kd, seq-inter"):
        select_targets(nbest, strategy="word-kd", **base)
    with pytest.raises(ValueError, match=r"--sim.*bleu, chrf, ter"):
        select_targets(nbest, strategy="seq-inter", sim="meteor", **base)
    with pytest.raises(ValueError, match="seq-inter needs references"):
        select_targets(nbest, size=1, sources=None, references=None, strategy="seq-inter",
                       fallback="drop")
    with pytest.raises(ValueError, match="references have 1 lines but size is 2"):
        select_targets(nbest, size=2, sources=None, references=["a"], strategy="seq-kd")
    with pytest.raises(ValueError, match="index 3 is out of range"):
        select_targets({3: [H("a", -1.0)]}, strategy="seq-kd", **base)
    with pytest.raises(ValueError, match="--fallback gold needs references"):
        select_targets(nbest, size=1, sources=None, references=None, strategy="seq-kd")


# --------------------------------------------------------------------- CLI


def _cli_files(tmp_path):
    nbest = {
        0: [H("the dog sat", -0.1), H("the c@@ at sat", -0.2)],
        1: [H("", -0.5)],
        2: [H("hello world", -0.3), H("hello there", -0.4)],
    }
    write_nbest(tmp_path / "train.nbest", nbest.items())
    (tmp_path / "src.txt").write_text("die Katze saß\nleer\nhallo Welt\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("the cat sat\nempty\nhello world\n", encoding="utf-8")
    return str(tmp_path / "train.nbest"), str(tmp_path / "src.txt"), str(tmp_path / "ref.txt")


def test_cli_end_to_end(tmp_path, capsys):
    nbest, src, ref = _cli_files(tmp_path)
    out, out_src, report = (str(tmp_path / n) for n in ("kd.en", "kd.de", "report.json"))
    code = main([
        "--nbest", nbest, "--source", src, "--reference", ref, "--strategy", "seq-inter",
        "--sim", "bleu", "--remove-bpe", "subword_nmt", "--fallback", "drop",
        "--workers", "2", "--output", out, "--output-source", out_src, "--report", report,
    ])
    assert code == 0
    assert Path(out).read_text(encoding="utf-8") == "the c@@ at sat\nhello world\n"
    assert Path(out_src).read_text(encoding="utf-8") == "die Katze saß\nhallo Welt\n"
    data = json.loads(Path(report).read_text(encoding="utf-8"))
    assert data["strategy"] == "seq-inter" and data["kept"] == 2 and data["empty"] == 1
    assert data["hypotheses"] == 5 and data["selected_rank_1"] == 1
    assert data["mean_similarity"] == pytest.approx(200.0 / 3)  # 100, 0 (empty), 100
    printed = capsys.readouterr().out
    assert "hypotheses/s" in printed and '"kept": 2' in printed
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_cli_generate_log(tmp_path):
    log = tmp_path / "gen.log"
    log.write_text(
        "2024-01-01 12:00:00 | INFO | fairseq_cli.generate | loading\n"
        "S-1\tb\nH-1\t-0.2\tsecond\nD-1\t-0.2\tsecond\nS-0\ta\nH-0\t-0.1\tfirst\n"
        "Generate test with beam=5: BLEU4 = 1.0\n", encoding="utf-8")
    ref = tmp_path / "ref.txt"
    ref.write_text("gold0\ngold1\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main(["--generate-log", str(log), "--reference", str(ref), "--strategy", "seq-kd",
                 "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == "first\nsecond\n"


def test_cli_missing_sentences_fail_unless_allowed(tmp_path, capsys):
    """A truncated n-best must not turn into gold targets with exit 0."""
    nbest, src, ref = _cli_files(tmp_path)
    write_nbest(nbest, [(0, [H("the dog sat", -0.1)]), (2, [H("hello world", -0.3)])])
    (tmp_path / "ref4.txt").write_text("the cat sat\nempty\nhello world\nfour\n")
    out, report = tmp_path / "out.txt", tmp_path / "report.json"
    args = ["--nbest", nbest, "--reference", str(tmp_path / "ref4.txt"), "--output", str(out),
            "--report", str(report)]
    assert main(args) == 1
    _assert_error(capsys, f"{nbest}: no hypotheses for sentence index 1 (2 of 4 sentences "
                          "missing)", "--allow-missing")
    assert not out.exists() and not report.exists()
    assert main([*args, "--allow-missing"]) == 0
    captured = capsys.readouterr()
    assert captured.err == (f"seqkd-select: warning: 2 of 4 sentences have no hypotheses in "
                            f"{nbest} (the first: sentence index 1); with --allow-missing they "
                            "get the fallback (gold)\n")
    assert out.read_text(encoding="utf-8") == "the dog sat\nempty\nhello world\nfour\n"
    data = json.loads(report.read_text(encoding="utf-8"))
    assert (data["missing"], data["fallback_gold"], data["allow_missing"]) == (2, 2, True)
    # with --fallback drop the missing sentences are left out
    assert main([*args, "--allow-missing", "--fallback", "drop"]) == 0
    assert out.read_text(encoding="utf-8") == "the dog sat\nhello world\n"
    assert "2 of 4 sentences have no hypotheses" in capsys.readouterr().err
    # nothing missing: no warning
    assert main(["--nbest", nbest, "--reference", ref, "--size", "3", "--output", str(out)]) \
        == 1
    capsys.readouterr()
    write_nbest(nbest, [(i, [H(f"t{i}", -0.1)]) for i in range(3)])
    assert main(["--nbest", nbest, "--source", src, "--reference", ref, "--output", str(out)]) \
        == 0
    assert capsys.readouterr().err == ""


def _assert_error(capsys, *fragments):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("seqkd-select: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_unknown_sim(tmp_path, capsys):
    nbest, _src, ref = _cli_files(tmp_path)
    out = tmp_path / "out.txt"
    code = main(["--nbest", nbest, "--reference", ref, "--strategy", "seq-inter",
                 "--sim", "meteor", "--output", str(out)])
    assert code == 1
    _assert_error(capsys, "--sim", "meteor", "bleu")
    assert not out.exists()


def test_cli_count_mismatch(tmp_path, capsys):
    nbest, src, _ref = _cli_files(tmp_path)
    short = tmp_path / "short_ref.txt"
    short.write_text("the cat sat\nempty\n", encoding="utf-8")
    out, rep = tmp_path / "out.txt", tmp_path / "r.json"
    code = main(["--nbest", nbest, "--reference", str(short), "--output", str(out),
                 "--report", str(rep)])
    assert code == 1
    _assert_error(capsys, nbest, str(short), "2 lines")
    assert not out.exists() and not rep.exists()

    code = main(["--nbest", nbest, "--source", src, "--reference", str(short),
                 "--output", str(out)])
    assert code == 1
    _assert_error(capsys, src, "3 lines", str(short), "has 2")
    assert not out.exists()


def test_cli_bad_inputs(tmp_path, capsys):
    nbest, _src, ref = _cli_files(tmp_path)
    out = tmp_path / "out.txt"
    bad = tmp_path / "bad.nbest"
    bad.write_text("0\t0\t-1.0\tok\n1\tzero\t-1.0\tbad\n", encoding="utf-8")
    assert main(["--nbest", str(bad), "--reference", ref, "--output", str(out)]) == 1
    _assert_error(capsys, "bad.nbest:2:")
    assert main(["--nbest", nbest, "--generate-log", nbest, "--reference", ref,
                 "--output", str(out)]) == 1
    _assert_error(capsys, "not allowed with")
    assert main(["--nbest", str(tmp_path / "missing"), "--reference", ref,
                 "--output", str(out)]) == 1
    _assert_error(capsys, "missing")
    assert main(["--nbest", nbest, "--strategy", "seq-inter", "--fallback", "drop",
                 "--output", str(out)]) == 1
    _assert_error(capsys, "--reference")
    assert not out.exists()
    # an existing output file is left untouched on error
    out.write_text("keep\n", encoding="utf-8")
    assert main(["--nbest", nbest, "--reference", ref, "--sim", "nope", "--output",
                 str(out)]) == 1
    capsys.readouterr()
    assert out.read_text(encoding="utf-8") == "keep\n"


# ------------------------------------------------------------ score filters


def _scored_case(n: int = 10) -> tuple[dict, list[str]]:
    """Sentence i's only hypothesis scores -(i + 1) / 10: sentence 9 is the worst."""
    nbest = {i: [H(f"t{i}", -(i + 1) / 10)] for i in range(n)}
    return nbest, [f"R{i}" for i in range(n)]


def test_filter_worst_drops_the_lowest_scores_and_falls_back():
    nbest, refs = _scored_case()
    sel = select_targets(nbest, size=10, sources=None, references=refs, strategy="seq-kd",
                         filter_worst=20)
    assert sel.targets == [f"t{i}" for i in range(8)] + ["R8", "R9"]
    r = sel.report
    assert (r["filter_worst"], r["below_min_score"], r["fallback_gold"]) == (2, 0, 2)
    dropped = select_targets(nbest, size=10, sources=None, references=None,
                             strategy="seq-kd", fallback="drop", filter_worst=25)
    assert dropped.kept_indices == list(range(8))  # floor(2.5) = 2
    assert dropped.report["filter_worst"] == 2 and dropped.report["dropped"] == 2


def test_min_score_and_filter_worst_count_apart():
    nbest, refs = _scored_case()
    sel = select_targets(nbest, size=10, sources=None, references=refs, strategy="seq-kd",
                         fallback="drop", min_score=-0.75, filter_worst=40)
    # below -0.75: sentences 7, 8, 9; the worst 40 % are 6..9, of which 6 is left
    assert sel.kept_indices == list(range(6))
    assert (sel.report["below_min_score"], sel.report["filter_worst"]) == (3, 1)
    assert select_targets(nbest, size=10, sources=None, references=refs, strategy="seq-kd",
                          min_score=-0.1).report["below_min_score"] == 9


def test_filter_worst_percentage_is_exact_and_ties_go_by_index():
    nbest = {i: [H(f"t{i}", -1.0 if i % 2 else -0.5)] for i in range(30)}
    sel = select_targets(nbest, size=30, sources=None, references=None, strategy="seq-kd",
                         fallback="drop", filter_worst=10)  # 10 % of 30 is 3, not 2
    assert sorted(set(range(30)) - set(sel.kept_indices)) == [1, 3, 5]


def test_filter_worst_uses_the_chosen_hypothesis_score():
    # seq-inter chooses rank 1 of sentence 0 (equal to the reference), which scores worst
    nbest = {0: [H("a b c", -0.1), H("x y z", -2.0)], 1: [H("p q", -0.5)]}
    sel = select_targets(nbest, size=2, sources=None, references=["x y z", "p q"],
                         strategy="seq-inter", fallback="drop", filter_worst=50)
    assert sel.kept_indices == [1] and sel.report["filter_worst"] == 1
    kd = select_targets(nbest, size=2, sources=None, references=["x y z", "p q"],
                        strategy="seq-kd", fallback="drop", filter_worst=50)
    assert kd.kept_indices == [0]


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(st.floats(-50, -0.01), min_size=1, max_size=40),
       percent=st.floats(0, 99.99))
def test_filter_worst_property(scores, percent):
    nbest = {i: [H(f"t{i}", s)] for i, s in enumerate(scores)}
    sel = select_targets(nbest, size=len(scores), sources=None, references=None,
                         strategy="seq-kd", fallback="drop", filter_worst=percent)
    dropped = set(range(len(scores))) - set(sel.kept_indices)
    # floor(P % of n), with P as written
    assert len(dropped) == sel.report["filter_worst"] == int(
        Fraction(repr(percent)) * len(scores) / 100
    )
    if dropped and sel.kept_indices:
        assert max(scores[i] for i in dropped) <= min(scores[i] for i in sel.kept_indices)


def test_score_filter_errors():
    nbest, refs = _scored_case(3)
    base = dict(size=3, sources=None, references=refs, strategy="seq-kd")
    for bad in (-1.0, 100.0, 150.0, math.nan):
        with pytest.raises(ValueError, match=r"--filter-worst must be in \[0, 100\)"):
            select_targets(nbest, filter_worst=bad, **base)
    with pytest.raises(ValueError, match="--min-score must be a number"):
        select_targets(nbest, min_score=math.nan, **base)
    unscored = {i: [H(f"t{i}", 0.0)] for i in range(3)}
    for option, kw in (("--min-score", dict(min_score=-1.0)),
                       ("--filter-worst", dict(filter_worst=10.0))):
        with pytest.raises(ValueError, match=f"{option} needs the teacher's scores, but every "
                                             r"score in the n-best is 0"):
            select_targets(unscored, **kw, **base)
    assert select_targets(unscored, **base).kept_indices == [0, 1, 2]  # no score filter: fine


def test_cli_score_filters(tmp_path, capsys):
    nbest, _src, ref = _cli_files(tmp_path)  # scores -0.1 (dog), -0.5 (empty), -0.3 (hello)
    out, report = tmp_path / "out.txt", tmp_path / "report.json"
    assert main(["--nbest", nbest, "--reference", ref, "--filter-worst", "50",
                 "--min-score", "-0.2", "--output", str(out), "--report", str(report)]) == 0
    assert out.read_text(encoding="utf-8") == "the dog sat\nempty\nhello world\n"
    data = json.loads(report.read_text(encoding="utf-8"))
    assert (data["empty"], data["below_min_score"], data["filter_worst"]) == (1, 1, 0)
    assert data["filter_worst_percent"] == 50.0 and data["min_score"] == -0.2
    assert main(["--nbest", nbest, "--reference", ref, "--filter-worst", "34",
                 "--output", str(out), "--report", str(report)]) == 0
    data = json.loads(report.read_text(encoding="utf-8"))  # the worst (-0.5) is the empty one
    assert (data["empty"], data["filter_worst"], data["kept"]) == (1, 0, 3)
    capsys.readouterr()
    out.unlink()
    assert main(["--nbest", nbest, "--reference", ref, "--filter-worst", "100",
                 "--output", str(out)]) == 1
    _assert_error(capsys, "--filter-worst must be in [0, 100)", "got 100.0")
    zero = tmp_path / "zero.nbest"
    write_nbest(zero, [(i, [H(f"t{i}", 0.0)]) for i in range(3)])
    assert main(["--nbest", str(zero), "--reference", ref, "--min-score", "-1",
                 "--output", str(out)]) == 1
    _assert_error(capsys, "--min-score needs the teacher's scores", "without scores")
    assert not out.exists()


# ------------------------------------------------------------ decoding loops


def _repeat_run_reference(tokens: list[str], max_n: int = 4) -> int:
    """Brute force: for every start and every n, count copies of tokens[start:start+n]."""
    best = 1 if tokens else 0
    for n in range(1, max_n + 1):
        for start in range(len(tokens) - n + 1):
            copies = 1
            phrase = tokens[start : start + n]
            while tokens[start + copies * n : start + (copies + 1) * n] == phrase:
                copies += 1
            best = max(best, copies)
    return best


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("ab c"), max_size=24))
def test_repeat_run_equals_brute_force(chars):
    tokens = [c for c in chars if c != " "]
    assert repeat_run(tokens) == _repeat_run_reference(tokens)


def _words(text: str) -> list[str]:
    return text.split()


def test_repeat_run_hand_computed():
    assert repeat_run(_words("x die pletzerge die pletzerge die pletzerge y")) == 3
    assert repeat_run(_words("a b c a b c a b c a b c")) == 4
    assert repeat_run(_words("the dog saw the cat")) == 1
    assert repeat_run([]) == 0
    # a phrase longer than 4 tokens is not looked for
    assert repeat_run(_words("a b c d e a b c d e")) == 1


def test_max_repeats_drops_loops_and_counts_them():
    nbest = {0: [H("a b a b a b", -1.0)], 1: [H("a b a b", -1.0)], 2: [H("x x x", -1.0)]}
    sel = select_targets(nbest, size=3, sources=None, references=["R0", "R1", "R2"],
                         strategy="seq-kd", max_repeats=2)
    assert sel.targets == ["R0", "a b a b", "R2"]
    assert (sel.report["repeats"], sel.report["fallback_gold"]) == (2, 2)
    assert select_targets(nbest, size=3, sources=None, references=None, strategy="seq-kd",
                          fallback="drop", max_repeats=3).kept_indices == [0, 1, 2]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(SeqKDError, match="--max-repeats must be an integer >= 1"):
            select_targets(nbest, size=3, sources=None, references=None, strategy="seq-kd",
                           fallback="drop", max_repeats=bad)


def test_cli_max_repeats(tmp_path, capsys):
    nbest, ref = tmp_path / "loop.nbest", tmp_path / "ref.txt"
    write_nbest(nbest, [(0, [H("die katze die katze die katze", -0.1)]),
                        (1, [H("der hund", -0.1)])])
    ref.write_text("die katze\nder hund\n", encoding="utf-8")
    out, report = tmp_path / "out.txt", tmp_path / "report.json"
    assert main(["--nbest", str(nbest), "--reference", str(ref), "--max-repeats", "2",
                 "--output", str(out), "--report", str(report)]) == 0
    assert out.read_text(encoding="utf-8") == "die katze\nder hund\n"
    assert json.loads(report.read_text(encoding="utf-8"))["repeats"] == 1
    capsys.readouterr()
    assert main(["--nbest", str(nbest), "--reference", str(ref), "--max-repeats", "0",
                 "--output", str(tmp_path / "new.txt")]) == 1
    _assert_error(capsys, "--max-repeats must be an integer >= 1", "got 0")
    assert not (tmp_path / "new.txt").exists()
