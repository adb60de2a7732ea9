"""The benchmark's results page: Markdown tables and the prose that says how each row was made,
from the numbers of a run (:mod:`.benchmark_scores`), written with its plot, a JSON of every
number and the stage logs by :func:`write_report`."""

from __future__ import annotations

import itertools
import json
import math
import os
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes, atomic_write_text
from ..deploy.speed import SpeedRow, speed_table
from ..errors import SeqKDError
from ..stages import stages_needed
from ..textfiles import count_lines
from .benchmark import PARTS, Benchmark
from .benchmark_models import (
    DEPLOY_BATCHES,
    SEQ_KD,
    SEQ_KD_WORD_KD,
    STRONG,
    TABLE1,
    TABLE1_BY_KEY,
)
from .benchmark_scores import (
    Scores,
    read_deploy_rows,
    read_scores,
    read_speeds,
    seed_noise,
    seed_values,
    valid_curve,
)
from .benchmark_targets import target_lines
from .demo_models import GKD_LAMBDA, SRC, ModelSpec
from .measures import mark_noise, mean_std, reference_nll
from .report import ModelResult, plot_results

__all__ = ["ResultsPage", "read_analysis", "write_report"]


def read_analysis(analysis: str | os.PathLike | None) -> str:
    """The ``--analysis`` file: a person's Markdown of reasons for the results ("" without
    one)."""
    if analysis is None:
        return ""
    try:
        return Path(analysis).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SeqKDError(f"--analysis: cannot read {analysis} ({exc.strerror})") from exc


def write_report(bench: Benchmark, doc: str | os.PathLike | None = None,
                 analysis: str | os.PathLike | None = None) -> tuple[str, list[ModelResult]]:
    """Write results.md, .json and .png in the output directory (and the page and plot to
    ``doc`` when given, its stage logs in ``DOC-logs/``) from whatever is done; return the
    terminal table and the plotted rows. ``analysis``: a Markdown file of reasons for the
    results, written by a person, put on the page after the targets."""
    reasons = read_analysis(analysis)
    scores, signature = read_scores(bench)
    speeds = read_speeds(bench)
    page = ResultsPage(bench, scores, speeds, read_deploy_rows(bench), signature)
    text, rows = page.render("results.png", reasons)
    out = bench.out
    plot_results(rows, out / "results.png", beam=bench.preset.beam,
                 title=f"seqkd-benchmark ({bench.raw.name}): test BLEU against decoding speed")
    atomic_write_text(out / "results.md", text)
    payload = {"preset": asdict(bench.preset), "signature": signature, "scores": scores,
               "speeds": speeds, "stages": [asdict(r) for r in bench.runs]}
    atomic_write_text(out / "results.json", json.dumps(payload, indent=1, default=str) + "\n")
    if doc is not None:
        doc = Path(doc)
        doc.parent.mkdir(parents=True, exist_ok=True)
        plot = doc.with_suffix(".png")
        atomic_write_bytes(plot, (out / "results.png").read_bytes())
        atomic_write_text(doc, page.render(plot.name, reasons)[0])
        logs = doc.with_name(f"{doc.stem}-logs")
        logs.mkdir(exist_ok=True)
        for log in sorted((out / "logs").glob("*.log")):
            atomic_write_text(logs / log.name, bench._portable(log.read_text("utf-8")))
        atomic_write_text(logs / "results.json",
                          json.dumps(bench._portable(payload), indent=1, default=str) + "\n")
    return page.table1(), rows


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


class ResultsPage:
    """The page of one run of ``bench``, from its numbers (None where not measured yet)."""

    def __init__(self, bench: Benchmark, scores: Scores, speeds: list[dict[str, Any]],
                 deploy_rows: list[SpeedRow], signature: str):
        self.bench, self.scores, self.speeds = bench, scores, speeds
        self.deploy_rows, self.signature = deploy_rows, signature
        self.preset, self.test_sets, self.first = bench.preset, bench.test_sets, bench.test_sets[0]
        #: the seed noise every BLEU difference on the page is marked against
        self.noise = seed_noise(bench, scores)

    def render(self, plot_name: str, reasons: str = "") -> tuple[str, list[ModelResult]]:
        """The page (its plot named ``plot_name``) and the plotted rows."""
        p, first, beam, scores = self.preset, self.first, self.preset.beam, self.scores
        tok_s = {(r["model"], r["beam"], r["batch"]): r["tok_s"] for r in self.speeds}
        rows = []  # for the plot: Table-1 models at their architecture's batched speed
        for model in TABLE1:
            s = scores[model.key]
            arch = "teacher" if model.key.startswith("teacher") else SEQ_KD.key
            if s[f"{first}.beam1"] is None:
                continue
            rows.append(ModelResult(
                self._label(model), s["params"] or 0, s["nonzero"] or 0, s[f"{first}.beam1"],
                s[f"{first}.beam{beam}"] if s[f"{first}.beam{beam}"] is not None else math.nan,
                tok_s.get((arch, 1, p.eval_batch_size), math.nan),
                tok_s.get((arch, beam, p.eval_batch_size), math.nan)))
        parts = [
            f"# Sequence-level knowledge distillation on {self.bench.raw.name}", "",
            "Kim & Rush (2016), reproduced with fairseq-seqkd on 2 CPU cores. Every number "
            f"below comes from the run whose logs are beside this page; BLEU is sacrebleu "
            f"`{self.signature}` against the raw references.", "",
            f"## Table 1 (BLEU on {', '.join(self.test_sets)})", "",
            self._run_line(*(m.stage for m in TABLE1)), "", self.table1(), "",
            f"*greedy = beam*: share of {first} sentences whose greedy output equals the beam-"
            f"{beam} output. *greedy vs baseline*: greedy BLEU minus the baseline student's. "
            "Word-KD rows use the teacher's top-"
            f"{p.kd_topk} distribution per position (from `seqkd-cache-teacher`), not the full "
            "vocabulary. \"X + Seq-Inter\": model X fine-tuned on the Seq-Inter data.", "",
            *self.targets(), "",
            *([reasons, ""] if reasons else []),
            f"![test BLEU against decoding speed]({plot_name})", "",
            *self._seeds_section(), "",
            *self._averaging_section(), "",
            *self._source_section(), "",
            *self._pruning_section(), "",
            "## Word-level divergences (beyond the paper)", "",
            self._divergence_table() if p.divergences else
            f"Not in preset `{p.name}` (its `divergences` field is empty).", "",
            *self._onpolicy_section(), "",
            f"## Decoding speed on {first} (CPU, fairseq-generate, {self.bench.threads} "
            "thread(s))", "",
            self._speed_table(), "",
            "Measured by one stage that runs alone after all training, with fairseq's own "
            "timing (`Translated N sentences (M tokens) in Xs`: generation only, no start-up). "
            "All students share one architecture, so the Seq-KD student's speed stands for "
            "every student row; speed-up is against the teacher with beam "
            f"{beam} at the same batch size.", "",
            *self._deploy_section(), "",
            *self.how(), "",
        ]
        return "\n".join(parts), rows

    def table1(self) -> str:
        return self._bleu_table(TABLE1, TABLE1_BY_KEY["baseline"], "baseline")

    def targets(self) -> list[str]:
        """The preset's targets, each met, MISSED or not measured yet, with its numbers."""
        p = self.preset
        lines = target_lines(p.targets, self.scores, self.bench.target_rows(), self.test_sets,
                             p.beam, self.deploy_rows)
        return ["## Targets against this run", "",
                *(lines or [f"Preset `{p.name}` sets none (its `targets` field is empty)."])]

    # ------------------------------------------------------------------ shared pieces

    def _bleu_table(self, models: tuple[ModelSpec, ...], reference: ModelSpec,
                    versus: str) -> str:
        """One row per model: parameters, BLEU on every test set, greedy minus ``reference``'s
        greedy on the first test set (column "greedy vs ``versus``", marked when smaller than
        two standard deviations of the seeds)."""
        beam, first, scores = self.preset.beam, self.first, self.scores
        extra = self.bench.extra_tests
        base = scores[reference.key][f"{first}.beam1"]
        header = ["model", "params", f"{first} greedy", f"{first} beam {beam}",
                  f"greedy vs {versus}", "greedy = beam",
                  *(f"{t} greedy / beam {beam}" for t in extra)]
        body = []
        for model in models:
            s = scores[model.key]
            g = s[f"{first}.beam1"]
            delta = ("" if g is None or base is None or model.key == reference.key
                     else mark_noise(f"{g - base:+.2f}", g - base, self.noise))
            body.append([self._label(model), _count(s["params"]), _num(g),
                         _num(s[f"{first}.beam{beam}"]), delta, _pct(s["same"]),
                         *(f"{_num(s[f'{t}.beam1'])} / {_num(s[f'{t}.beam{beam}'])}"
                           for t in extra)])
        return _markdown_table(header, body)

    def _label(self, model: ModelSpec) -> str:
        p = self.preset
        if model.key == "teacher":
            return f"Teacher ({p.teacher.describe()})"
        if model.key == "baseline":
            return f"Student ({p.student.describe()}), baseline"
        return model.label

    def _run_line(self, *stages: str) -> str:
        parts = sorted({self.bench.part_of(name) for name in stages}, key=PARTS.index)
        return f"*Run: {' and '.join(f'`--part {part}`' for part in parts)}.*"

    # ------------------------------------------------------------------ sections

    def _seeds_section(self) -> list[str]:
        p, first, beam, bench = self.preset, self.first, self.preset.beam, self.bench
        columns = [*(f"{t}.beam1" for t in self.test_sets), f"{first}.beam{beam}"]
        header = ["model", "seeds", *(f"{t} greedy" for t in self.test_sets),
                  f"{first} beam {beam}"]

        def values(key: str, column: str) -> list[float]:
            return seed_values(bench, self.scores, key, column)

        def cell(key: str, column: str) -> str:
            if not values(key, column):
                return "-"
            mean, std = mean_std(values(key, column))
            return f"{mean:.2f} ± {std:.2f}"

        chain = bench.seed_chain()
        body = [[self._label(TABLE1_BY_KEY[k]), str(len(values(k, columns[0]))),
                 *(cell(k, c) for c in columns)] for k in chain]
        lines = []
        rows = [k for k in p.seed_rows if values(k, columns[0])]
        for a, b in itertools.pairwise(rows):
            delta = mean_std(values(b, columns[0]))[0] - mean_std(values(a, columns[0]))[0]
            lines.append(f"- {TABLE1_BY_KEY[b].label} minus {TABLE1_BY_KEY[a].label}, mean "
                         f"greedy on {first}: " + mark_noise(f"{delta:+.2f}", delta, self.noise))
        return [
            f"## Seeds: mean ± standard deviation over seeds 1, "
            f"{', '.join(map(str, p.extra_seeds))}", "", self._run_line(*(
                f"{k}-seed{s}" for s in p.extra_seeds for k in chain)), "",
            _markdown_table(header, body), "",
            "Each seed retrains the row from scratch, and a fine-tuned row the model it starts "
            "from, with `--seed N` (data order, dropout, initialisation). Seed noise: "
            + ("not measured yet" if self.noise is None else
               f"{self.noise:.2f} BLEU, the pooled sample standard deviation of {first} greedy "
               "over these rows")
            + "; every difference on this page smaller than two of it is marked "
            "\"(< 2 std)\".", "", *lines,
        ]

    def _averaging_section(self) -> list[str]:
        p, first, beam, bench = self.preset, self.first, self.preset.beam, self.bench
        header = ["model", "epochs trained", "valid NLL best",
                  f"valid NLL avg {p.average_last}", "better on valid",
                  f"{first} greedy best / avg", f"{first} beam {beam} best / avg"]
        body, wins, measured = [], 0, 0
        for key, avg in zip(p.average_models, bench.averaged_models, strict=True):
            model = TABLE1_BY_KEY[key]
            curve = valid_curve(bench, model)
            nll = [reference_nll(f.read_text(encoding="utf-8")) if f.exists() else None
                   for f in (bench.valid_file(model), bench.valid_file(avg))]
            better = "-"
            if None not in nll:
                measured += 1
                wins += nll[1] < nll[0]
                better = "average" if nll[1] < nll[0] else "best"
            body.append([self._label(model), "-" if curve is None else str(len(curve)),
                         _num(nll[0]), _num(nll[1]), better,
                         *(f"{_num(self.scores[key][c])} / {_num(self.scores[avg.key][c])}"
                           for c in (f"{first}.beam1", f"{first}.beam{beam}"))])
        verdict = ("not measured yet" if not measured else
                   f"the average has the lower valid NLL for {wins} of {measured} models, so "
                   + ("averaging should become the default" if 2 * wins > measured else
                      "checkpoint_best stays the default"))
        return [
            f"## Convergence and checkpoint averaging (last {p.average_last} epochs)", "",
            self._run_line(*(m.stage for m in bench.averaged_models)), "",
            _markdown_table(header, body), "",
            f"Every model trains until its validation loss has not improved for {p.patience} "
            f"epochs (`--patience {p.patience}`; caps: teacher {p.teacher_epochs}, students "
            f"{p.student_epochs}, fine-tuning {p.finetune_epochs} epochs); *epochs trained* "
            f"counts its validations. *avg*: `seqkd-export --checkpoint-dir DIR --average-last "
            f"{p.average_last}` of its last epoch checkpoints (`--keep-last-epochs "
            f"{p.average_last}`). Valid NLL: bits per reference token (`</s>` included) from "
            "`fairseq-generate --gen-subset valid --score-reference`, the same measure "
            f"whatever the training criterion. On valid, {verdict}.",
        ]

    def _source_section(self) -> list[str]:
        p, nbest = self.preset, self.bench.nbest_model
        models = (SEQ_KD, STRONG, TABLE1_BY_KEY["seq-kd-seq-inter"], nbest)
        return [
            "## A stronger source for the distilled data", "",
            self._run_line(STRONG.stage, nbest.stage), "",
            self._bleu_table(models, SEQ_KD, "Seq-KD"), "",
            f"{STRONG.label}: a student trained as Seq-KD on the beam-{p.beam} output of the "
            f"teacher fine-tuned on Seq-Inter data. {nbest.label}: the Seq-KD "
            f"student fine-tuned on Seq-Inter data chosen from the teacher's "
            f"{p.inter_nbest_large}-best (beam {p.inter_nbest_large}) instead of its "
            f"{p.inter_nbest}-best (the row above it).",
        ]

    def _pruning_section(self) -> list[str]:
        p, first, beam, bench = self.preset, self.first, self.preset.beam, self.bench
        base = self.scores[SEQ_KD.key][f"{first}.beam1"]
        header = ["model", "params", "non-zero", f"{first} greedy", f"{first} beam {beam}",
                  "greedy vs Seq-KD", "valid loss by epoch"]
        body = []
        for m in (SEQ_KD, *bench.pruned_models):
            s, g = self.scores[m.key], self.scores[m.key][f"{first}.beam1"]
            curve = valid_curve(bench, m) or []
            delta = ("" if g is None or base is None or m is SEQ_KD
                     else mark_noise(f"{g - base:+.2f}", g - base, self.noise))
            body.append([m.label, _count(s["params"]), _count(s["nonzero"]), _num(g),
                         _num(s[f"{first}.beam{beam}"]), delta,
                         " ".join(f"{v:.2f}" for v in curve) or "-"])
        sparsity = {m.label: self.scores[m.key].get("sparsity") for m in bench.pruned_models}
        measured = {label: v for label, v in sparsity.items() if v}
        names = list(next(iter(measured.values()))) if measured else []
        matrix = _markdown_table(
            ["matrix", *measured],
            [[name.removesuffix(".weight"), *(_pct(v.get(name)) for v in measured.values())]
             for name in names]) if names else "(no pruned model yet)"
        gradual = (f"sparsity raised along Zhu & Gupta's cubic schedule from update 0 to "
                   f"{p.prune_end_update} (masks every {p.prune_interval} updates)"
                   if p.prune_schedule == "gradual" else "pruned once before the first update")
        return [
            "## Pruning the Seq-KD student (retrained on the Seq-KD data)", "",
            self._run_line(*(m.stage for m in bench.pruned_models)), "",
            _markdown_table(header, body), "",
            f"Each pruned row starts from the trained Seq-KD student and retrains for "
            f"{p.prune_epochs} epochs (no patience) at the student's own lr {p.student_lr} and "
            f"warm-up {p.warmup}, {gradual}; the row is the retraining's last checkpoint "
            "(checkpoint_best would be an early epoch's, before the full sparsity); "
            f"class-blind at "
            f"{', '.join(f'{r:.0%}' for r in p.prune_ratios)}, "
            f"{' and '.join(p.prune_schemes)} at {p.prune_ratio:.0%}; every weight matrix, "
            "embeddings included (See et al. 2016). *valid loss by epoch*: fairseq's "
            "validation loss (label-smoothed, the retraining's criterion) after each epoch, "
            "from the stage log.", "",
            "Share of zeros per weight matrix of each pruned checkpoint (the shared "
            "embedding counted once):", "", matrix,
        ]

    def _divergence_table(self) -> str:
        first, beam, extra = self.first, self.preset.beam, self.bench.extra_tests
        header = ["word-level divergence", f"{first} greedy", f"{first} beam {beam}",
                  *(f"{t} greedy" for t in extra)]
        models = [(TABLE1_BY_KEY["word-kd"], "kl (Word-KD above)"),
                  *((m, m.key.removeprefix("word-kd-")) for m in self.bench.divergence_models)]
        body = [[name, _num(self.scores[m.key][f"{first}.beam1"]),
                 _num(self.scores[m.key][f"{first}.beam{beam}"]),
                 *(_num(self.scores[m.key][f"{t}.beam1"]) for t in extra)]
                for m, name in models]
        return _markdown_table(header, body)

    def _onpolicy_section(self) -> list[str]:
        p, filtered = self.preset, self.bench.filtered_model
        models = (SEQ_KD, SEQ_KD_WORD_KD, *self.bench.gkd_models, filtered)
        return [
            "## On-policy distillation and score-filtered data (beyond the paper)", "",
            self._bleu_table(models, SEQ_KD_WORD_KD, SEQ_KD_WORD_KD.label), "",
            f"GKD rows: the Seq-KD student fine-tuned with `--criterion gkd --gkd-lambda "
            f"{GKD_LAMBDA} --gkd-beta B --kd-alpha {p.kd_alpha}` (Agarwal et al. 2024: on a "
            "fraction lambda of the updates the student samples its own targets and the teacher "
            "scores every token with JSD(beta); the teacher runs online over the full "
            f"vocabulary) on the Seq-KD data, with the budget of {SEQ_KD_WORD_KD.label}: "
            f"{p.student_epochs} epochs at lr {p.student_lr}, warm-up {p.warmup}, the same "
            "data and batches, hence the same number of updates. That row trains from "
            "scratch, so the GKD rows also have the Seq-KD student's training behind them. "
            f"{filtered.label}: a student trained as Seq-KD on the Seq-KD data "
            f"without the {p.filter_worst:g} % of sentences whose teacher output has the lowest "
            f"length-normalised score (`seqkd-build --filter-worst {p.filter_worst:g} "
            "--fallback drop`, from the Seq-KD build's n-best), so its epochs are that much "
            "shorter.",
        ]

    def _speed_table(self) -> str:
        beam = self.preset.beam
        reference = {r["batch"]: r["seconds"] for r in self.speeds
                     if r["model"] == "teacher" and r["beam"] == beam}
        header = ["model", "beam", "batch", "sentences/s", "tokens/s",
                  f"speed-up vs teacher beam {beam}"]
        body = []
        for r in self.speeds:
            who = "teacher" if r["model"] == "teacher" else "student (every row)"
            ref = reference.get(r["batch"])
            body.append([who, str(r["beam"]), str(r["batch"]), f"{r['sent_s']:,.1f}",
                         f"{r['tok_s']:,.0f}",
                         f"{ref / r['seconds']:.1f}x" if ref and r["seconds"] else "-"])
        return _markdown_table(header, body) if body else "(not measured yet)"

    def _deploy_section(self) -> list[str]:
        beam = self.preset.beam
        out = [f"## Deployment: CTranslate2 on {self.first} (CPU, {self.bench.threads} "
               "thread(s))", ""]
        if not self.deploy_rows:
            return [*out, "(not measured yet)"]
        return [
            *out, speed_table(self.deploy_rows, "teacher"), "",
            f"One stage, alone after all training, decodes every row at batch "
            f"{' and '.join(map(str, DEPLOY_BATCHES))}: the teachers with beam {beam}, the "
            "students greedily. fairseq rows are stock exports (`seqkd-export`) timed by "
            "fairseq-generate's own clock; CTranslate2 rows are `seqkd-export --format "
            "ctranslate2` directories timed inside `translate_batch` "
            "(`fairseq_seqkd.deploy.speed`). tokens/s counts output tokens without `</s>` in "
            "both engines; speed-up is against the teacher's fairseq beam "
            f"{beam} at the same batch size; BLEU as above; size on disk is the exported "
            "checkpoint or CTranslate2 directory.",
        ]

    def how(self) -> list[str]:
        """How the run was made: corpus, preset, parallelism, each stage's cost from its
        stamp, and every command as a user would type it."""
        p, bench = self.preset, self.bench
        counts = {t: count_lines(bench.raw / f"{t}.{SRC}") for t in ("train", *self.test_sets)}
        every = bench.stages()
        stages = stages_needed(every, bench.only)
        out = [
            "## How it was run", "",
            *([f"- This run: `--only {','.join(bench.only)}`, i.e. {len(stages)} of the "
               f"{len(every)} stages (those named and what they need); a row without "
               "numbers was not run."] if bench.only else []),
            f"- Corpus `{bench.raw.name}` (`$CORPUS` below): {counts['train']:,} training "
            "pairs; test sets "
            + ", ".join(f"{t} ({counts[t]:,})" for t in self.test_sets)
            + f"; joint sentencepiece BPE, {p.vocab_size} pieces.",
            f"- Preset `{p.name}`: teacher {p.teacher.describe()} (ffn {p.teacher.ffn}, "
            f"at most {p.teacher_epochs} epochs, lr {p.teacher_lr}), students "
            f"{p.student.describe()} (ffn {p.student.ffn}, at most {p.student_epochs} epochs, "
            f"lr {p.student_lr}); fine-tuning at most {p.finetune_epochs} epochs at lr "
            f"{p.finetune_lr}; patience {p.patience or 'off'}; pruning retrains "
            f"{p.prune_epochs} epochs; `--max-tokens {p.max_tokens}`, Adam, inverse-sqrt "
            f"warm-up {p.warmup}; checkpoint_best by validation loss; Seq-KD data from teacher "
            f"beam {p.beam}, Seq-Inter from its {p.inter_nbest}-best; kd-alpha {p.kd_alpha}.",
            f"- Stages ran up to {bench.jobs} at a time with {bench.threads} thread(s) each "
            "(the speed stage alone). Tuning used validation loss only; no test-set choices.",
            "- BLEU: each model decoded on every test set, greedy and beam "
            f"{p.beam}, by one process (`python -m fairseq_seqkd.experiments.decode`: fairseq's "
            "generation pipeline in-process, what `fairseq-generate` runs with the same "
            "options, hypotheses identical); speeds come from the speed stages only.",
            "- Two runs in one output directory: `--part table1`, then `--part extra`.",
            "", "| stage | run | wall s | CPU s |", "|---|---|---:|---:|",
        ]
        for stage in stages:  # from the stamps: the run that made each stage
            try:
                stamp = json.loads(bench._stamp_path(stage.name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out.append(f"| {stage.name} | {bench.part_of(stage.name)} | "
                       f"{stamp['seconds']:.0f} | {stamp['cpu_seconds']:.0f} |")
        out += ["", "<details><summary>Every command, in stage order ($OUT is the output "
                "directory, $CORPUS the corpus)</summary>", "", "```"]
        for stage in stages:
            out.append(f"# {stage.name}: {stage.description}")
            out += [self._doc_command(c) for c in stage.commands]
            if stage.func_key is not None:
                out.append(f"# in-process: {json.dumps(bench._portable(stage.func_key))}")
        out += ["```", "</details>"]
        return out

    def _doc_command(self, command: list[str]) -> str:
        """A command as a user would type it from the repository root."""
        text = shlex.join([Path(command[0]).name, *command[1:]])
        return self.bench._portable(text.replace(self.bench.plugin, "fairseq_seqkd"))
