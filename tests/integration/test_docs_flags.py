"""Every ``seqkd-*`` flag named in README.md and docs/*.md exists in that tool's ``--help``.

A flag counts when it follows a ``seqkd-*`` tool in the same shell command: in a fenced block
(continuation lines joined, comments dropped, pipelines split) or in one inline code span; and
in the first column of a table whose first header cell names the tools (``| `seqkd-build`
option | ...``). Each tool's flags are read from its own ``--help``, run in-process through
the console script's ``main`` (and ``--merge-shards ... --help`` for the tools that join
shards).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import re
import sys
from unittest import mock

import pytest

from ..conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOOL = re.compile(r"(?<![\w./-])seqkd-[a-z]+(?:-[a-z]+)*(?![\w.-]*\w)")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z0-9][\w-]*")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"`([^`]+)`")
SEPARATOR = re.compile(r"&&|\|\||[|;]")
MERGE_HELP = ["--merge-shards", "x", "--help"]  # the shard-joining parser, if any


def shell_snippets(markdown: str) -> list[str]:
    """Each shell command line of the fenced blocks (not python) and each inline code span."""
    snippets = []
    for lang, body in FENCE.findall(markdown):
        if lang.strip() == "python":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            snippets.append(re.sub(r"(^|\s)#.*", "", line))
    prose = FENCE.sub("", markdown)
    snippets += [span.replace("\n", " ") for span in SPAN.findall(prose) if "\n\n" not in span]
    return snippets


def table_flags(markdown: str) -> list[tuple[str, str]]:
    """(tool, flag) for the flags in the first column of tables headed by seqkd-* tools."""
    named = []
    tools: list[str] | None = None  # the tools of the current table's header; None: no table
    for line in FENCE.sub("", markdown).splitlines():
        if not line.lstrip().startswith("|"):
            tools = None
            continue
        first, *rest = line.strip().strip("|").split("|")
        if tools is None:
            tools = TOOL.findall(first)
        elif not re.fullmatch(r"[\s:-]*", first + "".join(rest)):  # not the separator row
            named += [(tool, flag) for tool in tools for flag in FLAG.findall(first)]
    return named


def tool_flags_named(markdown: str) -> list[tuple[str, str]]:
    """(tool, flag) for every flag that follows a seqkd-* tool in one shell command, or that
    a table headed by seqkd-* tools lists."""
    named = []
    for snippet in shell_snippets(markdown):
        for command in SEPARATOR.split(snippet):
            tool = TOOL.search(command)
            if tool:
                named += [(tool.group(), flag) for flag in FLAG.findall(command[tool.end():])]
    return named + table_flags(markdown)


def unknown_flags(markdown: str, known: dict[str, set[str]]) -> list[str]:
    """``tool --flag`` for each named flag its tool does not have (or each unknown tool)."""
    problems = []
    for tool, flag in tool_flags_named(markdown):
        if tool not in known:
            problems.append(f"{tool}: no such console script")
        elif flag not in known[tool]:
            problems.append(f"{tool} {flag}")
    return sorted(set(problems))


def help_flags(help_text: str) -> set[str]:
    """The option strings an argparse help lists (its option lines are indented two spaces)."""
    flags = set()
    for line in help_text.splitlines():
        if re.match(r"  -", line):
            declared = re.split(r"\s{2,}", line.strip())[0]
            flags.update(re.findall(r"(?:^|, )(--?[A-Za-z0-9][\w-]*)", declared))
    return flags


def console_scripts() -> dict[str, str]:
    """seqkd-* console scripts of setup.py: name -> "module:function"."""
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    return dict(re.findall(r'"(seqkd-[\w-]+)=([\w.]+:\w+)"', setup))


def tool_help(target: str, argv: list[str]) -> str:
    module, function = target.split(":")
    main = getattr(importlib.import_module(module), function)
    out = io.StringIO()
    # --help exits (or main returns the status): SystemExit is not an error here
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), \
            mock.patch.object(sys, "argv", ["prog", *argv]), contextlib.suppress(SystemExit):
        main(argv) if inspect.signature(main).parameters else main()
    return out.getvalue()


@pytest.fixture(scope="module")
def known_flags() -> dict[str, set[str]]:
    known = {}
    for name, target in console_scripts().items():
        texts = [tool_help(target, argv) for argv in (["--help"], MERGE_HELP)]
        known[name] = set().union(*map(help_flags, texts))
    return known


SAMPLE = """
Run `seqkd-build --data d --beam 5` or `seqkd-build --made-up 3`; its record is
`seqkd-export.json`, and `--not-a-command-flag` alone names no tool.

```bash
seqkd-build --data data-bin --output out \\
    --beam 5 --also-made-up   # --in-a-comment
fairseq-train out --arch transformer --max-epoch 3
seqkd-translate model < in.txt | sacrebleu ref --tokenize none
```

```python
summary = run("seqkd-build --python-is-not-shell")
```

| `seqkd-build` option | default |
| --- | --- |
| `--beam`, `--table-made-up` | 5 |

| option | meaning |
| --- | --- |
| `--kd-alpha` | a fairseq-train option: this table names no seqkd tool |
"""


def test_checker_finds_made_up_flags_and_only_them():
    known = {"seqkd-build": {"--data", "--beam", "--output"}, "seqkd-translate": {"--beam"}}
    assert tool_flags_named(SAMPLE) == [
        ("seqkd-build", "--data"), ("seqkd-build", "--output"), ("seqkd-build", "--beam"),
        ("seqkd-build", "--also-made-up"), ("seqkd-build", "--data"), ("seqkd-build", "--beam"),
        ("seqkd-build", "--made-up"), ("seqkd-build", "--beam"), ("seqkd-build", "--table-made-up"),
    ]
    assert unknown_flags(SAMPLE, known) == [
        "seqkd-build --also-made-up", "seqkd-build --made-up", "seqkd-build --table-made-up"]
    assert unknown_flags("`seqkd-nothing --x`", known) == ["seqkd-nothing: no such console script"]


def test_help_flags_reads_declared_options_only():
    text = """usage: tool [-h] [--beam K]

options:
  -h, --help            show this help message and exit
  --beam K              beam size; see also --not-declared
  --write-checkpoints-asynchronously, --save-async
                        like --also-not-declared
"""
    assert help_flags(text) == {
        "-h", "--help", "--beam", "--write-checkpoints-asynchronously", "--save-async"}


@pytest.mark.slow
def test_every_documented_seqkd_flag_exists(known_flags):
    assert set(known_flags) >= {"seqkd-build", "seqkd-generate", "seqkd-translate"}
    assert {"--merge-shards", "--expected-size", "--beam", "--output"} <= \
        known_flags["seqkd-generate"]  # fairseq's generation options and the merge parser's
    assert unknown_flags("`seqkd-build --data d --made-up-flag`", known_flags) == [
        "seqkd-build --made-up-flag"]
    problems = {
        str(doc.relative_to(REPO)): unknown_flags(doc.read_text(encoding="utf-8"), known_flags)
        for doc in DOCS
    }
    assert {doc: found for doc, found in problems.items() if found} == {}
    named = sum(len(tool_flags_named(doc.read_text(encoding="utf-8"))) for doc in DOCS)
    assert named > 100  # the docs name many flags: the parsing found them
