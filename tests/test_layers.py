"""The package's direction of dependency (README, "The package"), read from the source with ``ast``:
every import of a ``cmmc_lib`` module, at module level or inside a function, is an edge.

The rules: leaves import nothing of the package; ``data`` never reaches the networks or the
training; ``flow`` and ``data`` meet only at data's video and flow-storage modules and at the
synthetic writer; ``models`` never reads data; ``ssl`` never reads data; nothing imports the
layers above it (``cli`` above all); and no module imports itself through others.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests._gen_fixtures import REPO_ROOT

LIB = REPO_ROOT / "cmmc_lib"


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")


def _is_module(name: str) -> bool:
    base = REPO_ROOT / name.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """The cmmc_lib modules ``path`` imports anywhere (``if TYPE_CHECKING:`` blocks left out)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent / "x.py")[:-2]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[:len(parts) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("cmmc_lib"):
                subs = {f"{name}.{a.name}" for a in node.names if _is_module(f"{name}.{a.name}")}
                found |= subs or {name}
                if name != "cmmc_lib" and len(subs) < len(node.names):
                    found.add(name)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cmmc_lib")}
    return found - {"cmmc_lib"}


GRAPH = {_module_name(p): _imports(p) for p in sorted(LIB.rglob("*.py"))}


def _layer(module: str) -> str:
    """``cmmc_lib.data.video`` -> ``data``; ``cmmc_lib.train`` -> ``train``; the lessons' helpers
    (``pose_lesson``) belong to the course."""
    layer = module.split(".")[1] if module.count(".") else module
    return "course" if layer.endswith("_lesson") else layer


def _reaches(start: str) -> set[str]:
    seen, todo = set(), list(GRAPH.get(start, ()))
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(GRAPH.get(m, ()))
    return seen


def test_the_graph_sees_every_module_and_its_imports():
    assert {"cmmc_lib.mixing", "cmmc_lib.train", "cmmc_lib.data.datasets", "cmmc_lib.flow.extract",
            "cmmc_lib.ssl.factory", "cmmc_lib.bench.step"} <= set(GRAPH)
    assert "cmmc_lib.ssl.factory" in GRAPH["cmmc_lib.train"]
    assert "cmmc_lib.data.video" in GRAPH["cmmc_lib.flow.frames"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_itself_through_others(module):
    assert module not in _reaches(module)


#: layer -> the layers it may import (besides itself)
ALLOWED = {
    "mixing": set(), "files": set(), "devices": set(), "jobs": set(), "console": set(), "provenance": set(),
    "registry": set(),
    "config": {"registry"},
    "runs": {"config", "registry", "files"},
    "models": {"registry", "mixing"},
    "data": {"config", "registry", "mixing", "files", "jobs", "flow"},
    "flow": {"data", "files", "devices", "jobs"},
    "ssl": {"models", "mixing", "registry", "config", "runs", "files"},
    "evaluate": {"data", "models", "ssl", "runs", "config", "registry", "mixing", "files", "devices", "jobs",
                 "flow"},
    "tables": {"evaluate", "registry", "files"},
    "viz": {"mixing", "registry", "evaluate", "tables", "files"},
}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _layer(m) in ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(module):
    layer = _layer(module)
    used = {_layer(m) for m in GRAPH[module]} - {layer}
    assert used <= ALLOWED[layer], f"{module} imports {sorted(used - ALLOWED[layer])}"


def test_flow_and_data_meet_only_at_video_storage_and_the_synthetic_writer():
    for module, imports in GRAPH.items():
        if _layer(module) == "flow":
            data_used = {m for m in imports if _layer(m) == "data"}
            assert data_used <= {"cmmc_lib.data.video", "cmmc_lib.data.rawframes"}, (module, data_used)
        if _layer(module) == "data" and module != "cmmc_lib.data.synthetic":
            assert not {m for m in imports if _layer(m) == "flow"}, module


def test_nothing_imports_the_command_line_and_only_the_top_imports_bench_and_course():
    for module, imports in GRAPH.items():
        assert "cmmc_lib.cli" not in imports, module
        if _layer(module) not in ("cli", "course", "bench"):
            assert not {m for m in imports if _layer(m) in ("bench", "course")}, module
