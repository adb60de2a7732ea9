"""Selective distillation (Wang et al. 2021): which target tokens get the KD term (pure torch).

Tokens the student already predicts well teach it little; the KD term is applied to the
fraction ``rate`` of tokens with the highest student cross-entropy, chosen inside the batch or
against a FIFO queue of recent cross-entropies (a global, smoother threshold).
"""

import math

import torch
from torch import Tensor

SELECTIONS: tuple[str, ...] = ("none", "batch", "global")


def check_rate(rate: float) -> None:
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"--kd-selection-rate must be in (0, 1], got {rate}")


def batch_selection(ce: Tensor, valid: Tensor, rate: float) -> Tensor:
    """Mask of the ceil(rate * n) valid tokens with the highest cross-entropy."""
    check_rate(rate)
    n = int(valid.sum())
    k = math.ceil(rate * n)
    mask = torch.zeros_like(valid)
    if k == 0:
        return mask
    scores = ce.masked_fill(~valid, -math.inf).flatten()
    chosen = scores.topk(k).indices
    return mask.flatten().index_fill(0, chosen, True).view_as(valid)


class CrossEntropyQueue:
    """A FIFO of recent token cross-entropies, and the threshold selecting the top ``rate``."""

    def __init__(self, size: int):
        if size <= 0:
            raise ValueError(f"--kd-selection-queue-size must be > 0, got {size}")
        self.size = size
        self.values = torch.empty(0)

    def push(self, values: Tensor) -> None:
        values = values.detach().float().flatten()
        self.values = torch.cat([self.values.to(values.device), values])[-self.size :]

    def threshold(self, rate: float) -> float:
        """The smallest value among the queue's top ``ceil(rate * len)`` entries."""
        check_rate(rate)
        if self.values.numel() == 0:
            raise ValueError("empty cross-entropy queue")
        k = math.ceil(rate * self.values.numel())
        return float(self.values.topk(k).values[-1])


def global_selection(ce: Tensor, valid: Tensor, threshold: float) -> Tensor:
    return valid & (ce >= threshold)
