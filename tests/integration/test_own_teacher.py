"""README's "Distill your own teacher" commands run as written on the tiny corpus and teacher.

The block is read from README.md itself (the fenced block after the ``<!-- own-teacher``
comment), so the manual and this test cannot drift apart. It runs with bash in a directory laid
out as it assumes: ``data-bin`` and ``teacher/checkpoint_best.pt`` are links to the test
suite's tiny data-bin and teacher, ``test.src`` its raw test source. The only change made to the
commands is ``--max-epoch 1``: the point is that every command and flag works, not the BLEU.
"""

import os
import re
import subprocess
import sys

import pytest

from ..conftest import REPO

pytestmark = pytest.mark.slow

MARKER = "<!-- own-teacher"


def own_teacher_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert MARKER in readme, f"README.md has no {MARKER} block"
    match = re.search(r"```bash\n(.*?)```", readme.split(MARKER, 1)[1], flags=re.S)
    assert match, f"no ```bash block after {MARKER}"
    return match.group(1)


def test_block_goes_from_teacher_to_translations():
    block = own_teacher_block()
    tools = [line.split()[0] for line in block.replace("\\\n", " ").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert tools == ["seqkd-build", "fairseq-train", "seqkd-export", "seqkd-translate"]
    assert "--format ctranslate2" in block and len(re.findall(r"--max-epoch \d+", block)) == 1


def test_readme_commands_distill_export_and_translate(toy_bin, toy_raw, teacher_ckpt, tmp_path):
    (tmp_path / "data-bin").symlink_to(toy_bin)
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "checkpoint_best.pt").symlink_to(teacher_ckpt)
    (tmp_path / "test.src").symlink_to(toy_raw / "test.src")
    script = re.sub(r"--max-epoch \d+", "--max-epoch 1", own_teacher_block())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"

    distilled = tmp_path / "distilled-bin"
    assert (distilled / "train.src-tgt.tgt.bin").stat().st_size > 0
    for name in ("dict.src.txt", "dict.tgt.txt"):  # the teacher's own dictionaries
        assert (distilled / name).read_bytes() == (toy_bin / name).read_bytes()
    assert (tmp_path / "student" / "checkpoint_best.pt").is_file()
    assert (tmp_path / "student-ct2" / "seqkd-export.json").is_file()
    source = (tmp_path / "test.src").read_text(encoding="utf-8")
    translations = (tmp_path / "test.hyp").read_text(encoding="utf-8")
    assert translations.count("\n") == source.count("\n") == 40  # one line per input line
