"""The deployed-student study's results page: every row's BLEU and chrF, the targets, the
seeds, the paired bootstrap of every row against Seq-KD and the teacher's beam, the data, the
validation curves, GKD's step cost, the student sizes and the deployment, and how it ran;
written with the archive a later part reads back (:mod:`.mono_results`)."""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_write_text
from ..deploy.speed import speed_table
from ..stages import stages_needed
from ..textfiles import count_lines
from .benchmark_models import DEPLOY_BATCHES, DEPLOY_REFERENCE, SEQ_KD
from .benchmark_page import read_analysis
from .benchmark_targets import mono_target_lines
from .demo_models import GKD_LAMBDA, SRC, ModelSpec
from .measures import mean_std
from .mono_models import ENSEMBLE, PARTS, TEACHER
from .mono_results import Results, read_results, write_archive
from .mono_study import DATA_BUILDS, MonoStudy
from .significance import Comparison, paired_bootstrap

__all__ = ["StudyPage", "write_report"]


def write_report(study: MonoStudy, doc: str | os.PathLike | None = None,
                 analysis: str | os.PathLike | None = None) -> tuple[str, list]:
    """Write results.md in the output directory (and the page to ``doc`` when given, with its
    archive in ``DOC-logs/``, read back for the rows this run lacks); return the results
    table. ``analysis``: a person's Markdown of reasons, put after the targets."""
    reasons = read_analysis(analysis)
    archive = None if doc is None else Path(doc).with_name(f"{Path(doc).stem}-logs")
    results = read_results(study, archive)
    page = StudyPage(study, results)
    text = page.render(reasons)
    study.out.mkdir(parents=True, exist_ok=True)  # a fresh machine's report-only run
    atomic_write_text(study.out / "results.md", text)
    if doc is not None and archive is not None:
        Path(doc).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(doc), text)
        write_archive(study, results, archive)
    return page.results_table(), []


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def _delta(c: Comparison | None) -> str:
    return "-" if c is None else f"{c.delta:+.2f} (p = {c.p_value:.3f})"


class StudyPage:
    """The page of one run of ``study`` from its :class:`~.mono_results.Results`."""

    def __init__(self, study: MonoStudy, results: Results):
        self.study, self.r, self.p = study, results, study.preset
        self.test_sets, self.first, self.beam = study.test_sets, study.test_sets[0], self.p.beam

    # ------------------------------------------------------------------ numbers

    def seeds_of(self, key: str) -> list[str]:
        """A row and its seeded copies, those decoded (the teacher: its first seed only, the
        one the students learn from)."""
        keys = [key] if key == TEACHER.key else [
            key, *(f"{key}-seed{s}" for s in self.p.extra_seeds)]
        return [k for k in keys if self.r.score("bleu", k, f"{self.first}.beam1") is not None]

    def mean(self, key: str, column: str, metric: str = "bleu") -> tuple[float, float] | None:
        values = [self.r.score(metric, k, column) for k in self.seeds_of(key)]
        measured = [v for v in values if v is not None]
        return mean_std(measured) if measured else None

    def _versus_row2(self, key: str) -> str:
        """Row 2 of the same seed as ``key`` when it was decoded, else seed 1's."""
        seed = key.rsplit("-seed", 1)[1] if "-seed" in key else None
        paired = f"{SEQ_KD.key}-seed{seed}" if seed else SEQ_KD.key
        return paired if (paired, self.first, 1) in self.r.hypotheses else SEQ_KD.key

    @functools.cache  # noqa: B019 (one page object, a few dozen comparisons)
    def compare(self, test_set: str, baseline: str, beam: int, keys: tuple[str, ...]
                ) -> dict[str, dict[str, Comparison]]:
        """The greedy output of the rows ``keys`` against ``baseline`` decoded with ``beam``
        on ``test_set`` (the rows not decoded yet left out)."""
        hyps = self.r.hypotheses
        systems = {k: hyps[k, test_set, 1] for k in keys if (k, test_set, 1) in hyps}
        if (baseline, test_set, beam) not in hyps or not systems:
            return {}
        return paired_bootstrap(hyps[baseline, test_set, beam], systems,
                                self.study.references(test_set), self.p.bootstrap_samples)[0]

    def versus(self, key: str, test_set: str, against: str) -> dict[str, Comparison]:
        """``key``'s greedy output against the same seed's row 2 ("row2") or the teacher's
        beam ("teacher"), every decoded row compared in one resampling per baseline."""
        decoded = tuple(m.key for m in self.study.models if (m.key, test_set, 1)
                        in self.r.hypotheses)
        if against == "teacher":
            return self.compare(test_set, TEACHER.key, self.beam, decoded).get(key, {})
        row2 = self._versus_row2(key)
        group = tuple(k for k in decoded if self._versus_row2(k) == row2 and k != row2)
        return self.compare(test_set, row2, 1, group).get(key, {})

    def p_value(self, a: str, b: str) -> float | None:
        """The largest BLEU p-value of ``a`` against ``b`` over the seeds both have, greedy on
        the first test set."""
        found = [self.compare(self.first, y, 1, (x,)).get(x, {}).get("BLEU")
                 for x, y in zip(self.seeds_of(a), self.seeds_of(b), strict=False)]
        return max((c.p_value for c in found if c is not None), default=None)

    # ------------------------------------------------------------------ page

    def render(self, reasons: str = "") -> str:
        study = self.study
        parts = [
            f"# A deployed student at its teacher's BLEU: {study.raw.name}", "",
            "Sequence-level knowledge distillation with monolingual source text, an ensemble "
            "teacher, on-policy fine-tuning and student sizes, with fairseq-seqkd on 2 CPU "
            "cores. Every number comes from the run whose logs are beside this page. BLEU is "
            f"sacrebleu `{self.r.signatures.get('BLEU', '-')}`, chrF sacrebleu "
            f"`{self.r.signatures.get('chrF', '-')}`, against the raw references.", "",
            "## Results", "", self.results_table(), "",
            f"Greedy and beam {self.beam}, BLEU / chrF, seed 1 of every row (the seeds: "
            "below). *part*: the run (`--part`) that makes the row.", "",
            "## Targets against this run", "", *self.targets(), "",
            *([reasons, ""] if reasons else []),
            *self.seeds_section(), "", *self.significance_section(), "",
            *self.data_section(), "", *self.convergence_section(), "",
            *self.gkd_section(), "", *self.sizes_section(), "", *self.deploy_section(), "",
            *self.how(), "",
        ]
        return "\n".join(parts)

    def results_table(self) -> str:
        header = ["model", "part", "params",
                  *(f"{t} {d}" for t in self.test_sets for d in ("greedy", f"beam {self.beam}"))]
        body = []
        for model in self.study.models:
            if "-seed" in model.key and model.key != "teacher-seed2":
                continue
            row = self.r.rows[model.key]
            cells = [f"{_num(self.r.score('bleu', model.key, c))} / "
                     f"{_num(self.r.score('chrf', model.key, c))}"
                     for t in self.test_sets for c in (f"{t}.beam1", f"{t}.beam{self.beam}")]
            body.append([self._label(model), self.study.part_of(model.stage),
                         "-" if row["params"] is None else f"{row['params']:,}", *cells])
        return _table(header, body)

    def _label(self, model: ModelSpec) -> str:
        return (f"Teacher ({self.p.teacher.describe()})" if model.key == TEACHER.key
                else model.label)

    def targets(self) -> list[str]:
        columns = [f"{t}.beam{b}" for t in self.test_sets for b in (1, self.beam)]
        means = {m.key: {c: (v[0] if (v := self.mean(m.key, c)) else None) for c in columns}
                 for m in self.study.models}
        seeds = {m.key: len(self.seeds_of(m.key)) for m in self.study.models}
        lines = mono_target_lines(self.p.targets, means, seeds, self.p_value,
                                  self.study.target_rows(), self.test_sets, self.beam,
                                  self.r.deploy, DEPLOY_REFERENCE)
        return lines or [f"Preset `{self.p.name}` sets none (its `targets` field is empty)."]

    def seeds_section(self) -> list[str]:
        keys = [m.key for m in self.study.models if len(self.seeds_of(m.key)) > 1]
        header = ["model", "seeds", *(f"{t} greedy" for t in self.test_sets),
                  f"{self.first} beam {self.beam}"]
        columns = [*(f"{t}.beam1" for t in self.test_sets), f"{self.first}.beam{self.beam}"]
        body = [[self._label(self.study.row(k).model), str(len(self.seeds_of(k))),
                 *(f"{m[0]:.2f} ± {m[1]:.2f}" if (m := self.mean(k, c)) else "-"
                   for c in columns)] for k in keys]
        return [f"## Seeds: mean ± standard deviation over seeds 1, "
                f"{', '.join(map(str, self.p.extra_seeds))}", "",
                _table(header, body) if body else "(no seeded row decoded yet)", "",
                "Each seed retrains the row from scratch with `--seed N` (a GKD row fine-tunes "
                "the same seed's start row). The targets judge these means."]

    def significance_section(self) -> list[str]:
        out = [f"## Paired bootstrap: every row against Seq-KD and the teacher's beam "
               f"{self.beam}", "",
               f"sacrebleu's paired bootstrap resampling ({self.p.bootstrap_samples} resamples, "
               "seed 12345) of each row's greedy output against Seq-KD greedy (the same seed's "
               f"Seq-KD for a seeded row) and against the teacher's beam {self.beam}: the "
               "difference and its p-value, BLEU and chrF."]
        for test_set in self.test_sets:
            body = []
            for model in self.study.models:
                if (model.key, test_set, 1) not in self.r.hypotheses:
                    continue
                row2, teacher = (self.versus(model.key, test_set, a)
                                 for a in ("row2", "teacher"))
                body.append([self._label(model),
                             _num(self.r.score("bleu", model.key, f"{test_set}.beam1")),
                             _delta(row2.get("BLEU")), _delta(teacher.get("BLEU")),
                             _num(self.r.score("chrf", model.key, f"{test_set}.beam1")),
                             _delta(row2.get("chrF2")), _delta(teacher.get("chrF2"))])
            out += ["", f"### {test_set}", "",
                    _table(["model (greedy)", "BLEU", "vs Seq-KD", f"vs teacher beam {self.beam}",
                            "chrF", "vs Seq-KD", f"vs teacher beam {self.beam}"], body)
                    if body else "(nothing decoded yet)"]
        return out

    def data_section(self) -> list[str]:
        p = self.p
        engine = (f"CTranslate2 {p.teacher_quantization}" if p.teacher_engine == "ctranslate2"
                  else "fairseq")
        teachers = {"seq-kd": f"teacher ({engine})", "mono": f"teacher ({engine})",
                    "mono-ensemble": "both teachers (fairseq ensemble)"}
        body = []
        for data, stage in DATA_BUILDS.items():
            sizes = self.r.data.get(data)
            cpu = self.r.stages.get(stage, {}).get("cpu_seconds")
            body.append([data, teachers[data],
                         *(("-", "-") if sizes is None else
                           (f"{sizes['parallel']:,}", f"{sizes['mono']:,}")),
                         "-" if cpu is None else f"{cpu:,.0f}"])
        return ["## Distilled data", "",
                _table(["data", "decoded by", "parallel pairs", "monolingual pairs",
                        "build CPU s"], body), "",
                f"Beam {p.beam}; a target caught in a loop (a phrase more than "
                f"{p.max_repeats} times in a row) falls back to the reference (parallel) or is "
                "dropped (monolingual). The single teacher decodes with the engine named "
                "(CTranslate2 float32 runs fairseq's search and gives its hypotheses); an "
                "ensemble decodes with fairseq."]

    def convergence_section(self) -> list[str]:
        body = []
        for model in self.study.models:
            row = self.r.rows[model.key]
            if model.key == ENSEMBLE.key or not row["curve"]:
                continue
            curve = row["curve"]
            best = min(curve, key=lambda point: point[1])
            fixed = (model in self.study.students
                     and self.study.row(model.key).recipe.budget != "converged")
            stop = {"patience": "patience", "done": "update budget" if fixed else "epoch cap"}
            body.append([self._label(model), "-" if row["updates"] is None
                         else f"{row['updates']:,}", stop.get(row["stop"] or "", "running"),
                         f"{best[1]:.3f} at {best[0]:,}",
                         " ".join(f"{u}:{loss:.2f}" for u, loss in curve)])
        return ["## Convergence: validation loss by update", "",
                _table(["model", "updates", "stopped by", "best", "valid loss (update:loss)"],
                        body) if body else "(no training log yet)", "",
                "fairseq's validation loss (label-smoothed) at each validation, from the stage "
                f"logs. Teachers: every epoch, patience {self.p.patience}; fixed-budget "
                f"students: every {self.p.validate_updates} updates up to "
                f"{self.p.student_updates:,}; GKD rows: every {self.p.gkd_validate_updates} "
                "up to their budget; the converged rows: every epoch, patience "
                f"{self.p.patience}. A curve still falling at its end had not converged."]

    def gkd_section(self) -> list[str]:
        p = self.p
        gkd = [r for r in self.study.rows if r.recipe.budget == "gkd"]
        body = []
        for row in gkd:
            start = self.study.row(row.recipe.start or "")
            cost = [self._per_update(k) for k in (row.model.key, start.model.key)]
            c = self.compare(self.first, start.model.key, 1, (row.model.key,)).get(
                row.model.key, {})
            body.append([row.model.label, start.model.label, f"{row.recipe.beta:g}",
                         *("-" if v is None else f"{v:.2f}" for v in cost),
                         _delta(c.get("BLEU")), _delta(c.get("chrF2"))])
        return ["## On-policy fine-tuning (GKD)", "",
                _table(["model", "starts from", "beta", "CPU s / update",
                        "start's CPU s / update", f"{self.first} greedy BLEU vs start",
                        "chrF vs start"], body) if body else "(none)", "",
                f"`--criterion gkd --gkd-lambda {GKD_LAMBDA} --gkd-beta B --kd-alpha "
                f"{p.kd_alpha}`, the teacher online, fine-tuning the start row on its data for "
                f"{p.gkd_updates:,} updates at lr {p.finetune_lr} with a {p.prune_warmup}-update "
                "warm-up (no patience). CPU s / update: the stage's CPU seconds over its "
                "updates (validations included)."]

    def _per_update(self, key: str) -> float | None:
        cpu = self.r.stages.get(key, {}).get("cpu_seconds")
        updates = self.r.rows.get(key, {}).get("updates")
        return cpu / updates if cpu and updates else None

    def sizes_section(self) -> list[str]:
        by = {(r.label, r.batch): r for r in self.r.deploy}
        body = []
        for model in self.study.size_rows():
            arch = self.study.row(model.key).recipe.arch or self.p.student
            run = {b: by.get((f"{model.key} (CT2 int8)", b)) for b in DEPLOY_BATCHES}
            first = next(iter(run.values()))
            params = self.r.rows[model.key]["params"]
            column = f"{self.first}.beam1"
            body.append([model.label, arch.describe(),
                         "-" if params is None else f"{params:,}",
                         "-" if first is None or first.size_bytes is None
                         else f"{first.size_bytes / 2**20:.2f}",
                         *("-" if r is None else f"{r.tokens_per_second:,.0f}"
                           for r in run.values()),
                         f"{_num(self.r.score('bleu', model.key, column))} / "
                         f"{_num(self.r.score('chrf', model.key, column))}",
                         "-" if first is None or first.bleu is None else f"{first.bleu:.2f}"])
        header = ["model", "layers", "params", "CT2 int8 MiB",
                  *(f"tokens/s batch {b}" for b in DEPLOY_BATCHES),
                  f"{self.first} greedy BLEU / chrF", "CT2 int8 BLEU"]
        return ["## Student sizes", "", _table(header, body), "",
                f"Each trained on the {self.p.size_data} data as its row is; tokens/s: "
                f"CTranslate2 int8, greedy, 1 thread, on {self.first} (the deployment stage)."]

    def deploy_section(self) -> list[str]:
        head = [f"## Deployment on {self.first} (CPU, {self.study.threads} thread(s))", ""]
        if not self.r.deploy:
            return [*head, "(not measured yet)"]
        return [*head, speed_table(self.r.deploy, DEPLOY_REFERENCE), "",
                f"One stage, alone after all training: the teacher with beam {self.beam} "
                "(fairseq, the reference, and CTranslate2 int8, the same engine as the "
                "students), the students greedily, at batch "
                f"{' and '.join(map(str, DEPLOY_BATCHES))}; tokens/s counts output tokens "
                "without `</s>`; speed-up against the teacher's fairseq beam at the same batch."]

    def how(self) -> list[str]:
        p, study = self.p, self.study
        counts = {t: count_lines(study.raw / f"{t}.{SRC}") for t in ("train", *self.test_sets)}
        every = study.stages()
        stages = stages_needed(every, study.only)
        cpu = {part: sum(self.r.stages.get(s.name, {}).get("cpu_seconds", 0.0)
                         for s in every if study.part_of(s.name) == part) for part in PARTS}
        out = [
            "## How it was run", "",
            *([f"- This run: `--only {','.join(study.only)}`, {len(stages)} of the "
               f"{len(every)} stages; rows of other runs come from the archive beside this "
               "page."] if study.only else []),
            f"- Corpus `{study.raw.name}` (`$CORPUS`): {counts['train']:,} training pairs; test "
            "sets " + ", ".join(f"{t} ({counts[t]:,})" for t in self.test_sets)
            + f"; joint sentencepiece BPE, {p.vocab_size} pieces. Monolingual source "
            f"`{study._portable(str(study.mono_source))}`"
            + ("" if p.mono_size is None else f", its first {p.mono_size:,} usable lines") + ".",
            f"- Preset `{p.name}`: teachers {p.teacher.describe()} (at most "
            f"{p.teacher_epochs} epochs, patience {p.patience}), students "
            f"{p.student.describe()} at lr {p.student_lr}, `--max-tokens {p.max_tokens}`.",
            f"- Stages ran up to {study.jobs} at a time, {study.threads} thread(s) each (the "
            "deployment stage alone). CPU seconds by part: "
            + ", ".join(f"{part} {cpu[part]:,.0f}" for part in PARTS) + ".",
            "", "| stage | part | wall s | CPU s |", "|---|---|---:|---:|",
        ]
        out += [f"| {s.name} | {study.part_of(s.name)} | {self.r.stages[s.name]['seconds']:.0f} | "
                f"{self.r.stages[s.name]['cpu_seconds']:.0f} |" for s in every
                if s.name in self.r.stages]
        out += ["", "<details><summary>Every command, in stage order</summary>", "", "```"]
        for stage in stages:
            out.append(f"# {stage.name}: {stage.description}")
            out += [self._command(c) for c in stage.commands]
        return [*out, "```", "</details>"]

    def _command(self, command: Sequence[str]) -> str:
        text = shlex.join([Path(command[0]).name, *command[1:]])
        return self.study._portable(text.replace(self.study.plugin, "fairseq_seqkd"))
