"""The Python examples of README.md and docs/ run as written, in a directory laid out as they
assume."""

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

from ..conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def python_block(heading: str, page: str = "README.md") -> str:
    """The first ```python block after ``heading`` in ``page``."""
    text = (REPO / page).read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def run_block(code: str, directory: Path) -> str:
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    return out.getvalue()


def test_python_api_example_builds_distilled_data(toy_bin, teacher_ckpt, tmp_path):
    (tmp_path / "data-bin").symlink_to(toy_bin)
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "checkpoint_best.pt").symlink_to(teacher_ckpt)
    printed = run_block(python_block("## Python API"), tmp_path)
    assert "distilled data-bin ready" in printed
    assert (tmp_path / "data-kd" / "train.src-tgt.tgt.bin").stat().st_size > 0


def test_deploy_example_translates(teacher_ckpt, tmp_path):
    run_cli("seqkd-export", "--input", teacher_ckpt, "--format", "ctranslate2", "--output",
            tmp_path / "student-ct2")
    printed = run_block(python_block("## seqkd-translate", "docs/deployment.md"), tmp_path)
    outputs = eval(printed)  # the example prints the list of translations
    assert isinstance(outputs, list) and len(outputs) == 2 and outputs[1] == ""
