"""BLEU of fairseq checkpoints, greedy and with beam search, as the paper reports it.

Runs stock ``fairseq-generate`` (``--remove-bpe``), orders the detokenized hypotheses by sentence
index and scores them with sacrebleu against the raw reference text (or fairseq's own ``T-``
lines when no reference file is given), printing the BLEU signature::

    python -m fairseq_seqkd.distill.evaluate data-bin --reference raw/test.tgt \\
        --model teacher=teacher/checkpoint_best.pt --model seq-kd=kd/checkpoint_best.pt \\
        --beams 1 5 --remove-bpe sentencepiece --cpu

Bad input exits with status 1 after one ``seqkd-evaluate: error: ...`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

PROG = "seqkd-evaluate"
_LINE = re.compile(r"([HDT])-([0-9]+)\t(.*)")
_SPEED = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s "
                    r"\(([\d.]+) sentences/s, ([\d.]+) tokens/s\)")


class EvaluateError(Exception):
    """Bad input or a failed fairseq-generate run (one line)."""


@dataclass
class Score:
    model: str
    beam: int
    bleu: float
    signature: str
    sentences: int
    tokens_per_second: float | None


def parse_generate_output(text: str) -> tuple[dict[int, str], dict[int, str], float | None]:
    """``({index: hypothesis}, {index: reference}, tokens/s)`` from fairseq-generate's stdout.

    The hypothesis is the ``D-`` line (detokenized) when present, else the ``H-`` line; both
    carry a score column, ``T-`` lines do not.
    """
    hyps: dict[int, str] = {}
    detok: dict[int, str] = {}
    refs: dict[int, str] = {}
    speed = None
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            kind, index, rest = m.group(1), int(m.group(2)), m.group(3)
            if kind == "T":
                refs[index] = rest
            else:
                parts = rest.split("\t", 1)
                text_part = parts[1] if len(parts) == 2 else ""
                (detok if kind == "D" else hyps).setdefault(index, text_part)
            continue
        s = _SPEED.search(line)
        if s:
            speed = float(s.group(5))
    hyps.update(detok)
    return hyps, refs, speed


def read_reference(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", newline="\n") as handle:
            return [line.rstrip("\n").rstrip("\r") for line in handle]
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluateError(f"--reference: cannot read {path} ({exc})") from exc


def corpus_bleu(hyps: dict[int, str], refs: Sequence[str] | dict[int, str],
                what: str) -> tuple[float, str]:
    """sacrebleu's corpus BLEU of hypotheses ordered by index; every index must be present."""
    import sacrebleu

    size = len(refs)
    missing = [i for i in range(size) if i not in hyps]
    if missing or len(hyps) != size:
        raise EvaluateError(
            f"{what}: {len(hyps)} hypotheses for {size} references (first missing index "
            f"{missing[0] if missing else 'none'}); is --reference the raw text of --subset?"
        )
    ordered_refs = [refs[i] for i in range(size)]
    bleu = sacrebleu.BLEU()
    result = bleu.corpus_score([hyps[i] for i in range(size)], [ordered_refs])
    return result.score, str(bleu.get_signature())


def generate(data: str, checkpoint: str, beam: int, args: argparse.Namespace) -> str:
    """Stock fairseq-generate's stdout (the plugin's --user-dir lets it load checkpoints)."""
    exe = Path(sys.executable).parent / "fairseq-generate"
    plugin = str(Path(__file__).resolve().parent.parent)
    cmd = [str(exe), data, "--user-dir", plugin, "--path", checkpoint, "--gen-subset",
           args.subset, "--beam", str(beam), "--nbest", "1", "--batch-size",
           str(args.batch_size), "--remove-bpe", args.remove_bpe,
           # fairseq-fixed drops a last batch smaller than this multiple (8 by default):
           # without it, up to 7 test sentences would silently go unscored
           "--required-batch-size-multiple", "1"]
    if args.cpu:
        cmd.append("--cpu")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:]
        raise EvaluateError(
            f"fairseq-generate failed on {checkpoint} (exit {proc.returncode}): "
            f"{tail[0] if tail else 'no message'}"
        )
    return proc.stdout + "\n" + proc.stderr


def evaluate(args: argparse.Namespace) -> list[Score]:
    reference = read_reference(args.reference) if args.reference else None
    scores = []
    for name, checkpoint in args.model:
        if not os.path.isfile(checkpoint):
            raise EvaluateError(f"--model {name}: {checkpoint} does not exist")
        for beam in args.beams:
            hyps, refs, speed = parse_generate_output(generate(args.data, checkpoint, beam, args))
            bleu, signature = corpus_bleu(hyps, reference if reference is not None else refs,
                                          f"{name} beam {beam}")
            scores.append(Score(name, beam, bleu, signature, len(hyps), speed))
    return scores


def format_table(scores: Sequence[Score], beams: Sequence[int]) -> str:
    """One row per model, one BLEU column per beam, and the greedy decoding speed."""
    names = list(dict.fromkeys(s.model for s in scores))
    head = ["model", *(("greedy" if b == 1 else f"beam {b}") for b in beams), "tokens/s (beam "
            f"{beams[0]})"]
    rows = [head]
    for name in names:
        mine = {s.beam: s for s in scores if s.model == name}
        speed = mine[beams[0]].tokens_per_second
        rows.append([name, *(f"{mine[b].bleu:.2f}" for b in beams),
                     f"{speed:.0f}" if speed is not None else "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    signatures = sorted({s.signature for s in scores})
    lines.append("sacreBLEU signature: " + "; ".join(signatures))
    return "\n".join(lines)


def _model(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=CHECKPOINT, got {spec!r}")
    return name, path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise EvaluateError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="BLEU (sacrebleu) of fairseq checkpoints, greedy and "
                "beam search.")
    p.add_argument("data", help="data-bin holding the --subset split")
    p.add_argument("--model", type=_model, action="append", required=True,
                   metavar="NAME=CKPT", help="a checkpoint to score (repeatable)")
    p.add_argument("--subset", default="test")
    p.add_argument("--reference", metavar="FILE",
                   help="raw reference text of --subset, line i = sentence i (default: "
                   "fairseq's T- lines, i.e. the binarized reference with --remove-bpe)")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 5], metavar="K")
    p.add_argument("--remove-bpe", default="sentencepiece")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    return p


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if any(b < 1 for b in args.beams):
        raise EvaluateError(f"--beams must be >= 1, got {args.beams}")
    scores = evaluate(args)
    print(format_table(scores, args.beams), flush=True)
    if args.json:
        from ..atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps([asdict(s) for s in scores], indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point (``python -m fairseq_seqkd.distill.evaluate``); returns the exit status."""
    from ..cli.entry import run_main

    return run_main(PROG, _run, argv, (EvaluateError,))


if __name__ == "__main__":
    sys.exit(main())
