"""What the ``cmmc`` command writes to the terminal: one-line messages on stderr that start a
line of their own even under a progress bar, log records routed through them, and the result on
stdout as strict JSON or text, surviving a reader that has gone away."""
from __future__ import annotations

import json
import logging
import math
import numbers
import os
import sys
from typing import Any

from tqdm.auto import tqdm


class BarSafeHandler(logging.Handler):
    """Log records on stderr through :func:`say`: a warning during training starts a line of its
    own instead of being glued to the progress bar's."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            say(self.format(record))
        except Exception:                           # logging must never raise
            self.handleError(record)


def say(line: str) -> None:
    """One line on stderr, on a line of its own even while a progress bar is drawn there."""
    tqdm.write(line, file=sys.stderr)


def strict_json(value: Any) -> str:
    """``value`` as one line of strict JSON (RFC 8259): NaN and +-Infinity, which Python's json
    would write as bare words that other parsers reject, become null; numpy scalars become
    numbers; anything else json cannot write becomes its str()."""
    return json.dumps(finite_or_none(value), allow_nan=False, default=str)


def finite_or_none(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, tuples, scalars) with non-finite floats as None."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def write_stdout(text: str) -> bool:
    """Print ``text`` and flush. False when stdout is closed or its reader has gone (e.g.
    ``cmmc ... | head -c 10``): then, as the Python docs advise for BrokenPipeError (signal
    module, "Note on SIGPIPE"), stdout is pointed at /dev/null so that the flush at exit
    cannot fail again, and the caller exits non-zero without a traceback."""
    if sys.stdout is None:                          # started with stdout closed (>&-)
        print("cmmc: error: stdout is closed: the result cannot be printed", file=sys.stderr)
        return False
    try:
        sys.stdout.write(text + "\n")             # one write: whole lines even unbuffered
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (AttributeError, OSError, ValueError):  # not a real file (in-process capture)
            pass
        return False
