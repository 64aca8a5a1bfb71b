"""The names a run's records share (MLflow tags, Optuna attributes, run-folder files) are written
once, in ``diffexp/algorithms/run_record.py``: no other module of the library spells them."""

from __future__ import annotations

import ast
from pathlib import Path

from diffexp.algorithms import run_record

LIBRARY = Path(run_record.__file__).resolve().parents[1]


def _shared_names() -> set[str]:
    """The record's names that could not be mistaken for another word (they hold ':' or '.')."""
    values = {v for k, v in vars(run_record).items() if k.isupper() and isinstance(v, str)}
    values |= {v for k, v in vars(run_record).items() if k.isupper() and isinstance(v, tuple) for v in v}
    return {v for v in values if ":" in v or "." in v}


def _literals(tree: ast.AST):
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_module_but_the_run_record_spells_a_shared_name():
    names = _shared_names()
    assert {"diffexp:trial_key", "optuna.state", "config.yaml", "last.ckpt", "result.json"} <= names
    found = []
    for path in sorted(LIBRARY.rglob("*.py")):
        if path.name == "run_record.py":
            continue
        for line, value in _literals(ast.parse(path.read_text())):
            if value in names or value.startswith(run_record.ATTR_PREFIX):
                found.append(f"{path.relative_to(LIBRARY.parent)}:{line}: {value!r}")
    assert not found, "spell these through diffexp.algorithms.run_record:\n" + "\n".join(found)


def test_the_check_finds_a_spelled_name(tmp_path):
    tree = ast.parse('"""optuna.state in a docstring is fine"""\nTAG = "optuna.state"\nf"diffexp:{x}"\n')
    values = [v for _, v in _literals(tree)]
    assert "optuna.state" in values and "diffexp:" in values
    assert "optuna.state in a docstring is fine" not in values
