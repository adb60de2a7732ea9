"""Sequence-level KD data in one call: teacher n-best -> selected targets -> distilled data-bin.

:func:`build_distilled_data` is ``seqkd-build``; stages, each recorded in
``OUT_DIR/seqkd/<stage>/``:

1. generate - :func:`fairseq_seqkd.distill.generate.generate_nbest` decodes the split with the
   teacher (beam K, n-best);
2. select   - :func:`fairseq_seqkd.distill.select.select_targets` picks one target per sentence
   (the same rules and filters as ``seqkd-select``, ``filter_worst`` and ``min_score`` on the
   n-best's scores included; sources and references are read from the binarized split itself);
3. binarize - the targets are encoded with the data's dictionaries (checked equal to the
   teacher's) into ``OUT_DIR``, beside copies of every other split and the dictionaries, so
   stock ``fairseq-train OUT_DIR`` reads it.

A stage whose ``done.json`` records the same options and whose outputs are intact is skipped,
so a killed build resumes where it stopped. A stage asked to run with other options than the
recorded ones is redone (the change is logged), and so is every stage after it. With
``fallback="gold"`` (the default) the train split stays aligned by index with the gold one, so
``OUT_DIR`` also serves as ``--distilled-data``; with ``fallback="drop"`` only the kept
sentences are written, their gold indices listed in ``<split>.kept-indices``, and such data is
refused as ``--distilled-data``.

Bad input raises :class:`~fairseq_seqkd.errors.SeqKDError` (one line) before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fairseq.data import Dictionary, data_utils

from ..atomic import atomic_write_text
from ..errors import SeqKDError
from ..teacher import check_teacher_dictionaries, load_checkpoint_state, split_paths
from .binarize import binarize_lines, copy_file, load_split, token_lines, write_subset, write_text
from .generate import generate_nbest
from .nbest import check_indices, read_nbest
from .select import check_max_repeats, check_score_filters, select_targets

logger = logging.getLogger(__name__)

STRATEGIES = ("seq-kd", "seq-inter")
SIMILARITIES = ("bleu", "chrf", "ter")
FALLBACKS = ("gold", "drop")
BPE_SCHEMES = ("sentencepiece", "subword_nmt", "none")
WORK_DIR = "seqkd"

Log = Callable[[str], None]


@dataclass
class BuildOptions:
    """What to build; the names are seqkd-build's options (``--max-len-ratio``: max_len_ratio)."""

    data: str  # fairseq data-bin of the gold data (fairseq-preprocess output)
    teacher: str  # teacher checkpoint; several joined by ':' decode as an ensemble
    output: str  # data-bin to write (created); its seqkd/ folder holds the stages
    strategy: str  # seq-kd: the teacher's best; seq-inter: the n-best closest to the reference
    sim: str = "bleu"  # seq-inter's sentence similarity (ter: lower is better)
    beam: int = 5
    nbest: int | None = None  # hypotheses kept: 1 for seq-kd, beam for seq-inter by default
    remove_bpe: str = "none"  # subword segmentation undone before similarities
    max_len_ratio: float | None = None  # drop hypotheses whose length ratio exceeds it
    max_repeats: int | None = None  # drop hypotheses with a phrase repeated more often in a row
    dedup: bool = False  # drop repeated (source, target) pairs
    filter_worst: float = 0.0  # drop this % of sentences whose chosen target scores lowest
    min_score: float | None = None  # drop hypotheses whose n-best score is below it
    fallback: str = "gold"  # gold: keep the reference when no hypothesis is usable; drop
    workers: int = 1  # processes scoring similarities
    cpu: bool = False  # decode on the CPU
    batch_size: int | None = None  # sentences per decoding batch
    # fairseq-generate's output cap, max_len_a * source length + max_len_b (None: fairseq's
    # 0 and 200): a teacher caught in a loop stops there instead of at 200 tokens
    max_len_a: float | None = None
    max_len_b: int | None = None
    split: str = "train"
    teacher_data: str | None = None  # directory of the teacher's dict.*.txt (--teacher-data)

    def check(self, log: Log) -> None:
        """Refuse bad values in one line; fill in the default ``nbest``."""
        for name, choices in (("strategy", STRATEGIES), ("sim", SIMILARITIES),
                              ("fallback", FALLBACKS), ("remove_bpe", BPE_SCHEMES)):
            if getattr(self, name) not in choices:
                raise SeqKDError(f"--{name.replace('_', '-')} must be one of "
                                 f"{', '.join(choices)}, got {getattr(self, name)!r}")
        if self.beam < 1:
            raise SeqKDError(f"--beam must be >= 1, got {self.beam}")
        if self.nbest is None:
            self.nbest = 1 if self.strategy == "seq-kd" else self.beam
        if not 1 <= self.nbest <= self.beam:
            raise SeqKDError(f"--nbest must be in [1, --beam {self.beam}], got {self.nbest}")
        if self.strategy == "seq-inter" and self.nbest == 1:
            log("warning: seq-inter with --nbest 1 selects the teacher's best, as seq-kd does")
        if self.workers < 1:
            raise SeqKDError(f"--workers must be >= 1, got {self.workers}")
        if self.max_len_a is not None and self.max_len_a < 0:
            raise SeqKDError(f"--max-len-a must be >= 0, got {self.max_len_a}")
        if self.max_len_b is not None and self.max_len_b < 1:
            raise SeqKDError(f"--max-len-b must be >= 1, got {self.max_len_b}")
        if self.batch_size is not None and self.batch_size < 1:
            raise SeqKDError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_len_ratio is not None and not self.max_len_ratio >= 1.0:
            raise SeqKDError(f"--max-len-ratio must be >= 1, got {self.max_len_ratio}")
        check_max_repeats(self.max_repeats)
        check_score_filters(self.filter_worst, self.min_score)
        # recorded as floats, so filter_worst=10 from Python and --filter-worst 10 match
        self.filter_worst = float(self.filter_worst)
        if self.min_score is not None:
            self.min_score = float(self.min_score)
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.split):
            raise SeqKDError(f"--split must be a split name such as train, got {self.split!r}")


@dataclass
class BuildSummary:
    """What :func:`build_distilled_data` did: each stage's recorded summary, and which ran."""

    output: str  # the data-bin, as given
    fallback: str
    generate: dict[str, Any] = field(default_factory=dict)
    select: dict[str, Any] = field(default_factory=dict)  # the selection report
    binarize: dict[str, Any] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)  # stages run by this call (others: skipped)

    def describe(self) -> str:
        """The final line."""
        also = f"; or --distilled-data {self.output}" if self.fallback == "gold" else ""
        return (f"distilled data-bin ready: {os.path.abspath(self.output)} "
                f"(fairseq-train {self.output}{also})")


# ------------------------------------------------------------------------------ data-bin


class DataBin:
    """The gold data-bin: its language pair, dictionaries and the split's files."""

    def __init__(self, directory: str, split: str):
        if not os.path.isdir(directory):
            raise SeqKDError(f"--data: {directory} is not a directory")
        self.dir = os.path.abspath(directory)
        self.split = split
        src, tgt = data_utils.infer_language_pair(self.dir)
        if src is None or tgt is None:
            raise SeqKDError(
                f"--data: no binarized split in {directory} (expected files such as "
                f"{split}.src-tgt.src.bin from fairseq-preprocess)"
            )
        self.prefix = None
        for a, b in ((src, tgt), (tgt, src)):
            prefix = os.path.join(self.dir, f"{split}.{a}-{b}.")
            if all(os.path.isfile(prefix + f"{lang}.{ext}")
                   for lang in (a, b) for ext in ("bin", "idx")):
                self.prefix = prefix
                self.src, self.tgt = (src, tgt)
                break
        if self.prefix is None:
            raise SeqKDError(
                f"--data: {os.path.join(directory, f'{split}.{src}-{tgt}.{src}.bin')} (and its "
                f".idx, and the {tgt} side) not found; is --split {split} binarized?"
            )
        self.dict_files = {}
        self.dicts = {}
        for lang in (self.src, self.tgt):
            path = os.path.join(self.dir, f"dict.{lang}.txt")
            if not os.path.isfile(path):
                raise SeqKDError(f"--data: {path} not found")
            try:
                self.dicts[lang] = Dictionary.load(path)
            except Exception as exc:
                raise SeqKDError(f"--data: {path} is not a fairseq dictionary ({exc})") from exc
            self.dict_files[lang] = path
        self.split_files = [self.prefix + f"{lang}.{ext}"
                            for lang in (self.src, self.tgt) for ext in ("bin", "idx")]

    @property
    def src_dict(self) -> Any:
        return self.dicts[self.src]

    @property
    def tgt_dict(self) -> Any:
        return self.dicts[self.tgt]

    def fingerprint(self) -> dict[str, Any]:
        files = [*self.dict_files.values(), *self.split_files]
        return {"dir": self.dir, "split": self.split, "files": _stat(files)}

    def load(self, lang: str) -> Any:
        return load_split(self.prefix + lang, self.dicts[lang], "--data")

    def other_files(self) -> list[str]:
        """Every file to copy unchanged: dictionaries and the other splits."""
        own = re.compile(rf"{re.escape(self.split)}[0-9]*\.")
        names = []
        for name in sorted(os.listdir(self.dir)):
            path = os.path.join(self.dir, name)
            if (name.startswith(".") or not os.path.isfile(path) or own.match(name)
                    or name == "preprocess.log"):
                continue
            names.append(name)
        return names


def _stat(paths: Sequence[str]) -> list[list[Any]]:
    out = []
    for path in paths:
        st = os.stat(path)
        out.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    return out


# ------------------------------------------------------------------------------ stages


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class Stage:
    """One resumable step: ``options.json`` when it starts, ``done.json`` when it is complete.

    ``done.json`` records the options, the size of every output and a hash of their bytes; the
    stage is complete when options and sizes still hold. Downstream stages put that hash
    (:meth:`digest`) into their options, so a stage whose output changed redoes the ones after it.
    """

    def __init__(self, out_dir: str, name: str, number: int, options: dict[str, Any]):
        self.out_dir = out_dir
        self.name = name
        self.label = f"[{number}/3] {name}"
        self.dir = os.path.join(out_dir, WORK_DIR, name)
        self.options = _normalise(options)
        self.done_file = os.path.join(self.dir, "done.json")
        self.options_file = os.path.join(self.dir, "options.json")

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def done(self) -> dict[str, Any] | None:
        """The recorded completion if it matches the options and outputs, else None."""
        done = _read_json(self.done_file)
        if not isinstance(done, dict) or done.get("options") != self.options:
            return None
        for rel, size in done.get("outputs", {}).items():
            path = os.path.join(self.out_dir, rel)
            if not os.path.isfile(path) or os.path.getsize(path) != size:
                return None
        return done

    def why_redo(self) -> str:
        done = _read_json(self.done_file)
        if done is None:
            started = _read_json(self.options_file)
            if started == self.options:
                return "resuming an unfinished run"
            return "first run" if started is None else _changes(started, self.options)
        if done.get("options") != self.options:
            return _changes(done.get("options") or {}, self.options)
        return "its outputs are missing or changed"

    def start(self, keep_partial: bool) -> str:
        """Prepare the stage folder; a run with other options starts from an empty one."""
        reason = self.why_redo()
        # resume only an unfinished run with the same options; a completed run whose outputs
        # were lost or whose options differ starts over from an empty folder
        resumable = (keep_partial and not os.path.exists(self.done_file)
                     and _read_json(self.options_file) == self.options)
        if os.path.isdir(self.dir) and not resumable:
            shutil.rmtree(self.dir)
        os.makedirs(self.dir, exist_ok=True)
        if os.path.exists(self.done_file):
            os.unlink(self.done_file)
        _write_json(self.options_file, self.options)
        return reason

    def finish(self, outputs: Sequence[str], summary: dict[str, Any]) -> None:
        sizes = {os.path.relpath(p, self.out_dir): os.path.getsize(p) for p in outputs}
        _write_json(self.done_file, {"options": self.options, "outputs": sizes,
                                     "content": _content_digest(outputs), "summary": summary})

    def digest(self) -> str:
        """Hash of the stage's output bytes: a rerun that reproduces them changes nothing
        downstream, any other change redoes the stages after this one."""
        done = _read_json(self.done_file)
        return str(done["content"]) if isinstance(done, dict) and "content" in done else ""


def _content_digest(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths, key=os.path.basename):
        digest.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, (dict, list)) or isinstance(b, (dict, list)) or len(str(a)) > 40:
            changed.append(f"{key} changed")  # data/teacher files, upstream output hashes
        else:
            changed.append(f"{key}: {a} -> {b}")
    return "options changed (" + ", ".join(changed) + ")"


# ------------------------------------------------------------------------------ checks


def teacher_paths(spec: str) -> list[str]:
    paths = split_paths(spec, "--teacher")
    for path in paths:
        if not os.path.isfile(path):
            raise SeqKDError(f"--teacher: {path} does not exist")
    return paths


def check_teachers(paths: Sequence[str], data: DataBin, teacher_data: str | None) -> None:
    """The teacher must have been trained with the data's dictionaries (same symbols, order)."""
    for path in paths:
        state = load_checkpoint_state(path, "--teacher")
        check_teacher_dictionaries(
            path, state, (data.src_dict, data.tgt_dict),
            tuple(f"--data {data.dict_files[lang]}" for lang in (data.src, data.tgt)),
            teacher_data, langs=(data.src, data.tgt),
        )
        del state


# ------------------------------------------------------------------------------ stage bodies


def run_generate(
    opts: BuildOptions, data: DataBin, stage: Stage, size: int, log: Log
) -> tuple[dict, dict]:
    nbest_path = stage.path(f"{opts.split}.nbest")
    argv = [data.dir, "--path", opts.teacher, "--gen-subset", opts.split,
            "--beam", str(opts.beam), "--nbest", str(opts.nbest), "--output", nbest_path,
            "--skip-invalid-size-inputs-valid-test"]  # too long: listed, then gold fallback
    if opts.teacher_data:
        argv += ["--teacher-data", opts.teacher_data]
    if opts.cpu:
        argv.append("--cpu")
    if opts.batch_size:
        argv += ["--batch-size", str(opts.batch_size)]
    for flag, value in (("--max-len-a", opts.max_len_a), ("--max-len-b", opts.max_len_b)):
        if value is not None:
            argv += [flag, str(value)]
    start = time.perf_counter()
    log(generate_nbest(argv).describe())
    seconds = time.perf_counter() - start
    nbest, skipped = read_generated(nbest_path, size)
    hyps = sum(len(h) for h in nbest.values())
    summary = {"sentences": size, "decoded": len(nbest), "skipped": len(skipped),
               "hypotheses": hyps, "beam": opts.beam, "nbest": opts.nbest,
               "seconds": round(seconds, 2)}
    outputs = [nbest_path] + ([nbest_path + ".skipped"]
                              if os.path.exists(nbest_path + ".skipped") else [])
    stage.finish(outputs, summary)
    return summary, nbest


def read_generated(nbest_path: str, size: int) -> tuple[dict, set[int]]:
    """The n-best and the skipped indices; every index must be in exactly one of them."""
    nbest = read_nbest(nbest_path)
    check_indices(nbest, size, nbest_path, allow_missing=True)
    skipped: set[int] = set()
    skipped_path = nbest_path + ".skipped"
    if os.path.exists(skipped_path):
        with open(skipped_path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if not line.strip().isdigit():
                    raise SeqKDError(f"{skipped_path}:{lineno}: expected a sentence index, "
                                   f"got {line.strip()[:40]!r}")
                skipped.add(int(line))
    missing = [i for i in range(size) if not nbest.get(i) and i not in skipped]
    if missing:
        raise SeqKDError(
            f"{nbest_path} is incomplete: no hypotheses for sentence index {missing[0]} "
            f"({len(missing)} of {size} missing and not listed in {skipped_path})"
        )
    return nbest, skipped


def run_select(
    opts: BuildOptions, stage: Stage, nbest: dict, sources: list[str], references: list[str],
) -> dict:
    start = time.perf_counter()
    selection = select_targets(
        nbest, size=len(references), sources=sources, references=references,
        strategy=opts.strategy, sim=opts.sim,
        remove_bpe_scheme=None if opts.remove_bpe == "none" else opts.remove_bpe,
        max_len_ratio=opts.max_len_ratio, max_repeats=opts.max_repeats, dedup=opts.dedup,
        fallback=opts.fallback,
        workers=opts.workers, filter_worst=opts.filter_worst, min_score=opts.min_score,
    )
    seconds = time.perf_counter() - start
    kept = selection.kept_indices
    targets_path = stage.path(f"{opts.split}.targets")
    kept_path = stage.path(f"{opts.split}.kept")
    report_path = stage.path("report.json")
    report = {"strategy": opts.strategy, "sim": opts.sim, "fallback": opts.fallback,
              "filter_worst_percent": opts.filter_worst, "min_score": opts.min_score,
              **selection.report, "seconds": round(seconds, 3)}
    write_text(targets_path, "".join(f"{selection.targets[i]}\n" for i in kept))
    write_text(kept_path, "".join(f"{i}\n" for i in kept))
    _write_json(report_path, report)
    # the report holds a timing: it is written but not part of the hashed output, so a rerun
    # that selects the same targets leaves the binarized data alone
    stage.finish([targets_path, kept_path], report)
    return report


def run_binarize(
    opts: BuildOptions, data: DataBin, stage: Stage, select: Stage, log: Log
) -> dict:
    out = stage.out_dir
    with open(select.path(f"{opts.split}.kept"), encoding="utf-8") as handle:
        kept = [int(line) for line in handle]
    with open(select.path(f"{opts.split}.targets"), encoding="utf-8", newline="\n") as handle:
        targets = [line.rstrip("\n") for line in handle]
    if len(kept) != len(targets):
        raise SeqKDError(f"{select.dir} is inconsistent ({len(kept)} indices, {len(targets)} "
                         f"targets); delete it and rerun")
    name = os.path.basename(data.prefix)  # "<split>.<src>-<tgt>."
    outputs = []
    copied = []
    for file_name in data.other_files():
        copy_file(os.path.join(data.dir, file_name), os.path.join(out, file_name))
        outputs.append(os.path.join(out, file_name))
        copied.append(file_name)
    source = data.load(data.src)
    write_subset(source, kept, len(data.src_dict), os.path.join(out, name + data.src))
    stats = binarize_lines(targets, data.tgt_dict, os.path.join(out, name + data.tgt))
    outputs += [os.path.join(out, name + f"{lang}.{ext}")
                for lang in (data.src, data.tgt) for ext in ("bin", "idx")]
    kept_file = os.path.join(out, f"{opts.split}.kept-indices")
    if opts.fallback == "drop":
        write_text(kept_file, "".join(f"{i}\n" for i in kept))
        outputs.append(kept_file)
    elif os.path.exists(kept_file):
        os.unlink(kept_file)
    summary = {"sentences": stats.sentences, "gold_sentences": len(source),
               "target_tokens": stats.tokens, "unknown_tokens": stats.unknown,
               "copied": copied}
    if stats.unknown:
        log(f"warning: {stats.unknown} target tokens are not in {data.dict_files[data.tgt]} "
            f"(first: {stats.first_unknown!r}) and became <unk>")
    stage.finish(outputs, summary)
    return summary


# ------------------------------------------------------------------------------ the build


def build_distilled_data(
    data: str, teacher: str, output: str, strategy: str, *, log: Log | None = None,
    **options: Any,
) -> BuildSummary:
    """Build (or resume, or bring up to date) the distilled data-bin ``output``.

    ``options`` are the other fields of :class:`BuildOptions` (``beam=5, sim="bleu", ...``);
    ``log`` receives one progress message at a time (default: this module's logger). Raises
    :class:`SeqKDError` for bad input, before anything is written.
    """
    say: Log = log or logger.info
    opts = BuildOptions(data=data, teacher=teacher, output=output, strategy=strategy, **options)
    opts.check(say)
    bin_ = DataBin(opts.data, opts.split)
    teachers = teacher_paths(opts.teacher)
    out = os.path.abspath(opts.output)
    if os.path.exists(out) and not os.path.isdir(out):
        raise SeqKDError(f"--output: {opts.output} exists and is not a directory")
    if os.path.isdir(out) and os.path.samefile(out, bin_.dir):
        raise SeqKDError("--output must differ from --data (it would overwrite the gold split)")
    result = BuildSummary(output=opts.output, fallback=opts.fallback)

    generate = Stage(out, "generate", 1, {
        "data": bin_.fingerprint(), "teacher": _stat(teachers), "beam": opts.beam,
        "nbest": opts.nbest,
        # only when set: n-best files made before the options keep their record
        **{name: value for name, value in (("max_len_a", opts.max_len_a),
                                           ("max_len_b", opts.max_len_b)) if value is not None},
    })
    done = generate.done()
    nbest = None
    if done is not None:
        say(f"{generate.label}: skipped, complete ({generate.done_file}): "
            f"{_summary_text(done['summary'])}")
        result.generate = done["summary"]
    else:
        check_teachers(teachers, bin_, opts.teacher_data)  # before anything is written
        size = len(bin_.load(bin_.tgt))
        os.makedirs(out, exist_ok=True)
        reason = generate.start(keep_partial=True)
        say(f"{generate.label}: running ({reason}): beam {opts.beam}, {opts.nbest}-best of "
            f"{size} sentences with {opts.teacher}")
        result.generate, nbest = run_generate(opts, bin_, generate, size, say)
        result.ran.append(generate.name)
        say(f"{generate.label}: done: {_summary_text(result.generate)} -> {generate.dir}")

    select = Stage(out, "select", 2, {
        "generate": generate.digest(), "strategy": opts.strategy, "sim": opts.sim,
        "remove_bpe": opts.remove_bpe, "max_len_ratio": opts.max_len_ratio,
        "dedup": opts.dedup, "fallback": opts.fallback, "filter_worst": opts.filter_worst,
        "min_score": opts.min_score,
        # only when set: builds made before the option keep their record
        **({"max_repeats": opts.max_repeats} if opts.max_repeats is not None else {}),
    })
    done = select.done()
    if done is not None:
        result.select = done["summary"]
        say(f"{select.label}: skipped, complete ({select.done_file}); selection report:\n"
            + json.dumps(result.select, indent=2))
    else:
        reason = select.start(keep_partial=False)
        say(f"{select.label}: running ({reason}): {opts.strategy}"
            + (f" by sentence {opts.sim}" if opts.strategy == "seq-inter" else "")
            + (f", dropping scores below {opts.min_score}" if opts.min_score is not None else "")
            + (f", dropping the worst-scored {opts.filter_worst:g} %" if opts.filter_worst else ""))
        sources = token_lines(bin_.load(bin_.src), bin_.src_dict)
        references = token_lines(bin_.load(bin_.tgt), bin_.tgt_dict)
        if nbest is None:
            nbest, _ = read_generated(generate.path(f"{opts.split}.nbest"), len(references))
        result.select = run_select(opts, select, nbest, sources, references)
        result.ran.append(select.name)
        say(f"{select.label}: done in {result.select['seconds']}s; selection report:\n"
            + json.dumps(result.select, indent=2))

    # the fallback decides whether <split>.kept-indices is written or removed, even when the
    # selection's bytes stay the same (nothing was dropped)
    binarize = Stage(out, "binarize", 3, {
        "select": select.digest(), "data": bin_.fingerprint(), "fallback": opts.fallback,
    })
    done = binarize.done()
    if done is not None:
        result.binarize = done["summary"]
        say(f"{binarize.label}: skipped, complete ({binarize.done_file}): "
            f"{_summary_text(result.binarize)}")
    else:
        reason = binarize.start(keep_partial=False)
        say(f"{binarize.label}: running ({reason})")
        result.binarize = run_binarize(opts, bin_, binarize, select, say)
        result.ran.append(binarize.name)
        say(f"{binarize.label}: done: {_summary_text(result.binarize)} -> {out}")
    return result


def _summary_text(summary: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {len(v) if isinstance(v, list) else v}" for k, v in summary.items()
    )
