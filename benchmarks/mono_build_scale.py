"""How ``seqkd-build --mono-source`` scales with the monolingual text: time and peak memory.

    python benchmarks/mono_build_scale.py --data runs/multi30k/data-bin \\
        --teacher runs/multi30k/teacher-ct2 --spm-model runs/multi30k/spm/spm.model \\
        --mono ../shared/data/multi30k-en-mono/train.src --sizes 10000 40000 115000

The teacher (a fairseq checkpoint or a CTranslate2 model directory) first distils the data-bin's
split alone, once (``WORK/base``). Each size then runs in a copy of that build, as its own
``seqkd-build`` process with ``--mono-source MONO --mono-size N --spm-model MODEL``: the
parallel decoding is up to date there, so what grows with N is the monolingual text's
segmentation, decoding, selection and binarization (the parallel selection and binarization
run again at every size, the same work each time). Per size: the process's wall time and its
peak resident memory (``ru_maxrss`` of that child, from ``os.wait4``), the time per 1,000 lines,
the monolingual decoding's own time per 1,000 lines (from the build record), and the lines kept.
Then the ratios of the largest size to the smallest: time per line (target: within 1.2x) and
peak memory (target: within 1.3x), for a build that streams, so that a 10M-line file is a
matter of time, not of memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fairseq_seqkd.experiments.pipeline import MAX_LEN_A, MAX_LEN_B

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
TIME_TARGET, MEMORY_TARGET = 1.2, 1.3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the teacher's data-bin")
    parser.add_argument("--teacher", required=True,
                        help="fairseq checkpoint or CTranslate2 model directory")
    parser.add_argument("--spm-model", required=True,
                        help="sentencepiece model of --data ('none': --mono is segmented)")
    parser.add_argument("--mono", default=str(REPO.parent / "shared/data/multi30k-en-mono/"
                                              "train.src"),
                        help="monolingual source text (default: Multi30k's other captions)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000, 115000],
                        help="--mono-size of each run (default 10000 40000 115000)")
    parser.add_argument("--work", default=str(REPO / "runs" / "mono-build-scale"))
    parser.add_argument("--split", default="train", help="the data-bin's split (default train)")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="teacher threads (default 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-len-a", type=float, default=MAX_LEN_A)
    parser.add_argument("--max-len-b", type=int, default=MAX_LEN_B)
    parser.add_argument("--json", help="also write the rows here")
    return parser.parse_args(argv)


@dataclass
class Row:
    lines: int  # --mono-size
    kept: int  # monolingual pairs in the distilled split
    seconds: float  # wall time of the seqkd-build process
    decode_seconds: float  # the monolingual decoding's, from the build record
    peak_mib: float  # peak resident memory of the process

    @property
    def per_1k(self) -> float:
        return 1000 * self.seconds / self.lines

    @property
    def decode_per_1k(self) -> float:
        return 1000 * self.decode_seconds / self.lines


def build_argv(args: argparse.Namespace, output: Path, *extra: str) -> list[str]:
    return [str(BIN / "seqkd-build"), "--data", args.data, "--teacher", args.teacher,
            "--output", str(output), "--strategy", "seq-kd", "--beam", str(args.beam),
            "--max-len-a", str(args.max_len_a), "--max-len-b", str(args.max_len_b),
            "--max-repeats", "2", "--batch-size", str(args.batch_size), "--cpu",
            "--teacher-threads", str(args.threads), "--split", args.split, *extra]


def measured(argv: list[str], log: Path, threads: int) -> tuple[float, float]:
    """Run ``argv`` as a child process; its wall time (s) and peak resident memory (MiB)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        sys.exit(f"{' '.join(argv[:1])} exited {proc.returncode}; the end of {log}:\n{tail}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def summary(out: Path, stage: str) -> dict:
    return json.loads((out / "seqkd" / stage / "done.json").read_text())["summary"]


def run_size(args: argparse.Namespace, base: Path, lines: int) -> Row:
    out = Path(args.work) / f"mono-{lines}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out)
    spm = [] if args.spm_model == "none" else ["--spm-model", args.spm_model]
    seconds, peak = measured(build_argv(args, out, "--mono-source", args.mono, "--mono-size",
                                        str(lines), *spm), out.with_suffix(".log"), args.threads)
    mono = summary(out, "mono")
    if mono["sentences"] != lines:
        sys.exit(f"--mono {args.mono} has {mono['sentences']} usable lines, fewer than {lines}")
    return Row(lines=lines, kept=summary(out, "binarize")["mono"], seconds=seconds,
               decode_seconds=summary(out, "generate-mono")["seconds"], peak_mib=peak)


def table(rows: list[Row]) -> str:
    head = ("| monolingual lines | kept | wall s | s / 1k lines | decoding s / 1k lines | "
            "peak RSS MiB |\n| --: | --: | --: | --: | --: | --: |\n")
    return head + "".join(
        f"| {r.lines:,} | {r.kept:,} | {r.seconds:.1f} | {r.per_1k:.2f} | {r.decode_per_1k:.2f} "
        f"| {r.peak_mib:.0f} |\n" for r in rows)


def verdict(rows: list[Row]) -> str:
    small, large = min(rows, key=lambda r: r.lines), max(rows, key=lambda r: r.lines)
    time_ratio = large.per_1k / small.per_1k
    memory_ratio = large.peak_mib / small.peak_mib
    name = f"{large.lines:,} / {small.lines:,} lines"
    return (f"{name}: time per line x{time_ratio:.2f} (target within {TIME_TARGET}x: "
            f"{'met' if time_ratio <= TIME_TARGET else 'NOT met'}), peak memory "
            f"x{memory_ratio:.2f} (target within {MEMORY_TARGET}x: "
            f"{'met' if memory_ratio <= MEMORY_TARGET else 'NOT met'})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if len(args.sizes) < 2 or min(args.sizes) < 1:
        sys.exit("--sizes: give at least two sizes >= 1")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = work / "base"
    seconds, peak = measured(build_argv(args, base), work / "base.log", args.threads)
    print(f"the {args.split} split alone (decoded once, or up to date): {seconds:.1f} s, peak "
          f"RSS {peak:.0f} MiB; {args.teacher}, beam {args.beam}, {args.threads} thread(s)",
          flush=True)
    rows = []
    for lines in sorted(args.sizes):
        rows.append(run_size(args, base, lines))
        print(f"  {lines:,} lines: {rows[-1].seconds:.1f} s, {rows[-1].peak_mib:.0f} MiB",
              flush=True)
    print(table(rows) + verdict(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([{**asdict(r), "per_1k": r.per_1k}
                                               for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
