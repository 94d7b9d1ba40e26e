"""Run folders: everything a training run keeps on disk, owned by one object, :class:`RunFolder`.

```
runs/<name>/
  config.json            the full Config of the run
  metrics.csv            one row per step (kind=step) and per epoch (kind=epoch)
  checkpoints/last.pt    the newest checkpoint
  checkpoints/step_XXXXXXX.pt   the last ``run.keep_ckpts`` periodic ones
  eval.jsonl             one JSON object per evaluation (appended by ``cmmc eval``)
  features/              cached evaluation features
```
A checkpoint is a dict of plain data only (tensors, numbers, strings, lists, dicts): ``config``,
``step``, ``epoch``, ``batch`` (the position in the epoch), ``backbone`` (the query backbone's
``state_dict``: what evaluation uses), ``method`` (the whole method step: encoders, queue) and
``optimizer``. Every file is written through :func:`cmmc_lib.files.atomic_write` and every
checkpoint is read with ``weights_only=True`` (:func:`cmmc_lib.files.load_state`): nothing in a
run folder can run code. This module stores and loads state; turning a checkpoint into a network
is :mod:`cmmc_lib.ssl.factory`'s job.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .config import Config
from .files import (UnsafeFileError, append_jsonl, atomic_write, first_line, load_state, read_jsonl,
                    remove_stale_temp_files, save_state)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.jsonl"
CKPT_DIR = "checkpoints"
LAST = "last.pt"
FEATURES_DIR = "features"
CHECKPOINT_FORMAT = "cmmc-checkpoint-1"
METRIC_FIELDS = ["kind", "epoch", "step", "loss", "acc", "lam", "pos_sim", "neg_sim", "lr", "knn_r1",
                 "seconds", "positives", "mined_same_class", "queue_same_class", "warmup"]
_INT_FIELDS = ("epoch", "step")


# ----------------------------------------------------------------------------- metrics.csv
class MetricsLog:
    """``metrics.csv``: one row per step (kind=step) and per epoch (kind=epoch).

    Rows are appended under the file's own header (a file written by another version, with
    columns reordered or added, keeps them); :meth:`truncate_after` drops the rows a resumed run
    will write again, leaving every other row exactly as it was. A torn last row (a write cut
    short: no newline at the end of the file) is never read and is cut off before the next write.
    """

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._heal()
        header = self._header()
        if header is None or set(METRIC_FIELDS) - set(header):
            header = (header or []) + [f for f in METRIC_FIELDS if f not in (header or [])]
            self._rewrite(header, self._raw_rows())
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=header, extrasaction="ignore").writerow(row)

    def truncate_after(self, step: int, epoch: int) -> None:
        """Keep step rows up to ``step`` and epoch rows before ``epoch`` (the checkpoint's position)."""
        if not (self.enabled and self.path.is_file()):
            return
        header = self._header() or METRIC_FIELDS
        keep = [r for r in self._raw_rows() if _row_before(r, step, epoch, self.path)]
        self._rewrite(header, keep)

    def last_step(self) -> int | None:
        """The last step with an intact row (None: no file, or logging off). The loop writes a
        step's row before any checkpoint after it, so a checkpoint beyond this step lost rows."""
        if not (self.enabled and self.path.is_file()):
            return None
        steps = [int(r["step"]) for r in self._raw_rows() if r.get("kind") == "step" and r.get("step")]
        return max(steps, default=0)

    def read(self) -> list[dict[str, Any]]:
        """Rows with numbers parsed (empty cells -> None); columns we do not know stay strings."""
        return [_parse_row(r, n, self.path) for n, r in enumerate(self._raw_rows(), start=2)]

    def _header(self) -> list[str] | None:
        header = next(csv.reader(io.StringIO(self._complete_text(), newline="")), None)
        return header or None

    def _complete_text(self) -> str:
        """The file up to its last newline (a torn last row left out, with a warning)."""
        if not self.path.is_file():
            return ""
        with open(self.path, newline="") as f:            # bytes as they are: csv ends rows with \r\n
            text = f.read()
        if text and not text.endswith("\n"):
            log.warning("%s: leaving out a torn last row (a write cut short): %r", self.path,
                        text[text.rfind("\n") + 1:][:60])
            text = text[:text.rfind("\n") + 1]
        return text

    def _heal(self) -> None:
        """Cut a torn last row off the file before appending to it."""
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:
                os.truncate(self.path, len(self._complete_text().encode()))

    def _raw_rows(self) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self._complete_text(), newline="")))

    def _rewrite(self, header: list[str], rows: list[dict[str, str]]) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore", restval="")
                w.writeheader()
                w.writerows(rows)
        atomic_write(self.path, write)


def _row_before(row: dict[str, str], step: int, epoch: int, path: Path) -> bool:
    try:
        if row.get("kind") == "step":
            return int(row["step"]) <= step
        if row.get("kind") == "epoch":
            return int(row["epoch"]) < epoch
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: a row has no readable step/epoch ({row}); fix or delete the file") from None
    return True                                     # a kind we do not know: not ours to drop


def _parse_row(row: dict[str, str], line: int, path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "kind" or key not in METRIC_FIELDS:
            out[key] = value
        elif value in ("", None):
            out[key] = None
        else:
            try:
                out[key] = int(value) if key in _INT_FIELDS else float(value)
            except ValueError:
                raise ValueError(f"{path} line {line}: column {key!r} holds {value!r}, not a number") from None
    return out


# ----------------------------------------------------------------------------- the folder
class RunFolder:
    """A run folder (layout in the module docstring): config, checkpoints, metrics, evaluations."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metrics = MetricsLog(self.path / METRICS_FILE)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def eval_path(self) -> Path:
        return self.path / EVAL_FILE

    @property
    def features_dir(self) -> Path:
        return self.path / FEATURES_DIR

    def exists(self) -> bool:
        """True when the folder holds a run (a ``config.json``)."""
        return self.config_path.is_file()

    # ------------------------------------------------------------------ config
    def read_config(self) -> Config:
        if not self.exists():
            raise FileNotFoundError(f"{self.path} is not a run folder (no {CONFIG_FILE})")
        try:
            data = json.loads(self.config_path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
            return Config.from_dict(data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.config_path} is malformed: {first_line(exc)}") from None

    def write_config(self, cfg: Config) -> Path:
        return atomic_write(self.config_path, lambda tmp: tmp.write_text(cfg.to_json() + "\n"))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, which: str | int = "last") -> Path:
        """``which``: ``last``, a step number, a file name inside ``checkpoints/``, or a path to a
        file anywhere (``--checkpoint``)."""
        ckpts = self.path / CKPT_DIR
        if which == "last":
            return ckpts / LAST
        if isinstance(which, int) or str(which).isdigit():
            return ckpts / f"step_{int(which):07d}.pt"
        if (ckpts / str(which)).is_file() or os.sep not in str(which):
            return ckpts / str(which)
        return Path(which)

    def step_checkpoints(self) -> list[Path]:
        """The periodic checkpoints, oldest first."""
        return sorted((self.path / CKPT_DIR).glob("step_*.pt"))

    def has_checkpoint(self, which: str | int = "last") -> bool:
        return self.checkpoint_path(which).is_file()

    def save_checkpoint(self, state: dict[str, Any], step: int | None = None, keep: int = 2) -> Path:
        """Write ``state`` as ``last.pt`` (and as ``step_<step>.pt`` when ``step`` is given, keeping
        the newest ``keep`` of those). Atomic: a crash leaves the previous files intact."""
        state = {"format": CHECKPOINT_FORMAT, **state}
        if step is not None:
            save_state(state, self.checkpoint_path(step))
            for old in self.step_checkpoints()[:-keep] if keep > 0 else self.step_checkpoints():
                old.unlink(missing_ok=True)
        return save_state(state, self.checkpoint_path("last"))

    def load_checkpoint(self, which: str | int = "last", map_location: str | torch.device = "cpu",
                        needs: tuple[str, ...] = ("config", "backbone")) -> dict[str, Any]:
        """A checkpoint, loaded safely, with the entries ``needs`` checked (one-line errors)."""
        path = self.checkpoint_path(which)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint {path.name} in {path.parent}")
        state = load_state(path, map_location)
        missing = [k for k in needs if k not in state]
        if missing:
            raise ValueError(f"{path} is not a cmmc training checkpoint: it has no {', '.join(map(repr, missing))} "
                             f"(it holds: {', '.join(map(str, list(state)[:6])) or 'nothing'})")
        return state

    def resume_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The checkpoint a resumed run continues from: ``last.pt``, else (with a warning) the newest
        intact step checkpoint, else None (nothing was saved: start over).

        A torn or empty checkpoint (a write cut short) is passed over with a warning for the next
        older one; a file that would run code (:class:`~cmmc_lib.files.UnsafeFileError`) is never
        passed over: it stops the resume. A checkpoint past the last intact row of ``metrics.csv``
        (a torn row) is passed over for an older one, so the steps in between are trained and logged
        again; when there is none, the newest is used and the lost rows are named in a warning.
        ValueError when checkpoints exist but none is intact."""
        needs = ("config", "method", "optimizer", "step", "epoch", "batch")
        candidates = [self.checkpoint_path("last")] * self.has_checkpoint("last") + self.step_checkpoints()[::-1]
        broken, logged, newest = [], self.metrics.last_step(), None
        for path in candidates:
            try:
                state = self.load_checkpoint(path.name, map_location, needs)
            except UnsafeFileError:
                raise
            except ValueError as exc:
                log.warning("%s: passing over an unreadable checkpoint: %s", self.path, exc)
                broken.append(path.name)
                continue
            if logged is not None and state["step"] > logged:
                newest = newest or (path.name, state)
                continue
            if path.name != LAST:
                log.warning("%s: resuming from %s (%s)", self.path, path.name,
                            f"metrics.csv ends at step {logged}" if newest else
                            f"{', '.join(broken)} unreadable" if broken else f"no {LAST}")
            return state
        if newest:
            log.warning("%s: resuming from %s at step %d; the rows of steps %d-%d in metrics.csv were lost",
                        self.path, newest[0], newest[1]["step"], logged + 1, newest[1]["step"])
            return newest[1]
        if broken:
            raise ValueError(f"{self.path} holds no intact checkpoint ({', '.join(broken)} are unreadable): delete "
                             f"its checkpoints/ folder to start the run over")
        return None

    def is_finished(self) -> bool:
        """True when the folder holds the final checkpoint of a completed run (train-or-load).
        A checkpoint that would run code to load is an error, not an unfinished run."""
        try:
            ckpt = self.load_checkpoint("last", needs=("config", "epoch"))
            return ckpt["epoch"] >= ckpt["config"]["optim"]["epochs"]
        except UnsafeFileError:
            raise
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return False

    # ------------------------------------------------------------------ evaluations
    def append_eval(self, result: dict[str, Any]) -> None:
        """Add one evaluation to ``eval.jsonl`` (an append-only log: a torn last line heals)."""
        append_jsonl(self.eval_path, result)

    def read_evals(self) -> list[dict[str, Any]]:
        return read_jsonl(self.eval_path)

    # ------------------------------------------------------------------ one writer
    def lock(self, command: str = "") -> FolderLock:
        """The run folder's lock (:class:`FolderLock`): one writer at a time."""
        return FolderLock(self.path, "run folder", command)

    def remove_stale_files(self) -> None:
        """Delete what killed writers left half-written (``.*.tmp-*``); only under :meth:`lock`."""
        for folder in (self.path, self.path / CKPT_DIR, self.features_dir):
            remove_stale_temp_files(folder)


class FolderLockedError(ValueError):
    """Another process holds the folder's lock (exit status 2 at the command line)."""


class FolderLock:
    """An OS lock (``fcntl.flock``) on ``<folder>/.lock``, held while one process writes the folder.

    A second writer fails at once with :class:`FolderLockedError`, naming the holder (its process
    id, host, command and start time, which the holder writes into the file). The OS drops the lock
    when its process ends, however it ends (``kill -9`` included), so a stale lock cannot exist.
    A folder this lock created and that holds nothing else when the lock is released (a start that
    failed before writing anything) is removed again.
    """

    def __init__(self, folder: str | Path, what: str = "folder", command: str = ""):
        self.folder, self.what = Path(folder), what
        self.command = command or " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        self._file = None

    @property
    def path(self) -> Path:
        return self.folder / ".lock"

    def __enter__(self) -> "FolderLock":
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise FolderLockedError(f"{self.what} {self.folder} is in use by {holder}: wait for it to finish "
                                    f"or choose another folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} ({self.command}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> bool:
        f, self._file = self._file, None
        if f is not None:
            if self.created and [p.name for p in self.folder.iterdir()] == [self.path.name]:
                self.path.unlink(missing_ok=True)        # a start that wrote nothing leaves nothing
                self.folder.rmdir()
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        return False


# ----------------------------------------------------------------------------- shortcuts
def load_config(run_dir: str | Path) -> Config:
    return RunFolder(run_dir).read_config()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of a run's ``metrics.csv`` with numbers parsed (empty cells -> None)."""
    return RunFolder(run_dir).metrics.read()
