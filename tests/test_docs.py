"""Docs that stay true: every repository path and `python -m` module README.md and
benchmarks/README.md name exists, and no text of the repository names a path outside it.

Read from the text, without running anything: a path counts when it starts with one of
the repository's top-level folders (`jaxdl/training/loop.py`, `benchmarks/suite.py`,
`experiments/mnist_cnn` for experiments/mnist_cnn.py); a module when it follows
`python -m` (found with importlib.util.find_spec, which imports only its parent packages).
Upper-case parts are placeholders (`experiments/NAME.py`, `python -m experiments.NAME`).
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The documents whose paths and commands must exist (LOG.md keeps the names of its day).
DOCUMENTS = ("README.md", "benchmarks/README.md")
TOP_FOLDERS = ("jaxdl", "benchmarks", "experiments", "tests")
# Not preceded by a path character: `~/.cache/jaxdl/xla` is no repository path.
REPO_PATH = re.compile(r"(?<![\w./$~-])((?:%s)/[\w./*-]*)" % "|".join(TOP_FOLDERS))
PYTHON_M = re.compile(r"python -m ([\w.]+)")
# A machine's layout: absolute home, work or scratch folders, or the folder beside the
# checkout that holds this machine's data.
OUTSIDE = re.compile(r"(?<![\w.])/(?:work|home|root|Users|tmp|mnt)/|\.\./shared|"
                     r"(?<![\w.])shared/data\b")
# This file plants such paths to show the check finds them.
OUTSIDE_ALLOWED = ("tests/test_docs.py",)


def _is_placeholder(part: str) -> bool:
    return part.isupper() or part.startswith("*")


def missing_paths(text: str, repo: Path = REPO) -> list[str]:
    """The repository paths `text` names that do not exist under `repo`."""
    missing = []
    for path in sorted(set(REPO_PATH.findall(text))):
        path = path.rstrip(".")  # the end of a sentence
        if any(_is_placeholder(part) for part in re.split(r"[/.]", path) if part):
            continue
        if "*" in path:
            if not list(repo.glob(path)):
                missing.append(path)
        elif not ((repo / path).exists() or (repo / f"{path}.py").exists()):
            missing.append(path)
    return missing


def missing_modules(text: str) -> list[str]:
    """The `python -m` modules `text` names that cannot be found (not run, not imported)."""
    missing = []
    for module in sorted(set(PYTHON_M.findall(text))):
        module = module.rstrip(".")
        if any(_is_placeholder(part) for part in module.split(".")):
            continue
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:  # a parent package is missing
            spec = None
        if spec is None:
            missing.append(module)
    return missing


def outside_paths(text: str) -> list[str]:
    """The lines of `text` that name a path outside the repository."""
    return [line.strip() for line in text.splitlines() if OUTSIDE.search(line)]


def _docstrings(path: Path) -> str:
    tree = ast.parse(path.read_text(), str(path))
    return "\n".join(ast.get_docstring(node, clean=False) or "" for node in ast.walk(tree)
                     if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                          ast.AsyncFunctionDef)))


def _texts() -> dict[str, str]:
    """Every Markdown file of the repository, and the docstrings of every module."""
    texts = {}
    for path in sorted(REPO.rglob("*")):
        relative = path.relative_to(REPO).as_posix()
        if any(part.startswith(".") for part in path.relative_to(REPO).parts) or \
                relative in OUTSIDE_ALLOWED or not path.is_file():
            continue
        if path.suffix == ".md":
            texts[relative] = path.read_text()
        elif path.suffix == ".py":
            texts[relative] = _docstrings(path)
    return texts


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_named_repository_path_exists(document):
    assert missing_paths((REPO / document).read_text()) == [], document


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_python_m_module_exists(document):
    assert missing_modules((REPO / document).read_text()) == [], document


def test_no_text_names_a_path_outside_the_repository():
    found = {name: lines for name, text in _texts().items() if (lines := outside_paths(text))}
    assert found == {}


def test_the_checks_catch_planted_mistakes():
    """The checks above are not vacuous: each finds a planted mistake and passes the forms
    the documents use."""
    text = ("See `jaxdl/training/loop.py`, `jaxdl/training/no_such_file.py`, "
            "experiments/digits_cnn, experiments/NAME.py, benchmarks/*.md and "
            "benchmarks/no_such_*.md; the cache is ~/.cache/jaxdl/xla.\n"
            "python -m benchmarks.step_throughput, python -m benchmarks.no_such_module, "
            "python -m experiments.NAME\n"
            "data in /home/someone/datasets\nor /mnt/data/mnist\nor in a workdir: runs/x\n")
    assert missing_paths(text) == ["benchmarks/no_such_*.md", "jaxdl/training/no_such_file.py"]
    assert missing_modules(text) == ["benchmarks.no_such_module"]
    assert outside_paths(text) == ["data in /home/someone/datasets", "or /mnt/data/mnist"]
    assert "README.md" in _texts() and "benchmarks/step_throughput/__init__.py" in _texts()
