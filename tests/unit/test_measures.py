"""The benchmark page's pure helpers: seed statistics against float64 references, the 2-std
mark, per-matrix sparsity of a state dict with tied tensors, and fairseq log parsing."""

import math
import statistics

import numpy as np
import pytest
import torch

from fairseq_seqkd.experiments.measures import (
    NOISE_MARK,
    mark_noise,
    matrix_sparsity,
    mean_std,
    pooled_std,
    reference_nll,
    valid_losses,
    within_noise,
)


def test_mean_std_matches_float64_sample_statistics():
    values = [34.52, 33.91, 35.07]
    mean, std = mean_std(values)
    reference = np.asarray(values, dtype=np.float64)
    assert mean == pytest.approx(reference.mean(), abs=1e-12)
    assert std == pytest.approx(reference.std(ddof=1), abs=1e-12)
    assert std == pytest.approx(statistics.stdev(values), abs=1e-12)
    assert mean_std([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_pooled_std_weights_each_row_by_its_degrees_of_freedom():
    a, b = [30.0, 31.0, 32.0], [20.0, 24.0]  # variances 1 (2 dof) and 8 (1 dof)
    assert pooled_std([a, b]) == pytest.approx(math.sqrt((1 * 2 + 8 * 1) / 3), abs=1e-12)
    assert pooled_std([a, [5.0]]) == pytest.approx(1.0)  # one value: no weight
    assert pooled_std([[5.0], []]) is None


def test_two_std_mark():
    assert within_noise(0.39, 0.2) and within_noise(-0.39, 0.2)
    assert not within_noise(0.4, 0.2) and not within_noise(-0.41, 0.2)
    assert not within_noise(0.0, None)  # no seed noise measured: nothing marked
    assert mark_noise("+0.30", 0.3, 0.2) == "+0.30" + NOISE_MARK
    assert mark_noise("+0.50", 0.5, 0.2) == "+0.50"


def test_matrix_sparsity_counts_tied_tensors_once_and_skips_biases_and_norms():
    embed = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    state = {
        "encoder.embed_tokens.weight": embed,
        "decoder.embed_tokens.weight": embed,  # --share-all-embeddings: one storage
        "decoder.output_projection.weight": embed,
        "encoder.layers.0.fc1.weight": torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        "encoder.layers.0.fc1.bias": torch.zeros(2),
        "encoder.layers.0.final_layer_norm.weight": torch.zeros(3, 2),
        "encoder.version": torch.tensor([3.0]),
    }
    assert matrix_sparsity(state) == {"encoder.embed_tokens.weight": 0.5,
                                      "encoder.layers.0.fc1.weight": pytest.approx(5 / 6)}
    # an untied copy with equal values is a matrix of its own
    state["decoder.embed_tokens.weight"] = embed.clone()
    assert set(matrix_sparsity(state)) == {"encoder.embed_tokens.weight",
                                           "decoder.embed_tokens.weight",
                                           "encoder.layers.0.fc1.weight"}


def test_valid_losses_reads_every_validation_of_a_fairseq_log():
    log = (
        "2024 | INFO | train | epoch 001 | loss 9.1 | nll_loss 8.2 | num_updates 272\n"
        "2024 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 7.003 | nll_loss 6.1\n"
        "2024 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 5.495 | nll_loss 4.3\n"
    )
    assert valid_losses(log) == [7.003, 5.495]
    assert valid_losses("no validation here") == []


def test_reference_nll_averages_positional_scores_over_tokens():
    text = ("S-0\tein Hund\nT-0\ta dog\nH-0\t-0.5\ta dog\nP-0\t-0.2500 -0.5000 -0.7500\n"
            "S-1\tx\nH-1\t-1.0\ty\nP-1\t-1.5000 -0.0000\n"
            "Generate valid with beam=5: BLEU4 = 1.0\n")
    assert reference_nll(text) == pytest.approx((0.25 + 0.5 + 0.75 + 1.5 + 0.0) / 5)
    with pytest.raises(ValueError, match="score-reference"):
        reference_nll("H-0\t-0.5\ta dog\n")
