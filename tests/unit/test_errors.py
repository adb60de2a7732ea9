"""User errors are one line (with the traceback under SEQKD_DEBUG=1); internal errors keep their
tracebacks, a missing file the tools made included; no global hook on import."""

import subprocess
import sys

import pytest

from fairseq_seqkd.cli import evaluate as evaluate_cli
from fairseq_seqkd.cli import select as select_cli
from fairseq_seqkd.cli.entry import run_main
from fairseq_seqkd.distill.nbest import NbestFormatError
from fairseq_seqkd.errors import (
    DEBUG_VARIABLE,
    SeqKDError,
    install_error_hook,
    is_fairseq_console_script,
    user_error_message,
)


def test_only_seqkd_errors_are_user_errors(tmp_path):
    assert user_error_message(NbestFormatError("a.nbest:3: bad\n  line")) == "a.nbest:3: bad line"
    with pytest.raises(FileNotFoundError) as info:
        open(tmp_path / "nope.txt")  # noqa: SIM115
    for internal in (info.value, ValueError("x"), OSError(5, "I/O error"),
                     FileNotFoundError("no name"), KeyError("k"), RuntimeError("r")):
        assert user_error_message(internal) is None


def test_a_missing_file_the_user_named_is_one_line(tmp_path, capsys):
    missing = tmp_path / "gone.txt"
    assert evaluate_cli.main(["bin", "--model", "m=m.pt", "--reference", str(missing)]) == 1
    assert capsys.readouterr().err == (
        f"seqkd-evaluate: error: cannot read {missing}: No such file or directory\n")


def test_an_internal_missing_file_keeps_its_traceback(tmp_path):
    def internal(_argv):
        open(tmp_path / "a-file-the-tool-made.json")  # noqa: SIM115

    with pytest.raises(FileNotFoundError):
        run_main("seqkd-x", internal, [])


def test_seqkd_debug_shows_the_traceback_behind_a_one_line_error(monkeypatch, capsys):
    def bad_input(_argv):
        raise SeqKDError("--foo: bad value")

    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    assert run_main("seqkd-x", bad_input, []) == 1
    assert capsys.readouterr().err == "seqkd-x: error: --foo: bad value\n"
    monkeypatch.setenv(DEBUG_VARIABLE, "1")
    assert run_main("seqkd-x", bad_input, []) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Traceback (most recent call last):" and "in bad_input" in "\n".join(err)
    assert err[-2] == "fairseq_seqkd.errors.SeqKDError: --foo: bad value"
    assert err[-1] == "seqkd-x: error: --foo: bad value"


def test_seqkd_debug_in_the_fairseq_cli_hook(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: seen.append(exc))
    install_error_hook()
    try:
        raise SeqKDError("--teacher-path: t.pt does not exist")
    except SeqKDError as exc:
        error = exc
    line = "fairseq-seqkd: error: --teacher-path: t.pt does not exist\n"
    monkeypatch.setenv(DEBUG_VARIABLE, "0")
    sys.excepthook(SeqKDError, error, error.__traceback__)
    assert capsys.readouterr().err == line
    monkeypatch.setenv(DEBUG_VARIABLE, "1")
    sys.excepthook(SeqKDError, error, error.__traceback__)
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith(line)
    internal = RuntimeError("internal")
    sys.excepthook(RuntimeError, internal, None)
    assert seen == [(RuntimeError, internal, None)]  # the previous hook, with its traceback


@pytest.mark.parametrize("exc", [ValueError("internal"), OSError(28, "No space left")])
def test_run_main_lets_internal_errors_keep_their_traceback(exc):
    def broken(_argv):
        raise exc

    with pytest.raises(type(exc)):
        run_main("seqkd-x", broken, [])


def test_seqkd_select_internal_value_error_is_not_a_user_error(tmp_path, monkeypatch):
    """It used to pass ValueError as a user error: a bug in selection read as bad input."""
    nbest = tmp_path / "n.nbest"
    nbest.write_text("0\t0\t-1.0\ta b\n", encoding="utf-8")
    ref = tmp_path / "ref.txt"
    ref.write_text("a b\n", encoding="utf-8")

    def broken(*_args, **_kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(select_cli, "select_files", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        select_cli.main(["--nbest", str(nbest), "--reference", str(ref),
                         "--output", str(tmp_path / "out")])


@pytest.mark.parametrize("args,message", [
    (["--max-len-ratio", "0.5", "--source", "{ref}"], "--max-len-ratio must be >= 1, got 0.5"),
    (["--remove-bpe", ""], "--remove-bpe: the BPE marker must not be empty"),
])
def test_seqkd_select_option_errors_stay_one_line(tmp_path, capsys, args, message):
    nbest = tmp_path / "n.nbest"
    nbest.write_text("0\t0\t-1.0\ta b\n", encoding="utf-8")
    ref = tmp_path / "ref.txt"
    ref.write_text("a b\n", encoding="utf-8")
    argv = [a.format(ref=ref) for a in args]
    assert select_cli.main(["--nbest", str(nbest), "--reference", str(ref), *argv,
                            "--output", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == f"seqkd-select: error: {message}\n"


@pytest.mark.parametrize("argv0,expected", [
    ("/venv/bin/fairseq-train", True),
    ("fairseq-generate", True),
    ("/venv/lib/python3.11/site-packages/fairseq_cli/train.py", True),  # python -m
    ("/venv/bin/pytest", False),
    ("-c", False),
    ("", False),
    ("/venv/bin/seqkd-select", False),
])
def test_fairseq_console_scripts_are_recognised(argv0, expected):
    assert is_fairseq_console_script(argv0) is expected


def test_importing_the_plugin_leaves_sys_excepthook_alone():
    code = "import sys, fairseq_seqkd; print(sys.excepthook is sys.__excepthook__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "True"
