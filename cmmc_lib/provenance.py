"""Where a result comes from: the command that computed it, the package's commit and the machine.

Every result row a long command appends (``cmmc ablate``, the pose study, ``cmmc study``) carries
:func:`stamp`, so a table shipped in ``docs/results/`` says how to compute it again.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

#: set by ``cmmc course`` for each lesson it runs, so rows written inside a notebook name the command
COMMAND_ENV = "CMMC_COMMAND"


def source_commit() -> str | None:
    """The package's git commit (``+dirty`` with uncommitted changes to tracked files), or None
    outside a checkout. Changes under ``docs/results/`` do not count: the commands append their own
    rows there, and a result must not mark the code that wrote the next one as changed."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10).stdout.splitlines()
        dirty = [line for line in status if not line[3:].startswith("docs/results/")]
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine() -> dict:
    """Where a result was measured: host, CPU, cores, torch and Python versions."""
    import torch                  # here, not at the top: ``cmmc --help`` does not pay for torch
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def command_line() -> str:
    """The command being run: what ``cmmc course`` set for its lesson (:data:`COMMAND_ENV`), else
    the process's own command line (``cmmc ablate --preset cpu ...``)."""
    if os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    prog = Path(argv0).name
    if prog in ("cli.py", "__main__.py") and Path(argv0).parent.name == "cmmc_lib":    # python -m cmmc_lib.cli
        prog = "cmmc"
    return " ".join([prog, *sys.argv[1:]])


def stamp(command: str | None = None) -> dict:
    """``{"command", "commit", "machine"}`` for a result row (``command``: default :func:`command_line`)."""
    return {"command": command or command_line(), "commit": source_commit(), "machine": machine()}
