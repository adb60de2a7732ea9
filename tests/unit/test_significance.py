"""chrF and the paired bootstrap wrappers against hand-computed cases."""

import pytest

from fairseq_seqkd.experiments.significance import chrf, paired_bootstrap


def test_chrf_of_a_hand_computed_pair():
    # "abc" vs "abd": character 1-grams 2 of 3 match (F = 2/3), 2-grams 1 of 2 (1/2), the one
    # 3-gram none (0); no 4- to 6-grams: chrF = (2/3 + 1/2 + 0) / 3
    score, signature = chrf(["abc"], ["abd"])
    assert score == pytest.approx(100 * (2 / 3 + 1 / 2) / 3)
    assert signature.startswith("nrefs:1|") and "nc:6|nw:0" in signature
    assert chrf(["a dog runs"], ["a dog runs"])[0] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        chrf(["a", "b"], ["a"])


def test_one_sentence_corpus_every_resample_is_the_sample():
    # every resample of a one-sentence corpus is that sentence: the resampled differences all
    # equal the observed one, none exceeds it after centring, so p = 1 / (samples + 1)
    comparisons, signatures = paired_bootstrap(["x y z"], {"sys": ["a dog runs home"]},
                                               ["a dog runs home"], samples=99)
    bleu, chrf2 = comparisons["sys"]["BLEU"], comparisons["sys"]["chrF2"]
    assert (bleu.score, bleu.baseline) == (pytest.approx(100.0), 0.0)
    assert bleu.delta == pytest.approx(100.0) and bleu.p_value == pytest.approx(1 / 100)
    assert chrf2.score == pytest.approx(100.0) and chrf2.p_value == pytest.approx(1 / 100)
    assert "bs:99" in signatures["BLEU"] and "seed:12345" in signatures["chrF2"]


def test_no_difference_is_not_significant_and_a_clear_gain_is():
    refs = [f"the {w} sat on a mat near {v}" for w in ("cat", "dog", "man", "boy", "girl")
            for v in ("home", "town", "the sea", "a tree")]
    bad = [r.split(" on ")[0] for r in refs]  # every sentence loses its second half
    one_off = [bad[0], *refs[1:]]  # the reference but for one sentence
    comparisons, _ = paired_bootstrap(refs, {"same": list(refs), "bad": bad,
                                             "one-off": one_off}, refs)
    assert comparisons["same"]["BLEU"].p_value == comparisons["same"]["chrF2"].p_value == 1.0
    assert comparisons["same"]["BLEU"].delta == 0.0
    # other output, the same score: every resampled BLEU is 0 for both (no 4-gram matches)
    zero, _ = paired_bootstrap(["x y z"] * 3, {"other": ["u v w"] * 3}, ["a b c d e"] * 3)
    assert zero["other"]["BLEU"].delta == 0.0 and zero["other"]["BLEU"].p_value == 1.0
    assert comparisons["bad"]["BLEU"].delta < -20 and comparisons["bad"]["BLEU"].p_value < 0.01
    assert comparisons["bad"]["chrF2"].p_value < 0.01
    # one worse sentence in 20: a small loss, within what resampling gives by chance
    assert -5 < comparisons["one-off"]["BLEU"].delta < 0
    assert comparisons["one-off"]["BLEU"].p_value > 0.05
