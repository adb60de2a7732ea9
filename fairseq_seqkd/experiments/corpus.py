"""Built-in synthetic translation corpus with a sentence-level latent "register".

Sequence-level knowledge distillation (Kim & Rush, 2016) pays off when the training data is
*multi-modal*: one source sentence has several valid translations. A small student trained with
token-level cross-entropy on such data spends its capacity on every mode and learns their mixture,
so greedy decoding can switch modes mid-sentence. The teacher's beam search returns one mode, the
most probable one, consistently; a student trained on that output (Seq-KD) learns a simpler,
unimodal task and needs no beam search.

This module generates such data deterministically, with the standard library only, from the
two languages of :mod:`.language`: an English-like source sentence (rarely with a subordinate
clause, so that a small student can learn the grammar itself) and its German-like rendering in
one of ``registers`` latent registers, drawn once per sentence; several target words and the
word order depend on that one latent variable.

Registers follow "canonical register + free variation", as translators do: each sentence is
rendered in the canonical register (:data:`CANONICAL_REGISTER`) with probability
``CorpusSpec.preferred``, otherwise in one of the other registers, uniformly, and always
independently of the source. The canonical register is the mode that a teacher's beam search
finds and the most frequent register of the single references, so single-reference BLEU
rewards a consistent, mode-seeking translation and penalises mixing, as on real data; and a
Seq-KD student mostly has to learn one register's lexicon and word order, the capacity that the
paper says a small student saves. ``preferred = 1 / registers`` draws registers uniformly (no
mode: BLEU against one random-register reference cannot reward a consistent choice).

Every register-specific word belongs to exactly one register, so :func:`register_of` recovers the
register of a gold target and :func:`is_mixed` flags a hypothesis that combines words of two
registers, which is how the demo *measures* mode mixing. With ``registers=1`` the data is
unimodal, which makes a useful control. The vocabulary is a few hundred types per side.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_write_text
from ..digests import file_sha256
from ..errors import SeqKDError
from ..stamps import Stamp, stage_key
from ..textfiles import read_text_lines
from .language import (
    ADJECTIVES,
    ADVERBS,
    CONJUNCTIONS,
    DETERMINERS,
    MAX_REGISTERS,
    NOUNS,
    PREPOSITIONS,
    VERBS,
    WORD_ORDERS,
    Clause,
    NounPhrase,
    Sentence,
    register_markers,
    render_source,
    render_target,
)

__all__ = [
    "ADJECTIVES",
    "ADVERBS",
    "CANONICAL_REGISTER",
    "CONJUNCTIONS",
    "CORPUS_VERSION",
    "DETERMINERS",
    "MAX_REGISTERS",
    "MONO_FILE",
    "NOUNS",
    "PREPOSITIONS",
    "SPLITS",
    "VERBS",
    "WORD_ORDERS",
    "Clause",
    "CorpusSpec",
    "NounPhrase",
    "Sentence",
    "all_register_references",
    "corpus_files",
    "generate_corpus",
    "generate_mono",
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

#: The corpus generator's version, in the key of every corpus written: bump it whenever the
#: grammar, the lexicon or the sampling changes, so stale corpora on disk are regenerated.
CORPUS_VERSION = 2
#: The register most translations use (``CorpusSpec.preferred`` of them); the rest vary freely.
CANONICAL_REGISTER = 0
SPLITS = ("train", "valid", "test")
STAMP_NAME = "corpus.json"
#: The built-in corpus's monolingual source file (``CorpusSpec.mono`` sentences), in no split.
MONO_FILE = "mono.src"

_DET_WEIGHTS = {"the": 5, "a": 3}  # others weight 1
_DETS_SG = tuple(k for k, v in DETERMINERS.items() if v[0] is not None)
_DETS_PL = tuple(k for k, v in DETERMINERS.items() if v[1] is not None)
_DETS_SG_W = tuple(_DET_WEIGHTS.get(k, 1) for k in _DETS_SG)
_DETS_PL_W = tuple(_DET_WEIGHTS.get(k, 1) for k in _DETS_PL)
_ANIMATE = tuple(i for i, n in enumerate(NOUNS) if n[2])


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate. Equal specs give byte-identical corpora.

    seed: corpus sampling seed (the language itself is fixed). train / valid / test: number of
    pairs per split; valid and test sources are unique and never occur in train. registers:
    number of latent target registers (1..MAX_REGISTERS; 1 gives a unimodal control corpus).
    min_len / max_len: inclusive bounds on the source length in tokens. preferred: probability
    of the canonical register (the rest is spread evenly over the other registers). mono: number
    of extra source sentences without a target (:data:`MONO_FILE`), none of them a source of
    any split: the text a teacher translates to give its student more distilled data.
    """

    seed: int = 1
    train: int = 30000
    valid: int = 1000
    test: int = 1000
    registers: int = 3
    min_len: int = 6
    max_len: int = 14
    preferred: float = 0.7
    mono: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.registers <= MAX_REGISTERS:
            raise ValueError(f"registers must be in 1..{MAX_REGISTERS}, got {self.registers}")
        if not 0.0 <= self.preferred <= 1.0:
            raise ValueError(f"preferred must be in [0, 1], got {self.preferred}")
        if min(self.train, self.valid, self.test, self.mono) < 0:
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



def _draw(spec: CorpusSpec, split: str, held_out: set[str],
          register: int | None = None) -> list[tuple[str, str]]:
    """``split``'s pairs: unique sources outside ``held_out`` (train: unique pairs), each
    target in its drawn register or in ``register``, which leaves the sources unchanged."""
    size = getattr(spec, split)
    rng = split_rng(spec, split)
    pairs: list[tuple[str, str]] = []
    seen: set = set()
    attempts = 0
    while len(pairs) < size:
        attempts += 1
        if attempts > 20 * size + 1000:
            raise ValueError(f"cannot draw {size} distinct {split} pairs; lower the size")
        src, tgt, _ = generate_pair(rng, spec, register)
        key = (src, tgt) if split == "train" else src
        if src in held_out or key in seen:
            continue
        seen.add(key)
        pairs.append((src, tgt))
    return pairs


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
        out[split] = _draw(spec, split, held_out)
        if split != "train":
            held_out.update(src for src, _ in out[split])
    return {split: out[split] for split in SPLITS}


def generate_mono(spec: CorpusSpec, corpus: dict[str, list[tuple[str, str]]]) -> list[str]:
    """``spec.mono`` distinct source sentences from a stream of their own, none of them a
    source of ``corpus`` (:func:`generate_corpus` of ``spec``): the grammar can draw a
    sentence of a split again."""
    held_out = {src for pairs in corpus.values() for src, _ in pairs}
    return [src for src, _ in _draw(spec, "mono", held_out)]


def all_register_references(spec: CorpusSpec, raw: Path, split: str = "test") -> list[list[str]]:
    """Every register's rendering of the built-in corpus's ``split`` (``valid`` or ``test``)
    in ``raw``, one list per register.

    The built-in corpus holds one reference per source, in a register drawn at random, though
    every register is an equally correct translation; scoring against all of them (multi-
    reference BLEU) credits a consistent output in any register and penalises mixing. The
    split is drawn again once per forced register (:func:`generate_pair`), which leaves the
    sources unchanged. A :class:`SeqKDError` names the first line where the files are not
    what ``spec`` draws (another spec, or a corpus from another generator version).
    """
    if split not in ("valid", "test"):
        raise ValueError(f"split must be valid or test, got {split!r}")
    src_path, tgt_path = raw / f"{split}.src", raw / f"{split}.tgt"
    sources, gold = read_text_lines(str(src_path)), read_text_lines(str(tgt_path))
    renderings = []
    for register in range(spec.registers):
        held: set[str] = set()
        for part in ("valid", "test"):  # the order generate_corpus draws held-out splits
            drawn = _draw(spec, part, held, register)
            if part == split:
                break
            held.update(src for src, _ in drawn)
        renderings.append(drawn)
    expected = [src for src, _ in renderings[0]]
    for path, lines in ((src_path, sources), (tgt_path, gold)):
        if len(lines) != len(expected):
            raise SeqKDError(f"{path} has {len(lines)} lines; the corpus spec draws "
                             f"{len(expected)}")
    for number, (line, src) in enumerate(zip(sources, expected, strict=True), start=1):
        if line != src:
            raise SeqKDError(f"{src_path}:{number}: not the source the corpus spec draws "
                             f"(generator version {CORPUS_VERSION})")
    for number, line in enumerate(gold, start=1):
        if line not in {r[number - 1][1] for r in renderings}:
            raise SeqKDError(f"{tgt_path}:{number}: the reference is none of the "
                             f"{spec.registers} registers' renderings")
    return [[tgt for _, tgt in drawn] for drawn in renderings]


def corpus_files(out: Path, spec: CorpusSpec) -> list[Path]:
    """The files :func:`write_corpus` writes for ``spec`` into ``out`` (the stamp aside)."""
    files = [out / f"{split}.{side}" for split in SPLITS for side in ("src", "tgt")]
    return [*files, out / MONO_FILE] if spec.mono else files


def write_corpus(out_dir: str | Path, spec: CorpusSpec = CorpusSpec()) -> dict[str, int]:
    """Write ``{train,valid,test}.{src,tgt}``, with ``spec.mono`` the source-only
    :data:`MONO_FILE`, plus a ``corpus.json`` stamp into ``out_dir``.

    Files are UTF-8, one whitespace-tokenised sentence per line, line-aligned, each written
    atomically. The stamp's key is ``spec`` and :data:`CORPUS_VERSION`; it records each
    file's digest, so a corpus whose key and files still match is not rewritten (an
    interrupted demo resumes) and any other is generated again. Returns the number of lines
    per split (and ``mono``'s, when there is one).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {split: getattr(spec, split) for split in SPLITS}
    if spec.mono:
        counts["mono"] = spec.mono
    files = corpus_files(out, spec)
    stamp = Stamp(out / STAMP_NAME)
    key = stage_key({"spec": asdict(spec)}, version=str(CORPUS_VERSION))
    if stamp.matches(key, files) and (stamp.read() or {}).get("files") == {
            p.name: file_sha256(p) for p in files}:
        return counts
    stamp.remove()  # never leave a stamp next to partial files
    corpus = generate_corpus(spec)
    for split, pairs in corpus.items():
        for side, column in (("src", 0), ("tgt", 1)):
            atomic_write_text(out / f"{split}.{side}", "".join(p[column] + "\n" for p in pairs))
    if spec.mono:
        atomic_write_text(out / MONO_FILE, "".join(s + "\n" for s in generate_mono(spec, corpus)))
    else:
        (out / MONO_FILE).unlink(missing_ok=True)  # another spec's: not this corpus's
    stamp.write(key, counts=counts, files={p.name: file_sha256(p) for p in files})
    return counts


# --------------------------------------------------------------------------------------------
# Measuring registers and mode mixing.
# --------------------------------------------------------------------------------------------


def marker_words(register: int) -> frozenset[str]:
    """All target word forms that only occur in ``register``."""
    return frozenset(w for w, r in register_markers().items() if r == register)


def register_votes(target: str) -> Counter:
    """Count register-specific tokens of ``target`` per register (unknown tokens are ignored)."""
    markers = register_markers()
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
