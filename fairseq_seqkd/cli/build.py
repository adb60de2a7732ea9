"""``seqkd-build``: teacher n-best -> selected targets -> distilled data-bin, in one command.

Example::

    seqkd-build --data data-bin --teacher teacher/checkpoint_best.pt --output data-kd \\
        --strategy seq-inter --beam 35 --sim bleu --remove-bpe sentencepiece --workers 2

Stages, each recorded in ``OUT_DIR/seqkd/<stage>/``:

1. generate - ``seqkd-generate`` decodes the split with the teacher (beam K, n-best);
2. select   - ``select_targets`` picks one target per sentence (the same rules as
   ``seqkd-select``; sources and references are read from the binarized split itself);
3. binarize - the targets are encoded with the data's dictionaries (checked equal to the
   teacher's) into ``OUT_DIR``, beside copies of every other split and the dictionaries, so
   stock ``fairseq-train OUT_DIR`` reads it.

A stage whose ``done.json`` records the same options and whose outputs are intact is skipped,
so a killed build resumes where it stopped. A stage asked to run with other options than the
recorded ones is redone (the change is printed), and so is every stage after it. With
``--fallback gold`` (the default) the train split stays aligned by index with the gold one, so
``OUT_DIR`` also serves as ``--distilled-data``; with ``--fallback drop`` only the kept
sentences are written, their gold indices listed in ``<split>.kept-indices``, and such data is
refused as ``--distilled-data``.

Bad input exits with status 1 after a single ``seqkd-build: error: ...`` line on stderr, before
anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from fairseq_seqkd.cli.entry import OneLineParser, run_main
from fairseq_seqkd.errors import SeqKDError

PROG = "seqkd-build"
STRATEGIES = ("seq-kd", "seq-inter")
SIMILARITIES = ("bleu", "chrf", "ter")
FALLBACKS = ("gold", "drop")
BPE_SCHEMES = ("sentencepiece", "subword_nmt", "none")
WORK_DIR = "seqkd"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Build sequence-level KD training data (Kim & Rush, 2016): teacher beam "
        "search, target selection and binarization, resumable stage by stage.",
    )
    p.add_argument("--data", required=True, metavar="DATA_BIN",
                   help="fairseq data-bin of the gold data (fairseq-preprocess output)")
    p.add_argument("--teacher", required=True, metavar="CKPT[:CKPT2]",
                   help="teacher checkpoint; several joined by ':' decode as an ensemble")
    p.add_argument("--output", required=True, metavar="OUT_DIR",
                   help="data-bin to write (created); its seqkd/ folder holds the stages")
    p.add_argument("--strategy", choices=STRATEGIES, required=True,
                   help="seq-kd: the teacher's best hypothesis; seq-inter: the hypothesis of "
                   "the n-best closest to the reference by --sim")
    p.add_argument("--sim", choices=SIMILARITIES, default="bleu",
                   help="sentence similarity for seq-inter (sacrebleu's sentence-level "
                   "defaults; ter: lower is better)")
    p.add_argument("--beam", type=int, default=5, metavar="K", help="beam size (default 5)")
    p.add_argument("--nbest", type=int, default=None, metavar="K",
                   help="hypotheses kept per sentence (default: 1 for seq-kd, --beam for "
                   "seq-inter)")
    p.add_argument("--remove-bpe", choices=BPE_SCHEMES, default="none",
                   help="undo this subword segmentation before computing similarities")
    p.add_argument("--max-len-ratio", type=float, default=None, metavar="R",
                   help="drop a hypothesis whose subword length ratio to the source exceeds R "
                   "either way")
    p.add_argument("--dedup", action="store_true", help="drop repeated (source, target) pairs")
    p.add_argument("--fallback", choices=FALLBACKS, default="gold",
                   help="gold: a sentence without a usable hypothesis keeps its reference (the "
                   "split stays aligned); drop: it is left out")
    p.add_argument("--workers", type=int, default=1, metavar="W",
                   help="processes scoring similarities")
    p.add_argument("--cpu", action="store_true", help="decode on the CPU")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="sentences per decoding batch")
    p.add_argument("--split", default="train", help="split to distill (default: train)")
    return p


# ------------------------------------------------------------------------------ data-bin


class DataBin:
    """The gold data-bin: its language pair, dictionaries and the split's files."""

    def __init__(self, directory: str, split: str):
        from fairseq.data import Dictionary, data_utils

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
        from fairseq_seqkd.distill.binarize import load_split

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
    from fairseq_seqkd.atomic import atomic_write_text

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


def say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


# ------------------------------------------------------------------------------ checks


def _teacher_paths(spec: str) -> list[str]:
    paths = [p for p in spec.split(":") if p]
    if not paths:
        raise SeqKDError("--teacher is empty; give a checkpoint, or several joined by ':'")
    for path in paths:
        if not os.path.isfile(path):
            raise SeqKDError(f"--teacher: {path} does not exist")
    return paths


def check_teacher_dictionaries(paths: Sequence[str], data: DataBin) -> None:
    """The teacher must have been trained with the data's dictionaries (same symbols, order)."""
    from fairseq_seqkd.teacher import check_teacher_dictionaries as check
    from fairseq_seqkd.teacher import load_checkpoint_state

    for path in paths:
        state = load_checkpoint_state(path, "--teacher")
        check(path, state, (data.src_dict, data.tgt_dict),
              tuple(f"--data {data.dict_files[lang]}" for lang in (data.src, data.tgt)),
              langs=(data.src, data.tgt))
        del state


def _check_args(args: argparse.Namespace) -> None:
    if args.beam < 1:
        raise SeqKDError(f"--beam must be >= 1, got {args.beam}")
    if args.nbest is None:
        args.nbest = 1 if args.strategy == "seq-kd" else args.beam
    if not 1 <= args.nbest <= args.beam:
        raise SeqKDError(f"--nbest must be in [1, --beam {args.beam}], got {args.nbest}")
    if args.strategy == "seq-inter" and args.nbest == 1:
        say("warning: seq-inter with --nbest 1 selects the teacher's best, as seq-kd does")
    if args.workers < 1:
        raise SeqKDError(f"--workers must be >= 1, got {args.workers}")
    if args.batch_size is not None and args.batch_size < 1:
        raise SeqKDError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_len_ratio is not None and not args.max_len_ratio >= 1.0:
        raise SeqKDError(f"--max-len-ratio must be >= 1, got {args.max_len_ratio}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.split):
        raise SeqKDError(f"--split must be a split name such as train, got {args.split!r}")


# ------------------------------------------------------------------------------ stage bodies


def run_generate(
    args: argparse.Namespace, data: DataBin, stage: Stage, size: int
) -> tuple[dict, dict]:
    try:
        from fairseq_seqkd.cli.generate import main as generate_main
    except ImportError as exc:
        raise SeqKDError(f"seqkd-generate is not available ({exc})") from exc
    nbest_path = stage.path(f"{args.split}.nbest")
    argv = [data.dir, "--path", args.teacher, "--gen-subset", args.split,
            "--beam", str(args.beam), "--nbest", str(args.nbest), "--output", nbest_path,
            "--skip-invalid-size-inputs-valid-test"]  # too long: listed, then gold fallback
    if args.cpu:
        argv.append("--cpu")
    if args.batch_size:
        argv += ["--batch-size", str(args.batch_size)]
    start = time.perf_counter()
    status = generate_main(argv)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SeqKDError(f"seqkd-generate failed (exit status {status}); see its message above")
    nbest, skipped = read_generated(nbest_path, size)
    hyps = sum(len(h) for h in nbest.values())
    summary = {"sentences": size, "decoded": len(nbest), "skipped": len(skipped),
               "hypotheses": hyps, "beam": args.beam, "nbest": args.nbest,
               "seconds": round(seconds, 2)}
    outputs = [nbest_path] + ([nbest_path + ".skipped"]
                              if os.path.exists(nbest_path + ".skipped") else [])
    stage.finish(outputs, summary)
    return summary, nbest


def read_generated(nbest_path: str, size: int) -> tuple[dict, set[int]]:
    """The n-best and the skipped indices; every index must be in exactly one of them."""
    from fairseq_seqkd.distill.nbest import check_indices, read_nbest

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
    args: argparse.Namespace, stage: Stage, nbest: dict, sources: list[str],
    references: list[str],
) -> dict:
    from fairseq_seqkd.distill.binarize import write_text
    from fairseq_seqkd.distill.select import select_targets

    start = time.perf_counter()
    selection = select_targets(
        nbest, size=len(references), sources=sources, references=references,
        strategy=args.strategy, sim=args.sim,
        remove_bpe_scheme=None if args.remove_bpe == "none" else args.remove_bpe,
        max_len_ratio=args.max_len_ratio, dedup=args.dedup, fallback=args.fallback,
        workers=args.workers,
    )
    seconds = time.perf_counter() - start
    kept = selection.kept_indices
    targets_path = stage.path(f"{args.split}.targets")
    kept_path = stage.path(f"{args.split}.kept")
    report_path = stage.path("report.json")
    report = {"strategy": args.strategy, "sim": args.sim, "fallback": args.fallback,
              **selection.report, "seconds": round(seconds, 3)}
    write_text(targets_path, "".join(f"{selection.targets[i]}\n" for i in kept))
    write_text(kept_path, "".join(f"{i}\n" for i in kept))
    _write_json(report_path, report)
    # the report holds a timing: it is written but not part of the hashed output, so a rerun
    # that selects the same targets leaves the binarized data alone
    stage.finish([targets_path, kept_path], report)
    return report


def run_binarize(args: argparse.Namespace, data: DataBin, stage: Stage, select: Stage) -> dict:
    from fairseq_seqkd.distill.binarize import binarize_lines, copy_file, write_subset, write_text

    out = stage.out_dir
    with open(select.path(f"{args.split}.kept"), encoding="utf-8") as handle:
        kept = [int(line) for line in handle]
    with open(select.path(f"{args.split}.targets"), encoding="utf-8", newline="\n") as handle:
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
    kept_file = os.path.join(out, f"{args.split}.kept-indices")
    if args.fallback == "drop":
        write_text(kept_file, "".join(f"{i}\n" for i in kept))
        outputs.append(kept_file)
    elif os.path.exists(kept_file):
        os.unlink(kept_file)
    summary = {"sentences": stats.sentences, "gold_sentences": len(source),
               "target_tokens": stats.tokens, "unknown_tokens": stats.unknown,
               "copied": copied}
    if stats.unknown:
        say(f"warning: {stats.unknown} target tokens are not in {data.dict_files[data.tgt]} "
            f"(first: {stats.first_unknown!r}) and became <unk>")
    stage.finish(outputs, summary)
    return summary


# ------------------------------------------------------------------------------ main


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    data = DataBin(args.data, args.split)
    teachers = _teacher_paths(args.teacher)
    out = os.path.abspath(args.output)
    if os.path.exists(out) and not os.path.isdir(out):
        raise SeqKDError(f"--output: {args.output} exists and is not a directory")
    if os.path.isdir(out) and os.path.samefile(out, data.dir):
        raise SeqKDError("--output must differ from --data (it would overwrite the gold split)")

    generate = Stage(out, "generate", 1, {
        "data": data.fingerprint(), "teacher": _stat(teachers), "beam": args.beam,
        "nbest": args.nbest,
    })
    done = generate.done()
    nbest = None
    size = None
    if done is not None:
        say(f"{generate.label}: skipped, complete ({generate.done_file}): "
            f"{_summary_text(done['summary'])}")
    else:
        check_teacher_dictionaries(teachers, data)  # before anything is written
        size = len(data.load(data.tgt))
        os.makedirs(out, exist_ok=True)
        reason = generate.start(keep_partial=True)
        say(f"{generate.label}: running ({reason}): beam {args.beam}, {args.nbest}-best of "
            f"{size} sentences with {args.teacher}")
        summary, nbest = run_generate(args, data, generate, size)
        say(f"{generate.label}: done: {_summary_text(summary)} -> {generate.dir}")

    select = Stage(out, "select", 2, {
        "generate": generate.digest(), "strategy": args.strategy, "sim": args.sim,
        "remove_bpe": args.remove_bpe, "max_len_ratio": args.max_len_ratio,
        "dedup": args.dedup, "fallback": args.fallback,
    })
    done = select.done()
    if done is not None:
        say(f"{select.label}: skipped, complete ({select.done_file}); selection report:")
        report = done["summary"]
    else:
        reason = select.start(keep_partial=False)
        say(f"{select.label}: running ({reason}): {args.strategy}"
            + (f" by sentence {args.sim}" if args.strategy == "seq-inter" else ""))
        from fairseq_seqkd.distill.binarize import token_lines

        sources = token_lines(data.load(data.src), data.src_dict)
        references = token_lines(data.load(data.tgt), data.tgt_dict)
        size = len(references)
        if nbest is None:
            nbest, _ = read_generated(generate.path(f"{args.split}.nbest"), size)
        report = run_select(args, select, nbest, sources, references)
        say(f"{select.label}: done in {report['seconds']}s; selection report:")
    print(json.dumps(report, indent=2), flush=True)

    binarize = Stage(out, "binarize", 3, {
        "select": select.digest(), "data": data.fingerprint(),
    })
    done = binarize.done()
    if done is not None:
        say(f"{binarize.label}: skipped, complete ({binarize.done_file}): "
            f"{_summary_text(done['summary'])}")
    else:
        reason = binarize.start(keep_partial=False)
        say(f"{binarize.label}: running ({reason})")
        summary = run_binarize(args, data, binarize, select)
        say(f"{binarize.label}: done: {_summary_text(summary)} -> {out}")
    say(f"distilled data-bin ready: {out} (fairseq-train {args.output}"
        + (f"; or --distilled-data {args.output}" if args.fallback == "gold" else "") + ")")
    return 0


def _summary_text(summary: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {len(v) if isinstance(v, list) else v}" for k, v in summary.items()
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seqkd-build``; returns the exit status."""
    return run_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
