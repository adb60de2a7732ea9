"""A seqkd tool's --help is quiet: fairseq's import no longer asks for tensorboardX."""

from ..conftest import run_cli


def test_seqkd_select_help_writes_nothing_on_stderr():
    proc = run_cli("seqkd-select", "--help")
    assert proc.stderr == ""
    assert proc.stdout.startswith("usage: seqkd-select")
