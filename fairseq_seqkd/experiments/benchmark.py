"""``seqkd-benchmark``: every row of Kim & Rush (2016) Table 1 on a real corpus, with pruning,
beyond-the-paper divergences and CPU decoding speed, written up as one Markdown page.

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
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from ..atomic import atomic_write_bytes, atomic_write_text
from ..commands import console_script
from ..deploy.speed import (
    DeployPlan,
    SpeedRow,
    deployment_targets,
    measure_deployment,
    speed_table,
)
from ..distill.evaluate import bleu, read_decoding
from ..errors import SeqKDError
from .corpus import CorpusSpec, count_lines
from .decode import decoding_json, read_decoding_run
from .measures import (
    mark_noise,
    matrix_sparsity,
    mean_std,
    pooled_std,
    reference_nll,
    valid_losses,
)
from .pipeline import (
    GKD_LAMBDA,
    MAX_LEN_A,
    MAX_LEN_B,
    MODELS,
    SRC,
    TGT,
    ModelSpec,
    Pipeline,
    Stage,
    stages_needed,
)
from .presets import Arch, Preset
from .report import ModelResult, plot_results

__all__ = ["BENCHMARK_PRESETS", "Benchmark", "BenchmarkPreset"]


@dataclass(frozen=True)
class BenchmarkPreset(Preset):
    """A demo preset plus the benchmark's fine-tuning, cache, pruning and speed settings."""

    finetune_epochs: int = 2
    prune_ratios: tuple[float, ...] = (0.5, 0.8, 0.9)
    divergences: tuple[str, ...] = ("reverse_kl", "js", "tvd")
    gkd_betas: tuple[float, ...] = (0.1, 0.5)
    filter_worst: float = 10.0  # % of the Seq-KD data dropped by teacher score
    # issue 14. Convergence: every model but the pruning retrains stops after this many
    # validations without a better validation loss (fairseq --patience; 0: off), the epochs
    # above being caps; these models keep their last epoch checkpoints and get a row that
    # averages the last ``average_last`` (seqkd-export --average-last), scored on valid
    patience: int = 0
    average_last: int = 5
    average_models: tuple[str, ...] = ("teacher", "baseline", "word-kd", "seq-kd",
                                       "seq-kd-word-kd")
    # seed noise: these rows (and the rows they start from) again with each extra seed
    extra_seeds: tuple[int, ...] = (2, 3)
    seed_rows: tuple[str, ...] = ("baseline", "seq-kd", "all-three")
    # pruning: class-blind at ``prune_ratios`` and the other schemes at ``prune_ratio``, each
    # retrained from the Seq-KD student for ``prune_epochs`` at the student's lr and warm-up;
    # "gradual": Zhu & Gupta's cubic schedule from update 0 to ``prune_end_update``
    prune_schemes: tuple[str, ...] = ("class-uniform", "class-distribution")
    prune_schedule: str = "gradual"
    prune_end_update: int = 2000
    prune_interval: int = 50
    inter_nbest_large: int = 20  # a Seq-Inter build from this n-best (beam n), a row


BENCHMARK_PRESETS: dict[str, BenchmarkPreset] = {
    # every stage kind in seconds on a few hundred generated sentences: proves the wiring (CI)
    "ci": BenchmarkPreset(
        name="ci",
        corpus=CorpusSpec(train=200, valid=40, test=40),
        vocab_size=200,
        teacher=Arch(32, 1, 2, 64),
        student=Arch(16, 1, 2, 32),
        teacher_epochs=2, student_epochs=1, prune_epochs=1, finetune_epochs=1,
        teacher_lr=0.01, student_lr=0.01, prune_lr=0.003, warmup=10,
        max_tokens=1000, eval_batch_size=40, build_batch_size=100, prune_ratios=(0.8, 0.9),
        divergences=("js",), patience=2, average_last=2, average_models=("teacher",),
        extra_seeds=(2,), seed_rows=("seq-kd", "all-three"),
        prune_schemes=("class-distribution",), prune_end_update=2, prune_interval=1,
        inter_nbest_large=8,
    ),
    # Multi30k en-de on 2 CPU cores: teacher ~7M parameters, students ~1.6M (~4x fewer), in two
    # resumable runs with 2 stages at a time (--part table1, then --part extra). Epochs are
    # caps (patience 2 stops a model earlier). CPU seconds measured by the v2 table1 run (its
    # stamps; two stages side by side on the 2 cores, each slower than alone): the teacher
    # 5,565 for 12 epochs with 2 threads (2,837 s wall, alone), a student ~135 an epoch
    # (baseline 726, resumed; Seq-KD 1,347; Word-KD 1,469 for 10), a student fine-tuning epoch
    # ~138, build-seq-kd 657 (beam 5 over 29,000 sentences, 5-best kept), build-seq-inter 12
    # (it reuses that n-best), a teacher cache ~185, decoding the three test sets greedy +
    # beam 5 ~46 a student, 98 the teacher. Estimated from those (the v1 run's, one core each):
    # a teacher fine-tuning epoch ~400, a 20-best build ~2,000, GKD ~2.8 CPU-s an update.
    # --part table1, at the caps: teacher 2,840 s wall alone, then four students 4 x 1,350,
    # builds 670, caches 555, four fine-tunes 4 x 550, teacher + Seq-Inter ~1,600, averaging
    # 5 x ~45, the two pruning retrains the targets judge (class-blind 80 and 90 %)
    # 2 x 1,350, decoding 17 models ~850, speed ~200: ~14,400 CPU-s, ~2 hours of 2 cores
    # after the teacher, ~2 h 50 min and ~20,000 CPU-s in all (start it with --only teacher
    # --threads 2).
    # --part extra: 20-best build ~2,000 + fine-tune 550, class-blind 50 %, class-uniform and
    # class-distribution pruning 3 x 1,350, Seq-KD from Teacher + Seq-Inter 660 + 1,350, seeds
    # 2 x (3 x 1,350 + 550) = 9,200, deep-shallow ~1,500, deployment ~340, GKD beta 0.1 2,720
    # updates x 2.8 = 7,600, filtered ~1,300, decoding 17 models ~800: ~29,000 CPU-s, ~4 hours
    # of 2 cores. Left out to fit, measured in v1 (one seed each): the word-level divergence
    # rows (``divergences``) and GKD at beta 0.5 (``gkd_betas``). Teacher outputs with a
    # phrase more than twice in a row (decoding loops: 675 of v1's 29,000 Seq-KD targets, 274
    # of v2's) fall back to the reference.
    "multi30k": BenchmarkPreset(
        name="multi30k",
        corpus=CorpusSpec(),
        vocab_size=5000,
        teacher=Arch(256, 3, 4, 1024),
        student=Arch(128, 2, 4, 512),
        teacher_epochs=12, student_epochs=10, prune_epochs=10, finetune_epochs=4,
        teacher_lr=0.0015, student_lr=0.002, prune_lr=0.002, finetune_lr=0.0005,
        warmup=400, max_tokens=2048, teacher_dropout=0.2, student_dropout=0.1,
        eval_batch_size=64, build_batch_size=128, divergences=(), gkd_betas=(0.1,),
        patience=2, max_repeats=2,
        # 10 retraining epochs of ~272 updates: sparsity rises to the target over the first
        # ~7.4 epochs, then ~2.6 epochs recover at full sparsity
        prune_end_update=2000, prune_interval=50,
    ),
}


def _model(key: str, label: str, stage: str | None = None,
           checkpoint: str = "checkpoint_best.pt") -> ModelSpec:
    return ModelSpec(key, label, stage or key, f"models/{key}/{checkpoint}")


#: The paper's Table 1, in its order (teachers first).
TABLE1: tuple[ModelSpec, ...] = (
    MODELS[0],
    _model("teacher-seq-inter", "Teacher + Seq-Inter"),
    MODELS[1],
    MODELS[2],
    MODELS[3],
    _model("baseline-seq-inter", "Baseline + Seq-Inter"),
    _model("word-kd-seq-inter", "Word-KD + Seq-Inter"),
    _model("seq-kd-seq-inter", "Seq-KD + Seq-Inter"),
    MODELS[5],
    _model("all-three", "Seq-KD + Seq-Inter + Word-KD"),
)
_TABLE1_BY_KEY: dict[str, ModelSpec] = {m.key: m for m in TABLE1}
#: issue 14's pruning targets: class-blind ratio -> the most BLEU it may lose to its unpruned
#: student (greedy, first test set)
PRUNING_TARGETS: dict[float, float] = {0.8: 0.5, 0.9: 1.5}
_SEQ_KD = MODELS[3]
_DEEP_SHALLOW = MODELS[6]
#: the model each fine-tuned Table-1 student starts from
_START: dict[str, str] = {"baseline-seq-inter": "baseline", "word-kd-seq-inter": "word-kd",
                          "seq-kd-seq-inter": "seq-kd", "all-three": "seq-kd-word-kd"}
_STRONG = _model("seq-kd-strong", "Seq-KD, data from Teacher + Seq-Inter")
#: the runs the page may come from (``--part``): the paper's table with the convergence,
#: averaging, n-best and pruning rows; then the seeds, the stronger source and the rows of
#: issues 11 and 13
PARTS: tuple[str, ...] = ("table1", "extra")
#: The deployment rows (issue 11): label -> (trained model, quantization); fairseq rows decode
#: the stock exports (``seqkd-export``), CTranslate2 rows the ``--format ctranslate2`` ones.
DEPLOY_FAIRSEQ: dict[str, str] = {"teacher": "teacher", "student": "seq-kd",
                                  "deep-shallow": "deep-shallow"}
DEPLOY_CT2: dict[str, tuple[str, str]] = {
    "teacher (CT2 int8)": ("teacher", "int8"),
    "student (CT2 float32)": ("seq-kd", "float32"),
    "student (CT2 int8)": ("seq-kd", "int8"),
    "deep-shallow (CT2 int8)": ("deep-shallow", "int8"),
}
DEPLOY_BATCHES: tuple[int, ...] = (1, 64)


def _divergence_model(divergence: str) -> ModelSpec:
    return _model(f"word-kd-{divergence}", f"Word-KD, {divergence}")


def _pruned_model(ratio: float, scheme: str = "class-blind") -> ModelSpec:
    """The retraining's last checkpoint: under the gradual schedule checkpoint_best is an
    early epoch's, chosen before the sparsity reached ``ratio`` (validation loss rises with
    it), while the last one is at ``ratio`` after the schedule's end."""
    key, label = f"pruned-{round(100 * ratio)}", f"Seq-KD, pruned {ratio:.0%}"
    if scheme != "class-blind":
        key, label = f"{key}-{scheme}", f"{label} {scheme}"
    return _model(key, label, checkpoint="checkpoint_last.pt")


def _judged(scheme: str, ratio: float) -> bool:
    """Whether a pruned row is one that issue 14's targets judge."""
    return scheme == "class-blind" and ratio in PRUNING_TARGETS


def _seeded(model: ModelSpec, seed: int) -> ModelSpec:
    return model if seed == 1 else _model(f"{model.key}-seed{seed}", f"{model.label}, seed {seed}")


def _averaged(model: ModelSpec, last: int) -> ModelSpec:
    """``model``'s last ``last`` epoch checkpoints averaged: a stock checkpoint (seqkd-export)."""
    return ModelSpec(f"{model.key}-avg{last}", f"{model.label}, average of last {last}",
                     f"avg-{model.key}", f"models-avg/{model.key}.pt", plugin=False)


def _gkd_model(beta: float) -> ModelSpec:
    return _model(f"seq-kd-gkd-{beta:g}", f"Seq-KD + GKD (beta {beta:g})")


def _filtered_model(percent: float) -> ModelSpec:
    return _model("seq-kd-filtered", f"Seq-KD, filtered {percent:g} %")


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
    """Table 1, divergences, pruning and speed for one corpus and preset."""

    preset: BenchmarkPreset

    def __init__(self, out: str | os.PathLike, preset: BenchmarkPreset,
                 corpus: str | os.PathLike, threads: int = 1, jobs: int = 1,
                 part: str | None = None, **kwargs: Any):
        super().__init__(out, preset, corpus=corpus, threads=threads, jobs=jobs, **kwargs)
        self.extra_tests = extra_test_sets(self.raw) if self.raw.is_dir() else ()
        p = preset
        table1 = _TABLE1_BY_KEY
        self.divergence_models = tuple(_divergence_model(d) for d in p.divergences)
        #: (scheme, ratio) of each pruned row: class-blind at every ratio, the others at one
        self.prunings = (*(("class-blind", r) for r in p.prune_ratios),
                         *((s, p.prune_ratio) for s in p.prune_schemes))
        self.pruned_models = tuple(_pruned_model(r, s) for s, r in self.prunings)
        self.gkd_models = tuple(_gkd_model(b) for b in p.gkd_betas)
        self.filtered_model = _filtered_model(p.filter_worst)
        self.averaged_models = tuple(_averaged(table1[k], p.average_last)
                                     for k in p.average_models)
        self.nbest_model = _model(f"seq-kd-seq-inter-{p.inter_nbest_large}",
                                  f"Seq-KD + Seq-Inter ({p.inter_nbest_large}-best)")
        self.seed_models = tuple(_seeded(table1[k], seed) for seed in p.extra_seeds
                                 for k in self._seed_chain())
        self.models = (*TABLE1, *self.averaged_models, self.nbest_model,
                       *self.divergence_models, *self.pruned_models, _DEEP_SHALLOW,
                       *self.gkd_models, self.filtered_model, _STRONG, *self.seed_models)
        # table1 holds Table 1, averaging and the pruned rows the targets judge; the comparisons
        # around them (the 20-best source, the other pruning ratios and schemes) go to extra
        unjudged = (m for pruning, m in zip(self.prunings, self.pruned_models, strict=True)
                    if not _judged(*pruning))
        extra = (self.nbest_model, *unjudged, _STRONG, *self.seed_models, _DEEP_SHALLOW,
                 *self.gkd_models, self.filtered_model, *self.divergence_models)
        self._extra_stages = {f"build-seq-inter-{p.inter_nbest_large}", "build-seq-kd-strong",
                              "build-seq-kd-filtered", "deploy-export", "deploy-speed",
                              *(n for m in extra for n in (m.key, f"eval-{m.key}"))}
        if part is not None:
            if part not in PARTS:
                raise SeqKDError(f"--part must be one of {', '.join(PARTS)}, got {part!r}")
            if self.only:
                raise SeqKDError("--part and --only cannot be combined")
            self.only = tuple(s.name for s in self.stages() if self.part_of(s.name) == part)

    def part_of(self, stage: str) -> str:
        """The run (``--part``) that makes a stage."""
        return PARTS[1] if stage in self._extra_stages else PARTS[0]

    def _seed_chain(self) -> list[str]:
        """The seeded rows and the rows they are fine-tuned from, starts first."""
        chain: list[str] = []
        for key in self.preset.seed_rows:
            todo = []
            while key is not None:
                todo.append(key)
                key = _START.get(key)
            chain += [k for k in reversed(todo) if k not in chain]
        return chain

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
            model = _seeded(by_key[key], seed)
            what += "" if seed == 1 else f", seed {seed}"
            if key not in _START:
                return model_stage(model, what,
                                   self._student(data, model.key, *options, seed=seed), deps)
            start = _seeded(by_key[_START[key]], seed)
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
        pruned = [(_judged(scheme, ratio), model_stage(
            model, f"Seq-KD student pruned {ratio:.0%} {scheme} ({p.prune_schedule}), "
            "retrained at the student's lr",
            self._student(seqkd_data, model.key, *ls, *self._prune_options(ratio, scheme),
                          "--finetune-from-model", str(out / _SEQ_KD.checkpoint),
                          epochs=p.prune_epochs),
            ["seq-kd"])) for (scheme, ratio), model in zip(self.prunings, self.pruned_models,
                                                           strict=True)]
        stages += [stage for judged, stage in pruned if judged]
        stages.append(model_stage(
            by_key["teacher-seq-inter"], "teacher fine-tuned on Seq-Inter",
            self._finetune(inter_data, by_key["teacher-seq-inter"], MODELS[0], *ls,
                           arch=p.teacher), ["teacher", "build-seq-inter"]))
        stages += [self._average_stage(m, by_key[key])
                   for key, m in zip(p.average_models, self.averaged_models, strict=True)]
        stages.append(self._speed_stage())
        # --part extra, the rows that act on the targets first (the stronger source, the
        # seeds), then the comparisons (the 20-best source, the other pruned rows), then
        # the rows of issues 11 and 13
        stages += [
            Stage("build-seq-kd-strong", f"Seq-KD data: Teacher + Seq-Inter beam {p.beam} on "
                  "train", [self._build("seq-kd", strong_data,
                                        teacher=by_key["teacher-seq-inter"].checkpoint)],
                  [strong_data / "train.src-tgt.tgt.bin", strong_data / "dict.tgt.txt"],
                  deps=["preprocess", "teacher-seq-inter"], clean=[strong_data]),
            model_stage(_STRONG, "student on the Seq-KD data of Teacher + Seq-Inter",
                        self._student(strong_data, _STRONG.key, *ls), ["build-seq-kd-strong"]),
        ]
        stages += [row(key, seed) for seed in p.extra_seeds for key in self._seed_chain()]
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
                        self._finetune(nbest_data, self.nbest_model, _SEQ_KD, *ls),
                        ["seq-kd", f"build-seq-inter-{p.inter_nbest_large}"]),
        ]
        stages += [stage for judged, stage in pruned if not judged]
        stages.append(base["deep-shallow"])
        stages += [self._deploy_export_stage(), self._deploy_speed_stage()]
        # beyond the paper (issue 13), after the speed measurement: the GKD rows take the
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

    def _deploy_dir(self, label: str) -> Path:
        return self.out / "deploy" / label.replace(" ", "-").replace("(", "").replace(")", "")

    def _deploy_export_stage(self) -> Stage:
        """Stock fairseq and CTranslate2 exports of the teacher and the Seq-KD students."""
        by_key = {m.key: m for m in self.models}
        commands, outputs = [], []
        for label, key in DEPLOY_FAIRSEQ.items():
            target = self._deploy_dir(label).with_suffix(".pt")
            commands.append([console_script("seqkd-export"), "--input",
                             str(self.out / by_key[key].checkpoint), "--output", str(target)])
            outputs.append(target)
        for label, (key, quantization) in DEPLOY_CT2.items():
            target = self._deploy_dir(label)
            commands.append([console_script("seqkd-export"), "--input",
                             str(self.out / by_key[key].checkpoint), "--format", "ctranslate2",
                             "--quantization", quantization, "--spm-model",
                             str(self.spm / "spm.model"), "--output", str(target)])
            outputs.append(target / "seqkd-export.json")
        deps = sorted({by_key[k].stage for k in (*DEPLOY_FAIRSEQ.values(),
                                                 *(k for k, _ in DEPLOY_CT2.values()))})
        return Stage("deploy-export", "stock and CTranslate2 exports for the deployment rows",
                     commands, outputs, deps=deps, clean=[self.out / "deploy"],
                     mkdirs=[self.out / "deploy"])

    def deploy_plan(self) -> DeployPlan:
        first = self.test_sets[0]
        return DeployPlan(
            data=str(self.data), subset=self.subset(first),
            fairseq={label: str(self._deploy_dir(label).with_suffix(".pt"))
                     for label in DEPLOY_FAIRSEQ},
            ct2={label: str(self._deploy_dir(label)) for label in DEPLOY_CT2},
            source=self._lines(self.raw / f"{first}.{SRC}"), references=self._references(first),
            reference_label="teacher", same_engine_label="teacher (CT2 int8)",
            batches=DEPLOY_BATCHES, beam=self.preset.beam, threads=self.threads,
            fairseq_generate=console_script("fairseq-generate"),
        )

    def _deploy_speed_stage(self) -> Stage:
        result = self.out / "speed" / "deploy.json"

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

    def deploy_rows(self) -> list[SpeedRow]:
        path = self.out / "speed" / "deploy.json"
        if not path.exists():
            return []
        return [SpeedRow(**row) for row in json.loads(path.read_text(encoding="utf-8"))]

    def speed_runs(self) -> list[tuple[ModelSpec, int, int]]:
        """(model, beam, batch size) timed by the speed stage: teacher and student, greedy
        and beam, batched; one sentence at a time, the comparison that matters (teacher beam
        against student greedy). The students share one architecture, so the Seq-KD student
        stands for all of them."""
        p, teacher = self.preset, MODELS[0]
        batched = [(teacher, p.beam), (teacher, 1), (_SEQ_KD, 1), (_SEQ_KD, p.beam)]
        return [*((m, beam, p.eval_batch_size) for m, beam in batched),
                (teacher, p.beam, 1), (_SEQ_KD, 1, 1)]

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

    # ------------------------------------------------------------------ results

    def _references(self, test_set: str) -> list[str]:
        return self._lines(self.raw / f"{test_set}.{TGT}")

    @staticmethod
    def _lines(path: Path) -> list[str]:
        lines = path.read_text(encoding="utf-8").split("\n")
        return lines[:-1] if lines and lines[-1] == "" else lines

    def scores(self) -> tuple[dict[str, dict[str, Any]], str]:
        """Per model key: parameters and, per test set and beam, BLEU (``None`` where that
        model or decoding is not done yet); also sacrebleu's signature."""
        from ..checkpoints import parameter_counts
        from ..teacher import load_checkpoint_state

        refs = {t: self._references(t) for t in self.test_sets}
        beam, signature = self.preset.beam, ""
        table: dict[str, dict[str, Any]] = {}
        for model in self.models:
            entry: dict[str, Any] = {"params": None, "nonzero": None}
            checkpoint = self.out / model.checkpoint
            if checkpoint.exists():
                state = load_checkpoint_state(str(checkpoint), "--path")
                entry["params"], entry["nonzero"] = parameter_counts(state["model"])
                if model in self.pruned_models:
                    entry["sparsity"] = matrix_sparsity(state["model"])
            hyps = {}
            for test_set in self.test_sets:
                for b in (1, beam):
                    subset, score = self.subset(test_set), None
                    if decoding_json(self.out / "eval", model.key).exists():
                        hyps[test_set, b] = read_decoding_run(self.out / "eval", model.key,
                                                              subset, b).hypotheses
                        score, signature = bleu(hyps[test_set, b], refs[test_set])
                    entry[f"{test_set}.beam{b}"] = score
            first = self.test_sets[0]
            if (first, 1) in hyps and (first, beam) in hyps:
                greedy, beamed = hyps[first, 1], hyps[first, beam]
                entry["same"] = sum(g == b for g, b in zip(greedy, beamed)) / max(len(greedy), 1)
            else:
                entry["same"] = None
            table[model.key] = entry
        return table, signature

    def speeds(self) -> list[dict[str, Any]]:
        rows = []
        for model, beam, batch in self.speed_runs():
            path = self.speed_file(model, beam, batch)
            if not path.exists():
                continue
            run = read_decoding(path)
            rows.append({"model": model.key, "beam": beam, "batch": batch,
                         "sentences": run.sentences, "tokens": run.tokens,
                         "seconds": run.seconds, "tok_s": run.tokens_per_second,
                         "sent_s": run.sentences_per_second})
        return rows

    def report(self, doc: str | os.PathLike | None = None,
               analysis: str | os.PathLike | None = None) -> tuple[str, list[ModelResult]]:
        """Write results.md, .json and .png in the output directory (and the page and plot to
        ``doc`` when given) from whatever is done; return the terminal table. ``analysis``: a
        Markdown file of reasons for the results, written by a person, put after the targets."""
        scores, signature = self.scores()
        speeds = self.speeds()
        reasons = ""
        if analysis is not None:
            try:
                reasons = Path(analysis).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SeqKDError(f"--analysis: cannot read {analysis} ({exc.strerror})") from exc
        page, rows = self._page(scores, speeds, signature, "results.png", reasons)
        plot_results(rows, self.out / "results.png", beam=self.preset.beam,
                     title=f"seqkd-benchmark ({self.raw.name}): test BLEU against decoding speed")
        atomic_write_text(self.out / "results.md", page)
        payload = {"preset": asdict(self.preset), "signature": signature, "scores": scores,
                   "speeds": speeds, "stages": [asdict(r) for r in self.runs]}
        atomic_write_text(self.out / "results.json",
                          json.dumps(payload, indent=1, default=str) + "\n")
        if doc is not None:
            doc = Path(doc)
            doc.parent.mkdir(parents=True, exist_ok=True)
            plot = doc.with_suffix(".png")
            atomic_write_bytes(plot, (self.out / "results.png").read_bytes())
            atomic_write_text(doc, self._page(scores, speeds, signature, plot.name, reasons)[0])
            logs = doc.with_name(f"{doc.stem}-logs")
            logs.mkdir(exist_ok=True)
            for log in sorted((self.out / "logs").glob("*.log")):
                atomic_write_text(logs / log.name, self._portable(log.read_text("utf-8")))
            atomic_write_text(logs / "results.json",
                              json.dumps(self._portable(payload), indent=1, default=str) + "\n")
        return self._table1(scores), rows

    # ------------------------------------------------------------------ the page

    def _doc_command(self, command: list[str]) -> str:
        """A command as a user would type it from the repository root."""
        text = shlex.join([Path(command[0]).name, *command[1:]])
        return self._portable(text.replace(self.plugin, "fairseq_seqkd"))

    def _table1(self, scores: dict[str, dict[str, Any]]) -> str:
        return self._bleu_table(scores, TABLE1, MODELS[1], "baseline", self._seed_noise(scores))

    def _bleu_table(self, scores: dict[str, dict[str, Any]], models: tuple[ModelSpec, ...],
                    reference: ModelSpec, versus: str, noise: float | None = None) -> str:
        """One row per model: parameters, BLEU on every test set, greedy minus ``reference``'s
        greedy on the first test set (column "greedy vs ``versus``", marked when smaller than
        two standard deviations ``noise`` of the seeds)."""
        beam, first = self.preset.beam, self.test_sets[0]
        base = scores[reference.key][f"{first}.beam1"]
        header = ["model", "params", f"{first} greedy", f"{first} beam {beam}",
                  f"greedy vs {versus}", "greedy = beam",
                  *(f"{t} greedy / beam {beam}" for t in self.extra_tests)]
        body = []
        for model in models:
            s = scores[model.key]
            g = s[f"{first}.beam1"]
            delta = ("" if g is None or base is None or model.key == reference.key
                     else mark_noise(f"{g - base:+.2f}", g - base, noise))
            body.append([self._label(model), _count(s["params"]), _num(g),
                         _num(s[f"{first}.beam{beam}"]), delta, _pct(s["same"]),
                         *(f"{_num(s[f'{t}.beam1'])} / {_num(s[f'{t}.beam{beam}'])}"
                           for t in self.extra_tests)])
        return _markdown_table(header, body)

    def _label(self, model: ModelSpec) -> str:
        p = self.preset
        if model.key == "teacher":
            return f"Teacher ({p.teacher.describe()})"
        if model.key == "baseline":
            return f"Student ({p.student.describe()}), baseline"
        return model.label

    def _page(self, scores: dict[str, dict[str, Any]], speeds: list[dict[str, Any]],
              signature: str, plot_name: str, reasons: str = "") -> tuple[str, list[ModelResult]]:
        p, first, beam = self.preset, self.test_sets[0], self.preset.beam
        tok_s = {(r["model"], r["beam"], r["batch"]): r["tok_s"] for r in speeds}
        rows = []  # for the plot: Table-1 models at their architecture's batched speed
        for model in TABLE1:
            s = scores[model.key]
            arch = "teacher" if model.key.startswith("teacher") else _SEQ_KD.key
            if s[f"{first}.beam1"] is None:
                continue
            rows.append(ModelResult(
                self._label(model), s["params"] or 0, s["nonzero"] or 0, s[f"{first}.beam1"],
                s[f"{first}.beam{beam}"] if s[f"{first}.beam{beam}"] is not None else math.nan,
                tok_s.get((arch, 1, p.eval_batch_size), math.nan),
                tok_s.get((arch, beam, p.eval_batch_size), math.nan)))
        parts = [
            f"# Sequence-level knowledge distillation on {self.raw.name}", "",
            "Kim & Rush (2016), reproduced with fairseq-seqkd on 2 CPU cores. Every number "
            f"below comes from the run whose logs are beside this page; BLEU is sacrebleu "
            f"`{signature}` against the raw references.", "",
            f"## Table 1 (BLEU on {', '.join(self.test_sets)})", "",
            self._run_line(*(m.stage for m in TABLE1)), "", self._table1(scores), "",
            f"*greedy = beam*: share of {first} sentences whose greedy output equals the beam-"
            f"{beam} output. *greedy vs baseline*: greedy BLEU minus the baseline student's. "
            "Word-KD rows use the teacher's top-"
            f"{p.kd_topk} distribution per position (from `seqkd-cache-teacher`), not the full "
            "vocabulary. \"X + Seq-Inter\": model X fine-tuned on the Seq-Inter data.", "",
            *self._findings(scores, speeds), "",
            *([reasons, ""] if reasons else []),
            f"![test BLEU against decoding speed]({plot_name})", "",
            *self._v2_targets(scores), "",
            *self._seeds_section(scores), "",
            *self._averaging_section(scores), "",
            *self._source_section(scores), "",
            *self._pruning_section(scores), "",
            "## Word-level divergences (beyond the paper)", "",
            self._divergence_table(scores) if p.divergences else
            f"Not in preset `{p.name}` (its `divergences` field is empty).", "",
            *self._onpolicy_section(scores), "",
            f"## Decoding speed on {first} (CPU, fairseq-generate, {self.threads} thread(s))", "",
            self._speed_table(speeds), "",
            "Measured by one stage that runs alone after all training, with fairseq's own "
            "timing (`Translated N sentences (M tokens) in Xs`: generation only, no start-up). "
            "All students share one architecture, so the Seq-KD student's speed stands for "
            "every student row; speed-up is against the teacher with beam "
            f"{beam} at the same batch size.", "",
            *self._deploy_section(), "",
            *self._how(), "",
        ]
        return "\n".join(parts), rows

    def _deploy_section(self) -> list[str]:
        rows = self.deploy_rows()
        beam = self.preset.beam
        out = [f"## Deployment: CTranslate2 on {self.test_sets[0]} (CPU, {self.threads} "
               "thread(s))", ""]
        if not rows:
            return [*out, "(not measured yet)"]
        deployed = [label for label in DEPLOY_CT2 if not label.startswith("teacher")]
        twins = {label: label.split(" (")[0] for label in DEPLOY_CT2}
        out += [
            speed_table(rows, "teacher"), "",
            f"One stage, alone after all training, decodes every row at batch "
            f"{' and '.join(map(str, DEPLOY_BATCHES))}: the teachers with beam {beam}, the "
            "students greedily. fairseq rows are stock exports (`seqkd-export`) timed by "
            "fairseq-generate's own clock; CTranslate2 rows are `seqkd-export --format "
            "ctranslate2` directories timed inside `translate_batch` "
            "(`fairseq_seqkd.deploy.speed`). tokens/s counts output tokens without `</s>` in "
            "both engines; speed-up is against the teacher's fairseq beam "
            f"{beam} at the same batch size; BLEU as above; size on disk is the exported "
            "checkpoint or CTranslate2 directory.", "",
            "Targets (issue 11):", "",
            *(t.line() for t in deployment_targets(rows, "teacher", "teacher (CT2 int8)",
                                                   deployed, twins)),
        ]
        return out

    def _onpolicy_section(self, scores: dict[str, dict[str, Any]]) -> list[str]:
        p, first = self.preset, self.test_sets[0]
        word_kd = MODELS[5]
        models = (_SEQ_KD, word_kd, *self.gkd_models, self.filtered_model)
        g = {m.key: scores[m.key][f"{first}.beam1"] for m in models}
        done = [m for m in self.gkd_models if g[m.key] is not None]
        text = f"a GKD row at least 0.5 BLEU above {word_kd.label}, greedy on {first}"
        ok = None
        if done and g[word_kd.key] is not None:
            best = max(done, key=lambda m: g[m.key])
            delta = g[best.key] - g[word_kd.key]
            ok = delta >= 0.5
            text += f" ({best.label} {g[best.key]:.2f} vs {g[word_kd.key]:.2f}, {delta:+.2f})"
        return [
            "## On-policy distillation and score-filtered data (beyond the paper)", "",
            self._bleu_table(scores, models, word_kd, word_kd.label, self._seed_noise(scores)),
            "",
            f"GKD rows: the Seq-KD student fine-tuned with `--criterion gkd --gkd-lambda "
            f"{GKD_LAMBDA} --gkd-beta B --kd-alpha {p.kd_alpha}` (Agarwal et al. 2024: on a "
            "fraction lambda of the updates the student samples its own targets and the teacher "
            "scores every token with JSD(beta); the teacher runs online over the full "
            f"vocabulary) on the Seq-KD data, with the budget of {word_kd.label}: "
            f"{p.student_epochs} epochs at lr {p.student_lr}, warm-up {p.warmup}, the same "
            "data and batches, hence the same number of updates. That row trains from "
            "scratch, so the GKD rows also have the Seq-KD student's training behind them. "
            f"{self.filtered_model.label}: a student trained as Seq-KD on the Seq-KD data "
            f"without the {p.filter_worst:g} % of sentences whose teacher output has the lowest "
            f"length-normalised score (`seqkd-build --filter-worst {p.filter_worst:g} "
            "--fallback drop`, from the Seq-KD build's n-best), so its epochs are that much "
            "shorter.", "",
            "Targets (issue 13):", "",
            _target(text, ok),
        ]

    def _findings(self, scores: dict[str, dict[str, Any]],
                  speeds: list[dict[str, Any]]) -> list[str]:
        p, first, beam = self.preset, self.test_sets[0], self.preset.beam
        g = {k: v[f"{first}.beam1"] for k, v in scores.items()}
        b = {k: v[f"{first}.beam{beam}"] for k, v in scores.items()}
        out = ["## Targets (issue 6) against this run", ""]

        def line(text: str, ok: bool | None) -> None:
            out.append(_target(text, ok))

        students = [m.key for m in TABLE1[2:]]
        done = [k for k in students if g[k] is not None]
        if done and b["teacher"] is not None:
            best = max(done, key=lambda k: g[k])
            gap = b["teacher"] - g[best]
            line(f"best student greedy within 0.5 BLEU of the teacher with beam {beam} "
                 f"({_label_of(best)} {g[best]:.2f} vs {b['teacher']:.2f}, {-gap:+.2f})",
                 gap <= 0.5)
        else:
            line(f"best student greedy within 0.5 BLEU of the teacher with beam {beam}", None)
        ok = None
        text = "Seq-KD student greedy at least 2 BLEU above the baseline student greedy"
        if g["seq-kd"] is not None and g["baseline"] is not None:
            delta = g["seq-kd"] - g["baseline"]
            ok = delta >= 2
            text += f" ({g['seq-kd']:.2f} vs {g['baseline']:.2f}, {delta:+.2f})"
        line(text, ok)
        ok, text = None, "Seq-KD greedy-vs-beam gap at most 0.3 BLEU"
        if g["seq-kd"] is not None and b["seq-kd"] is not None:
            gap = b["seq-kd"] - g["seq-kd"]
            ok = gap <= 0.3
            base_gap = (f"; baseline {b['baseline'] - g['baseline']:+.2f}"
                        if g["baseline"] is not None and b["baseline"] is not None else "")
            text += f" (beam minus greedy {gap:+.2f}{base_gap})"
        line(text, ok)
        ok, text = None, "80% pruned within 0.3 BLEU of unpruned (greedy)"
        if "pruned-80" in g and g["pruned-80"] is not None and g["seq-kd"] is not None:
            ok = g["seq-kd"] - g["pruned-80"] <= 0.3
            text += f" ({g['pruned-80']:.2f} vs {g['seq-kd']:.2f})"
        line(text, ok)
        ok, text = None, f"student greedy at least 13x the teacher's beam-{beam} tokens/s"
        by = {(r["model"], r["beam"], r["batch"]): r["tok_s"] for r in speeds}
        ratios = []
        for batch in (p.eval_batch_size, 1):
            t, s = by.get(("teacher", beam, batch)), by.get((_SEQ_KD.key, 1, batch))
            if t and s:
                ratios.append(f"{s / t:.1f}x at batch {batch}")
                ok = (ok is not False) and s / t >= 13
        if ratios:
            text += f" ({', '.join(ratios)})"
        line(text, ok)
        return out

    def _divergence_table(self, scores: dict[str, dict[str, Any]]) -> str:
        first, beam = self.test_sets[0], self.preset.beam
        header = ["word-level divergence", f"{first} greedy", f"{first} beam {beam}",
                  *(f"{t} greedy" for t in self.extra_tests)]
        models = [(MODELS[2], "kl (Word-KD above)"),
                  *((m, m.key.removeprefix("word-kd-")) for m in self.divergence_models)]
        body = [[name, _num(scores[m.key][f"{first}.beam1"]),
                 _num(scores[m.key][f"{first}.beam{beam}"]),
                 *(_num(scores[m.key][f"{t}.beam1"]) for t in self.extra_tests)]
                for m, name in models]
        return _markdown_table(header, body)

    def _valid_curve(self, model: ModelSpec) -> list[float] | None:
        """fairseq-train's validation loss after each epoch, from ``model``'s stage log (None
        before the stage ran)."""
        log = self.out / "logs" / f"{model.stage}.log"
        return valid_losses(log.read_text(encoding="utf-8")) if log.exists() else None

    def _run_line(self, *stages: str) -> str:
        parts = sorted({self.part_of(name) for name in stages}, key=PARTS.index)
        return f"*Run: {' and '.join(f'`--part {part}`' for part in parts)}.*"

    def _student_rows(self) -> tuple[ModelSpec, ...]:
        """Every trained student row that competes for "best student" (seeded copies aside):
        pruned rows are measured against their own target."""
        averaged = zip(self.preset.average_models, self.averaged_models, strict=True)
        return (*TABLE1[2:], *(m for key, m in averaged if key != "teacher"), self.nbest_model,
                _STRONG, _DEEP_SHALLOW, *self.gkd_models, self.filtered_model,
                *self.divergence_models)

    def _versus(self, scores: dict[str, dict[str, Any]], a: str, b: str, beam_a: int = 1,
                beam_b: int = 1) -> list[float] | None:
        """``a`` (beam ``beam_a``) minus ``b`` (beam ``beam_b``) on every test set, first
        test set first; None when one is not measured."""
        out = []
        for t in self.test_sets:
            x, y = scores[a][f"{t}.beam{beam_a}"], scores[b][f"{t}.beam{beam_b}"]
            if x is None or y is None:
                return None
            out.append(x - y)
        return out

    def _on_tests(self, deltas: list[float]) -> str:
        rest = ", ".join(f"{t} {d:+.2f}" for t, d in zip(self.test_sets[1:], deltas[1:],
                                                          strict=True))
        return f"{deltas[0]:+.2f}" + (f"; {rest}" if rest else "")

    def _v2_targets(self, scores: dict[str, dict[str, Any]]) -> list[str]:
        p, first, beam = self.preset, self.test_sets[0], self.preset.beam
        out = ["## Targets (issue 14) against this run", ""]
        done = [m for m in self._student_rows() if scores[m.key][f"{first}.beam1"] is not None]
        text = f"best student greedy within 0.5 BLEU of the teacher's beam {beam} on {first}"
        ok = None
        if done and scores["teacher"][f"{first}.beam{beam}"] is not None:
            best = max(done, key=lambda m: scores[m.key][f"{first}.beam1"])
            deltas = self._versus(scores, best.key, "teacher", 1, beam)
            if deltas is not None:
                ok = deltas[0] >= -0.5
                text += f" ({best.label} minus teacher beam {beam}: {self._on_tests(deltas)})"
        out.append(_target(text, ok))
        gap = self._versus(scores, "seq-kd", "seq-kd", beam, 1)
        out.append(_target(f"Seq-KD beam-minus-greedy gap at most 0.5 BLEU on {first}"
                           + (f" ({self._on_tests(gap)})" if gap else ""),
                           None if gap is None else gap[0] <= 0.5))
        for ratio, limit in PRUNING_TARGETS.items():
            key = _pruned_model(ratio).key
            text = (f"{ratio:.0%} pruned (class-blind, {p.prune_schedule}) within {limit} BLEU "
                    f"of its unpruned student, greedy on {first}")
            drop = self._versus(scores, key, "seq-kd") if key in scores else None
            out.append(_target(text + (f" ({self._on_tests(drop)})" if drop else ""),
                               None if drop is None else drop[0] >= -limit))
        return out

    def _seed_values(self, scores: dict[str, dict[str, Any]], key: str,
                     column: str) -> list[float]:
        keys = [key, *(f"{key}-seed{seed}" for seed in self.preset.extra_seeds)]
        return [scores[k][column] for k in keys if scores.get(k, {}).get(column) is not None]

    def _seed_noise(self, scores: dict[str, dict[str, Any]]) -> float | None:
        """The seed noise of greedy BLEU on the first test set, pooled over the seeded rows."""
        column = f"{self.test_sets[0]}.beam1"
        return pooled_std([self._seed_values(scores, k, column) for k in self._seed_chain()])

    def _seeds_section(self, scores: dict[str, dict[str, Any]]) -> list[str]:
        p, first, beam = self.preset, self.test_sets[0], self.preset.beam
        columns = [*(f"{t}.beam1" for t in self.test_sets), f"{first}.beam{beam}"]
        header = ["model", "seeds", *(f"{t} greedy" for t in self.test_sets),
                  f"{first} beam {beam}"]
        table1 = _TABLE1_BY_KEY

        def cell(key: str, column: str) -> str:
            values = self._seed_values(scores, key, column)
            if not values:
                return "-"
            mean, std = mean_std(values)
            return f"{mean:.2f} ± {std:.2f}"

        chain = self._seed_chain()
        body = [[self._label(table1[k]),
                 str(len(self._seed_values(scores, k, columns[0]))),
                 *(cell(k, c) for c in columns)] for k in chain]
        noise = self._seed_noise(scores)
        lines = []
        rows = [k for k in p.seed_rows if self._seed_values(scores, k, columns[0])]
        for a, b in itertools.pairwise(rows):
            delta = (mean_std(self._seed_values(scores, b, columns[0]))[0]
                     - mean_std(self._seed_values(scores, a, columns[0]))[0])
            lines.append(f"- {table1[b].label} minus {table1[a].label}, mean greedy on {first}: "
                         + mark_noise(f"{delta:+.2f}", delta, noise))
        return [
            f"## Seeds: mean ± standard deviation over seeds 1, "
            f"{', '.join(map(str, p.extra_seeds))}", "", self._run_line(*(
                f"{k}-seed{s}" for s in p.extra_seeds for k in chain)), "",
            _markdown_table(header, body), "",
            "Each seed retrains the row from scratch, and a fine-tuned row the model it starts "
            "from, with `--seed N` (data order, dropout, initialisation). Seed noise: "
            + ("not measured yet" if noise is None else
               f"{noise:.2f} BLEU, the pooled sample standard deviation of {first} greedy over "
               "these rows")
            + "; every difference on this page smaller than two of it is marked "
            "\"(< 2 std)\".", "", *lines,
        ]

    def _averaging_section(self, scores: dict[str, dict[str, Any]]) -> list[str]:
        p, first, beam = self.preset, self.test_sets[0], self.preset.beam
        header = ["model", "epochs trained", "valid NLL best",
                  f"valid NLL avg {p.average_last}", "better on valid",
                  f"{first} greedy best / avg", f"{first} beam {beam} best / avg"]
        body, wins, measured = [], 0, 0
        for key, avg in zip(p.average_models, self.averaged_models, strict=True):
            model = _TABLE1_BY_KEY[key]
            curve = self._valid_curve(model)
            nll = [reference_nll(f.read_text(encoding="utf-8")) if f.exists() else None
                   for f in (self.valid_file(model), self.valid_file(avg))]
            better = "-"
            if None not in nll:
                measured += 1
                wins += nll[1] < nll[0]
                better = "average" if nll[1] < nll[0] else "best"
            body.append([self._label(model), "-" if curve is None else str(len(curve)),
                         _num(nll[0]), _num(nll[1]), better,
                         *(f"{_num(scores[key][c])} / {_num(scores[avg.key][c])}"
                           for c in (f"{first}.beam1", f"{first}.beam{beam}"))])
        verdict = ("not measured yet" if not measured else
                   f"the average has the lower valid NLL for {wins} of {measured} models, so "
                   + ("averaging should become the default" if 2 * wins > measured else
                      "checkpoint_best stays the default"))
        return [
            f"## Convergence and checkpoint averaging (last {p.average_last} epochs)", "",
            self._run_line(*(m.stage for m in self.averaged_models)), "",
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

    def _source_section(self, scores: dict[str, dict[str, Any]]) -> list[str]:
        p = self.preset
        models = (_SEQ_KD, _STRONG, _TABLE1_BY_KEY["seq-kd-seq-inter"], self.nbest_model)
        return [
            "## A stronger source for the distilled data", "",
            self._run_line(_STRONG.stage, self.nbest_model.stage), "",
            self._bleu_table(scores, models, _SEQ_KD, "Seq-KD", self._seed_noise(scores)), "",
            f"{_STRONG.label}: a student trained as Seq-KD on the beam-{p.beam} output of the "
            f"teacher fine-tuned on Seq-Inter data. {self.nbest_model.label}: the Seq-KD "
            f"student fine-tuned on Seq-Inter data chosen from the teacher's "
            f"{p.inter_nbest_large}-best (beam {p.inter_nbest_large}) instead of its "
            f"{p.inter_nbest}-best (the row above it).",
        ]

    def _pruning_section(self, scores: dict[str, dict[str, Any]]) -> list[str]:
        p, first, beam = self.preset, self.test_sets[0], self.preset.beam
        noise = self._seed_noise(scores)
        base = scores[_SEQ_KD.key][f"{first}.beam1"]
        header = ["model", "params", "non-zero", f"{first} greedy", f"{first} beam {beam}",
                  "greedy vs Seq-KD", "valid loss by epoch"]
        body = []
        for m in (_SEQ_KD, *self.pruned_models):
            s, g = scores[m.key], scores[m.key][f"{first}.beam1"]
            curve = self._valid_curve(m) or []
            delta = ("" if g is None or base is None or m is _SEQ_KD
                     else mark_noise(f"{g - base:+.2f}", g - base, noise))
            body.append([m.label, _count(s["params"]), _count(s["nonzero"]), _num(g),
                         _num(s[f"{first}.beam{beam}"]), delta,
                         " ".join(f"{v:.2f}" for v in curve) or "-"])
        sparsity = {m.label: scores[m.key].get("sparsity") for m in self.pruned_models}
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
            self._run_line(*(m.stage for m in self.pruned_models)), "",
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

    def _speed_table(self, speeds: list[dict[str, Any]]) -> str:
        beam = self.preset.beam
        reference = {r["batch"]: r["seconds"] for r in speeds
                     if r["model"] == "teacher" and r["beam"] == beam}
        header = ["model", "beam", "batch", "sentences/s", "tokens/s",
                  f"speed-up vs teacher beam {beam}"]
        body = []
        for r in speeds:
            who = "teacher" if r["model"] == "teacher" else "student (every row)"
            ref = reference.get(r["batch"])
            body.append([who, str(r["beam"]), str(r["batch"]), f"{r['sent_s']:,.1f}",
                         f"{r['tok_s']:,.0f}",
                         f"{ref / r['seconds']:.1f}x" if ref and r["seconds"] else "-"])
        return _markdown_table(header, body) if body else "(not measured yet)"

    def _how(self) -> list[str]:
        p = self.preset
        counts = {t: count_lines(self.raw / f"{t}.{SRC}") for t in ("train", *self.test_sets)}
        every = self.stages()
        stages = stages_needed(every, self.only)
        out = [
            "## How it was run", "",
            *([f"- This run: `--only {','.join(self.only)}`, i.e. {len(stages)} of the "
               f"{len(every)} stages (those named and what they need); a row without "
               "numbers was not run."] if self.only else []),
            f"- Corpus `{self.raw.name}` (`$CORPUS` below): {counts['train']:,} training "
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
            f"- Stages ran up to {self.jobs} at a time with {self.threads} thread(s) each "
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
                stamp = json.loads(self._stamp_path(stage.name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out.append(f"| {stage.name} | {self.part_of(stage.name)} | {stamp['seconds']:.0f} | "
                       f"{stamp['cpu_seconds']:.0f} |")
        out += ["", "<details><summary>Every command, in stage order ($OUT is the output "
                "directory, $CORPUS the corpus)</summary>", "", "```"]
        for stage in stages:
            out.append(f"# {stage.name}: {stage.description}")
            out += [self._doc_command(c) for c in stage.commands]
            if stage.func_key is not None:
                out.append(f"# in-process: {json.dumps(self._portable(stage.func_key))}")
        out += ["```", "</details>"]
        return out


def _target(text: str, ok: bool | None) -> str:
    verdict = "not measured yet" if ok is None else ("met" if ok else "MISSED")
    return f"- {text}: **{verdict}**"


def _label_of(key: str) -> str:
    return _TABLE1_BY_KEY[key].label


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
