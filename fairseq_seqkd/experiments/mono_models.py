"""The rows of the deployed-student study (:mod:`.mono_study`), each named once: key, label,
the stage that makes it and its checkpoint, how a student row trains (:class:`Recipe`) and the
part of the run (``--part``) that makes it. Built from the preset's settings."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from .benchmark_models import SEQ_KD, TEACHER, model_spec, seeded_model
from .benchmark_presets import MonoPreset
from .demo_models import ModelSpec
from .presets import Arch

__all__ = ["ENSEMBLE", "PARTS", "TEACHER", "TEACHER_SEED2", "Recipe", "StudyRow",
           "size_key", "study_rows"]

#: the runs the page comes from, in order: the first teacher with the rows the main target
#: judges (Seq-KD, Seq-KD + mono, their seeds, the converged row); the second teacher, the
#: ensemble, its data and its rows; then GKD, the sizes, deployment and the best row's seeds
PARTS: tuple[str, ...] = ("core", "ensemble", "final")

TEACHER_SEED2 = model_spec("teacher-seed2", "Teacher, seed 2")
#: both teachers decoded together (fairseq's ensemble) by the stage named; it has no checkpoint
#: of its own (the first teacher's stands in where one is named)
ENSEMBLE = ModelSpec("teacher-ensemble", "Teacher ensemble (seeds 1 and 2)",
                     "eval-teacher-ensemble", "models/teacher/checkpoint_best.pt")

Budget = Literal["updates", "converged", "gkd"]


@dataclass(frozen=True)
class Recipe:
    """How a student row trains: on the data of build ``data`` ("seq-kd": the parallel pairs
    distilled; "mono": and the monolingual source; "mono-ensemble": both by the ensemble),
    for ``budget`` ("updates": the preset's fixed number; "converged": until patience stops
    it; "gkd": fine-tuned on-policy from row ``start`` with ``beta``), as ``arch`` (None: the
    preset's student), with ``seed``."""

    data: str
    budget: Budget = "updates"
    arch: Arch | None = None
    start: str | None = None
    beta: float | None = None
    seed: int = 1


@dataclass(frozen=True)
class StudyRow:
    model: ModelSpec
    recipe: Recipe
    part: str


def size_key(arch: Arch) -> str:
    return f"size-{arch.layers}-{arch.decoder_depth}-d{arch.dim}"


def _data_label(data: str) -> str:
    return {"seq-kd": "Seq-KD", "mono": "Seq-KD + mono",
            "mono-ensemble": "Seq-KD + mono (ensemble)"}[data]


def _seeded(row: StudyRow, seed: int, part: str) -> StudyRow:
    """``row`` retrained with ``--seed seed``; a GKD row starts from its start row's copy of
    the same seed."""
    recipe = replace(row.recipe, seed=seed,
                     start=None if row.recipe.start is None else
                     seeded_model(model_spec(row.recipe.start, ""), seed).key)
    return StudyRow(seeded_model(row.model, seed), recipe, part)


def study_rows(p: MonoPreset) -> list[StudyRow]:
    """Every student row of the study, in the order the stages run (a row after the one it
    starts from): seed 1 of each row, the seeds of ``seed_rows`` in their row's part, the
    seeds of ``best_row`` last."""
    if p.teacher_engine not in ("fairseq", "ctranslate2"):
        raise ValueError(f"preset {p.name}: teacher_engine must be fairseq or ctranslate2, got "
                         f"{p.teacher_engine!r}")
    if p.size_data not in ("mono", "mono-ensemble"):
        raise ValueError(f"preset {p.name}: size_data must be mono or mono-ensemble, got "
                         f"{p.size_data!r}")
    mono = StudyRow(model_spec("seq-kd-mono", "Seq-KD + mono"), Recipe("mono"), "core")
    rows = [
        StudyRow(SEQ_KD, Recipe("seq-kd"), "core"), mono,
        StudyRow(model_spec("seq-kd-mono-converged", "Seq-KD + mono, converged"),
                 Recipe("mono", "converged"), "core"),
        StudyRow(model_spec("seq-kd-mono-ensemble", "Seq-KD + mono from the ensemble"),
                 Recipe("mono-ensemble"), "ensemble"),
        StudyRow(model_spec("seq-kd-mono-ensemble-converged",
                            "Seq-KD + mono from the ensemble, converged"),
                 Recipe("mono-ensemble", "converged"), "ensemble"),
    ]
    by_key = {r.model.key: r for r in rows}
    start = by_key.get(p.gkd_start)
    if start is None:
        raise ValueError(f"preset {p.name}: gkd_start {p.gkd_start!r} is none of "
                         f"{', '.join(by_key)}")
    rows += [StudyRow(model_spec(f"gkd-{beta:g}", f"GKD from {start.model.label}, beta "
                                 f"{beta:g}"),
                      Recipe(start.recipe.data, "gkd", start.recipe.arch, start.model.key,
                             beta), "final") for beta in p.gkd_betas]
    rows += [StudyRow(model_spec(size_key(arch), f"{_data_label(p.size_data)}, "
                                 f"{arch.describe()}"),
                      Recipe(p.size_data, arch=arch), "final") for arch in p.sizes]
    by_key = {r.model.key: r for r in rows}
    unknown = [k for k in (*p.seed_rows, p.best_row, *p.deployed) if k not in by_key]
    if unknown:
        raise ValueError(f"preset {p.name}: {unknown[0]!r} (seed_rows, best_row or deployed) "
                         f"is none of the rows {', '.join(by_key)}")

    def chain(key: str) -> list[str]:  # a row and the rows it starts from, starts first
        start = by_key[key].recipe.start
        return ([] if start is None else chain(start)) + [key]

    seeded: list[str] = []
    for key in (*p.seed_rows, p.best_row):
        seeded += [k for k in chain(key) if k not in seeded]
    in_seed_rows = {k for key in p.seed_rows for k in chain(key)}
    rows += [_seeded(by_key[k], seed, by_key[k].part if k in in_seed_rows else "final")
             for seed in p.extra_seeds for k in seeded]
    return rows
