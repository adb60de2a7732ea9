"""The demo's models: one row of the results table each, the decoding caps they share, and
the language codes of the corpus files."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEPLOYED",
    "GKD_BETA",
    "GKD_LAMBDA",
    "MAX_LEN_A",
    "MAX_LEN_B",
    "MODELS",
    "SEQ_KD_MONO",
    "SRC",
    "TGT",
    "ModelSpec",
    "demo_rows",
]

SRC, TGT = "src", "tgt"


@dataclass(frozen=True)
class ModelSpec:
    """One row of the table: a trained model and the stage that produced its checkpoint."""

    key: str
    label: str
    stage: str
    checkpoint: str  # relative to the output dir
    # load with --user-dir: fairseq-train's checkpoints pickle an argparse.Namespace that
    # torch >= 2.6 refuses unless the plugin allow-lists it; seqkd-export's output needs nothing
    plugin: bool = True
    # "ctranslate2": ``checkpoint`` is a seqkd-export --format ctranslate2 directory of the
    # model ``source``, decoded by seqkd-translate
    engine: str = "fairseq"
    source: str | None = None


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("teacher", "Teacher", "teacher", "models/teacher/checkpoint_best.pt"),
    ModelSpec("baseline", "Student, baseline", "baseline", "models/baseline/checkpoint_best.pt"),
    ModelSpec("word-kd", "Word-KD", "word-kd", "models/word-kd/checkpoint_best.pt"),
    ModelSpec("seq-kd", "Seq-KD", "seq-kd", "models/seq-kd/checkpoint_best.pt"),
    ModelSpec("seq-inter", "Seq-Inter", "seq-inter", "models/seq-inter/checkpoint_best.pt"),
    ModelSpec("seq-kd-word-kd", "Seq-KD + Word-KD", "seq-kd-word-kd",
              "models/seq-kd-word-kd/checkpoint_best.pt"),
    ModelSpec("deep-shallow", "Seq-KD, deep encoder, shallow decoder", "deep-shallow",
              "models/deep-shallow/checkpoint_best.pt"),
    ModelSpec("seq-kd-gkd", "Seq-KD + GKD", "seq-kd-gkd", "models/seq-kd-gkd/checkpoint_best.pt"),
    ModelSpec("pruned", "Seq-KD, pruned (exported)", "export", "export/seq-kd-pruned.pt", False),
)
#: The Seq-KD student with more distilled data: trained on the Seq-KD pairs and the teacher's
#: translations of the built-in corpus's monolingual source text (``CorpusSpec.mono``).
SEQ_KD_MONO = ModelSpec("seq-kd-mono", "Seq-KD + mono", "seq-kd-mono",
                        "models/seq-kd-mono/checkpoint_best.pt")


def demo_rows(mono: bool) -> tuple[ModelSpec, ...]:
    """The demo's fairseq rows: :data:`MODELS`, with ``mono`` the Seq-KD + mono row after the
    Seq-KD one."""
    if not mono:
        return MODELS
    at = [m.key for m in MODELS].index("seq-kd") + 1
    return (*MODELS[:at], SEQ_KD_MONO, *MODELS[at:])


#: On-policy distillation (GKD, Agarwal et al. 2024): the fraction of updates on the student's
#: own samples, and the demo's beta (GKD's best for translation).
GKD_LAMBDA = 0.5
GKD_BETA = 0.1

#: The output cap of every decoding, fairseq-generate's ``--max-len-a/-b`` (a hypothesis ends
#: at A * source length + B tokens): evaluations, speed runs and the teacher's builds alike.
MAX_LEN_A, MAX_LEN_B = 1.5, 10

#: Students served by CTranslate2 (int8): what ``seqkd-translate`` users run.
DEPLOYED: tuple[ModelSpec, ...] = (
    ModelSpec("seq-kd-ct2", "Seq-KD, CTranslate2 int8", "export-ct2", "export/seq-kd-int8",
              False, "ctranslate2", "seq-kd"),
    ModelSpec("deep-shallow-ct2", "Seq-KD deep-shallow, CTranslate2 int8", "export-ct2",
              "export/deep-shallow-int8", False, "ctranslate2", "deep-shallow"),
)
