"""Token-level divergences between a teacher and a student distribution (pure torch).

Everything works on log-probabilities over the last dimension and returns one value per
position, so the caller decides how to mask padding and reduce. Computation is done in float32
or wider whatever the inputs' dtype: fp16 log-softmax outputs lose the small probabilities that
the divergences are about.

Top-k: the teacher keeps its k most probable tokens, renormalised. The student keeps its full
distribution, summarised on k + 1 bins: the teacher's k tokens and one bin holding the rest
of its mass. KL, JS and TVD on these bins equal the full-vocabulary divergences between the
truncated teacher and the full student (the teacher has no mass outside its top k, and JS's
terms there are proportional to the student's mass). Reverse KL would be infinite against a
truncated teacher, so for ``reverse_kl`` the student is renormalised on the top k as well.

The generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024), with teacher p and
student q,

    JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m),   m = beta p + (1 - beta) q,

is ``js`` at beta = 0.5. It vanishes at both ends, but JSD(beta) / beta -> KL(p || q) as
beta -> 0 and JSD(beta) / (1 - beta) -> KL(q || p) as beta -> 1 (Huszar 2015), so beta = 0 is
forward KL and beta = 1 reverse KL, computed with their own formulas (the mixture formula would
give 0). As in the paper, no 1 / beta rescaling is applied in between: near the ends the value
is about beta KL (or (1 - beta) KL). With a top-k teacher the student's mass outside the top k
adds (1 - beta) log(1 / (1 - beta)) per unit of mass (there m = (1 - beta) q); at beta = 1 the
student is renormalised on the top k, as for ``reverse_kl``.
"""

import math

import torch
from torch import Tensor

DIVERGENCES: tuple[str, ...] = ("kl", "reverse_kl", "js", "tvd")

def check_divergence(name: str) -> None:
    if name not in DIVERGENCES:
        raise ValueError(
            f"--kd-divergence must be one of {', '.join(DIVERGENCES)}, got {name!r}"
        )


def tempered_log_probs(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / T), in float32 at least."""
    if temperature <= 0:
        raise ValueError(f"--kd-temperature must be > 0, got {temperature}")
    logits = _wide(logits)
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)


def ensemble_log_probs(member_log_probs: list[Tensor]) -> Tensor:
    """Log of the average of the members' probabilities (fairseq's ensemble rule)."""
    if len(member_log_probs) == 1:
        return member_log_probs[0]
    stacked = torch.stack(member_log_probs, dim=0)
    return torch.logsumexp(stacked, dim=0) - math.log(len(member_log_probs))


def truncate_topk(teacher_log_probs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The teacher's k most probable tokens and their renormalised log-probabilities."""
    vocab = teacher_log_probs.size(-1)
    if not 0 < k <= vocab:
        raise ValueError(f"--kd-topk must be in [1, {vocab}] (vocabulary size), got {k}")
    values, indices = teacher_log_probs.topk(k, dim=-1)
    values = _wide(values)
    return values - torch.logsumexp(values, dim=-1, keepdim=True), indices


def divergence_full(student_log_probs: Tensor, teacher_log_probs: Tensor, name: str) -> Tensor:
    """D(teacher || student) per position, over the full vocabulary."""
    check_divergence(name)
    lq = _wide(student_log_probs)
    lp = _wide(teacher_log_probs)
    if name == "kl":
        # sum p log p - sum p log q as two dot products: no vocabulary-sized temporary besides
        # p. Log-softmax outputs are finite; a truncated teacher's -inf (where p = 0) makes the
        # first product NaN, and only then is it recomputed with 0 log 0 = 0.
        p = lp.exp()
        neg_entropy = _rowdot(p, lp)
        if not torch.isfinite(neg_entropy).all():
            neg_entropy = torch.special.xlogy(p, p).sum(-1)
        return neg_entropy - _rowdot(p, lq)
    if name == "reverse_kl":
        return _xlogx_ratio(lq, lp).sum(-1)
    if name == "js":
        return _jsd_bins(lq, lp, 0.5)
    return 0.5 * (lp.exp() - lq.exp()).abs().sum(-1)


def divergence_topk(
    student_log_probs: Tensor,
    teacher_topk_log_probs: Tensor,
    topk_indices: Tensor,
    name: str,
) -> Tensor:
    """D(truncated teacher || student) per position, with the teacher given on its top k.

    ``student_log_probs`` covers the full vocabulary; ``teacher_topk_log_probs`` are
    renormalised over ``topk_indices`` (see :func:`truncate_topk`).
    """
    check_divergence(name)
    lp = _wide(teacher_topk_log_probs)
    lq = _wide(student_log_probs).gather(-1, topk_indices)
    if name == "kl":
        return _xlogx_ratio(lp, lq).sum(-1)
    if name == "reverse_kl":
        lq = lq - torch.logsumexp(lq, dim=-1, keepdim=True)
        return _xlogx_ratio(lq, lp).sum(-1)
    if name == "js":
        return _jsd_topk_bins(lq, lp, 0.5)
    return 0.5 * ((lp.exp() - lq.exp()).abs().sum(-1) + _student_rest(lq))


def check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"--gkd-beta must be in [0, 1], got {beta}")


def generalized_jsd_full(
    student_log_probs: Tensor, teacher_log_probs: Tensor, beta: float
) -> Tensor:
    """JSD(beta) between teacher and student per position, over the full vocabulary.

    beta = 0 is ``kl`` (forward KL(teacher || student)), beta = 1 is ``reverse_kl``, both
    exactly; see the module docstring.
    """
    check_beta(beta)
    if beta == 0.0:
        return divergence_full(student_log_probs, teacher_log_probs, "kl")
    if beta == 1.0:
        return divergence_full(student_log_probs, teacher_log_probs, "reverse_kl")
    return _jsd_bins(_wide(student_log_probs), _wide(teacher_log_probs), beta)


def generalized_jsd_topk(
    student_log_probs: Tensor,
    teacher_topk_log_probs: Tensor,
    topk_indices: Tensor,
    beta: float,
) -> Tensor:
    """JSD(beta) between the truncated teacher and the student, as :func:`divergence_topk`."""
    check_beta(beta)
    if beta == 0.0:
        return divergence_topk(student_log_probs, teacher_topk_log_probs, topk_indices, "kl")
    if beta == 1.0:
        return divergence_topk(
            student_log_probs, teacher_topk_log_probs, topk_indices, "reverse_kl"
        )
    lq = _wide(student_log_probs).gather(-1, topk_indices)
    return _jsd_topk_bins(lq, _wide(teacher_topk_log_probs), beta)


def _jsd_bins(lq: Tensor, lp: Tensor, beta: float) -> Tensor:
    """beta KL(p || m) + (1 - beta) KL(q || m) summed over the last dimension, 0 < beta < 1."""
    lm = torch.logaddexp(lp + math.log(beta), lq + math.log1p(-beta))
    return beta * _xlogx_ratio(lp, lm).sum(-1) + (1.0 - beta) * _xlogx_ratio(lq, lm).sum(-1)


def _jsd_topk_bins(lq: Tensor, lp: Tensor, beta: float) -> Tensor:
    """JSD(beta) on the teacher's top k plus the bin of the student's remaining mass."""
    outside = -(1.0 - beta) * math.log1p(-beta)  # q log(q / ((1 - beta) q)) per unit of q
    return _jsd_bins(lq, lp, beta) + outside * _student_rest(lq)


def _student_rest(lq_topk: Tensor) -> Tensor:
    """The student's mass outside the teacher's top k."""
    return (1.0 - lq_topk.exp().sum(-1)).clamp_min(0.0)


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    return torch.einsum("...v,...v->...", a, b)


def _xlogx_ratio(log_a: Tensor, log_b: Tensor) -> Tensor:
    """a * (log a - log b), with 0 * log 0 = 0 where a underflows to zero."""
    a = log_a.exp()
    return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a))


def _wide(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
