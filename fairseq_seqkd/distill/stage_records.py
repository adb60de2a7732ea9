"""How ``seqkd-build`` runs its stages on the one stage engine (:mod:`fairseq_seqkd.stages`).

A build is a list of :class:`BuildStage` s run in order in one output directory. Each stage has
a folder ``OUT_DIR/seqkd/<stage>/`` and a stamp there, ``done.json``: the stage's key (its
command, the content digests of every file it reads, the package version), its summary and the
content digests of the files it wrote. A stage is skipped when the key is the same and every
output still has the recorded content; otherwise it is redone, its stamp removed first so that a
build killed half-way never passes half-new outputs for done. ``started.json`` marks a run in
progress: a resumable stage (the teacher's decoding) started with the same key continues from
its committed chunks; any other is started again from an empty folder. Later stages read the
outputs of earlier ones, so a stage whose outputs change redoes every stage after it, and one
whose outputs come out the same bytes leaves them alone.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import version
from ..stages import Stamp, file_sha256, stage_key

WORK_DIR = "seqkd"
DONE = "done.json"
STARTED = "started.json"

Log = Callable[[str], None]


def summary_text(summary: dict[str, Any]) -> str:
    """A stage summary on one line (lists by their length)."""
    return ", ".join(f"{k} {len(v) if isinstance(v, list) else v}" for k, v in summary.items())


@dataclass
class BuildStage:
    """One stage of a build: what it depends on, what it writes, and the work."""

    name: str
    command: dict[str, Any]  # the options its outputs depend on
    inputs: dict[str, str]  # the files whose contents its outputs depend on, by name
    outputs: list[str]  # the files it writes, relative to the build's output directory
    run: Callable[[str], dict[str, Any]]  # the work, given the stage's folder; its summary
    check: Callable[[], None] | None = None  # refuses bad input before anything is written
    resumable: bool = False  # an interrupted run with the same key continues where it stopped
    announce: str = ""  # what the "running" line says after the reason
    show: Callable[[dict[str, Any]], str] = summary_text  # the summary, for the log


@dataclass
class StagesRun:
    """What :func:`run_stages` did: each stage's summary (recorded or new), and which ran."""

    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = [f"{k}: {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)]
    return "options changed (" + ", ".join(changed) + ")"


def _why(stamp: Stamp, key: dict[str, Any]) -> str:
    """Why ``key`` differs from the stamp's: the options by name, else the engine's words."""
    old = (stamp.read() or {}).get("key") or {}
    if old.get("version") == key["version"] and old.get("command") != key["command"]:
        return _changes(old.get("command") or {}, key["command"])
    return stamp.why_redo(key)


def _outputs_changed(record: dict[str, Any], out: str) -> str | None:
    """The first recorded output that is gone or whose content changed, in a few words."""
    for rel, digest in (record.get("outputs") or {}).items():
        path = os.path.join(out, rel)
        if not os.path.isfile(path):
            return f"output {rel} is missing"
        if file_sha256(path) != digest:
            return f"output {rel} changed"
    return None


def run_stages(out: str, stages: list[BuildStage], say: Log) -> StagesRun:
    """Skip, resume or redo each stage in turn, saying which and why."""
    result = StagesRun()
    for number, stage in enumerate(stages, start=1):
        label = f"[{number}/{len(stages)}] {stage.name}"
        folder = os.path.join(out, WORK_DIR, stage.name)
        done, started = Stamp(os.path.join(folder, DONE)), Stamp(os.path.join(folder, STARTED))
        key = stage_key(stage.command, stage.inputs, version.__version__)
        record, resume = done.read(), False
        if record is not None and done.matches(key):
            reason = _outputs_changed(record, out)
            if reason is None:
                result.summaries[stage.name] = record["summary"]
                say(f"{label}: skipped, up to date ({done.path}): "
                    f"{stage.show(record['summary'])}")
                continue
        elif record is not None:
            reason = _why(done, key)
        elif stage.resumable and started.matches(key):
            reason, resume = "resuming an unfinished run", True
        elif started.read() is not None:
            reason = _why(started, key)
        else:
            reason = "first run"
        if stage.check is not None:
            stage.check()
        if not resume and os.path.exists(folder):
            shutil.rmtree(folder)
        os.makedirs(folder, exist_ok=True)
        done.remove()
        started.write(key)
        say(f"{label}: running ({reason}){stage.announce}")
        summary = stage.run(folder)
        outputs = {rel: file_sha256(os.path.join(out, rel)) for rel in stage.outputs}
        done.write(key, summary=summary, outputs=outputs)
        started.remove()
        result.summaries[stage.name] = json.loads(json.dumps(summary))
        result.ran.append(stage.name)
        say(f"{label}: done: {stage.show(summary)}")
    return result
