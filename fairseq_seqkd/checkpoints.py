"""Checkpoint files as the tools read and write them: counts, plain configs, atomic saves."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor

from .atomic import atomic_open
from .errors import SeqKDError
from .pruning import compute_masks, group_tied, prunable_tensors

_NOT_PARAMETERS = (".version", "._float_tensor")  # buffers fairseq keeps in its state dicts


def check_output(output: str, inputs: Iterable[str]) -> None:
    """Refuse to overwrite an input and fail before any work on an unwritable path."""
    real = os.path.realpath(output)
    for path in inputs:
        same = os.path.realpath(path) == real
        if not same and os.path.exists(output) and os.path.exists(path):
            same = os.path.samefile(path, output)
        if same:
            raise SeqKDError(f"--output {output} is the input checkpoint {path}; "
                             "choose another file name")
    if os.path.isdir(output):
        raise SeqKDError(f"--output {output} is a directory")
    directory = os.path.dirname(real)
    if not os.path.isdir(directory):
        raise SeqKDError(f"--output {output}: directory {directory} does not exist")


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save`` through a temporary file beside ``path``: never half-written."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def parameter_counts(model_state: Mapping[str, Tensor]) -> tuple[int, int]:
    """``(total, nonzero)`` over the floating tensors of a state dict, tied ones once."""
    total = nonzero = 0
    items = [(n, t) for n, t in model_state.items() if not n.endswith(_NOT_PARAMETERS)]
    for _names, tensor in group_tied(items, by_value=True):
        total += tensor.numel()
        nonzero += int(torch.count_nonzero(tensor).item())
    return total, nonzero


def plain_cfg(cfg: Any) -> Any:
    """A checkpoint's cfg as plain containers (what fairseq's trainer saves)."""
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return cfg


def fmt_count(total: int, nonzero: int) -> str:
    pct = 100.0 * nonzero / total if total else 0.0
    return f"{total:,} parameters, {nonzero:,} non-zero ({pct:.2f}%)"


def prune_state(
    state: dict[str, Any], ratio: float, scheme: str, pattern: str | None
) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """Prune ``state['model']`` in place; return the pruned tensors and their names."""
    model = state["model"]
    weights, aliases = prunable_tensors(model.items(), pattern, by_value=True)
    masks = compute_masks(weights, ratio, scheme)
    with torch.no_grad():
        for name, mask in masks.items():
            for alias in aliases[name]:  # copies of a tied weight saved from GPU, too
                model[alias].masked_fill_(~mask, 0)
    return weights, aliases
