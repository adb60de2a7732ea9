"""A deployable fairseq checkpoint that stock fairseq loads without the plugin.

The exported checkpoint keeps the model weights (averaged over the last N epoch checkpoints,
as fairseq's ``scripts/average_checkpoints.py`` does) and rewrites the configuration to stock
fairseq: task ``translation_kd`` -> ``translation``, a plugin criterion ->
``label_smoothed_cross_entropy`` (or ``cross_entropy`` without label smoothing),
``common.user_dir`` -> None. Optimizer state, criterion state, task state and training extras
are dropped, and no ``argparse.Namespace`` is left anywhere, so torch >= 2.6 reads it with
``torch.load(weights_only=True)`` and no allow-list. Tied weights are stored once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..checkpoints import check_output, parameter_counts, plain_cfg, save_atomic
from ..errors import SeqKDError
from ..pruning import group_tied
from ..teacher import load_checkpoint_state

EPOCH_CHECKPOINT = re.compile(r"^checkpoint(\d+)\.pt$")
STOCK_TASK = "translation"


# --------------------------------------------------------------------- inputs and averaging


def last_epoch_checkpoints(directory: str, n: int) -> list[str]:
    """The ``n`` highest-numbered ``checkpointN.pt`` of ``directory``, newest first."""
    if n < 1:
        raise SeqKDError(f"--average-last must be >= 1, got {n}")
    if not os.path.isdir(directory):
        raise SeqKDError(f"--checkpoint-dir {directory} is not a directory")
    found = sorted(
        (int(m.group(1)), name)
        for name in os.listdir(directory)
        if (m := EPOCH_CHECKPOINT.match(name))
    )
    if len(found) < n:
        names = ""
        if found:
            names = f": {found[0][1]}" + (f" .. {found[-1][1]}" if len(found) > 1 else "")
        raise SeqKDError(
            f"--average-last {n}: {directory} has only {len(found)} epoch checkpoint(s) "
            f"named checkpointN.pt{names}"
        )
    return [os.path.join(directory, name) for _, name in reversed(found[-n:])]


def average_models(states: Sequence[dict[str, Any]], paths: Sequence[str]) -> OrderedDict:
    """Element-wise mean of the model weights (float64 sums), others from the first state."""
    first = states[0]["model"]
    averaged: OrderedDict[str, Tensor] = OrderedDict()
    for state, path in zip(states[1:], paths[1:]):
        if list(state["model"]) != list(first):
            diff = sorted(set(state["model"]) ^ set(first))[:3]
            raise SeqKDError(f"{path} and {paths[0]} hold different parameters ({diff})")
    for key, tensor in first.items():
        others = [s["model"][key] for s in states[1:]]
        for other, path in zip(others, paths[1:]):
            if other.shape != tensor.shape:
                raise SeqKDError(
                    f"{path}: {key} has shape {tuple(other.shape)}, "
                    f"{paths[0]} has {tuple(tensor.shape)}"
                )
        if not tensor.is_floating_point() or not others:
            averaged[key] = tensor
            continue
        total = tensor.double().clone()
        for other in others:
            total += other.double()
        averaged[key] = (total / len(states)).to(tensor.dtype)
    return averaged


# --------------------------------------------------------------------- configuration


def _registries() -> tuple[dict, dict, dict, dict, dict]:
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY, CRITERION_REGISTRY
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY

    return (TASK_REGISTRY, TASK_DATACLASS_REGISTRY, CRITERION_REGISTRY,
            CRITERION_DATACLASS_REGISTRY, ARCH_MODEL_REGISTRY)


def _is_stock(obj: Any) -> bool:
    return getattr(obj, "__module__", "").split(".")[0] in ("fairseq", "fairseq_cli")


def _field_names(dc: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(dc)} if dataclasses.is_dataclass(dc) else set()


def plain(obj: Any, where: str = "state") -> Any:
    """Plain containers only: ``argparse.Namespace`` -> dict; anything else unknown -> error.

    What remains is what ``torch.load(weights_only=True)`` accepts without an allow-list.
    """
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, dict):
        return type(obj)((k, plain(v, f"{where}[{k!r}]")) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if obj is None or isinstance(obj, (str, int, float, bool, torch.Tensor)):
        return obj
    raise SeqKDError(f"cannot export {where}: {type(obj).__name__} is not a plain value")


def stock_cfg(cfg: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rewrite a plain cfg to stock fairseq names; returns it and what was changed."""
    tasks, task_dcs, criterions, criterion_dcs, archs = _registries()
    cfg = dict(cfg)
    changes: list[str] = []
    removed: set[str] = set()
    renamed: dict[str, str] = {}

    task = dict(cfg.get("task") or {})
    name = task.get("_name")
    if name and not _is_stock(tasks.get(name)):
        from fairseq.tasks.translation import TranslationConfig, TranslationTask

        if not (isinstance(tasks.get(name), type) and issubclass(tasks[name], TranslationTask)):
            raise SeqKDError(f"cannot export task {name!r}: only translation tasks are supported")
        keep = _field_names(TranslationConfig)
        removed |= _field_names(task_dcs.get(name)) - keep
        task = {k: v for k, v in task.items() if k in keep or k == "_name"}
        task["_name"] = STOCK_TASK
        renamed["task"] = STOCK_TASK
        changes.append(f"task {name} -> {STOCK_TASK}")
    cfg["task"] = task

    criterion = dict(cfg.get("criterion") or {})
    name = criterion.get("_name")
    if name and not _is_stock(criterions.get(name)):
        smoothing = float(criterion.get("label_smoothing") or 0.0)
        new = "label_smoothed_cross_entropy" if smoothing > 0 else "cross_entropy"
        keep = _field_names(criterion_dcs[new])
        removed |= _field_names(criterion_dcs.get(name)) - keep
        criterion = {k: v for k, v in criterion.items() if k in keep}
        criterion["_name"] = new
        renamed["criterion"] = new
        changes.append(f"criterion {name} -> {new}")
    cfg["criterion"] = criterion

    common = dict(cfg.get("common") or {})
    if common.get("user_dir") is not None:
        changes.append(f"user_dir {common['user_dir']} -> None")
    common["user_dir"] = None
    cfg["common"] = common

    model = cfg.get("model")
    if isinstance(model, dict):
        arch = model.get("arch") or model.get("_name")
        if arch not in archs or not _is_stock(archs[arch]):
            raise SeqKDError(f"cannot export model {arch!r}: not a stock fairseq architecture")
        # legacy models keep every training option in cfg.model: drop the plugin's ones
        model = {k: v for k, v in model.items() if k not in removed}
        model.update({k: v for k, v in renamed.items() if k in model})
        if "user_dir" in model:
            model["user_dir"] = None
        cfg["model"] = model
    return cfg, changes


def export_state(states: Sequence[dict[str, Any]], paths: Sequence[str]) -> tuple[dict, list]:
    """The exported checkpoint built from loaded states (newest first) and its changes."""
    newest = states[0]
    model = average_models(states, paths) if len(states) > 1 else OrderedDict(newest["model"])
    for names, tensor in group_tied(model.items(), by_value=True):
        for name in names[1:]:  # tied weights (copies when saved from GPU): stored once
            model[name] = tensor
    cfg = plain(plain_cfg(newest["cfg"]), "cfg")
    cfg, changes = stock_cfg(cfg)
    criterion_name = (cfg.get("criterion") or {}).get("_name")
    criterion_cls = _registries()[2].get(criterion_name)
    history = (newest.get("optimizer_history") or [{}])[-1]
    iterator = (newest.get("extra_state") or {}).get("train_iterator")
    state = {
        "args": None,
        "cfg": cfg,
        "model": model,
        "criterion": None,
        "optimizer_history": [{
            "criterion_name": criterion_cls.__name__ if criterion_cls else
            history.get("criterion_name"),
            "optimizer_name": history.get("optimizer_name"),
            "lr_scheduler_state": {},
            "num_updates": history.get("num_updates", 0),
        }],
        "task_state": {},
        "extra_state": {
            "train_iterator": iterator,
            "seqkd_export": {"inputs": [os.path.abspath(p) for p in paths]},
        },
    }
    return plain(state), changes


@dataclass
class StockExport:
    """What :func:`export_stock` wrote: the inputs, the changes and the sizes."""

    inputs: list[str]
    output: str
    changes: list[str]
    before: tuple[int, int]  # (parameters, non-zero) of the newest input
    after: tuple[int, int]
    size_in: int
    size_out: int


def checkpoint_inputs(
    checkpoint: str | None, checkpoint_dir: str | None, average_last: int | None
) -> list[str]:
    """The checkpoint(s) to export: one file, or the last N epoch checkpoints of a directory."""
    if checkpoint_dir is not None:
        if average_last is None:
            raise SeqKDError("--checkpoint-dir needs --average-last N")
        return last_epoch_checkpoints(checkpoint_dir, average_last)
    if average_last is not None:
        raise SeqKDError("--average-last needs --checkpoint-dir (not --input)")
    if checkpoint is None:
        raise SeqKDError("give --input CKPT or --checkpoint-dir DIR --average-last N")
    return [checkpoint]


def load_export_state(paths: Sequence[str], option: str = "--input") -> tuple[dict, list[str]]:
    """The stock state of ``paths`` (newest first, averaged when several), and its changes."""
    states = [load_checkpoint_state(p, option) for p in paths]
    return export_state(states, paths)


def export_stock(paths: Sequence[str], output: str) -> StockExport:
    """Write the stock checkpoint of ``paths`` (averaged when several) to ``output``."""
    check_output(output, paths)
    option = "--input" if len(paths) == 1 else "--checkpoint-dir"
    states = [load_checkpoint_state(p, option) for p in paths]
    before = parameter_counts(states[0]["model"])
    state, changes = export_state(states, paths)
    save_atomic(state, output)
    return StockExport(
        inputs=list(paths), output=output, changes=changes, before=before,
        after=parameter_counts(state["model"]), size_in=os.path.getsize(paths[0]),
        size_out=os.path.getsize(output),
    )
