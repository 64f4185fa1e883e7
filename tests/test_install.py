"""The install is lean and honest: every third-party package ganray imports is declared in
pyproject.toml (core dependencies, or the extra that needs it), and nothing is declared that
ganray never imports."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Declared for another reason than an import of ganray's own code: ray's extras bring the
# runtime (Train, Tune, the dashboard), which ganray imports as `ray`.
NOT_IMPORTED_ON_PURPOSE = {
    "gcsfs": "TensorBoard's gs:// reader through fsspec (the gcs extra)",
    "mlflow-skinny": "imported as `mlflow` by Ray's MLflowLoggerCallback and ganray.tracking",
}


def _name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", req, maxsplit=1)[0].lower().replace("_", "-")


def _imports() -> set[str]:
    """Top-level modules imported anywhere in ganray/ (absolute imports only)."""
    found = set()
    for path in (ROOT / "ganray").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"ganray", "__future__"}


# Modules of an extra that cannot be installed beside this venv's torch (the fid extra's
# torch-fidelity needs a torchvision built for its own torch: `make test-fid` has it in .venv-fid)
NOT_INSTALLABLE_HERE = {"torch_fidelity": "torch-fidelity"}


def _distributions(module: str) -> set[str]:
    found = {d.lower().replace("_", "-") for d in metadata.packages_distributions().get(module, [])}
    return found or ({NOT_INSTALLABLE_HERE[module]} if module in NOT_INSTALLABLE_HERE else set())


def test_every_imported_package_is_declared():
    project = PYPROJECT["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for extra, reqs in project["optional-dependencies"].items():
        if extra != "test":
            declared |= {_name(r) for r in reqs}
    missing = {}
    for module in sorted(_imports()):
        dists = _distributions(module)
        assert dists, f"ganray imports {module!r}, which no installed distribution provides"
        if not dists & declared:
            missing[module] = sorted(dists)
    assert not missing, f"imported by ganray but not declared in pyproject.toml: {missing}"


def test_nothing_declared_that_ganray_does_not_import():
    imported = set()
    for module in _imports():
        imported |= _distributions(module)
    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    unused = core - imported - set(NOT_IMPORTED_ON_PURPOSE)
    assert not unused, f"core dependencies ganray never imports: {sorted(unused)}"
    assert "mlxtend" not in core and "gcsfs" not in core, "the lean install dropped mlxtend and moved gcsfs to [gcs]"
