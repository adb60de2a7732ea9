"""Teacher decoding to an n-best file (``seqkd-generate``): sharded, resumable, deterministic.

The decoding itself is fairseq's: the task, the models from
``checkpoint_utils.load_model_ensemble``, the generator from
``task.build_generator(models, cfg.generation)`` and the batches from
``task.get_batch_iterator`` -- exactly what ``fairseq-generate`` runs, with the same options.
What this module adds is the bookkeeping around it.

Chunks
    The split's sentence indices ``0..N-1`` are cut into contiguous chunks of ``--chunk-size``
    indices; chunk ``c`` holds ``[c * chunk_size, (c + 1) * chunk_size)``. Every chunk is
    batched as its own fixed set of sentences: the order fairseq would batch the whole split in
    (``dataset.ordered_indices()`` under ``numpy_seed(seed + 1)``, as in ``fairseq-generate``)
    restricted to the chunk, cut by fairseq's ``batch_by_size``; one
    ``task.get_batch_iterator`` then serves all the remaining chunks' batches in turn. A
    chunk's batches therefore do not depend on which other chunks are decoded in the same
    process, so a resumed run, a sharded run and an uninterrupted run produce the same bytes
    (beam search scores, even near-tied hypotheses' order, depend on batch padding). With one
    chunk covering the split, the batches are exactly ``fairseq-generate``'s, plus the last
    batch that fairseq drops (see :func:`fairseq_seqkd.distill.runner._fairseq_batches`).

Modules: :mod:`.options` (parsing, checks, the options a resume must repeat), :mod:`.chunks`
(``OUTPUT.parts/``), :mod:`.runner` (fairseq setup and the chunked batches, shared with the
teacher cache), this module (beam search per batch, the n-best text) and :mod:`.merge`.

Resuming
    Each finished chunk is written to ``OUTPUT.parts/chunk-NNNNNN.tsv`` through a temporary
    file and ``os.replace``. ``OUTPUT.parts/manifest.json`` records every option that can change
    the output (generation options, batching, device, chunk size, shard), the content digests of
    the checkpoints and of the split's data files and dictionaries, and the package version; a
    rerun that differs in any of them is refused, naming it (a teacher replaced by other bytes of
    the same size and mtime included). Killed at any moment and restarted with the same command,
    the run decodes only the missing chunks. When all chunks exist they are concatenated into
    ``OUTPUT`` (temp file + rename) and the parts directory is removed. One process per
    ``OUTPUT`` at a time: there is no lock.

Sharding
    ``--num-shards N --shard-id i`` (fairseq's own generation options) make a worker decode the
    chunks ``c`` with ``c % N == i`` (round-robin over contiguous chunks, which balances the
    load when sentence lengths drift along the corpus). Each shard writes its own ``OUTPUT``
    and ``OUTPUT.skipped``. :func:`.merge.merge_shards` (``seqkd-generate --merge-shards
    SHARD... --output OUT --expected-size N``) joins them, checking that every index ``0..N-1``
    is in exactly one shard, or listed in exactly one shard's ``.skipped`` file; a duplicate or
    a gap is a one-line error naming the index and the files. Shards and the unsharded run must
    use the same ``--chunk-size`` (and batching options) for the merged bytes to equal the
    unsharded file; the merge copies lines verbatim.

Skipped sentences
    Sentences longer than the model's max positions are listed in ``OUTPUT.skipped`` (one index
    per line, ascending; the file is created empty when nothing is skipped) with
    ``--skip-invalid-size-inputs-valid-test``; without it they are a one-line error suggesting
    the flag, raised before anything is decoded.

Scores are ``hypo["score"]``: fairseq's length-normalised log-probability in base e
(``fairseq-generate`` prints the same number divided by ln 2). Tokens are
``tgt_dict.string(hypo_tokens)``: subwords of the teacher's dictionary, BPE kept
(``--post-process``/``--remove-bpe`` is ignored here; ``seqkd-select`` removes BPE).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from ..errors import SeqKDError
from .chunks import ChunkStore, check_output_path, skipped_path
from .nbest import Hypothesis, format_nbest_lines
from .options import check_generation_options, device, parse_generation_args, resume_options
from .runner import ChunkRunner

__all__ = ["GenerationSummary", "generate", "generate_nbest"]

PROG = "seqkd-generate"


@dataclass
class GenerationSummary:
    """What a :func:`generate_nbest` or :func:`merge_shards` call produced."""

    output: str
    sentences: int  # sentences with hypotheses in ``output``
    hypotheses: int  # lines in ``output``
    skipped: list[int] = field(default_factory=list)  # indices listed in ``output.skipped``
    seconds: float = 0.0  # wall time of the whole call (loading, decoding, writing)
    decoded: int = 0  # sentences decoded by this call (the others came from resumed chunks)
    tokens: int = 0  # tokens of the best hypotheses decoded by this call (as fairseq counts)
    decode_seconds: float = 0.0  # wall time of the decoding loop
    resumed_chunks: int = 0
    chunks: int = 0
    merged_shards: int = 0  # > 0 for a merge_shards result

    def describe(self) -> str:
        """The final throughput line."""
        head = (
            f"{self.sentences} sentences ({len(self.skipped)} skipped), "
            f"{self.hypotheses} hypotheses"
        )
        if self.merged_shards:
            return (
                f"seqkd-generate --merge-shards: {head} from {self.merged_shards} shards -> "
                f"{self.output} in {self.seconds:.2f}s"
            )
        secs = max(self.decode_seconds, 1e-9)
        resumed = ""
        if self.resumed_chunks:
            resumed = f"; {self.resumed_chunks} of {self.chunks} chunks resumed"
        return (
            f"seqkd-generate: {head} -> {self.output}; decoded {self.decoded} sentences, "
            f"{self.tokens} tokens in {self.decode_seconds:.2f}s ({self.decoded / secs:.2f} "
            f"sentences/s, {self.tokens / secs:.2f} tokens/s); {self.seconds:.2f}s in all{resumed}"
        )


def generate_nbest(argv: Sequence[str]) -> GenerationSummary:
    """Run ``seqkd-generate`` with command-line ``argv`` in this process.

    Raises :class:`SeqKDError` (one line) for bad input; may be called repeatedly.
    """
    cfg, args = parse_generation_args(argv)
    return generate(cfg, args)


def generate(cfg: DictConfig, args: argparse.Namespace) -> GenerationSummary:
    """Decode the owned chunks that are not committed yet, then assemble ``args.output``."""
    start_time = time.perf_counter()
    check_generation_options(cfg, args)
    output: str = args.output
    check_output_path(output)
    opts = resume_options(cfg, args, device(cfg))
    store = ChunkStore(output)
    store.check_options(opts)  # before minutes of model loading

    runner = ChunkRunner(cfg, args, inference=True)
    skipped = runner.too_long()
    if skipped and not cfg.dataset.skip_invalid_size_inputs_valid_test:
        raise SeqKDError(_too_long_error(runner, skipped[0], output))
    runner.skip(skipped)
    runner.check_max_tokens()
    generator = runner.task.build_generator(runner.models, cfg.generation)
    tokens = 0

    def commit(chunk: int, results: list[tuple[str, int]]) -> None:
        nonlocal tokens
        store.commit(chunk, "".join(text for text, _ in results))
        tokens += sum(n for _, n in results)

    stats = runner.run(store, opts, PROG, _beam_search(cfg, runner, generator), commit)
    hypotheses = store.assemble(runner.chunks, skipped)
    return GenerationSummary(
        output=output, sentences=runner.sentences, hypotheses=hypotheses, skipped=skipped,
        seconds=time.perf_counter() - start_time, decoded=stats.sentences, tokens=tokens,
        decode_seconds=stats.seconds, resumed_chunks=len(stats.resumed),
        chunks=len(runner.chunks),
    )


def _beam_search(
    cfg: DictConfig, runner: ChunkRunner, generator: Any
) -> Callable[[dict[str, Any]], list[tuple[str, int]]]:
    """Per sentence of a batch: its n-best lines and its best hypothesis' token count, as
    ``fairseq-generate`` decodes and counts them."""
    tgt_dict = runner.task.target_dictionary
    strip = _strip_symbols(generator)
    nbest = cfg.generation.nbest

    def batch(sample: dict[str, Any]) -> list[tuple[str, int]]:
        prefix_tokens = None
        if cfg.generation.prefix_size > 0:
            prefix_tokens = sample["target"][:, : cfg.generation.prefix_size]
        hypos = runner.task.inference_step(
            generator, runner.models, sample, prefix_tokens=prefix_tokens,
            constraints=sample.get("constraints"),
        )
        results = []
        for i, index in enumerate(sample["id"].tolist()):
            best = hypos[i][:nbest]
            text = format_nbest_lines(index, [
                Hypothesis(
                    tgt_dict.string(h["tokens"].int().cpu(), extra_symbols_to_ignore=strip),
                    float(h["score"]),
                )
                for h in best
            ])
            results.append((text, len(best[0]["tokens"]) if best else 0))
        return results

    return batch


def _strip_symbols(generator: Any) -> set[int]:
    return getattr(generator, "symbols_to_strip_from_output", None) or {generator.eos}


def _too_long_error(runner: ChunkRunner, index: int, out: str) -> str:
    return (
        f"sentence {index} of --gen-subset {runner.split} is too long for the model (size "
        f"{runner.dataset.size(index)}, max positions {runner.max_positions()}); pass "
        f"--skip-invalid-size-inputs-valid-test to skip such sentences (they are listed in "
        f"{skipped_path(out)})"
    )


