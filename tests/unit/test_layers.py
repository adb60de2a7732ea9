"""Imports go one way, down the layers of DESIGN.md: the console scripts (``cli/``), the
experiments (``experiments/``: demo and benchmark), the tools' library (``distill/``,
``deploy/``), the plugin proper (``criterions/``, ``tasks/``, ``data/``, the frozen teacher,
the pruning hook), and under them the pure modules and the house's helpers. No module imports
a layer above its own, and the experiments take no private name of another module."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fairseq_seqkd"

# a package's first path component (or a top-level module's name) -> its layer; any other
# top-level module is a pure module or a house helper (layer 0)
LAYERS = {
    "cli": 4,
    "experiments": 3,
    "distill": 2, "deploy": 2,
    "criterions": 1, "tasks": 1, "data": 1, "teacher": 1, "pruning_hook": 1, "__init__": 1,
}
LAYER_NAMES = {4: "cli", 3: "experiments", 2: "tools", 1: "plugin", 0: "pure/house"}


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


def layer_of_module(module: str, root_name: str) -> int | None:
    """The layer of an absolute module name inside the package, None outside it or for the
    package itself (``from fairseq_seqkd import x`` is judged by ``x``)."""
    parts = module.split(".")
    if parts[0] != root_name or len(parts) == 1:
        return None
    return LAYERS.get(parts[1], 0)


def layer_of_file(rel: Path) -> int:
    return LAYERS.get(rel.parts[0] if len(rel.parts) > 1 else rel.stem, 0)


def layer_violations(root: Path = PACKAGE) -> list[str]:
    """``file:line: LAYER imports MODULE (LAYER)`` for each import of a higher layer, and
    each private name ``experiments/`` takes from another module."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        own = layer_of_file(rel)
        for line, modules, names in imports(path, root):
            where = f"{rel.as_posix()}:{line}"
            for module in modules:
                layer = layer_of_module(module, root.name)
                if layer is not None and layer > own:
                    bad.append(f"{where}: {LAYER_NAMES[own]} imports {module} "
                               f"({LAYER_NAMES[layer]})")
                    break
            if rel.parts[0] == "experiments" and modules[0].startswith(f"{root.name}."):
                bad += [f"{where}: imports private {modules[0]}.{n}" for n in names
                        if n.startswith("_") and not n.startswith("__")]
    return bad


def test_no_module_imports_a_layer_above_its_own():
    assert layer_violations() == []


@pytest.mark.parametrize(("source", "found"), [
    ("from ..cli.entry import run_main\n", "1: tools imports fairseq_seqkd.cli.entry (cli)"),
    ("from .. import cli\n", "1: tools imports fairseq_seqkd.cli (cli)"),
    ("import fairseq_seqkd.cli.demo\n", "1: tools imports fairseq_seqkd.cli.demo (cli)"),
    ("from ..experiments import pipeline\n",
     "1: tools imports fairseq_seqkd.experiments (experiments)"),
    ("def f():\n    from ..cli import entry\n", "2: tools imports fairseq_seqkd.cli (cli)"),
])
def test_a_tool_importing_a_higher_layer_is_caught(tmp_path, source, found):
    package = tmp_path / "fairseq_seqkd"
    for sub in ("distill", "cli"):
        (package / sub).mkdir(parents=True)
    (package / "distill" / "late.py").write_text(source)
    (package / "cli" / "tool.py").write_text("from .entry import run_main\nfrom .. import cli\n")
    assert layer_violations(package) == [f"distill/late.py:{found}"]


def test_the_plugin_and_pure_modules_importing_upwards_are_caught(tmp_path):
    package = tmp_path / "fairseq_seqkd"
    (package / "criterions").mkdir(parents=True)
    (package / "criterions" / "kd.py").write_text(
        "from ..divergences import kl\nfrom ..distill.build import build\n")
    (package / "divergences.py").write_text("from .teacher import FrozenTeacher\n")
    (package / "teacher.py").write_text("from .divergences import kl\n")
    assert layer_violations(package) == [
        "criterions/kd.py:2: plugin imports fairseq_seqkd.distill.build (tools)",
        "divergences.py:1: pure/house imports fairseq_seqkd.teacher (plugin)",
    ]


def test_private_names_across_experiment_modules_are_caught(tmp_path):
    package = tmp_path / "fairseq_seqkd"
    (package / "experiments").mkdir(parents=True)
    (package / "experiments" / "bench.py").write_text(
        "from .pipeline import MODELS, _bin, __all__\n")
    assert layer_violations(package) == [
        "experiments/bench.py:1: imports private fairseq_seqkd.experiments.pipeline._bin"]
