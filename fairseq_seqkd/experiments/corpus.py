"""Built-in synthetic translation corpus with a sentence-level latent "register".

Sequence-level knowledge distillation (Kim & Rush, 2016) pays off when the training data is
*multi-modal*: one source sentence has several valid translations. A small student trained with
token-level cross-entropy on such data spends its capacity on every mode and learns their mixture,
so greedy decoding can switch modes mid-sentence. The teacher's beam search returns one mode, the
most probable one, consistently; a student trained on that output (Seq-KD) learns a simpler,
unimodal task and needs no beam search.

This module generates such data deterministically, with the standard library only:

* The source side is an English-like language from a small grammar: subject and object noun
  phrases (determiner, up to two adjectives, noun, singular/plural), a transitive verb in present,
  past or future tense, optionally an adverb, a prepositional phrase and (rarely, so that a small
  student can learn the grammar itself) a subordinate clause.
* The target side is a German-like language with invented content words and real German function
  words. Determiners and adjective endings agree with the noun's gender, number and case
  (nominative subject, accusative object, dative after prepositions), and ``in dem`` / ``bei dem``
  contract to ``im`` / ``beim``.
* Every target sentence is rendered in one of ``registers`` latent registers, drawn once per
  sentence. The register fixes, consistently for the whole sentence, (a) the synonym used for
  every verb and adverb and for about half of the nouns and adjectives (synonymous nouns can
  differ in gender, which changes determiners and adjective endings as well), and (b) the word
  order: verb-second, verb-final, fronting of the subordinate clause / adverb / prepositional
  phrase / object, or verb-initial. Several target words therefore depend on one latent variable.
* Registers follow "canonical register + free variation", as translators do: each sentence is
  rendered in the canonical register (:data:`CANONICAL_REGISTER`) with probability
  ``CorpusSpec.preferred``, otherwise in one of the other registers, uniformly, and always
  independently of the source. The canonical register is the mode that a teacher's beam search
  finds and the most frequent register of the single references, so single-reference BLEU
  rewards a consistent, mode-seeking translation and penalises mixing, as on real data; and a
  Seq-KD student mostly has to learn one register's lexicon and word order, the capacity that
  the paper says a small student saves. ``preferred = 1 / registers`` draws registers uniformly
  (no mode, the previous design, in which BLEU against one random-register reference cannot
  reward a consistent choice).

Every register-specific word belongs to exactly one register, so :func:`register_of` recovers the
register of a gold target and :func:`is_mixed` flags a hypothesis that combines words of two
registers, which is how the demo *measures* mode mixing. With ``registers=1`` the data is
unimodal, which makes a useful control. The vocabulary is a few hundred types per side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text

__all__ = [
    "ADJECTIVES",
    "ADVERBS",
    "CANONICAL_REGISTER",
    "CONJUNCTIONS",
    "CORPUS_VERSION",
    "DETERMINERS",
    "MAX_REGISTERS",
    "NOUNS",
    "PREPOSITIONS",
    "SPLITS",
    "VERBS",
    "WORD_ORDERS",
    "Clause",
    "CorpusSpec",
    "NounPhrase",
    "Sentence",
    "count_lines",
    "distinct_characters",
    "file_sha256",
    "generate_corpus",
    "generate_pair",
    "is_mixed",
    "marker_words",
    "mixing_rate",
    "register_consistency",
    "register_of",
    "register_votes",
    "render_source",
    "render_target",
    "sample_sentence",
    "split_rng",
    "write_corpus",
]

#: Bump whenever the grammar or lexicon changes, so stale corpora on disk are regenerated.
CORPUS_VERSION = 2
#: Registers the lexicon provides; ``CorpusSpec.registers`` may use the first 1..MAX_REGISTERS.
MAX_REGISTERS = 4
#: The register most translations use (``CorpusSpec.preferred`` of them); the rest vary freely.
CANONICAL_REGISTER = 0
#: Word-order rule of register ``r`` is ``WORD_ORDERS[r]``.
WORD_ORDERS = ("verb-second", "verb-final", "fronting", "verb-initial")
SPLITS = ("train", "valid", "test")
STAMP_NAME = "corpus.json"

# Fixed seed of the invented target lexicon: the *language* is the same for every corpus seed.
_LEXICON_SEED = 20160725

# --------------------------------------------------------------------------------------------
# Source (English-like) lexicon.
# --------------------------------------------------------------------------------------------

#: (singular, plural, animate). Subjects are always animate.
NOUNS: tuple[tuple[str, str, bool], ...] = (
    ("dog", "dogs", True), ("cat", "cats", True), ("horse", "horses", True),
    ("bird", "birds", True), ("farmer", "farmers", True), ("teacher", "teachers", True),
    ("doctor", "doctors", True), ("child", "children", True), ("woman", "women", True),
    ("man", "men", True), ("king", "kings", True), ("queen", "queens", True),
    ("soldier", "soldiers", True), ("baker", "bakers", True), ("student", "students", True),
    ("neighbour", "neighbours", True), ("girl", "girls", True), ("boy", "boys", True),
    ("fisherman", "fishermen", True), ("painter", "painters", True),
    ("house", "houses", False), ("tree", "trees", False), ("book", "books", False),
    ("letter", "letters", False), ("apple", "apples", False), ("bread", "breads", False),
    ("car", "cars", False), ("boat", "boats", False), ("garden", "gardens", False),
    ("window", "windows", False), ("door", "doors", False), ("table", "tables", False),
    ("key", "keys", False), ("song", "songs", False), ("story", "stories", False),
    ("river", "rivers", False), ("city", "cities", False), ("village", "villages", False),
    ("bridge", "bridges", False), ("flower", "flowers", False), ("stone", "stones", False),
    ("cup", "cups", False), ("coat", "coats", False), ("ring", "rings", False),
    ("lamp", "lamps", False), ("box", "boxes", False), ("map", "maps", False),
    ("wall", "walls", False),
)  # fmt: skip

#: (base / plural present, 3rd person singular present, past).
VERBS: tuple[tuple[str, str, str], ...] = (
    ("see", "sees", "saw"), ("find", "finds", "found"), ("buy", "buys", "bought"),
    ("sell", "sells", "sold"), ("write", "writes", "wrote"), ("carry", "carries", "carried"),
    ("bring", "brings", "brought"), ("build", "builds", "built"), ("paint", "paints", "painted"),
    ("love", "loves", "loved"), ("want", "wants", "wanted"), ("open", "opens", "opened"),
    ("visit", "visits", "visited"), ("take", "takes", "took"), ("hold", "holds", "held"),
    ("watch", "watches", "watched"), ("clean", "cleans", "cleaned"),
    ("break", "breaks", "broke"), ("lose", "loses", "lost"), ("follow", "follows", "followed"),
)  # fmt: skip

#: Listed roughly in English adjective order (opinion, size, age, colour), which is the order
#: used when a noun phrase has two adjectives.
ADJECTIVES: tuple[str, ...] = (
    "happy", "quiet", "loud", "fast", "slow", "rich", "poor", "clever", "brave", "tired",
    "strange", "famous", "heavy", "dark", "big", "small", "old", "young", "new", "red",
    "green", "blue", "black", "white",
)  # fmt: skip

ADVERBS: tuple[str, ...] = (
    "quickly", "slowly", "carefully", "quietly", "gladly", "secretly", "suddenly", "again",
    "together", "alone", "today", "often",
)  # fmt: skip

#: (source, target); all target prepositions govern the dative here.
PREPOSITIONS: tuple[tuple[str, str], ...] = (
    ("in", "in"), ("on", "auf"), ("near", "bei"), ("behind", "hinter"), ("under", "unter"),
    ("with", "mit"), ("beside", "neben"), ("before", "vor"),
)  # fmt: skip

#: (source, target); target subordinate clauses are verb-final except in verb-initial register.
CONJUNCTIONS: tuple[tuple[str, str], ...] = (
    ("because", "weil"), ("when", "wenn"), ("although", "obwohl"), ("if", "falls"),
)  # fmt: skip

#: key -> (source singular or None, source plural or None, target kind, target stem).
#: Target kinds: "def" (der/die/das), "der" (dieser-type), "ein" (ein-type; "ein" in the plural
#: is the bare plural), "num" (invariant numeral), "quant" (viele-type, plural only).
DETERMINERS: dict[str, tuple[str | None, str | None, str, str]] = {
    "the": ("the", "the", "def", "d"),
    "a": ("a", "", "ein", "ein"),
    "this": ("this", "these", "der", "dies"),
    "that": ("that", "those", "der", "jen"),
    "my": ("my", "my", "ein", "mein"),
    "our": ("our", "our", "ein", "unser"),
    "their": ("their", "their", "ein", "ihr"),
    "every": ("every", None, "der", "jed"),
    "two": (None, "two", "num", "zwei"),
    "three": (None, "three", "num", "drei"),
    "many": (None, "many", "quant", "viel"),
    "some": (None, "some", "quant", "einig"),
}
_DET_WEIGHTS = {"the": 5, "a": 3}  # others weight 1
_DETS_SG = tuple(k for k, v in DETERMINERS.items() if v[0] is not None)
_DETS_PL = tuple(k for k, v in DETERMINERS.items() if v[1] is not None)
_DETS_SG_W = tuple(_DET_WEIGHTS.get(k, 1) for k in _DETS_SG)
_DETS_PL_W = tuple(_DET_WEIGHTS.get(k, 1) for k in _DETS_PL)
_ANIMATE = tuple(i for i, n in enumerate(NOUNS) if n[2])

# --------------------------------------------------------------------------------------------
# Target (German-like) morphology.
# --------------------------------------------------------------------------------------------

_GENDERS = ("m", "f", "n")
_CASES = ("nom", "acc", "dat")
_PLURAL_SUFFIX = {"m": "e", "f": "en", "n": "er"}


def _table(m: str, f: str, n: str, pl: str) -> dict[tuple[str, str], str]:
    """Build a (gender, case) table from space-separated nom/acc/dat entries per gender."""
    out = {}
    for gender, row in zip(("m", "f", "n", "pl"), (m, f, n, pl), strict=True):
        for case, item in zip(_CASES, row.split(" "), strict=True):
            out[(gender, case)] = "" if item == "-" else item
    return out


_DEFINITE = _table("der den dem", "die die der", "das das dem", "die die den")
_DER_ENDINGS = _table("er en em", "e e er", "es es em", "e e en")  # also strong adjectives
_EIN_ENDINGS = _table("- en em", "e e er", "- - em", "e e en")
_WEAK_ADJ = _table("e en en", "e e en", "e e en", "en en en")
_MIXED_ADJ = _table("er en en", "e e en", "es es en", "en en en")
_STRONG_ADJ = _DER_ENDINGS
_ADJ_ENDINGS = ("e", "en", "er", "es", "em")
_CONTRACTIONS = {("in", "dem"): "im", ("bei", "dem"): "beim"}
_FUTURE_AUX = {False: "wird", True: "werden"}


def _function_words() -> frozenset[str]:
    words = set(_DEFINITE.values())
    for _, _, kind, stem in DETERMINERS.values():
        if kind in ("der", "quant"):
            words.update(stem + e for e in _DER_ENDINGS.values())
        elif kind == "ein":
            words.update(stem + e for e in _EIN_ENDINGS.values())
        elif kind == "num":
            words.add(stem)
    words.update(t for _, t in PREPOSITIONS)
    words.update(t for _, t in CONJUNCTIONS)
    words.update(_CONTRACTIONS.values())
    words.update(_FUTURE_AUX.values())
    return frozenset(words)


_ONSETS = (
    "b", "br", "d", "dr", "f", "fl", "fr", "g", "gl", "gr", "h", "k", "kl", "kn", "kr", "l",
    "m", "n", "p", "pf", "pl", "r", "s", "sch", "schl", "schm", "schn", "schw", "sp", "st",
    "str", "t", "tr", "w", "z", "zw",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "au", "ei", "ie", "eu", "aa", "oo")
_CODAS = (
    "b", "ch", "cht", "d", "f", "ft", "g", "k", "ck", "l", "ld", "lm", "lt", "m", "n", "nd",
    "ng", "nk", "nz", "p", "r", "rb", "rg", "rk", "rm", "rn", "rt", "s", "st", "t", "tz",
)  # fmt: skip
_ADVERB_SUFFIXES = ("lich", "s", "", "erlei")


def _invent_stem(rng: random.Random) -> str:
    stem = rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
    if rng.random() < 0.25:  # occasional second syllable, still consonant-final
        stem += rng.choice(("el", "er", "in", "or", "ar")) + rng.choice(("", "d", "g"))
    return stem


def _verb_forms(stem: str) -> dict[str, str]:
    link = "e" if stem.endswith(("t", "d")) else ""  # arbeitet, redete
    return {
        "inf": stem + "en",  # also present plural
        "pres_sg": stem + link + "t",
        "past_sg": stem + link + "te",
        "past_pl": stem + link + "ten",
    }


@dataclass(frozen=True)
class _TargetNoun:
    sg: str
    pl: str
    gender: str


@dataclass(frozen=True)
class _Lexicon:
    """Target lexicon, indexed ``[source item][register]`` (unmarked items repeat one entry)."""

    nouns: tuple[tuple[_TargetNoun, ...], ...]
    verbs: tuple[tuple[dict[str, str], ...], ...]
    adjectives: tuple[tuple[str, ...], ...]
    adverbs: tuple[tuple[str, ...], ...]
    markers: dict[str, int]  # register-specific word form -> its register
    function_words: frozenset[str]


@lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    rng = random.Random(_LEXICON_SEED)
    function_words = _function_words()
    used: set[str] = set(function_words)

    def fresh(make_forms) -> tuple[str, list[str]]:
        for _ in range(10_000):
            stem = _invent_stem(rng)
            forms = make_forms(stem)
            if len(set(forms)) == len(forms) and used.isdisjoint(forms):
                used.update(forms)
                return stem, forms
        raise RuntimeError("could not invent a fresh target word")  # pragma: no cover

    markers: dict[str, int] = {}
    n_reg = MAX_REGISTERS

    def per_register(marked: bool, make_entry):
        """Return one entry per register; marked items get a distinct synonym per register."""
        if not marked:
            entry, _ = make_entry()
            return (entry,) * n_reg
        entries = []
        for r in range(n_reg):
            entry, forms = make_entry()
            markers.update(dict.fromkeys(forms, r))
            entries.append(entry)
        return tuple(entries)

    def make_noun():
        gender = rng.choice(_GENDERS)
        _, forms = fresh(lambda s: [s, s + _PLURAL_SUFFIX[gender]])
        return _TargetNoun(forms[0], forms[1], gender), forms

    def make_verb():
        stem, _ = fresh(lambda s: list(_verb_forms(s).values()))
        forms = _verb_forms(stem)
        return forms, list(forms.values())

    def make_adjective():
        stem, forms = fresh(lambda s: [s + e for e in _ADJ_ENDINGS])
        return stem, forms

    def make_adverb():
        suffix = rng.choice(_ADVERB_SUFFIXES)
        _, forms = fresh(lambda s: [s + suffix])
        return forms[0], forms

    marked_nouns = set(rng.sample(range(len(NOUNS)), len(NOUNS) // 2))
    marked_adjs = set(rng.sample(range(len(ADJECTIVES)), len(ADJECTIVES) // 2))
    nouns = tuple(per_register(i in marked_nouns, make_noun) for i in range(len(NOUNS)))
    verbs = tuple(per_register(True, make_verb) for _ in VERBS)
    adjs = tuple(per_register(i in marked_adjs, make_adjective) for i in range(len(ADJECTIVES)))
    advs = tuple(per_register(True, make_adverb) for _ in ADVERBS)
    return _Lexicon(nouns, verbs, adjs, advs, markers, function_words)


# --------------------------------------------------------------------------------------------
# Abstract sentences, sampling and rendering.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NounPhrase:
    det: str  # key of DETERMINERS
    adjectives: tuple[int, ...]  # indices into ADJECTIVES
    noun: int  # index into NOUNS
    plural: bool


@dataclass(frozen=True)
class Clause:
    subject: NounPhrase
    verb: int  # index into VERBS
    tense: str  # "present" | "past" | "future"
    obj: NounPhrase
    adverb: int | None = None  # index into ADVERBS
    prep: tuple[int, NounPhrase] | None = None  # (index into PREPOSITIONS, noun phrase)


@dataclass(frozen=True)
class Sentence:
    main: Clause
    conjunction: int | None = None  # index into CONJUNCTIONS, set iff ``sub`` is
    sub: Clause | None = None


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate. Equal specs give byte-identical corpora.

    seed: corpus sampling seed (the language itself is fixed). train / valid / test: number of
    pairs per split; valid and test sources are unique and never occur in train. registers:
    number of latent target registers (1..MAX_REGISTERS; 1 gives a unimodal control corpus).
    min_len / max_len: inclusive bounds on the source length in tokens. preferred: probability
    of the canonical register (the rest is spread evenly over the other registers).
    """

    seed: int = 1
    train: int = 30000
    valid: int = 1000
    test: int = 1000
    registers: int = 3
    min_len: int = 6
    max_len: int = 14
    preferred: float = 0.7

    def __post_init__(self) -> None:
        if not 1 <= self.registers <= MAX_REGISTERS:
            raise ValueError(f"registers must be in 1..{MAX_REGISTERS}, got {self.registers}")
        if not 0.0 <= self.preferred <= 1.0:
            raise ValueError(f"preferred must be in [0, 1], got {self.preferred}")
        if min(self.train, self.valid, self.test) < 0:
            raise ValueError("split sizes must be non-negative")
        if not 3 <= self.min_len <= self.max_len:
            raise ValueError("need 3 <= min_len <= max_len")


def _sample_np(rng: random.Random, animate: bool, adj_probs: tuple[float, float]) -> NounPhrase:
    plural = rng.random() < 0.35
    dets, weights = (_DETS_PL, _DETS_PL_W) if plural else (_DETS_SG, _DETS_SG_W)
    det = rng.choices(dets, weights)[0]
    noun = rng.choice(_ANIMATE) if animate else rng.randrange(len(NOUNS))
    u = rng.random()
    n_adj = 0 if u >= adj_probs[0] + adj_probs[1] else (1 if u < adj_probs[0] else 2)
    adjs = tuple(sorted(rng.sample(range(len(ADJECTIVES)), n_adj)))
    return NounPhrase(det, adjs, noun, plural)


#: Share of sentences with a subordinate clause: rare (short sentences), so that a small student
#: learns the grammar itself within the demo's few CPU minutes.
_SUB_CLAUSE_P = 0.1


def _sample_raw(rng: random.Random) -> Sentence:
    main = Clause(
        subject=_sample_np(rng, True, (0.35, 0.05)),
        verb=rng.randrange(len(VERBS)),
        tense=rng.choice(("present", "past", "future")),
        obj=_sample_np(rng, False, (0.35, 0.05)),
        adverb=rng.randrange(len(ADVERBS)) if rng.random() < 0.4 else None,
        prep=(
            (rng.randrange(len(PREPOSITIONS)), _sample_np(rng, False, (0.25, 0.0)))
            if rng.random() < 0.4
            else None
        ),
    )
    if rng.random() >= _SUB_CLAUSE_P:
        return Sentence(main)
    sub = Clause(
        subject=_sample_np(rng, True, (0.15, 0.0)),
        verb=rng.randrange(len(VERBS)),
        tense=rng.choice(("present", "past")),
        obj=_sample_np(rng, False, (0.15, 0.0)),
    )
    return Sentence(main, rng.randrange(len(CONJUNCTIONS)), sub)


def sample_sentence(rng: random.Random, min_len: int = 6, max_len: int = 14) -> Sentence:
    """Sample an abstract sentence whose source rendering has ``min_len..max_len`` tokens."""
    for _ in range(10_000):
        sentence = _sample_raw(rng)
        if min_len <= len(render_source(sentence).split()) <= max_len:
            return sentence
    raise ValueError(f"no sentence with {min_len}..{max_len} tokens found")


def _np_source(np: NounPhrase) -> list[str]:
    sg, pl, _, _ = DETERMINERS[np.det]
    det = pl if np.plural else sg
    noun_sg, noun_pl, _ = NOUNS[np.noun]
    words = [ADJECTIVES[a] for a in np.adjectives] + [noun_pl if np.plural else noun_sg]
    if det == "a" and words[0][0] in "aeiou":
        det = "an"
    return ([det] if det else []) + words


def _clause_source(clause: Clause) -> list[str]:
    base, third_sg, past = VERBS[clause.verb]
    if clause.tense == "future":
        verb = ["will", base]
    elif clause.tense == "past":
        verb = [past]
    else:
        verb = [base if clause.subject.plural else third_sg]
    words = _np_source(clause.subject) + verb + _np_source(clause.obj)
    if clause.adverb is not None:
        words.append(ADVERBS[clause.adverb])
    if clause.prep is not None:
        words += [PREPOSITIONS[clause.prep[0]][0], *_np_source(clause.prep[1])]
    return words


def render_source(sentence: Sentence) -> str:
    """English-like rendering (fixed SVO order, subordinate clause last)."""
    words = _clause_source(sentence.main)
    if sentence.sub is not None:
        words += [CONJUNCTIONS[sentence.conjunction][0], *_clause_source(sentence.sub)]
    return " ".join(words)


def _np_target(np: NounPhrase, case: str, register: int, lex: _Lexicon) -> list[str]:
    noun = lex.nouns[np.noun][register]
    gender = "pl" if np.plural else noun.gender
    kind, stem = DETERMINERS[np.det][2:]
    key = (gender, case)
    if kind == "def":
        det, adj_table = _DEFINITE[key], _WEAK_ADJ
    elif kind == "der":
        det, adj_table = stem + _DER_ENDINGS[key], _WEAK_ADJ
    elif kind == "ein" and np.plural and stem == "ein":
        det, adj_table = "", _STRONG_ADJ  # bare plural
    elif kind == "ein":
        det, adj_table = stem + _EIN_ENDINGS[key], _MIXED_ADJ
    elif kind == "num":
        det, adj_table = stem, _STRONG_ADJ
    else:  # quant: viele/einige inflect like der-words, adjectives stay strong
        det, adj_table = stem + _DER_ENDINGS[key], _STRONG_ADJ
    words = [lex.adjectives[a][register] + adj_table[key] for a in np.adjectives]
    words.append(noun.pl if np.plural else noun.sg)
    return ([det] if det else []) + words


def _clause_target(clause: Clause, register: int, lex: _Lexicon):
    """Return the clause's target pieces: subject, finite verb, adverb, object, PP, infinitive."""
    subj = _np_target(clause.subject, "nom", register, lex)
    obj = _np_target(clause.obj, "acc", register, lex)
    adv = [] if clause.adverb is None else [lex.adverbs[clause.adverb][register]]
    pp: list[str] = []
    if clause.prep is not None:
        prep = PREPOSITIONS[clause.prep[0]][1]
        np_words = _np_target(clause.prep[1], "dat", register, lex)
        if (prep, np_words[0]) in _CONTRACTIONS:
            pp = [_CONTRACTIONS[prep, np_words[0]], *np_words[1:]]
        else:
            pp = [prep, *np_words]
    forms = lex.verbs[clause.verb][register]
    plural = clause.subject.plural
    inf: list[str] = []
    if clause.tense == "future":
        fin = [_FUTURE_AUX[plural]]
        inf = [forms["inf"]]
    elif clause.tense == "past":
        fin = [forms["past_pl" if plural else "past_sg"]]
    else:
        fin = [forms["inf" if plural else "pres_sg"]]
    return subj, fin, adv, obj, pp, inf


def render_target(sentence: Sentence, register: int) -> str:
    """German-like rendering of ``sentence`` in latent ``register`` (0..MAX_REGISTERS-1)."""
    if not 0 <= register < MAX_REGISTERS:
        raise ValueError(f"register must be in 0..{MAX_REGISTERS - 1}, got {register}")
    lex = _lexicon()
    order = WORD_ORDERS[register]
    subj, fin, adv, obj, pp, inf = _clause_target(sentence.main, register, lex)
    sub: list[str] = []
    if sentence.sub is not None:
        conj = [CONJUNCTIONS[sentence.conjunction][1]]
        s_subj, s_fin, s_adv, s_obj, s_pp, s_inf = _clause_target(sentence.sub, register, lex)
        if order == "verb-initial":  # colloquial verb-second subordinate clause
            sub = conj + s_subj + s_fin + s_adv + s_obj + s_pp + s_inf
        else:
            sub = conj + s_subj + s_adv + s_obj + s_pp + s_inf + s_fin
    if order == "verb-second":
        words = subj + fin + adv + obj + pp + inf + sub
    elif order == "verb-final":
        words = subj + adv + obj + pp + inf + fin + sub
    elif order == "verb-initial":
        words = fin + subj + adv + obj + pp + inf + sub
    elif sub:  # fronting: subordinate clause first, then the verb, then the subject
        words = sub + fin + subj + adv + obj + pp + inf
    elif adv:
        words = adv + fin + subj + obj + pp + inf
    elif pp:
        words = pp + fin + subj + obj + inf
    else:
        words = obj + fin + subj + inf
    return " ".join(words)


def generate_pair(
    rng: random.Random, spec: CorpusSpec = CorpusSpec(), register: int | None = None
) -> tuple[str, str, int]:
    """Sample ``(source, target, register)``.

    The source sentence is sampled first, then the register, independently of it: the canonical
    register with probability ``spec.preferred``, otherwise another one uniformly. Pass
    ``register`` to force one (the rng is then consumed identically, so the source and the rest
    of the stream are unchanged).
    """
    sentence = sample_sentence(rng, spec.min_len, spec.max_len)
    # Always two draws, so forcing a register leaves the rest of the stream unchanged.
    keep, other = rng.random(), rng.randrange(max(1, spec.registers - 1))
    variants = [r for r in range(spec.registers) if r != CANONICAL_REGISTER]
    drawn = CANONICAL_REGISTER if keep < spec.preferred or not variants else variants[other]
    reg = drawn if register is None else register
    return render_source(sentence), render_target(sentence, reg), reg


# --------------------------------------------------------------------------------------------
# Corpus generation and files.
# --------------------------------------------------------------------------------------------


def split_rng(spec: CorpusSpec, split: str) -> random.Random:
    # str seeds are hashed with SHA-512 by random.seed, so this is stable across processes.
    return random.Random(f"fairseq-seqkd:{CORPUS_VERSION}:{spec.seed}:{split}")


def generate_corpus(spec: CorpusSpec = CorpusSpec()) -> dict[str, list[tuple[str, str]]]:
    """Generate ``{"train": [...], "valid": [...], "test": [...]}`` lists of (source, target).

    valid and test hold unique sources (one reference each, in a random register) and are
    disjoint from each other; train never contains a valid/test source and has no duplicate
    (source, target) pair, but may contain one source with several targets (the point of the
    corpus). Each split has exactly the requested size.
    """
    held_out: set[str] = set()
    out: dict[str, list[tuple[str, str]]] = {}
    for split in ("valid", "test", "train"):
        size = getattr(spec, split)
        rng = split_rng(spec, split)
        pairs: list[tuple[str, str]] = []
        seen: set = set()
        attempts = 0
        while len(pairs) < size:
            attempts += 1
            if attempts > 20 * size + 1000:
                raise ValueError(f"cannot draw {size} distinct {split} pairs; lower the size")
            src, tgt, _ = generate_pair(rng, spec)
            key = (src, tgt) if split == "train" else src
            if src in held_out or key in seen:
                continue
            seen.add(key)
            pairs.append((src, tgt))
        if split != "train":
            held_out.update(src for src, _ in pairs)
        out[split] = pairs
    return {split: out[split] for split in SPLITS}


def _blocks(path: Path, text: bool = False) -> Iterator[Any]:
    """A file's content in 1 MiB blocks (bytes, or UTF-8 text)."""
    with open(path, "r" if text else "rb", **({"encoding": "utf-8"} if text else {})) as f:
        while block := f.read(1 << 20):
            yield block


def count_lines(path: Path) -> int:
    """Newline characters in a file (its line count when the last line ends with one)."""
    return sum(block.count(b"\n") for block in _blocks(path))


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    for block in _blocks(path):
        digest.update(block)
    return digest.hexdigest()


def distinct_characters(paths: Iterable[Path]) -> int:
    """How many different characters (whitespace aside) the UTF-8 files hold together."""
    chars: set[str] = set()
    for path in paths:
        for block in _blocks(path, text=True):
            chars.update(block)
    return len({c for c in chars if not c.isspace()})


def _stamp(spec: CorpusSpec) -> dict:
    return {"version": CORPUS_VERSION, "spec": asdict(spec)}


def _is_complete(out: Path, spec: CorpusSpec) -> bool:
    try:
        stamp = json.loads((out / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(stamp, dict) or {k: stamp.get(k) for k in ("version", "spec")} != _stamp(
        spec
    ):
        return False
    sizes = stamp.get("bytes", {})
    for split in SPLITS:
        for side in ("src", "tgt"):
            path = out / f"{split}.{side}"
            if not path.is_file() or count_lines(path) != getattr(spec, split):
                return False
            if sizes.get(path.name) != path.stat().st_size:
                return False
    return True


def write_corpus(out_dir: str | Path, spec: CorpusSpec = CorpusSpec()) -> dict[str, int]:
    """Write ``{train,valid,test}.{src,tgt}`` plus a ``corpus.json`` stamp into ``out_dir``.

    Files are UTF-8, one whitespace-tokenised sentence per line, line-aligned, each written to a
    temporary file in ``out_dir`` and moved into place with ``os.replace``. If every file already
    has the expected line count and size and the stamp matches ``spec`` (and the corpus version),
    nothing is rewritten, so interrupted demos can resume. Returns the number of lines per split.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {split: getattr(spec, split) for split in SPLITS}
    if _is_complete(out, spec):
        return counts
    (out / STAMP_NAME).unlink(missing_ok=True)  # never leave a stamp next to partial files
    corpus = generate_corpus(spec)
    sizes = {}
    for split, pairs in corpus.items():
        for side, column in (("src", 0), ("tgt", 1)):
            path = out / f"{split}.{side}"
            text = "".join(pair[column] + "\n" for pair in pairs)
            atomic_write_text(path, text)
            sizes[path.name] = len(text.encode("utf-8"))
    stamp = {**_stamp(spec), "counts": counts, "bytes": sizes}
    atomic_write_text(out / STAMP_NAME, json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    return counts


# --------------------------------------------------------------------------------------------
# Measuring registers and mode mixing.
# --------------------------------------------------------------------------------------------


def marker_words(register: int) -> frozenset[str]:
    """All target word forms that only occur in ``register``."""
    return frozenset(w for w, r in _lexicon().markers.items() if r == register)


def register_votes(target: str) -> Counter:
    """Count register-specific tokens of ``target`` per register (unknown tokens are ignored)."""
    markers = _lexicon().markers
    return Counter(markers[w] for w in target.split() if w in markers)


def register_of(target: str, majority: bool = False) -> int | None:
    """Register of ``target`` judged from its register-specific words.

    Returns None if it has no such word, or if it mixes registers (unless ``majority``, in
    which case the most frequent register wins and only a tie gives None).
    """
    votes = register_votes(target).most_common()
    if not votes or (len(votes) > 1 and not majority):
        return None
    if len(votes) > 1 and votes[0][1] == votes[1][1]:
        return None
    return votes[0][0]


def register_consistency(target: str) -> float:
    """Fraction of register-specific tokens from the majority register (1.0 if there are none)."""
    votes = register_votes(target)
    total = sum(votes.values())
    return 1.0 if total == 0 else max(votes.values()) / total


def is_mixed(target: str) -> bool:
    """True if ``target`` contains register-specific words of two or more registers."""
    return len(register_votes(target)) > 1


def mixing_rate(targets: Iterable[str]) -> float:
    """Fraction of ``targets`` that are mixed (0.0 for an empty iterable)."""
    flags = [is_mixed(t) for t in targets]
    return sum(flags) / len(flags) if flags else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic Seq-KD demo corpus.")
    parser.add_argument("out_dir")
    defaults = asdict(CorpusSpec())
    for field, value in defaults.items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    spec = CorpusSpec(**{field: getattr(args, field) for field in defaults})
    counts = write_corpus(args.out_dir, spec)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
