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
    batch that fairseq drops (see :func:`_fairseq_batches`).

Resuming
    Each finished chunk is written to ``OUTPUT.parts/chunk-NNNNNN.tsv`` through a temporary
    file and ``os.replace``. ``OUTPUT.parts/manifest.json`` records every option that can change
    the output (generation options, batching, data, checkpoints' size and mtime, device, chunk
    size, shard); a rerun with different options is refused, naming the option. Killed at any
    moment and restarted with the same command, the run decodes only the missing chunks. When
    all chunks exist they are concatenated into ``OUTPUT`` (temp file + rename) and the parts
    directory is removed. One process per ``OUTPUT`` at a time: there is no lock.

Sharding
    ``--num-shards N --shard-id i`` (fairseq's own generation options) make a worker decode the
    chunks ``c`` with ``c % N == i`` (round-robin over contiguous chunks, which balances the
    load when sentence lengths drift along the corpus). Each shard writes its own ``OUTPUT``
    and ``OUTPUT.skipped``. :func:`merge_shards` (``seqkd-generate --merge-shards SHARD...
    --output OUT --expected-size N``) joins them, checking that every index ``0..N-1`` is in
    exactly one shard, or listed in exactly one shard's ``.skipped`` file; a duplicate or a gap
    is a one-line error naming the index and the files. Shards and the unsharded run must use
    the same ``--chunk-size`` (and batching options) for the merged bytes to equal the unsharded
    file; the merge copies lines verbatim.

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
import ast
import contextlib
import hashlib
import heapq
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fairseq import checkpoint_utils, options, tasks, utils
from fairseq.data import BaseWrapperDataset, data_utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..atomic import atomic_open, atomic_write_text, umask
from ..errors import SeqKDError
from ..teacher import check_teacher_dictionaries, load_checkpoint_state
from .nbest import Hypothesis, format_nbest_lines

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "GenerationSummary",
    "build_parser",
    "generate_nbest",
    "merge_shards",
    "owned_chunks",
    "skipped_path",
]

DEFAULT_CHUNK_SIZE = 10000
MANIFEST_VERSION = 1
PARTS_SUFFIX = ".parts"
SKIPPED_SUFFIX = ".skipped"
_MANIFEST = "manifest.json"
_NBEST_LINE_RE = re.compile(r"([0-9]+)\t([0-9]+)\t([^\t\n]*)\t[^\t\n]*\n?")


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


def skipped_path(output: str) -> str:
    return output + SKIPPED_SUFFIX


def owned_chunks(size: int, chunk_size: int, num_shards: int = 1, shard_id: int = 0) -> list[int]:
    """Ids of the chunks of a split of ``size`` sentences that shard ``shard_id`` decodes."""
    num_chunks = -(-size // chunk_size)
    return list(range(shard_id, num_chunks, num_shards))


# ------------------------------------------------------------------ files


def check_output_path(output: str, option: str = "--output") -> None:
    """Fail now, not after hours of decoding, if ``output`` cannot be written."""
    if os.path.isdir(output):
        raise SeqKDError(f"{option}: {output} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise SeqKDError(f"{option}: cannot write {output}: directory {directory} {what}")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(output)}.")
    except OSError as exc:
        raise SeqKDError(
            f"{option}: cannot write {output}: directory {directory} is not writable "
            f"({exc.strerror or exc})"
        ) from None
    os.close(fd)
    os.unlink(probe)


class ChunkStore:
    """``OUTPUT.parts/``: the manifest and the committed chunks of one (shard's) run."""

    def __init__(self, output: str, suffix: str = ".tsv"):
        self.output = output
        self.parts = output + PARTS_SUFFIX
        self.suffix = suffix  # "" for chunks that are directories (see commit_files)
        self._chunk_re = re.compile(r"chunk-([0-9]+)" + re.escape(suffix))

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.parts, _MANIFEST)

    def chunk_path(self, chunk: int) -> str:
        return os.path.join(self.parts, f"chunk-{chunk:06d}{self.suffix}")

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            with open(self.manifest_path, encoding="utf-8") as handle:
                manifest = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SeqKDError(
                f"cannot resume: {self.manifest_path} is unreadable ({exc}); delete {self.parts} "
                f"to start over"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
            raise SeqKDError(
                f"cannot resume: {self.manifest_path} was written by another version of "
                f"seqkd-generate; delete {self.parts} to start over"
            )
        return manifest

    def _compare(self, old: dict[str, Any], new: dict[str, Any], what: str) -> None:
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise SeqKDError(
                    f"cannot resume {self.parts}: {key} was {_show(old.get(key))} when it was "
                    f"started, now {_show(new.get(key))} ({what}); rerun with the same options, "
                    f"or delete {self.parts} to start over"
                )

    def check_options(self, opts: dict[str, Any]) -> None:
        """Refuse to resume with options that change the output (before loading anything)."""
        manifest = self.read_manifest()
        if manifest is not None:
            self._compare(manifest.get("options", {}), opts, "an option that changes the output")

    def start(self, opts: dict[str, Any], data: dict[str, Any]) -> set[int]:
        """Create or check the manifest; the ids of the chunks already committed."""
        manifest = self.read_manifest()
        if manifest is None:  # chunks without a manifest cannot be trusted: start afresh
            shutil.rmtree(self.parts, ignore_errors=True)
            os.makedirs(self.parts)
            atomic_write_text(
                self.manifest_path,
                json.dumps(
                    {"version": MANIFEST_VERSION, "options": opts, "data": data},
                    indent=1,
                    sort_keys=True,
                )
                + "\n",
            )
            return set()
        self._compare(manifest.get("options", {}), opts, "an option that changes the output")
        self._compare(manifest.get("data", {}), data, "the data changed")
        done = set()
        for name in os.listdir(self.parts):
            match = self._chunk_re.fullmatch(name)
            if match:
                done.add(int(match.group(1)))
            elif name.startswith(".") and name.endswith(".tmp"):  # left by a killed run
                path = os.path.join(self.parts, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
        return done

    def commit(self, chunk: int, text: str) -> None:
        atomic_write_text(self.chunk_path(chunk), text)

    def commit_files(self, chunk: int, write: Callable[[str], None]) -> None:
        """A chunk made of several files: ``write(directory)`` fills a temporary directory,
        which is renamed to :meth:`chunk_path` as a whole (so a chunk is all there or absent).
        """
        name = os.path.basename(self.chunk_path(chunk))
        tmp = tempfile.mkdtemp(dir=self.parts, prefix=f".{name}.", suffix=".tmp")
        try:
            write(tmp)
            for entry in os.listdir(tmp):
                with open(os.path.join(tmp, entry), "rb") as handle:
                    os.fsync(handle.fileno())
            os.chmod(tmp, 0o777 & ~umask())
            os.rename(tmp, self.chunk_path(chunk))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def discard(self) -> None:
        """Remove the parts directory once its chunks are assembled elsewhere."""
        shutil.rmtree(self.parts)

    def assemble(self, chunks: Sequence[int], skipped: Sequence[int]) -> int:
        """Concatenate the chunks into the output; the number of hypotheses (lines)."""
        atomic_write_text(skipped_path(self.output), "".join(f"{i}\n" for i in skipped))
        lines = 0
        with atomic_open(self.output) as out:
            for chunk in chunks:
                with open(self.chunk_path(chunk), encoding="utf-8", newline="\n") as part:
                    text = part.read()
                lines += text.count("\n")
                out.write(text)
        shutil.rmtree(self.parts)
        return lines


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


# ------------------------------------------------------------------ options


def build_parser() -> argparse.ArgumentParser:
    """fairseq's generation parser plus the options of ``seqkd-generate``."""
    parser = options.get_generation_parser(default_task="translation")
    parser.prog = "seqkd-generate"
    group = parser.add_argument_group("seqkd-generate")
    group.add_argument(
        "--output", required=True, metavar="FILE",
        help="n-best file to write (index, rank, score, tokens); skipped sentence indices go "
        "to FILE.skipped, unfinished work to FILE.parts/",
    )
    add_chunk_size_argument(group)
    return parser


def add_chunk_size_argument(group: Any) -> None:
    """``--chunk-size``, shared by the tools built on :class:`ChunkStore`."""
    group.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, metavar="N",
        help="sentence indices per committed chunk: the unit of resuming and of sharding "
        "(shards use --num-shards/--shard-id and must share it)",
    )


def parse_generation_args(argv: Sequence[str]) -> tuple[DictConfig, argparse.Namespace]:
    parser = build_parser()
    args = options.parse_args_and_arch(parser, input_args=list(argv))
    return convert_namespace_to_omegaconf(args), args


def check_chunked_options(cfg: DictConfig, args: argparse.Namespace) -> None:
    """Checks shared by the tools that run a teacher over chunks (and fairseq's batch default)."""
    if cfg.common_eval.path is None:
        raise SeqKDError("--path is required: a teacher checkpoint, or several joined by ':'")
    if args.chunk_size < 1:
        raise SeqKDError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    shards, shard = cfg.dataset.num_shards, cfg.dataset.shard_id
    if shards < 1 or not 0 <= shard < shards:
        raise SeqKDError(f"--shard-id must be in [0, --num-shards {shards}), got {shard}")
    if cfg.dataset.max_tokens is None and cfg.dataset.batch_size is None:
        cfg.dataset.max_tokens = 12000  # fairseq-generate's default


def _check_options(cfg: DictConfig, args: argparse.Namespace) -> None:
    check_chunked_options(cfg, args)
    gen = cfg.generation
    if gen.nbest < 1 or gen.nbest > gen.beam:
        raise SeqKDError(f"--nbest must be in [1, --beam {gen.beam}], got {gen.nbest}")
    if gen.sampling and gen.nbest != gen.beam:
        raise SeqKDError("--sampling needs --nbest equal to --beam (fairseq's rule)")
    if cfg.common_eval.post_process:
        logger.warning(
            "--post-process/--remove-bpe is ignored: the n-best keeps the teacher's subwords"
        )


def json_plain(node: Any) -> Any:
    """A JSON-comparable copy of a config node (enums as strings)."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    return json.loads(json.dumps(node, default=str, sort_keys=True))


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def checkpoint_paths(cfg: DictConfig) -> list[str]:
    paths = utils.split_paths(cfg.common_eval.path)
    if not paths:
        raise SeqKDError("--path is empty; give a checkpoint, or several joined by ':'")
    return paths


def _plain_loading(cfg: DictConfig) -> bool:
    """Whether --path names the files themselves (no --checkpoint-suffix / shard count)."""
    return not cfg.checkpoint.checkpoint_suffix and cfg.checkpoint.checkpoint_shard_count == 1


#: options of fairseq-generate's printing and of training-time validation: no effect on the n-best
_NO_EFFECT = frozenset(
    {"print_alignment", "print_step", "sacrebleu", "retain_iter_history", "train_subset"}
)


def resume_options(cfg: DictConfig, args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Every option that can change the bytes of the output, keyed by its command-line flag."""
    opts: dict[str, Any] = {}
    for name, value in json_plain(cfg.generation).items():
        if not name.startswith("_") and name not in _NO_EFFECT:
            opts[option_flag(name)] = value
    for name, value in json_plain(cfg.task).items():
        if name in _NO_EFFECT or name.startswith("eval_"):
            continue
        if name == "_name":
            opts["--task"] = value
        elif name == "data":
            opts["DATA"] = [os.path.abspath(p) for p in str(value).split(os.pathsep) if p]
        else:
            opts[option_flag(name)] = value
    for name in ("gen_subset", "batch_size", "max_tokens", "required_batch_size_multiple",
                 "skip_invalid_size_inputs_valid_test", "num_shards", "shard_id"):
        opts[option_flag(name)] = json_plain(cfg.dataset[name])
    opts["--fp16"] = bool(cfg.common.fp16)
    opts["--seed"] = cfg.common.seed
    opts["--model-overrides"] = cfg.common_eval.model_overrides
    opts["--checkpoint-suffix"] = cfg.checkpoint.checkpoint_suffix
    opts["--checkpoint-shard-count"] = cfg.checkpoint.checkpoint_shard_count
    opts["--chunk-size"] = args.chunk_size
    opts["device (--cpu)"] = device
    checkpoints = []
    for path in checkpoint_paths(cfg):
        if _plain_loading(cfg) and not os.path.isfile(path):
            raise SeqKDError(f"--path: {path} does not exist")
        try:
            stat = os.stat(path)
            checkpoints.append([os.path.abspath(path), stat.st_size, stat.st_mtime_ns])
        except OSError:
            checkpoints.append([os.path.abspath(path), None, None])
    opts["--path (files, sizes, mtimes)"] = checkpoints
    return opts


# ------------------------------------------------------------------ fairseq glue


class ChunkBatches(BaseWrapperDataset):
    """The split, batched chunk by chunk: no batch crosses a chunk, none depends on another chunk.

    ``segments`` are the chunks' indices in fairseq's batching order. fairseq's own
    ``batch_by_size`` batches each segment on its own, so one ``task.get_batch_iterator`` (one
    DataLoader, with fairseq's ``--num-workers`` prefetching) serves the whole run while a chunk
    gets the same batches whichever chunks precede it.
    """

    def __init__(self, dataset: Any, segments: Sequence[np.ndarray]):
        super().__init__(dataset)
        self._segments = [s for s in segments if len(s)]

    def ordered_indices(self) -> np.ndarray:
        if not self._segments:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(self._segments)

    def batch_by_size(
        self, indices: np.ndarray, max_tokens: int | None = None,
        max_sentences: int | None = None, required_batch_size_multiple: int = 1,
    ) -> list[np.ndarray]:
        if len(indices) != sum(len(s) for s in self._segments):
            raise RuntimeError("the chunk batches were filtered after they were planned")
        batches: list[np.ndarray] = []
        for segment in self._segments:
            batches.extend(_fairseq_batches(
                self.dataset, segment, max_tokens, max_sentences, required_batch_size_multiple
            ))
        return batches


def _fairseq_batches(
    dataset: Any, indices: np.ndarray, max_tokens: int | None, max_sentences: int | None,
    required_batch_size_multiple: int,
) -> list[np.ndarray]:
    """fairseq's batches of ``indices``, plus the last one that fairseq silently drops.

    ``data_utils.batch_by_size`` discards a last batch whose size is not a multiple of
    ``--required-batch-size-multiple`` (8 by default; facebookresearch/fairseq#5036), so
    ``fairseq-generate`` loses up to 7 sentences per split. The dropped batch is valid (fairseq
    built it under the same limits), so it is decoded here instead.
    """
    batches = list(dataset.batch_by_size(
        indices, max_tokens=max_tokens, max_sentences=max_sentences,
        required_batch_size_multiple=required_batch_size_multiple,
    ))
    if sum(len(b) for b in batches) < len(indices):
        batched = np.concatenate(batches) if batches else np.empty(0, dtype=np.int64)
        batches.append(np.asarray(indices)[~np.isin(indices, batched)])
    return batches


def load_models(cfg: DictConfig, task: Any) -> tuple[list[torch.nn.Module], Any]:
    overrides = ast.literal_eval(cfg.common_eval.model_overrides)
    models, saved_cfg = [], None
    for path in checkpoint_paths(cfg):
        state = None
        if _plain_loading(cfg):
            state = load_checkpoint_state(path, "--path")
            check_teacher_dictionaries(
                path, state, (getattr(task, "source_dictionary", None), task.target_dictionary),
                f"the data in {str(task.cfg.data).split(os.pathsep)[0]}",
                langs=(getattr(task.cfg, "source_lang", None) or "src",
                       getattr(task.cfg, "target_lang", None) or "tgt"),
            )
            if overrides:
                state = None  # fairseq re-reads it, applying --model-overrides
        try:
            loaded, model_cfg = checkpoint_utils.load_model_ensemble(
                [path],
                arg_overrides=overrides,
                task=task,
                suffix=cfg.checkpoint.checkpoint_suffix,
                strict=(cfg.checkpoint.checkpoint_shard_count == 1),
                num_shards=cfg.checkpoint.checkpoint_shard_count,
                state=state,
            )
        except (OSError, RuntimeError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SeqKDError(f"--path: cannot load {path} into the task's model ({first})") from exc
        models.extend(loaded)
        saved_cfg = saved_cfg or model_cfg
    return models, saved_cfg


def _strip_symbols(generator: Any) -> set[int]:
    return getattr(generator, "symbols_to_strip_from_output", None) or {generator.eos}


def data_fingerprint(dataset: Any, split: str) -> dict[str, Any]:
    sizes = getattr(dataset, "sizes", None)
    digest = None
    if sizes is not None:
        digest = hashlib.sha1(np.ascontiguousarray(sizes).tobytes()).hexdigest()
    return {f"sentences in --gen-subset {split}": len(dataset), "sentence lengths (sha1)": digest}


def _too_long_error(dataset: Any, index: int, max_positions: Any, split: str, out: str) -> str:
    return (
        f"sentence {index} of --gen-subset {split} is too long for the model (size "
        f"{dataset.size(index)}, max positions {max_positions}); pass "
        f"--skip-invalid-size-inputs-valid-test to skip such sentences (they are listed in "
        f"{skipped_path(out)})"
    )


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a chatty fairseq logger (per-chunk batch-iterator INFO lines)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def generate_nbest(argv: Sequence[str]) -> GenerationSummary:
    """Run ``seqkd-generate`` with command-line ``argv`` in this process.

    Raises :class:`SeqKDError` (one line) for bad input; may be called repeatedly.
    """
    cfg, args = parse_generation_args(argv)
    return generate(cfg, args)


def generate(cfg: DictConfig, args: argparse.Namespace) -> GenerationSummary:
    """Decode the owned chunks that are not committed yet, then assemble ``args.output``."""
    start_time = time.perf_counter()
    _check_options(cfg, args)
    output: str = args.output
    check_output_path(output)
    use_cuda = torch.cuda.is_available() and not cfg.common.cpu
    device = "cuda" if use_cuda else "cpu"
    opts = resume_options(cfg, args, device)
    store = ChunkStore(output)
    store.check_options(opts)  # before minutes of model loading

    utils.import_user_module(cfg.common)
    seed = cfg.common.seed if cfg.common.seed is not None else 1
    np.random.seed(seed)
    utils.set_torch_seed(seed)

    task = tasks.setup_task(cfg.task)
    models, saved_cfg = load_models(cfg, task)
    split = cfg.dataset.gen_subset
    try:
        task.load_dataset(split, task_cfg=saved_cfg.task)
    except FileNotFoundError as exc:
        raise SeqKDError(f"--gen-subset {split}: not found in {cfg.task.data} ({exc})") from None
    dataset = task.dataset(split)
    for model in models:
        if cfg.common.fp16:
            model.half()
        if use_cuda:
            model.cuda()
        model.prepare_for_inference_(cfg)
    generator = task.build_generator(models, cfg.generation)
    max_positions = utils.resolve_max_positions(
        task.max_positions(), *[m.max_positions() for m in models]
    )

    size, chunk_size = len(dataset), args.chunk_size
    chunks = owned_chunks(size, chunk_size, cfg.dataset.num_shards, cfg.dataset.shard_id)
    owned = np.zeros(size, dtype=bool)
    for chunk in chunks:
        owned[chunk * chunk_size:(chunk + 1) * chunk_size] = True
    owned_indices = np.flatnonzero(owned).astype(np.int64)

    _, ignored = dataset.filter_indices_by_size(owned_indices, max_positions)
    skipped = sorted(int(i) for i in ignored)
    if skipped and not cfg.dataset.skip_invalid_size_inputs_valid_test:
        raise SeqKDError(_too_long_error(dataset, skipped[0], max_positions, split, output))
    keep = owned.copy()
    keep[np.asarray(skipped, dtype=np.int64)] = False
    max_tokens = cfg.dataset.max_tokens
    if max_tokens:
        kept = np.flatnonzero(keep)
        try:
            lengths = np.asarray(dataset.num_tokens_vec(kept))
        except NotImplementedError:
            lengths = np.array([dataset.num_tokens(i) for i in kept], dtype=np.int64)
        if len(kept) and lengths.max() > max_tokens:
            worst = int(kept[int(np.argmax(lengths))])
            raise SeqKDError(
                f"sentence {worst} of --gen-subset {split} has {int(lengths.max())} tokens, more "
                f"than --max-tokens {max_tokens}; raise --max-tokens"
            )

    # fairseq-generate's batching order for the whole split, cut into chunks
    with data_utils.numpy_seed(seed + 1):
        order = np.asarray(dataset.ordered_indices(), dtype=np.int64)
    order = order[keep[order]]
    order_chunk = order // chunk_size
    grouped = np.argsort(order_chunk, kind="stable")
    order, order_chunk = order[grouped], order_chunk[grouped]
    bounds = np.searchsorted(order_chunk, np.arange(-(-size // chunk_size) + 1))

    done = store.start(opts, data_fingerprint(dataset, split))
    done &= set(chunks)
    todo = [c for c in chunks if c not in done]
    total = int(keep.sum())
    already = sum(int(bounds[c + 1] - bounds[c]) for c in done)
    if done:
        logger.info("resuming %s: %d of %d chunks already done", store.parts, len(done),
                    len(chunks))
    progress = tqdm(
        total=total, initial=already, unit="sent", desc="seqkd-generate", file=sys.stderr,
        disable=cfg.common.no_progress_bar, dynamic_ncols=True, smoothing=0.05,
    )
    decoded = tokens = 0
    decode_start = time.perf_counter()
    segments = {c: order[bounds[c]:bounds[c + 1]] for c in todo}
    try:
        with quiet_logger("fairseq.tasks.fairseq_task"):
            for chunk, text, n_tokens in _decode(
                cfg, task, models, generator, dataset, segments, chunk_size, seed, use_cuda,
                progress,
            ):
                store.commit(chunk, text)
                decoded += len(segments[chunk])
                tokens += n_tokens
    finally:
        progress.close()
    decode_seconds = time.perf_counter() - decode_start

    hypotheses = store.assemble(chunks, skipped)
    return GenerationSummary(
        output=output, sentences=total, hypotheses=hypotheses, skipped=skipped,
        seconds=time.perf_counter() - start_time, decoded=decoded, tokens=tokens,
        decode_seconds=decode_seconds, resumed_chunks=len(done), chunks=len(chunks),
    )


def _decode(
    cfg: DictConfig, task: Any, models: list[torch.nn.Module], generator: Any, dataset: Any,
    segments: dict[int, np.ndarray], chunk_size: int, seed: int, use_cuda: bool, progress: tqdm,
) -> Iterator[tuple[int, str, int]]:
    """Decode the chunks in ``segments`` (in order) and yield ``(chunk, n-best text, tokens)``.

    A chunk is yielded as soon as its last batch is decoded; its lines are sorted by index and
    ``tokens`` counts the best hypotheses' tokens, as ``fairseq-generate`` does.
    """
    for chunk, segment in segments.items():
        if len(segment) == 0:  # every sentence of the chunk is skipped
            yield chunk, "", 0
    if not any(len(segment) for segment in segments.values()):
        return
    itr = task.get_batch_iterator(
        dataset=ChunkBatches(dataset, list(segments.values())),
        max_tokens=cfg.dataset.max_tokens,
        max_sentences=cfg.dataset.batch_size,
        max_positions=None,  # already filtered: the skipped sentences are in no segment
        required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
        seed=cfg.common.seed,
        num_workers=cfg.dataset.num_workers,
        data_buffer_size=cfg.dataset.data_buffer_size,
        disable_iterator_cache=True,
    ).next_epoch_itr(shuffle=False)
    tgt_dict = task.target_dictionary
    strip = _strip_symbols(generator)
    nbest = cfg.generation.nbest
    current, lines, tokens = -1, {}, 0
    for sample in itr:
        if "net_input" not in sample:
            continue
        ids = sample["id"].tolist()
        chunk = ids[0] // chunk_size
        if chunk != current:
            if lines:
                raise RuntimeError(f"chunk {current} is incomplete: fairseq skipped sentences")
            current, tokens = chunk, 0
            utils.set_torch_seed(seed + chunk)  # --sampling reproducible wherever a run resumed
        sample = utils.move_to_cuda(sample) if use_cuda else sample
        prefix_tokens = None
        if cfg.generation.prefix_size > 0:
            prefix_tokens = sample["target"][:, : cfg.generation.prefix_size]
        hypos = task.inference_step(
            generator, models, sample, prefix_tokens=prefix_tokens,
            constraints=sample.get("constraints"),
        )
        for i, index in enumerate(ids):
            best = hypos[i][:nbest]
            tokens += len(best[0]["tokens"]) if best else 0
            lines[index] = format_nbest_lines(index, [
                Hypothesis(
                    tgt_dict.string(h["tokens"].int().cpu(), extra_symbols_to_ignore=strip),
                    float(h["score"]),
                )
                for h in best
            ])
        progress.update(len(ids))
        if len(lines) == len(segments[chunk]):
            yield chunk, "".join(lines[i] for i in sorted(lines)), tokens
            lines = {}
    if lines:
        raise RuntimeError(f"chunk {current} is incomplete: fairseq skipped sentences")


# ------------------------------------------------------------------ merging shards


def _read_skipped(path: str) -> list[tuple[int, int]]:
    """``(index, line number)`` pairs of a ``.skipped`` file; [] when there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = handle.read().split("\n")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise SeqKDError(f"cannot read {path}: {exc}") from None
    if raw and raw[-1] == "":
        raw.pop()
    out = []
    for lineno, line in enumerate(raw, start=1):
        if not line.isdigit() or not line.isascii():
            raise SeqKDError(f"{path}:{lineno}: expected a sentence index, got {line[:40]!r}")
        out.append((int(line), lineno))
    return out


def _shard_lines(path: str, shard: int) -> Iterator[tuple[int, int, int, int, str]]:
    """``(index, rank, shard, line number, line)`` of a shard, checking format and order."""
    prev_index, prev_rank = -1, -1
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below, generator)
    except OSError as exc:
        raise SeqKDError(f"--merge-shards: cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SeqKDError(f"{path}:{lineno}: invalid UTF-8 ({exc.reason})") from None
            match = _NBEST_LINE_RE.fullmatch(line)
            score = match.group(3) if match else ""
            try:
                ok = match is not None and not math.isnan(float(score)) and score == score.strip()
            except ValueError:
                ok = False
            if not ok:
                raise SeqKDError(
                    f"{path}:{lineno}: expected 'index<TAB>rank<TAB>score<TAB>tokens', got "
                    f"{line.rstrip()[:80]!r}"
                )
            index, rank = int(match.group(1)), int(match.group(2))
            if not line.endswith("\n"):
                line += "\n"
            if index == prev_index:
                if rank != prev_rank + 1:
                    raise SeqKDError(
                        f"{path}:{lineno}: sentence index {index} has rank {rank} after rank "
                        f"{prev_rank}"
                    )
            elif index < prev_index:
                raise SeqKDError(
                    f"{path}:{lineno}: sentence index {index} after {prev_index}; a shard must be "
                    f"sorted by index (as seqkd-generate writes it)"
                )
            elif rank != 0:
                raise SeqKDError(f"{path}:{lineno}: sentence index {index} starts at rank {rank}")
            prev_index, prev_rank = index, rank
            yield index, rank, shard, lineno, line


def merge_shards(paths: Sequence[str], output: str, expected_size: int) -> GenerationSummary:
    """Join shard n-best files into ``output`` (+ ``output.skipped``), checking coverage.

    Every index ``0..expected_size-1`` must be in exactly one shard or listed in exactly one
    ``SHARD.skipped`` file; lines are copied verbatim, in index order, so the result is byte
    identical to an unsharded run with the same ``--chunk-size``. Streams: memory does not grow
    with the split (only with the number of skipped sentences).
    """
    start_time = time.perf_counter()
    if not paths:
        raise SeqKDError("--merge-shards needs at least one shard file")
    if expected_size < 0:
        raise SeqKDError(f"--expected-size must be >= 0, got {expected_size}")
    if os.path.abspath(output) in {os.path.abspath(p) for p in paths}:
        raise SeqKDError(f"--output {output} is also one of the shards")
    check_output_path(output)
    skipped: dict[int, str] = {}
    for path in paths:
        spath = skipped_path(path)
        for index, lineno in _read_skipped(spath):
            if index >= expected_size:
                raise SeqKDError(
                    f"{spath}:{lineno}: sentence index {index} is out of range for "
                    f"--expected-size {expected_size}"
                )
            if index in skipped:
                raise SeqKDError(
                    f"{spath}:{lineno}: sentence index {index} is also listed in {skipped[index]}"
                )
            skipped[index] = spath

    def gap_error(index: int) -> SeqKDError:
        for shard, path in enumerate(paths):  # an unsorted or malformed shard explains it better
            for _ in _shard_lines(path, shard):
                pass
        return SeqKDError(
            f"sentence index {index} is missing: it is in none of the shards "
            f"({', '.join(paths)}) nor in their .skipped files"
        )

    streams = [_shard_lines(path, shard) for shard, path in enumerate(paths)]
    next_index, prev = 0, None  # prev: (index, shard, lineno) of the last line written
    sentences = lines = 0
    with atomic_open(output) as out:
        for index, _rank, shard, lineno, line in heapq.merge(*streams):
            if prev is not None and index == prev[0]:
                if shard != prev[1]:
                    raise SeqKDError(
                        f"{paths[shard]}:{lineno}: sentence index {index} is also in "
                        f"{paths[prev[1]]} (line {prev[2]}); shards overlap"
                    )
            else:
                if index >= expected_size:
                    raise SeqKDError(
                        f"{paths[shard]}:{lineno}: sentence index {index} is out of range for "
                        f"--expected-size {expected_size}"
                    )
                if index in skipped:
                    raise SeqKDError(
                        f"{paths[shard]}:{lineno}: sentence index {index} has hypotheses but is "
                        f"listed as skipped in {skipped[index]}"
                    )
                for gap in range(next_index, index):
                    if gap not in skipped:
                        raise gap_error(gap)
                next_index = index + 1
                sentences += 1
            prev = (index, shard, lineno)
            out.write(line)
            lines += 1
        for gap in range(next_index, expected_size):
            if gap not in skipped:
                raise gap_error(gap)
        atomic_write_text(skipped_path(output), "".join(f"{i}\n" for i in sorted(skipped)))
    return GenerationSummary(
        output=output, sentences=sentences, hypotheses=lines, skipped=sorted(skipped),
        seconds=time.perf_counter() - start_time, merged_shards=len(paths),
    )
