"""The benchmark's model catalogue: every row of its page named once (key, label, the stage that
trains it, its checkpoint), and the rows of the deployment measurement.

Kim & Rush's Table 1 comes first; the rows beyond it are built by the functions below from the
preset's settings (pruning ratios, divergences, GKD betas, seeds)."""

from __future__ import annotations

from .demo_models import MODELS, ModelSpec

__all__ = [
    "DEEP_SHALLOW",
    "DEPLOY_BATCHES",
    "DEPLOY_CT2",
    "DEPLOY_FAIRSEQ",
    "DEPLOY_REFERENCE",
    "DEPLOY_SAME_ENGINE",
    "SEQ_KD",
    "SEQ_KD_WORD_KD",
    "START",
    "STRONG",
    "TABLE1",
    "TABLE1_BY_KEY",
    "TEACHER",
    "averaged_model",
    "divergence_model",
    "filtered_model",
    "gkd_model",
    "model_spec",
    "pruned_model",
    "seed_chain",
    "seeded_model",
]

_DEMO = {m.key: m for m in MODELS}  # the rows the demo shares with the benchmark
TEACHER, SEQ_KD, SEQ_KD_WORD_KD = _DEMO["teacher"], _DEMO["seq-kd"], _DEMO["seq-kd-word-kd"]
DEEP_SHALLOW = _DEMO["deep-shallow"]


def model_spec(key: str, label: str, stage: str | None = None,
               checkpoint: str = "checkpoint_best.pt") -> ModelSpec:
    """A row trained by stage ``stage`` (``key`` by default) into ``models/KEY/``."""
    return ModelSpec(key, label, stage or key, f"models/{key}/{checkpoint}")


#: The paper's Table 1, in its order (teachers first).
TABLE1: tuple[ModelSpec, ...] = (
    TEACHER,
    model_spec("teacher-seq-inter", "Teacher + Seq-Inter"),
    _DEMO["baseline"],
    _DEMO["word-kd"],
    SEQ_KD,
    model_spec("baseline-seq-inter", "Baseline + Seq-Inter"),
    model_spec("word-kd-seq-inter", "Word-KD + Seq-Inter"),
    model_spec("seq-kd-seq-inter", "Seq-KD + Seq-Inter"),
    SEQ_KD_WORD_KD,
    model_spec("all-three", "Seq-KD + Seq-Inter + Word-KD"),
)
TABLE1_BY_KEY: dict[str, ModelSpec] = {m.key: m for m in TABLE1}
#: the model each fine-tuned Table-1 student starts from
START: dict[str, str] = {"baseline-seq-inter": "baseline", "word-kd-seq-inter": "word-kd",
                         "seq-kd-seq-inter": "seq-kd", "all-three": "seq-kd-word-kd"}
#: a student trained as Seq-KD on the output of the teacher fine-tuned on Seq-Inter
STRONG = model_spec("seq-kd-strong", "Seq-KD, data from Teacher + Seq-Inter")

#: The deployment rows: label -> trained model (stock exports, ``seqkd-export``, decoded by
#: fairseq), and label -> (trained model, quantization) (``--format ctranslate2`` exports).
DEPLOY_FAIRSEQ: dict[str, str] = {"teacher": "teacher", "student": "seq-kd",
                                  "deep-shallow": "deep-shallow"}
DEPLOY_CT2: dict[str, tuple[str, str]] = {
    "teacher (CT2 int8)": ("teacher", "int8"),
    "student (CT2 float32)": ("seq-kd", "float32"),
    "student (CT2 int8)": ("seq-kd", "int8"),
    "deep-shallow (CT2 int8)": ("deep-shallow", "int8"),
}
DEPLOY_BATCHES: tuple[int, ...] = (1, 64)
#: the row every deployment speed-up is against, and the teacher in the students' engine
DEPLOY_REFERENCE, DEPLOY_SAME_ENGINE = "teacher", "teacher (CT2 int8)"


def divergence_model(divergence: str) -> ModelSpec:
    return model_spec(f"word-kd-{divergence}", f"Word-KD, {divergence}")


def pruned_model(ratio: float, scheme: str = "class-blind") -> ModelSpec:
    """The retraining's last checkpoint: under the gradual schedule checkpoint_best is an
    early epoch's, chosen before the sparsity reached ``ratio`` (validation loss rises with
    it), while the last one is at ``ratio`` after the schedule's end."""
    key, label = f"pruned-{round(100 * ratio)}", f"Seq-KD, pruned {ratio:.0%}"
    if scheme != "class-blind":
        key, label = f"{key}-{scheme}", f"{label} {scheme}"
    return model_spec(key, label, checkpoint="checkpoint_last.pt")


def seeded_model(model: ModelSpec, seed: int) -> ModelSpec:
    """``model`` retrained with ``--seed seed`` (seed 1 is the row itself)."""
    if seed == 1:
        return model
    return model_spec(f"{model.key}-seed{seed}", f"{model.label}, seed {seed}")


def averaged_model(model: ModelSpec, last: int) -> ModelSpec:
    """``model``'s last ``last`` epoch checkpoints averaged: a stock checkpoint (seqkd-export)."""
    return ModelSpec(f"{model.key}-avg{last}", f"{model.label}, average of last {last}",
                     f"avg-{model.key}", f"models-avg/{model.key}.pt", plugin=False)


def gkd_model(beta: float) -> ModelSpec:
    return model_spec(f"seq-kd-gkd-{beta:g}", f"Seq-KD + GKD (beta {beta:g})")


def filtered_model(percent: float) -> ModelSpec:
    return model_spec("seq-kd-filtered", f"Seq-KD, filtered {percent:g} %")


def seed_chain(rows: tuple[str, ...]) -> list[str]:
    """The Table-1 ``rows`` and the rows they are fine-tuned from, starts first: what a
    seeded copy of ``rows`` retrains."""
    chain: list[str] = []
    for key in rows:
        todo = []
        while key is not None:
            todo.append(key)
            key = START.get(key)
        chain += [k for k in reversed(todo) if k not in chain]
    return chain
