"""Pure helpers behind the benchmark page's seeds, averaging and pruning sections: seed
statistics, the "smaller than two standard deviations" mark, a model's per-matrix sparsity,
and the numbers read back from fairseq's logs (validation curve, reference scores). No fairseq
import."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

from torch import Tensor

from ..pruning import select_prunable, sparsity_table

__all__ = [
    "NOISE_MARK",
    "mark_noise",
    "matrix_sparsity",
    "mean_std",
    "pooled_std",
    "reference_nll",
    "valid_losses",
    "within_noise",
]

#: appended to a difference smaller than two standard deviations of the seed noise
NOISE_MARK = " (< 2 std)"

_VALID = re.compile(r"\| valid on '[^']+' subset \| loss ([-\d.]+)")
_POSITIONAL = re.compile(r"^P-\d+\t(.*)$", re.M)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0.0 for one value)."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def pooled_std(groups: Iterable[Sequence[float]]) -> float | None:
    """The seed noise of several rows: the square root of their sample variances averaged
    with weights n - 1 (rows of one value carry no weight); None without two values in a row."""
    num = den = 0.0
    for values in groups:
        if len(values) > 1:
            num += mean_std(values)[1] ** 2 * (len(values) - 1)
            den += len(values) - 1
    return math.sqrt(num / den) if den else None


def within_noise(delta: float, std: float | None) -> bool:
    """True when ``|delta|`` is smaller than two standard deviations ``std`` (never without
    a measured ``std``)."""
    return std is not None and abs(delta) < 2 * std


def mark_noise(text: str, delta: float, std: float | None) -> str:
    """``text`` with :data:`NOISE_MARK` appended when ``delta`` is within the seed noise."""
    return text + NOISE_MARK if within_noise(delta, std) else text


def matrix_sparsity(state: Mapping[str, Tensor]) -> dict[str, float]:
    """Share of exact zeros per weight matrix of a model state dict (the tensors magnitude
    pruning considers: no bias, no norm), a tensor tied under several names counted once,
    under its first name."""
    seen: set[int] = set()
    unique = []
    for name, tensor in state.items():
        key = tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor)
        if key not in seen:
            seen.add(key)
            unique.append((name, tensor))
    return {row.name: row.sparsity for row in sparsity_table(select_prunable(unique, None))}


def valid_losses(log: str) -> list[float]:
    """fairseq-train's validation loss at each validation of a log, in order."""
    return [float(v) for v in _VALID.findall(log)]


def reference_nll(text: str) -> float:
    """Mean negative log-likelihood per target token (base 2, ``</s>`` included) from the
    ``P-`` lines of ``fairseq-generate --score-reference``: fairseq's ``nll_loss`` on that
    subset, whatever the criterion a model was trained with."""
    scores = [float(s) for line in _POSITIONAL.findall(text) for s in line.split()]
    if not scores:
        raise ValueError("no P- lines: not fairseq-generate --score-reference output")
    return -math.fsum(scores) / len(scores)
