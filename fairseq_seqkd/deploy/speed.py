"""Decoding speed of fairseq and CTranslate2 models, measured side by side on one test set.

fairseq is timed by fairseq-generate's own clock (``Translated N sentences (M tokens) in Xs``:
generation only, no start-up or loading); CTranslate2 by the time spent inside
``translate_batch`` (:class:`~fairseq_seqkd.deploy.translator.Translator`). Both count the
output tokens without the final ``</s>`` (fairseq's M counts it; it is taken off here), so
tokens/s compare across engines. Speed-ups are ratios of tokens/s at the same batch size.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import SeqKDError
from .translator import Translator


@dataclass
class SpeedRow:
    """One decoding run: which model, how, how fast, how good."""

    label: str
    engine: str  # "fairseq" or "ctranslate2 <quantization>"
    beam: int
    batch: int
    sentences: int
    tokens: int  # output tokens without </s>
    seconds: float
    bleu: float | None = None
    params: int | None = None
    size_bytes: int | None = None
    hypotheses: list[str] | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("inf")


def fairseq_run(command: Sequence[str], env: dict[str, str] | None = None) -> tuple[
        list[str], int, int, float]:
    """Run a fairseq-generate command; returns (hypotheses in order, sentences, output tokens
    without </s>, generation seconds)."""
    from ..distill.evaluate import parse_decoding

    proc = subprocess.run(list(command), capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        raise SeqKDError(f"{os.path.basename(command[0])} exited with status "
                         f"{proc.returncode}: {last[:200]}")
    run = parse_decoding(proc.stdout + "\n" + proc.stderr, os.path.basename(command[0]))
    return run.hypotheses, run.sentences, run.tokens - run.sentences, run.seconds


def ct2_run(translator: Translator, sources: Sequence[Sequence[str]], beam: int, batch: int,
            max_len_a: float, max_len_b: int) -> tuple[list[str], int, int, float]:
    """Decode token lists with CTranslate2; same return value as :func:`fairseq_run`."""
    import time

    begin = time.perf_counter()
    targets = translator.translate_tokens(sources, beam, batch, max_len_a, max_len_b)
    seconds = time.perf_counter() - begin
    return ([translator.decode(t) for t in targets], len(sources),
            sum(len(t) for t in targets), seconds)


@dataclass
class DeployPlan:
    """What :func:`measure_deployment` decodes: fairseq checkpoints (stock exports, loadable
    without the plugin) on a binarized test set, CTranslate2 directories on its raw source."""

    data: str
    subset: str
    fairseq: dict[str, str]  # label -> checkpoint
    ct2: dict[str, str]  # label -> seqkd-export --format ctranslate2 directory
    source: list[str]  # raw source lines of ``subset``
    references: list[str]
    reference_label: str  # the fairseq row that decodes with ``beam``; the others are greedy
    same_engine_label: str  # the CTranslate2 row that decodes with ``beam``
    batches: tuple[int, ...] = (1, 64)
    beam: int = 5
    threads: int = 1
    max_len_a: float = 1.5
    max_len_b: int = 10
    fairseq_generate: str = "fairseq-generate"


def measure_deployment(plan: DeployPlan, log: Callable[[str], None] = print) -> list[SpeedRow]:
    """Every row at every batch size, one after another in this process, one thread each."""
    from ..checkpoints import parameter_counts
    from ..distill.evaluate import bleu
    from ..teacher import load_checkpoint_state

    env = {"OMP_NUM_THREADS": str(plan.threads), "MKL_NUM_THREADS": str(plan.threads)}
    translators = {label: Translator(path, threads=plan.threads)
                   for label, path in plan.ct2.items()}
    sources = {label: [t.encode(line) for line in plan.source]
               for label, t in translators.items()}
    params = {label: parameter_counts(load_checkpoint_state(path, "--path")["model"])[0]
              for label, path in plan.fairseq.items()}
    rows: list[SpeedRow] = []
    for batch in plan.batches:
        for label, path in plan.fairseq.items():
            beam = plan.beam if label == plan.reference_label else 1
            hyps, n, tokens, seconds = fairseq_run([
                plan.fairseq_generate, plan.data, "--path", path, "--gen-subset", plan.subset,
                "--beam", str(beam), "--nbest", "1", "--batch-size", str(batch),
                "--max-len-a", str(plan.max_len_a), "--max-len-b", str(plan.max_len_b),
                "--remove-bpe", "sentencepiece", "--cpu", "--num-workers", "0",
                "--required-batch-size-multiple", "1",
            ], env)  # fmt: skip
            rows.append(SpeedRow(label, "fairseq", beam, batch, n, tokens, seconds,
                                 params=params[label], size_bytes=os.path.getsize(path),
                                 hypotheses=hyps))
        for label, translator in translators.items():
            beam = plan.beam if label == plan.same_engine_label else 1
            hyps, n, tokens, seconds = ct2_run(translator, sources[label], beam, batch,
                                               plan.max_len_a, plan.max_len_b)
            rows.append(SpeedRow(label, f"ctranslate2 {translator.manifest.quantization}",
                                 beam, batch, n, tokens, seconds,
                                 params=translator.manifest.parameters,
                                 size_bytes=directory_size(plan.ct2[label]), hypotheses=hyps))
        for row in rows:
            if row.batch == batch:
                row.bleu = bleu(row.hypotheses or [], plan.references)[0]
                log(f"batch {batch:>3} {row.label:<28} beam {row.beam}: "
                    f"{row.tokens_per_second:>10,.0f} tokens/s, BLEU {row.bleu:.2f}")
    return rows


def directory_size(path: str) -> int:
    """Bytes on disk of a file, or of every file in a directory."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path)
               if os.path.isfile(os.path.join(path, n)))


def speed_table(rows: Sequence[SpeedRow], reference: str) -> str:
    """Markdown table; speed-up against the row labelled ``reference`` at the same batch."""
    ref = {r.batch: r.tokens_per_second for r in rows if r.label == reference}
    lines = ["| model | engine | beam | batch | tokens/s | speed-up | BLEU | parameters | "
             "size on disk |", "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        speedup = r.tokens_per_second / ref[r.batch] if r.batch in ref else None
        lines.append(
            f"| {r.label} | {r.engine} | {r.beam} | {r.batch} | {r.tokens_per_second:,.0f} | "
            f"{f'{speedup:.1f}x' if speedup else '-'} | "
            f"{'-' if r.bleu is None else f'{r.bleu:.2f}'} | "
            f"{'-' if r.params is None else f'{r.params:,}'} | "
            f"{'-' if r.size_bytes is None else f'{r.size_bytes / 2**20:.2f} MiB'} |")
    return "\n".join(lines)


@dataclass
class Target:
    text: str
    met: bool

    def line(self) -> str:
        return f"- {self.text}: **{'met' if self.met else 'MISSED'}**"


def deployment_targets(rows: Sequence[SpeedRow], reference: str, same_engine: str,
                       deployed: Sequence[str], fairseq_student: dict[str, str],
                       min_speedup: float = 25.0, max_bleu_drop: float = 0.5,
                       min_same_engine: float = 8.0) -> list[Target]:
    """The deployment targets: the best deployed student at ``min_speedup`` x the reference at
    every batch size and within ``max_bleu_drop`` BLEU of the same student in fairseq, and the
    same-engine ratio. ``fairseq_student`` maps a deployed label to its fairseq twin's label.

    The best deployed student is the fastest (highest speed-up at its slowest batch size) of
    those within ``max_bleu_drop`` of their twin at the largest batch, or the fastest of all
    when none is: a faster student that loses more BLEU is not the one a user would ship."""
    by = {(r.label, r.batch): r for r in rows}
    batches = sorted({r.batch for r in rows if r.label == reference})
    targets: list[Target] = []

    def bleu_drop(label: str) -> float | None:  # at the largest batch, None if unknown
        twin, b = fairseq_student.get(label), batches[-1]
        if twin is None or (twin, b) not in by or (label, b) not in by:
            return None
        ours, theirs = by[label, b].bleu, by[twin, b].bleu
        return None if ours is None or theirs is None else theirs - ours

    speedups: dict[str, float] = {}
    for label in deployed:
        ratios = [by[label, b].tokens_per_second / by[reference, b].tokens_per_second
                  for b in batches if (label, b) in by]
        if len(ratios) == len(batches) and ratios:
            speedups[label] = min(ratios)
    within = [lb for lb in speedups if (d := bleu_drop(lb)) is not None and d <= max_bleu_drop]
    best = max(within or speedups, key=lambda lb: speedups[lb], default=None)
    if best is None:
        return targets
    best_min = speedups[best]
    ratios = ", ".join(
        f"batch {b}: {by[best, b].tokens_per_second / by[reference, b].tokens_per_second:.1f}x"
        for b in batches)
    targets.append(Target(f"best deployed student ({best}) at least {min_speedup:g}x the "
                          f"{reference} tokens/s at every batch size ({ratios})",
                          best_min >= min_speedup))
    drop = bleu_drop(best)
    if drop is not None:
        twin, b0 = fairseq_student[best], batches[-1]
        targets.append(Target(f"its BLEU at most {max_bleu_drop} below the same student's "
                              f"fairseq greedy ({by[best, b0].bleu:.2f} vs "
                              f"{by[twin, b0].bleu:.2f}, "
                              f"{by[best, b0].bleu - by[twin, b0].bleu:+.2f})",
                              drop <= max_bleu_drop))
    for b in batches:
        if (same_engine, b) in by and (best, b) in by:
            ratio = by[best, b].tokens_per_second / by[same_engine, b].tokens_per_second
            targets.append(Target(f"same engine, batch {b}: {best} / {same_engine} = "
                                  f"{ratio:.1f}x (at least {min_same_engine:g}x)",
                                  ratio >= min_same_engine))
    return targets
