"""The ``seqkd-demo`` stage driver: Kim & Rush (2016) end to end, with the tools users run.

Stages (each a list of commands; stock fairseq CLIs and the project's own console scripts):

  corpus         python -m fairseq_seqkd.experiments.corpus      (built-in corpus only)
  sentencepiece  joint subword model, encoded splits      (sentencepiece library)
  preprocess     fairseq-preprocess --joined-dictionary
  teacher        fairseq-train, a transformer several times larger than the students
  baseline       fairseq-train, student on the gold data
  build-seq-kd   seqkd-build --strategy seq-kd   (teacher beam search on train, its n-best kept)
  seq-kd         fairseq-train on the distilled data-bin
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

A stage is skipped when its stamp (``stamps/<stage>.json``, written last) records the same
commands, the same upstream stamps and the same content of the files it reads from outside the
output directory (the corpus), and its outputs exist; so an interrupted demo resumes, and a
changed preset or an edited corpus redoes exactly the stages it affects. Every command's output
goes to ``logs/<stage>.log`` (hypotheses to ``eval/<model>.beam<K>.hyp``), after the command
line itself, so each number in the results can be reproduced by hand; commands are
logged with ``$OUT`` (the output directory), ``$CORPUS`` (a user's corpus), ``$REPO`` (where
the plugin lives) and ``$VENV`` (the interpreter's environment) in place of those paths.

Small models on a few cores train fastest as one thread per process with independent stages
side by side (``jobs``); the decoding stages run alone, so their speeds are comparable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..atomic import atomic_write_text, replace_synced
from ..commands import console_script
from ..deploy.ct2_export import read_manifest
from ..distill.build import WORK_DIR
from ..distill.evaluate import Decoding, bleu
from ..errors import SeqKDError
from .corpus import (
    CANONICAL_REGISTER,
    CORPUS_VERSION,
    CorpusSpec,
    count_lines,
    distinct_characters,
    file_sha256,
    generate_pair,
    mixing_rate,
    register_of,
    split_rng,
)
from .decode import decoding_json, hypothesis_file, read_decoding_run
from .presets import Arch, Preset
from .report import (
    DIAGNOSTIC_COLUMNS,
    ModelResult,
    format_table,
    plot_results,
    results_markdown,
)

__all__ = [
    "DEPLOYED",
    "MODELS",
    "ModelSpec",
    "Pipeline",
    "Stage",
    "StageRun",
]

SPLITS = ("train", "valid", "test")
SRC, TGT = "src", "tgt"
# sentencepiece's advice for scripts with a rich character set (Japanese, Chinese): cover
# 99.95 % of the characters rather than all of them; chosen when the training text has more
# distinct characters than this share of the vocabulary
RICH_SCRIPT_COVERAGE = 0.9995
RICH_SCRIPT_SHARE = 0.5


@dataclass(frozen=True)
class ModelSpec:
    """One row of the table: a trained model and the stage that produced its checkpoint."""

    key: str
    label: str
    stage: str
    checkpoint: str  # relative to the output dir
    # load with --user-dir: fairseq-train's checkpoints pickle an argparse.Namespace that
    # torch >= 2.6 refuses unless the plugin allow-lists it; seqkd-export's output needs nothing
    plugin: bool = True
    # "ctranslate2": ``checkpoint`` is a seqkd-export --format ctranslate2 directory of the
    # model ``source``, decoded by seqkd-translate
    engine: str = "fairseq"
    source: str | None = None


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("teacher", "Teacher", "teacher", "models/teacher/checkpoint_best.pt"),
    ModelSpec("baseline", "Student, baseline", "baseline", "models/baseline/checkpoint_best.pt"),
    ModelSpec("word-kd", "Word-KD", "word-kd", "models/word-kd/checkpoint_best.pt"),
    ModelSpec("seq-kd", "Seq-KD", "seq-kd", "models/seq-kd/checkpoint_best.pt"),
    ModelSpec("seq-inter", "Seq-Inter", "seq-inter", "models/seq-inter/checkpoint_best.pt"),
    ModelSpec("seq-kd-word-kd", "Seq-KD + Word-KD", "seq-kd-word-kd",
              "models/seq-kd-word-kd/checkpoint_best.pt"),
    ModelSpec("deep-shallow", "Seq-KD, deep encoder, shallow decoder", "deep-shallow",
              "models/deep-shallow/checkpoint_best.pt"),
    ModelSpec("seq-kd-gkd", "Seq-KD + GKD", "seq-kd-gkd", "models/seq-kd-gkd/checkpoint_best.pt"),
    ModelSpec("pruned", "Seq-KD, pruned (exported)", "export", "export/seq-kd-pruned.pt", False),
)
#: On-policy distillation (GKD, Agarwal et al. 2024): the fraction of updates on the student's
#: own samples, and the demo's beta (GKD's best for translation).
GKD_LAMBDA = 0.5
GKD_BETA = 0.1

#: The output cap of every decoding, fairseq-generate's ``--max-len-a/-b`` (a hypothesis ends
#: at A * source length + B tokens): evaluations, speed runs and the teacher's builds alike.
MAX_LEN_A, MAX_LEN_B = 1.5, 10

#: Students served by CTranslate2 (int8): what ``seqkd-translate`` users run.
DEPLOYED: tuple[ModelSpec, ...] = (
    ModelSpec("seq-kd-ct2", "Seq-KD, CTranslate2 int8", "export-ct2", "export/seq-kd-int8",
              False, "ctranslate2", "seq-kd"),
    ModelSpec("deep-shallow-ct2", "Seq-KD deep-shallow, CTranslate2 int8", "export-ct2",
              "export/deep-shallow-int8", False, "ctranslate2", "deep-shallow"),
)


@dataclass
class Stage:
    """Commands that together produce ``outputs``; redone as a whole unless stamped."""

    name: str
    description: str
    commands: list[list[str]]
    outputs: list[Path]
    deps: list[str] = field(default_factory=list)
    # run after these when they are in the run, though nothing of theirs is read (--only
    # leaves them out)
    after: list[str] = field(default_factory=list)
    clean: list[Path] = field(default_factory=list)  # removed before a redo with new commands
    # an interrupted run continues from the partial outputs (fairseq-train, seqkd-build and
    # seqkd-cache-teacher resume); False: they are cleaned and the stage starts afresh
    resumes: bool = True
    func: Callable[[TextIO], None] | None = None  # in-process step (after the commands)
    func_key: dict[str, Any] | None = None  # what ``func`` does, for the stamp
    mkdirs: list[Path] = field(default_factory=list)  # created before the commands run
    # per command: a file that receives its stdout and stderr (written to a temporary name
    # and renamed when the command succeeds) instead of the stage log
    captures: list[Path | None] = field(default_factory=list)
    # runs alone with all threads (decoding-speed measurements), even with --jobs > 1
    exclusive: bool = False
    # files read from outside the output directory (the corpus): their content is in the stamp
    inputs: list[Path] = field(default_factory=list)


@dataclass
class StageRun:
    name: str
    skipped: bool
    seconds: float  # wall time of this run; for a skipped stage, of the run that made it
    cpu_seconds: float = 0.0  # user + system time of the stage's processes (load-independent)


def check_raw_corpus(directory: Path) -> dict[str, int]:
    """Validate a user's ``train/valid/test.{src,tgt}``; return line counts per split."""
    if not directory.is_dir():
        raise SeqKDError(f"--corpus: {directory} is not a directory")
    counts = {}
    for split in SPLITS:
        sizes = {}
        for lang in (SRC, TGT):
            path = directory / f"{split}.{lang}"
            if not path.is_file():
                raise SeqKDError(
                    f"--corpus: {path} not found (expected train/valid/test.{{src,tgt}}, raw "
                    "parallel text, one sentence a line)"
                )
            sizes[lang] = count_lines(path)
        if sizes[SRC] != sizes[TGT]:
            raise SeqKDError(
                f"--corpus: {directory / split}.src has {sizes[SRC]} lines but "
                f"{directory / split}.tgt has {sizes[TGT]}"
            )
        if sizes[SRC] == 0:
            raise SeqKDError(f"--corpus: {directory / split}.src is empty")
        counts[split] = sizes[SRC]
    return counts


def all_register_references(spec: CorpusSpec, raw: Path, split: str = "test") -> list[list[str]]:
    """Every register's rendering of the built-in corpus's ``split``, one list per register.

    The built-in corpus holds one reference per source, in a register drawn at random, though
    every register is an equally correct translation; scoring against all of them (multi-
    reference BLEU) credits a consistent output in any register and penalises mixing.
    ``generate_pair`` renders the same source in a forced register without changing the
    random stream, so the split is re-drawn once per register. Returns ``[]`` when the
    result does not reproduce the files (sources equal, gold target among the renderings),
    e.g. after a change in the corpus module.
    """
    if split not in ("valid", "test"):
        return []
    try:
        sources = (raw / f"{split}.src").read_text(encoding="utf-8").splitlines()
        gold = (raw / f"{split}.tgt").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    renderings = []
    for register in range(spec.registers):
        held: set[str] = set()
        drawn: list[tuple[str, str]] = []
        for part in ("valid", "test"):  # the order generate_corpus draws held-out splits
            rng, seen, drawn = split_rng(spec, part), set(), []
            while len(drawn) < getattr(spec, part):
                src, tgt, _ = generate_pair(rng, spec, register=register)
                if src not in held and src not in seen:
                    seen.add(src)
                    drawn.append((src, tgt))
            if part == split:
                break
            held.update(src for src, _ in drawn)
        if [src for src, _ in drawn] != sources:
            return []
        renderings.append([tgt for _, tgt in drawn])
    if not all(g in {r[i] for r in renderings} for i, g in enumerate(gold)):
        return []
    return renderings


#: options that set how many processes or threads make a stage's outputs, not what they are
PARALLELISM_OPTIONS: frozenset[str] = frozenset({"--workers", "--threads"})


def _without_parallelism(commands: list[list[str]]) -> list[list[str]]:
    """``commands`` with the values of :data:`PARALLELISM_OPTIONS` blanked, for the stamp: a
    stage done with 2 threads stays done in a run with 1 (the Multi30k teacher trains with
    both cores in a run of its own, then the rest of the benchmark runs 2 stages of 1 thread)."""
    return [[("*" if i and command[i - 1] in PARALLELISM_OPTIONS else arg)
             for i, arg in enumerate(command)] for command in commands]


def stages_needed(stages: list[Stage], only: Sequence[str]) -> list[Stage]:
    """The stages ``only`` names and every stage they depend on, in run order (all of them
    when ``only`` is empty)."""
    if not only:
        return stages
    by_name = {s.name: s for s in stages}
    unknown = [name for name in only if name not in by_name]
    if unknown:
        raise SeqKDError(f"--only: no stage named {unknown[0]!r} (stages: "
                         f"{', '.join(by_name)})")
    wanted: set[str] = set()
    todo = list(only)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(d for d in by_name[name].deps if d in by_name)
    return [s for s in stages if s.name in wanted]


class Pipeline:
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
        self._procs: set[subprocess.Popen] = set()  # running commands, stopped on interrupt
        self.stream = stream if stream is not None else sys.stdout
        self.plugin = str(Path(__file__).resolve().parent.parent)
        self.spm = self.out / "spm"
        self.data = self.out / "data-bin"
        self.runs: list[StageRun] = []
        # further test sets, raw ``NAME.{src,tgt}`` beside the corpus's test split; fairseq-
        # preprocess binarizes them as test1, test2, ... (see ``subset``)
        self.extra_tests: tuple[str, ...] = ()
        places = {str(self.out): "$OUT", str(Path(self.plugin).parent): "$REPO",
                  sys.prefix: "$VENV", **({} if self.builtin else {str(self.raw): "$CORPUS"})}
        # longest first (an output directory inside the repository is $OUT); whole path
        # components only
        self._placeholders = [
            (re.compile(re.escape(path) + r"(?![\w.-])"), name)
            for path, name in sorted(places.items(), key=lambda item: -len(item[0]))
            if len(path) > 1
        ]

    @property
    def test_sets(self) -> tuple[str, ...]:
        return ("test", *self.extra_tests)

    def subset(self, test_set: str) -> str:
        """fairseq's name of a test set: ``test``, then ``test1``, ``test2``, ..."""
        index = self.test_sets.index(test_set)
        return "test" if index == 0 else f"test{index}"

    # ------------------------------------------------------------------ stage list

    def _train(self, data: Path, save: str, arch: Arch, epochs: int, lr: float, dropout: float,
               *extra: str, plugin: bool = True, warmup: int | None = None,
               seed: int = 1) -> list[str]:
        p = self.preset
        warmup = p.warmup if warmup is None else warmup
        return [
            console_script("fairseq-train"), str(data),
            *(["--user-dir", self.plugin] if plugin else []),
            *arch.args(),
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
        the best checkpoint only (the benchmark keeps epoch checkpoints to average)."""
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
                "--teacher-path", str(self.out / MODELS[0].checkpoint),
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
            "--teacher", str(self.out / (teacher or MODELS[0].checkpoint)), "--output",
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
            "--path", str(self.out / MODELS[0].checkpoint), "--gen-subset", split,
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

    def _cache_stage(self, name: str, data: Path, deps: list[str]) -> Stage:
        """The teacher's top-k distributions on ``data``'s targets, computed once
        (``seqkd-cache-teacher``): a Word-KD student then trains at a plain student's cost."""
        p, cache = self.preset, self._cache_dir(name)
        return Stage(f"cache-{name}", f"teacher top-{p.kd_topk} cache on the {name} targets",
                     # word_kd refuses to validate on a split without a cache
                     [self._cache(data, cache, split) for split in ("train", "valid")],
                     [cache / "train.cache.json", cache / "valid.cache.json"],
                     deps=[*deps, "teacher"], clean=[cache])

    def _rebuild(self, name: str, description: str, strategy: str, output: Path,
                 *extra: str) -> Stage:
        """A build from the Seq-KD build's teacher n-best: seqkd-build skips a decoding whose
        record matches its options, so a copy of that n-best saves decoding the train set
        again."""
        generate = Path(WORK_DIR) / "generate"
        return Stage(
            name, description,
            [["cp", "-R", str(self.out / "data-seq-kd" / generate), str(output / generate)],
             self._build(strategy, output, *extra)],
            [output / "train.src-tgt.tgt.bin", output / "dict.tgt.txt"],
            deps=["build-seq-kd"], clean=[output], mkdirs=[output / WORK_DIR],
            resumes=False,  # cp -R into an existing copy would nest it
        )

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
            *(["--sources", *(str(self.raw / f"{t}.{SRC}") for t in self.test_sets)]
              if any(m.engine == "ctranslate2" for m in models) else []),
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

    def stages(self) -> list[Stage]:
        p = self.preset
        out = self.out
        stages: list[Stage] = []
        prep_deps: list[str] = []
        if self.builtin:
            spec = p.corpus
            stages.append(Stage(
                "corpus", "built-in synthetic corpus",
                [[sys.executable, "-m", "fairseq_seqkd.experiments.corpus", str(self.raw),
                  *(arg for name, value in asdict(spec).items()
                    for arg in (f"--{name.replace('_', '-')}", str(value)))]],
                [self.raw / f"{s}.{lang}" for s in SPLITS for lang in (SRC, TGT)],
                clean=[self.raw],
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
            func=lambda log: self._sentencepiece(spm_opts, log),
            func_key={"sentencepiece": spm_opts, "raw": str(self.raw),
                      **({"extra_tests": list(self.extra_tests)} if self.extra_tests else {})},
            inputs=[self.raw / f"{s}.{lang}" for s in self._splits() for lang in (SRC, TGT)],
        ))
        stages.append(Stage(
            "preprocess", "fairseq-preprocess, joined dictionary",
            [[console_script("fairseq-preprocess"), "--source-lang", SRC, "--target-lang", TGT,
              "--trainpref", str(self.spm / "train"), "--validpref", str(self.spm / "valid"),
              "--testpref", ",".join(str(self.spm / t) for t in self.test_sets),
              "--destdir", str(self.data),
              "--joined-dictionary", "--workers", str(self.threads)]],
            [self.data / "dict.src.txt", self.data / "test.src-tgt.tgt.bin"],
            deps=["sentencepiece"], clean=[self.data],
            resumes=False,  # fairseq-preprocess refuses a destination with a dictionary
        ))

        def model_stage(name: str, description: str, command: list[str], deps: list[str],
                        save: str | None = None) -> Stage:
            save_dir = out / "models" / (save or name)
            return Stage(name, description, [command], [save_dir / "checkpoint_best.pt"],
                         deps=deps, clean=[save_dir])

        stages.append(model_stage(
            "teacher", f"teacher, {p.teacher.describe()}",
            self._train(self.data, "teacher", p.teacher, p.teacher_epochs, p.teacher_lr,
                        p.teacher_dropout, *self._ls(), plugin=False),
            ["preprocess"],
        ))
        stages.append(model_stage(
            "baseline", f"baseline student, {p.student.describe()}, gold data",
            self._student(self.data, "baseline", *self._ls()), ["preprocess"],
        ))
        stages.append(model_stage(
            "word-kd", f"Word-KD student, alpha {p.kd_alpha}",
            self._student(self.data, "word-kd", *self._cached_word_kd("gold")), ["cache-gold"],
        ))
        seqkd_data, inter_data = out / "data-seq-kd", out / "data-seq-inter"
        stages.append(Stage(
            "build-seq-kd", f"Seq-KD data: teacher beam {p.beam} on train ({p.inter_nbest}-best "
            "kept)",
            [self._build("seq-kd", seqkd_data)],
            [seqkd_data / "train.src-tgt.tgt.bin", seqkd_data / "dict.tgt.txt"],
            deps=["preprocess", "teacher"], clean=[seqkd_data],
        ))
        stages.append(model_stage(
            "seq-kd", "Seq-KD student", self._student(seqkd_data, "seq-kd", *self._ls()),
            ["build-seq-kd"],
        ))
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
            ["cache-seq-kd"],
        ))
        stages.append(model_stage(
            "seq-kd-gkd", f"Seq-KD student fine-tuned with GKD (lambda {GKD_LAMBDA}, beta "
            f"{GKD_BETA}), {p.gkd_updates} updates",
            self._student(seqkd_data, "seq-kd-gkd", *self._gkd(GKD_BETA), "--max-update",
                          str(p.gkd_updates), lr=p.finetune_lr, warmup=p.prune_warmup),
            ["seq-kd"],
        ))
        stages.append(model_stage(
            "pruned", f"Seq-KD student pruned {p.prune_ratio:.0%} class-blind, retrained",
            self._student(
                seqkd_data, "seq-kd-pruned", *self._ls(), "--task", "translation_kd",
                "--prune-ratio", str(p.prune_ratio), "--prune-scheme", "class-blind",
                "--finetune-from-model", str(out / MODELS[3].checkpoint),
                epochs=p.prune_epochs, lr=p.prune_lr, warmup=p.prune_warmup,
            ),
            ["seq-kd"], save="seq-kd-pruned",
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
                 "seq-kd", "cache-gold", "word-kd", "deep-shallow", "cache-seq-kd",
                 "seq-kd-word-kd", "pruned", "export", "seq-kd-gkd", "build-seq-inter",
                 "seq-inter", "export-ct2", "eval"]
        return sorted(stages, key=lambda stage: order.index(stage.name))

    def _eval_all_stage(self) -> Stage:
        """Every model decoded greedily and with beam K, alone on the machine, in one process:
        fairseq's start-up is paid once, not per model and beam."""
        models = (*MODELS, *DEPLOYED)
        command, files = self._decode_command(models)
        return Stage(
            "eval", f"decode test, alone, in one process: every model greedy and beam "
            f"{self.preset.beam}", [command], files, deps=sorted({m.stage for m in models}),
            clean=[self.out / "eval"], mkdirs=[self.out / "eval"], exclusive=True,
            resumes=False,
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
            [d / "seqkd-export.json" for d in dirs],
            deps=sorted({by_key[m.source].stage for m in DEPLOYED}), clean=dirs,
            mkdirs=[self.out / "export"],
        )

    def decoding(self, model: ModelSpec, beam: int) -> Decoding:
        """One evaluated model's hypotheses and timing, whichever engine decoded them."""
        return read_decoding_run(self.out / "eval", model.key, "test", beam)

    # ------------------------------------------------------------------ in-process steps

    def _splits(self) -> tuple[str, ...]:
        return (*SPLITS, *self.extra_tests)

    def _sentencepiece(self, opts: dict[str, Any], log: TextIO) -> None:
        """Train the joint model and encode every split, each file written atomically.

        The character coverage is 1.0, or :data:`RICH_SCRIPT_COVERAGE` when the training text
        has more distinct characters than :data:`RICH_SCRIPT_SHARE` of the vocabulary; a
        vocabulary that still cannot hold the characters is a one-line error.
        """
        import sentencepiece as spm

        self.spm.mkdir(parents=True, exist_ok=True)
        train = [self.raw / f"train.{lang}" for lang in (SRC, TGT)]
        chars = distinct_characters(train)
        vocab = opts["vocab_size"]
        rich = chars > RICH_SCRIPT_SHARE * vocab
        opts = {**opts, "character_coverage": RICH_SCRIPT_COVERAGE if rich else 1.0}
        log.write(f"# {chars} distinct characters in the training text\n"
                  f"sentencepiece.SentencePieceTrainer.train({self._portable(opts)})\n")
        log.flush()
        try:
            spm.SentencePieceTrainer.train(**opts, minloglevel=1)
        except RuntimeError as exc:
            reason = str(exc).rsplit("] ", 1)[-1].strip()
            raise SeqKDError(
                f"sentencepiece cannot build a {vocab}-piece vocabulary from {train[0]} and "
                f"{train[1].name} ({chars} distinct characters, character coverage "
                f"{opts['character_coverage']}): {reason}; set a larger --vocab-size"
            ) from None
        processor = spm.SentencePieceProcessor(model_file=str(self.spm / "spm.model"))
        for split in self._splits():
            for lang in (SRC, TGT):
                src = self.raw / f"{split}.{lang}"
                lines = src.read_text(encoding="utf-8").split("\n")
                if lines and lines[-1] == "":
                    lines.pop()
                pieces = processor.encode(lines, out_type=str)
                atomic_write_text(self.spm / f"{split}.{lang}",
                                  "".join(" ".join(p) + "\n" for p in pieces))
                log.write(self._portable(f"encoded {src} -> {self.spm / f'{split}.{lang}'}\n"))

    # ------------------------------------------------------------------ running

    def _say(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def selected_stages(self) -> list[Stage]:
        """The stages of this run: :func:`stages_needed` for ``only``."""
        return stages_needed(self.stages(), self.only)

    def _stamp_path(self, name: str, started: bool = False) -> Path:
        return self.out / "stamps" / (f"{name}.started.json" if started else f"{name}.json")

    def _key(self, stage: Stage) -> dict[str, Any]:
        deps = {}
        for dep in stage.deps:
            path = self._stamp_path(dep)
            deps[dep] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        key = {"commands": self._portable(_without_parallelism(stage.commands)),
               "func": self._portable(stage.func_key), "deps": deps}
        if stage.inputs:  # content, not names: an edited corpus redoes the stage
            key["inputs"] = {self._portable(str(p)): file_sha256(p) for p in stage.inputs}
        # as the stamp reads it back: a tuple in a func_key would never equal its JSON list
        return json.loads(json.dumps(key))

    def _portable(self, value: Any) -> Any:
        """``value`` with the machine's paths written as ``$OUT`` (output directory),
        ``$CORPUS`` (a user's corpus), ``$REPO`` (the plugin's parent directory) and ``$VENV``
        (the interpreter's prefix): a moved or copied output directory still counts as done,
        and logs and pages hold no absolute path."""
        if isinstance(value, str):
            for path, name in self._placeholders:
                value = path.sub(name, value)
            return value
        if isinstance(value, list):
            return [self._portable(v) for v in value]
        if isinstance(value, dict):
            return {k: self._portable(v) for k, v in value.items()}
        return value

    def _is_done(self, stage: Stage, key: dict[str, Any]) -> bool:
        try:
            stamp = json.loads(self._stamp_path(stage.name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return stamp.get("key") == key and all(p.exists() for p in stage.outputs)

    def _env(self) -> dict[str, str]:
        """Environment of a command: ``threads`` CPU threads (small models on a few cores run
        far faster as one thread per process, several processes at once, than as one
        process with several OpenMP threads, which spin and stall when a core is busy)."""
        n = str(self.threads)
        return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n,
                "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}

    def run_stage(self, stage: Stage, index: int, total: int) -> StageRun:
        tag = f"[{index:2d}/{total}] {stage.name:<16}"
        key = self._key(stage)
        stamp_path = self._stamp_path(stage.name)
        if self._is_done(stage, key):
            stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
            seconds = stamp.get("seconds", 0.0)
            self._say(f"{tag} skipped: done before in {seconds:.0f}s ({stage.description})")
            return StageRun(stage.name, True, seconds, stamp.get("cpu_seconds", 0.0))
        started = self._stamp_path(stage.name, started=True)
        started.parent.mkdir(parents=True, exist_ok=True)
        try:
            resumable = stage.resumes and json.loads(started.read_text(encoding="utf-8")) == key
        except (OSError, ValueError):
            resumable = False
        stamp_path.unlink(missing_ok=True)
        if not resumable:  # stale outputs of other commands: start afresh
            for path in stage.clean:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        atomic_write_text(started, json.dumps(key, indent=1) + "\n")
        for path in stage.mkdirs:
            path.mkdir(parents=True, exist_ok=True)
        log_path = self.out / "logs" / f"{stage.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._say(f"{tag} started {time.strftime('%H:%M:%S')}: {stage.description}"
                  + (" (resuming)" if resumable else "") + f"  [log: {self._rel(log_path)}]")
        begin, cpu = time.perf_counter(), 0.0
        with open(log_path, "a", encoding="utf-8") as log:
            for i, command in enumerate(stage.commands):
                capture = stage.captures[i] if i < len(stage.captures) else None
                cpu += self._run_command(command, log, log_path, stage.name, capture,
                                         self._env())
            if stage.func is not None:
                before = time.process_time()
                stage.func(log)
                cpu += time.process_time() - before
        seconds = time.perf_counter() - begin
        missing = [str(p) for p in stage.outputs if not p.exists()]
        if missing:
            raise SeqKDError(f"stage {stage.name} finished but {missing[0]} is missing; "
                             f"see {log_path}")
        stamp = {"stage": stage.name, "key": key, "seconds": round(seconds, 1),
                 "cpu_seconds": round(cpu, 1),
                 "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_text(stamp_path, json.dumps(stamp, indent=1) + "\n")
        started.unlink(missing_ok=True)
        self._say(f"{tag} done in {seconds:.0f}s (CPU {cpu:.0f}s)")
        return StageRun(stage.name, False, seconds, cpu)

    def _rel(self, path: Path) -> str:
        try:
            return os.path.relpath(path)
        except ValueError:
            return str(path)

    def _run_command(self, command: list[str], log: TextIO, log_path: Path, stage: str,
                     capture: Path | None, env: dict[str, str]) -> float:
        """Run one command, its output appended to the stage's log (or ``capture``d in a
        file); return its CPU time."""
        log.write(self._portable(f"$ {shlex.join(command)}"
                                 + (f" > {capture} 2>&1\n" if capture else "\n")))
        log.flush()
        sink: TextIO = log
        if capture is not None:
            tmp = capture.with_name(f".{capture.name}.tmp")
            sink = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
            log_path = tmp
        try:
            proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                    env=env, stdin=subprocess.DEVNULL)
        except BaseException:
            if sink is not log:
                sink.close()
            raise
        self._procs.add(proc)
        try:
            if hasattr(os, "wait4"):
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                cpu = usage.ru_utime + usage.ru_stime
            else:  # pragma: no cover - not POSIX
                proc.wait()
                cpu = 0.0
        except BaseException:
            proc.kill()
            proc.wait()
            if sink is not log:
                sink.close()
                log_path.unlink(missing_ok=True)  # no partial capture left behind
            raise
        finally:
            self._procs.discard(proc)
            if sink is not log:
                sink.close()
        if capture is not None:
            if proc.returncode == 0:
                replace_synced(log_path, capture)
            else:  # keep the failed output in the stage log, leave no partial capture
                log.write(log_path.read_text(encoding="utf-8", errors="replace"))
                log_path.unlink()
                log_path = Path(log.name)
        if proc.returncode != 0:
            log.flush()
            tail = [ln for ln in log_path.read_text(encoding="utf-8", errors="replace")
                    .splitlines() if ln.strip()][-1:]
            last = tail[0].strip() if tail else ""
            raise SeqKDError(
                f"stage {stage}: {Path(command[0]).name} exited with status {proc.returncode}"
                f" ({last[:200]}); full log: {log_path}"
            )
        return cpu

    def run(self) -> list[StageRun]:
        """Run (or skip) every stage, in order, or up to ``jobs`` independent ones at once.

        With ``jobs > 1`` the decoding stages still run alone, so their speeds stay
        comparable.
        """
        jobs = self.jobs
        if not self.builtin:
            check_raw_corpus(self.raw)
        self.out.mkdir(parents=True, exist_ok=True)
        stages = self.selected_stages()
        index = {s.name: i for i, s in enumerate(stages, start=1)}
        if jobs <= 1:
            self.runs = [self.run_stage(s, index[s.name], len(stages)) for s in stages]
            return self.runs
        try:
            self.runs = self._run_parallel(stages, index, jobs)
        except BaseException:  # Ctrl-C, SIGTERM or a failed stage: stop the other stages
            for proc in list(self._procs):
                proc.terminate()
            raise
        return self.runs

    def _run_parallel(self, stages: list[Stage], index: dict[str, int],
                      jobs: int) -> list[StageRun]:
        done: dict[str, StageRun] = {}
        pending = list(stages)
        selected = {s.name for s in stages}
        running: dict[Future, Stage] = {}
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            try:
                def ready() -> list[Stage]:
                    return [s for s in pending if all(d in done for d in s.deps) and all(
                        a in done or a not in selected for a in s.after)]

                checked: set[str] = set()  # ready stages already tested for "done before"
                while pending or running:
                    # a stage done before is skipped as soon as it is ready, in order, so that
                    # what starts next is chosen knowing it (an exclusive stage whose inputs
                    # were done must not lose its turn to a later stage); its key, once its
                    # inputs are done, does not change, so each stage is tested once
                    fresh = [s for s in ready() if s.name not in checked]
                    while fresh:
                        for stage in fresh:
                            checked.add(stage.name)
                            if self._is_done(stage, self._key(stage)):
                                pending.remove(stage)
                                done[stage.name] = self.run_stage(stage, index[stage.name],
                                                                  len(stages))
                        fresh = [s for s in ready() if s.name not in checked]
                    for stage in ready():
                        alone = any(r.exclusive for r in running.values())
                        if len(running) >= jobs or alone:
                            break
                        if stage.exclusive and running:
                            break  # drain: later stages would starve it
                        pending.remove(stage)
                        running[pool.submit(self.run_stage, stage, index[stage.name],
                                            len(stages))] = stage
                    if not running:
                        if not pending:
                            break  # the last stages were skipped
                        raise RuntimeError(f"stages {[s.name for s in pending]} never start")
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        done[running.pop(future).name] = future.result()
            except BaseException:
                # stop the other stages' commands before the pool waits for its threads
                for future in running:
                    future.cancel()
                for proc in list(self._procs):
                    proc.terminate()
                raise
        return [done[s.name] for s in stages]

    # ------------------------------------------------------------------ results

    def results(self) -> tuple[list[ModelResult], str]:
        """Score every evaluated model; returns the rows and sacrebleu's signature."""
        from ..checkpoints import parameter_counts
        from ..teacher import load_checkpoint_state

        refs = (self.raw / "test.tgt").read_text(encoding="utf-8").split("\n")
        if refs and refs[-1] == "":
            refs.pop()
        every = all_register_references(self.preset.corpus, self.raw) if self.builtin else []
        beam = self.preset.beam
        rows, signature = [], ""
        for model in (*MODELS, *DEPLOYED):
            greedy, beamed = self.decoding(model, 1), self.decoding(model, beam)
            bleu_g, signature = bleu(greedy.hypotheses, refs)
            bleu_b, _ = bleu(beamed.hypotheses, refs)
            if model.engine == "ctranslate2":
                manifest = read_manifest(str(self.out / model.checkpoint))
                total, nonzero = manifest.parameters, manifest.nonzero
            else:
                state = load_checkpoint_state(str(self.out / model.checkpoint), "--path")
                total, nonzero = parameter_counts(state["model"])
            label = model.label
            if model.key == "teacher":
                label = f"Teacher ({self.preset.teacher.describe()})"
            elif model.key == "baseline":
                label = f"Student ({self.preset.student.describe()}), baseline"
            row = ModelResult(
                label, total, nonzero, bleu_g, bleu_b,
                greedy.tokens_per_second, beamed.tokens_per_second,
                extra={"sec_greedy": greedy.seconds, "sec_beam": beamed.seconds},
            )
            if self.builtin:
                row.mixing_greedy = mixing_rate(greedy.hypotheses)
                row.mixing_beam = mixing_rate(beamed.hypotheses)
                row.extra["canonical_greedy"] = sum(
                    register_of(h, majority=True) == CANONICAL_REGISTER
                    for h in greedy.hypotheses) / max(len(greedy.hypotheses), 1)
            if every:
                row.multi_bleu_greedy = bleu(greedy.hypotheses, *every)[0]
                row.multi_bleu_beam = bleu(beamed.hypotheses, *every)[0]
            rows.append(row)
        reference = rows[0].extra["sec_beam"]
        for row in rows:
            row.speedup_greedy = reference / row.extra["sec_greedy"]
            row.speedup_beam = reference / row.extra["sec_beam"]
        return rows, signature

    def findings(self, rows: Sequence[ModelResult]) -> list[str]:
        """Plain sentences on the paper's claims, each saying whether this run bears it out."""
        by = {m.key: r for m, r in zip((*MODELS, *DEPLOYED), rows, strict=True)}
        teacher, base, seq = by["teacher"], by["baseline"], by["seq-kd"]
        pruned, beam = by["pruned"], self.preset.beam

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
        if "canonical_greedy" in base.extra and "canonical_greedy" in seq.extra:
            keys = (("baseline", base), ("Word-KD", by["word-kd"]), ("Seq-KD", seq),
                    ("teacher", teacher))
            canonical = ", ".join(f"{n} {r.extra['canonical_greedy']:.1%}" for n, r in keys)
            mixing = ", ".join(f"{n} {r.mixing_greedy:.1%}" for n, r in keys)
            out.append(
                f"Why: the references use the canonical register for about "
                f"{self.preset.corpus.preferred:.0%} of the sentences and another register "
                "otherwise, each a correct translation. A student trained on them spends its "
                "capacity on every register; the teacher's beam search keeps the most probable "
                "one, so the Seq-KD data is (almost) one register and the Seq-KD student learns "
                f"a simpler task. Greedy outputs in the canonical register: {canonical}; "
                f"outputs that mix registers: {mixing}."
            )
        deployed, deep = by["seq-kd-ct2"], by["deep-shallow-ct2"]
        shape = self.preset.student.deep_shallow().describe()
        out.append(
            f"Deployed with CTranslate2 int8 (`seqkd-export --format ctranslate2`, "
            f"`seqkd-translate`), greedy: the Seq-KD student {deployed.bleu_greedy:.2f} BLEU "
            f"({deployed.bleu_greedy - seq.bleu_greedy:+.2f} against itself in fairseq) at "
            f"{deployed.speedup_greedy:.1f}x the teacher's beam-{beam} speed in fairseq "
            f"({deployed.speedup_greedy / seq.speedup_greedy:.1f}x its own fairseq speed); the "
            f"deep-encoder, shallow-decoder student ({shape}) {deep.bleu_greedy:.2f} BLEU "
            f"({by['deep-shallow'].bleu_greedy:.2f} in fairseq) at {deep.speedup_greedy:.1f}x.")
        drop = seq.bleu_greedy - pruned.bleu_greedy
        out.append(f"Pruned Seq-KD student ({self.preset.prune_ratio:.0%} of the weights "
                   f"zeroed, retrained): greedy {pruned.bleu_greedy:.2f} BLEU vs "
                   f"{seq.bleu_greedy:.2f} unpruned ({-drop:+.2f}; {verdict(drop <= 1.0)}: "
                   f"within 1 BLEU), with {pruned.nonzero:,} non-zero parameters "
                   f"({teacher.params / max(pruned.nonzero, 1):.0f}x fewer than the teacher).")
        return out

    def report(self) -> tuple[str, list[ModelResult]]:
        """Write results.md, results.json and results.png; return the terminal table."""
        rows, signature = self.results()
        p = self.preset
        corpus = ("built-in synthetic corpus "
                  f"({p.corpus.train:,} training pairs, {p.corpus.registers} registers)"
                  if self.builtin else f"corpus {self.raw.name}")
        table = format_table(rows, beam=p.beam, mixing=self.builtin)
        diagnostics = ""
        if self.builtin and rows[0].multi_bleu_greedy is not None:
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
        stage_rows = [f"| {r.name} | {r.seconds:.0f} | {r.cpu_seconds:.0f} |" for r in self.runs]
        notes = [
            f"- Data: {corpus}; joint sentencepiece BPE ({p.vocab_size} pieces); preset "
            f"`{p.name}`; test set: {self._refs():,} sentences.",
            f"- Decoding: the `eval` stage decodes every model in one process, alone on the "
            f"machine as far as this demo is concerned, with {self.threads} thread(s): "
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
        if self.builtin:
            notes.append("- Mixed: share of test outputs that contain register-specific words "
                         "of two or more registers "
                         "(`fairseq_seqkd.experiments.corpus.mixing_rate`; "
                         "the references: 0%).")
        notes += ["", "## Stage times (seconds; a skipped stage shows the run that made it)", "",
                  f"Up to {self.jobs} stage(s) at a time (decoding alone), {self.threads} "
                  "thread(s) each. CPU = user + system time of the stage's processes, which "
                  "other load on the machine inflates far less than wall time.", "",
                  "| stage | wall | CPU |", "|---|---:|---:|", *stage_rows,
                  f"| sum | {sum(r.seconds for r in self.runs):.0f} | "
                  f"{sum(r.cpu_seconds for r in self.runs):.0f} |"]
        plot_path = self.out / "results.png"
        plot_results(rows, plot_path, beam=p.beam,
                     title=f"seqkd-demo ({p.name}): BLEU against decoding speed")
        text = results_markdown(
            rows, title="Sequence-level knowledge distillation: demo results",
            signature=signature, beam=p.beam, mixing=self.builtin, notes=notes,
            findings=self.findings(rows), plot_name=plot_path.name, diagnostics=diagnostics,
        )
        atomic_write_text(self.out / "results.md", text)
        payload = {"preset": asdict(p), "signature": signature,
                   "rows": [asdict(r) for r in rows],
                   "stages": [asdict(r) for r in self.runs]}
        atomic_write_text(self.out / "results.json",
                          json.dumps(payload, indent=1, default=str) + "\n")
        return table + f"\nBLEU: sacrebleu {signature}", rows

    def _refs(self) -> int:
        return count_lines(self.raw / "test.tgt")
