"""Every result row says where it came from: the command, the commit (dirty only by code) and the machine."""
from __future__ import annotations

import subprocess

import pytest

from cmmc_lib import provenance


@pytest.mark.parametrize("status, dirty", [(" M docs/results/study/gates.jsonl\n", False),
                                           (" M cmmc_lib/train.py\n M docs/results/study/gates.jsonl\n", True),
                                           ("", False)])
def test_the_commit_of_a_row_is_dirty_only_by_code_not_by_results(monkeypatch, status, dirty):
    def fake(cmd, **kw):
        out = "abc123def456\n" if "rev-parse" in cmd else status
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    monkeypatch.setattr(provenance.subprocess, "run", fake)
    assert provenance.source_commit() == "abc123def456" + ("+dirty" if dirty else "")


def test_the_command_is_the_course_lessons_when_the_course_sets_it_else_the_process_command_line(monkeypatch):
    monkeypatch.delenv(provenance.COMMAND_ENV, raising=False)
    monkeypatch.setattr(provenance.sys, "argv", ["/venv/bin/cmmc", "ablate", "--preset", "cpu", "--seeds", "3"])
    assert provenance.command_line() == "cmmc ablate --preset cpu --seeds 3"
    monkeypatch.setenv(provenance.COMMAND_ENV, "cmmc course --profile cpu (lesson 03_mixup)")
    stamp = provenance.stamp()
    assert stamp["command"] == "cmmc course --profile cpu (lesson 03_mixup)"
    assert stamp["machine"]["cores"] >= 1 and stamp["machine"]["torch"]
    assert provenance.stamp("given")["command"] == "given"


def test_python_dash_m_cmmc_lib_cli_is_named_cmmc(monkeypatch):
    monkeypatch.delenv(provenance.COMMAND_ENV, raising=False)
    monkeypatch.setattr(provenance.sys, "argv", ["/repo/cmmc_lib/cli.py", "ablate", "--seeds", "1"])
    assert provenance.command_line() == "cmmc ablate --seeds 1"
