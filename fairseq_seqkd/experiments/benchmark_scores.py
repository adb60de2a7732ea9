"""The numbers of a benchmark run, read back from its output directory: BLEU of every row on
every test set, parameter counts and sparsity, decoding speeds, the deployment measurement,
validation curves, and the seed statistics built on them. Anything not done yet reads as None
(or is left out), so a page can be written from a partial run."""

from __future__ import annotations

import json
from typing import Any

from ..deploy.speed import SpeedRow
from ..distill.evaluate import bleu, read_decoding
from .benchmark import Benchmark
from .decode import decoding_json, read_decoding_run
from .demo_models import ModelSpec
from .measures import matrix_sparsity, pooled_std, valid_losses

__all__ = ["Scores", "read_deploy_rows", "read_scores", "read_speeds", "seed_noise",
           "seed_values", "valid_curve"]

#: per model key: "params", "nonzero", "same" (share of first-test-set sentences whose greedy
#: and beam outputs agree), "sparsity" (pruned rows) and BLEU per "TEST.beamB" column
Scores = dict[str, dict[str, Any]]


def read_scores(bench: Benchmark) -> tuple[Scores, str]:
    """Every row's parameters and BLEU (``None`` where that model or decoding is not done
    yet), and sacrebleu's signature."""
    from ..checkpoints import parameter_counts
    from ..teacher import load_checkpoint_state

    refs = {t: bench.references(t) for t in bench.test_sets}
    beam, signature = bench.preset.beam, ""
    table: Scores = {}
    for model in bench.models:
        entry: dict[str, Any] = {"params": None, "nonzero": None}
        checkpoint = bench.out / model.checkpoint
        if checkpoint.exists():
            state = load_checkpoint_state(str(checkpoint), "--path")
            entry["params"], entry["nonzero"] = parameter_counts(state["model"])
            if model in bench.pruned_models:
                entry["sparsity"] = matrix_sparsity(state["model"])
        hyps = {}
        for test_set in bench.test_sets:
            for b in (1, beam):
                subset, score = bench.subset(test_set), None
                if decoding_json(bench.out / "eval", model.key).exists():
                    hyps[test_set, b] = read_decoding_run(bench.out / "eval", model.key,
                                                          subset, b).hypotheses
                    score, signature = bleu(hyps[test_set, b], refs[test_set])
                entry[f"{test_set}.beam{b}"] = score
        first = bench.test_sets[0]
        if (first, 1) in hyps and (first, beam) in hyps:
            greedy, beamed = hyps[first, 1], hyps[first, beam]
            entry["same"] = sum(g == b for g, b in zip(greedy, beamed)) / max(len(greedy), 1)
        else:
            entry["same"] = None
        table[model.key] = entry
    return table, signature


def read_speeds(bench: Benchmark) -> list[dict[str, Any]]:
    """The speed stage's runs that are done, by fairseq-generate's own clock."""
    rows = []
    for model, beam, batch in bench.speed_runs():
        path = bench.speed_file(model, beam, batch)
        if not path.exists():
            continue
        run = read_decoding(path)
        rows.append({"model": model.key, "beam": beam, "batch": batch,
                     "sentences": run.sentences, "tokens": run.tokens,
                     "seconds": run.seconds, "tok_s": run.tokens_per_second,
                     "sent_s": run.sentences_per_second})
    return rows


def read_deploy_rows(bench: Benchmark) -> list[SpeedRow]:
    """The deployment measurement (empty before the deploy-speed stage ran)."""
    path = bench.deploy_file()
    if not path.exists():
        return []
    return [SpeedRow(**row) for row in json.loads(path.read_text(encoding="utf-8"))]


def valid_curve(bench: Benchmark, model: ModelSpec) -> list[float] | None:
    """fairseq-train's validation loss after each epoch, from ``model``'s stage log (None
    before the stage ran)."""
    log = bench.out / "logs" / f"{model.stage}.log"
    return valid_losses(log.read_text(encoding="utf-8")) if log.exists() else None


def seed_values(bench: Benchmark, scores: Scores, key: str, column: str) -> list[float]:
    """``column`` of row ``key`` and of its seeded copies, those measured."""
    keys = [key, *(f"{key}-seed{seed}" for seed in bench.preset.extra_seeds)]
    return [scores[k][column] for k in keys if scores.get(k, {}).get(column) is not None]


def seed_noise(bench: Benchmark, scores: Scores) -> float | None:
    """The seed noise of greedy BLEU on the first test set, pooled over the seeded rows."""
    column = f"{bench.test_sets[0]}.beam1"
    return pooled_std([seed_values(bench, scores, k, column) for k in bench.seed_chain()])
