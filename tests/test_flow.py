"""The flow package (cmmc_lib.flow): every public name resolves and importing it stays light
(its place among the layers is tests/test_layers.py's)."""
from __future__ import annotations

import subprocess
import sys

import cmmc_lib.flow as flow
from tests._gen_fixtures import REPO_ROOT


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
