"""The package's layout rules, checked on its source: no module imports another's private names,
the module-level import graph has no cycle, and the registered model's code imports neither
Ray nor Hydra (serving environments have neither: tests/test_serving.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, Set

from tests.conftest import REPO

PACKAGE = REPO / "training"


def modules() -> Dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def test_no_module_imports_another_modules_private_names():
    offences = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("training"):
                offences += [f"{name}: from {node.module} import {a.name}" for a in node.names
                             if a.name.startswith("_") and node.module != name]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if isinstance(node.value, ast.Name) and node.value.id not in ("self", "cls", "os", "sys"):
                    imported = _imported_names(path)
                    if node.value.id in imported:
                        offences.append(f"{name}: {node.value.id}.{node.attr}")
    assert not offences, offences


def _imported_names(path: Path) -> Set[str]:
    """Local names bound to training modules in this file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("training"):
            names |= {a.asname or a.name for a in node.names}
    return names


def test_the_module_level_import_graph_has_no_cycle():
    mods = modules()
    graph = defaultdict(set)
    for name, path in mods.items():
        for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions are lazy
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("training"):
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    graph[name].add(full if full in mods else node.module)
    state: Dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in mods:
        if name not in state:
            visit(name, [name])


def test_the_registered_models_code_imports_neither_ray_nor_hydra():
    code = ("import sys, training.gbdt.pyfunc, training.gbdt.ensemble, training.gbdt.kinds as k; k.names(); "
            "print(sorted(m for m in ('ray', 'hydra', 'omegaconf', 'training.config', 'training.runtime') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
