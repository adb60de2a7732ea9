"""A CTranslate2 teacher: the split's n-best from CTranslate2's beam search, in the n-best format
``seqkd-generate`` writes (:mod:`.nbest`), so selection, filters and binarization read it
unchanged.

The model is a ``seqkd-export --format ctranslate2`` directory or any CTranslate2 translation
model whose source and target vocabularies are the data's dictionaries, token for token and in
order (the converter's ``<blank>`` standing for fairseq's ``<pad>``); anything else is refused
before decoding, naming the first differing token. Sources are the binarized split's tokens as
the dictionary's symbols (CTranslate2 appends ``</s>`` as fairseq does).

Search
    CTranslate2's beam search is fairseq's: the top ``2 * beam`` candidates per step, a
    hypothesis ends when ``</s>`` is among the first ``beam`` of them, a sentence when ``beam``
    hypotheses have ended (patience 1), ``</s>`` is barred at the first step (fairseq's
    ``--min-len 1``) and hypotheses are ranked by their length-normalised score (length
    penalty 1). When more than ``beam`` hypotheses have ended by the step a sentence finishes,
    fairseq keeps the first ``beam`` to end and CTranslate2 the ``beam`` best scored, so n-best
    lists (rarely the best hypothesis) can differ. fairseq never selects ``<pad>``; a
    CTranslate2 hypothesis through it is dropped (kept only when every hypothesis has it).

Scores
    Each hypothesis' score is fairseq's ``hypo["score"]``, the number seqkd-generate writes and
    ``--min-score``/``--filter-worst`` read: the sum of the natural-log probabilities of its
    tokens and the final ``</s>``, divided by that token count (``</s>`` included). It is not the
    ``H-`` line of ``fairseq-generate``, which prints it divided by ln 2. CTranslate2's score is
    the same quantity except at the first step, where it bars ``</s>`` *before* the softmax
    (fairseq after it), which adds ``-log(1 - p(</s>))`` to every hypothesis' sum; that
    probability is read with one scoring step per sentence (``score_batch`` of the empty target)
    and taken off, and the hypotheses are ranked again.

Length caps
    fairseq's ``--max-len-a/--max-len-b``: at most ``int(a * source length + b)`` tokens before
    ``</s>``, the source counted with its ``</s>`` and the cap at most ``max_target_positions - 1``.
    fairseq applies the cap of a batch's longest source to the whole batch; here each sentence
    gets its own (batches hold sentences of one cap), so a sentence's n-best does not depend on
    its batch. At the step after the cap fairseq appends ``</s>`` to every beam; CTranslate2
    cannot force a token, so it searches that step freely, hypotheses that did not end there are
    cut back to the cap and scored with ``</s>`` after them by ``score_batch`` (fairseq's score
    again). Several may coincide once cut, so a sentence whose search reaches the cap can have
    fewer than ``nbest`` hypotheses.

Skipped sentences
    An empty source (CTranslate2 does not decode one) and a source longer than the model's
    ``max_source_positions`` (known from a seqkd-export directory's manifest; no limit
    otherwise) are listed in ``OUTPUT.skipped``, as seqkd-generate's
    ``--skip-invalid-size-inputs-valid-test`` lists the sentences too long for the teacher.

Chunks, resuming, sharding
    As seqkd-generate (:mod:`.generate`): contiguous chunks of ``chunk_size`` indices, committed
    one by one to ``OUTPUT.parts/`` with a manifest of every option that changes the bytes, the
    content digests of the model directory and of the split's files and dictionaries, and the
    package version (read at the call, as seqkd-generate's); shard ``i`` of ``N`` decoding
    chunks ``c % N == i``, joined by :func:`.merge.merge_shards`. Within a chunk, sentences are
    sorted by length and batched ``batch_size`` at a time, so a resumed, sharded or
    uninterrupted run writes the same bytes. Threads are not recorded: a run may resume with
    another count.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from .. import version
from ..digests import content_digest
from ..errors import SeqKDError
from .chunks import DEFAULT_CHUNK_SIZE, ChunkStore, check_output_path, owned_chunks
from .databin import DataBin
from .generate import GenerationSummary
from .nbest import Hypothesis, format_nbest_lines

__all__ = ["COMPUTE_TYPES", "CT2Teacher", "check_compute_options", "check_ct2_model",
           "ct2_generate_nbest", "max_source_positions", "model_vocabularies"]

EOS = "</s>"
PAD = "<pad>"
CT2_PAD = "<blank>"  # CTranslate2's fairseq converter renames <pad>
#: CTranslate2's compute types (``--teacher-quantization``); "default" keeps the model's own
COMPUTE_TYPES = ("default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16",
                 "int16", "float16", "bfloat16", "float32")
SCORE_BATCH_TOKENS = 512  # tokens a scoring sub-batch holds (CTranslate2's score_batch)
_SEQKD_MANIFEST = "seqkd-export.json"  # see fairseq_seqkd.deploy.ct2_export
_NOT_A_MODEL = ("--teacher {dir}: not a CTranslate2 model directory ({why}); give a "
                "seqkd-export --format ctranslate2 directory")


def check_compute_options(threads: int, quantization: str) -> None:
    """``--teacher-threads`` (0: CTranslate2's default) and ``--teacher-quantization``."""
    if quantization not in COMPUTE_TYPES:
        raise SeqKDError(f"--teacher-quantization must be one of {', '.join(COMPUTE_TYPES)}, "
                         f"got {quantization!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise SeqKDError(f"--teacher-threads must be >= 0 (0: CTranslate2's default), "
                         f"got {threads!r}")


def model_vocabularies(model_dir: str) -> tuple[list[str], list[str]]:
    """The source and target vocabularies of a CTranslate2 translation model directory."""
    def read(stem: str) -> list[str] | None:
        for ext in (".json", ".txt"):  # CTranslate2 >= 3 writes JSON, older versions text
            path = os.path.join(model_dir, stem + ext)
            if not os.path.isfile(path):
                continue
            try:
                with open(path, encoding="utf-8") as handle:
                    if ext == ".txt":
                        return handle.read().split("\n")[:-1]
                    tokens = json.load(handle)
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise SeqKDError(f"--teacher: cannot read {path} ({exc})") from None
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise SeqKDError(f"--teacher: {path} is not a list of tokens")
            return tokens
        return None

    shared = read("shared_vocabulary")
    source, target = read("source_vocabulary"), read("target_vocabulary")
    if shared is not None:
        return shared, shared
    if source is None or target is None:
        raise SeqKDError(_NOT_A_MODEL.format(
            dir=model_dir, why="no shared_vocabulary or source_/target_vocabulary file: a "
            "CTranslate2 translation model has them"))
    return source, target


def _check_vocabulary(model: Sequence[str], dictionary: Any, side: str, model_dir: str,
                      dict_name: str) -> None:
    """The model's ``side`` vocabulary must be ``dictionary``'s symbols, in order."""
    symbols = dictionary.symbols
    for position in range(max(len(model), len(symbols))):
        ours = model[position] if position < len(model) else None
        theirs = symbols[position] if position < len(symbols) else None
        if ours == theirs or (theirs == PAD and ours == CT2_PAD):
            continue
        raise SeqKDError(
            f"--teacher {model_dir}: its {side} vocabulary differs from {dict_name} at position "
            f"{position}: {'(end)' if ours is None else repr(ours)} in the model, "
            f"{'(end)' if theirs is None else repr(theirs)} in the dictionary "
            f"({len(model)} and {len(symbols)} tokens); the teacher must use the data's "
            "dictionaries")


def check_ct2_model(model_dir: str, src_dict: Any, tgt_dict: Any,
                    dict_names: tuple[str, str] = ("the source dictionary",
                                                   "the target dictionary")) -> None:
    """Refuse, in one line and without loading it, a directory that is not a CTranslate2
    translation model or whose vocabularies are not ``src_dict``'s and ``tgt_dict``'s symbols
    (``dict_names`` name them)."""
    if not os.path.isdir(model_dir):
        raise SeqKDError(_NOT_A_MODEL.format(dir=model_dir, why="not a directory"))
    if not os.path.isfile(os.path.join(model_dir, "model.bin")):
        raise SeqKDError(_NOT_A_MODEL.format(dir=model_dir, why="no model.bin"))
    source_vocab, target_vocab = model_vocabularies(model_dir)
    _check_vocabulary(source_vocab, src_dict, "source", model_dir, dict_names[0])
    _check_vocabulary(target_vocab, tgt_dict, "target", model_dir, dict_names[1])


def max_source_positions(model_dir: str) -> int | None:
    """The longest source (``</s>`` included) the model takes, when a seqkd-export manifest
    says; None otherwise (CTranslate2 itself has no limit)."""
    return _positions(model_dir)[0]


class CT2Teacher:
    """A CTranslate2 model loaded as a teacher for the data's dictionaries.

    ``dict_names`` name the source and target dictionaries in errors (``--data
    dict.en.txt``); ``threads`` 0 is CTranslate2's default count.
    """

    def __init__(self, model_dir: str, src_dict: Any, tgt_dict: Any, *, threads: int = 1,
                 quantization: str = "default", device: str = "cpu",
                 dict_names: tuple[str, str] = ("the source dictionary",
                                                "the target dictionary")):
        check_compute_options(threads, quantization)
        check_ct2_model(model_dir, src_dict, tgt_dict, dict_names)
        self.max_source_positions, self.max_target_positions = _positions(model_dir)
        try:
            import ctranslate2
        except ImportError as exc:
            raise SeqKDError("a CTranslate2 teacher needs the ctranslate2 package: "
                             "pip install 'fairseq-seqkd[deploy]'") from exc
        try:
            self.translator = ctranslate2.Translator(
                model_dir, device=device, compute_type=quantization, inter_threads=1,
                intra_threads=threads)
        except (RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SeqKDError(
                f"--teacher {model_dir}: CTranslate2 cannot load it ({first})") from exc
        self.model_dir = model_dir
        self.symbols: list[str] = list(src_dict.symbols)
        self.eos_index: int = src_dict.eos()

    # ------------------------------------------------------------------ sentences

    def source_tokens(self, ids: Sequence[int]) -> list[str]:
        """A binarized source sentence (ending in ``</s>``) as the model's input tokens."""
        ids = list(ids)
        if ids and ids[-1] == self.eos_index:
            ids.pop()
        return [self.symbols[i] for i in ids]

    def too_long(self, tokens: Sequence[str]) -> bool:
        """Whether a source (without ``</s>``) exceeds the model's positions, or is empty."""
        limit = self.max_source_positions
        return not tokens or (limit is not None and len(tokens) + 1 > limit)

    def max_len(self, tokens: Sequence[str], max_len_a: float, max_len_b: int) -> int:
        """fairseq's output cap for a source: tokens before ``</s>``."""
        cap = int(max_len_a * (len(tokens) + 1) + max_len_b)
        if self.max_target_positions is not None:
            cap = min(cap, self.max_target_positions - 1)
        return max(1, cap)

    # ------------------------------------------------------------------ decoding

    def nbest(self, sources: Sequence[Sequence[str]], beam: int = 5, nbest: int = 1,
              max_len_a: float = 0.0, max_len_b: int = 200, batch_size: int = 32,
              ) -> list[list[Hypothesis]]:
        """The ``nbest`` best hypotheses (fairseq's scores, best first) of each source, in
        order. Sources are decoded sorted by length, ``batch_size`` of one cap at a time."""
        if beam < 1:
            raise SeqKDError(f"--beam must be >= 1, got {beam}")
        if not 1 <= nbest <= beam:
            raise SeqKDError(f"--nbest must be in [1, --beam {beam}], got {nbest}")
        if batch_size < 1:
            raise SeqKDError(f"--batch-size must be >= 1, got {batch_size}")
        caps = [self.max_len(s, max_len_a, max_len_b) for s in sources]
        order = sorted(range(len(sources)), key=lambda i: (len(sources[i]), i))
        results: list[list[Hypothesis]] = [[] for _ in sources]
        start = 0
        while start < len(order):
            end = start + 1
            while (end < len(order) and end - start < batch_size
                   and caps[order[end]] == caps[order[start]]):
                end += 1
            batch = order[start:end]
            for i, hyps in zip(batch, self._batch([sources[i] for i in batch], beam,
                                                  caps[batch[0]]), strict=True):
                results[i] = hyps[:nbest]
            start = end
        return results

    def _batch(self, sources: list[Sequence[str]], beam: int, cap: int
               ) -> list[list[Hypothesis]]:
        """Beam search on one batch of one cap; each source's hypotheses, best first."""
        # one step past the cap: fairseq's last step, where it appends </s> to each beam
        out = self.translator.translate_batch(
            [list(s) for s in sources], beam_size=beam, num_hypotheses=beam, patience=1,
            length_penalty=1, min_decoding_length=1, max_decoding_length=cap + 1,
            max_input_length=0, return_scores=True, return_end_token=True, max_batch_size=0,
        )
        # one scoring call: each source's empty target (log p(</s>) at the first step), then
        # each hypothesis cut at the cap, scored with fairseq's </s> after it
        cut = [(i, k) for i, result in enumerate(out)
               for k, hyp in enumerate(result.hypotheses) if hyp[-1:] != [EOS]]
        # scoring computes the whole vocabulary's log-probabilities at every target position:
        # sub-batches of a bounded token count keep that memory from growing with the longest
        # hypotheses a corpus holds
        scored = self.translator.score_batch(
            [*sources, *(sources[i] for i, _ in cut)],
            [*([] for _ in sources), *(out[i].hypotheses[k][:cap] for i, k in cut)],
            max_input_length=0, max_batch_size=SCORE_BATCH_TOKENS, batch_type="tokens")
        exact = {key: sum(s.log_probs) / len(s.log_probs)
                 for key, s in zip(cut, scored[len(sources):], strict=True)}
        results = []
        for i, result in enumerate(out):
            # CTranslate2 barred </s> before the first softmax: every sum gained this
            shift = -math.log(max(-math.expm1(scored[i].log_probs[0]), sys.float_info.min))
            hyps = []
            for k, (hyp, score) in enumerate(zip(result.hypotheses, result.scores, strict=True)):
                if (i, k) in exact:
                    tokens, score = hyp[:cap], exact[i, k]
                else:
                    tokens, score = hyp[:-1], (score * len(hyp) - shift) / len(hyp)
                hyps.append((CT2_PAD in tokens, -score, k, Hypothesis(" ".join(tokens), score)))
            if not all(h[0] for h in hyps):
                hyps = [h for h in hyps if not h[0]]
            best: dict[str, Hypothesis] = {}  # cut hypotheses may coincide once cut
            for *_, hyp in sorted(hyps, key=lambda h: h[:3]):
                best.setdefault(hyp.tokens, hyp)
            results.append(list(best.values()))
        return results


def _positions(model_dir: str) -> tuple[int | None, int | None]:
    """The model's max source and target positions, from a seqkd-export manifest."""
    path = os.path.join(model_dir, _SEQKD_MANIFEST)
    if not os.path.isfile(path):
        return None, None
    from ..deploy.ct2_export import read_manifest

    arch = read_manifest(model_dir).architecture
    src, tgt = arch.get("max_source_positions"), arch.get("max_target_positions")
    return (int(src) if src else None), (int(tgt) if tgt else None)


# ---------------------------------------------------------------------- the n-best file


def ct2_generate_nbest(
    data: str, split: str, model_dir: str, output: str, *,
    beam: int = 5, nbest: int = 1, max_len_a: float = 0.0, max_len_b: int = 200,
    threads: int = 1, quantization: str = "default", batch_size: int = 32,
    chunk_size: int = DEFAULT_CHUNK_SIZE, num_shards: int = 1, shard_id: int = 0,
    device: str = "cpu", progress: bool = False,
) -> GenerationSummary:
    """Decode the source side of ``split`` in the data-bin ``data`` (a source-only split will
    do, as seqkd-generate's ``data --gen-subset split``) with the CTranslate2 model
    ``model_dir`` into the n-best file ``output`` and ``output.skipped``, as seqkd-generate
    would with the same beam, n-best and caps.

    Decodes only the chunks of shard ``shard_id`` that ``output.parts/`` does not hold yet; a
    resumed run must find the options, the model's files and the split's files and
    dictionaries with the same content. Raises :class:`SeqKDError` (one line) for bad input
    before decoding anything.
    """
    begin = time.perf_counter()
    if chunk_size < 1:
        raise SeqKDError(f"--chunk-size must be >= 1, got {chunk_size}")
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise SeqKDError(f"--shard-id must be in [0, --num-shards {num_shards}), got {shard_id}")
    if not 1 <= nbest <= beam:
        raise SeqKDError(f"--nbest must be in [1, --beam {beam}], got {nbest}")
    data_bin = DataBin(data, split, source_only=True)
    src_dict, tgt_dict = data_bin.src_dict, data_bin.tgt_dict
    dict_names = data_bin.dict_names()
    check_output_path(output)
    teacher = CT2Teacher(model_dir, src_dict, tgt_dict, threads=threads,
                         quantization=quantization, device=device, dict_names=dict_names)
    opts = {
        "engine": "ctranslate2", "--teacher (content sha256)": content_digest(model_dir),
        "--beam": beam, "--nbest": nbest, "--max-len-a": float(max_len_a),
        "--max-len-b": max_len_b, "--teacher-quantization": quantization,
        "--batch-size": batch_size, "--chunk-size": chunk_size, "--num-shards": num_shards,
        "--shard-id": shard_id, "device": device, "version": version.__version__,
    }
    store = ChunkStore(output)
    store.check_options(opts)
    source = data_bin.load(data_bin.src)
    size = len(source)
    chunks = owned_chunks(size, chunk_size, num_shards, shard_id)
    done = store.start(opts, data_bin.digests()) & set(chunks)
    owned = sum(len(_indices(c, chunk_size, size)) for c in chunks)
    skipped: list[int] = []
    decoded = tokens = 0
    decode_seconds = 0.0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=owned, unit="sent", desc="CTranslate2 teacher",
                   file=sys.stderr, dynamic_ncols=True)
    for chunk in chunks:
        indices = _indices(chunk, chunk_size, size)
        sources = {i: teacher.source_tokens(source[i].tolist()) for i in indices}
        keep = [i for i in indices if not teacher.too_long(sources[i])]
        skipped += [i for i in indices if teacher.too_long(sources[i])]
        if chunk not in done:
            start = time.perf_counter()
            found = teacher.nbest([sources[i] for i in keep], beam, nbest, max_len_a,
                                  max_len_b, batch_size)
            store.commit(chunk, "".join(format_nbest_lines(i, hyps)
                                        for i, hyps in zip(keep, found, strict=True)))
            decode_seconds += time.perf_counter() - start
            decoded += len(keep)
            tokens += sum(len(h[0].tokens.split()) + 1 for h in found if h)
        if bar is not None:
            bar.update(len(indices))
    if bar is not None:
        bar.close()
    hypotheses = store.assemble(chunks, skipped)
    return GenerationSummary(
        output=output, sentences=owned - len(skipped),
        hypotheses=hypotheses, skipped=skipped, seconds=time.perf_counter() - begin,
        decoded=decoded, tokens=tokens, decode_seconds=decode_seconds,
        resumed_chunks=len(done), chunks=len(chunks))


def _indices(chunk: int, chunk_size: int, size: int) -> range:
    return range(chunk * chunk_size, min(size, (chunk + 1) * chunk_size))
