"""Files written so that nothing is half-written and nothing read can run code.

* :func:`atomic_write`: the one atomic writer of the package (checkpoints, configs, feature caches,
  videos, poses, frame caches, benchmark reports): a reader sees the old file or the complete new
  one, never half.
* :func:`save_state` / :func:`load_state`: ``torch.save`` atomically, and ``torch.load`` with
  ``weights_only=True`` (plain data only: a file that would need to run code to load is refused
  with :class:`UnsafeFileError`).

Low in the house: imports nothing of the package, so data writers, runs and benchmarks share it.
"""
from __future__ import annotations

import os
import pickle
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch


class UnsafeFileError(ValueError):
    """A file that would need to run code to load (not only tensors, numbers, strings, lists, dicts)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
    import torch     # on use: the dataset writers' spawned workers write files without torch (~3 s each)
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a file written by :func:`save_state` with ``weights_only=True``: nothing in the file
    is executed. Raises FileNotFoundError, :class:`UnsafeFileError` (a pickled object that is not
    plain data) or ValueError (not a torch file), each with one line naming the file."""
    import torch     # on use, as in save_state
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:                           # not a pickle we can read at all
            raise ValueError(f"{path} is not a readable torch file (corrupt, or not written by torch.save)") \
                from None
        raise UnsafeFileError(f"refusing to load {path}: it holds Python objects, not only tensors and "
                              f"plain data, so loading it could run code (it names {found.group(1)})") from None
    except Exception as exc:
        raise ValueError(f"{path} is not a readable torch file: {type(exc).__name__}: "
                         f"{first_line(exc)}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a dict")
    return state
