"""Run folders: where a training run keeps its config, checkpoints and metrics.

```
runs/<name>/
  config.json            the full Config of the run
  metrics.csv            one row per logged step / epoch (see ``cmmc_lib.train``)
  checkpoints/last.pt    the newest checkpoint (written atomically)
  checkpoints/step_XXXXXXX.pt
  eval.jsonl             one JSON object per evaluation (appended by ``cmmc eval``)
```
A checkpoint is a dict with ``config``, ``step``, ``epoch``, ``backbone`` (the query backbone's
``state_dict``: what downstream evaluation uses), ``method`` (the whole method step), and the
optimiser / scheduler / RNG state needed to resume exactly.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

from .config import MODALITY_CHANNELS, Config

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.jsonl"
CKPT_DIR = "checkpoints"
LAST = "last.pt"


class UnsafeFileError(ValueError):
    """A file that would need to run code to load (not only tensors, numbers, strings, lists, dicts)."""


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` so that a reader sees the old file or the complete new one, never half.

    ``write(tmp)`` fills a uniquely named temporary file beside ``path`` (its name keeps
    ``path``'s suffix, since encoders and ``np.save`` go by it), which then replaces ``path``
    in one ``os.replace``. A failed or killed writer leaves at most a hidden ``.*.tmp-*`` file.
    The one atomic writer of the package: checkpoints, configs, feature caches, videos, poses.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_state(state: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` atomically. ``state`` must hold only tensors, numbers, strings, bools,
    None, lists, tuples and dicts: what :func:`load_state` accepts."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a file written by :func:`save_state` with ``weights_only=True``: nothing in the file
    is executed. Raises FileNotFoundError, :class:`UnsafeFileError` (a pickled object that is not
    plain data) or ValueError (not a torch file), each with one line naming the file."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it names {found.group(1)})" if found else ""
        raise UnsafeFileError(f"refusing to load {path}: it holds Python objects, not only tensors and "
                              f"plain data, so loading it could run code{what}") from None
    except Exception as exc:
        raise ValueError(f"{path} is not a readable torch file: {type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a dict")
    return state


def save_config(run_dir: str | Path, cfg: Config) -> Path:
    path = Path(run_dir) / CONFIG_FILE
    atomic_write_bytes(path, cfg.to_json().encode())
    return path


def load_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    return Config.from_dict(json.loads(path.read_text()))


def checkpoint_path(run_dir: str | Path, which: str = "last") -> Path:
    """``which`` is ``last``, a step number, or a file name inside ``checkpoints/``."""
    ckpts = Path(run_dir) / CKPT_DIR
    if which == "last":
        return ckpts / LAST
    if str(which).isdigit():
        return ckpts / f"step_{int(which):07d}.pt"
    return ckpts / which


def load_checkpoint(run_dir: str | Path, which: str = "last",
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = checkpoint_path(run_dir, which)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path.name} in {Path(run_dir) / CKPT_DIR}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a truncated file from a killed writer cannot happen (atomic), but a foreign one can
        raise ValueError(f"checkpoint {path} cannot be read: {exc}") from exc


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def in_channels(modality: str) -> int:
    if modality not in MODALITY_CHANNELS:
        raise ValueError(f"modality {modality!r} has no 3-D backbone input; choose rgb or flow")
    return MODALITY_CHANNELS[modality]


def load_backbone(run_dir: str | Path, which: str = "last", map_location: str = "cpu"):
    """The trained query backbone of a run and its config: ``(backbone in eval mode, Config)``."""
    from .models import build_backbone

    cfg = load_config(run_dir)
    ckpt = load_checkpoint(run_dir, which, map_location)
    backbone = build_backbone(cfg.model.backbone, in_channels(cfg.ssl.modality), width=cfg.model.width)
    backbone.load_state_dict(ckpt["backbone"])
    return backbone.eval(), cfg


def append_eval(run_dir: str | Path, result: dict[str, Any]) -> None:
    with open(Path(run_dir) / EVAL_FILE, "a") as f:
        f.write(json.dumps(result, sort_keys=True) + "\n")
