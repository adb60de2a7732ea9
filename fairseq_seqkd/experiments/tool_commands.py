"""The command lines of the tools the experiments run (fairseq-train, seqkd-build,
seqkd-cache-teacher, the decoding process), built from a preset: one place for the options
every stage of the demo and the benchmark shares."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..commands import console_script
from .decode import decoding_json, hypothesis_file
from .demo_models import GKD_LAMBDA, MAX_LEN_A, MAX_LEN_B, MODELS, SRC, ModelSpec
from .presets import Arch, Preset

__all__ = ["ToolCommands"]


class ToolCommands:
    """Tool commands for the stages of one output directory (``out``), a base of
    :class:`~.pipeline.Pipeline`, which sets what they read."""

    preset: Preset
    out: Path
    raw: Path  # the raw corpus
    data: Path  # the gold data-bin
    plugin: str  # the plugin's directory, for --user-dir
    threads: int
    teacher: ModelSpec  # the teacher checkpoint the builds, caches and GKD read
    extra_tests: tuple[str, ...]  # test sets beside ``test`` (raw NAME.{src,tgt})

    @property
    def test_sets(self) -> tuple[str, ...]:
        return ("test", *self.extra_tests)

    def subset(self, test_set: str) -> str:
        """fairseq's name of a test set: ``test``, then ``test1``, ``test2``, ..."""
        index = self.test_sets.index(test_set)
        return "test" if index == 0 else f"test{index}"

    def _train(self, data: Path, save: str, arch: Arch, epochs: int, lr: float, dropout: float,
               *extra: str, warmup: int | None = None, seed: int = 1) -> list[str]:
        """A fairseq-train command. Every training loads the plugin (``--user-dir``), the
        teacher's too: resuming reads ``checkpoint_last.pt``, which torch >= 2.6 refuses
        unless the plugin allow-lists what fairseq checkpoints hold."""
        p = self.preset
        warmup = p.warmup if warmup is None else warmup
        return [
            console_script("fairseq-train"), str(data),
            "--user-dir", self.plugin, *arch.args(),
            "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "1.0",
            "--lr", str(lr), "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(warmup),
            "--max-tokens", str(p.max_tokens), "--max-epoch", str(epochs),
            "--dropout", str(dropout), "--seed", str(seed),
            "--cpu", "--num-workers", "0", "--no-progress-bar", "--log-format", "simple",
            "--log-interval", "50", *self._checkpointing(save),
            "--save-dir", str(self.out / "models" / save),
            *extra,
        ]  # fmt: skip

    def _checkpointing(self, save: str) -> list[str]:
        """fairseq-train's checkpoint and stopping options for the model saved in ``save``:
        the best checkpoint only, or the teacher's last epochs when it is their average (the
        benchmark keeps epoch checkpoints to average)."""
        average = self.preset.teacher_average_last
        if save == "teacher" and average:
            return ["--keep-last-epochs", str(average)]
        return ["--no-epoch-checkpoints"]

    def _student(self, data: Path, save: str, *extra: str, epochs: int | None = None,
                 lr: float | None = None, warmup: int | None = None, seed: int = 1) -> list[str]:
        p = self.preset
        return self._train(
            data, save, p.student, p.student_epochs if epochs is None else epochs,
            p.student_lr if lr is None else lr, p.student_dropout, *extra, warmup=warmup,
            seed=seed,
        )

    def _ls(self) -> list[str]:
        return ["--criterion", "label_smoothed_cross_entropy",
                "--label-smoothing", str(self.preset.label_smoothing)]

    def _gkd(self, beta: float) -> list[str]:
        """The Seq-KD student fine-tuned on-policy: ``--criterion gkd`` with the teacher online
        (a cache cannot score the student's own samples)."""
        p = self.preset
        return ["--criterion", "gkd", "--label-smoothing", str(p.label_smoothing),
                "--teacher-path", str(self.out / self.teacher.checkpoint),
                "--kd-alpha", str(p.kd_alpha), "--gkd-lambda", str(GKD_LAMBDA),
                "--gkd-beta", str(beta),
                "--finetune-from-model", str(self.out / MODELS[3].checkpoint)]

    def _build(self, strategy: str, output: Path, *extra: str, teacher: str | None = None,
               beam: int | None = None, nbest: int | None = None) -> list[str]:
        """seqkd-build from ``teacher`` (a checkpoint relative to the output directory; the
        teacher by default) with beam ``beam`` (the preset's by default). It decodes the
        ``nbest``-best (``inter_nbest`` by default; Seq-KD takes the first), so each later build
        from the same teacher can start from the Seq-KD build's (:meth:`_rebuild`)."""
        p = self.preset
        return [
            console_script("seqkd-build"), "--data", str(self.data),
            "--teacher", str(self.out / (teacher or self.teacher.checkpoint)), "--output",
            str(output), "--strategy", strategy, "--beam", str(beam or p.beam),
            "--nbest", str(nbest or p.inter_nbest), *extra,
            *(["--max-repeats", str(p.max_repeats)] if p.max_repeats is not None else []),
            # the evaluation's output cap: a teacher caught in a loop stops at ~30 tokens,
            # not at fairseq's 200 (one such sentence holds up its whole batch)
            "--max-len-a", str(MAX_LEN_A), "--max-len-b", str(MAX_LEN_B),
            "--remove-bpe", "sentencepiece", "--cpu", "--batch-size", str(p.build_batch_size),
            "--workers", str(self.threads),
        ]  # fmt: skip

    def _cache(self, data: Path, cache: Path, split: str) -> list[str]:
        p = self.preset
        return [
            console_script("seqkd-cache-teacher"), str(data), "--user-dir", self.plugin,
            "--path", str(self.out / self.teacher.checkpoint), "--gen-subset", split,
            "--kd-topk", str(p.kd_topk), "--max-tokens", str(p.cache_max_tokens),
            "--cpu", "--num-workers", "0", "--no-progress-bar", "--output", str(cache),
        ]  # fmt: skip

    def _cached_word_kd(self, cache: str, divergence: str = "kl") -> list[str]:
        """word_kd reading the teacher's top-k from ``cache-NAME`` (:meth:`_cache_stage`)."""
        p = self.preset
        return [
            "--task", "translation_kd", "--teacher-cache", str(self._cache_dir(cache)),
            "--criterion", "word_kd",
            "--label-smoothing", str(p.label_smoothing), "--kd-alpha", str(p.kd_alpha),
            "--kd-topk", str(p.kd_topk), "--kd-divergence", divergence,
        ]  # fmt: skip

    def _cache_dir(self, name: str) -> Path:
        return self.out / f"cache-{name}"

    def _decode_command(self, models: Sequence[ModelSpec], timed: bool = True
                        ) -> tuple[list[str], list[Path]]:
        """One process that decodes ``models`` on every test set, greedy and with beam K
        (:mod:`fairseq_seqkd.experiments.decode`), and the files it writes; ``timed=False`` skips
        the untimed warm-up passes that only make the timings fair."""
        p, eval_dir = self.preset, self.out / "eval"
        subsets = [self.subset(t) for t in self.test_sets]
        command = [
            sys.executable, "-m", "fairseq_seqkd.experiments.decode", "--data", str(self.data),
            "--subsets", *subsets,
            *(["--sources", *map(str, self._sources(models))] if self._sources(models)
              else []),
            *(arg for m in models for arg in ("--model", f"{m.key}={m.engine}:"
                                              f"{self.out / m.checkpoint}")),
            "--beams", "1", str(p.beam), "--batch-size", str(p.eval_batch_size),
            "--threads", str(self.threads), "--max-len-a", str(MAX_LEN_A),
            "--max-len-b", str(MAX_LEN_B), "--output-dir", str(eval_dir),
            *([] if timed else ["--no-warm-up"]),
        ]  # fmt: skip
        files = [*(hypothesis_file(eval_dir, m.key, s, b) for m in models for s in subsets
                   for b in (1, p.beam)), *(decoding_json(eval_dir, m.key) for m in models)]
        return command, files

    def _sources(self, models: Sequence[ModelSpec]) -> list[Path]:
        """The raw test sources that decoding ``models`` reads: CTranslate2 models translate
        text."""
        if not any(m.engine == "ctranslate2" for m in models):
            return []
        return [self.raw / f"{t}.{SRC}" for t in self.test_sets]
