"""Imports go one way, cli -> demo -> library: no module outside ``fairseq_seqkd/cli/``
imports the command-line layer, and ``demo/`` imports no private name of another module."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fairseq_seqkd"


def imports(path: Path, root: Path) -> list[tuple[int, list[str], list[str]]]:
    """``(line, modules, names)`` of every import statement in a file of the package at
    ``root``: the absolute modules it may load (for ``from X import n``: X, and X.n in case n
    is a submodule; relative imports resolved) and the names it takes."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    package = parts[:-1]  # a module's package; an __init__'s is its own directory
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, [alias.name], []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names = [alias.name for alias in node.names]
            found.append((node.lineno, [module, *(f"{module}.{n}" for n in names)], names))
    return found


def _is_cli(module: str) -> bool:
    return module == "fairseq_seqkd.cli" or module.startswith("fairseq_seqkd.cli.")


def layer_violations(root: Path = PACKAGE) -> list[str]:
    """``file:line: imports MODULE`` for each import of the cli layer from outside it, and
    each private name ``demo/`` takes from another module."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        for line, modules, names in imports(path, root):
            where = f"{rel.as_posix()}:{line}"
            cli = [m for m in modules if _is_cli(m)]
            if rel.parts[0] != "cli" and cli:
                bad.append(f"{where}: imports {cli[0]}")
            if rel.parts[0] == "demo" and modules[0].startswith("fairseq_seqkd."):
                bad += [f"{where}: imports private {modules[0]}.{n}" for n in names
                        if n.startswith("_") and not n.startswith("__")]
    return bad


def test_only_the_cli_layer_imports_the_cli_layer():
    assert layer_violations() == []


@pytest.mark.parametrize(("source", "found"), [
    ("from ..cli.entry import run_main\n", "1: imports fairseq_seqkd.cli.entry"),
    ("from .. import cli\n", "1: imports fairseq_seqkd.cli"),
    ("import fairseq_seqkd.cli.demo\n", "1: imports fairseq_seqkd.cli.demo"),
    ("from fairseq_seqkd.cli import entry\n", "1: imports fairseq_seqkd.cli"),
    ("def f():\n    from ..cli import entry\n", "2: imports fairseq_seqkd.cli"),
])
def test_a_library_module_importing_the_cli_is_caught(tmp_path, source, found):
    package = tmp_path / "fairseq_seqkd"
    for sub in ("distill", "cli"):
        (package / sub).mkdir(parents=True)
    (package / "distill" / "late.py").write_text(source)
    (package / "cli" / "tool.py").write_text("from .entry import run_main\nfrom .. import cli\n")
    assert layer_violations(package) == [f"distill/late.py:{found}"]


def test_private_names_across_demo_modules_are_caught(tmp_path):
    package = tmp_path / "fairseq_seqkd"
    (package / "demo").mkdir(parents=True)
    (package / "demo" / "bench.py").write_text("from .pipeline import MODELS, _bin, __all__\n")
    assert layer_violations(package) == [
        "demo/bench.py:1: imports private fairseq_seqkd.demo.pipeline._bin"]
