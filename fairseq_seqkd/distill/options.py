"""The options of the tools that run a teacher over chunks: parsing, checks, what to record.

``seqkd-generate`` and ``seqkd-cache-teacher`` take fairseq-generate's options (same parser) plus
``--output``, ``--chunk-size`` and ``--teacher-data``; :func:`resume_options` lists every option
that can change their output's bytes, the checkpoints' content digests and the package version,
which a resumed run must repeat; :func:`data_digests` the content digests of the data it reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from fairseq import checkpoint_utils, options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import DictConfig, OmegaConf

from .. import version
from ..digests import content_digest
from ..errors import SeqKDError
from ..teacher import split_paths
from .chunks import DEFAULT_CHUNK_SIZE
from .databin import split_digests

logger = logging.getLogger(__name__)


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
    add_chunked_arguments(group)
    return parser


TEACHER_DATA_HELP = (
    "directory holding the teacher's dict.*.txt, to check them against the data's (default: "
    "the data directory recorded in the teacher checkpoint)"
)


def add_chunked_arguments(group: Any) -> None:
    """``--chunk-size`` and ``--teacher-data``, shared by the tools built on the chunk runner."""
    group.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, metavar="N",
        help="sentence indices per committed chunk: the unit of resuming and of sharding "
        "(shards use --num-shards/--shard-id and must share it)",
    )
    group.add_argument("--teacher-data", default=None, metavar="DIR", help=TEACHER_DATA_HELP)


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


def check_generation_options(cfg: DictConfig, args: argparse.Namespace) -> None:
    """seqkd-generate's checks: the chunked tools' and beam search's."""
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
    return split_paths(cfg.common_eval.path, "--path")


def device(cfg: DictConfig) -> str:
    """Where the teacher runs: ``cuda`` unless ``--cpu`` or no GPU."""
    return "cuda" if torch.cuda.is_available() and not cfg.common.cpu else "cpu"


def plain_loading(cfg: DictConfig) -> bool:
    """Whether --path names the files themselves (no --checkpoint-suffix / shard count)."""
    return not cfg.checkpoint.checkpoint_suffix and cfg.checkpoint.checkpoint_shard_count == 1


#: options of fairseq-generate's printing and of training-time validation: no effect on the n-best
_NO_EFFECT = frozenset(
    {"print_alignment", "print_step", "sacrebleu", "retain_iter_history", "train_subset"}
)


def resume_options(cfg: DictConfig, args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Every option that can change the bytes of the output, keyed by its command-line flag,
    with the content digests of the checkpoints and the package version."""
    opts: dict[str, Any] = {}
    for name, value in json_plain(cfg.generation).items():
        if not name.startswith("_") and name not in _NO_EFFECT:
            opts[option_flag(name)] = value
    for name, value in json_plain(cfg.task).items():
        if name in _NO_EFFECT or name.startswith("eval_"):
            continue
        if name == "_name":
            opts["--task"] = value
        elif name != "data":  # the data by content: data_digests
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
    opts["--path (sha256)"] = [content_digest(path) for path in checkpoint_files(cfg)]
    opts["package version"] = version.__version__
    return opts


def checkpoint_files(cfg: DictConfig) -> list[str]:
    """Every file fairseq loads for ``--path`` (with ``--checkpoint-suffix`` and
    ``--checkpoint-shard-count``), each checked to exist."""
    files = []
    for path in checkpoint_paths(cfg):
        shards = cfg.checkpoint.checkpoint_shard_count
        for shard in range(shards):
            name = checkpoint_utils.get_maybe_sharded_checkpoint_filename(
                path, cfg.checkpoint.checkpoint_suffix, shard, shards)
            if not os.path.isfile(name):
                raise SeqKDError(f"--path: {name} does not exist")
            files.append(name)
    return files


def data_digests(cfg: DictConfig) -> dict[str, str]:
    """Content digests of the data a run reads: the ``--gen-subset`` split's files and the
    dictionaries of the (first) data directory, by file name."""
    return split_digests(str(cfg.task.data).split(os.pathsep)[0], cfg.dataset.gen_subset)
