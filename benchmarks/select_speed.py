"""Speed of ``seqkd-select``'s seq-inter selection vs a plain sacrebleu loop.

Builds a synthetic n-best of realistic-looking sentences (or reads one with
``--nbest/--reference``), then selects the most similar hypothesis per sentence

* with the plain loop: ``sacrebleu.sentence_bleu(hyp, [ref])`` for every pair;
* with :func:`fairseq_seqkd.distill.select.select_targets` (workers 1 and N);

asserts that both choose identical targets (and identical mean similarity) and
prints hypotheses/s and speed-ups side by side.

    python benchmarks/select_speed.py                      # ~6k sentences, < 1 min
    python benchmarks/select_speed.py --sentences 20000 --workers 8
    python benchmarks/select_speed.py --nbest train.nbest --reference train.bpe.en \\
        --remove-bpe subword_nmt --sim chrf

Each benchmark is a ``section_*`` function returning table rows. ``--sections generate``
times ``seqkd-generate`` against plain ``fairseq-generate`` (same data, same options, both
end to end as console scripts, interleaved, best of ``--repeats``) and checks that both
produce the same hypotheses; by default it trains a small teacher on the demo corpus first
(< 1 min), or uses ``--data DATA_BIN --path CHECKPOINT``::

    python benchmarks/select_speed.py --sections generate
    python benchmarks/select_speed.py --sections generate --data data-bin --path teacher.pt \
        --gen-subset train --beam 5 --gen-batch-size 128
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairseq_seqkd.distill import similarity
from fairseq_seqkd.distill.nbest import Hypothesis, read_nbest
from fairseq_seqkd.distill.select import select_targets
from fairseq_seqkd.distill.similarity import plain_similarity, remove_bpe


@dataclass
class Row:
    section: str
    method: str
    workers: int
    items: int
    seconds: float
    baseline: float | None = None  # seconds of the baseline row of the same section

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("inf")

    @property
    def speedup(self) -> str:
        if self.baseline is None or self.seconds <= 0:
            return "-"
        return f"{self.baseline / self.seconds:.2f}x"


# ------------------------------------------------------------ synthetic data

_FUNCTION_WORDS = (  # noqa: SIM905
    "the of and to a in is that for it as was with be by on not he I this are or his from "
    "at which but have an they you were her she there one all we their has been would more "
    "when if will who so no out up said what its about than into them can only other new "
    "some could time these two may then do first any my now such like our over man me even "
    "most made after also did many before must through back years where much your way well"
).split()
_PUNCT = [",", ".", "?", "!", ";", ":", "'s", "(", ")", '"', "-", "%"]


def _make_vocab(rng: random.Random, size: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = set(_FUNCTION_WORDS)
    while len(words) < size:
        n = max(2, int(rng.lognormvariate(1.8, 0.35)))
        words.add("".join(rng.choice(letters) for _ in range(n)))
    vocab = list(_FUNCTION_WORDS) + sorted(words - set(_FUNCTION_WORDS))
    return vocab


def _bpe(word: str, rng: random.Random) -> str:
    """Fake subword-nmt segmentation of long words."""
    if len(word) < 7 or rng.random() < 0.5:
        return word
    cut = rng.randint(3, len(word) - 3)
    return f"{word[:cut]}@@ {word[cut:]}"


def _sentence(rng: random.Random, draw: Callable[[int], list[str]]) -> list[str]:
    length = max(3, int(rng.gauss(24, 9)))
    words = draw(length)
    words[0] = words[0].capitalize()
    out = []
    for w in words:
        out.append(w)
        if rng.random() < 0.08:
            out.append(rng.choice(_PUNCT))
        if rng.random() < 0.02:
            out.append(str(rng.randint(1, 2025)))
    out.append(rng.choice([".", ".", ".", "?", "!"]))
    return out


def synthetic_nbest(
    sentences: int, min_k: int, max_k: int, seed: int = 1
) -> tuple[dict[int, list[Hypothesis]], list[str]]:
    """References and k-best lists made by perturbing the references (subword_nmt BPE)."""
    rng = random.Random(seed)
    vocab = _make_vocab(rng, 20000)
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(vocab))))

    def draw(k: int = 1) -> list[str]:  # Zipf-distributed words
        return rng.choices(vocab, cum_weights=cum_weights, k=k)

    nbest: dict[int, list[Hypothesis]] = {}
    references = []
    for index in range(sentences):
        ref = _sentence(rng, draw)
        references.append(" ".join(_bpe(w, rng) for w in ref))
        hyps = []
        for rank in range(rng.randint(min_k, max_k)):
            words = list(ref)
            for _ in range(rng.randint(0, 2 + rank // 4)):
                op = rng.random()
                pos = rng.randrange(len(words))
                if op < 0.45:
                    words[pos] = draw(1)[0]
                elif op < 0.65:
                    words.insert(pos, draw(1)[0])
                elif op < 0.85 and len(words) > 2:
                    del words[pos]
                elif pos + 1 < len(words):
                    words[pos], words[pos + 1] = words[pos + 1], words[pos]
            tokens = " ".join(_bpe(w, rng) for w in words)
            hyps.append(Hypothesis(tokens, -0.1 * rank - rng.random()))
        nbest[index] = hyps
    return nbest, references


def _read_references(path: str) -> list[str]:
    with open(path, encoding="utf-8", newline="\n") as handle:
        lines = handle.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ------------------------------------------------------------ sections


def _reset_caches() -> None:
    """Empty sacrebleu's tokenizer LRU caches and our per-process scorers (fair timing)."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

    Tokenizer13a.__call__.cache_clear()
    TokenizerRegexp.__call__.cache_clear()
    similarity._PROCESS_SCORERS.clear()


def plain_loop(
    nbest: dict[int, list[Hypothesis]], references: Sequence[str], sim: str, scheme: str | None
) -> tuple[list[str | None], float]:
    """Seq-inter with one plain sacrebleu call per (hypothesis, reference) pair."""
    lower = sim == "ter"
    targets: list[str | None] = [None] * len(references)
    total = 0.0
    for index, hyps in nbest.items():
        ref = remove_bpe(references[index], scheme)
        best_rank, best = -1, 0.0
        for rank, hyp in enumerate(hyps):
            value = plain_similarity(remove_bpe(hyp.tokens, scheme), ref, sim)
            if best_rank < 0 or (value < best if lower else value > best):
                best_rank, best = rank, value
        tokens = hyps[best_rank].tokens
        targets[index] = tokens if tokens.strip() else None
        total += best
    return targets, total / max(1, len(nbest))


def section_select(args: argparse.Namespace) -> list[Row]:
    """seq-inter selection: plain sacrebleu loop vs select_targets (workers 1 and N)."""
    t0 = time.perf_counter()
    if args.nbest:
        nbest = read_nbest(args.nbest)
        references = _read_references(args.reference)
        scheme = args.remove_bpe
        origin = f"{args.nbest} + {args.reference}"
    else:
        nbest, references = synthetic_nbest(args.sentences, args.min_k, args.max_k, args.seed)
        scheme = "subword_nmt"
        origin = f"synthetic, seed {args.seed}"
    num_hyps = sum(len(h) for h in nbest.values())
    print(
        f"[select] {len(nbest)} sentences, {num_hyps} hypotheses ({origin}), "
        f"sim={args.sim}, built in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    name = {"bleu": "sentence_bleu", "chrf": "sentence_chrf", "ter": "sentence_ter"}[args.sim]

    _reset_caches()
    start = time.perf_counter()
    expected, expected_mean = plain_loop(nbest, references, args.sim, scheme)
    plain_seconds = time.perf_counter() - start
    rows = [Row("select", f"plain sacrebleu.{name} loop", 1, num_hyps, plain_seconds)]
    print(f"[select] plain loop: {plain_seconds:.2f}s", flush=True)

    worker_counts = sorted({1, args.workers})
    for workers in worker_counts:
        _reset_caches()
        start = time.perf_counter()
        selection = select_targets(
            nbest,
            size=len(references),
            sources=None,
            references=references,
            strategy="seq-inter",
            sim=args.sim,
            remove_bpe_scheme=scheme,
            fallback="drop",
            workers=workers,
        )
        seconds = time.perf_counter() - start
        if selection.targets != expected:
            pairs = enumerate(zip(selection.targets, expected, strict=True))
            diff = next(i for i, (a, b) in pairs if a != b)
            raise SystemExit(
                f"MISMATCH with workers={workers} at sentence {diff}: "
                f"{selection.targets[diff]!r} vs plain {expected[diff]!r}"
            )
        if selection.report["mean_similarity"] != expected_mean:
            raise SystemExit(
                f"MISMATCH in mean similarity with workers={workers}: "
                f"{selection.report['mean_similarity']!r} vs plain {expected_mean!r}"
            )
        rows.append(
            Row("select", f"seqkd select_targets ({args.sim})", workers, num_hyps, seconds,
                baseline=plain_seconds)
        )
        print(f"[select] select_targets workers={workers}: {seconds:.2f}s (identical)", flush=True)
    return rows


# ------------------------------------------------------------ seqkd-generate vs fairseq-generate

_PLUGIN = str(Path(__file__).resolve().parents[1] / "fairseq_seqkd")


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{name} is not installed beside {sys.executable}")
    return str(path)


def _timed(command: list[str], env: dict[str, str], stdout: Path) -> tuple[float, str]:
    """Run a console script; its wall time and stderr (the tool's own timing lines)."""
    start = time.perf_counter()
    with open(stdout, "w", encoding="utf-8") as out:
        proc = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{Path(command[0]).name} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stderr


def _toy_teacher(workdir: Path, sentences: int, env: dict[str, str]) -> tuple[str, str]:
    """The demo corpus, binarized, and a small teacher trained for a few hundred updates."""
    from fairseq_seqkd.experiments.corpus import CorpusSpec, write_corpus

    raw, data = workdir / "raw", workdir / "bin"
    ckpt = workdir / "teacher" / "checkpoint_last.pt"
    write_corpus(raw, CorpusSpec(train=sentences, valid=200, test=200))
    if not (data / "train.src-tgt.src.bin").exists():
        subprocess.run(
            [_script("fairseq-preprocess"), "--source-lang", "src", "--target-lang", "tgt",
             "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"),
             "--testpref", str(raw / "test"), "--destdir", str(data), "--joined-dictionary",
             "--workers", "1"],
            check=True, capture_output=True, env=env,
        )
    if not ckpt.exists():
        start = time.perf_counter()
        proc = subprocess.run(
            [_script("fairseq-train"), str(data), "--user-dir", _PLUGIN, "--arch", "transformer",
             "--share-all-embeddings", "--encoder-layers", "2", "--decoder-layers", "2",
             "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
             "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
             "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
             "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
             "--optimizer", "adam", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt",
             "--warmup-updates", "50", "--max-tokens", "4000", "--max-update", "150",
             "--dropout", "0.1", "--seed", "1", "--cpu", "--no-progress-bar",
             "--log-interval", "50", "--num-workers", "0", "--disable-validation",
             "--no-epoch-checkpoints", "--save-dir", str(ckpt.parent)],
            capture_output=True, text=True, env=env,
        )
        if proc.returncode != 0:
            raise SystemExit(f"fairseq-train failed:\n{proc.stderr[-3000:]}")
        print(f"[generate] trained the toy teacher in {time.perf_counter() - start:.1f}s",
              flush=True)
    return str(data), str(ckpt)


def _compare_hypotheses(ours_path: Path, log_path: Path) -> tuple[int, int, list[int]]:
    """seqkd-generate's n-best vs fairseq-generate's H- lines.

    Returns the sentences fairseq-generate printed, the sentences only seqkd-generate has, and
    the indices whose n-best differs (tokens, or scores beyond 1e-4 after fairseq's base 2).
    """
    import math

    from fairseq_seqkd.distill.nbest import read_generate_log

    ours, theirs = read_nbest(ours_path), read_generate_log(log_path)
    differ = []
    for index, hyps in theirs.items():
        mine = ours.get(index, [])
        if [h.tokens for h in mine] != [h.tokens for h in hyps] or any(
            abs(a.score - b.score * math.log(2)) > 1e-4 for a, b in zip(mine, hyps, strict=True)
        ):
            differ.append(index)
    return len(theirs), len(set(ours) - set(theirs)), differ


def section_generate(args: argparse.Namespace) -> list[Row]:
    """Teacher decoding: plain fairseq-generate vs seqkd-generate, same data and options."""
    import torch

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    workdir = Path(args.gen_workdir or tempfile.mkdtemp(prefix="seqkd-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.data and args.path:
            data, ckpt = args.data, args.path
        else:
            data, ckpt = _toy_teacher(workdir, args.gen_sentences, env)
        common = [data, "--user-dir", _PLUGIN, "--path", ckpt, "--gen-subset", args.gen_subset,
                  "--beam", str(args.beam), "--nbest", str(args.beam),
                  "--batch-size", str(args.gen_batch_size), "--max-len-a", "1.2",
                  "--max-len-b", "10"]
        if not torch.cuda.is_available():
            common.append("--cpu")
        device = "cuda" if torch.cuda.is_available() else f"cpu, {env['OMP_NUM_THREADS']} thread(s)"
        print(f"[generate] {data} --gen-subset {args.gen_subset}, beam {args.beam}, "
              f"nbest {args.beam}, batch size {args.gen_batch_size}, {device}", flush=True)
        variants = {
            "fairseq-generate": [_script("fairseq-generate"), *common],
            "seqkd-generate": [_script("seqkd-generate"), *common, "--no-progress-bar"],
            f"seqkd-generate --chunk-size {args.gen_chunk_size}": [
                _script("seqkd-generate"), *common, "--no-progress-bar",
                "--chunk-size", str(args.gen_chunk_size)],
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name, command in variants.items():  # interleaved: drifting load hits all
                stdout = workdir / f"{re.sub(r'[^a-z0-9]+', '-', name)}.txt"
                if name.startswith("seqkd"):
                    command = [*command, "--output", str(workdir / "out.nbest")]
                seconds, _ = _timed(command, env, stdout)
                times[name].append(seconds)
                print(f"[generate] {name} run {repeat + 1}: {seconds:.2f}s", flush=True)
                if name == "fairseq-generate":
                    fairseq_log = stdout
                    continue
                sentences, extra, differ = _compare_hypotheses(workdir / "out.nbest", fairseq_log)
                if name == "seqkd-generate" and differ:  # one chunk: fairseq's very batches
                    raise SystemExit(f"MISMATCH with fairseq-generate at sentence {differ[0]}")
                if repeat == 0:
                    print(f"[generate]   vs fairseq-generate: {sentences - len(differ)} of "
                          f"{sentences} sentences with identical n-best lists (tokens, scores "
                          f"to 1e-4), {extra} more that fairseq-generate dropped (fairseq#5036)",
                          flush=True)
        hyps = sum(len(h) for h in read_nbest(workdir / "out.nbest").values())
        base = min(times["fairseq-generate"])
        rows = [Row("generate", "fairseq-generate (end to end)", 1, sentences * args.beam, base)]
        for name in list(variants)[1:]:
            best = min(times[name])
            rows.append(Row("generate", f"{name} (end to end)", 1, hyps, best, baseline=base))
            print(f"[generate] {name} / fairseq-generate wall time: {best / base:.3f} "
                  f"(target <= 1.05; best of {args.repeats})", flush=True)
        return rows
    finally:
        if not args.gen_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


SECTIONS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "select": section_select,
    "generate": section_generate,
}


def print_table(rows: Sequence[Row]) -> None:
    header = ("section", "method", "workers", "hypotheses", "seconds", "hyps/s", "speed-up")
    body = [
        (r.section, r.method, str(r.workers), str(r.items), f"{r.seconds:.2f}",
         f"{r.rate:,.0f}", r.speedup)
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    line = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(line.format(*header))
    print("  ".join("-" * w for w in widths))
    for cells in body:
        print(line.format(*cells))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=["select"])
    parser.add_argument("--sentences", type=int, default=6000, help="synthetic sentences")
    parser.add_argument("--min-k", type=int, default=5)
    parser.add_argument("--max-k", type=int, default=35)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sim", choices=("bleu", "chrf", "ter"), default="bleu")
    parser.add_argument("--nbest", help="read this n-best instead of building one")
    parser.add_argument("--reference", help="reference subword lines (with --nbest)")
    parser.add_argument("--remove-bpe", default=None, help="BPE scheme (with --nbest)")
    gen = parser.add_argument_group("generate section")
    gen.add_argument("--data", help="data-bin to decode (default: a toy corpus and teacher)")
    gen.add_argument("--path", help="teacher checkpoint for --data")
    gen.add_argument("--gen-subset", default="train")
    gen.add_argument("--beam", type=int, default=5, help="beam size, also the n-best size")
    gen.add_argument("--gen-batch-size", type=int, default=64)
    gen.add_argument("--gen-chunk-size", type=int, default=500,
                     help="chunk size of the second seqkd-generate row (resume granularity)")
    gen.add_argument("--gen-sentences", type=int, default=2000, help="toy training sentences")
    gen.add_argument("--repeats", type=int, default=3, help="runs per tool (best is reported)")
    gen.add_argument("--gen-workdir", help="keep the toy teacher and outputs here (reused)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.nbest) != bool(args.reference):
        raise SystemExit("--nbest and --reference go together")
    if bool(args.data) != bool(args.path):
        raise SystemExit("--data and --path go together")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
    rows: list[Row] = []
    for name in args.sections:
        rows.extend(SECTIONS[name](args))
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
