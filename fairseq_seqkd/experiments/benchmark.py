"""``seqkd-benchmark``'s stage list: every row of Kim & Rush (2016) Table 1 on a real corpus,
with pruning, beyond-the-paper divergences and CPU decoding speed.

It is the demo's stage driver
(:class:`~fairseq_seqkd.experiments.pipeline.Pipeline`: stamps, resumption, logs, parallel
stages) with a longer stage list:

* teacher and student on the gold data (``label_smoothed_cross_entropy``);
* the teacher's top-k distributions cached once per training set with ``seqkd-cache-teacher``
  (gold, Seq-KD and Seq-Inter targets), so every word-level row trains at the cost of the
  baseline instead of running the teacher beside each student; Word-KD here is therefore the
  top-k (default 8) truncation of the paper's full-vocabulary Word-KD;
* Seq-KD (teacher beam output) and Seq-Inter (the teacher's n-best hypothesis closest to the
  reference by sentence BLEU) data with ``seqkd-build``;
* the "X + Seq-Inter" rows fine-tune model X on the Seq-Inter data, as the paper does; the
  Word-KD rows keep ``word_kd`` while fine-tuning; the teacher is fine-tuned the same way;
* word-level rows with ``reverse_kl``, ``js`` and ``tvd`` in place of KL;
* the Seq-KD student pruned class-blind at several ratios and retrained on the Seq-KD data;
* on-policy distillation: the Seq-KD student fine-tuned with ``--criterion gkd`` (teacher
  online) for as many updates as Seq-KD + Word-KD trains; and a Seq-KD student trained on the
  Seq-KD data without its worst-scored sentences (``seqkd-build --filter-worst``, from the
  Seq-KD build's n-best);
* each model decoded greedily and with beam search on every test set, then one exclusive
  stage times the teacher and the student architecture, batched and one sentence at a time.

Extra test sets are the corpus directory's ``test_*.{src,tgt}`` pairs (Multi30k: test_2017_flickr,
test_2018_flickr); fairseq-preprocess binarizes them as ``test1``, ``test2``, ...

The rows are named in :mod:`.benchmark_models`, the presets in :mod:`.benchmark_presets`, the
targets in :mod:`.benchmark_targets`; the results page is :mod:`.benchmark_page`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from ..atomic import atomic_write_text
from ..commands import console_script
from ..deploy.speed import DeployPlan, measure_deployment
from ..errors import SeqKDError
from ..stages import Stage
from ..textfiles import count_lines, read_text_lines
from .benchmark_models import (
    DEEP_SHALLOW,
    DEPLOY_BATCHES,
    DEPLOY_CT2,
    DEPLOY_FAIRSEQ,
    DEPLOY_REFERENCE,
    DEPLOY_SAME_ENGINE,
    SEQ_KD,
    START,
    STRONG,
    TABLE1,
    TABLE1_BY_KEY,
    TEACHER,
    averaged_model,
    divergence_model,
    filtered_model,
    gkd_model,
    model_spec,
    pruned_model,
    seed_chain,
    seeded_model,
)
from .benchmark_presets import BENCHMARK_PRESETS, BenchmarkPreset
from .benchmark_targets import BleuTarget
from .demo_models import MAX_LEN_A, MAX_LEN_B, SRC, TGT, ModelSpec
from .pipeline import Pipeline
from .presets import Arch

__all__ = ["BENCHMARK_PRESETS", "PARTS", "TABLE1", "Benchmark", "BenchmarkPreset",
           "extra_test_sets"]

#: the runs the page may come from (``--part``): the paper's table with the convergence,
#: averaging and the pruning rows the targets judge; then the seeds, the stronger source, the
#: other pruning rows, deployment, on-policy and filtered data, and the divergences
PARTS: tuple[str, ...] = ("table1", "extra")


def extra_test_sets(corpus: Path) -> tuple[str, ...]:
    """``test_*`` pairs beside a corpus's train/valid/test, checked for equal line counts."""
    names = []
    for src in sorted(corpus.glob("test_*.src")):
        tgt = src.with_suffix(".tgt")
        if not tgt.is_file():
            raise SeqKDError(f"--corpus: {src} has no {tgt.name} beside it")
        if count_lines(src) != count_lines(tgt):
            raise SeqKDError(f"--corpus: {src} and {tgt} differ in line count")
        names.append(src.stem)
    return tuple(names)


class Benchmark(Pipeline):
    """Table 1, divergences, pruning and speed for one corpus and preset: the stages."""

    preset: BenchmarkPreset

    def __init__(self, out: str | os.PathLike, preset: BenchmarkPreset,
                 corpus: str | os.PathLike, threads: int = 1, jobs: int = 1,
                 part: str | None = None, **kwargs: Any):
        super().__init__(out, preset, corpus=corpus, threads=threads, jobs=jobs, **kwargs)
        self.extra_tests = extra_test_sets(self.raw) if self.raw.is_dir() else ()
        p = preset
        self.divergence_models = tuple(divergence_model(d) for d in p.divergences)
        #: (scheme, ratio) of each pruned row: class-blind at every ratio, the others at one
        self.prunings = (*(("class-blind", r) for r in p.prune_ratios),
                         *((s, p.prune_ratio) for s in p.prune_schemes))
        self.pruned_models = tuple(pruned_model(r, s) for s, r in self.prunings)
        self.gkd_models = tuple(gkd_model(b) for b in p.gkd_betas)
        self.filtered_model = filtered_model(p.filter_worst)
        self.averaged_models = tuple(averaged_model(TABLE1_BY_KEY[k], p.average_last)
                                     for k in p.average_models)
        self.nbest_model = model_spec(f"seq-kd-seq-inter-{p.inter_nbest_large}",
                                      f"Seq-KD + Seq-Inter ({p.inter_nbest_large}-best)")
        self.seed_models = tuple(seeded_model(TABLE1_BY_KEY[k], seed) for seed in p.extra_seeds
                                 for k in self.seed_chain())
        self.models = (*TABLE1, *self.averaged_models, self.nbest_model,
                       *self.divergence_models, *self.pruned_models, DEEP_SHALLOW,
                       *self.gkd_models, self.filtered_model, STRONG, *self.seed_models)
        #: the rows and groups the preset's targets name
        self.judged = frozenset(name for t in p.targets if isinstance(t, BleuTarget)
                                for name in (t.model, t.versus))
        unknown = sorted(self.judged - set(self.target_rows()))
        if unknown:
            raise ValueError(f"preset {p.name}: its targets name {', '.join(unknown)}, "
                             "which are neither rows of the benchmark nor groups")
        # table1 holds Table 1, averaging and the pruned rows the targets judge; the comparisons
        # around them (the 20-best source, the other pruning ratios and schemes) go to extra
        unjudged = (m for m in self.pruned_models if m.key not in self.judged)
        extra = (self.nbest_model, *unjudged, STRONG, *self.seed_models, DEEP_SHALLOW,
                 *self.gkd_models, self.filtered_model, *self.divergence_models)
        self._extra_stages = {f"build-seq-inter-{p.inter_nbest_large}", "build-seq-kd-strong",
                              "build-seq-kd-filtered", "deploy-export", "deploy-speed",
                              *(n for m in extra for n in (m.key, f"eval-{m.key}"))}
        self._select_part(part, PARTS)

    def _select_part(self, part: str | None, parts: tuple[str, ...]) -> None:
        """``--part``: run just the stages of that part (:meth:`part_of`)."""
        if part is None:
            return
        if part not in parts:
            raise SeqKDError(f"--part must be one of {', '.join(parts)}, got {part!r}")
        if self.only:
            raise SeqKDError("--part and --only cannot be combined")
        self.only = tuple(s.name for s in self.stages() if self.part_of(s.name) == part)

    def part_of(self, stage: str) -> str:
        """The run (``--part``) that makes a stage."""
        return PARTS[1] if stage in self._extra_stages else PARTS[0]

    def seed_chain(self) -> list[str]:
        """The seeded rows and the rows they are fine-tuned from, starts first."""
        return seed_chain(self.preset.seed_rows)

    def student_rows(self) -> tuple[ModelSpec, ...]:
        """Every trained student row that competes for "best student" (seeded copies aside):
        pruned rows are measured against their own target."""
        averaged = zip(self.preset.average_models, self.averaged_models, strict=True)
        return (*TABLE1[2:], *(m for key, m in averaged if key != "teacher"), self.nbest_model,
                STRONG, DEEP_SHALLOW, *self.gkd_models, self.filtered_model,
                *self.divergence_models)

    def target_rows(self) -> dict[str, tuple[ModelSpec, ...]]:
        """What each name a target may use stands for: a model key its row; "students" every
        trained student row, "gkd" the on-policy rows (a target takes a group's best row)."""
        return {**{m.key: (m,) for m in self.models}, "students": self.student_rows(),
                "gkd": self.gkd_models}

    def references(self, test_set: str) -> list[str]:
        """A test set's raw references, what BLEU is scored against."""
        return read_text_lines(str(self.raw / f"{test_set}.{TGT}"))

    def _checkpointing(self, save: str) -> list[str]:
        """Epoch checkpoints kept for the averaged models; patience for all but the pruning
        retrains (their validation loss rises while the sparsity does)."""
        p = self.preset
        keep = (["--keep-last-epochs", str(p.average_last)] if save in p.average_models
                else ["--no-epoch-checkpoints"])
        pruning = save in {m.key for m in self.pruned_models}
        return keep + (["--patience", str(p.patience)] if p.patience and not pruning else [])

    # ------------------------------------------------------------------ commands

    def _finetune(self, data: Path, model: ModelSpec, start: ModelSpec, *extra: str,
                  arch: Arch | None = None, seed: int = 1) -> list[str]:
        p = self.preset
        teacher = arch is not None
        return self._train(
            data, model.key, arch or p.student, p.finetune_epochs, p.finetune_lr,
            p.teacher_dropout if teacher else p.student_dropout, *extra,
            "--finetune-from-model", str(self.out / start.checkpoint), warmup=p.prune_warmup,
            seed=seed,
        )

    def _prune_options(self, ratio: float, scheme: str) -> list[str]:
        p = self.preset
        gradual = (["--prune-schedule", "gradual", "--prune-at-update", "0",
                    "--prune-end-update", str(p.prune_end_update),
                    "--prune-interval", str(p.prune_interval)]
                   if p.prune_schedule == "gradual" else [])
        return ["--task", "translation_kd", "--prune-ratio", str(ratio), "--prune-scheme",
                scheme, *gradual]

    def _score_valid(self, model: ModelSpec) -> list[str]:
        """The valid references scored by ``model`` (``--score-reference``): its NLL there,
        comparable across criteria (see :func:`~.measures.reference_nll`)."""
        return [
            console_script("fairseq-generate"), str(self.data),
            *(["--user-dir", self.plugin] if model.plugin else []),
            "--path", str(self.out / model.checkpoint), "--gen-subset", "valid",
            "--score-reference", "--batch-size", str(self.preset.eval_batch_size), "--cpu",
            "--num-workers", "0", "--required-batch-size-multiple", "1",
        ]  # fmt: skip

    def valid_file(self, model: ModelSpec) -> Path:
        return self.out / "valid" / f"{model.key}.txt"

    # ------------------------------------------------------------------ stages

    def stages(self) -> list[Stage]:
        """Preparation, then models in order of importance (the Table-1 students, the pruned
        rows the targets judge, Teacher + Seq-Inter, the averages), each followed by its
        decoding, so that a run cut short still has complete rows; the speed stage, alone;
        then the rows of ``--part extra``."""
        p, out = self.preset, self.out
        by_key = {m.key: m for m in self.models}
        base = {s.name: s for s in super().stages()}
        seqkd_data, inter_data = out / "data-seq-kd", out / "data-seq-inter"
        strong_data = out / "data-seq-kd-strong"
        nbest_data = out / f"data-seq-inter-{p.inter_nbest_large}"
        ls = self._ls()

        def model_stage(model: ModelSpec, description: str, command: list[str],
                        deps: list[str], after: tuple[str, ...] = ()) -> Stage:
            save = out / "models" / model.key
            return Stage(model.key, description, [command], [out / model.checkpoint],
                         deps=deps, after=list(after), clean=[save])

        # key -> (description, data, options, what it needs besides its start model)
        recipes: dict[str, tuple[str, Path, list[str], list[str]]] = {
            "baseline": (f"baseline student, {p.student.describe()}, gold data", self.data, ls,
                         ["preprocess"]),
            "word-kd": (f"Word-KD student (cached top-{p.kd_topk})", self.data,
                        self._cached_word_kd("gold"), ["cache-gold"]),
            "seq-kd": ("Seq-KD student", seqkd_data, ls, ["build-seq-kd"]),
            "seq-kd-word-kd": ("Seq-KD + Word-KD student", seqkd_data,
                               self._cached_word_kd("seq-kd"), ["cache-seq-kd"]),
            "seq-kd-seq-inter": ("Seq-KD student fine-tuned on Seq-Inter", inter_data, ls,
                                 ["build-seq-inter"]),
            "baseline-seq-inter": ("baseline fine-tuned on Seq-Inter", inter_data, ls,
                                   ["build-seq-inter"]),
            "word-kd-seq-inter": ("Word-KD student fine-tuned on Seq-Inter", inter_data,
                                  self._cached_word_kd("seq-inter"), ["cache-seq-inter"]),
            "all-three": ("Seq-KD + Word-KD student fine-tuned on Seq-Inter", inter_data,
                          self._cached_word_kd("seq-inter"), ["cache-seq-inter"]),
        }

        def row(key: str, seed: int = 1) -> Stage:
            """A Table-1 student, with ``seed``; a fine-tuned one starts from its start
            model trained with the same seed."""
            what, data, options, deps = recipes[key]
            model = seeded_model(by_key[key], seed)
            what += "" if seed == 1 else f", seed {seed}"
            if key not in START:
                return model_stage(model, what,
                                   self._student(data, model.key, *options, seed=seed), deps)
            start = seeded_model(by_key[START[key]], seed)
            return model_stage(model, what,
                               self._finetune(data, model, start, *options, seed=seed),
                               [start.stage, *deps])

        stages = [base["sentencepiece"], base["preprocess"], base["teacher"], row("baseline"),
                  base["build-seq-kd"], row("seq-kd"),
                  self._cache_stage("gold", self.data, ["preprocess"]), row("word-kd"),
                  base["build-seq-inter"], row("seq-kd-seq-inter"),
                  self._cache_stage("seq-kd", seqkd_data, ["build-seq-kd"]),
                  row("seq-kd-word-kd"), row("baseline-seq-inter"),
                  self._cache_stage("seq-inter", inter_data, ["build-seq-inter"]),
                  row("word-kd-seq-inter"), row("all-three")]
        pruned = [(model.key in self.judged, model_stage(
            model, f"Seq-KD student pruned {ratio:.0%} {scheme} ({p.prune_schedule}), "
            "retrained at the student's lr",
            self._student(seqkd_data, model.key, *ls, *self._prune_options(ratio, scheme),
                          "--finetune-from-model", str(out / SEQ_KD.checkpoint),
                          epochs=p.prune_epochs),
            ["seq-kd"])) for (scheme, ratio), model in zip(self.prunings, self.pruned_models,
                                                           strict=True)]
        stages += [stage for judged, stage in pruned if judged]
        stages.append(model_stage(
            by_key["teacher-seq-inter"], "teacher fine-tuned on Seq-Inter",
            self._finetune(inter_data, by_key["teacher-seq-inter"], TEACHER, *ls,
                           arch=p.teacher), ["teacher", "build-seq-inter"]))
        stages += [self._average_stage(m, by_key[key])
                   for key, m in zip(p.average_models, self.averaged_models, strict=True)]
        stages.append(self._speed_stage())
        # --part extra, the rows that act on the targets first (the stronger source, the
        # seeds), then the comparisons (the 20-best source, the other pruned rows), then
        # deployment, on-policy and filtered data, and the divergences
        stages += [
            Stage("build-seq-kd-strong", f"Seq-KD data: Teacher + Seq-Inter beam {p.beam} on "
                  "train", [self._build("seq-kd", strong_data,
                                        teacher=by_key["teacher-seq-inter"].checkpoint)],
                  [strong_data / "train.src-tgt.tgt.bin", strong_data / "dict.tgt.txt"],
                  deps=["preprocess", "teacher-seq-inter"], clean=[strong_data]),
            model_stage(STRONG, "student on the Seq-KD data of Teacher + Seq-Inter",
                        self._student(strong_data, STRONG.key, *ls), ["build-seq-kd-strong"]),
        ]
        stages += [row(key, seed) for seed in p.extra_seeds for key in self.seed_chain()]
        stages += [
            Stage(f"build-seq-inter-{p.inter_nbest_large}",
                  f"Seq-Inter data: best of the teacher's {p.inter_nbest_large}-best (beam "
                  f"{p.inter_nbest_large}) by sentence BLEU",
                  [self._build("seq-inter", nbest_data, "--sim", "bleu", beam=p.inter_nbest_large,
                               nbest=p.inter_nbest_large)],
                  [nbest_data / "train.src-tgt.tgt.bin", nbest_data / "dict.tgt.txt"],
                  deps=["preprocess", "teacher"], clean=[nbest_data]),
            model_stage(self.nbest_model, "Seq-KD student fine-tuned on the "
                        f"{p.inter_nbest_large}-best Seq-Inter data",
                        self._finetune(nbest_data, self.nbest_model, SEQ_KD, *ls),
                        ["seq-kd", f"build-seq-inter-{p.inter_nbest_large}"]),
        ]
        stages += [stage for judged, stage in pruned if not judged]
        stages.append(base["deep-shallow"])
        stages += [self._deploy_export_stage(), self._deploy_speed_stage()]
        # beyond the paper, after the speed measurement: the GKD rows take the
        # budget of Seq-KD + Word-KD (same data, epochs, lr and warm-up, hence the same number
        # of updates), starting from the Seq-KD student instead of from scratch
        for beta, model in zip(p.gkd_betas, self.gkd_models, strict=True):
            stages.append(model_stage(
                model, f"Seq-KD student fine-tuned with GKD, beta {beta:g} (teacher online)",
                self._student(seqkd_data, model.key, *self._gkd(beta)), ["seq-kd"],
                ("speed",)))
        filtered_data = out / "data-seq-kd-filtered"
        stages.append(self._filtered_build_stage(filtered_data))
        stages.append(model_stage(
            self.filtered_model, f"student on the Seq-KD data less its worst-scored "
            f"{p.filter_worst:g} %", self._student(filtered_data, self.filtered_model.key, *ls),
            ["build-seq-kd-filtered"], ("speed",)))
        for divergence, model in zip(p.divergences, self.divergence_models, strict=True):
            stages.append(model_stage(  # beyond the paper: after the speed measurement
                model, f"word-level KD with {divergence} (cached top-{p.kd_topk})",
                self._student(self.data, model.key,
                              *self._cached_word_kd("gold", divergence)),
                ["cache-gold"], ("speed",)))
        by_stage = {m.stage: m for m in self.models}
        ordered: list[Stage] = []
        for stage in stages:  # each model's decoding right after it
            ordered.append(stage)
            if stage.name in by_stage:
                ordered.append(self._eval_stage(by_stage[stage.name]))
        return ordered

    def _average_stage(self, averaged: ModelSpec, model: ModelSpec) -> Stage:
        """``model``'s last epoch checkpoints averaged (a stock checkpoint), and the valid
        references scored by the averaged and the best checkpoint."""
        p, target = self.preset, self.out / averaged.checkpoint
        files = [self.valid_file(model), self.valid_file(averaged)]
        return Stage(
            averaged.stage, f"{model.label}: average of the last {p.average_last} epoch "
            "checkpoints; valid scored by it and by checkpoint_best",
            [[console_script("seqkd-export"), "--checkpoint-dir",
              str(self.out / "models" / model.key), "--average-last", str(p.average_last),
              "--output", str(target)],
             self._score_valid(model), self._score_valid(averaged)],
            [target, *files], deps=[model.stage], clean=[target, *files],
            mkdirs=[target.parent, files[0].parent], captures=[None, *files])

    def _filtered_build_stage(self, filtered_data: Path) -> Stage:
        """The Seq-KD data less its worst-scored sentences (dropped, not replaced by the gold
        ones), from the Seq-KD build's n-best."""
        p = self.preset
        return self._rebuild(
            "build-seq-kd-filtered", f"Seq-KD data less the {p.filter_worst:g} % of sentences "
            "with the lowest teacher score (the Seq-KD build's n-best)",
            "seq-kd", filtered_data, "--filter-worst", f"{p.filter_worst:g}", "--fallback", "drop",
        )

    def _eval_stage(self, model: ModelSpec) -> Stage:
        """One model on every test set, greedy and beam K, in one process (beside other
        stages: its speed is not reported; the speed stages measure that alone)."""
        command, files = self._decode_command([model], timed=False)
        return Stage(f"eval-{model.key}", f"decode {', '.join(self.test_sets)}: {model.label}",
                     [command], files, deps=[model.stage], clean=files,
                     mkdirs=[self.out / "eval"])

    def _generate(self, model: ModelSpec, beam: int, batch_size: int) -> list[str]:
        """fairseq-generate on the first test set: the speed stage times it by its own clock."""
        test_set = self.test_sets[0]
        return [
            console_script("fairseq-generate"), str(self.data),
            *(["--user-dir", self.plugin] if model.plugin else []),
            "--path", str(self.out / model.checkpoint), "--gen-subset", self.subset(test_set),
            "--beam", str(beam), "--nbest", "1", "--batch-size", str(batch_size),
            "--max-len-a", str(MAX_LEN_A), "--max-len-b", str(MAX_LEN_B),
            "--remove-bpe", "sentencepiece", "--cpu", "--num-workers", "0",
            # fairseq drops a last batch that is not a multiple of this (8 by default;
            # facebookresearch/fairseq#5036): every test sentence must be translated
            "--required-batch-size-multiple", "1",
        ]  # fmt: skip

    def _deploy_path(self, label: str, suffix: str = "") -> Path:
        """Where ``label`` is exported: its CTranslate2 folder, or with ``suffix=".pt"`` its stock
        checkpoint (appended: "gkd-0.1" and "gkd-0.5" must not both become gkd-0.pt)."""
        name = label.replace(" ", "-").replace("(", "").replace(")", "")
        return self.out / "deploy" / f"{name}{suffix}"

    def deploy_rows(self) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
        """label -> row key of the stock fairseq exports, and label -> (row key,
        quantization) of the CTranslate2 exports, that the deployment stages export and time."""
        return DEPLOY_FAIRSEQ, DEPLOY_CT2

    def _deploy_export_stage(self) -> Stage:
        """Stock fairseq and CTranslate2 exports of the rows of :meth:`deploy_rows`."""
        by_key = {m.key: m for m in self.models}
        fairseq, ct2 = self.deploy_rows()
        commands, outputs = [], []
        for label, key in fairseq.items():
            target = self._deploy_path(label, ".pt")
            commands.append([console_script("seqkd-export"), "--input",
                             str(self.out / by_key[key].checkpoint), "--output", str(target)])
            outputs.append(target)
        for label, (key, quantization) in ct2.items():
            target = self._deploy_path(label)
            commands.append([console_script("seqkd-export"), "--input",
                             str(self.out / by_key[key].checkpoint), "--format", "ctranslate2",
                             "--quantization", quantization, "--spm-model",
                             str(self.spm / "spm.model"), "--output", str(target)])
            outputs.append(target / "seqkd-export.json")
        # the CTranslate2 exports read the sentencepiece model
        deps = sorted({"sentencepiece", *(by_key[k].stage for k in (
            *fairseq.values(), *(k for k, _ in ct2.values())))})
        return Stage("deploy-export", "stock and CTranslate2 exports for the deployment rows",
                     commands, outputs, deps=deps, clean=[self.out / "deploy"],
                     mkdirs=[self.out / "deploy"])

    def deploy_plan(self) -> DeployPlan:
        first = self.test_sets[0]
        fairseq, ct2 = self.deploy_rows()
        return DeployPlan(
            data=str(self.data), subset=self.subset(first),
            fairseq={label: str(self._deploy_path(label, ".pt")) for label in fairseq},
            ct2={label: str(self._deploy_path(label)) for label in ct2},
            source=read_text_lines(str(self.raw / f"{first}.{SRC}")),
            references=self.references(first), reference_label=DEPLOY_REFERENCE,
            same_engine_label=DEPLOY_SAME_ENGINE,
            batches=DEPLOY_BATCHES, beam=self.preset.beam, threads=self.threads,
            fairseq_generate=console_script("fairseq-generate"),
        )

    def deploy_file(self) -> Path:
        """The deploy-speed stage's measurement (:class:`~fairseq_seqkd.deploy.speed.SpeedRow`
        as JSON)."""
        return self.out / "speed" / "deploy.json"

    def _deploy_speed_stage(self) -> Stage:
        result = self.deploy_file()

        def measure(log: TextIO) -> None:
            rows = measure_deployment(self.deploy_plan(), log=lambda m: print(m, file=log))
            atomic_write_text(result, json.dumps(
                [{**asdict(r), "hypotheses": None} for r in rows], indent=1) + "\n")

        plan = asdict(self.deploy_plan())
        key = {k: v for k, v in plan.items() if k not in ("source", "references")}
        return Stage("deploy-speed", f"deployment speed on {self.test_sets[0]}, alone: fairseq "
                     f"and CTranslate2, batch {' and '.join(map(str, DEPLOY_BATCHES))}",
                     [], [result], deps=["deploy-export"], after=["speed"], clean=[result],
                     func=measure, func_key=key, mkdirs=[result.parent], exclusive=True)

    def speed_runs(self) -> list[tuple[ModelSpec, int, int]]:
        """(model, beam, batch size) timed by the speed stage: teacher and student, greedy
        and beam, batched; one sentence at a time, the comparison that matters (teacher beam
        against student greedy). The students share one architecture, so the Seq-KD student
        stands for all of them."""
        p, teacher = self.preset, TEACHER
        batched = [(teacher, p.beam), (teacher, 1), (SEQ_KD, 1), (SEQ_KD, p.beam)]
        return [*((m, beam, p.eval_batch_size) for m, beam in batched),
                (teacher, p.beam, 1), (SEQ_KD, 1, 1)]

    def speed_file(self, model: ModelSpec, beam: int, batch: int) -> Path:
        return self.out / "speed" / f"{model.key}.beam{beam}.batch{batch}.txt"

    def _speed_stage(self) -> Stage:
        runs = self.speed_runs()
        files = [self.speed_file(*run) for run in runs]
        # after the Table-1 rows and the pruning (a run cut short still has its speeds)
        after = [m.stage for m in (*TABLE1, *self.pruned_models)]
        return Stage(
            "speed", f"decoding speed on {self.test_sets[0]}, alone: teacher and student, "
            f"batch {self.preset.eval_batch_size} and 1",
            [self._generate(m, beam, batch_size=batch) for m, beam, batch in runs], files,
            deps=sorted({m.stage for m, _, _ in runs}), after=after, clean=files,
            mkdirs=[self.out / "speed"],
            captures=list(files), exclusive=True,
        )
