"""Magnitude pruning during (re)training, driven by task ``translation_kd``'s hooks.

Kim & Rush (2016) prune the distilled student and retrain it (See et al. 2016); Zhu & Gupta
(2017) raise the sparsity gradually. This module is the thin fairseq glue around the pure rules
of :mod:`fairseq_seqkd.pruning`:

* Masks are plain tensors held by the hook, never registered on the model, so the model's
  state dict (and therefore every checkpoint) stays loadable by stock fairseq.
* Pruned weights are exactly zero after every optimizer step (Adam would otherwise move them),
  in the model and in the fp32 master copy of fairseq's ``FP16Optimizer``.
* fairseq saves ``task.state_dict()`` but never restores it, so on resume the masks are rebuilt
  from the restored weights: pruned weights are exactly zero and have the smallest magnitude,
  so recomputing the schedule's current target reproduces the same masks. The rebuild is
  checked against the weights' zero pattern and logged.

Schedule, counted in *completed* updates ``t`` (what a checkpoint's ``num_updates`` says):
masks are (re)computed at ``t = --prune-at-update`` and, with ``--prune-schedule gradual``,
every ``--prune-interval`` updates until ``--prune-end-update``, where the target sparsity
``--prune-ratio`` is reached. ``--prune-at-update 0`` prunes before the first update.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from fairseq.logging import metrics
from torch import Tensor

from .errors import SeqKDError
from .pruning import (
    DEFAULT_PRUNE_PARAMS,
    apply_masks,
    check_ratio,
    check_scheme,
    compute_masks,
    cubic_sparsity,
    format_sparsity_table,
    prunable_tensors,
    sparsity_table,
)

logger = logging.getLogger(__name__)

SCHEDULES: tuple[str, ...] = ("one-shot", "gradual")

__all__ = [
    "SCHEDULES",
    "PruningHook",
    "PruningSchedule",
    "master_copies",
    "unwrap_model",
]


def _choice(value: Any) -> str:
    """fairseq hands ChoiceEnum fields over as enums or strings; compare their names."""
    return str(getattr(value, "value", value))


@dataclass(frozen=True)
class PruningSchedule:
    """When masks change and to which sparsity; ``end_update == at_update`` is one-shot."""

    ratio: float
    scheme: str
    at_update: int = 0
    end_update: int = 0
    interval: int = 1

    def is_mask_step(self, t: int) -> bool:
        """True when the masks are (re)computed once ``t`` updates are complete."""
        if t < self.at_update or t > self.end_update:
            return False
        return t == self.end_update or (t - self.at_update) % self.interval == 0

    def last_mask_step(self, t: int) -> int | None:
        """The latest mask step ``<= t`` (None before pruning starts)."""
        if t < self.at_update:
            return None
        if t >= self.end_update:
            return self.end_update
        return self.at_update + (t - self.at_update) // self.interval * self.interval

    def target(self, t: int) -> float:
        """Sparsity of the masks in force after ``t`` completed updates."""
        step = self.last_mask_step(t)
        if step is None:
            return 0.0
        return cubic_sparsity(step, self.ratio, self.at_update, self.end_update)


def schedule_from_config(cfg: Any) -> PruningSchedule:
    """Validate the ``--prune-*`` options; one :class:`SeqKDError` line per problem."""
    ratio = check_ratio(cfg.prune_ratio)
    scheme = check_scheme(_choice(cfg.prune_scheme))
    schedule = _choice(getattr(cfg, "prune_schedule", "one-shot"))
    if schedule not in SCHEDULES:
        raise SeqKDError(
            f"--prune-schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}"
        )
    at = int(cfg.prune_at_update)
    end = int(getattr(cfg, "prune_end_update", 0) or 0)
    interval = int(getattr(cfg, "prune_interval", 1))
    if at < 0:
        raise SeqKDError(f"--prune-at-update must be >= 0, got {at}")
    if end and end < at:
        raise SeqKDError(f"--prune-end-update ({end}) must be >= --prune-at-update ({at})")
    if schedule == "gradual":
        if end <= at:
            raise SeqKDError(
                f"--prune-schedule gradual needs --prune-end-update > --prune-at-update "
                f"({at}), got {end}"
            )
        if interval < 1:
            raise SeqKDError(f"--prune-interval must be >= 1, got {interval}")
        return PruningSchedule(ratio, scheme, at, end, interval)
    return PruningSchedule(ratio, scheme, at, at, 1)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The fairseq model inside DDP / legacy_ddp wrappers, so names match the state dict."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


def master_copies(optimizer: Any, params: Iterable[Tensor]) -> dict[int, Tensor]:
    """``id(model param) -> fp32 master view`` inside fairseq's ``FP16Optimizer``.

    ``FP16Optimizer`` steps fp32 copies (one flat buffer per device, or one tensor per param
    with ``--fp16-no-flatten-grads``) and copies them into the fp16 model after each step.
    The layout mirrors ``_sync_fp32_params_to_fp16``. ``MemoryEfficientFP16Optimizer`` and
    AMP keep no copy: an empty dict.
    """
    fp16 = getattr(optimizer, "fp16_params", None)
    fp32 = getattr(optimizer, "fp32_params", None)
    if fp16 is None or fp32 is None:
        return {}
    wanted = {id(p) for p in params}
    views: dict[int, Tensor] = {}
    if torch.is_tensor(fp32) or isinstance(fp32, dict):
        flats = fp32 if isinstance(fp32, dict) else None
        by_device: dict[Any, list[Tensor]] = {}
        for p in fp16:
            by_device.setdefault(p.device.index, []).append(p)
        for device, device_params in by_device.items():
            flat = fp32 if flats is None else flats.get(device)
            if flat is None:
                continue
            offset = 0
            for p in device_params:
                n = p.numel()
                if id(p) in wanted:
                    views[id(p)] = flat.data[offset : offset + n].view(p.shape)
                offset += n
    else:
        for p, p32 in zip(fp16, fp32):
            if id(p) in wanted and p.requires_grad:
                views[id(p)] = p32.data
    return views


class PruningHook:
    """Keeps a student's pruned weights at zero through fairseq training and resumes.

    Called by task ``translation_kd``: :meth:`attach` at the start of each epoch (validates
    ``--prune-params`` before the first update), :meth:`before_train_step` before each
    forward/backward, :meth:`after_optimizer_step` after each ``optimizer.step()``.
    """

    def __init__(self, schedule: PruningSchedule, pattern: str | None = None):
        self.schedule = schedule
        self.pattern = pattern or DEFAULT_PRUNE_PARAMS
        self.weights: dict[str, Tensor] | None = None
        self.aliases: dict[str, list[str]] = {}
        self.masks: dict[str, Tensor] | None = None
        self.sparsity = 0.0
        self._model_id: int | None = None
        self._total_params = 0
        self._synced_update: int | None = None
        self._mask_step_done: int | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> PruningHook | None:
        """Validate the options at task build; None when ``--prune-ratio`` is 0."""
        schedule = schedule_from_config(cfg)
        pattern = getattr(cfg, "prune_params", None) or DEFAULT_PRUNE_PARAMS
        if schedule.ratio == 0.0:
            return None
        return cls(schedule, pattern)

    # ------------------------------------------------------------------ fairseq hooks

    def attach(self, model: torch.nn.Module) -> None:
        """Select the prunable parameters of ``model`` (once); errors before any update."""
        model = unwrap_model(model)
        if self._model_id == id(model):
            return
        self.weights, self.aliases = prunable_tensors(
            model.named_parameters(remove_duplicate=False), self.pattern
        )
        self._model_id = id(model)
        self._total_params = sum(p.numel() for p in model.parameters())
        self.masks = None
        self._synced_update = None
        self._mask_step_done = None
        n = sum(w.numel() for w in self.weights.values())
        s = self.schedule
        logger.info(
            "pruning: %d tensors, %d of %d parameters prunable (%s); %s to %.2f%% %s",
            len(self.weights), n, self._total_params, self.pattern, s.scheme,
            100 * s.ratio,
            f"at update {s.at_update}" if s.end_update == s.at_update
            else f"from update {s.at_update} to {s.end_update} every {s.interval}",
        )

    def before_train_step(
        self, model: torch.nn.Module, update_num: int, optimizer: Any = None
    ) -> None:
        """On the first step of a run (fresh or resumed), put the masks of update ``t``."""
        self.attach(model)
        if self._synced_update is not None:
            return
        self._synced_update = update_num
        target = self.schedule.target(update_num)
        if target <= 0.0:
            return
        zeros_before = self._zero_pattern()
        self._update_masks(target, update_num, optimizer)
        self._report_resume(zeros_before, update_num)

    def after_optimizer_step(
        self, model: torch.nn.Module, update_num: int, optimizer: Any = None
    ) -> None:
        """Re-zero pruned weights; recompute masks when update ``update_num + 1`` asks."""
        self.attach(model)
        t = update_num + 1
        updated = False
        if self.schedule.is_mask_step(t) and self._mask_step_done != t:  # once (AMP retries)
            self._mask_step_done = t
            target = self.schedule.target(t)
            if target > 0.0:
                self._update_masks(target, t, optimizer)
                updated = True
        if not updated and self.masks is not None:
            self._apply(optimizer)
        metrics.log_scalar("sparsity", self.sparsity, weight=0, priority=900, round=4)

    # ------------------------------------------------------------------ internals

    def _update_masks(self, target: float, t: int, optimizer: Any) -> None:
        assert self.weights is not None
        self.masks = compute_masks(self.weights, target, self.schedule.scheme)
        self._apply(optimizer)
        total = sum(m.numel() for m in self.masks.values())
        pruned = sum(int((~m).sum()) for m in self.masks.values())
        self.sparsity = pruned / total if total else 0.0
        logger.info(
            "pruning at update %d: target sparsity %.4f, %d of %d prunable weights pruned "
            "(%.2f%% of all %d parameters)\n%s",
            t, target, pruned, total, 100 * pruned / max(self._total_params, 1),
            self._total_params, format_sparsity_table(sparsity_table(self.weights)),
        )

    def _apply(self, optimizer: Any) -> None:
        assert self.weights is not None and self.masks is not None
        apply_masks(self.weights, self.masks)
        if optimizer is None:
            return
        views = master_copies(optimizer, self.weights.values())
        if views:
            apply_masks(
                {n: views[id(w)] for n, w in self.weights.items() if id(w) in views},
                {n: m for n, m in self.masks.items() if id(self.weights[n]) in views},
            )

    def _zero_pattern(self) -> dict[str, Tensor]:
        assert self.weights is not None
        return {n: w.detach() == 0 for n, w in self.weights.items()}

    def _report_resume(self, zeros_before: Mapping[str, Tensor], t: int) -> None:
        """Check masks rebuilt at ``t`` against the zeros of the restored weights.

        Silent for a fresh run (update 0, fewer zeros than pruned weights); a resumed run or
        a checkpoint pruned by ``seqkd-prune`` must come back with the same masks.
        """
        assert self.masks is not None
        pruned = sum(int((~m).sum()) for m in self.masks.values())
        zeros = sum(int(z.sum()) for z in zeros_before.values())
        if t == 0 and zeros < pruned:
            return
        newly = sum(int((~m & ~zeros_before[n]).sum()) for n, m in self.masks.items())
        if newly == 0:
            logger.info(
                "pruning: masks rebuilt at update %d match the zero pattern of the restored "
                "weights (%d pruned)", t, pruned,
            )
        else:
            logger.warning(
                "pruning: at update %d the masks prune %d weights that were not zero in the "
                "restored model: it was not pruned with these settings, so it is pruned now",
                t, newly,
            )
