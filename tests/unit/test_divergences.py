"""Divergences against a plain float64 reference written from the definitions."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fairseq_seqkd.divergences import (
    DIVERGENCES,
    divergence_full,
    divergence_topk,
    ensemble_log_probs,
    generalized_jsd_full,
    generalized_jsd_topk,
    tempered_log_probs,
    truncate_topk,
)


def reference(p: list[float], q: list[float], name: str) -> float:
    """D(p || q) from the textbook definitions, in Python floats (double precision).

    ``jsd<beta>``: GKD's generalized JSD, forward / reverse KL at beta 0 / 1.
    """
    if name.startswith("jsd"):
        beta = float(name[3:])
        if beta in (0.0, 1.0):
            return reference(p, q, "kl" if beta == 0.0 else "reverse_kl")
        m = [beta * pi + (1 - beta) * qi for pi, qi in zip(p, q)]
        return beta * reference(p, m, "kl") + (1 - beta) * reference(q, m, "kl")
    if name == "kl":
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)
    if name == "reverse_kl":
        return sum(qi * math.log(qi / pi) for pi, qi in zip(p, q) if qi > 0)
    if name == "js":
        m = [(pi + qi) / 2 for pi, qi in zip(p, q)]
        return 0.5 * reference(p, m, "kl") + 0.5 * reference(q, m, "kl")
    return 0.5 * sum(abs(pi - qi) for pi, qi in zip(p, q))


def softmax(xs: list[float], t: float = 1.0) -> list[float]:
    z = [x / t for x in xs]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def random_logits(*shape: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


BETAS = [0.0, 0.1, 0.5, 0.9, 1.0]
NAMES = [*DIVERGENCES, *(f"jsd{beta}" for beta in BETAS)]  # jsd<beta>: generalized JSD


def per_position(s: torch.Tensor, t: torch.Tensor, name: str, topk: int) -> torch.Tensor:
    """A divergence by name; ``jsd<beta>`` is the generalized JSD."""
    if name.startswith("jsd"):
        beta = float(name[3:])
        if topk:
            return generalized_jsd_topk(s, *truncate_topk(t, topk), beta)
        return generalized_jsd_full(s, t, beta)
    if topk:
        return divergence_topk(s, *truncate_topk(t, topk), name)
    return divergence_full(s, t, name)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.5])
def test_full_vocabulary_matches_reference(name: str, temperature: float) -> None:
    s_logits, t_logits = random_logits(4, 7, 11, seed=1), random_logits(4, 7, 11, seed=2)
    got = per_position(
        tempered_log_probs(s_logits, temperature),
        tempered_log_probs(t_logits, temperature),
        name,
        topk=0,
    )
    assert got.shape == (4, 7)
    for i in range(4):
        for j in range(7):
            p = softmax(t_logits[i, j].tolist(), temperature)
            q = softmax(s_logits[i, j].tolist(), temperature)
            assert got[i, j].item() == pytest.approx(reference(p, q, name), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_topk_matches_reference(name: str, k: int) -> None:
    vocab = 10
    s_logits, t_logits = random_logits(5, vocab, seed=3), random_logits(5, vocab, seed=4)
    got = per_position(tempered_log_probs(s_logits), tempered_log_probs(t_logits), name, k)
    for i in range(5):
        p_full = softmax(t_logits[i].tolist())
        q = softmax(s_logits[i].tolist())
        top = sorted(range(vocab), key=lambda v: -p_full[v])[:k]
        mass = sum(p_full[v] for v in top)
        p = [p_full[v] / mass if v in top else 0.0 for v in range(vocab)]
        if name in ("reverse_kl", "jsd1.0"):  # the student is renormalised on the top k too
            q_mass = sum(q[v] for v in top)
            expected = reference([p[v] for v in top], [q[v] / q_mass for v in top], name)
        else:
            expected = reference(p, q, name)
        assert got[i].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_topk_with_whole_vocabulary_equals_full(name: str) -> None:
    s, t = tempered_log_probs(random_logits(6, 9, seed=5)), tempered_log_probs(
        random_logits(6, 9, seed=6)
    )
    lp, idx = truncate_topk(t, 9)
    torch.testing.assert_close(divergence_topk(s, lp, idx, name), divergence_full(s, t, name))



@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("topk", [0, 4])
def test_gradients_match_float64_reference(name: str, topk: int) -> None:
    """Autograd through the float32 path equals the float64 reference's gradient."""
    s_logits = random_logits(3, 8, seed=7)
    t = tempered_log_probs(random_logits(3, 8, seed=8), 2.0)

    def loss(logits: torch.Tensor) -> torch.Tensor:
        s = tempered_log_probs(logits, 2.0)
        return per_position(s, t.to(s.dtype), name, topk).sum()

    x64 = s_logits.clone().requires_grad_(True)
    loss(x64).backward()
    x32 = s_logits.float().requires_grad_(True)
    loss(x32).backward()
    assert x32.grad is not None and x64.grad is not None
    assert x64.grad.abs().max() > 1e-3  # a real, non-vanishing gradient
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-4, atol=1e-6)


def test_kl_gradient_is_q_minus_p_over_t() -> None:
    """d KL(p^T || q^T) / d z = (q^T - p^T) / T, the identity behind the T^2 scaling."""
    z = random_logits(2, 6, seed=9).requires_grad_(True)
    t_lp = tempered_log_probs(random_logits(2, 6, seed=10), 3.0)
    divergence_full(tempered_log_probs(z, 3.0), t_lp, "kl").sum().backward()
    expected = (torch.softmax(z.detach() / 3.0, -1) - t_lp.exp()) / 3.0
    torch.testing.assert_close(z.grad, expected)


def test_half_precision_inputs_are_computed_in_float32() -> None:
    s, t = random_logits(4, 50, seed=11), random_logits(4, 50, seed=12)
    exact = divergence_full(tempered_log_probs(s), tempered_log_probs(t), "kl")
    got = divergence_full(tempered_log_probs(s.half()), tempered_log_probs(t.half()), "kl")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=2e-2, atol=2e-3)


def test_ensemble_averages_probabilities() -> None:
    a, b = tempered_log_probs(random_logits(3, 5, seed=13)), tempered_log_probs(
        random_logits(3, 5, seed=14)
    )
    torch.testing.assert_close(ensemble_log_probs([a, b]).exp(), (a.exp() + b.exp()) / 2)
    assert ensemble_log_probs([a]) is a


def test_bad_arguments_raise_clear_errors() -> None:
    lp = tempered_log_probs(random_logits(2, 5))
    with pytest.raises(ValueError, match="--kd-divergence"):
        divergence_full(lp, lp, "hellinger")
    with pytest.raises(ValueError, match="--kd-temperature"):
        tempered_log_probs(random_logits(2, 5), 0.0)
    with pytest.raises(ValueError, match=r"--kd-topk must be in \[1, 5\]"):
        truncate_topk(lp, 6)


logit_rows = st.lists(
    st.floats(min_value=-20, max_value=20, allow_nan=False), min_size=2, max_size=12
)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), name=st.sampled_from(DIVERGENCES), temp=st.floats(0.25, 4.0))
def test_properties_non_negative_and_zero_on_equal(data, name: str, temp: float) -> None:
    row = data.draw(logit_rows)
    other = data.draw(st.lists(st.floats(-20, 20, allow_nan=False), min_size=len(row),
                               max_size=len(row)))
    s = tempered_log_probs(torch.tensor([other], dtype=torch.float64), temp)
    t = tempered_log_probs(torch.tensor([row], dtype=torch.float64), temp)
    assert divergence_full(s, t, name).item() >= -1e-12
    assert divergence_full(t, t, name).item() == pytest.approx(0.0, abs=1e-12)
    k = data.draw(st.integers(1, len(row)))
    lp, idx = truncate_topk(t, k)
    assert divergence_topk(s, lp, idx, name).item() >= -1e-12
    if name == "tvd":
        assert divergence_full(s, t, name).item() <= 1.0 + 1e-12
    if name == "js":
        assert divergence_full(s, t, name).item() <= math.log(2) + 1e-12


def test_full_kl_accepts_a_teacher_with_zero_probabilities() -> None:
    """A teacher masked to its top k (log-prob -inf elsewhere) gives the top-k divergence."""
    s = tempered_log_probs(random_logits(4, 9, seed=15))
    t = tempered_log_probs(random_logits(4, 9, seed=16))
    lp, idx = truncate_topk(t, 3)
    masked = torch.full_like(t, -math.inf).scatter(-1, idx, lp)
    full = divergence_full(s, masked, "kl")
    assert torch.isfinite(full).all()
    torch.testing.assert_close(full, divergence_topk(s, lp, idx, "kl"))



def test_generalized_jsd_ends_are_kl_and_reverse_kl_and_their_limits() -> None:
    s = tempered_log_probs(random_logits(4, 9, seed=25))
    t = tempered_log_probs(random_logits(4, 9, seed=26))
    kl, rkl = divergence_full(s, t, "kl"), divergence_full(s, t, "reverse_kl")
    assert torch.equal(generalized_jsd_full(s, t, 0.0), kl)
    assert torch.equal(generalized_jsd_full(s, t, 1.0), rkl)
    torch.testing.assert_close(generalized_jsd_full(s, t, 0.5), divergence_full(s, t, "js"))
    # the ends are limits of the rescaled divergence: JSD(b) / b -> KL, JSD(b) / (1 - b) -> RKL
    # (slowly where the student is far below the teacher: m ~ q needs beta p << q)
    def rel_errors(value, end) -> list[float]:
        return [((value(eps) / eps - end) / end).abs().max().item() for eps in (1e-4, 1e-6, 1e-8)]

    for errors in (rel_errors(lambda e: generalized_jsd_full(s, t, e), kl),
                   rel_errors(lambda e: generalized_jsd_full(s, t, 1 - e), rkl)):
        assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3, errors
    lp, idx = truncate_topk(t, 4)
    assert torch.equal(generalized_jsd_topk(s, lp, idx, 0.0), divergence_topk(s, lp, idx, "kl"))
    assert torch.equal(generalized_jsd_topk(s, lp, idx, 1.0),
                       divergence_topk(s, lp, idx, "reverse_kl"))
    torch.testing.assert_close(generalized_jsd_topk(s, lp, idx, 1e-8) / 1e-8,
                               divergence_topk(s, lp, idx, "kl"), rtol=1e-3, atol=0)
    lp9, idx9 = truncate_topk(t, 9)  # the whole vocabulary: top-k is the full divergence
    torch.testing.assert_close(generalized_jsd_topk(s, lp9, idx9, 0.3),
                               generalized_jsd_full(s, t, 0.3))


def test_generalized_jsd_gradient_is_the_analytic_one() -> None:
    """d JSD(beta) / d q_v = (1 - beta) log(q_v / m_v), through the softmax."""
    beta = 0.3
    z = random_logits(2, 6, seed=29).requires_grad_(True)
    t = tempered_log_probs(random_logits(2, 6, seed=30))
    generalized_jsd_full(tempered_log_probs(z), t, beta).sum().backward()
    q, p = torch.softmax(z.detach(), -1), t.exp()
    g = (1 - beta) * torch.log(q / (beta * p + (1 - beta) * q))  # dJSD/dq
    expected = q * (g - (q * g).sum(-1, keepdim=True))  # softmax Jacobian
    torch.testing.assert_close(z.grad, expected)


def test_generalized_jsd_rejects_beta_outside_the_unit_interval() -> None:
    lp = tempered_log_probs(random_logits(2, 5))
    for beta in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"--gkd-beta must be in \[0, 1\]"):
            generalized_jsd_full(lp, lp, beta)
        with pytest.raises(ValueError, match=r"--gkd-beta must be in \[0, 1\]"):
            generalized_jsd_topk(lp, *truncate_topk(lp, 2), beta)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), beta=st.floats(0.0, 1.0))
def test_generalized_jsd_is_bounded_by_the_mixture_entropy(data, beta: float) -> None:
    row = data.draw(logit_rows)
    other = data.draw(st.lists(st.floats(-20, 20, allow_nan=False), min_size=len(row),
                               max_size=len(row)))
    s = tempered_log_probs(torch.tensor([other], dtype=torch.float64))
    t = tempered_log_probs(torch.tensor([row], dtype=torch.float64))
    value = generalized_jsd_full(s, t, beta).item()
    assert value >= -1e-12
    assert generalized_jsd_full(t, t, beta).item() == pytest.approx(0.0, abs=1e-12)
    if 0 < beta < 1:  # JSD(beta) <= H(beta), the entropy of the mixture weights
        assert value <= -beta * math.log(beta) - (1 - beta) * math.log1p(-beta) + 1e-12
    lp, idx = truncate_topk(t, data.draw(st.integers(1, len(row))))
    assert generalized_jsd_topk(s, lp, idx, beta).item() >= -1e-12
