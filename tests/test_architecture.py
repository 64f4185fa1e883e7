"""The layout is the architecture (docs/architecture.md): the import contracts hold and catch an
upward import, and no module or function grows past what a reader can hold."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = str(Path(sys.executable).with_name("lint-imports"))
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
LONG_OK = "# long:"  # a function may be longer with this comment, saying why, on the lines above its def


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(cwd), "PATH": ""})


def test_import_contracts_hold():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in r.stdout


@pytest.mark.parametrize("module, upward", [
    ("ganray/config/parse.py", "from ganray import storage"),     # the floor reaches up
    ("ganray/train/loop.py", "import ray.train"),                  # Ray below the adapter
    ("ganray/sweep/__init__.py", "from ganray.cli import main"),            # a sweep imports the CLI
    ("ganray/report/__init__.py", "import torch"),                 # the report loads torch
])
def test_an_upward_import_breaks_the_contracts(tmp_path, module, upward):
    shutil.copytree(ROOT / "ganray", tmp_path / "ganray", ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{upward}  # deliberately upward\n")
    r = _lint(tmp_path)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "BROKEN" in r.stdout and module.removesuffix(".py").removesuffix("/__init__").replace("/", ".") in r.stdout


def _sources() -> list[Path]:
    return sorted(p for p in (ROOT / "ganray").rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def test_no_function_over_80_lines_without_a_reason():
    long = []
    for p in _sources():
        text = p.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                said = any(LONG_OK in ln for ln in lines[max(0, first - 4):first])
                if n > MAX_FUNCTION_LINES and not said:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_the_training_loop_function_is_at_most_80_lines():
    tree = ast.parse((ROOT / "ganray/train/loop.py").read_text())
    (train,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train"]
    assert train.end_lineno - train.lineno + 1 <= 80


def test_the_architecture_doc_names_every_layer_of_the_contract():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    doc = (ROOT / "docs/architecture.md").read_text()
    modules = [m.strip() for layer in layers for m in layer.replace(":", "|").split("|")]
    missing = [m for m in modules if f"`{m}" not in doc]
    assert not missing, f"docs/architecture.md does not name {missing}"
    # and every package of ganray/ is in a layer
    packages = {f"ganray.{p.stem if p.is_file() else p.name}" for p in (ROOT / "ganray").iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert packages <= set(modules), packages - set(modules)
