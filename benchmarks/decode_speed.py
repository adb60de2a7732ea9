"""Decoding speed of the deployed student against its teacher, side by side in one run.

    python benchmarks/decode_speed.py --data runs/multi30k/data-bin \\
        --teacher runs/multi30k/models/teacher/checkpoint_best.pt \\
        --student runs/multi30k/models/seq-kd/checkpoint_best.pt \\
        --deep-shallow runs/multi30k/models/deep-shallow/checkpoint_best.pt \\
        --spm-model runs/multi30k/spm/spm.model \\
        --source ../shared/data/multi30k-en-de/test.src \\
        --reference ../shared/data/multi30k-en-de/test.tgt --work runs/decode-speed

Rows: teacher in fairseq with beam 5 (the reference), teacher in CTranslate2 int8
with beam 5 (the same-engine reference), the student in fairseq greedy, in CTranslate2 float32
and int8 greedy, and the deep-encoder shallow-decoder student in CTranslate2 int8 greedy; at
batch 1 and 64, one thread. Columns: output tokens/s, speed-up over the reference at the same
batch size, sacrebleu BLEU on detokenized text, parameters, size on disk. Every model is first
exported (``seqkd-export``: stock fairseq checkpoints for the fairseq rows, CTranslate2
directories for the others), so sizes compare weights with weights. Prints the table and
whether the deployment targets are met.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fairseq_seqkd.deploy.ct2_export import read_manifest, sha256_file
from fairseq_seqkd.deploy.speed import (
    DeployPlan,
    deployment_targets,
    measure_deployment,
    speed_table,
)

BIN = Path(sys.executable).parent
REFERENCE = "teacher"
SAME_ENGINE = "teacher (CT2 int8)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="fairseq data-bin of the test set")
    parser.add_argument("--subset", default="test", help="fairseq split (default test)")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--deep-shallow", help="a deep-encoder, shallow-decoder student")
    parser.add_argument("--spm-model", required=True, help="the sentencepiece model of --data")
    parser.add_argument("--source", required=True, help="raw source text of --subset")
    parser.add_argument("--reference", required=True, help="raw reference text of --subset")
    parser.add_argument("--work", required=True, help="directory for the exported models")
    parser.add_argument("--batches", default="1,64", help="batch sizes (default 1,64)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--beam", type=int, default=5, help="the teachers' beam (default 5)")
    parser.add_argument("--max-len-a", type=float, default=1.5)
    parser.add_argument("--max-len-b", type=int, default=10)
    parser.add_argument("--json", help="also write the rows here")
    return parser.parse_args(argv)


def export(checkpoint: str, output: Path, *extra: str) -> Path:
    """seqkd-export once per checkpoint content: an export whose manifest (or stamp) records
    the checkpoint's sha256 is reused."""
    digest = sha256_file(checkpoint)
    stamp = output.with_name(output.name + ".sha256")
    if output.exists() and (
            read_manifest(str(output)).source_sha256 == [digest] if output.is_dir()
            else stamp.exists() and stamp.read_text() == digest):
        return output
    subprocess.run([str(BIN / "seqkd-export"), "--input", checkpoint, "--output", str(output),
                    *extra], check=True, capture_output=True, text=True)
    if not output.is_dir():
        stamp.write_text(digest)
    return output


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    spm = ("--spm-model", args.spm_model)
    stock = {"teacher": export(args.teacher, work / "teacher.pt"),
             "student": export(args.student, work / "student.pt")}
    if args.deep_shallow:  # its fairseq twin, for the BLEU target
        stock["deep-shallow"] = export(args.deep_shallow, work / "deep-shallow.pt")
    ct2 = {
        SAME_ENGINE: export(args.teacher, work / "teacher-int8", "--format", "ctranslate2", *spm),
        "student (CT2 float32)": export(args.student, work / "student-float32", "--format",
                                        "ctranslate2", "--quantization", "float32", *spm),
        "student (CT2 int8)": export(args.student, work / "student-int8", "--format",
                                     "ctranslate2", *spm),
    }
    if args.deep_shallow:
        ct2["deep-shallow (CT2 int8)"] = export(args.deep_shallow, work / "deep-shallow-int8",
                                                "--format", "ctranslate2", *spm)
    plan = DeployPlan(
        data=args.data, subset=args.subset, fairseq={k: str(v) for k, v in stock.items()},
        ct2={k: str(v) for k, v in ct2.items()},
        source=Path(args.source).read_text(encoding="utf-8").splitlines(),
        references=Path(args.reference).read_text(encoding="utf-8").splitlines(),
        reference_label=REFERENCE, same_engine_label=SAME_ENGINE,
        batches=tuple(int(b) for b in args.batches.split(",")), beam=args.beam,
        threads=args.threads, max_len_a=args.max_len_a, max_len_b=args.max_len_b,
        fairseq_generate=str(BIN / "fairseq-generate"),
    )
    rows = measure_deployment(plan)
    print()
    print(speed_table(rows, REFERENCE))
    twins = {label: label.split(" (")[0] for label in ct2}
    deployed = [label for label in ct2 if label != SAME_ENGINE]
    print()
    for target in deployment_targets(rows, REFERENCE, SAME_ENGINE, deployed, twins):
        print(target.line())
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{**vars(r), "hypotheses": None} for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
