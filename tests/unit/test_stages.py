"""The stage engine: keys by content, version and command; resume or redo; the runner's order."""

import hashlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fairseq_seqkd.digests import content_digest
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.stages import PathNames, Stage, StageRunner, stages_needed
from fairseq_seqkd.stamps import Stamp, stage_key


def runner(out: Path, version: str = "1.0", jobs: int = 1, threads: int = 1) -> StageRunner:
    return StageRunner(out, PathNames({str(out): "$OUT"}), threads=threads, jobs=jobs,
                       stream=io.StringIO(), version=version)


def said(run: StageRunner) -> str:
    return run.stream.getvalue()


def upper(src: Path, dst: Path) -> list[str]:
    """A command that reads ``src`` and writes ``dst`` (its text upper-cased)."""
    return ["sh", "-c", f"tr a-z A-Z < '{src}' > '{dst}'"]


def chain(out: Path, teacher: Path, gold: Path) -> list[Stage]:
    """build reads the teacher (a file outside the output directory), student reads build's
    output; baseline reads only the gold data."""
    return [
        Stage("build", "distilled data",
              [["cp", str(teacher), str(out / "distilled.txt")]],
              [out / "distilled.txt"], inputs=[teacher]),
        Stage("student", "student on the distilled data",
              [["cp", str(out / "distilled.txt"), str(out / "student.txt")]],
              [out / "student.txt"], deps=["build"]),
        Stage("baseline", "baseline on the gold data", [upper(gold, out / "baseline.txt")],
              [out / "baseline.txt"], inputs=[gold]),
    ]


def ran(runs) -> list[str]:
    return [r.name for r in runs if not r.skipped]


@pytest.fixture
def setup(tmp_path):
    out, teacher, gold = tmp_path / "out", tmp_path / "teacher.pt", tmp_path / "gold.txt"
    teacher.write_bytes(b"teacher weights\n")
    gold.write_bytes(b"gold\n")
    first = runner(out).run(chain(out, teacher, gold))
    assert ran(first) == ["build", "student", "baseline"]
    assert [r.reason for r in first] == ["first run"] * 3
    return out, teacher, gold


def same_size_other_bytes(path: Path, in_place: bool) -> None:
    """``path`` with other bytes of the same size and its old modification time: what a size
    and mtime key takes for the same file."""
    stat = path.stat()
    data = path.read_bytes().replace(b"weights", b"WEIGHTS")
    assert len(data) == stat.st_size
    if in_place:  # same inode
        with open(path, "r+b") as handle:
            handle.write(data)
    else:  # a new file moved over it, like cp -p of another teacher
        tmp = path.with_name("other.pt")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


@pytest.mark.parametrize("in_place", [False, True])
def test_a_teacher_with_other_bytes_of_the_same_size_and_mtime_reruns_its_dependents(
        setup, in_place):
    out, teacher, gold = setup
    same_size_other_bytes(teacher, in_place)
    again = runner(out)
    runs = again.run(chain(out, teacher, gold))
    assert ran(runs) == ["build", "student"]  # the baseline does not read the teacher
    assert runs[0].reason == f"input {teacher} changed"
    assert runs[1].reason == "input $OUT/distilled.txt changed"
    assert (out / "student.txt").read_text() == "teacher WEIGHTS\n"


def test_a_dependency_output_rewritten_in_place_reruns_what_reads_it(setup):
    """A done stage's output changed behind the engine's back: the stage itself still counts
    as done (same key, output there), but every stage that reads the output runs again."""
    out, teacher, gold = setup
    same_size_other_bytes(out / "distilled.txt", in_place=True)
    runs = runner(out).run(chain(out, teacher, gold))
    assert ran(runs) == ["student"]
    assert (out / "student.txt").read_text() == "teacher WEIGHTS\n"


def test_a_dependency_redone_to_the_same_bytes_does_not_rerun_its_dependents(setup):
    out, teacher, gold = setup
    stages = chain(out, teacher, gold)
    stages[0] = replace(stages[0], commands=[*stages[0].commands, ["true"]])  # a new command
    runs = runner(out).run(stages)
    assert ran(runs) == ["build"] and runs[0].reason == "command changed"
    # upper-cased, a teacher with other bytes can give the same data: the student is done
    stages[0] = replace(stages[0], commands=[upper(teacher, out / "distilled.txt")])
    assert ran(runner(out).run(stages)) == ["build", "student"]
    same_size_other_bytes(teacher, in_place=True)
    runs = runner(out).run(stages)
    assert ran(runs) == ["build"] and runs[0].reason == f"input {teacher} changed"


def test_a_changed_version_reruns_every_stage(setup):
    out, teacher, gold = setup
    newer = runner(out, version="1.1")
    runs = newer.run(chain(out, teacher, gold))
    assert ran(runs) == ["build", "student", "baseline"]
    assert {r.reason for r in runs} == {"package version 1.0 -> 1.1"}
    assert "(package version 1.0 -> 1.1)" in said(newer)


def test_an_unchanged_rerun_does_nothing_and_says_so(setup):
    out, teacher, gold = setup
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    again = runner(out)
    runs = again.run(chain(out, teacher, gold))
    assert ran(runs) == []
    text = said(again)
    for name in ("build", "student", "baseline"):
        assert (f"{name:<16} skipped: done before in 0s, with the same commands, 1 input(s) "
                "and version 1.0") in text
    assert text.splitlines()[-1] == "nothing to do: every stage done before"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == before


def test_a_file_anywhere_in_a_directory_output_is_in_its_dependents_keys(tmp_path):
    """A data-bin is read whole: its stage names the directory as an output."""
    data = tmp_path / "data-bin"
    stages = [
        Stage("prep", "data-bin", [["sh", "-c", 'echo t > "$0/train.bin"; echo v > "$0/valid.bin"',
                                    str(data)]], [data / "train.bin", data], mkdirs=[data]),
        Stage("train", "reads the data-bin", [["cp", str(data / "valid.bin"),
                                               str(tmp_path / "model")]],
              [tmp_path / "model"], deps=["prep"]),
    ]
    assert ran(runner(tmp_path).run(stages)) == ["prep", "train"]
    (data / "valid.bin").write_text("w\n")
    runs = runner(tmp_path).run(stages)
    assert ran(runs) == ["train"] and runs[1].reason == "input $OUT/data-bin changed"


def test_a_missing_output_redoes_its_stage(setup):
    out, teacher, gold = setup
    (out / "baseline.txt").unlink()
    runs = runner(out).run(chain(out, teacher, gold))
    assert ran(runs) == ["baseline"]
    assert runs[2].reason == f"output {out / 'baseline.txt'} is missing"


def test_a_moved_output_directory_is_still_done(setup, tmp_path):
    out, teacher, gold = setup
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    assert ran(runner(moved).run(chain(moved, teacher, gold))) == []


def test_thread_and_worker_counts_are_not_in_the_key_other_options_are(tmp_path):
    """A teacher trained in a 2-thread run must not be retrained by the 1-thread run."""
    src, made = tmp_path / "in.txt", tmp_path / "made.txt"
    src.write_text("x")

    def stage(*options: str) -> Stage:
        return Stage("copy", "a command with a parallelism option",
                     [["sh", "-c", 'cp "$0" "$1"', str(src), str(made), *options]], [made])
    assert ran(runner(tmp_path, threads=2).run([stage("--workers", "2")])) == ["copy"]
    assert ran(runner(tmp_path).run([stage("--workers", "1")])) == []
    assert ran(runner(tmp_path).run([stage("--workers", "1", "--beam", "5")])) == ["copy"]


def test_a_key_holding_a_tuple_is_done_when_read_back(tmp_path):
    """The stamp is JSON: a tuple in the key reads back as a list, and the stage is done."""
    made = tmp_path / "made.txt"
    stage = Stage("tuple", "a stage keyed by a tuple", [], [made],
                  func=lambda log: made.write_text("x"), func_key={"batches": (1, 64)})
    assert ran(runner(tmp_path).run([stage])) == ["tuple"]
    assert ran(runner(tmp_path).run([stage])) == []


def test_stage_key_digests_directories_by_content_and_names(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.bin").write_bytes(b"a")
    (data / ".a.bin.tmp").write_bytes(b"an unfinished temporary file")
    key = stage_key(["cmd"], {"data": data}, version="1")
    assert key == {"command": ["cmd"], "inputs": {"data": content_digest(data)}, "version": "1"}
    (data / ".a.bin.tmp").write_bytes(b"another")  # hidden files are left out
    assert stage_key(["cmd"], {"data": data}, version="1") == key
    (data / "a.bin").rename(data / "b.bin")  # the same bytes under another name
    assert stage_key(["cmd"], {"data": data}, version="1") != key


def test_a_command_stages_stamp_written_by_the_previous_engine_still_skips(setup):
    """The stamps of a demo or benchmark run made by an earlier version of the engine, written
    here as it wrote them: its stages are still done."""
    out, teacher, gold = setup
    for stage in (out / "stamps").iterdir():
        stage.unlink()

    def sha256(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    commands = {"build": [["cp", str(teacher), "$OUT/distilled.txt"]],
                "student": [["cp", "$OUT/distilled.txt", "$OUT/student.txt"]],
                "baseline": [["sh", "-c", f"tr a-z A-Z < '{gold}' > '$OUT/baseline.txt'"]]}
    inputs = {"build": {str(teacher): sha256(teacher)},
              "student": {"$OUT/distilled.txt": sha256(out / "distilled.txt")},
              "baseline": {str(gold): sha256(gold)}}
    for name in commands:
        stamp = {"key": {"command": {"commands": commands[name], "func": None},
                         "inputs": inputs[name], "version": "1.0"},
                 "stage": name, "seconds": 12.3, "cpu_seconds": 4.5,
                 "finished": "2024-05-01 10:00:00"}
        (out / "stamps" / f"{name}.json").write_text(
            json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    again = runner(out)
    assert ran(again.run(chain(out, teacher, gold))) == []
    assert "build            skipped: done before in 12s" in said(again)
    assert said(again).splitlines()[-1] == "nothing to do: every stage done before"


# ------------------------------------------------------------------ in-process stages


def in_process(out: Path, beam: int = 5, check=None) -> Stage:
    """A step keyed by its options, that returns a summary and records its output's content."""
    made = out / "made.txt"

    def step(log) -> dict:
        made.write_text(f"beam {beam}\n")
        return {"beam": beam, "lines": [1]}
    return Stage("step", "an in-process step", [], [made], func=step,
                 options={"beam": beam, "nbest": 2}, check=check, record_outputs=True)


def test_an_in_process_stage_keeps_its_summary_and_names_changed_options(tmp_path):
    assert [r.summary for r in runner(tmp_path).run([in_process(tmp_path)])] == [
        {"beam": 5, "lines": [1]}]
    stamp = json.loads((tmp_path / "stamps" / "step.json").read_text())
    assert stamp["key"]["command"] == {"beam": 5, "nbest": 2}
    assert stamp["outputs"] == {"made.txt": content_digest(tmp_path / "made.txt")}
    again = runner(tmp_path).run([in_process(tmp_path)])
    assert ran(again) == [] and again[0].summary == {"beam": 5, "lines": [1]}
    runs = runner(tmp_path).run([in_process(tmp_path, beam=4)])
    assert runs[0].reason == "options changed (beam: 5 -> 4)"


def test_a_recorded_output_changed_or_gone_redoes_its_stage(tmp_path):
    runner(tmp_path).run([in_process(tmp_path)])
    (tmp_path / "made.txt").write_text("edited\n")
    runs = runner(tmp_path).run([in_process(tmp_path)])
    assert runs[0].reason == "output made.txt changed"
    (tmp_path / "made.txt").unlink()
    assert runner(tmp_path).run([in_process(tmp_path)])[0].reason == "output made.txt is missing"
    assert (tmp_path / "made.txt").read_text() == "beam 5\n"


def test_a_check_refuses_before_anything_is_written(tmp_path):
    def refuse():
        raise SeqKDError("bad input")
    out = tmp_path / "out"
    with pytest.raises(SeqKDError, match="bad input"):
        runner(out).run([in_process(out, check=refuse)])
    assert not out.exists()


# ------------------------------------------------------------------ interrupted stages

REFUSE_EXISTING = ("import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
                   "sys.exit(f'{p} exists') if p.exists() else p.write_text('d')")


def interrupted(tmp_path: Path, resumes: bool) -> tuple[StageRunner, Stage, Path]:
    """A stage that refuses an existing output (as fairseq-preprocess refuses a destination
    with a dictionary), interrupted by an earlier run after its output was written, before
    its stamp: a started stamp with its key, no done stamp."""
    run = runner(tmp_path)
    made = tmp_path / "dest" / "dict.txt"
    stage = Stage("prep", "refuses an existing output",
                  [[sys.executable, "-c", REFUSE_EXISTING, str(made)]], [made],
                  clean=[made.parent], mkdirs=[made.parent], resumes=resumes)
    Stamp(run.stamp_path("prep", started=True)).write(run.key(stage))
    made.parent.mkdir()
    made.write_text("partial")
    return run, stage, made


def test_an_interrupted_stage_with_the_same_key_resumes(tmp_path):
    run, stage, made = interrupted(tmp_path, resumes=True)
    # resuming keeps the partial output, which this command refuses
    with pytest.raises(SeqKDError, match="exists"):
        run.run([stage])
    assert "(resuming an interrupted run)" in said(run)
    assert made.read_text() == "partial"


def test_an_interrupted_stage_that_cannot_resume_is_cleaned_and_redone(tmp_path):
    run, stage, made = interrupted(tmp_path, resumes=False)
    runs = run.run([stage])
    assert ran(runs) == ["prep"] and made.read_text() == "d"
    assert runs[0].reason == "an interrupted run, redone from clean"
    assert not run.stamp_path("prep", started=True).exists()


def test_an_interrupted_stage_whose_key_changed_is_cleaned_and_redone(tmp_path):
    run, stage, made = interrupted(tmp_path, resumes=True)
    changed = replace(stage, commands=[[*stage.commands[0], "--new-option"]])
    runs = run.run([changed])
    assert made.read_text() == "d"
    assert runs[0].reason == "an interrupted run, redone from clean: command changed"


def test_a_failed_command_leaves_no_stamp_and_names_its_log(tmp_path):
    run = runner(tmp_path)
    stage = Stage("fail", "fails", [["sh", "-c", "echo broken >&2; exit 3"]],
                  [tmp_path / "never"])
    with pytest.raises(SeqKDError, match=r"stage fail: sh exited with status 3 \(broken\)"):
        run.run([stage])
    assert not run.stamp_path("fail").exists()
    assert run.stamp_path("fail", started=True).exists()  # the next run knows it was cut


# ------------------------------------------------------------------ the runner's order


class Trace:
    """Stages with in-process steps that log their order to ``trace``."""

    def __init__(self, out: Path):
        self.out, self.trace = out, []

    def stage(self, name: str, seconds: float = 0.05, deps=(), after=(),
              exclusive: bool = False) -> Stage:
        made = self.out / f"{name}.txt"

        def run(log, name=name, made=made):
            self.trace.append(f"{name}+")
            time.sleep(seconds)
            self.trace.append(f"{name}-")
            made.write_text(name)
        return Stage(name, name, [], [made], deps=list(deps), after=list(after), func=run,
                     func_key={"name": name}, exclusive=exclusive)

    def started(self) -> list[str]:
        return [t[:-1] for t in self.trace if t.endswith("+")]


def abcd(trace: Trace) -> list[Stage]:
    """a -> b -> c, and d (independent of them) after c."""
    return [trace.stage("a"), trace.stage("b", deps=["a"]), trace.stage("c", deps=["b"]),
            trace.stage("d", after=["c"])]


@pytest.mark.parametrize("jobs", [1, 2])
def test_only_runs_the_named_stages_and_what_they_need_and_after_orders_only(tmp_path, jobs):
    trace = Trace(tmp_path)
    runner(tmp_path, jobs=jobs).run(stages_needed(abcd(trace), ("b", "d")))
    # b needs a; d runs after c only when c is in the run, so c is not pulled in
    assert sorted(trace.started()) == ["a", "b", "d"]
    assert trace.started().index("a") < trace.started().index("b")
    assert not (tmp_path / "c.txt").exists()
    trace.trace.clear()
    runner(tmp_path, jobs=jobs).run(abcd(trace))  # a, b, d done before: only c runs
    assert trace.started() == ["c"]
    fresh = Trace(tmp_path / "fresh")
    (tmp_path / "fresh").mkdir()
    runner(tmp_path / "fresh", jobs=jobs).run(abcd(fresh))
    assert fresh.started().index("c") < fresh.started().index("d")  # d still waits for c


def test_only_with_an_unknown_stage_names_the_option():
    with pytest.raises(SeqKDError, match="--only: no stage named 'z' \\(stages: a, b, c, d\\)"):
        stages_needed(abcd(Trace(Path("unused"))), ("a", "z"))


def test_a_ready_exclusive_stage_is_not_starved_by_later_stages(tmp_path):
    """a (slow), then x (exclusive, ready at once), then b: x must not wait for b."""
    trace = Trace(tmp_path)
    stages = [trace.stage("a", 0.3), trace.stage("x", 0.05, exclusive=True),
              trace.stage("b", 0.3)]
    runner(tmp_path, jobs=2).run(stages)
    assert trace.trace == ["a+", "a-", "x+", "x-", "b+", "b-"]


def test_an_exclusive_stage_whose_inputs_were_done_before_runs_first(tmp_path):
    """In a resumed run the done stages are skipped before anything starts: x's input is
    already there, so x runs before b."""
    trace = Trace(tmp_path)

    def stages() -> list[Stage]:
        return [trace.stage("d", 0.3), trace.stage("x", 0.05, deps=["d"], exclusive=True),
                trace.stage("b", 0.3)]
    runner(tmp_path, jobs=2).run(stages_needed(stages(), ("d",)))
    trace.trace.clear()
    runs = runner(tmp_path, jobs=2).run(stages())
    assert trace.trace == ["x+", "x-", "b+", "b-"]
    assert [r.name for r in runs if r.skipped] == ["d"]


def test_a_stage_needing_one_outside_the_run_is_an_error(tmp_path):
    trace = Trace(tmp_path)
    with pytest.raises(SeqKDError, match="stage b needs stage a, which is not in the run"):
        runner(tmp_path).run([trace.stage("b", deps=["a"])])


def test_commands_and_logs_name_paths_portably(tmp_path):
    out = tmp_path / "out"
    run = runner(out)
    stage = Stage("echo", "echo", [["sh", "-c", f"echo hi > '{out}/hi.txt'"]],
                  [out / "hi.txt"])
    run.run([stage])
    log = (out / "logs" / "echo.log").read_text()
    assert log.startswith("$ sh -c 'echo hi > '\"'\"'$OUT/hi.txt'") and str(tmp_path) not in log
    stamp = json.loads(run.stamp_path("echo").read_text())
    assert str(tmp_path) not in json.dumps(stamp["key"])
    assert stamp["stage"] == "echo" and stamp["seconds"] >= 0 and "cpu_seconds" in stamp
