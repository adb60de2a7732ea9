"""The demo's results: every evaluated model scored, the paper's claims checked against them,
and the page (``results.md``, ``results.json``, ``results.png``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..atomic import atomic_write_text
from ..deploy.ct2_export import read_manifest
from ..distill.evaluate import bleu
from ..distill.mono import PROVENANCE_SUFFIX
from ..errors import SeqKDError
from ..textfiles import count_lines, read_text_lines
from .corpus import CANONICAL_REGISTER, all_register_references, mixing_rate, register_of
from .demo_models import DEPLOYED, MAX_LEN_A, MAX_LEN_B, SEQ_KD_MONO, ModelSpec
from .presets import Preset
from .report import (
    DIAGNOSTIC_COLUMNS,
    ModelResult,
    format_table,
    plot_results,
    results_markdown,
)

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["demo_findings", "score_models", "write_report"]


def _every_register(pipeline: Pipeline, warn: TextIO) -> list[list[str]]:
    """The built-in test set's every-register references, or ``[]`` with a warning that says
    why the multi-reference column is left out."""
    if not pipeline.builtin:
        return []
    try:
        return all_register_references(pipeline.preset.corpus, pipeline.raw)
    except SeqKDError as exc:
        print(f"warning: no BLEU against every register: {exc}", file=warn, flush=True)
        return []


def _distilled_pairs(data: Path) -> dict[str, float]:
    """The parallel and monolingual pairs of a distilled data-bin's train split, counted from
    the provenance file ``seqkd-build --mono-source`` writes beside it."""
    rows = read_text_lines(str(data / f"train{PROVENANCE_SUFFIX}"))[1:]  # after the header
    parallel = sum(row.startswith("parallel\t") for row in rows)
    return {"parallel_pairs": parallel, "mono_pairs": len(rows) - parallel}


def score_models(pipeline: Pipeline, warn: TextIO = sys.stderr
                 ) -> tuple[list[ModelResult], str]:
    """Score every evaluated model; returns the rows (``pipeline.models``, then
    :data:`DEPLOYED`) and sacrebleu's signature."""
    from ..checkpoints import parameter_counts
    from ..teacher import load_checkpoint_state

    refs = read_text_lines(str(pipeline.raw / "test.tgt"))
    every = _every_register(pipeline, warn)
    preset, out = pipeline.preset, pipeline.out
    rows, signature = [], ""
    for model in (*pipeline.models, *DEPLOYED):
        greedy, beamed = pipeline.decoding(model, 1), pipeline.decoding(model, preset.beam)
        bleu_g, signature = bleu(greedy.hypotheses, refs)
        bleu_b, _ = bleu(beamed.hypotheses, refs)
        if model.engine == "ctranslate2":
            manifest = read_manifest(str(out / model.checkpoint))
            total, nonzero = manifest.parameters, manifest.nonzero
        else:
            state = load_checkpoint_state(str(out / model.checkpoint), "--path")
            total, nonzero = parameter_counts(state["model"])
        label = model.label
        if model.key == "teacher":
            label = f"Teacher ({preset.teacher.describe()})"
        elif model.key == "baseline":
            label = f"Student ({preset.student.describe()}), baseline"
        row = ModelResult(
            label, total, nonzero, bleu_g, bleu_b,
            greedy.tokens_per_second, beamed.tokens_per_second,
            extra={"sec_greedy": greedy.seconds, "sec_beam": beamed.seconds},
        )
        if pipeline.builtin:
            row.mixing_greedy = mixing_rate(greedy.hypotheses)
            row.mixing_beam = mixing_rate(beamed.hypotheses)
            row.extra["canonical_greedy"] = sum(
                register_of(h, majority=True) == CANONICAL_REGISTER
                for h in greedy.hypotheses) / max(len(greedy.hypotheses), 1)
        if model == SEQ_KD_MONO:
            row.extra.update(_distilled_pairs(pipeline.mono_data))
        if every:
            row.multi_bleu_greedy = bleu(greedy.hypotheses, *every)[0]
            row.multi_bleu_beam = bleu(beamed.hypotheses, *every)[0]
        rows.append(row)
    reference = rows[0].extra["sec_beam"]
    for row in rows:
        row.speedup_greedy = reference / row.extra["sec_greedy"]
        row.speedup_beam = reference / row.extra["sec_beam"]
    return rows, signature


def _versus(delta: float, above: str, below: str, level: str) -> str:
    """The words for a difference of ``delta`` BLEU, as printed (two decimals)."""
    return level if round(delta, 2) == 0 else above if delta > 0 else below


def _mono_finding(preset: Preset, teacher: ModelResult, seq: ModelResult,
                  mono: ModelResult) -> str:
    """What the Seq-KD + mono row shows against the Seq-KD row and the teacher's beam."""
    parallel, extra = int(mono.extra["parallel_pairs"]), int(mono.extra["mono_pairs"])
    epochs = preset.student_epochs if preset.mono_student_epochs is None \
        else preset.mono_student_epochs
    # updates scale with the pairs (batches of max_tokens) and the epochs
    updates = (parallel + extra) / max(parallel, 1) * epochs / preset.student_epochs
    delta, gap = mono.bleu_greedy - seq.bleu_greedy, mono.bleu_greedy - teacher.bleu_beam
    return (
        f"More distilled data: the teacher also translated {preset.corpus.mono:,} generated "
        f"source sentences that are in no split ({extra:,} kept by the build's filters). The "
        f"Seq-KD + mono student, trained on {parallel:,} + {extra:,} pairs for {epochs} "
        + ("epochs as the Seq-KD student" if epochs == preset.student_epochs else
           f"epochs (the Seq-KD student: {preset.student_epochs})")
        + f", about {updates:.1f}x the Seq-KD student's updates: greedy "
        f"{mono.bleu_greedy:.2f} BLEU vs {seq.bleu_greedy:.2f} for the Seq-KD student "
        f"({delta:+.2f}, "
        + _versus(delta, "better", "worse", "no difference")
        + f") and {teacher.bleu_beam:.2f} for the teacher's beam {preset.beam} ({gap:+.2f}: "
        + _versus(gap, "its greedy output passes its teacher's beam search",
                  "still below its teacher's beam search",
                  "level with its teacher's beam search")
        + "). Part of a difference can come from the number of updates alone (an "
        "undertrained student gains from more of them): the demo trains no Seq-KD student "
        "for as many updates."
    )


def demo_findings(preset: Preset, models: Sequence[ModelSpec],
                  rows: Sequence[ModelResult]) -> list[str]:
    """Plain sentences on the paper's claims, each saying whether this run bears it out;
    ``rows`` are :func:`score_models`' (``models``, then :data:`DEPLOYED`)."""
    by = {m.key: r for m, r in zip((*models, *DEPLOYED), rows, strict=True)}
    teacher, base, seq = by["teacher"], by["baseline"], by["seq-kd"]
    pruned, beam = by["pruned"], preset.beam

    def verdict(ok: bool) -> str:
        return "as in the paper" if ok else "NOT as in the paper"

    out = []
    delta = seq.bleu_greedy - base.bleu_greedy
    text = (f"Seq-KD student greedy {seq.bleu_greedy:.2f} BLEU vs baseline student greedy "
            f"{base.bleu_greedy:.2f} ({delta:+.2f}; {verdict(delta > 0)})")
    if seq.multi_bleu_greedy is not None and base.multi_bleu_greedy is not None:
        m_delta = seq.multi_bleu_greedy - base.multi_bleu_greedy
        text += (f"; against all registers {seq.multi_bleu_greedy:.2f} vs "
                 f"{base.multi_bleu_greedy:.2f} ({m_delta:+.2f}; {verdict(m_delta > 0)})")
    out.append(text + ".")
    gap_seq = seq.bleu_beam - seq.bleu_greedy
    gap_base = base.bleu_beam - base.bleu_greedy
    out.append(f"Beam {beam} minus greedy: {gap_seq:+.2f} BLEU for the Seq-KD student, "
               f"{gap_base:+.2f} for the baseline student ("
               f"{verdict(gap_seq < gap_base)}: Seq-KD should make beam search nearly "
               "unnecessary).")
    out.append(f"Seq-KD student greedy vs teacher beam {beam}: {seq.bleu_greedy:.2f} vs "
               f"{teacher.bleu_beam:.2f} BLEU, {seq.speedup_greedy:.1f}x faster, "
               f"{teacher.params / seq.params:.1f}x fewer parameters.")
    if SEQ_KD_MONO.key in by:
        out.append(_mono_finding(preset, teacher, seq, by[SEQ_KD_MONO.key]))
    if "canonical_greedy" in base.extra and "canonical_greedy" in seq.extra:
        keys = (("baseline", base), ("Word-KD", by["word-kd"]), ("Seq-KD", seq),
                ("teacher", teacher))
        canonical = ", ".join(f"{n} {r.extra['canonical_greedy']:.1%}" for n, r in keys)
        mixing = ", ".join(f"{n} {r.mixing_greedy:.1%}" for n, r in keys)
        out.append(
            f"Why: the references use the canonical register for about "
            f"{preset.corpus.preferred:.0%} of the sentences and another register "
            "otherwise, each a correct translation. A student trained on them spends its "
            "capacity on every register; the teacher's beam search keeps the most probable "
            "one, so the Seq-KD data is (almost) one register and the Seq-KD student learns "
            f"a simpler task. Greedy outputs in the canonical register: {canonical}; "
            f"outputs that mix registers: {mixing}."
        )
    deployed, deep = by["seq-kd-ct2"], by["deep-shallow-ct2"]
    shape = preset.student.deep_shallow().describe()
    out.append(
        f"Deployed with CTranslate2 int8 (`seqkd-export --format ctranslate2`, "
        f"`seqkd-translate`), greedy: the Seq-KD student {deployed.bleu_greedy:.2f} BLEU "
        f"({deployed.bleu_greedy - seq.bleu_greedy:+.2f} against itself in fairseq) at "
        f"{deployed.speedup_greedy:.1f}x the teacher's beam-{beam} speed in fairseq "
        f"({deployed.speedup_greedy / seq.speedup_greedy:.1f}x its own fairseq speed); the "
        f"deep-encoder, shallow-decoder student ({shape}) {deep.bleu_greedy:.2f} BLEU "
        f"({by['deep-shallow'].bleu_greedy:.2f} in fairseq) at {deep.speedup_greedy:.1f}x.")
    drop = seq.bleu_greedy - pruned.bleu_greedy
    out.append(f"Pruned Seq-KD student ({preset.prune_ratio:.0%} of the weights "
               f"zeroed, retrained): greedy {pruned.bleu_greedy:.2f} BLEU vs "
               f"{seq.bleu_greedy:.2f} unpruned ({-drop:+.2f}; {verdict(drop <= 1.0)}: "
               f"within 1 BLEU), with {pruned.nonzero:,} non-zero parameters "
               f"({teacher.params / max(pruned.nonzero, 1):.0f}x fewer than the teacher).")
    return out


def _notes(pipeline: Pipeline) -> list[str]:
    p, runs = pipeline.preset, pipeline.runs
    mono = (f", and {p.corpus.mono:,} source sentences in no split for the Seq-KD + mono row"
            if pipeline.mono is not None else "")
    corpus = ("built-in synthetic corpus "
              f"({p.corpus.train:,} training pairs, {p.corpus.registers} registers{mono})"
              if pipeline.builtin else f"corpus {pipeline.raw.name}")
    notes = [
        f"- Data: {corpus}; joint sentencepiece BPE ({p.vocab_size} pieces); preset "
        f"`{p.name}`; test set: {count_lines(pipeline.raw / 'test.tgt'):,} sentences.",
        f"- Decoding: the `eval` stage decodes every model in one process, alone on the "
        f"machine as far as this demo is concerned, with {pipeline.threads} thread(s): "
        "fairseq's own generation pipeline (what `fairseq-generate --cpu --batch-size "
        f"{p.eval_batch_size} --max-len-a {MAX_LEN_A} --max-len-b {MAX_LEN_B} --remove-bpe "
        "sentencepiece` runs; greedy = `--beam 1`) and, for the CTranslate2 rows, "
        "`seqkd-translate`'s `Translator`. tok/s counts output tokens with their `</s>` over "
        "the decoding time only (fairseq-generate's clock: no start-up or loading). "
        f"Speed-up = the teacher's beam-{p.beam} time for the test set divided by the "
        "model's, all measured in this run (other processes on the machine make these "
        "numbers noisy).",
        "- Parameters are unique weights in the evaluated checkpoint (tied embeddings "
        "counted once); non-zero excludes pruned weights.",
    ]
    if pipeline.builtin:
        notes.append("- Mixed: share of test outputs that contain register-specific words "
                     "of two or more registers "
                     "(`fairseq_seqkd.experiments.corpus.mixing_rate`; "
                     "the references: 0%).")
    stage_rows = [f"| {r.name} | {r.seconds:.0f} | {r.cpu_seconds:.0f} |" for r in runs]
    return [
        *notes, "", "## Stage times (seconds; a skipped stage shows the run that made it)", "",
        f"Up to {pipeline.jobs} stage(s) at a time (decoding alone), {pipeline.threads} "
        "thread(s) each. CPU = user + system time of the stage's processes, which "
        "other load on the machine inflates far less than wall time.", "",
        "| stage | wall | CPU |", "|---|---:|---:|", *stage_rows,
        f"| sum | {sum(r.seconds for r in runs):.0f} | "
        f"{sum(r.cpu_seconds for r in runs):.0f} |"]


def write_report(pipeline: Pipeline, warn: TextIO = sys.stderr
                 ) -> tuple[str, list[ModelResult]]:
    """Write results.md, results.json and results.png; return the terminal table."""
    rows, signature = score_models(pipeline, warn)
    p, out = pipeline.preset, pipeline.out
    table = format_table(rows, beam=p.beam, mixing=pipeline.builtin)
    diagnostics = ""
    if rows[0].multi_bleu_greedy is not None:
        diagnostics = "\n".join([
            "## The built-in corpus: every register as a reference", "",
            "Each test source has one reference, in the canonical register for about "
            f"{p.corpus.preferred:.0%} of the sentences and in another register otherwise, "
            "although all registers are correct translations; BLEU against one reference "
            "barely penalises a sentence that mixes registers. Against every register's "
            "rendering (sacrebleu with several references) a consistent translation in any "
            "register scores high and mixing costs n-gram matches.", "",
            format_table(rows, beam=p.beam, columns=DIAGNOSTIC_COLUMNS),
        ])
    plot_path = out / "results.png"
    plot_results(rows, plot_path, beam=p.beam,
                 title=f"seqkd-demo ({p.name}): BLEU against decoding speed")
    text = results_markdown(
        rows, title="Sequence-level knowledge distillation: demo results",
        signature=signature, beam=p.beam, mixing=pipeline.builtin,
        notes=_notes(pipeline), findings=demo_findings(p, pipeline.models, rows),
        plot_name=plot_path.name, diagnostics=diagnostics,
    )
    atomic_write_text(out / "results.md", text)
    payload = {"preset": asdict(p), "signature": signature,
               "rows": [asdict(r) for r in rows],
               "stages": [asdict(r) for r in pipeline.runs]}
    atomic_write_text(out / "results.json", json.dumps(payload, indent=1, default=str) + "\n")
    return table + f"\nBLEU: sacrebleu {signature}", rows
