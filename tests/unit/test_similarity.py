"""Tests of the sentence similarities (fairseq_seqkd.distill.similarity): hand-computed values
and exact equality with plain sacrebleu."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairseq_seqkd.distill.similarity import SentenceScorer, remove_bpe

# ----------------------------------------------------------------- remove_bpe


def test_remove_bpe():
    assert remove_bpe("▁Hel lo ▁wor ld ▁!", "sentencepiece") == "Hello world !"
    assert remove_bpe("▁", "sentencepiece") == ""
    assert remove_bpe("Hel@@ lo wor@@ ld@@", "subword_nmt") == "Hello world"
    assert remove_bpe("Hel@@ lo wor@@ ld", "@@ ") == "Hello world"
    assert remove_bpe("un## believ## able", "## ") == "unbelievable"
    assert remove_bpe("a@@ b ▁c", None) == "a@@ b ▁c"
    assert remove_bpe("a@@ b", "none") == "a@@ b"
    with pytest.raises(ValueError):
        remove_bpe("a", "")


# ------------------------------------------------------- hand-computed BLEU


def _bleu(hyp: str, ref: str) -> float:
    scorer = SentenceScorer("bleu")
    return scorer.score(hyp, scorer.prepare(ref))


def test_bleu_hand_computed_full_order():
    # ref: the cat sat on the mat / hyp: the cat sat on a mat (both 6 words, BP = 1)
    # 1-grams: the cat sat on mat match (the: min(1, 2)) -> 5/6
    # 2-grams: the cat, cat sat, sat on | on a, a mat -> 3/5
    # 3-grams: the cat sat, cat sat on | sat on a, on a mat -> 2/4
    # 4-grams: the cat sat on | cat sat on a, sat on a mat -> 1/3
    expected = 100 * math.exp((math.log(5 / 6) + math.log(3 / 5) + math.log(2 / 4)
                               + math.log(1 / 3)) / 4)
    got = _bleu("the cat sat on a mat", "the cat sat on the mat")
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(53.7284965911771, rel=1e-12)
    assert got == sacrebleu.sentence_bleu("the cat sat on a mat", ["the cat sat on the mat"]).score


def test_bleu_hand_computed_exp_smoothing_and_brevity_penalty():
    # hyp (5 words): the dog sat on mat / ref (6 words): the cat sat on the mat
    # 1-grams 4/5, 2-grams 1/4 (sat on), 3-grams 0/3, 4-grams 0/2
    # exp smoothing: each zero precision gets 1 / (2^k * total): 1/(2*3), 1/(4*2)
    # BP = exp(1 - 6/5)
    precisions = [4 / 5, 1 / 4, 1 / (2 * 3), 1 / (4 * 2)]
    expected = 100 * math.exp(1 - 6 / 5) * math.exp(sum(map(math.log, precisions)) / 4)
    got = _bleu("the dog sat on mat", "the cat sat on the mat")
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == sacrebleu.sentence_bleu("the dog sat on mat", ["the cat sat on the mat"]).score


def test_bleu_hand_computed_effective_order_and_tokenization():
    # "the cat." is tokenized 13a-style to "the cat ." (3 tokens) vs ref of 4 tokens:
    # 1-grams 3/3, 2-grams 2/2, 3-grams 1/1, no 4-grams -> effective order 3
    expected = 100 * math.exp(1 - 4 / 3) * math.exp(0.0)
    got = _bleu("the cat.", "the cat . today")
    assert got == pytest.approx(expected, rel=1e-12)
    # clipping: "the the the" vs "the cat": 1-gram matches min(3, 1) = 1 -> 1/3,
    # 2-grams 0/2 -> 1/(2*2), 3-grams 0/1 -> 1/(4*1); BP = 1 (3 >= 2); effective order 3
    expected = 100 * math.exp((math.log(1 / 3) + math.log(1 / 4) + math.log(1 / 4)) / 3)
    assert _bleu("the the the", "the cat") == pytest.approx(expected, rel=1e-12)
    assert _bleu("", "the cat") == 0.0
    assert _bleu("dog", "the cat") == 0.0


# ------------------------------------------------ exactness vs plain sacrebleu

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", ".", ",", "don't", "3.5", "1,000",
          "x-y", "(", ")", "&amp;", "&quot;", "<skipped>", "Straße", "über", "-", "5-4", "'s",
          "e.g.", "...", "“quoted”", "€10", "--", "a.b,c", "中文", "$", "@"]

_sentences = st.one_of(
    st.lists(
        st.sampled_from([*list("ab .,-'0123\"&;()<>@#$\t\n\xa0\u3000ü€"), "&amp;", "-\n"]),
        max_size=40,
    ).map("".join),
    st.lists(st.sampled_from(WORDS), max_size=25).map(" ".join),
    st.tuples(
        st.lists(st.sampled_from(WORDS), max_size=20),
        st.sampled_from([" ", "  ", " \t", "\n", ""]),
    ).map(lambda t: t[1].join(t[0])),
    st.text(max_size=30),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hyp=_sentences, ref=_sentences)
def test_fast_bleu_identical_to_sentence_bleu(hyp, ref):
    assert _bleu(hyp, ref) == sacrebleu.sentence_bleu(hyp, [ref]).score


@settings(max_examples=300, deadline=None)
@given(text=_sentences)
def test_wordwise_13a_tokenization_is_exact(text):
    scorer = SentenceScorer("bleu")
    assert scorer._bleu_words(text) == scorer._tokenize(text.rstrip()).split()


@settings(max_examples=150, deadline=None)
@given(hyp=_sentences, ref=_sentences)
def test_chrf_and_ter_identical_to_plain(hyp, ref):
    for sim, func in (("chrf", sacrebleu.sentence_chrf), ("ter", sacrebleu.sentence_ter)):
        scorer = SentenceScorer(sim)
        assert scorer.score(hyp, scorer.prepare(ref)) == func(hyp, [ref]).score
