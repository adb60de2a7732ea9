"""User errors are one line; internal errors keep their tracebacks; no global hook on import."""

import subprocess
import sys

import pytest

from fairseq_seqkd.cli import select as select_cli
from fairseq_seqkd.cli.entry import run_main
from fairseq_seqkd.distill.nbest import NbestFormatError
from fairseq_seqkd.errors import is_fairseq_console_script, user_error_message


def test_only_seqkd_errors_and_named_missing_files_are_user_errors(tmp_path):
    assert user_error_message(NbestFormatError("a.nbest:3: bad\n  line")) == "a.nbest:3: bad line"
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError) as info:
        open(missing)  # noqa: SIM115
    assert user_error_message(info.value) == f"No such file or directory: {missing}"
    for internal in (ValueError("x"), OSError(5, "I/O error"), FileNotFoundError("no name"),
                     KeyError("k"), RuntimeError("r")):
        assert user_error_message(internal) is None


def test_run_main_prints_user_errors_in_one_line(tmp_path, capsys):
    def missing(_argv):
        open(tmp_path / "gone.txt")  # noqa: SIM115

    assert run_main("seqkd-x", missing, []) == 1
    assert capsys.readouterr().err == (
        f"seqkd-x: error: No such file or directory: {tmp_path / 'gone.txt'}\n"
    )


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

    monkeypatch.setattr(select_cli, "select_targets", broken)
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
