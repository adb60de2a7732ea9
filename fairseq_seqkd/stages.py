"""The one stage engine: a stage is done when its stamp still matches what made its outputs.

:class:`StageRunner` runs :class:`Stage` s in one output directory: a stage's inputs are its
dependencies' outputs and the files it names from outside, and its key (:mod:`.stamps`) holds
their content; ``stamps/<stage>.json`` is written last and ``stamps/<stage>.started.json``
marks a run in progress, so an interrupted stage resumes (when its tool can) or is cleaned and
redone, never half-reused. Commands and their output go to ``logs/<stage>.log``, paths written
as names (``$OUT`` ...). An in-process stage may instead be keyed by its options, refuse bad
input before anything is written, return a summary kept in its stamp and have its outputs'
content recorded. Only the runner decides what is skipped, resumed or redone, and why;
seqkd-build's runner files its stamps and says its progress its own way
(:mod:`fairseq_seqkd.distill.build`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .atomic import replace_synced
from .errors import SeqKDError
from .stamps import Stamp, stage_key
from .version import __version__

__all__ = [
    "PARALLELISM_OPTIONS",
    "PathNames",
    "Stage",
    "StageRun",
    "StageRunner",
    "stages_needed",
    "without_parallelism",
]


# ------------------------------------------------------------------ stages and their runner

#: options that set how many processes or threads make a stage's outputs, not what they are
PARALLELISM_OPTIONS: frozenset[str] = frozenset({"--workers", "--threads"})


def without_parallelism(commands: list[list[str]]) -> list[list[str]]:
    """``commands`` with the values of :data:`PARALLELISM_OPTIONS` blanked, for the key: a
    stage done with 2 threads stays done in a run with 1."""
    return [[("*" if i and command[i - 1] in PARALLELISM_OPTIONS else arg)
             for i, arg in enumerate(command)] for command in commands]


@dataclass
class Stage:
    """Commands (and an in-process step) that together make ``outputs``; redone as a whole
    unless its stamp matches."""

    name: str
    description: str
    commands: list[list[str]]
    # what the stage makes and later stages read (files, or directories: every file inside,
    # hidden ones aside); each must exist for the stage to count as done
    outputs: list[Path]
    # the stages whose outputs this one reads: they run first, and their outputs' content is
    # in this stage's key
    deps: list[str] = field(default_factory=list)
    # run after these when they are in the run, though nothing of theirs is read (--only
    # leaves them out)
    after: list[str] = field(default_factory=list)
    clean: list[Path] = field(default_factory=list)  # removed before a redo from scratch
    # an interrupted run with the same key continues from the partial outputs (fairseq-train,
    # seqkd-build and seqkd-cache-teacher resume); False: they are cleaned, the stage redone
    resumes: bool = True
    # in-process step (after the commands), given the stage's log; it may return a summary
    func: Callable[[TextIO], dict[str, Any] | None] | None = None
    func_key: dict[str, Any] | None = None  # what ``func`` does, for the key
    # an in-process step's options: the key's command in place of the commands and func_key
    # (and a change is said option by option)
    options: dict[str, Any] | None = None
    check: Callable[[], None] | None = None  # refuses bad input before anything is written
    record_outputs: bool = False  # the stamp records the outputs' content (and checks it)
    mkdirs: list[Path] = field(default_factory=list)  # created before the commands run
    # per command: a file that receives its stdout and stderr (written to a temporary name
    # and renamed when the command succeeds) instead of the stage log
    captures: list[Path | None] = field(default_factory=list)
    # runs alone (decoding-speed measurements), even with jobs > 1
    exclusive: bool = False
    # files read from outside the output directory (a corpus): their content is in the key,
    # named by their paths, or by the keys of a dict
    inputs: list[Path] | dict[str, str] = field(default_factory=list)


@dataclass
class StageRun:
    name: str
    skipped: bool
    seconds: float  # wall time of this run; for a skipped stage, of the run that made it
    cpu_seconds: float = 0.0  # user + system time of the stage's processes (load-independent)
    reason: str = ""  # why it ran (first run, what of its key changed) or "done before"
    summary: dict[str, Any] | None = None  # what the in-process step returned (recorded)


def stages_needed(stages: list[Stage], only: Sequence[str]) -> list[Stage]:
    """The stages ``only`` names and every stage they depend on, in run order (all of them
    when ``only`` is empty)."""
    if not only:
        return stages
    by_name = {s.name: s for s in stages}
    unknown = [name for name in only if name not in by_name]
    if unknown:
        raise SeqKDError(f"--only: no stage named {unknown[0]!r} (stages: "
                         f"{', '.join(by_name)})")
    wanted: set[str] = set()
    todo = list(only)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(d for d in by_name[name].deps if d in by_name)
    return [s for s in stages if s.name in wanted]


class PathNames:
    """Writes the machine's paths as names (``{"/abs/out": "$OUT"}``) in strings, lists and
    dicts: the longest path first, whole path components only."""

    def __init__(self, names: Mapping[str, str] | None = None):
        self._patterns = [
            (re.compile(re.escape(path) + r"(?![\w.-])"), name)
            for path, name in sorted((names or {}).items(), key=lambda item: -len(item[0]))
            if len(path) > 1
        ]

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            for pattern, name in self._patterns:
                value = pattern.sub(name, value)
            return value
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value


class StageRunner:
    """Runs stages in the output directory ``out``, in order, or up to ``jobs`` independent
    ones at once (an exclusive stage alone), each command with ``threads`` CPU threads. Where
    stamps and logs go and how progress is said are methods that another runner overrides."""

    resuming = "resuming an interrupted run"  # the reason a resumed stage gives

    def __init__(self, out: str | os.PathLike, names: PathNames | None = None,
                 threads: int = 1, jobs: int = 1, stream: TextIO | None = None,
                 version: str = __version__):
        self.out = Path(out)
        self.portable = names or PathNames()
        self.threads = threads
        self.jobs = max(1, jobs)
        self.stream = stream if stream is not None else sys.stdout
        self.version = version
        self._procs: set[subprocess.Popen] = set()  # running commands, stopped on interrupt
        self._stages: dict[str, Stage] = {}

    def stamp_path(self, name: str, started: bool = False) -> Path:
        return self.out / "stamps" / (f"{name}.started.json" if started else f"{name}.json")

    def log_path(self, name: str) -> Path | None:
        """The stage's log of commands and output (None: none, its step says what it does)."""
        return self.out / "logs" / f"{name}.log"

    def key(self, stage: Stage) -> dict[str, Any]:
        """The stage's commands (parallelism blanked, paths named) or options, the content of
        its dependencies' outputs and of its own ``inputs``, and the package version."""
        inputs = {self.portable(str(p)): p for d in stage.deps for p in self._stages[d].outputs}
        outside = stage.inputs if isinstance(stage.inputs, dict) else {
            self.portable(str(p)): p for p in stage.inputs}
        command = self.portable(stage.options) if stage.options is not None else {
            "commands": self.portable(without_parallelism(stage.commands)),
            "func": self.portable(stage.func_key)}
        return stage_key(command, {**inputs, **outside}, self.version)

    def say(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def tag(self, stage: Stage, index: int, total: int) -> str:
        return f"[{index:2d}/{total}] {stage.name:<16}"

    def say_skipped(self, tag: str, stage: Stage, key: dict[str, Any],
                    record: dict[str, Any]) -> None:
        self.say(f"{tag} skipped: done before in {record.get('seconds', 0.0):.0f}s, with the "
                 f"same commands, {len(key['inputs'])} input(s) and version {key['version']} "
                 f"({stage.description})")

    def say_started(self, tag: str, stage: Stage, why: str, log_path: Path | None) -> None:
        self.say(f"{tag} started {time.strftime('%H:%M:%S')}: {stage.description} ({why})"
                 + (f"  [log: {os.path.relpath(log_path)}]" if log_path else ""))

    def say_done(self, tag: str, stage: Stage, run: StageRun) -> None:
        self.say(f"{tag} done in {run.seconds:.0f}s (CPU {run.cpu_seconds:.0f}s)")

    def say_nothing_to_do(self) -> None:
        self.say("nothing to do: every stage done before")

    def _env(self) -> dict[str, str]:
        """Environment of a command: ``threads`` CPU threads (small models on a few cores run
        far faster as one thread per process, several processes at once, than as one
        process with several OpenMP threads, which spin and stall when a core is busy)."""
        n = str(self.threads)
        return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n,
                "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}

    def _stamp(self, name: str, started: bool = False) -> Stamp:
        return Stamp(self.stamp_path(name, started), self.out)

    def _why(self, stage: Stage, key: dict[str, Any]) -> str | None:
        """Why ``stage`` is not done with ``key``; None: it is."""
        return self._stamp(stage.name).why_redo(key, stage.outputs, stage.options is not None)

    def _skipped(self, stage: Stage, tag: str, key: dict[str, Any]) -> StageRun:
        """The run record of a stage done before with this key, said so."""
        record = self._stamp(stage.name).read() or {}
        self.say_skipped(tag, stage, key, record)
        return StageRun(stage.name, True, record.get("seconds", 0.0),
                        record.get("cpu_seconds", 0.0), "done before", record.get("summary"))

    def _run_stage(self, stage: Stage, index: int, total: int) -> StageRun:
        tag = self.tag(stage, index, total)
        key = self.key(stage)
        why = self._why(stage, key)
        if why is None:
            return self._skipped(stage, tag, key)
        stamp, started = self._stamp(stage.name), self._stamp(stage.name, started=True)
        resumable = stage.resumes and started.matches(key)
        if resumable:
            why = self.resuming
        elif started.read() is not None:  # stale partial outputs: start afresh
            change = started.why_redo(key, options=stage.options is not None)
            why = "an interrupted run, redone from clean" + (f": {change}" if change else "")
        if stage.check is not None:
            stage.check()
        stamp.remove()
        if not resumable:
            for path in stage.clean:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        started.write(key)
        for path in stage.mkdirs:
            path.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(stage.name)
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        self.say_started(tag, stage, why, log_path)
        begin, cpu, summary = time.perf_counter(), 0.0, None
        with open(log_path or os.devnull, "a", encoding="utf-8") as log:
            for i, command in enumerate(stage.commands):
                capture = stage.captures[i] if i < len(stage.captures) else None
                cpu += self._run_command(command, log, Path(log.name), stage.name, capture)
            if stage.func is not None:
                before = time.process_time()
                summary = stage.func(log)
                cpu += time.process_time() - before
        seconds = time.perf_counter() - begin
        missing = [str(p) for p in stage.outputs if not p.exists()]
        if missing:
            raise SeqKDError(f"stage {stage.name} finished but {missing[0]} is missing"
                             + (f"; see {log_path}" if log_path else ""))
        stamp.write(key, stage.outputs if stage.record_outputs else (), stage=stage.name,
                    seconds=round(seconds, 1), cpu_seconds=round(cpu, 1),
                    finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                    **({"summary": summary} if summary is not None else {}))
        started.remove()
        run = StageRun(stage.name, False, seconds, cpu, why, json.loads(json.dumps(summary)))
        self.say_done(tag, stage, run)
        return run

    def _run_command(self, command: list[str], log: TextIO, log_path: Path, stage: str,
                     capture: Path | None) -> float:
        """Run one command, its output appended to the stage's log (or ``capture``d in a
        file); return its CPU time."""
        log.write(self.portable(f"$ {shlex.join(command)}"
                                + (f" > {capture} 2>&1\n" if capture else "\n")))
        log.flush()
        sink: TextIO = log
        if capture is not None:
            tmp = capture.with_name(f".{capture.name}.tmp")
            sink = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
            log_path = tmp
        try:
            proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                    env=self._env(), stdin=subprocess.DEVNULL)
        except BaseException:
            if sink is not log:
                sink.close()
            raise
        self._procs.add(proc)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
        except BaseException:
            proc.kill()
            proc.wait()
            if sink is not log:
                sink.close()
                log_path.unlink(missing_ok=True)  # no partial capture left behind
            raise
        finally:
            self._procs.discard(proc)
            if sink is not log:
                sink.close()
        if capture is not None:
            if proc.returncode == 0:
                replace_synced(log_path, capture)
            else:  # keep the failed output in the stage log, leave no partial capture
                log.write(log_path.read_text(encoding="utf-8", errors="replace"))
                log_path.unlink()
                log_path = Path(log.name)
        if proc.returncode != 0:
            log.flush()
            tail = [ln for ln in log_path.read_text(encoding="utf-8", errors="replace")
                    .splitlines() if ln.strip()][-1:]
            last = tail[0].strip() if tail else ""
            raise SeqKDError(
                f"stage {stage}: {Path(command[0]).name} exited with status {proc.returncode}"
                f" ({last[:200]}); full log: {log_path}"
            )
        return cpu

    def run(self, stages: list[Stage]) -> list[StageRun]:
        """Run (or skip) every stage; a run with nothing to do says so."""
        self._stages = {s.name: s for s in stages}
        for stage in stages:
            unknown = [d for d in stage.deps if d not in self._stages]
            if unknown:
                raise SeqKDError(f"stage {stage.name} needs stage {unknown[0]}, which is not "
                                 "in the run")
        index = {s.name: i for i, s in enumerate(stages, start=1)}
        try:
            if self.jobs <= 1:
                runs = [self._run_stage(s, index[s.name], len(stages)) for s in stages]
            else:
                runs = self._run_parallel(stages, index)
        except BaseException:  # Ctrl-C, SIGTERM or a failed stage: stop the other stages
            for proc in list(self._procs):
                proc.terminate()
            raise
        if all(r.skipped for r in runs):
            self.say_nothing_to_do()
        return runs

    def _run_parallel(self, stages: list[Stage], index: dict[str, int]) -> list[StageRun]:
        done: dict[str, StageRun] = {}
        pending = list(stages)
        running: dict[Future, Stage] = {}

        def ready() -> list[Stage]:
            return [s for s in pending if all(d in done for d in s.deps) and all(
                a in done or a not in self._stages for a in s.after)]

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            try:
                checked: set[str] = set()  # ready stages already tested for "done before"
                while pending or running:
                    # a stage done before is skipped as soon as it is ready, in order, so that
                    # what starts next is chosen knowing it (an exclusive stage whose inputs
                    # were done must not lose its turn to a later stage); its key, once its
                    # inputs are done, does not change, so each stage is tested once
                    fresh = [s for s in ready() if s.name not in checked]
                    while fresh:
                        for stage in fresh:
                            checked.add(stage.name)
                            key = self.key(stage)
                            if self._why(stage, key) is None:
                                pending.remove(stage)
                                done[stage.name] = self._skipped(stage, self.tag(
                                    stage, index[stage.name], len(stages)), key)
                        fresh = [s for s in ready() if s.name not in checked]
                    for stage in ready():
                        alone = any(r.exclusive for r in running.values())
                        if len(running) >= self.jobs or alone:
                            break
                        if stage.exclusive and running:
                            break  # drain: later stages would starve it
                        pending.remove(stage)
                        running[pool.submit(self._run_stage, stage, index[stage.name],
                                            len(stages))] = stage
                    if not running:
                        if not pending:
                            break  # the last stages were skipped
                        raise RuntimeError(f"stages {[s.name for s in pending]} never start")
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        done[running.pop(future).name] = future.result()
            except BaseException:
                # stop the other stages' commands before the pool waits for its threads
                for future in running:
                    future.cancel()
                for proc in list(self._procs):
                    proc.terminate()
                raise
        return [done[s.name] for s in stages]
