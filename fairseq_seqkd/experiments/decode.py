"""The demo's evaluation: every model decoded greedily and with beam search, side by side, in one
process (``python -m fairseq_seqkd.experiments.decode``).

fairseq checkpoints go through fairseq's own generation pipeline
(:class:`~fairseq_seqkd.deploy.fairseq_decoder.FairseqDecoder`, what ``fairseq-generate`` runs);
CTranslate2 exports through :class:`~fairseq_seqkd.deploy.translator.Translator` (what
``seqkd-translate`` runs) on the raw source. One process pays fairseq's start-up once instead of
twice per model, and the whole measurement runs alone on the machine, so every tokens/s of the
table is measured under the same conditions. Per model, as soon as it is done:
``KEY.SUBSET.beamK.hyp`` (hypotheses, line i = sentence i) for each split and beam, then
``KEY.json`` (sentences, tokens with each sentence's ``</s>`` as fairseq counts them, decoding
seconds), each file atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..atomic import atomic_write_text
from ..distill.evaluate import Decoding
from ..errors import SeqKDError
from ..textfiles import read_text_lines

__all__ = ["decoding_json", "hypothesis_file", "main", "read_decoding_run"]

ENGINES = ("fairseq", "ctranslate2")


def hypothesis_file(directory: Path, key: str, subset: str, beam: int) -> Path:
    return directory / f"{key}.{subset}.beam{beam}.hyp"


def decoding_json(directory: Path, key: str) -> Path:
    """One model's runs: ``{subset: {beam: {engine, sentences, tokens, seconds}}}``."""
    return directory / f"{key}.json"


def read_decoding_run(directory: Path, key: str, subset: str, beam: int) -> Decoding:
    """One model's decoding of one split at one beam, as this module wrote it."""
    path = decoding_json(directory, key)
    try:
        run = json.loads(path.read_text(encoding="utf-8"))[subset][str(beam)]
    except (OSError, ValueError, KeyError) as exc:
        raise SeqKDError(f"{path}: no decoding of {subset} at beam {beam} ({exc})") from None
    hyp_path = hypothesis_file(directory, key, subset, beam)
    hypotheses = read_text_lines(hyp_path)
    if len(hypotheses) != run["sentences"]:
        raise SeqKDError(f"{hyp_path}: {len(hypotheses)} lines for {run['sentences']} decoded "
                         "sentences")
    return Decoding(hypotheses, run["sentences"], run["tokens"], run["seconds"])


def _model(text: str) -> tuple[str, str, str]:
    key, _, rest = text.partition("=")
    engine, _, path = rest.partition(":")
    if not key or engine not in ENGINES or not path:
        raise argparse.ArgumentTypeError(
            f"--model {text!r}: expected KEY=ENGINE:PATH, ENGINE one of {', '.join(ENGINES)}")
    return key, engine, path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fairseq_seqkd.experiments.decode",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="fairseq data-bin of the fairseq models")
    parser.add_argument("--subsets", nargs="+", default=["test"],
                        help="binarized splits to decode (test, test1, ...)")
    parser.add_argument("--sources", nargs="+", default=[], metavar="FILE",
                        help="raw source of each of --subsets, for the CTranslate2 models")
    parser.add_argument("--model", type=_model, action="append", required=True,
                        metavar="KEY=ENGINE:PATH",
                        help="a fairseq checkpoint (fairseq:FILE) or a seqkd-export "
                        "--format ctranslate2 directory (ctranslate2:DIR); repeat")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-len-a", type=float, default=1.5)
    parser.add_argument("--max-len-b", type=int, default=10)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--no-warm-up", action="store_true",
                        help="skip the untimed first passes (when the timings are not used)")
    return parser


def decode_all(args: argparse.Namespace, log: Callable[[str], None] = print) -> None:
    """Decode every model; a model's hypothesis files, then its JSON, as soon as it is done."""
    import torch

    from ..deploy.fairseq_decoder import FairseqDecoder
    from ..deploy.speed import ct2_run
    from ..deploy.translator import Translator

    if any(engine == "ctranslate2" for _, engine, _ in args.model) and \
            len(args.sources) != len(args.subsets):
        raise SeqKDError(f"--sources: one raw source per subset ({len(args.subsets)}) is needed "
                         f"for the CTranslate2 models, got {len(args.sources)}")
    torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fairseq_options = [
        "--batch-size", str(args.batch_size), "--max-len-a", str(args.max_len_a),
        "--max-len-b", str(args.max_len_b), "--nbest", "1", "--remove-bpe", "sentencepiece",
        "--cpu", "--num-workers", "0", "--required-batch-size-multiple", "1",
    ]  # fmt: skip
    fairseq_warm = args.no_warm_up
    for key, engine, path in args.model:
        if engine == "fairseq":
            decode = FairseqDecoder(args.data, path, args.subsets, fairseq_options).decode
            if not fairseq_warm:  # untimed: the process's first fairseq decoding pays one-off
                decode(1, args.subsets[0])  # set-up costs (3.5 s, then 2.3 s, for a teacher)
                fairseq_warm = True
        else:
            translator = Translator(path, threads=args.threads)
            sources = {subset: [translator.encode(line) for line in read_text_lines(source)]
                       for subset, source in zip(args.subsets, args.sources, strict=True)}

            def decode(beam: int, subset: str, translator: Translator = translator,
                       sources: dict = sources) -> Decoding:
                hyps, n, count, seconds = ct2_run(translator, sources[subset], beam,
                                                  args.batch_size, args.max_len_a,
                                                  args.max_len_b)
                return Decoding(hyps, n, count + n, seconds)  # + </s>, as fairseq counts

            # untimed: a CTranslate2 model's first calls run several times slower than the
            # next ones (measured 0.29 s, then 0.13 s, for 500 sentences), which would count
            # a one-off cost against a decoding that takes a fraction of a second
            if not args.no_warm_up:
                decode(1, args.subsets[0])
        runs: dict[str, dict[str, dict]] = {}
        for subset in args.subsets:
            runs[subset] = {}
            for beam in args.beams:
                result = decode(beam, subset)
                atomic_write_text(hypothesis_file(out, key, subset, beam),
                                  "".join(h + "\n" for h in result.hypotheses))
                runs[subset][str(beam)] = {"engine": engine, "sentences": result.sentences,
                                           "tokens": result.tokens, "seconds": result.seconds}
                log(f"{key:<20} {subset:<6} {engine:<11} beam {beam}: {result.sentences:,} "
                    f"sentences, {result.tokens:,} tokens in {result.seconds:.2f}s "
                    f"({result.tokens_per_second:,.0f} tokens/s)")
        atomic_write_text(decoding_json(out, key), json.dumps(runs, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    import fairseq_seqkd  # noqa: F401 (the plugin's checkpoints load: allow-list, registries)

    args = build_parser().parse_args(argv)
    # fairseq's per-model loading and batching INFO lines (and hydra's DEBUG ones) drown the
    # table; warnings and errors still show
    logging.basicConfig(level=logging.WARNING, force=True)
    try:
        decode_all(args, log=lambda line: print(line, flush=True))
    except SeqKDError as exc:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {exc}")


if __name__ == "__main__":
    main()
