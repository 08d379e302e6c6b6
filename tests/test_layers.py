"""The house's layers hold: every import points down, and no two modules import each other.

The order, bottom first (a module may import its own group and any lower rank, nothing
level with it or above; imports inside functions and under `TYPE_CHECKING` count too):

  0  jaxdl.schema        the config vocabulary: Field, checks, ConfigError, durations
  1  jaxdl.runs, jaxdl.plots, jaxdl.losses
                         a workdir's files, figures, loss functions
  2  jaxdl.models | jaxdl.data
                         siblings: a model knows nothing of data and data nothing of models
  3  jaxdl.tasks         a model plus loss and metrics
  4  jaxdl.training      builds and runs a task
  5  jaxdl.config        validate(): assembles the schema from what models, tasks, data and
                         training (optimizers, schedules, pipelines) declare, so it sits
                         above all of them and below the app that calls it
  6  jaxdl.trained       a trained run loaded back (its saved config validated, a checkpoint,
                         its data): what the tools above use a run through
  7  jaxdl.analysis | jaxdl.sweep | jaxdl.summary | jaxdl.weights | jaxdl.compress
                         tools over models and finished runs; weights reads another
                         framework's model and writes a checkpoint through training's code;
                         compress quantizes a run and reports its sizes
  8  jaxdl.app           flags and process set-up
  9  jaxdl.api | jaxdl.evaluate | jaxdl.predict | jaxdl.run
                         the Python API (the app's config and workdir rules without flags);
                         the evaluate and predict tools over a trained run; any experiment
                         from any directory
 10  experiments | benchmarks | jaxdl.sweep.__main__
                         what runs on the app: the sweep command reuses its set-up
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("jaxdl", "experiments", "benchmarks")

# Rank -> the groups at that rank (a group is a module or package prefix).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("jaxdl.schema", "jaxdl"),
    ("jaxdl.runs", "jaxdl.plots", "jaxdl.losses"),
    ("jaxdl.models", "jaxdl.data"),
    ("jaxdl.tasks",),
    ("jaxdl.training",),
    ("jaxdl.config",),
    ("jaxdl.trained",),
    ("jaxdl.analysis", "jaxdl.sweep", "jaxdl.summary", "jaxdl.cluster", "jaxdl.weights",
     "jaxdl.compress"),
    ("jaxdl.app",),
    ("jaxdl.api", "jaxdl.evaluate", "jaxdl.predict", "jaxdl.run", "jaxdl.reference"),
    ("experiments", "benchmarks", "jaxdl.sweep.__main__"),
)
# Groups that hold only the module of that name, not what lies under it: the package's
# __init__, which imports nothing.
ONLY_ITSELF = ("jaxdl",)


def group_of(module: str) -> tuple[int, str] | None:
    """(rank, group) of `module`: the longest group name it is or lies under."""
    best = None
    for rank, groups in enumerate(LAYERS):
        for group in groups:
            under = group not in ONLY_ITSELF and module.startswith(group + ".")
            if module == group or under:
                if best is None or len(group) > len(best[1]):
                    best = (rank, group)
    return best


def module_files(repo: Path, roots=ROOTS) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the roots."""
    out = {}
    for root in roots:
        for path in sorted((repo / root).rglob("*.py")):
            parts = list(path.relative_to(repo).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(module: str, path: Path, modules: dict[str, Path]
               ) -> list[tuple[str, int]]:
    """(imported module, line) for every import of a module under the roots, anywhere in
    the file. `from P import N` names the submodule P.N when there is one, else P."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.append((sub if sub in modules else source, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] in ROOTS]


def _edges(repo: Path, roots=ROOTS):
    modules = module_files(repo, roots)
    edges = collections.defaultdict(dict)  # importer -> {imported: line}
    for module, path in modules.items():
        for target, line in imports_of(module, path, modules):
            if target != module:
                edges[module].setdefault(target, line)
    return modules, edges


def _rel(path: Path, repo: Path) -> str:
    return str(path.relative_to(repo))


def layer_problems(repo: Path, roots=ROOTS) -> list[str]:
    """One line per module without a layer and per import that runs up or sideways."""
    modules, edges = _edges(repo, roots)
    problems = []
    for module, path in modules.items():
        if group_of(module) is None:
            problems.append(f"{_rel(path, repo)}: module {module} is in no layer of LAYERS")
    for module, targets in sorted(edges.items()):
        low = group_of(module)
        for target, line in sorted(targets.items()):
            high = group_of(target)
            if low is None or high is None or high[1] == low[1] or high[0] < low[0]:
                continue
            where = modules.get(target)
            target_file = _rel(where, repo) if where else target
            how = "up" if high[0] > low[0] else "sideways"
            problems.append(f"{_rel(modules[module], repo)}:{line} imports {target_file} "
                            f"({how}: {low[1]} is rank {low[0]}, {high[1]} rank {high[0]})")
    return problems


def cycles(repo: Path, roots=ROOTS) -> list[str]:
    """One line per import cycle between modules (the shortest through each module,
    reported once), naming the files and lines."""
    modules, edges = _edges(repo, roots)
    seen, out = set(), []
    for start in sorted(edges):
        # Breadth-first from start's imports back to start: the shortest cycle through it.
        parents = {start: None}
        queue = collections.deque([start])
        closing = None
        while queue and closing is None:
            node = queue.popleft()
            for nxt in sorted(edges.get(node, {})):
                if nxt == start:
                    closing = node
                    break
                if nxt not in parents:
                    parents[nxt] = node
                    queue.append(nxt)
        if closing is None:
            continue
        chain = [closing]
        while chain[-1] != start:
            chain.append(parents[chain[-1]])
        chain = chain[::-1] + [start]  # start -> ... -> closing -> start
        key = frozenset(chain)
        if key in seen:
            continue
        seen.add(key)
        steps = [f"{_rel(modules[a], repo)}:{edges[a][b]} imports {_rel(modules[b], repo)}"
                 for a, b in zip(chain, chain[1:])]
        out.append("cycle: " + "; ".join(steps))
    return out


def test_every_import_points_down():
    problems = layer_problems(REPO)
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    found = cycles(REPO)
    assert not found, "\n".join(found)


# --- the checker itself, on a made-up house ---------------------------------------------


def _house(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_checker_names_both_files_of_an_upward_import(tmp_path):
    repo = _house(tmp_path, {
        "jaxdl/__init__.py": "",
        "jaxdl/schema.py": "",
        "jaxdl/config.py": "from jaxdl.schema import Field\n",
        "jaxdl/tasks/__init__.py": "",
        # Lazy, relative and plain forms are all read.
        "jaxdl/tasks/base.py": "def f():\n    from .. import config\n",
        "jaxdl/models/__init__.py": "import jaxdl.data.files\n",
        "jaxdl/data/__init__.py": "",
        "jaxdl/data/files.py": "",
    })
    problems = layer_problems(repo, ("jaxdl",))
    assert any(p.startswith("jaxdl/tasks/base.py:2 imports jaxdl/config.py (up:")
               for p in problems), problems
    assert any(p.startswith("jaxdl/models/__init__.py:1 imports jaxdl/data/files.py "
                            "(sideways:") for p in problems), problems
    assert len(problems) == 2, problems


def test_checker_finds_a_cycle_within_one_layer(tmp_path):
    repo = _house(tmp_path, {
        "jaxdl/__init__.py": "",
        "jaxdl/data/__init__.py": "",
        "jaxdl/data/registry.py": "from typing import TYPE_CHECKING\n"
                                  "if TYPE_CHECKING:\n    from jaxdl.data.sources import D\n",
        "jaxdl/data/sources.py": "from jaxdl.data.registry import register\n",
    })
    assert layer_problems(repo, ("jaxdl",)) == []
    assert cycles(repo, ("jaxdl",)) == [
        "cycle: jaxdl/data/registry.py:3 imports jaxdl/data/sources.py; "
        "jaxdl/data/sources.py:1 imports jaxdl/data/registry.py"]


def test_checker_refuses_a_module_in_no_layer(tmp_path):
    repo = _house(tmp_path, {"jaxdl/__init__.py": "", "jaxdl/extras.py": ""})
    assert layer_problems(repo, ("jaxdl",)) == [
        "jaxdl/extras.py: module jaxdl.extras is in no layer of LAYERS"]


@pytest.mark.parametrize("module, group", [
    ("jaxdl.schema", "jaxdl.schema"), ("jaxdl", "jaxdl"), ("jaxdl.data.files", "jaxdl.data"),
    ("jaxdl.training.loop", "jaxdl.training"), ("experiments.digits_cnn", "experiments")])
def test_group_of(module, group):
    assert group_of(module)[1] == group
