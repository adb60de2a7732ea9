"""Teacher decoding speed for sequence-level KD, fairseq against CTranslate2, side by side.

    python benchmarks/teacher_decode_speed.py            # a Multi30k run's defaults:
        --corpus ../shared/data/multi30k-en-de --data runs/multi30k/data-bin \\
        --teacher runs/multi30k/models/teacher/checkpoint_best.pt \\
        --spm-model runs/multi30k/spm/spm.model --work runs/teacher-decode-speed

The first ``--sentences`` training sentences of the corpus (encoded with ``--spm-model``, or
taken as already segmented with ``--spm-model none``) and its test set are binarized with the
data-bin's dictionaries; the teacher is exported to CTranslate2 float32 (``seqkd-export``).
Rows: the teacher decoded by ``seqkd-generate`` (fairseq, the reference) and by the CTranslate2
teacher of ``seqkd-build`` (:mod:`fairseq_seqkd.distill.ct2_teacher`) in float32 and in int8
(the float32 export quantized on load), all with ``--beam``, one n-best hypothesis, the length
caps of the Multi30k runs and ``--threads`` threads. Each round decodes the training sentences
with every engine, in a rotating order; sentences/s is the median over the rounds of the
decoding loop's time (no loading). Columns: sentences/s, the ratio to the reference, the
teacher's test-set BLEU with the same beam in that engine (sacrebleu), and the share of training
sentences whose best hypothesis is the reference's. Prints the table and the targets: int8 at
least 2x the reference's sentences/s, float32's best hypotheses identical on at least 98 %.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from fairseq.data import data_utils

from fairseq_seqkd.deploy.ct2_export import read_manifest
from fairseq_seqkd.digests import file_sha256
from fairseq_seqkd.distill.ct2_teacher import ct2_generate_nbest
from fairseq_seqkd.distill.evaluate import bleu
from fairseq_seqkd.distill.generate import generate_nbest
from fairseq_seqkd.distill.nbest import read_nbest
from fairseq_seqkd.experiments.pipeline import MAX_LEN_A, MAX_LEN_B
from fairseq_seqkd.textfiles import iter_text_lines, read_text_lines

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
REFERENCE = "fairseq"
ENGINES = {REFERENCE: None, "CTranslate2 float32": "float32", "CTranslate2 int8": "int8"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    runs = REPO / "runs" / "multi30k"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(REPO.parent / "shared/data/multi30k-en-de"),
                        help="raw train.* and test.* (default: the shared Multi30k corpus)")
    parser.add_argument("--data", default=str(runs / "data-bin"),
                        help="the teacher's data-bin (its dictionaries)")
    parser.add_argument("--teacher", default=str(runs / "models/teacher/checkpoint_best.pt"))
    parser.add_argument("--spm-model", default=str(runs / "spm/spm.model"),
                        help="sentencepiece model of --data, or 'none' for a corpus already "
                        "segmented into the dictionaries' tokens")
    parser.add_argument("--work", default=str(REPO / "runs" / "teacher-decode-speed"),
                        help="directory for the binarized sentences, export and n-best files")
    parser.add_argument("--sentences", type=int, default=2000,
                        help="training sentences decoded per round (default 2000)")
    parser.add_argument("--test", default="test", help="test set of --corpus (default test: "
                        "Multi30k's test2016)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="sentences per batch in both engines (default 64)")
    parser.add_argument("--max-len-a", type=float, default=MAX_LEN_A)
    parser.add_argument("--max-len-b", type=int, default=MAX_LEN_B)
    parser.add_argument("--json", help="also write the rows here")
    return parser.parse_args(argv)


@dataclass
class Row:
    engine: str
    rates: list[float] = field(default_factory=list)  # sentences/s per round
    bleu: float | None = None
    identical: float | None = None  # share of best hypotheses equal to the reference's
    best: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


def run(*command: object) -> None:
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        sys.exit(f"{Path(str(command[0])).name} failed:\n{proc.stderr[-3000:]}")


def binarize(args: argparse.Namespace, work: Path) -> Path:
    """The first --sentences training pairs as ``train``, the test set as ``test``."""
    src, tgt = data_utils.infer_language_pair(args.data)
    if src is None:
        sys.exit(f"--data {args.data}: no binarized split found")
    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    spm = None
    if args.spm_model != "none":
        import sentencepiece

        spm = sentencepiece.SentencePieceProcessor(model_file=args.spm_model)
    for split, name, limit in (("train", "train", args.sentences), ("test", args.test, None)):
        for side, lang in (("src", src), ("tgt", tgt)):
            lines = []
            for line in iter_text_lines(os.path.join(args.corpus, f"{name}.{side}")):
                if limit is not None and len(lines) == limit:
                    break
                lines.append(" ".join(spm.encode(line, out_type=str)) if spm else line)
            (raw / f"{split}.{lang}").write_text("".join(f"{x}\n" for x in lines), "utf-8")
    out = work / "data-bin"
    shutil.rmtree(out, ignore_errors=True)
    run(BIN / "fairseq-preprocess", "--source-lang", src, "--target-lang", tgt,
        "--trainpref", raw / "train", "--testpref", raw / "test", "--destdir", out,
        "--srcdict", Path(args.data) / f"dict.{src}.txt",
        "--tgtdict", Path(args.data) / f"dict.{tgt}.txt", "--workers", "1")
    return out


def export(teacher: str, output: Path) -> Path:
    if output.is_dir() and read_manifest(str(output)).source_sha256 == [file_sha256(teacher)]:
        return output
    run(BIN / "seqkd-export", "--input", teacher, "--format", "ctranslate2", "--quantization",
        "float32", "--output", output, "--force")
    return output


def decode(engine: str, args: argparse.Namespace, data: Path, split: str, ct2: Path,
           output: Path) -> tuple[list[str], float]:
    """Best hypotheses of ``split`` (in order) and the decoding loop's sentences/s."""
    for stale in (output, Path(f"{output}.skipped")):
        stale.unlink(missing_ok=True)
    shutil.rmtree(f"{output}.parts", ignore_errors=True)
    caps = {"max_len_a": args.max_len_a, "max_len_b": args.max_len_b}
    if ENGINES[engine] is None:
        summary = generate_nbest([
            str(data), "--path", args.teacher, "--gen-subset", split, "--beam", str(args.beam),
            "--nbest", "1", "--batch-size", str(args.batch_size), "--cpu", "--num-workers", "0",
            "--no-progress-bar", "--max-len-a", str(args.max_len_a), "--max-len-b",
            str(args.max_len_b), "--output", str(output),
            "--user-dir", str(REPO / "fairseq_seqkd"),
        ])
    else:
        summary = ct2_generate_nbest(str(data), split, str(ct2), str(output), beam=args.beam,
                                     nbest=1, threads=args.threads,
                                     quantization=ENGINES[engine],
                                     batch_size=args.batch_size, **caps)
    nbest = read_nbest(output)
    best = [nbest[i][0].tokens if i in nbest else "" for i in range(summary.sentences
                                                                     + len(summary.skipped))]
    return best, summary.decoded / max(summary.decode_seconds, 1e-9)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    data = binarize(args, work)
    ct2 = export(args.teacher, work / "teacher-ct2")
    rows = {engine: Row(engine) for engine in ENGINES}
    names = list(ENGINES)
    for round_ in range(args.rounds):
        for engine in names[round_ % len(names):] + names[:round_ % len(names)]:
            best, rate = decode(engine, args, data, "train", ct2, work / "train.nbest")
            rows[engine].rates.append(rate)
            rows[engine].best = best
            print(f"round {round_ + 1}: {engine}: {rate:.1f} sentences/s", flush=True)
    references = read_text_lines(os.path.join(args.corpus, f"{args.test}.tgt"))
    scheme = None if args.spm_model == "none" else "sentencepiece"
    reference = rows[REFERENCE]
    for row in rows.values():
        hyps, _ = decode(row.engine, args, data, "test", ct2, work / "test.nbest")
        row.bleu = bleu([data_utils.post_process(h, scheme) for h in hyps], references)[0]
        same = sum(a == b for a, b in zip(row.best, reference.best, strict=True))
        row.identical = same / len(reference.best)
    print()
    print(f"Teacher decoding, {len(reference.best):,} training sentences, beam {args.beam}, "
          f"{args.threads} thread(s), batch {args.batch_size}, median of {args.rounds} rounds; "
          f"BLEU on {args.test} ({len(references):,} sentences)\n")
    print("| engine | sentences/s | vs fairseq | BLEU | identical best hypotheses |")
    print("|---|--:|--:|--:|--:|")
    for row in rows.values():
        print(f"| {row.engine} | {row.rate:,.1f} | {row.rate / reference.rate:.2f}x | "
              f"{row.bleu:.2f} | {100 * row.identical:.1f} % |")
    int8, fp32 = rows["CTranslate2 int8"], rows["CTranslate2 float32"]
    print()
    fast = int8.rate >= 2 * reference.rate
    print(f"- CTranslate2 int8 at least 2x fairseq's sentences/s: "
          f"{int8.rate / reference.rate:.2f}x, {'met' if fast else 'MISSED'}")
    print(f"- CTranslate2 float32 best hypotheses identical on at least 98 %: "
          f"{100 * fp32.identical:.1f} %, {'met' if fp32.identical >= 0.98 else 'MISSED'}")
    print(f"- what int8 does to the teacher's BLEU: {int8.bleu - reference.bleu:+.2f} "
          f"({int8.bleu:.2f} against fairseq's {reference.bleu:.2f})")
    print(f"\n{time.perf_counter() - begin:.0f}s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{**asdict(r), "best": None, "rate": r.rate} for r in rows.values()], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    # fairseq's imports leave the root logger at DEBUG; hydra warns on every config it builds
    logging.basicConfig(level=logging.WARNING, force=True)
    warnings.filterwarnings("ignore", category=UserWarning)
    sys.exit(main())
