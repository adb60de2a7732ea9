"""examples/multi30k/get_data.sh against a local file:// copy of the Multi30k .gz files.

Never downloads: the base URL points at a folder this test fills. The real files come from
../shared/data/multi30k-en-de when it exists (the script must reproduce them bit for bit and
accept them by the sums it knows); the refusals need no real data.
"""

import gzip
import os
import subprocess
from pathlib import Path

import pytest

from ..conftest import REPO

SCRIPT = REPO / "examples" / "multi30k" / "get_data.sh"
SHARED = REPO.parent / "shared" / "data" / "multi30k-en-de"
# the repository's file -> the name get_data.sh writes
NAMES = {
    f"{split}.{lang}.gz": f"{ours}.{side}"
    for split, ours in [("train", "train"), ("val", "valid"), ("test_2016_flickr", "test"),
                        ("test_2017_flickr", "test_2017_flickr"),
                        ("test_2018_flickr", "test_2018_flickr")]
    for lang, side in [("en", "src"), ("de", "tgt")]
}
needs_shared = pytest.mark.skipif(
    not (SHARED / "SHA256SUMS").exists(),
    reason=f"{SHARED} is absent: the real Multi30k files are needed to build the local copy",
)


def get_data(mirror: Path, dest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), str(dest)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "MULTI30K_URL": mirror.as_uri()},
    )


def make_mirror(mirror: Path, texts: dict[str, bytes]) -> Path:
    mirror.mkdir()
    for gz, name in NAMES.items():
        (mirror / gz).write_bytes(gzip.compress(texts[name]))
    return mirror


def test_the_known_sums_are_the_shared_corpus_sums():
    """The script's table against the sums of the corpus the benchmark was run on."""
    script = SCRIPT.read_text(encoding="utf-8")
    table = {fields[1]: fields[2].rstrip('"') for line in script.splitlines()
             if len(fields := line.split()) == 3 and fields[0] in NAMES}
    assert set(table) == set(NAMES.values())
    if (SHARED / "SHA256SUMS").exists():
        shared = dict(reversed(line.split()) for line in
                      (SHARED / "SHA256SUMS").read_text().splitlines() if line.strip())
        assert table == shared


@needs_shared
def test_downloads_decompresses_and_checks_into_the_benchmark_layout(tmp_path):
    texts = {name: (SHARED / name).read_bytes() for name in NAMES.values()}
    mirror = make_mirror(tmp_path / "mirror", texts)
    dest = tmp_path / "multi30k-en-de"
    proc = get_data(mirror, dest)
    assert proc.returncode == 0, proc.stderr
    assert "10 files downloaded" in proc.stdout
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES.values())  # no temp left
    for name, text in texts.items():
        assert (dest / name).read_bytes() == text, name
    # a second run checks what is there and downloads nothing: it works without the mirror
    for gz in mirror.iterdir():
        gz.unlink()
    again = get_data(mirror, dest)
    assert again.returncode == 0, again.stderr
    assert "0 files downloaded, 10 already there" in again.stdout


@needs_shared
def test_a_corrupted_file_is_refused_and_the_checked_ones_are_kept(tmp_path):
    texts = {name: (SHARED / name).read_bytes() for name in NAMES.values()}
    texts["test_2017_flickr.tgt"] = texts["test_2017_flickr.tgt"].replace(b"Ein", b"Eine", 1)
    dest = tmp_path / "out"
    proc = get_data(make_mirror(tmp_path / "mirror", texts), dest)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "test_2017_flickr.de.gz" in proc.stderr, proc.stderr
    assert not (dest / "test_2017_flickr.tgt").exists()
    assert (dest / "test_2017_flickr.src").read_bytes() == texts["test_2017_flickr.src"]
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # its temp folder is gone


def test_made_up_content_is_refused_with_one_line_naming_the_file(tmp_path):
    texts = {name: f"made-up {name}\n".encode() for name in NAMES.values()}
    dest = tmp_path / "out"
    proc = get_data(make_mirror(tmp_path / "mirror", texts), dest)
    assert proc.returncode == 1
    assert proc.stderr.startswith("get_data.sh: error: train.en.gz: SHA256")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert list(dest.iterdir()) == []  # nothing unchecked is left behind


def test_a_file_in_place_with_another_sum_is_not_trusted(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "train.src").write_text("not the corpus\n")
    texts = {name: b"made-up\n" for name in NAMES.values()}
    proc = get_data(make_mirror(tmp_path / "mirror", texts), dest)
    assert proc.returncode == 1 and "train.en.gz" in proc.stderr  # fetched again and checked
    assert (dest / "train.src").read_text() == "not the corpus\n"  # never overwritten unchecked


def test_a_missing_file_names_its_url_and_a_non_gzip_file_its_name(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    proc = get_data(mirror, tmp_path / "a")
    assert proc.returncode == 1
    assert proc.stderr == f"get_data.sh: error: cannot download {mirror.as_uri()}/train.en.gz\n"
    (mirror / "train.en.gz").write_text("plain text, not gzip\n")
    proc = get_data(mirror, tmp_path / "b")
    assert proc.returncode == 1
    assert proc.stderr == "get_data.sh: error: train.en.gz is not a gzip file\n"
