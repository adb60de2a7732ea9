"""The one stage engine: a stage is done when its stamp still matches what made its outputs.

A stamp records a stage's *key*: the exact command (argument lists, or the options of an
in-process step), a content digest of every input file or directory, and the package version.
Keys hold contents, never sizes or times alone: a teacher copied in with ``cp -p``, a data-bin
re-preprocessed to the same lengths, or a fixed bug in a tool (a new version) all redo what
depends on them. :class:`StageRunner` runs :class:`Stage` s in one output directory: a stage's
inputs are its dependencies' outputs and the files it names from outside; ``stamps/<stage>.json``
is written last and ``stamps/<stage>.started.json`` marks a run in progress, so an interrupted
stage resumes (when its tool can) or is cleaned and redone, never half-reused. Commands and
their output go to ``logs/<stage>.log``, paths written as names (``$OUT`` ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .atomic import atomic_write_text, replace_synced
from .errors import SeqKDError
from .version import __version__

__all__ = [
    "PARALLELISM_OPTIONS",
    "PathNames",
    "Stage",
    "StageRun",
    "StageRunner",
    "Stamp",
    "content_digest",
    "file_sha256",
    "stage_key",
    "stages_needed",
    "without_parallelism",
]

_BLOCK = 1 << 20

# (device, inode, size, mtime_ns, ctime_ns) -> digest. ctime moves on every write and on
# every utime() call, and cannot be set back, so a file rewritten in place with its mtime
# restored is still rehashed.
_memo: dict[tuple[int, int, int, int, int], str] = {}


def _identity(stat: os.stat_result) -> tuple[int, int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (memoised on the file's identity)."""
    stat = os.stat(path)
    identity = _identity(stat)
    known = _memo.get(identity)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    value = digest.hexdigest()
    # a file changed while it was read gets no memo entry: its next digest reads it again
    if _identity(os.stat(path)) == identity:
        _memo[identity] = value
    return value


def _is_hidden(name: str) -> bool:
    return name.startswith(".")  # temp files of atomic writes, editors' and OS droppings


def content_digest(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, or of a directory's files: their relative paths and
    contents, in sorted order (hidden files, such as unfinished temporary files, left out)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in sorted(f for f in files if not _is_hidden(f)):
            full = Path(root) / name
            digest.update(full.relative_to(path).as_posix().encode("utf-8") + b"\0")
            digest.update(file_sha256(full).encode("ascii") + b"\n")
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists), so a key compares equal to the
    stamp it was written to."""
    return json.loads(json.dumps(value, sort_keys=True))


def stage_key(
    command: Any,
    inputs: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike] = (),
    version: str = __version__,
) -> dict[str, Any]:
    """What a stage's outputs depend on: its command (any JSON value: argument lists, an
    in-process step's options), the content digest of each input (named by ``inputs``' keys,
    or by the paths as given) and the package version."""
    if not isinstance(inputs, Mapping):
        inputs = {os.fspath(p): p for p in inputs}
    digests = {name: content_digest(p) for name, p in sorted(inputs.items())}
    return _plain({"command": command, "inputs": digests, "version": version})


def _difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Why a stamp no longer matches, in a few words: what of the key changed."""
    if old.get("version") != new.get("version"):
        return f"package version {old.get('version', 'unknown')} -> {new.get('version')}"
    if old.get("command") != new.get("command"):
        return "command changed"
    before, after = old.get("inputs") or {}, new.get("inputs") or {}
    changed = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    if changed:
        return f"input {changed[0]} changed" + (
            f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
    extra = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return f"{extra[0]} changed" if extra else "unchanged"


class Stamp:
    """The record of a finished stage: its key and what the stage reports about itself
    (timings, a summary), written atomically once every output exists."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> dict[str, Any] | None:
        try:
            stamp = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):  # none yet, or not JSON: not done
            return None
        return stamp if isinstance(stamp, dict) else None

    def matches(self, key: Mapping[str, Any], outputs: Sequence[str | os.PathLike] = ()) -> bool:
        """Whether the stage is done: the same key, and every output still there."""
        stamp = self.read()
        return (stamp is not None and stamp.get("key") == _plain(dict(key))
                and all(os.path.exists(p) for p in outputs))

    def why_redo(self, key: Mapping[str, Any], outputs: Sequence[str | os.PathLike] = ()) -> str:
        """A few words on why the stage runs: first run, what of its key changed, or which
        output is missing."""
        stamp = self.read()
        if stamp is None:
            return "first run"
        if stamp.get("key") != _plain(dict(key)):
            return _difference(stamp.get("key") or {}, _plain(dict(key)))
        missing = [os.fspath(p) for p in outputs if not os.path.exists(p)]
        return f"output {missing[0]} is missing" if missing else "done"

    def write(self, key: Mapping[str, Any], **record: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"key": _plain(dict(key)), **record},
                                                indent=1, sort_keys=True) + "\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


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
    func: Callable[[TextIO], None] | None = None  # in-process step (after the commands)
    func_key: dict[str, Any] | None = None  # what ``func`` does, for the key
    mkdirs: list[Path] = field(default_factory=list)  # created before the commands run
    # per command: a file that receives its stdout and stderr (written to a temporary name
    # and renamed when the command succeeds) instead of the stage log
    captures: list[Path | None] = field(default_factory=list)
    # runs alone (decoding-speed measurements), even with jobs > 1
    exclusive: bool = False
    # files read from outside the output directory (a corpus): their content is in the key
    inputs: list[Path] = field(default_factory=list)


@dataclass
class StageRun:
    name: str
    skipped: bool
    seconds: float  # wall time of this run; for a skipped stage, of the run that made it
    cpu_seconds: float = 0.0  # user + system time of the stage's processes (load-independent)
    reason: str = ""  # why it ran (first run, what of its key changed) or "done before"


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
    ones at once (an exclusive stage alone), each command with ``threads`` CPU threads."""

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

    def key(self, stage: Stage) -> dict[str, Any]:
        """The stage's commands (parallelism blanked, paths named), the content of its
        dependencies' outputs and of its own ``inputs``, and the package version."""
        inputs: dict[str, Path] = {}
        for dep in stage.deps:
            for path in self._stages[dep].outputs:
                inputs[self.portable(str(path))] = path
        for path in stage.inputs:
            inputs[self.portable(str(path))] = path
        command = {"commands": self.portable(without_parallelism(stage.commands)),
                   "func": self.portable(stage.func_key)}
        return stage_key(command, inputs, self.version)

    def _say(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def _env(self) -> dict[str, str]:
        """Environment of a command: ``threads`` CPU threads (small models on a few cores run
        far faster as one thread per process, several processes at once, than as one
        process with several OpenMP threads, which spin and stall when a core is busy)."""
        n = str(self.threads)
        return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n,
                "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}

    @staticmethod
    def _tag(stage: Stage, index: int, total: int) -> str:
        return f"[{index:2d}/{total}] {stage.name:<16}"

    def _skip(self, stage: Stage, tag: str, key: dict[str, Any]) -> StageRun | None:
        """The run record of a stage done before with this key, said so; None otherwise."""
        stamp = Stamp(self.stamp_path(stage.name))
        if not stamp.matches(key, stage.outputs):
            return None
        record = stamp.read() or {}
        seconds = record.get("seconds", 0.0)
        self._say(f"{tag} skipped: done before in {seconds:.0f}s, with the same commands, "
                  f"{len(key['inputs'])} input(s) and version {key['version']} "
                  f"({stage.description})")
        return StageRun(stage.name, True, seconds, record.get("cpu_seconds", 0.0), "done before")

    def _run_stage(self, stage: Stage, index: int, total: int) -> StageRun:
        tag = self._tag(stage, index, total)
        key = self.key(stage)
        skipped = self._skip(stage, tag, key)
        if skipped is not None:
            return skipped
        stamp = Stamp(self.stamp_path(stage.name))
        started = Stamp(self.stamp_path(stage.name, started=True))
        resumable = stage.resumes and started.matches(key)
        if started.read() is None:
            why = stamp.why_redo(key, stage.outputs)
        elif resumable:
            why = "resuming an interrupted run"
        else:  # stale partial outputs: start afresh
            why = ("an interrupted run, redone from clean"
                   + (f": {started.why_redo(key)}" if not started.matches(key) else ""))
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
        log_path = self.out / "logs" / f"{stage.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._say(f"{tag} started {time.strftime('%H:%M:%S')}: {stage.description} ({why})"
                  f"  [log: {os.path.relpath(log_path)}]")
        begin, cpu = time.perf_counter(), 0.0
        with open(log_path, "a", encoding="utf-8") as log:
            for i, command in enumerate(stage.commands):
                capture = stage.captures[i] if i < len(stage.captures) else None
                cpu += self._run_command(command, log, log_path, stage.name, capture)
            if stage.func is not None:
                before = time.process_time()
                stage.func(log)
                cpu += time.process_time() - before
        seconds = time.perf_counter() - begin
        missing = [str(p) for p in stage.outputs if not p.exists()]
        if missing:
            raise SeqKDError(f"stage {stage.name} finished but {missing[0]} is missing; "
                             f"see {log_path}")
        stamp.write(key, stage=stage.name, seconds=round(seconds, 1),
                    cpu_seconds=round(cpu, 1), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        started.remove()
        self._say(f"{tag} done in {seconds:.0f}s (CPU {cpu:.0f}s)")
        return StageRun(stage.name, False, seconds, cpu, why)

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
        self.out.mkdir(parents=True, exist_ok=True)
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
            self._say("nothing to do: every stage done before")
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
                            tag = self._tag(stage, index[stage.name], len(stages))
                            skipped = self._skip(stage, tag, self.key(stage))
                            if skipped is not None:
                                pending.remove(stage)
                                done[stage.name] = skipped
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
