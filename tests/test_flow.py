"""The flow package (cmmc_lib.flow): every public name resolves, importing it stays light, and
the dependency rule holds (flow may use data.video and data.rawframes; inside data/ only the
synthetic writer uses flow; no module-level import cycle)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cmmc_lib.flow as flow
from tests._gen_fixtures import REPO_ROOT

LIB = REPO_ROOT / "cmmc_lib"


def test_every_public_name_resolves_to_its_module():
    for name in flow.__all__:
        value = getattr(flow, name)
        module = flow._MODULE_OF[name]
        assert getattr(value, "__module__", f"cmmc_lib.flow.{module}") in (
            f"cmmc_lib.flow.{module}", "builtins", "typing"), name
    assert {"extract_flow", "compute_flow", "FLOW_METHODS", "tvl1_flow_pairs", "bench_flow",
            "flow_accuracy", "compare_flow_methods"} <= set(dir(flow))


def test_importing_the_package_or_an_opencv_method_does_not_import_torch():
    code = ("import sys, cmmc_lib.flow, cmmc_lib.flow.extract, cmmc_lib.data.synthetic\n"
            "print(sorted({'torch'} & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr[-2000:]


def _module_level_imports(path: Path) -> set[str]:
    """Absolute names of the cmmc_lib modules ``path`` imports at module level (not in
    functions; ``if TYPE_CHECKING:`` blocks left out)."""
    package = ".".join(path.relative_to(REPO_ROOT).parent.parts)     # what "." means in it
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("cmmc_lib"):
                found.add(name)
                found.update(f"{name}.{a.name}" for a in node.names
                             if (LIB.parent / f"{name}.{a.name}".replace(".", "/")).with_suffix(".py").is_file())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cmmc_lib"))
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in LIB.rglob("*.py"):
        name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = _module_level_imports(path)
    return graph


def test_flow_uses_only_video_and_rawframes_of_data_and_only_synthetic_uses_flow():
    graph = _graph()
    for module, imports in graph.items():
        data_used = {m for m in imports if m.startswith("cmmc_lib.data.")}
        if module.startswith("cmmc_lib.flow"):
            assert data_used <= {"cmmc_lib.data.video", "cmmc_lib.data.rawframes"}, (module, data_used)
        if module.startswith("cmmc_lib.data.") and module != "cmmc_lib.data.synthetic":
            assert not {m for m in imports if m.startswith("cmmc_lib.flow")}, module


def test_no_module_level_import_cycle_through_flow():
    graph = _graph()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph.get(module, ()))
        return seen
    for module in [m for m in graph if m.startswith("cmmc_lib.flow") or m in (
            "cmmc_lib.jobs", "cmmc_lib.devices", "cmmc_lib.data.frame_cache", "cmmc_lib.data.synthetic")]:
        assert module not in reachable(module), module
