"""BLEU and decoding speed of fairseq checkpoints, from stock ``fairseq-generate`` output.

The numbers are exactly what a user re-running ``fairseq-generate`` would get: BLEU is
sacrebleu's corpus BLEU of the detokenized ``D-`` lines (``--remove-bpe``), ordered by sentence
index, against the raw reference text, and speed is fairseq's own ``Translated N sentences
(M tokens) in Xs`` line, which times generation only (not start-up or checkpoint loading).

:func:`evaluate_checkpoints` runs ``fairseq-generate`` greedily and with beam search for each
checkpoint (``seqkd-evaluate`` is its command line); the demo and the benchmark score the
files their own decoding stages wrote with :func:`read_decoding` and :func:`bleu`.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..commands import console_script
from ..errors import SeqKDError
from ..textfiles import read_text_lines
from .nbest import GenerateOutput, parse_generate_output, read_generate_output

__all__ = [
    "Decoding",
    "Score",
    "bleu",
    "decoding",
    "evaluate_checkpoints",
    "format_scores",
    "parse_decoding",
    "read_decoding",
]


@dataclass(frozen=True)
class Decoding:
    """One fairseq-generate run: detokenized hypotheses by sentence index and its timing."""

    hypotheses: list[str]
    sentences: int
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else math.inf

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / self.seconds if self.seconds > 0 else math.inf


def decoding(output: GenerateOutput, source: str) -> Decoding:
    """The :class:`Decoding` of a complete ``--nbest 1`` run: its timing line is present and
    the ``D-`` indices are exactly ``0..N-1`` (BLEU against line-aligned references is
    meaningless otherwise). ``source`` names the output in errors."""
    timing = output.timing
    if timing is None:
        raise SeqKDError(
            f"{source}: no 'Translated N sentences (M tokens) in Xs' line; did fairseq-generate "
            "finish?"
        )
    hyps = output.detokenized
    if list(hyps) != list(range(timing.sentences)):
        missing = sorted(set(range(timing.sentences)) - set(hyps))[:3]
        raise SeqKDError(
            f"{source}: {len(hyps)} D- lines for {timing.sentences} translated sentences "
            f"(first missing ids: {missing})"
        )
    return Decoding(
        hypotheses=[found[0].tokens for found in hyps.values()],
        sentences=timing.sentences,
        tokens=timing.tokens,
        seconds=timing.seconds,
    )


def parse_decoding(text: str, source: str = "<fairseq-generate output>") -> Decoding:
    """:func:`decoding` of fairseq-generate output held in memory."""
    return decoding(parse_generate_output(text, source, nbest=False), source)


def read_decoding(path: str | os.PathLike) -> Decoding:
    """:func:`decoding` of a fairseq-generate output file (stdout or ``--results-path``)."""
    return decoding(read_generate_output(path, nbest=False), os.fspath(path))


def bleu(hypotheses: Sequence[str], *references: Sequence[str]) -> tuple[float, str]:
    """sacrebleu corpus BLEU with default options against one or more reference streams;
    returns ``(score, signature)``."""
    for refs in references:
        if len(hypotheses) != len(refs):
            raise SeqKDError(
                f"{len(hypotheses)} hypotheses for {len(refs)} references; the test set and "
                "the decoded data-bin differ"
            )
    metric = _bleu_scorer(tuple(tuple(r) for r in references))
    score = metric.corpus_score(list(hypotheses), None)
    return score.score, str(metric.get_signature())


@functools.lru_cache(maxsize=8)
def _bleu_scorer(references: tuple[tuple[str, ...], ...]) -> Any:
    """A sacrebleu BLEU holding the references' n-gram statistics: scoring many systems
    against one test set tokenizes its references once (two thirds of the time otherwise)."""
    from sacrebleu.metrics import BLEU

    return BLEU(references=[list(r) for r in references])


@dataclass(frozen=True)
class Score:
    """BLEU and speed of one checkpoint at one beam size."""

    model: str
    beam: int
    bleu: float
    signature: str
    sentences: int
    tokens_per_second: float


def _generate(data: str, checkpoint: str, beam: int, subset: str, batch_size: int,
              remove_bpe: str, cpu: bool) -> str:
    """Stock fairseq-generate's stdout and log (the plugin's --user-dir loads checkpoints)."""
    plugin = str(Path(__file__).resolve().parent.parent)
    cmd = [console_script("fairseq-generate"), data, "--user-dir", plugin, "--path",
           checkpoint, "--gen-subset", subset, "--beam", str(beam), "--nbest", "1",
           "--batch-size", str(batch_size), "--remove-bpe", remove_bpe,
           # fairseq drops a last batch smaller than this multiple (8 by default): without
           # it, up to 7 test sentences would silently go unscored
           "--required-batch-size-multiple", "1", *(["--cpu"] if cpu else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:]
        raise SeqKDError(
            f"fairseq-generate failed on {checkpoint} (exit {proc.returncode}): "
            f"{tail[0] if tail else 'no message'}"
        )
    return proc.stdout + "\n" + proc.stderr


def evaluate_checkpoints(data: str | os.PathLike, models: Sequence[tuple[str, str]],
                         reference: str | os.PathLike, *, beams: Sequence[int] = (1, 5),
                         subset: str = "test", batch_size: int = 128,
                         remove_bpe: str = "sentencepiece", cpu: bool = False) -> list[Score]:
    """BLEU of each ``(name, checkpoint)`` at each beam size on ``subset`` of the data-bin
    ``data``, against the raw ``reference`` text of that subset."""
    if not beams or any(b < 1 for b in beams):
        raise SeqKDError(f"beam sizes must be >= 1, got {list(beams)}")
    refs = read_text_lines(os.fspath(reference))
    scores = []
    for name, checkpoint in models:
        if not os.path.isfile(checkpoint):
            raise SeqKDError(f"--model {name}: {checkpoint} does not exist")
        for beam in beams:
            text = _generate(os.fspath(data), checkpoint, beam, subset, batch_size, remove_bpe,
                             cpu)
            run = parse_decoding(text, f"fairseq-generate on {checkpoint} (beam {beam})")
            score, signature = bleu(run.hypotheses, refs)
            scores.append(Score(name, beam, score, signature, run.sentences,
                                run.tokens_per_second))
    return scores


def format_scores(scores: Sequence[Score], beams: Sequence[int]) -> str:
    """One row per model, one BLEU column per beam, and the speed at the first beam size."""
    names = list(dict.fromkeys(s.model for s in scores))
    head = ["model", *(("greedy" if b == 1 else f"beam {b}") for b in beams),
            f"tokens/s (beam {beams[0]})"]
    rows = [head]
    for name in names:
        mine = {s.beam: s for s in scores if s.model == name}
        rows.append([name, *(f"{mine[b].bleu:.2f}" for b in beams),
                     f"{mine[beams[0]].tokens_per_second:.0f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("sacreBLEU signature: " + "; ".join(sorted({s.signature for s in scores})))
    return "\n".join(lines)
