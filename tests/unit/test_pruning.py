"""Unit tests for fairseq_seqkd.pruning (See et al. 2016 magnitude pruning)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fairseq_seqkd.checkpoints import parameter_counts, prune_state
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.pruning import (
    DEFAULT_PRUNE_PARAMS,
    SCHEMES,
    SparsityRow,
    apply_masks,
    check_ratio,
    compute_masks,
    cubic_sparsity,
    format_sparsity_table,
    select_prunable,
    sparsity_table,
)

T = torch.tensor


def _n_pruned(masks: dict[str, torch.Tensor]) -> int:
    return sum(int((~m).sum()) for m in masks.values())


def _hand_weights() -> dict[str, torch.Tensor]:
    return {"a": T([[4.0, -1.0], [0.5, 3.0]]), "b": T([[-2.0, 6.0, 0.25]])}


def _tied_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "emb": torch.randint(-3, 4, (7, 5), generator=g).float(),
        "zeros": torch.zeros(4, 6),
        "proj": torch.randint(-1, 2, (3, 11), generator=g).float() * 10,
    }


# --------------------------------------------------------------------------- compute_masks


def test_class_blind_hand_example() -> None:
    # n = 7, round(0.4 * 7) = 3: the three smallest |w| globally are 0.25, 0.5, 1.
    masks = compute_masks(_hand_weights(), 0.4, "class-blind")
    assert masks["a"].tolist() == [[True, False], [False, True]]
    assert masks["b"].tolist() == [[True, True, False]]
    assert masks["a"].dtype == torch.bool


def test_class_uniform_hand_example() -> None:
    # a: round(0.5 * 4) = 2 -> {-1, 0.5}; b: round(0.5 * 3) = 2 -> {0.25, -2}.
    masks = compute_masks(_hand_weights(), 0.5, "class-uniform")
    assert masks["a"].tolist() == [[True, False], [False, True]]
    assert masks["b"].tolist() == [[False, True, False]]


def test_class_distribution_differs_from_class_blind() -> None:
    # std_big = sqrt(122) ~ 11.05, std_small = sqrt(0.025) ~ 0.158.
    # |w|/std: big 10 -> 0.905, 12 -> 1.086; small 0.1 -> 0.632, 0.2 -> 1.265.
    w = {"big": T([[10.0, -10.0, 12.0, -12.0]]), "small": T([[0.1, -0.1, 0.2, -0.2]])}
    blind = compute_masks(w, 0.5, "class-blind")
    assert blind["big"].all() and not blind["small"].any()
    dist = compute_masks(w, 0.5, "class-distribution")
    assert dist["big"].tolist() == [[False, False, True, True]]
    assert dist["small"].tolist() == [[False, False, True, True]]


def test_zero_std_class_distribution() -> None:
    # A constant nonzero class (std 0) is never pruned; all-zero weights are pruned first.
    w = {
        "const": torch.full((2, 3), 0.5),
        "zeros": torch.zeros(2, 2),
        "x": T([[1.0, 3.0]]),
    }
    masks = compute_masks(w, 0.5, "class-distribution")  # round(0.5 * 12) = 6
    assert _n_pruned(masks) == 6
    assert masks["const"].all()
    assert not masks["zeros"].any()
    assert masks["x"].tolist() == [[False, False]]
    assert all(m.shape == w[k].shape for k, m in masks.items())


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.7, 0.95])
def test_exact_counts_with_many_ties(scheme: str, ratio: float) -> None:
    w = _tied_weights()
    masks = compute_masks(w, ratio, scheme)
    assert set(masks) == set(w)
    if scheme == "class-uniform":
        for name, t in w.items():
            assert int((~masks[name]).sum()) == round(ratio * t.numel()), name
    else:
        assert _n_pruned(masks) == round(ratio * sum(t.numel() for t in w.values()))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_ties_broken_deterministically_by_index(scheme: str) -> None:
    w = {"z": torch.zeros(10)[None]}
    masks = compute_masks(w, 0.3, scheme)
    assert masks["z"].tolist() == [[False] * 3 + [True] * 7]
    a, b = (
        compute_masks(_tied_weights(), 0.5, scheme),
        compute_masks(_tied_weights(), 0.5, scheme),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_class_blind_ties_across_classes_follow_mapping_order() -> None:
    w = {"first": torch.ones(2, 2), "second": torch.ones(2, 2)}
    masks = compute_masks(w, 0.75, "class-blind")  # round(6) = 6 of 8 tied weights
    assert not masks["first"].any()
    assert masks["second"].tolist() == [[False, False], [True, True]]


def test_class_blind_global_threshold() -> None:
    w = _tied_weights(1)
    w["gauss"] = torch.randn(20, 20, generator=torch.Generator().manual_seed(1))
    masks = compute_masks(w, 0.6, "class-blind")
    kept = torch.cat([t[masks[k]].abs() for k, t in w.items()])
    pruned = torch.cat([t[~masks[k]].abs() for k, t in w.items()])
    assert kept.min() >= pruned.max()


def test_class_distribution_ranks_by_std_normalised_magnitude() -> None:
    g = torch.Generator().manual_seed(2)
    w = {
        "wide": torch.randn(30, 30, generator=g) * 5,
        "narrow": torch.randn(10, 40, generator=g) * 0.01,
        "ints": torch.randint(-2, 3, (8, 8), generator=g).float(),
    }
    masks = compute_masks(w, 0.5, "class-distribution")
    score = {k: t.abs() / t.std(correction=0) for k, t in w.items()}
    kept = torch.cat([score[k][masks[k]] for k in w])
    pruned = torch.cat([score[k][~masks[k]] for k in w])
    assert kept.min() >= pruned.max()
    # Unlike class-blind, the tiny-scale class keeps roughly its share of weights.
    assert 0.2 < masks["narrow"].float().mean() < 0.8
    assert not compute_masks(w, 0.5, "class-blind")["narrow"].any()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_ratio_zero_keeps_everything(scheme: str) -> None:
    masks = compute_masks(_tied_weights(), 0.0, scheme)
    assert all(m.all() for m in masks.values())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_large_tensor_count_exact(scheme: str) -> None:
    g = torch.Generator().manual_seed(3)
    w = {
        "big": torch.randn(1000, 1000, generator=g),
        "emb": torch.randint(0, 5, (500, 200)).float(),
    }
    masks = compute_masks(w, 0.9, scheme)
    if scheme == "class-uniform":
        assert int((~masks["big"]).sum()) == 900_000
        assert int((~masks["emb"]).sum()) == 90_000
    else:
        assert _n_pruned(masks) == round(0.9 * 1_100_000)


@given(
    values=st.lists(st.integers(-3, 3), min_size=1, max_size=40),
    split=st.integers(0, 40),
    ratio=st.floats(0.0, 0.999),
    scheme=st.sampled_from(SCHEMES),
)
@settings(max_examples=60, deadline=None)
def test_counts_property(values: list[int], split: int, ratio: float, scheme: str) -> None:
    split = min(split, len(values) - 1)
    w = {"a": T(values[: split + 1], dtype=torch.float32)[None]}
    if split + 1 < len(values):
        w["b"] = T(values[split + 1 :], dtype=torch.float32)[None]
    masks = compute_masks(w, ratio, scheme)
    if scheme == "class-uniform":
        for k, t in w.items():
            assert int((~masks[k]).sum()) == round(ratio * t.numel())
    else:
        assert _n_pruned(masks) == round(ratio * len(values))


@pytest.mark.parametrize("ratio", [1.0, 1.2, -0.1, math.nan])
def test_bad_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"--prune-ratio must be in \[0, 1\)"):
        compute_masks(_hand_weights(), ratio, "class-blind")


def test_bad_ratio_message() -> None:
    with pytest.raises(ValueError) as err:
        compute_masks(_hand_weights(), 1.2, "class-blind")
    assert str(err.value) == "--prune-ratio must be in [0, 1), got 1.2"


@pytest.mark.parametrize("ratio", [1.0, -0.1, math.nan, "0.5x"])
def test_every_ratio_check_is_the_one_check(ratio) -> None:
    """compute_masks, the gradual schedule and seqkd-prune's prune_state refuse a bad ratio
    with the one message of check_ratio, a one-line user error."""
    with pytest.raises((SeqKDError, ValueError)) as expected:
        check_ratio(ratio)
    calls = [
        lambda: compute_masks(_hand_weights(), ratio, "class-blind"),
        lambda: cubic_sparsity(0, ratio, 0, 10),
        lambda: prune_state({"model": dict(_hand_weights())}, ratio, "class-blind", None),
    ]
    for call in calls:
        with pytest.raises(type(expected.value)) as got:
            call()
        assert str(got.value) == str(expected.value)
    if isinstance(ratio, float):
        assert isinstance(expected.value, SeqKDError)
    assert check_ratio("0.25") == 0.25 and check_ratio(0) == 0.0


def test_bad_scheme() -> None:
    with pytest.raises(ValueError, match="--prune-scheme") as err:
        compute_masks(_hand_weights(), 0.5, "class-random")
    assert all(s in str(err.value) for s in SCHEMES)
    assert "class-random" in str(err.value)


def test_empty_weights() -> None:
    assert compute_masks({}, 0.5, "class-blind") == {}


# --------------------------------------------------------------------------- apply_masks


def test_apply_masks_zeroes_pruned_entries_in_place() -> None:
    lin = nn.Linear(6, 5)
    before = lin.weight.detach().clone()
    weights = {"weight": lin.weight}
    masks = compute_masks(weights, 0.4, "class-blind")
    apply_masks(weights, masks)
    assert lin.weight.requires_grad
    assert (lin.weight[~masks["weight"]] == 0).all()
    assert torch.equal(lin.weight[masks["weight"]], before[masks["weight"]])
    assert int((lin.weight == 0).sum()) == round(0.4 * 30)
    # The model still trains after in-place masking.
    lin(torch.randn(2, 6)).sum().backward()
    assert lin.weight.grad is not None


def test_apply_masks_overwrites_nan_and_keeps_sign_positive() -> None:
    w = {"x": T([[math.nan, -1.0, 2.0]])}
    apply_masks(w, {"x": T([[False, False, True]])})
    assert w["x"].tolist() == [[0.0, 0.0, 2.0]]
    assert math.copysign(1.0, w["x"][0, 1].item()) == 1.0


def test_apply_masks_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        apply_masks({"x": torch.ones(2, 2)}, {"x": torch.ones(4, dtype=torch.bool)})


# --------------------------------------------------------------------------- select_prunable


class _TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(11, 8)
        self.self_attn = nn.MultiheadAttention(8, 2)
        self.self_attn_layer_norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.final_layer_norm = nn.LayerNorm(8)
        self.output_projection = nn.Linear(8, 11, bias=False)


def test_select_prunable_default() -> None:
    model = _TinyTransformer()
    selected = select_prunable(model.named_parameters(), None)
    assert list(selected) == [
        "embed_tokens.weight",
        "self_attn.in_proj_weight",
        "self_attn.out_proj.weight",
        "fc1.weight",
        "fc2.weight",
        "output_projection.weight",
    ]
    params = dict(model.named_parameters())
    assert all(selected[k] is params[k] for k in selected)
    assert select_prunable(model.named_parameters(), DEFAULT_PRUNE_PARAMS).keys() == selected.keys()


def test_select_prunable_never_biases_or_norms_even_if_2d() -> None:
    named = [
        ("encoder.layers.0.layer_norm.weight", torch.ones(2, 2)),
        ("encoder.ln_f.weight", torch.ones(2, 2)),
        ("decoder.self_attn.bias_k", torch.ones(1, 1, 4)),
        ("decoder.fc.bias", torch.ones(3, 3)),
        ("decoder.fc.weight", torch.ones(3, 3)),
        ("decoder.scale", torch.ones(3)),
        ("decoder.W", torch.ones(3, 3)),
    ]
    assert list(select_prunable(named, None)) == ["decoder.fc.weight", "decoder.W"]
    assert list(select_prunable(named, ".")) == ["decoder.fc.weight", "decoder.W"]


def test_select_prunable_pattern() -> None:
    model = _TinyTransformer()
    selected = select_prunable(model.named_parameters(), r"embed|output_projection")
    assert list(selected) == ["embed_tokens.weight", "output_projection.weight"]
    assert list(select_prunable(model.named_parameters(), r"^fc\d\.")) == [
        "fc1.weight",
        "fc2.weight",
    ]


@pytest.mark.parametrize("pattern", ["xyz", "layer_norm", r"\.bias$"])
def test_select_prunable_no_match_raises(pattern: str) -> None:
    with pytest.raises(ValueError) as err:
        select_prunable(_TinyTransformer().named_parameters(), pattern)
    msg = str(err.value)
    assert f"--prune-params {pattern!r} matches no parameter" in msg
    assert "embed_tokens.weight" in msg and "\n" not in msg


def test_select_prunable_invalid_regex() -> None:
    with pytest.raises(ValueError, match=r"--prune-params '\(' is not a valid regex"):
        select_prunable(_TinyTransformer().named_parameters(), "(")


# --------------------------------------------------------------------------- cubic_sparsity


def test_cubic_endpoints_and_midpoint() -> None:
    assert cubic_sparsity(0, 0.8, 100, 300) == 0.0
    assert cubic_sparsity(99, 0.8, 100, 300) == 0.0
    assert cubic_sparsity(100, 0.8, 100, 300) == 0.0
    assert cubic_sparsity(200, 0.8, 100, 300) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cubic_sparsity(300, 0.8, 100, 300) == 0.8
    assert cubic_sparsity(10_000, 0.8, 100, 300) == 0.8
    assert cubic_sparsity(100, 0.8, 100, 300, initial_ratio=0.2) == pytest.approx(0.2)
    assert cubic_sparsity(200, 0.8, 100, 300, 0.2) == pytest.approx(0.8 - 0.6 * 0.5**3)


def test_cubic_one_shot() -> None:
    assert cubic_sparsity(49, 0.5, 50, 50) == 0.0
    assert cubic_sparsity(50, 0.5, 50, 50) == 0.5
    assert cubic_sparsity(51, 0.5, 50, 50) == 0.5


def test_cubic_errors() -> None:
    with pytest.raises(ValueError, match=r"--prune-end-update.*--prune-at-update"):
        cubic_sparsity(0, 0.5, 100, 99)
    with pytest.raises(ValueError, match="--prune-ratio"):
        cubic_sparsity(0, 1.0, 0, 10)
    with pytest.raises(ValueError, match="initial"):
        cubic_sparsity(0, 0.5, 0, 10, initial_ratio=0.6)


@given(
    start=st.integers(0, 1000),
    length=st.integers(0, 1000),
    final=st.floats(0.0, 0.99),
    initial_frac=st.floats(0.0, 1.0),
    steps=st.lists(st.integers(0, 2500), min_size=2, max_size=10),
)
@settings(max_examples=200, deadline=None)
def test_cubic_monotone(
    start: int, length: int, final: float, initial_frac: float, steps: list[int]
) -> None:
    end = start + length
    initial = final * initial_frac
    values = [cubic_sparsity(s, final, start, end, initial) for s in sorted(steps)]
    assert all(0.0 <= v <= final for v in values)
    assert all(a <= b for a, b in itertools.pairwise(values))


# --------------------------------------------------------------------------- reporting


def test_sparsity_table_and_format() -> None:
    w = {"enc.weight": T([[0.0, 1.0], [0.0, 0.0]]), "dec.out.weight": torch.ones(2, 3)}
    rows = sparsity_table(w)
    assert rows == [
        SparsityRow("enc.weight", (2, 2), 4, 1, 0.75),
        SparsityRow("dec.out.weight", (2, 3), 6, 6, 0.0),
    ]
    with pytest.raises(AttributeError):
        rows[0].nonzero = 3  # type: ignore[misc]
    text = format_sparsity_table(rows)
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # fixed width
    assert lines[0].split() == ["name", "shape", "kept", "sparsity"]
    assert lines[2].split() == ["enc.weight", "2x2", "1/4", "75.00%"]
    assert lines[3].split() == ["dec.out.weight", "2x3", "6/6", "0.00%"]
    assert lines[-1].split() == ["TOTAL", "-", "7/10", "30.00%"]


def test_parameter_counts_count_tied_tensors_once_and_skip_buffers() -> None:
    weight = T([[0.0, 1.0], [2.0, 0.0]])
    state = {
        "encoder.embed_tokens.weight": weight,
        "decoder.embed_tokens.weight": weight,  # tied: one storage
        "decoder.output_projection.weight": weight.clone(),  # tied, saved from GPU: a copy
        "encoder.layers.0.bias": torch.zeros(3),
        "decoder.layers.0.weight": torch.ones(5),
        "encoder.version": T([3.0]),  # fairseq's buffers are not parameters
        "decoder.embed_positions._float_tensor": T([1.0]),
        "step": torch.tensor(7),  # not floating point
    }
    assert parameter_counts(state) == (12, 7)
    assert parameter_counts({}) == (0, 0)
    model = _TinyTransformer()
    total = sum(p.numel() for p in model.parameters())
    assert parameter_counts(model.state_dict())[0] == total
