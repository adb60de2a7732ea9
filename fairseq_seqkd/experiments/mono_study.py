"""The deployed-student study's stage list (``seqkd-benchmark`` with a :class:`MonoPreset`): a
student at its teacher's BLEU.

Rows: the teacher and a second teacher (the same command with ``--seed 2``) and their ensemble
(fairseq decodes both at once); Seq-KD on the parallel data; Seq-KD + monolingual source text
(``seqkd-build --mono-source``) for the same number of updates and until patience stops it;
Seq-KD + mono from the ensemble; GKD fine-tuning of a preset-named row; student sizes;
deployment (stock and CTranslate2 exports, timed alone); seeds of the rows the targets judge.
Students with a fixed budget train for exactly the preset's updates (fairseq ``--max-update``,
no epoch cap), validated and checkpointed every ``validate_updates``, so their curves show
whether they converged.

Three parts (``--part``, :data:`.mono_models.PARTS`), each ending with finished rows; a part
run on a fresh machine retrains the teachers and data it needs (the stages it depends on)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from ..atomic import atomic_write_text
from ..commands import console_script
from ..distill.build import WORK_DIR
from ..distill.evaluate import read_decoding
from ..errors import SeqKDError
from ..stages import PathNames, Stage, StageRun
from .benchmark import Benchmark, extra_test_sets
from .benchmark_models import DEPLOY_REFERENCE, DEPLOY_SAME_ENGINE
from .benchmark_presets import MonoPreset
from .corpus import MONO_FILE
from .decode import decoding_json, hypothesis_file
from .demo_models import GKD_LAMBDA, MAX_LEN_A, MAX_LEN_B, ModelSpec
from .mono_models import ENSEMBLE, PARTS, TEACHER, TEACHER_SEED2, StudyRow, study_rows
from .pipeline import Pipeline

__all__ = ["DATA_BUILDS", "MonoStudy"]

#: each student data set -> the stage that builds it (``seqkd-build``) into ``data-<set>``
DATA_BUILDS: dict[str, str] = {"seq-kd": "build-seq-kd", "mono": "build-seq-kd-mono",
                               "mono-ensemble": "build-seq-kd-mono-ensemble"}


class MonoStudy(Benchmark):
    """The study's stages for one corpus, monolingual source file and preset. It shares the
    benchmark's evaluation, deployment and page plumbing, not its Table-1 rows, so it starts
    from :class:`~.pipeline.Pipeline` directly."""

    preset: MonoPreset

    def __init__(self, out: str | os.PathLike, preset: MonoPreset, corpus: str | os.PathLike,
                 mono_source: str | os.PathLike | None = None, threads: int = 1,
                 jobs: int = 1, part: str | None = None, **kwargs: Any):
        Pipeline.__init__(self, out, preset, corpus=corpus, threads=threads, jobs=jobs,
                          **kwargs)
        self.extra_tests = extra_test_sets(self.raw) if self.raw.is_dir() else ()
        #: the raw monolingual source text, segmented by the run's sentencepiece model
        self.mono_source = (Path(mono_source).resolve() if mono_source is not None
                            else self.raw / MONO_FILE)
        names = {str(self.out): "$OUT", str(Path(self.plugin).parent): "$REPO",
                 sys.prefix: "$VENV", **({} if self.builtin else {str(self.raw): "$CORPUS"})}
        if not self.mono_source.is_relative_to(self.raw):
            names[str(self.mono_source)] = "$MONO"
        self._portable = PathNames(names)
        self.rows = study_rows(preset)
        self._rows = {r.model.key: r for r in self.rows}
        self.students = tuple(r.model for r in self.rows)
        self.models = (TEACHER, TEACHER_SEED2, ENSEMBLE, *self.students)
        self._select_part(part, PARTS)

    # ------------------------------------------------------------------ rows and parts

    def row(self, key: str) -> StudyRow:
        return self._rows[key]

    def size_rows(self) -> tuple[ModelSpec, ...]:
        """The sizes a user can choose from: the preset's student trained on ``size_data``
        (its row), then the ``sizes`` rows."""
        base = "seq-kd-mono" if self.preset.size_data == "mono" else "seq-kd-mono-ensemble"
        return (self.row(base).model, *(r.model for r in self.rows
                                        if r.model.key.startswith("size-")
                                        and r.recipe.seed == 1))

    def target_rows(self) -> dict[str, tuple[ModelSpec, ...]]:
        """Each name a target may use: a row key its row; "students" every seed-1 student
        row, "gkd" the GKD rows, "gkd-start" the row they start from."""
        first = tuple(r.model for r in self.rows if r.recipe.seed == 1)
        return {**{m.key: (m,) for m in self.models}, "students": first,
                "gkd": tuple(r.model for r in self.rows
                             if r.recipe.budget == "gkd" and r.recipe.seed == 1),
                "gkd-start": (self.row(self.preset.gkd_start).model,)}

    def part_of(self, stage: str) -> str:
        """The run (``--part``) that makes a stage."""
        key = stage.removeprefix("eval-")
        if key in self._rows:
            return self._rows[key].part
        if key in {TEACHER_SEED2.key, ENSEMBLE.key, DATA_BUILDS["mono-ensemble"]}:
            return "ensemble"
        return "final" if stage.startswith("deploy-") else "core"

    # ------------------------------------------------------------------ commands

    def _checkpointing(self, save: str) -> list[str]:
        """The teachers keep their last epoch checkpoints and stop by patience; the converged
        row stops by patience; every other row has a fixed budget (:meth:`_fixed`)."""
        p = self.preset
        if save in (TEACHER.key, TEACHER_SEED2.key):  # one command, but for the seed
            keep = (["--keep-last-epochs", str(p.average_last)] if TEACHER.key in p.average_models
                    else ["--no-epoch-checkpoints"])
            return keep + (["--patience", str(p.patience)] if p.patience else [])
        row = self._rows.get(save)
        converged = row is not None and row.recipe.budget == "converged"
        return ["--no-epoch-checkpoints", *(["--patience", str(p.patience)] if converged else [])]

    @staticmethod
    def _fixed(updates: int, every: int) -> list[str]:
        """Exactly ``updates`` updates, validated and checkpointed every ``every`` (the best
        validation is checkpoint_best; one interval checkpoint kept)."""
        return ["--max-update", str(updates), "--validate-interval-updates", str(every),
                "--save-interval-updates", str(every), "--keep-interval-updates", "1"]

    def data_dir(self, data: str) -> Path:
        return self.out / f"data-{DATA_BUILDS[data].removeprefix('build-')}"

    def _row_command(self, row: StudyRow) -> list[str]:
        p, r, key = self.preset, row.recipe, row.model.key
        arch, data = r.arch or p.student, self.data_dir(r.data)
        if r.budget == "gkd":
            start = self.out / self.row(r.start or "").model.checkpoint
            return self._train(
                data, key, arch, 0, p.finetune_lr, p.student_dropout,
                "--criterion", "gkd", "--label-smoothing", str(p.label_smoothing),
                "--teacher-path", self._teacher_path(r.data),
                "--kd-alpha", str(p.kd_alpha), "--gkd-lambda", str(GKD_LAMBDA),
                "--gkd-beta", f"{r.beta:g}", "--finetune-from-model", str(start),
                *self._fixed(p.gkd_updates, p.gkd_validate_updates), warmup=p.prune_warmup,
                seed=r.seed)  # fmt: skip
        if r.budget == "converged":
            return self._train(data, key, arch, p.converged_epochs, p.student_lr,
                               p.student_dropout, *self._ls(), seed=r.seed)
        return self._train(data, key, arch, 0, p.student_lr, p.student_dropout, *self._ls(),
                           *self._fixed(p.student_updates, p.validate_updates), seed=r.seed)

    @staticmethod
    def _teachers(data: str) -> tuple[ModelSpec, ...]:
        """The teachers that made build ``data``: the first, or both as one ensemble."""
        return (TEACHER, TEACHER_SEED2) if data == "mono-ensemble" else (TEACHER,)

    def _teacher_path(self, data: str) -> str:
        return ":".join(str(self.out / t.checkpoint) for t in self._teachers(data))

    def _teacher_build(self, output: Path, *extra: str) -> list[str]:
        """seqkd-build of the Seq-KD data by the first teacher in the preset's engine."""
        p = self.preset
        command = self._build("seq-kd", output, *extra)
        if p.teacher_engine == "ctranslate2":  # one thread: stages run side by side
            command[command.index("--teacher") + 1] = str(self.out / "teacher-ct2")
            command += ["--teacher-threads", "1", "--teacher-quantization",
                        p.teacher_quantization]
        return command

    def _mono_options(self) -> list[str]:
        size = self.preset.mono_size
        return ["--mono-source", str(self.mono_source),
                *(["--mono-size", str(size)] if size is not None else []),
                "--spm-model", str(self.spm / "spm.model")]

    # ------------------------------------------------------------------ stages

    def _row_stage(self, row: StudyRow) -> Stage:
        r, p = row.recipe, self.preset
        deps = [DATA_BUILDS[r.data]]
        if r.budget == "gkd":
            deps += [self.row(r.start or "").model.stage,
                     *(t.stage for t in self._teachers(r.data))]
        what = {"updates": f"{p.student_updates:,} updates",
                "converged": f"until patience {p.patience} (at most {p.converged_epochs} "
                             "epochs)",
                "gkd": f"GKD fine-tuning, {p.gkd_updates:,} updates"}[r.budget]
        arch = "" if r.arch else f" ({p.student.describe()})"  # a size row's label has it
        save = self.out / "models" / row.model.key
        return Stage(row.model.stage, f"{row.model.label}{arch}, {what}",
                     [self._row_command(row)], [self.out / row.model.checkpoint], deps=deps,
                     clean=[save])

    def _data_stages(self) -> dict[str, Stage]:
        p, out = self.preset, self.out
        seqkd, mono, ensemble = (self.data_dir(d) for d in DATA_BUILDS)
        teacher_deps = ["preprocess", TEACHER.stage]
        stages: dict[str, Stage] = {}
        if p.teacher_engine == "ctranslate2":
            ct2 = out / "teacher-ct2"
            stages["teacher-ct2"] = Stage(
                "teacher-ct2", f"the teacher exported to CTranslate2 ({p.teacher_quantization}) "
                "for its builds",
                [[console_script("seqkd-export"), "--input", str(out / TEACHER.checkpoint),
                  "--format", "ctranslate2", "--quantization", p.teacher_quantization,
                  "--spm-model", str(self.spm / "spm.model"), "--output", str(ct2)]],
                [ct2 / "seqkd-export.json", ct2], deps=["sentencepiece", TEACHER.stage],
                clean=[ct2])
            teacher_deps.append("teacher-ct2")
        engine = (f"CTranslate2 {p.teacher_quantization}" if p.teacher_engine == "ctranslate2"
                  else "fairseq")
        proof = ("train.src-tgt.tgt.bin", "dict.tgt.txt")
        stages[DATA_BUILDS["seq-kd"]] = Stage(
            DATA_BUILDS["seq-kd"], f"Seq-KD data: the teacher ({engine}) beam {p.beam} on train",
            [self._teacher_build(seqkd)], [*(seqkd / n for n in proof), seqkd],
            deps=teacher_deps, clean=[seqkd])
        size = "all" if p.mono_size is None else f"the first {p.mono_size:,} usable"
        generate = Path(WORK_DIR) / "generate"
        stages[DATA_BUILDS["mono"]] = Stage(  # from a copy of the Seq-KD build's decoding
            DATA_BUILDS["mono"], f"Seq-KD + mono data: the Seq-KD pairs, then the teacher's "
            f"({engine}) beam {p.beam} on {size} lines of the monolingual source",
            [["cp", "-R", str(seqkd / generate), str(mono / generate)],
             self._teacher_build(mono, *self._mono_options())],
            [*(mono / n for n in proof), mono],
            deps=[DATA_BUILDS["seq-kd"], "sentencepiece", *teacher_deps], clean=[mono],
            mkdirs=[mono / WORK_DIR], inputs=[self.mono_source],
            resumes=False)  # cp -R into an existing copy would nest it
        build = self._build("seq-kd", ensemble, *self._mono_options())
        build[build.index("--teacher") + 1] = self._teacher_path("mono-ensemble")
        stages[DATA_BUILDS["mono-ensemble"]] = Stage(
            DATA_BUILDS["mono-ensemble"], f"Seq-KD + mono data from the ensemble of both "
            f"teachers (fairseq), beam {p.beam}", [build], [*(ensemble / n for n in proof),
                                                             ensemble],
            deps=["preprocess", "sentencepiece",
                  *(t.stage for t in self._teachers("mono-ensemble"))],
            clean=[ensemble], inputs=[self.mono_source])
        return stages

    def _ensemble_eval_stage(self) -> Stage:
        """Both teachers decoded as one fairseq ensemble on every test set, greedy and beam K
        (fairseq-generate), written as the decoding process writes a model's files."""
        p, eval_dir = self.preset, self.out / "eval"
        runs = [(self.subset(t), beam) for t in self.test_sets for beam in (1, p.beam)]
        raw = {run: eval_dir / f"{ENSEMBLE.key}.{run[0]}.beam{run[1]}.generate.txt"
               for run in runs}
        path = ":".join(str(self.out / m.checkpoint) for m in (TEACHER, TEACHER_SEED2))
        commands = [[
            console_script("fairseq-generate"), str(self.data), "--user-dir", self.plugin,
            "--path", path, "--gen-subset", subset, "--beam", str(beam), "--nbest", "1",
            "--batch-size", str(p.eval_batch_size), "--max-len-a", str(MAX_LEN_A),
            "--max-len-b", str(MAX_LEN_B), "--remove-bpe", "sentencepiece", "--cpu",
            "--num-workers", "0", "--required-batch-size-multiple", "1",
        ] for subset, beam in runs]  # fmt: skip
        files = [*(hypothesis_file(eval_dir, ENSEMBLE.key, s, b) for s, b in runs),
                 decoding_json(eval_dir, ENSEMBLE.key)]

        def convert(log: TextIO) -> None:
            decoded: dict[str, dict[str, dict[str, Any]]] = {}
            for (subset, beam), capture in raw.items():
                run = read_decoding(capture)
                atomic_write_text(hypothesis_file(eval_dir, ENSEMBLE.key, subset, beam),
                                  "".join(h + "\n" for h in run.hypotheses))
                decoded.setdefault(subset, {})[str(beam)] = {
                    "engine": "fairseq", "sentences": run.sentences, "tokens": run.tokens,
                    "seconds": run.seconds}
            atomic_write_text(decoding_json(eval_dir, ENSEMBLE.key),
                              json.dumps(decoded, indent=1) + "\n")
            print(f"{len(runs)} decodings of the ensemble converted", file=log)

        return Stage(ENSEMBLE.stage, f"decode {', '.join(self.test_sets)}: {ENSEMBLE.label}",
                     commands, [*raw.values(), *files],
                     deps=[TEACHER.stage, TEACHER_SEED2.stage], clean=[*raw.values(), *files],
                     mkdirs=[eval_dir], captures=list(raw.values()), func=convert,
                     func_key={"convert": "fairseq-generate output -> hypotheses"})

    def _unordered_stages(self) -> list[Stage]:
        """Every stage, each model's decoding right after it, before the part order."""
        p, base = self.preset, {s.name: s for s in Pipeline.stages(self)}
        data = self._data_stages()
        teacher2 = Stage(TEACHER_SEED2.stage, f"second teacher, {p.teacher.describe()}, seed 2",
                         [self._train(self.data, TEACHER_SEED2.key, p.teacher, p.teacher_epochs,
                                      p.teacher_lr, p.teacher_dropout, *self._ls(), seed=2)],
                         [self.out / TEACHER_SEED2.checkpoint], deps=["preprocess"],
                         clean=[self.out / "models" / TEACHER_SEED2.key])
        seeded = [r for r in self.rows if r.recipe.seed != 1]

        def rows(*keys: str, part: str | None = None) -> list[StudyRow]:
            return ([self.row(k) for k in keys] if part is None
                    else [r for r in seeded if r.part == part])

        final = [r for r in self.rows if r.recipe.seed == 1 and r.part == "final"]
        plan: list[Stage | StudyRow] = [
            base["sentencepiece"], base["preprocess"], base["teacher"],
            *(data[n] for n in ("teacher-ct2",) if n in data), data[DATA_BUILDS["seq-kd"]],
            *rows("seq-kd"), data[DATA_BUILDS["mono"]], *rows("seq-kd-mono"),
            *rows("seq-kd-mono-converged"), *rows(part="core"),
            teacher2, data[DATA_BUILDS["mono-ensemble"]],
            *rows("seq-kd-mono-ensemble", "seq-kd-mono-ensemble-converged"),
            *rows(part="ensemble"),
            *final, self._deploy_export_stage(), self._deploy_speed_stage(), *rows(part="final"),
        ]
        stages: list[Stage] = []
        for item in plan:
            if isinstance(item, StudyRow):
                stages += [self._row_stage(item), self._eval_stage(item.model)]
                continue
            stages.append(item)
            if item.name == TEACHER.stage:
                stages.append(self._eval_stage(TEACHER))
            elif item.name == TEACHER_SEED2.stage:
                stages += [self._eval_stage(TEACHER_SEED2), self._ensemble_eval_stage()]
        return stages

    def stages(self) -> list[Stage]:
        """Part by part (:data:`PARTS`); within a part the rows the targets judge first (the
        longest, the converged row, before the seeds, so two jobs finish together; deployment
        before the best row's further seeds, which it does not read), each model's decoding
        right after it."""
        return sorted(self._unordered_stages(), key=lambda s: PARTS.index(self.part_of(s.name)))

    # ------------------------------------------------------------------ deployment

    def deploy_rows(self) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
        """label -> row key of the stock fairseq exports (the teacher and the ``deployed``
        rows), and label -> (row key, quantization) of the CTranslate2 exports: the teacher
        in int8, the deployed rows in float32 and int8, the size rows in int8."""
        p = self.preset
        fairseq = {DEPLOY_REFERENCE: TEACHER.key, **{key: key for key in p.deployed}}
        ct2 = {DEPLOY_SAME_ENGINE: (TEACHER.key, "int8")}
        for key in p.deployed:
            ct2 |= {f"{key} (CT2 float32)": (key, "float32"), f"{key} (CT2 int8)": (key, "int8")}
        ct2 |= {f"{m.key} (CT2 int8)": (m.key, "int8") for m in self.size_rows()}
        return fairseq, ct2

    # ------------------------------------------------------------------ running

    def run(self) -> list[StageRun]:
        needs = {DATA_BUILDS["mono"], DATA_BUILDS["mono-ensemble"]}
        if needs & {s.name for s in self.selected_stages()} and not self.mono_source.is_file():
            raise SeqKDError(f"--mono-source: {self.mono_source} does not exist (the study's "
                             "monolingual source text, raw, one sentence a line)")
        return super().run()


def make_benchmark(out: str | os.PathLike, preset: Any, corpus: str | os.PathLike,
                   mono_source: str | os.PathLike | None = None, **kwargs: Any) -> Benchmark:
    """The plan a preset names: the study for a :class:`MonoPreset`, Table 1 otherwise."""
    if isinstance(preset, MonoPreset):
        return MonoStudy(out, preset, corpus, mono_source=mono_source, **kwargs)
    if mono_source is not None:
        raise SeqKDError(f"--mono-source: preset {preset.name} trains no row on monolingual "
                         "source text")
    return Benchmark(out, preset, corpus=corpus, **kwargs)
