"""The ``seqkd-demo`` stage list: Kim & Rush (2016) end to end, with the tools users run.

Stages (each a list of commands; stock fairseq CLIs and the project's own console scripts):

  corpus         python -m fairseq_seqkd.experiments.corpus      (built-in corpus only)
  sentencepiece  joint subword model, encoded splits      (sentencepiece library)
  preprocess     fairseq-preprocess --joined-dictionary
  teacher        fairseq-train, a transformer several times larger than the students
  baseline       fairseq-train, student on the gold data
  build-seq-kd   seqkd-build --strategy seq-kd   (teacher beam search on train, its n-best kept)
  seq-kd         fairseq-train on the distilled data-bin
  build-seq-kd-mono seqkd-build --mono-source corpus/mono.src (built-in corpus only): the Seq-KD
                 pairs (a copy of its n-best), then the teacher's translations of more sources
  seq-kd-mono    fairseq-train on that data-bin, the Seq-KD student's recipe
  pruned         fairseq-train --task translation_kd --prune-ratio 0.8, from the Seq-KD student
  export         seqkd-export, a plain fairseq checkpoint
  deep-shallow   fairseq-train DISTILLED, a deep-encoder, shallow-decoder student (4+1 layers)
  seq-kd-gkd     fairseq-train DISTILLED --criterion gkd --finetune-from-model SEQ_KD: the Seq-KD
                 student fine-tuned on-policy (GKD), a short budget (--max-update)
  cache-gold     seqkd-cache-teacher: the teacher's top-k distributions on the gold targets
  word-kd        fairseq-train --criterion word_kd --teacher-cache CACHE
  build-seq-inter seqkd-build --strategy seq-inter        (from a copy of the Seq-KD n-best: the
                 n-best closest to the reference, no decoding again)
  seq-inter      fairseq-train on that data-bin
  cache-seq-kd   seqkd-cache-teacher on the distilled targets
  seq-kd-word-kd fairseq-train DISTILLED --criterion word_kd --teacher-cache CACHE
  export-ct2     seqkd-export --format ctranslate2 --quantization int8 (Seq-KD students)
  eval           every model decoded on the test set, greedy and beam K, in one process alone on
                 the machine (python -m fairseq_seqkd.experiments.decode: fairseq's generation
                 pipeline, as fairseq-generate runs it, and seqkd-translate's Translator for
                 CTranslate2)

The stages run on the project's stage engine (:mod:`fairseq_seqkd.stages`): a stage is skipped
when its stamp records the same commands, the same content of the outputs of the stages it
reads and of the files it reads from outside the output directory (the corpus), and the same
package version; so an interrupted demo resumes, and a changed preset or an edited corpus
redoes exactly the stages it affects. Every command's output goes to ``logs/<stage>.log``
(hypotheses to ``eval/<model>.beam<K>.hyp``), after the command line itself, so each number in
the results can be reproduced by hand; commands are logged with ``$OUT`` (the output
directory), ``$CORPUS`` (a user's corpus), ``$REPO`` (where the plugin lives) and ``$VENV``
(the interpreter's environment) in place of those paths.

Small models on a few cores train fastest as one thread per process with independent stages
side by side (``jobs``); the decoding stages run alone, so their speeds are comparable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TextIO

from ..commands import console_script
from ..distill.build import WORK_DIR
from ..distill.evaluate import Decoding
from ..stages import PathNames, Stage, StageRun, StageRunner, stages_needed
from .corpus import CORPUS_VERSION, MONO_FILE, SPLITS, corpus_files
from .decode import read_decoding_run
from .demo_models import (
    DEPLOYED,
    GKD_BETA,
    GKD_LAMBDA,
    MAX_LEN_A,
    MAX_LEN_B,
    MODELS,
    SEQ_KD_MONO,
    SRC,
    TGT,
    ModelSpec,
    demo_rows,
)
from .demo_report import write_report
from .presets import Preset
from .report import ModelResult
from .subwords import check_raw_corpus, train_sentencepiece
from .tool_commands import ToolCommands

__all__ = [
    "DEPLOYED",
    "GKD_LAMBDA",
    "MAX_LEN_A",
    "MAX_LEN_B",
    "MODELS",
    "SRC",
    "TGT",
    "ModelSpec",
    "Pipeline",
    "Stage",
    "StageRun",
    "stages_needed",
]


def _data_outputs(directory: Path, *proof: str) -> list[Path]:
    """A data-bin's files that show it complete, then the directory itself: the stages that
    read it key on all of its content."""
    return [*(directory / name for name in proof), directory]


class Pipeline(ToolCommands):
    """Builds the stage list for one output directory and runs it."""

    def __init__(
        self,
        out: str | os.PathLike,
        preset: Preset,
        corpus: str | os.PathLike | None = None,
        threads: int = 1,
        jobs: int = 1,
        stream: TextIO | None = None,
        only: Sequence[str] = (),
    ):
        self.out = Path(out).resolve()
        self.preset = preset
        self.builtin = corpus is None
        self.raw = self.out / "corpus" if corpus is None else Path(corpus).resolve()
        self.threads = threads
        self.jobs = max(1, jobs)
        self.only = tuple(only)  # run just these stages and what they need (--only)
        self.stream = stream
        self.plugin = str(Path(__file__).resolve().parent.parent)
        self.spm = self.out / "spm"
        self.data = self.out / "data-bin"
        #: the built-in corpus's monolingual source text, which the teacher translates for the
        #: Seq-KD + mono row; None without it (a user's corpus, or a preset without any)
        self.mono = self.raw / MONO_FILE if self.builtin and preset.corpus.mono else None
        self.mono_data = self.out / "data-seq-kd-mono"
        #: the rows decoded by fairseq, in the table's order (DEPLOYED: by CTranslate2)
        average = preset.teacher_average_last
        self.teacher = MODELS[0] if not average else replace(
            MODELS[0], checkpoint=f"models/teacher/average-last-{average}.pt", plugin=False)
        self.models: tuple[ModelSpec, ...] = tuple(
            self.teacher if m.key == "teacher" else m for m in demo_rows(self.mono is not None))
        self.runs: list[StageRun] = []
        # further test sets, raw ``NAME.{src,tgt}`` beside the corpus's test split; fairseq-
        # preprocess binarizes them as test1, test2, ... (see ``subset``)
        self.extra_tests: tuple[str, ...] = ()
        # an output directory inside the repository is $OUT (PathNames: longest path first)
        self._portable = PathNames({
            str(self.out): "$OUT", str(Path(self.plugin).parent): "$REPO", sys.prefix: "$VENV",
            **({} if self.builtin else {str(self.raw): "$CORPUS"})})

    # ------------------------------------------------------------------ stage list

    def _cache_stage(self, name: str, data: Path, deps: list[str]) -> Stage:
        """The teacher's top-k distributions on ``data``'s targets, computed once
        (``seqkd-cache-teacher``): a Word-KD student then trains at a plain student's cost."""
        p, cache = self.preset, self._cache_dir(name)
        return Stage(f"cache-{name}", f"teacher top-{p.kd_topk} cache on the {name} targets",
                     # word_kd refuses to validate on a split without a cache
                     [self._cache(data, cache, split) for split in ("train", "valid")],
                     [cache / "train.cache.json", cache / "valid.cache.json", cache],
                     deps=[*deps, "teacher"], clean=[cache])

    def _rebuild(self, name: str, description: str, strategy: str, output: Path,
                 *extra: str, reads: Sequence[str] = ()) -> Stage:
        """A build from the Seq-KD build's teacher n-best: seqkd-build skips a decoding whose
        record matches its options, so a copy of that n-best saves decoding the train set
        again. ``reads``: the stages whose outputs ``extra`` names."""
        generate = Path(WORK_DIR) / "generate"
        return Stage(
            name, description,
            [["cp", "-R", str(self.out / "data-seq-kd" / generate), str(output / generate)],
             self._build(strategy, output, *extra)],
            _data_outputs(output, "train.src-tgt.tgt.bin", "dict.tgt.txt"),
            # reads the Seq-KD build's n-best; seqkd-build reads the data and the teacher
            deps=["build-seq-kd", "preprocess", "teacher", *reads], clean=[output],
            mkdirs=[output / WORK_DIR],
            resumes=False,  # cp -R into an existing copy would nest it
        )

    def stages(self) -> list[Stage]:
        p = self.preset
        out = self.out
        stages: list[Stage] = []
        prep_deps: list[str] = []
        raw_files = [self.raw / f"{s}.{lang}" for s in self._splits() for lang in (SRC, TGT)]
        if self.builtin:
            spec = p.corpus
            stages.append(Stage(
                "corpus", "built-in synthetic corpus",
                [[sys.executable, "-m", "fairseq_seqkd.experiments.corpus", str(self.raw),
                  *(arg for name, value in asdict(spec).items()
                    for arg in (f"--{name.replace('_', '-')}", str(value)))]],
                corpus_files(self.raw, spec), clean=[self.raw],
                func_key={"corpus_version": CORPUS_VERSION},  # a new grammar redoes the corpus
            ))
            prep_deps = ["corpus"]
        spm_opts = {
            "input": f"{self.raw / 'train.src'},{self.raw / 'train.tgt'}",
            "model_prefix": str(self.spm / "spm"), "vocab_size": p.vocab_size,
            "model_type": "bpe", "character_coverage": "auto", "shuffle_input_sentence": False,
            "input_sentence_size": 2_000_000, "num_threads": 1,
            "hard_vocab_limit": False, "bos_id": -1, "eos_id": -1, "pad_id": -1, "unk_id": 0,
        }  # fmt: skip
        stages.append(Stage(
            "sentencepiece", f"joint BPE model, {p.vocab_size} pieces",
            [], [self.spm / "spm.model", *(self.spm / f"{s}.{lang}" for s in self._splits()
                                           for lang in (SRC, TGT))],
            deps=prep_deps, clean=[self.spm],
            func=lambda log: train_sentencepiece(self.raw, self.spm, self._splits(), spm_opts,
                                                 log, self._portable),
            func_key={"sentencepiece": spm_opts, "raw": str(self.raw),
                      **({"extra_tests": list(self.extra_tests)} if self.extra_tests else {})},
            inputs=raw_files,
        ))
        stages.append(Stage(
            "preprocess", "fairseq-preprocess, joined dictionary",
            [[console_script("fairseq-preprocess"), "--source-lang", SRC, "--target-lang", TGT,
              "--trainpref", str(self.spm / "train"), "--validpref", str(self.spm / "valid"),
              "--testpref", ",".join(str(self.spm / t) for t in self.test_sets),
              "--destdir", str(self.data),
              "--joined-dictionary", "--workers", str(self.threads)]],
            _data_outputs(self.data, "dict.src.txt", "test.src-tgt.tgt.bin"),
            deps=["sentencepiece"], clean=[self.data],
            resumes=False,  # fairseq-preprocess refuses a destination with a dictionary
        ))

        def model_stage(name: str, description: str, command: list[str], deps: list[str],
                        save: str | None = None) -> Stage:
            save_dir = out / "models" / (save or name)
            return Stage(name, description, [command], [save_dir / "checkpoint_best.pt"],
                         deps=deps, clean=[save_dir])

        teacher_dir, average = out / "models" / "teacher", p.teacher_average_last
        stages.append(Stage(
            "teacher", f"teacher, {p.teacher.describe()}"
            + (f", the average of its last {average} epochs" if average else ""),
            [self._train(self.data, "teacher", p.teacher, p.teacher_epochs, p.teacher_lr,
                         p.teacher_dropout, *self._ls()),
             *([[console_script("seqkd-export"), "--checkpoint-dir", str(teacher_dir),
                 "--average-last", str(average), "--output", str(out / self.teacher.checkpoint)]]
               if average else [])],
            [out / self.teacher.checkpoint], deps=["preprocess"], clean=[teacher_dir],
        ))
        stages.append(model_stage(
            "baseline", f"baseline student, {p.student.describe()}, gold data",
            self._student(self.data, "baseline", *self._ls()), ["preprocess"],
        ))
        stages.append(model_stage(
            "word-kd", f"Word-KD student, alpha {p.kd_alpha}",
            self._student(self.data, "word-kd", *self._cached_word_kd("gold")),
            ["preprocess", "cache-gold"],
        ))
        seqkd_data, inter_data = out / "data-seq-kd", out / "data-seq-inter"
        stages.append(Stage(
            "build-seq-kd", f"Seq-KD data: teacher beam {p.beam} on train ({p.inter_nbest}-best "
            "kept)",
            [self._build("seq-kd", seqkd_data)],
            _data_outputs(seqkd_data, "train.src-tgt.tgt.bin", "dict.tgt.txt"),
            deps=["preprocess", "teacher"], clean=[seqkd_data],
        ))
        stages.append(model_stage(
            "seq-kd", "Seq-KD student", self._student(seqkd_data, "seq-kd", *self._ls()),
            ["build-seq-kd"],
        ))
        if self.mono is not None:  # more distilled data: the teacher translates more source text
            stages.append(self._rebuild(
                "build-seq-kd-mono", f"Seq-KD + mono data: the Seq-KD pairs, then the teacher's "
                f"beam {p.beam} on {p.corpus.mono:,} more source sentences", "seq-kd",
                self.mono_data, "--mono-source", str(self.mono),
                "--spm-model", str(self.spm / "spm.model"), reads=["corpus", "sentencepiece"]))
            stages.append(model_stage(
                SEQ_KD_MONO.stage, "Seq-KD + mono student",
                self._student(self.mono_data, SEQ_KD_MONO.key, *self._ls(),
                              epochs=p.mono_student_epochs), ["build-seq-kd-mono"]))
        stages.append(self._rebuild(
            "build-seq-inter",
            f"Seq-Inter data: best of the teacher's {p.inter_nbest}-best by sentence BLEU",
            "seq-inter", inter_data, "--sim", "bleu",
        ))
        stages.append(model_stage(
            "seq-inter", "Seq-Inter student",
            self._student(inter_data, "seq-inter", *self._ls()), ["build-seq-inter"],
        ))
        stages.append(model_stage(
            "seq-kd-word-kd", "Seq-KD + Word-KD student",
            self._student(seqkd_data, "seq-kd-word-kd", *self._cached_word_kd("seq-kd")),
            ["build-seq-kd", "cache-seq-kd"],
        ))
        stages.append(model_stage(
            "seq-kd-gkd", f"Seq-KD student fine-tuned with GKD (lambda {GKD_LAMBDA}, beta "
            f"{GKD_BETA}), {p.gkd_updates} updates",
            self._student(seqkd_data, "seq-kd-gkd", *self._gkd(GKD_BETA), "--max-update",
                          str(p.gkd_updates), lr=p.finetune_lr, warmup=p.prune_warmup),
            ["build-seq-kd", "teacher", "seq-kd"],
        ))
        stages.append(model_stage(
            "pruned", f"Seq-KD student pruned {p.prune_ratio:.0%} class-blind, retrained",
            self._student(
                seqkd_data, "seq-kd-pruned", *self._ls(), "--task", "translation_kd",
                "--prune-ratio", str(p.prune_ratio), "--prune-scheme", "class-blind",
                "--finetune-from-model", str(out / MODELS[3].checkpoint),
                epochs=p.prune_epochs, lr=p.prune_lr, warmup=p.prune_warmup,
            ),
            ["build-seq-kd", "seq-kd"], save="seq-kd-pruned",
        ))
        exported = out / MODELS[-1].checkpoint
        stages.append(Stage(
            "export", "plain fairseq checkpoint of the pruned student",
            [[console_script("seqkd-export"), "--input",
              str(out / "models" / "seq-kd-pruned" / "checkpoint_best.pt"),
              "--output", str(exported)]],
            [exported], deps=["pruned"], clean=[exported], mkdirs=[exported.parent],
        ))
        stages.append(model_stage(
            "deep-shallow", f"Seq-KD student, deep encoder and shallow decoder "
            f"({p.student.deep_shallow().describe()})",
            self._train(seqkd_data, "deep-shallow", p.student.deep_shallow(), p.student_epochs,
                        p.student_lr, p.student_dropout, *self._ls()),
            ["build-seq-kd"],
        ))
        stages += [self._cache_stage("gold", self.data, ["preprocess"]),
                   self._cache_stage("seq-kd", seqkd_data, ["build-seq-kd"]),
                   self._export_ct2_stage(), self._eval_all_stage()]
        # the runner starts ready stages in list order: the Seq-KD data and student first (most
        # stages wait for them), then the longest stages, the short ones last to fill the
        # other core at the end
        order = ["corpus", "sentencepiece", "preprocess", "teacher", "baseline", "build-seq-kd",
                 "seq-kd", "build-seq-kd-mono", "seq-kd-mono", "cache-gold", "word-kd",
                 "deep-shallow", "cache-seq-kd", "seq-kd-word-kd", "pruned", "export",
                 "seq-kd-gkd", "build-seq-inter", "seq-inter", "export-ct2", "eval"]
        return sorted(stages, key=lambda stage: order.index(stage.name))

    def _eval_all_stage(self) -> Stage:
        """Every model decoded greedily and with beam K, alone on the machine, in one process:
        fairseq's start-up is paid once, not per model and beam."""
        models = (*self.models, *DEPLOYED)
        command, files = self._decode_command(models)
        return Stage(
            "eval", f"decode test, alone, in one process: every model greedy and beam "
            f"{self.preset.beam}", [command], files,
            deps=sorted({"preprocess", *(m.stage for m in models)}),
            clean=[self.out / "eval"], mkdirs=[self.out / "eval"], exclusive=True,
            resumes=False, inputs=self._sources(models),
        )

    def _export_ct2_stage(self) -> Stage:
        """CTranslate2 int8 directories of the deployed students, sentencepiece inside."""
        by_key = {m.key: m for m in MODELS}
        dirs = [self.out / m.checkpoint for m in DEPLOYED]
        return Stage(
            "export-ct2", "CTranslate2 int8 exports of the Seq-KD students",
            [[console_script("seqkd-export"), "--input",
              str(self.out / by_key[m.source].checkpoint), "--format", "ctranslate2",
              "--quantization", "int8", "--spm-model", str(self.spm / "spm.model"),
              "--output", str(d)]
             for m, d in zip(DEPLOYED, dirs, strict=True)],
            [*(d / "seqkd-export.json" for d in dirs), *dirs],
            deps=sorted({"sentencepiece", *(by_key[m.source].stage for m in DEPLOYED)}),
            clean=dirs, mkdirs=[self.out / "export"],
        )

    def decoding(self, model: ModelSpec, beam: int) -> Decoding:
        """One evaluated model's hypotheses and timing, whichever engine decoded them."""
        return read_decoding_run(self.out / "eval", model.key, "test", beam)

    def _splits(self) -> tuple[str, ...]:
        return (*SPLITS, *self.extra_tests)

    # ------------------------------------------------------------------ running

    def selected_stages(self) -> list[Stage]:
        """The stages of this run: :func:`stages_needed` for ``only``."""
        return stages_needed(self.stages(), self.only)

    def _runner(self) -> StageRunner:
        return StageRunner(self.out, self._portable, threads=self.threads, jobs=self.jobs,
                           stream=self.stream)

    def _stamp_path(self, name: str) -> Path:
        """A stage's stamp: its key, and the ``seconds`` and ``cpu_seconds`` of the run that
        made it."""
        return self._runner().stamp_path(name)

    def run(self) -> list[StageRun]:
        """Run (or skip) every stage, in order, or up to ``jobs`` independent ones at once.

        With ``jobs > 1`` the decoding stages still run alone, so their speeds stay
        comparable.
        """
        if not self.builtin:
            check_raw_corpus(self.raw)
        self.runs = self._runner().run(self.selected_stages())
        return self.runs

    def report(self) -> tuple[str, list[ModelResult]]:
        """Write results.md, results.json and results.png; return the terminal table."""
        return write_report(self)
