"""Tests for the built-in synthetic multi-modal translation corpus."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from collections import Counter, defaultdict
from itertools import combinations

import pytest

from fairseq_seqkd.digests import file_sha256
from fairseq_seqkd.experiments import corpus as C

SMALL = C.CorpusSpec(seed=7, train=3000, valid=300, test=300)


@pytest.fixture(scope="module")
def default_corpus():
    return C.generate_corpus(C.CorpusSpec())


def _sentences(n, seed=0):
    rng = random.Random(seed)
    return [C.sample_sentence(rng) for _ in range(n)]


def _mutual_information(pairs) -> float:
    """Plug-in mutual information (bits) between the two coordinates of ``pairs``."""
    joint = Counter(pairs)
    xs = Counter(x for x, _ in pairs)
    ys = Counter(y for _, y in pairs)
    n = len(pairs)
    return sum(c / n * math.log2(c * n / (xs[x] * ys[y])) for (x, y), c in joint.items())


# ---------------------------------------------------------------------------- determinism


def test_same_seed_same_corpus_and_different_seed_differs():
    a = C.generate_corpus(SMALL)
    b = C.generate_corpus(C.CorpusSpec(seed=7, train=3000, valid=300, test=300))
    c = C.generate_corpus(C.CorpusSpec(seed=8, train=3000, valid=300, test=300))
    assert a == b
    for split in C.SPLITS:
        assert a[split] != c[split]
        overlap = len(set(a[split]) & set(c[split])) / len(a[split])
        assert overlap < 0.05


def test_generate_pair_is_deterministic_and_register_forcing_keeps_source():
    src, tgt, reg = C.generate_pair(random.Random(3))
    assert (src, tgt, reg) == C.generate_pair(random.Random(3))
    for forced in range(3):
        s2, t2, r2 = C.generate_pair(random.Random(3), register=forced)
        assert s2 == src and r2 == forced and C.register_of(t2) == forced
        if forced == reg:
            assert t2 == tgt


def test_default_corpus_sizes_and_split_hygiene(default_corpus):
    data = default_corpus
    spec = C.CorpusSpec()
    assert {k: len(v) for k, v in data.items()} == {
        "train": spec.train,
        "valid": spec.valid,
        "test": spec.test,
    }
    train_src = {s for s, _ in data["train"]}
    valid_src = [s for s, _ in data["valid"]]
    test_src = [s for s, _ in data["test"]]
    assert len(set(valid_src)) == len(valid_src) and len(set(test_src)) == len(test_src)
    assert not set(valid_src) & set(test_src)
    assert not train_src & (set(valid_src) | set(test_src))
    assert len(set(data["train"])) == len(data["train"])
    for pairs in data.values():
        for src, tgt in pairs:
            assert src and tgt and "\n" not in src + tgt
            assert src == " ".join(src.split()) and tgt == " ".join(tgt.split())


def test_spec_validation():
    with pytest.raises(ValueError):
        C.CorpusSpec(registers=0)
    with pytest.raises(ValueError):
        C.CorpusSpec(registers=C.MAX_REGISTERS + 1)
    with pytest.raises(ValueError):
        C.CorpusSpec(train=-1)
    with pytest.raises(ValueError):
        C.CorpusSpec(min_len=10, max_len=8)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            C.CorpusSpec(preferred=bad)


# ---------------------------------------------------------------------------- size / shape


def test_vocabulary_few_hundred_types_per_side(default_corpus):
    data = default_corpus
    src_vocab = {w for s, _ in data["train"] for w in s.split()}
    tgt_vocab = {w for _, t in data["train"] for w in t.split()}
    assert 150 <= len(src_vocab) <= 400
    assert 300 <= len(tgt_vocab) <= 900
    # valid/test are in-vocabulary almost everywhere (a small, closed language)
    held_out = {w for split in ("valid", "test") for _, t in data[split] for w in t.split()}
    assert len(held_out - tgt_vocab) <= 5


def test_sentence_lengths(default_corpus):
    data = default_corpus
    src_len = [len(s.split()) for pairs in data.values() for s, _ in pairs]
    tgt_len = [len(t.split()) for pairs in data.values() for _, t in pairs]
    assert min(src_len) >= 6 and max(src_len) <= 14
    assert min(tgt_len) >= 5 and max(tgt_len) <= 16
    assert 8 <= sum(src_len) / len(src_len) <= 11
    assert 8 <= sum(tgt_len) / len(tgt_len) <= 11
    assert len(set(src_len)) >= 8  # a spread of lengths, not one template


def test_min_max_len_respected():
    spec = C.CorpusSpec(train=500, valid=50, test=50, min_len=8, max_len=10)
    data = C.generate_corpus(spec)
    assert {len(s.split()) for pairs in data.values() for s, _ in pairs} <= {8, 9, 10}


# ---------------------------------------------------------------------------- the latent


def test_register_recovered_from_every_gold_target():
    rng = random.Random(11)
    spec = C.CorpusSpec(registers=4)
    for _ in range(5000):
        _, tgt, reg = C.generate_pair(rng, spec)
        assert C.register_of(tgt) == reg
        assert not C.is_mixed(tgt)
        assert C.register_consistency(tgt) == 1.0
        assert sum(C.register_votes(tgt).values()) >= 1


def _register_shares(spec, n, seed):
    """Share of each register among ``n`` generated pairs (checking each target's register)."""
    rng = random.Random(seed)
    regs = Counter()
    for _ in range(n):
        _, tgt, reg = C.generate_pair(rng, spec)
        assert C.register_of(tgt) == reg
        regs[reg] += 1
    return {r: regs[r] / n for r in range(spec.registers)}


def _expected_shares(spec):
    rest = (1 - spec.preferred) / (spec.registers - 1)
    return {r: spec.preferred if r == C.CANONICAL_REGISTER else rest for r in range(spec.registers)}


@pytest.mark.parametrize(
    "spec",
    [
        C.CorpusSpec(),
        C.CorpusSpec(preferred=1 / 3),  # uniform: no mode
        C.CorpusSpec(preferred=0.0),  # never canonical
        C.CorpusSpec(registers=4, preferred=0.7),
    ],
)
def test_canonical_register_is_drawn_with_probability_preferred(spec):
    """The canonical register has share ``preferred``, the other registers split the rest."""
    shares = _register_shares(spec, 20000, seed=12)
    expected = _expected_shares(spec)
    assert all(abs(shares[r] - expected[r]) < 0.015 for r in shares), shares


def test_fully_canonical_and_single_register_corpora():
    assert _register_shares(C.CorpusSpec(preferred=1.0), 2000, seed=3) == {0: 1.0, 1: 0.0, 2: 0.0}
    assert _register_shares(C.CorpusSpec(registers=1, preferred=0.0), 500, seed=3) == {0: 1.0}


def test_default_corpus_has_a_mode(default_corpus):
    data = default_corpus["train"]
    spec = C.CorpusSpec()
    regs = Counter(C.register_of(t) for _, t in data)
    expected = _expected_shares(spec)
    assert C.CANONICAL_REGISTER == 0 and set(regs) == {0, 1, 2}
    assert all(abs(regs[r] / len(data) - expected[r]) < 0.02 for r in range(3))
    assert regs[0] > 1.5 * max(regs[1], regs[2])  # a clear mode
    assert C.mixing_rate(t for _, t in data) == 0.0


def test_register_changes_several_words_of_the_same_source():
    lexical, positional = [], []
    for sentence in _sentences(2000, seed=5):
        targets = [C.render_target(sentence, r).split() for r in range(3)]
        for a, b in combinations(targets, 2):
            bag = sum(((Counter(a) - Counter(b)) + (Counter(b) - Counter(a))).values()) / 2
            pos = sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))
            assert bag >= 1  # at least the verb always changes
            lexical.append(bag)
            positional.append(pos)
    assert sum(lexical) / len(lexical) >= 2.0
    assert sum(positional) / len(positional) >= 4.0


def test_each_register_has_its_own_word_order():
    """Word order is register-dependent too, not only the choice of synonyms."""

    def skeleton(sentence, register):  # register-specific words become a placeholder
        words = C.render_target(sentence, register).split()
        return tuple("X" if C.register_votes(w) else w for w in words)

    all_distinct = 0
    sentences = _sentences(1000, seed=6)
    for sentence in sentences:
        skeletons = {skeleton(sentence, r) for r in range(3)}
        assert len(skeletons) > 1
        all_distinct += len(skeletons) == 3
    assert all_distinct / len(sentences) > 0.95


def test_register_is_not_predictable_from_source(default_corpus):
    data = default_corpus
    spec = C.CorpusSpec()
    expected = _expected_shares(spec)
    labelled = [(s.split(), C.register_of(t)) for s, t in data["train"]]
    # register distribution conditional on the first word and on the length: MI ~ 0 bits
    assert _mutual_information([(s[0], r) for s, r in labelled]) < 0.005
    assert _mutual_information([(len(s), r) for s, r in labelled]) < 0.005
    # ... and conditional on every frequent source word
    by_word = defaultdict(Counter)
    for words, reg in labelled:
        for w in set(words):
            by_word[w][reg] += 1
    frequent = [w for w, c in by_word.items() if sum(c.values()) >= 1000]
    assert len(frequent) >= 20
    for w in frequent:
        total = sum(by_word[w].values())
        assert all(abs(by_word[w][r] / total - expected[r]) < 0.08 for r in range(3)), w
    # a naive Bayes classifier on source words does no better than always "canonical"
    train, held = labelled[:24000], labelled[24000:]
    counts = defaultdict(Counter)
    prior = Counter(r for _, r in train)
    for words, reg in train:
        for w in words:
            counts[reg][w] += 1
    totals = {r: sum(c.values()) for r, c in counts.items()}

    def predict(words):
        def score(r):
            return math.log(prior[r]) + sum(
                math.log((counts[r][w] + 1) / (totals[r] + 1000)) for w in words
            )

        return max(range(3), key=score)

    accuracy = sum(predict(w) == r for w, r in held) / len(held)
    canonical = sum(r == C.CANONICAL_REGISTER for _, r in held) / len(held)
    assert abs(canonical - spec.preferred) < 0.03
    assert accuracy < canonical + 0.02


def test_unimodal_control_corpus():
    data = C.generate_corpus(C.CorpusSpec(train=1000, valid=100, test=100, registers=1))
    assert {C.register_of(t) for pairs in data.values() for _, t in pairs} == {0}


# ---------------------------------------------------------------------------- mixing


def test_half_and_half_mixture_is_flagged():
    tested = 0
    sentences = _sentences(1000, seed=9)
    for i, sentence in enumerate(sentences):
        a, b = i % 3, (i + 1) % 3
        ta, tb = C.render_target(sentence, a).split(), C.render_target(sentence, b).split()
        head, tail = ta[: len(ta) // 2], tb[len(tb) // 2 :]
        if not (set(head) & C.marker_words(a) and set(tail) & C.marker_words(b)):
            continue  # one half carries no register-specific word of its own register
        tested += 1
        mixed = " ".join(head + tail)
        assert C.is_mixed(mixed)
        assert C.register_of(mixed) is None
        assert C.register_consistency(mixed) < 1.0
        assert C.register_of(mixed, majority=True) in {a, b, None}
    assert tested >= 0.6 * len(sentences)


def test_single_word_swap_is_flagged_and_majority_wins():
    """Replacing one register-specific word with its synonym from another register is mixing."""
    for sentence in _sentences(300, seed=4):
        t0 = C.render_target(sentence, 0).split()
        t1 = C.render_target(sentence, 1).split()
        m0 = [i for i, w in enumerate(t0) if w in C.marker_words(0)]
        m1 = [w for w in t1 if w in C.marker_words(1)]
        swapped = list(t0)
        swapped[m0[0]] = m1[0]
        text = " ".join(swapped)
        if len(m0) == 1:  # the only register-0 word was replaced: now a register-1 sentence
            assert C.register_of(text) == 1 and not C.is_mixed(text)
            continue
        assert C.is_mixed(text)
        assert C.register_of(text) is None
        if len(m0) >= 3:
            assert C.register_of(text, majority=True) == 0
            assert C.register_consistency(text) == pytest.approx((len(m0) - 1) / len(m0))


def test_marker_sets_are_disjoint_and_unknown_words_are_neutral():
    sets = [C.marker_words(r) for r in range(C.MAX_REGISTERS)]
    for a, b in combinations(sets, 2):
        assert not a & b
    assert all(len(s) >= 100 for s in sets)
    assert C.register_of("") is None and C.register_of("der die das xyzzy") is None
    assert not C.is_mixed("der die das")
    assert C.register_consistency("") == 1.0
    assert C.mixing_rate([]) == 0.0


# ---------------------------------------------------------------------------- grammar


def _np(det, noun, adjs=(), plural=False):
    return C.NounPhrase(det, tuple(adjs), noun, plural)


ANIMATE = [i for i, n in enumerate(C.NOUNS) if n[2]]


# (subject slice, object slice) of "the big N sees a big N" per word order
SLOTS = {
    "verb-second": (slice(0, 3), slice(4, 7)),
    "verb-final": (slice(0, 3), slice(3, 6)),
    "fronting": (slice(4, 7), slice(0, 3)),  # object fronted when there is no adverb/PP/clause
    "verb-initial": (slice(1, 4), slice(4, 7)),
}


@pytest.mark.parametrize("register", range(C.MAX_REGISTERS))
def test_case_gender_and_adjective_agreement(register):
    adj = C.ADJECTIVES.index("big")
    genders = set()
    for noun in ANIMATE:
        sentence = C.Sentence(
            C.Clause(_np("the", noun, [adj]), 0, "present", _np("a", noun, [adj]))
        )
        words = C.render_target(sentence, register).split()
        assert len(words) == 7
        subj_slice, obj_slice = SLOTS[C.WORD_ORDERS[register]]
        det_s, adj_s, n_s = words[subj_slice]
        det_o, adj_o, n_o = words[obj_slice]
        assert n_s == n_o
        stem = adj_s[:-1]
        assert adj_s == stem + "e"  # weak nominative ending after the definite article
        expected = {
            "der": ("einen", stem + "en"),  # masculine accusative: ein-en + mixed -en
            "die": ("eine", stem + "e"),
            "das": ("ein", stem + "es"),
        }
        assert det_s in expected
        assert (det_o, adj_o) == expected[det_s]
        genders.add(det_s)
    assert genders == {"der", "die", "das"}


def test_plural_and_dative_agreement_and_contraction():
    noun = C.NOUNS.index(("garden", "gardens", False))
    adj = C.ADJECTIVES.index("old")
    subj = _np("the", ANIMATE[0])
    for register in range(3):
        pl = C.Sentence(
            C.Clause(subj, 1, "past", _np("two", noun, [adj], True), prep=(0, _np("the", noun)))
        )
        words = C.render_target(pl, register).split()
        # strong plural accusative ("zwei alte ..."); "in dem" contracts to "im"
        i = words.index("zwei")
        assert words[i + 1].endswith("e") and not words[i + 1].endswith("en")
        assert ("im" in words) != ("in" in words)
        src = C.render_source(pl)
        assert "two old gardens" in src and "in the garden" in src


def test_source_grammar():
    dog, apple = C.NOUNS.index(("dog", "dogs", True)), C.NOUNS.index(("apple", "apples", False))
    see = 0
    s = C.Sentence(C.Clause(_np("a", dog), see, "present", _np("a", apple)))
    assert C.render_source(s) == "a dog sees an apple"
    s = C.Sentence(C.Clause(_np("the", dog, plural=True), see, "future", _np("a", apple, [], True)))
    assert C.render_source(s) == "the dogs will see apples"
    s = C.Sentence(
        C.Clause(_np("the", dog, plural=True), see, "present", _np("my", apple)),
        conjunction=0,
        sub=C.Clause(_np("every", dog), see, "past", _np("this", apple, [], True)),
    )
    assert C.render_source(s) == "the dogs see my apple because every dog saw these apples"


def test_future_splits_the_verb():
    dog, apple = C.NOUNS.index(("dog", "dogs", True)), C.NOUNS.index(("apple", "apples", False))
    s = C.Sentence(C.Clause(_np("the", dog), 0, "future", _np("the", apple)))
    for register in range(3):
        words = C.render_target(s, register).split()
        assert "wird" in words and len(words) == 6
        if C.WORD_ORDERS[register] == "verb-final":
            assert words[-1] == "wird"
        else:
            assert words.index("wird") == 2 and words[-1] in C.marker_words(register)


# ---------------------------------------------------------------------------- files


def _read_lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_write_corpus_writes_aligned_files(tmp_path):
    counts = C.write_corpus(tmp_path, SMALL)
    assert counts == {"train": 3000, "valid": 300, "test": 300}
    expected = C.generate_corpus(SMALL)
    for split in C.SPLITS:
        src = _read_lines(tmp_path / f"{split}.src")
        tgt = _read_lines(tmp_path / f"{split}.tgt")
        assert len(src) == len(tgt) == counts[split]
        assert list(zip(src, tgt, strict=True)) == expected[split]
    key = json.loads((tmp_path / "corpus.json").read_text())["key"]
    assert key["command"]["spec"]["seed"] == 7 and key["version"] == str(C.CORPUS_VERSION)
    names = sorted(p.name for p in tmp_path.iterdir())
    expected_names = sorted([f"{s}.{x}" for s in C.SPLITS for x in ("src", "tgt")])
    assert names == sorted([*expected_names, "corpus.json"])  # no temp files left behind


def test_write_corpus_skips_when_complete(tmp_path, monkeypatch):
    C.write_corpus(tmp_path, SMALL)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}

    def boom(spec):
        raise AssertionError("regenerated a complete corpus")

    monkeypatch.setattr(C, "generate_corpus", boom)
    assert C.write_corpus(str(tmp_path), SMALL) == {"train": 3000, "valid": 300, "test": 300}
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes


@pytest.mark.parametrize("damage", ["truncate", "same_size", "drop_line", "delete", "stamp",
                                    "other_spec", "other_version"])
def test_write_corpus_rewrites_incomplete(tmp_path, damage, monkeypatch):
    C.write_corpus(tmp_path, SMALL)
    original = (tmp_path / "train.tgt").read_bytes()
    spec = SMALL
    if damage == "truncate":
        (tmp_path / "train.tgt").write_bytes(original[: len(original) // 2])
    elif damage == "same_size":  # other bytes, same size and mtime: only the content tells
        mtime = (tmp_path / "train.tgt").stat().st_mtime_ns
        (tmp_path / "train.tgt").write_bytes(original.replace(b"e", b"a", 1))
        os.utime(tmp_path / "train.tgt", ns=(mtime, mtime))
    elif damage == "drop_line":
        (tmp_path / "valid.src").write_text(
            "\n".join(_read_lines(tmp_path / "valid.src")[:-1]) + "\n", encoding="utf-8"
        )
    elif damage == "delete":
        (tmp_path / "test.src").unlink()
    elif damage == "stamp":
        (tmp_path / "corpus.json").write_text("{not json", encoding="utf-8")
    elif damage == "other_version":  # a new generator: another corpus, and the stamp says so
        monkeypatch.setattr(C, "CORPUS_VERSION", C.CORPUS_VERSION + 1)
    else:
        spec = C.CorpusSpec(seed=8, train=3000, valid=300, test=300)
    C.write_corpus(tmp_path, spec)
    expected = C.generate_corpus(spec)
    for split in C.SPLITS:
        src = _read_lines(tmp_path / f"{split}.src")
        tgt = _read_lines(tmp_path / f"{split}.tgt")
        assert list(zip(src, tgt, strict=True)) == expected[split]
    if damage not in ("other_spec", "other_version"):
        assert (tmp_path / "train.tgt").read_bytes() == original
    if damage == "other_version":
        assert (tmp_path / "train.tgt").read_bytes() != original


def test_mono_sources_are_in_no_split_distinct_and_deterministic(tmp_path):
    spec = dataclasses.replace(SMALL, mono=2000)
    corpus = C.generate_corpus(spec)
    assert corpus == C.generate_corpus(SMALL)  # a stream of their own: the splits unchanged
    mono = C.generate_mono(spec, corpus)
    assert len(mono) == len(set(mono)) == 2000
    in_splits = {src for pairs in corpus.values() for src, _ in pairs}
    assert not in_splits & set(mono)
    # a draw equal to a source of a split is left out: make the stream's first draws sources
    rng = C.split_rng(spec, "mono")
    first = [C.generate_pair(rng, spec)[0] for _ in range(10)]
    assert mono[:10] == first
    taken = {**corpus, "train": [*corpus["train"], *((src, "x") for src in first[::2])]}
    assert C.generate_mono(spec, taken)[:5] == first[1::2]
    assert mono == C.generate_mono(spec, corpus)
    assert mono != C.generate_mono(dataclasses.replace(spec, seed=8),
                                   C.generate_corpus(dataclasses.replace(spec, seed=8)))
    counts = C.write_corpus(tmp_path, spec)
    assert counts == {"train": 3000, "valid": 300, "test": 300, "mono": 2000}
    assert _read_lines(tmp_path / C.MONO_FILE) == mono
    stamp = json.loads((tmp_path / "corpus.json").read_text())
    assert stamp["key"]["command"]["spec"]["mono"] == 2000
    assert stamp["files"][C.MONO_FILE] == file_sha256(tmp_path / C.MONO_FILE)


def test_mono_file_is_stamped_like_the_splits(tmp_path, monkeypatch):
    spec = dataclasses.replace(SMALL, mono=500)
    C.write_corpus(tmp_path, spec)
    original = (tmp_path / C.MONO_FILE).read_bytes()
    (tmp_path / C.MONO_FILE).write_bytes(original[: len(original) // 2])
    C.write_corpus(tmp_path, spec)  # a damaged mono file: the corpus is written again
    assert (tmp_path / C.MONO_FILE).read_bytes() == original
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}

    def boom(spec):
        raise AssertionError("regenerated a complete corpus")

    monkeypatch.setattr(C, "generate_corpus", boom)
    C.write_corpus(tmp_path, spec)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes
    monkeypatch.undo()
    # mono=0: no mono file, not even another spec's
    assert C.write_corpus(tmp_path, SMALL) == {"train": 3000, "valid": 300, "test": 300}
    assert not (tmp_path / C.MONO_FILE).exists()
    with pytest.raises(ValueError, match="non-negative"):
        dataclasses.replace(SMALL, mono=-1)


def test_command_line_takes_every_spec_field(tmp_path, capsys):
    C.main([str(tmp_path), "--train", "60", "--valid", "10", "--test", "10", "--preferred", "1"])
    assert json.loads(capsys.readouterr().out) == {"train": 60, "valid": 10, "test": 10}
    spec = C.CorpusSpec(train=60, valid=10, test=10, preferred=1.0)
    key = json.loads((tmp_path / "corpus.json").read_text())["key"]
    assert key["command"]["spec"] == dataclasses.asdict(spec)
    assert (
        list(
            zip(_read_lines(tmp_path / "test.src"), _read_lines(tmp_path / "test.tgt"), strict=True)
        )
        == C.generate_corpus(spec)["test"]
    )
