"""Magnitude pruning for sequence-level knowledge distillation.

Kim & Rush (2016) shrink the distilled student further by magnitude pruning following
See et al. (2016), "Compression of Neural Machine Translation Models via Pruning". Each
parameter tensor is one *class*; three schemes decide how the pruning budget is spread:

* ``class-blind``: one global magnitude threshold over all classes (See et al.'s best).
* ``class-uniform``: the same fraction of every class.
* ``class-distribution``: prune ``|w| < lambda * std_c`` for each class ``c``.

Pruning can be one-shot or gradual with Zhu & Gupta's (2017) cubic schedule
(:func:`cubic_sparsity`). This module is pure torch (no fairseq import) so it is cheap
to unit test and reusable from any training loop.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import SeqKDError

__all__ = [
    "DEFAULT_PRUNE_PARAMS",
    "SCHEMES",
    "SparsityRow",
    "apply_masks",
    "check_ratio",
    "check_scheme",
    "compute_masks",
    "cubic_sparsity",
    "format_sparsity_table",
    "group_tied",
    "prunable_tensors",
    "select_prunable",
    "sparsity_table",
]

SCHEMES: tuple[str, ...] = ("class-blind", "class-uniform", "class-distribution")

# Matches every name: together with the ``dim >= 2`` and bias / norm filters applied by
# :func:`select_prunable` it means "every weight matrix", including the token embeddings
# and the output projection, as in See et al. (2016).
DEFAULT_PRUNE_PARAMS: str = ".*"

# Biases and normalisation gains are tiny and pruning them hurts disproportionately, so
# they are never candidates, whatever --prune-params says.
_BIAS_RE = re.compile(r"bias", re.IGNORECASE)
_NORM_RE = re.compile(r"norm|(?:^|[._])ln(?:_?\d*)(?:[._]|$)", re.IGNORECASE)

_NAMES_SHOWN = 5


def _is_bias_or_norm(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return bool(_BIAS_RE.search(last) or _NORM_RE.search(name))


def select_prunable(
    named_params: Iterable[tuple[str, Tensor]], pattern: str | None
) -> dict[str, Tensor]:
    """Return the parameters to prune, keyed by name, in iteration order.

    Only matrices (``dim >= 2``) that are not biases or layer norms are eligible; with a
    ``pattern`` the name must also match ``re.search(pattern, name)``. The returned values
    are the original tensors (not copies) so masks can be applied to them in place.
    Raises ``ValueError`` when nothing is selected, because silently pruning nothing would
    make a distillation run look compressed when it is not.
    """
    regex_text = DEFAULT_PRUNE_PARAMS if pattern is None else pattern
    try:
        regex = re.compile(regex_text)
    except re.error as err:
        raise ValueError(f"--prune-params {regex_text!r} is not a valid regex: {err}") from None
    all_names: list[str] = []
    selected: dict[str, Tensor] = {}
    for name, param in named_params:
        all_names.append(name)
        if param.dim() < 2 or _is_bias_or_norm(name):
            continue
        if regex.search(name):
            selected[name] = param
    if not selected:
        shown = ", ".join(all_names[:_NAMES_SHOWN]) or "<no parameters>"
        if len(all_names) > _NAMES_SHOWN:
            shown += ", ..."
        raise ValueError(
            f"--prune-params {regex_text!r} matches no parameter; names look like: {shown}"
        )
    return selected


def check_ratio(ratio: float, option: str = "--prune-ratio") -> float:
    """``ratio`` as a float in [0, 1) (1 would prune every weight), else a one-line error."""
    value = float(ratio)
    if not (0.0 <= value < 1.0):  # also rejects NaN
        raise SeqKDError(f"{option} must be in [0, 1), got {ratio}")
    return value


def check_scheme(scheme: str) -> str:
    """``scheme`` if it is one of :data:`SCHEMES`, else a one-line error."""
    if scheme not in SCHEMES:
        raise SeqKDError(f"--prune-scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")
    return scheme


def _num_to_prune(ratio: float, n: int) -> int:
    return min(n, round(ratio * n))


def _smallest_k(scores: Tensor, k: int) -> Tensor:
    """Boolean mask (True = pruned) of the ``k`` smallest 1-D ``scores``.

    Ties at the threshold are broken by index (earlier entries pruned first), which is
    what a stable sort would do, but in O(n) memory via ``kthvalue``. The count is exact
    even when many scores are equal (e.g. already-pruned zeros).
    """
    n = scores.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    threshold = torch.kthvalue(scores, k).values
    pruned = scores < threshold
    missing = k - int(pruned.sum().item())
    if missing > 0:
        ties = torch.nonzero(scores == threshold).flatten()[:missing]
        pruned[ties] = True
    return pruned


def _scores(weight: Tensor, scheme: str) -> Tensor:
    """Flattened float32 pruning scores; lower is pruned first. NaN is never pruned."""
    mag = weight.detach().abs().float().flatten()
    if scheme == "class-distribution" and mag.numel():
        # See et al.: prune |w| < lambda * std_c, i.e. rank by |w| / std_c. Population std
        # so a single-element class is 0, not NaN. With std 0 every nonzero weight is
        # never pruned (inf) while zeros are free to prune (0).
        std = torch.std(weight.detach().float(), correction=0)
        mag = torch.where(mag == 0, torch.zeros_like(mag), mag / std)
    return torch.nan_to_num(mag, nan=math.inf, posinf=math.inf)


def compute_masks(
    weights: Mapping[str, Tensor], ratio: float, scheme: str
) -> dict[str, torch.BoolTensor]:
    """Magnitude-pruning masks (True = keep) removing ``ratio`` of the weights.

    ``class-blind`` and ``class-distribution`` prune exactly ``round(ratio * n)`` of the
    ``n`` weights overall; ``class-uniform`` prunes exactly ``round(ratio * n_c)`` in each
    tensor. Ties are broken by position (mapping order, then flattened index) so results
    are deterministic. Masks live on each weight's device.
    """
    check_ratio(ratio)
    check_scheme(scheme)
    if ratio == 0.0:
        return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    if scheme == "class-uniform":
        return {
            name: ~_smallest_k(_scores(w, scheme), _num_to_prune(ratio, w.numel())).view(w.shape)
            for name, w in weights.items()
        }
    if not weights:
        return {}
    device = next(iter(weights.values())).device
    scores = torch.cat([_scores(w, scheme).to(device) for w in weights.values()])
    pruned = _smallest_k(scores, _num_to_prune(ratio, scores.numel()))
    masks: dict[str, torch.BoolTensor] = {}
    offset = 0
    for name, w in weights.items():
        n = w.numel()
        masks[name] = (~pruned[offset : offset + n]).view(w.shape).to(w.device)
        offset += n
    return masks


def apply_masks(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
    """Zero the pruned (mask False) entries in place, without recording autograd history.

    ``masked_fill_`` rather than multiplication so pruned entries are exactly ``+0.0``
    even if they were NaN/inf.
    """
    with torch.no_grad():
        for name, mask in masks.items():
            weight = weights[name]
            if mask.shape != weight.shape:
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(mask.shape)}, "
                    f"weight has {tuple(weight.shape)}"
                )
            weight.masked_fill_(~mask.to(device=weight.device, dtype=torch.bool), 0)


def cubic_sparsity(
    step: int,
    final_ratio: float,
    start_step: int,
    end_step: int,
    initial_ratio: float = 0.0,
) -> float:
    """Target sparsity at ``step`` under Zhu & Gupta's (2017) gradual schedule.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** 3``: prune fast while the
    network has many redundant weights and slowly near the end. Returns 0.0 before
    ``start_step`` (nothing pruned yet) and ``final_ratio`` from ``end_step`` on;
    ``end_step == start_step`` is one-shot pruning.
    """
    if end_step < start_step:
        raise ValueError(
            f"--prune-end-update ({end_step}) must be >= --prune-at-update ({start_step})"
        )
    check_ratio(final_ratio)
    if not (0.0 <= initial_ratio <= final_ratio):
        raise ValueError(
            f"initial sparsity must be in [0, --prune-ratio={final_ratio}], got {initial_ratio}"
        )
    if step < start_step:
        return 0.0
    if step >= end_step:
        return float(final_ratio)
    remaining = 1.0 - (step - start_step) / (end_step - start_step)
    return float(final_ratio + (initial_ratio - final_ratio) * remaining**3)


@dataclass(frozen=True)
class SparsityRow:
    """Sparsity of one parameter tensor (``sparsity`` = fraction of exact zeros)."""

    name: str
    shape: tuple[int, ...]
    numel: int
    nonzero: int
    sparsity: float


def _sparsity(numel: int, nonzero: int) -> float:
    return 1.0 - nonzero / numel if numel else 0.0


def sparsity_table(weights: Mapping[str, Tensor]) -> list[SparsityRow]:
    """One row per tensor, to verify (and log) what pruning actually removed."""
    rows = []
    for name, w in weights.items():
        numel = w.numel()
        nonzero = int(torch.count_nonzero(w.detach()).item())
        rows.append(SparsityRow(name, tuple(w.shape), numel, nonzero, _sparsity(numel, nonzero)))
    return rows


def format_sparsity_table(rows: Iterable[SparsityRow]) -> str:
    """Fixed-width text table (name, shape, kept, sparsity %) ending with a TOTAL row."""
    rows = list(rows)
    total_numel = sum(r.numel for r in rows)
    total_nonzero = sum(r.nonzero for r in rows)
    body = [
        (
            r.name,
            "x".join(map(str, r.shape)) or "scalar",
            f"{r.nonzero}/{r.numel}",
            r.sparsity,
        )
        for r in rows
    ]
    total = (
        "TOTAL",
        "-",
        f"{total_nonzero}/{total_numel}",
        _sparsity(total_numel, total_nonzero),
    )
    header = ("name", "shape", "kept", "sparsity")
    widths = [max(len(cells[i]) for cells in [header, *body, total]) for i in range(3)]
    pct_width = max(len(header[3]), len("100.00%"))

    def line(name: str, shape: str, kept: str, pct: str) -> str:
        return f"{name:<{widths[0]}}  {shape:<{widths[1]}}  {kept:>{widths[2]}}  {pct:>{pct_width}}"

    rule = "-" * len(line("", "", "", ""))
    out = [line(*header), rule]
    out += [line(n, s, k, f"{100 * sp:.2f}%") for n, s, k, sp in body]
    out += [rule, line(*total[:3], f"{100 * total[3]:.2f}%")]
    return "\n".join(out)


def _storage_key(t: Tensor) -> tuple:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())


def group_tied(
    named: Iterable[tuple[str, Tensor]], by_value: bool = False
) -> list[tuple[list[str], Tensor]]:
    """Floating-point tensors, each shared tensor once, with all its names (in order).

    ``--share-all-embeddings`` makes the encoder and decoder embeddings and the output
    projection one tensor. Tensors are grouped by storage; with ``by_value`` also by equal
    contents, because a checkpoint saved from GPU holds separate copies of tied weights
    (all-zero tensors, e.g. fully pruned layers, are never merged).
    """
    groups: list[tuple[list[str], Tensor]] = []
    by_storage: dict[tuple, int] = {}
    same_shape: dict[tuple, list[int]] = {}
    for name, tensor in named:
        if not (torch.is_tensor(tensor) and tensor.is_floating_point()):
            continue
        key = _storage_key(tensor)
        index = by_storage.get(key)
        shape_key = (tuple(tensor.shape), tensor.dtype)
        if index is None and by_value and tensor.dim() >= 2 and bool(tensor.any()):
            candidates = same_shape.get(shape_key, [])
            index = next((i for i in candidates if torch.equal(groups[i][1], tensor)), None)
        if index is None:
            index = len(groups)
            groups.append(([], tensor))
            same_shape.setdefault(shape_key, []).append(index)
        by_storage[key] = index
        groups[index][0].append(name)
    return groups


def prunable_tensors(
    named: Iterable[tuple[str, Tensor]],
    pattern: str | None,
    option: str = "--prune-params",
    by_value: bool = False,
) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """The tensors to prune keyed by first name, each shared tensor once, and their names.

    Pruning a tied tensor once per name would prune it to the wrong sparsity and weigh it
    thrice in the class-blind threshold. A group is pruned if any of its names is selected
    by :func:`select_prunable` (matrices, no biases or norms).
    """
    items = list(named)
    groups = group_tied(items, by_value)
    try:
        chosen = select_prunable(
            [(n, t) for n, t in items if torch.is_tensor(t) and t.is_floating_point()], pattern
        )
    except ValueError as exc:
        raise SeqKDError(str(exc).replace("--prune-params", option, 1)) from None
    weights: dict[str, Tensor] = {}
    aliases: dict[str, list[str]] = {}
    for names, tensor in groups:
        if any(n in chosen for n in names):
            weights[names[0]] = tensor
            aliases[names[0]] = names
    return weights, aliases
