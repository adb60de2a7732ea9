"""Model sizes, budgets and targets of ``seqkd-benchmark`` (``--preset``)."""

from __future__ import annotations

from dataclasses import dataclass

from .benchmark_targets import MULTI30K_TARGETS, Target
from .corpus import CorpusSpec
from .presets import Arch, Preset

__all__ = ["BENCHMARK_PRESETS", "BenchmarkPreset"]


@dataclass(frozen=True)
class BenchmarkPreset(Preset):
    """A demo preset plus the benchmark's fine-tuning, cache, pruning and speed settings, and
    the targets its page judges."""

    finetune_epochs: int = 2
    prune_ratios: tuple[float, ...] = (0.5, 0.8, 0.9)
    divergences: tuple[str, ...] = ("reverse_kl", "js", "tvd")
    gkd_betas: tuple[float, ...] = (0.1, 0.5)
    filter_worst: float = 10.0  # % of the Seq-KD data dropped by teacher score
    # Convergence: every model but the pruning retrains stops after this many validations
    # without a better validation loss (fairseq --patience; 0: off), the epochs above being
    # caps; these models keep their last epoch checkpoints and get a row that averages the
    # last ``average_last`` (seqkd-export --average-last), scored on valid
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
    # the lines the page judges; a pruned row named here runs in --part table1
    targets: tuple[Target, ...] = ()


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
        inter_nbest_large=8, targets=MULTI30K_TARGETS,
    ),
    # Multi30k en-de on 2 CPU cores: teacher ~7M parameters, students ~1.6M (~4x fewer), in two
    # resumable runs with 2 stages at a time (--part table1, then --part extra). Epochs are
    # caps (patience 2 stops a model earlier). CPU seconds measured by a table1 run of this
    # preset (its stamps; two stages side by side on the 2 cores, each slower than alone): the
    # teacher 5,565 for 12 epochs with 2 threads (2,837 s wall, alone), a student ~135 an epoch
    # (baseline 726, resumed; Seq-KD 1,347; Word-KD 1,469 for 10), a student fine-tuning epoch
    # ~138, build-seq-kd 657 (beam 5 over 29,000 sentences, 5-best kept), build-seq-inter 12
    # (it reuses that n-best), a teacher cache ~185, decoding the three test sets greedy +
    # beam 5 ~46 a student, 98 the teacher. Estimated from those (and from a run of shorter
    # training, one core each): a teacher fine-tuning epoch ~400, a 20-best build ~2,000, GKD
    # ~2.8 CPU-s an update.
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
    # of 2 cores. Left out to fit, measured with shorter training (one seed each,
    # docs/results/multi30k-v1.md): the word-level divergence rows (``divergences``) and GKD
    # at beta 0.5 (``gkd_betas``). Teacher outputs with a phrase more than twice in a row
    # (decoding loops: 274 of this teacher's 29,000 Seq-KD targets) fall back to the
    # reference.
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
        prune_end_update=2000, prune_interval=50, targets=MULTI30K_TARGETS,
    ),
}
