"""The built-in corpus's two languages: an English-like source and a German-like target, and
how an abstract sentence is rendered in each (the corpus itself: :mod:`.corpus`).

* The source side comes from a small grammar: subject and object noun phrases (determiner, up
  to two adjectives, noun, singular/plural), a transitive verb in present, past or future
  tense, optionally an adverb, a prepositional phrase and a subordinate clause.
* The target side has invented content words and real German function words. Determiners and
  adjective endings agree with the noun's gender, number and case (nominative subject,
  accusative object, dative after prepositions), and ``in dem`` / ``bei dem`` contract to
  ``im`` / ``beim``.
* A target sentence is rendered in one of :data:`MAX_REGISTERS` latent registers. The register
  fixes, consistently for the whole sentence, (a) the synonym used for every verb and adverb
  and for about half of the nouns and adjectives (synonymous nouns can differ in gender, which
  changes determiners and adjective endings as well), and (b) the word order: verb-second,
  verb-final, fronting of the subordinate clause / adverb / prepositional phrase / object, or
  verb-initial. Every register-specific word belongs to exactly one register
  (:func:`register_markers`), so a sentence's register can be read back from its words.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "ADJECTIVES",
    "ADVERBS",
    "CONJUNCTIONS",
    "DETERMINERS",
    "MAX_REGISTERS",
    "NOUNS",
    "PREPOSITIONS",
    "VERBS",
    "WORD_ORDERS",
    "Clause",
    "NounPhrase",
    "Sentence",
    "register_markers",
    "render_source",
    "render_target",
]

#: Registers the lexicon provides; ``CorpusSpec.registers`` may use the first 1..MAX_REGISTERS.
MAX_REGISTERS = 4
#: Word-order rule of register ``r`` is ``WORD_ORDERS[r]``.
WORD_ORDERS = ("verb-second", "verb-final", "fronting", "verb-initial")

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
# Abstract sentences and their rendering.
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


def register_markers() -> dict[str, int]:
    """Every register-specific target word form -> the register it belongs to."""
    return _lexicon().markers
