"""The numbers of a study run (:mod:`.mono_study`), read from its output directory and, for
what is not there, from the archive the page keeps beside itself (``DOC-logs/``): a part run on
a fresh machine still shows the rows of earlier parts. The archive holds the stage logs, the
stamps, the hypotheses (gzipped), the deployment measurement and a JSON of the facts that live
only in checkpoints and data (parameters, data sizes); :func:`write_archive` writes it."""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes, atomic_write_text
from ..deploy.speed import SpeedRow
from ..distill.evaluate import bleu
from ..textfiles import count_lines
from .decode import decoding_json, hypothesis_file, read_decoding_run
from .demo_models import SRC, ModelSpec
from .mono_models import ENSEMBLE, TEACHER, TEACHER_SEED2
from .mono_study import DATA_BUILDS, MonoStudy
from .significance import chrf

__all__ = ["FACTS", "Results", "read_results", "valid_curve", "write_archive"]

FACTS = "results.json"  # the archive's facts file, beside the logs
_VALID = re.compile(r"\| valid on '[^']+' subset \| loss ([-\d.]+) .*?\| num_updates (\d+)")
_TRAIN_UPDATES = re.compile(r"num_updates[ =](\d+)")


def valid_curve(log: str) -> tuple[list[tuple[int, float]], int | None, str | None]:
    """From a fairseq-train log: (update, validation loss) at each validation, the last
    update count logged, and why training stopped ("patience", or "done" for its budget;
    None while it runs)."""
    curve = [(int(u), float(loss)) for loss, u in _VALID.findall(log)]
    updates = [int(u) for u in _TRAIN_UPDATES.findall(log)]
    stop = ("patience" if "early stop since valid performance" in log
            else "done" if "done training in" in log else None)
    return curve, max(updates, default=None), stop


@dataclass
class Results:
    """Per row key: ``params``; BLEU and chrF per ``"TEST.beamB"`` column; the validation
    ``curve``, last ``updates`` and ``stop``. Per stage its stamp's seconds and CPU seconds;
    per data set its parallel and monolingual pairs; the deployment rows; the signatures."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    data: dict[str, dict[str, int]] = field(default_factory=dict)
    deploy: list[SpeedRow] = field(default_factory=list)
    signatures: dict[str, str] = field(default_factory=dict)
    hypotheses: dict[tuple[str, str, int], list[str]] = field(default_factory=dict)

    def score(self, metric: str, key: str, column: str) -> float | None:
        return self.rows.get(key, {}).get(metric, {}).get(column)


def _archived_hyp(archive: Path, key: str, subset: str, beam: int) -> Path:
    return archive / "eval" / f"{key}.{subset}.beam{beam}.hyp.gz"


def _read_hypotheses(study: MonoStudy, archive: Path | None, key: str, subset: str,
                     beam: int) -> list[str] | None:
    """One decoding's hypotheses: this run's, else the archive's, else None."""
    if decoding_json(study.out / "eval", key).exists():
        return read_decoding_run(study.out / "eval", key, subset, beam).hypotheses
    if archive is not None and _archived_hyp(archive, key, subset, beam).exists():
        text = gzip.decompress(_archived_hyp(archive, key, subset, beam).read_bytes())
        return text.decode("utf-8").splitlines()
    return None


def _params(study: MonoStudy, model: ModelSpec) -> int | None:
    from ..checkpoints import parameter_counts
    from ..teacher import load_checkpoint_state

    models = (TEACHER, TEACHER_SEED2) if model.key == ENSEMBLE.key else (model,)
    paths = [study.out / m.checkpoint for m in models]
    if not all(p.exists() for p in paths):
        return None
    return sum(parameter_counts(load_checkpoint_state(str(p), "--path")["model"])[0]
               for p in paths)


def _data_sizes(study: MonoStudy, data: str) -> dict[str, int] | None:
    """Pairs of a distilled data set: parallel (the training split's) and monolingual (the
    rows of its provenance file that are not parallel)."""
    directory = study.data_dir(data)
    if not (directory / "train.src-tgt.tgt.bin").exists():
        return None
    parallel = count_lines(study.raw / f"train.{SRC}")
    provenance = directory / "train.provenance.tsv"
    if not provenance.exists():
        return {"parallel": parallel, "mono": 0}
    lines = provenance.read_text(encoding="utf-8").splitlines()[1:]
    return {"parallel": parallel, "mono": sum(not ln.startswith("parallel\t") for ln in lines)}


def read_results(study: MonoStudy, archive: Path | None = None) -> Results:
    """Every number of the page, this run's first, the archive's for the rest."""
    old = (json.loads((archive / FACTS).read_text(encoding="utf-8"))
           if archive is not None and (archive / FACTS).exists() else {})
    results = Results(data=dict(old.get("data", {})), signatures=dict(old.get("signatures", {})))
    beam, refs = study.preset.beam, {t: study.references(t) for t in study.test_sets}
    for model in study.models:
        row: dict[str, Any] = {"bleu": {}, "chrf": {}}
        for test_set in study.test_sets:
            for b in (1, beam):
                hyps = _read_hypotheses(study, archive, model.key, study.subset(test_set), b)
                if hyps is None:
                    continue
                results.hypotheses[model.key, test_set, b] = hyps
                column = f"{test_set}.beam{b}"
                row["bleu"][column], results.signatures["BLEU"] = bleu(hyps, refs[test_set])
                row["chrf"][column], results.signatures["chrF"] = chrf(hyps, refs[test_set])
        params = _params(study, model)
        row["params"] = params if params is not None else (
            old.get("rows", {}).get(model.key, {}).get("params"))
        log = _log(study, archive, model.stage)
        row["curve"], row["updates"], row["stop"] = valid_curve(log) if log else ([], None, None)
        results.rows[model.key] = row
    for stage in study.stages():
        for stamp in (study._stamp_path(stage.name),
                      *([archive / "stamps" / f"{stage.name}.json"] if archive else [])):
            if stamp.exists():
                record = json.loads(stamp.read_text(encoding="utf-8"))
                results.stages[stage.name] = {"seconds": record.get("seconds", 0.0),
                                              "cpu_seconds": record.get("cpu_seconds", 0.0)}
                break
    for data in DATA_BUILDS:
        sizes = _data_sizes(study, data)
        if sizes is not None:
            results.data[data] = sizes
    for deploy in (study.deploy_file(), *([archive / "speed-deploy.json"] if archive else [])):
        if deploy.exists():
            results.deploy = [SpeedRow(**r) for r in json.loads(deploy.read_text("utf-8"))]
            break
    return results


def _log(study: MonoStudy, archive: Path | None, stage: str) -> str | None:
    for path in (study.out / "logs" / f"{stage}.log",
                 *([archive / f"{stage}.log"] if archive else [])):
        if path.exists():
            return path.read_text(encoding="utf-8")
    return None


def write_archive(study: MonoStudy, results: Results, archive: Path) -> None:
    """What a later part on a fresh machine reads back: this run's logs (paths named), stamps,
    hypotheses and deployment measurement, and the facts (:data:`FACTS`)."""
    (archive / "eval").mkdir(parents=True, exist_ok=True)
    (archive / "stamps").mkdir(exist_ok=True)
    out = study.out
    for log in sorted((out / "logs").glob("*.log")):
        atomic_write_text(archive / log.name, study._portable(log.read_text("utf-8")))
    for stamp in sorted((out / "stamps").glob("*.json")):
        if not stamp.name.endswith(".started.json"):
            atomic_write_text(archive / "stamps" / stamp.name,
                              study._portable(stamp.read_text("utf-8")))
    for model in study.models:
        if not decoding_json(out / "eval", model.key).exists():
            continue
        for test_set in study.test_sets:
            for b in (1, study.preset.beam):
                subset = study.subset(test_set)
                text = hypothesis_file(out / "eval", model.key, subset, b).read_bytes()
                atomic_write_bytes(_archived_hyp(archive, model.key, subset, b),
                                   gzip.compress(text, mtime=0))
    if study.deploy_file().exists():
        atomic_write_text(archive / "speed-deploy.json", study.deploy_file().read_text("utf-8"))
    facts = {"preset": asdict(study.preset), "signatures": results.signatures,
             "data": results.data, "stages": results.stages,
             "rows": {k: {n: v for n, v in row.items() if n != "curve"}
                      for k, row in results.rows.items()}}
    atomic_write_text(archive / FACTS, json.dumps(study._portable(facts), indent=1,
                                                  default=str) + "\n")
