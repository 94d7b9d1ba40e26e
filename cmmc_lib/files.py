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

import errno
import json
import logging
import os
import pickle
import pickletools
import re
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


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
    in one ``os.replace``. A failed writer leaves nothing; a killed one at most a hidden
    ``.*.tmp-*`` file (:func:`remove_stale_temp_files`). A full disk is said as such, with the
    file: OSError(ENOSPC), whatever the writer raised. The one atomic writer of the package:
    checkpoints, configs, feature caches, videos, poses.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if _disk_full(exc, path):
            raise OSError(errno.ENOSPC, f"no space left on the device: could not write {path} "
                                        f"({_free_mib(path.parent)} MiB free there; {first_line(exc)})") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


TEMP_MARK = ".tmp-"


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the ``.*.tmp-*`` files :func:`atomic_write` left in ``folder`` when its writer was
    killed; call it only where no other writer can be at work (under the folder's lock)."""
    folder = Path(folder)
    stale = [p for p in folder.glob(f".*{TEMP_MARK}*") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d unfinished file(s) a killed writer left in %s", len(stale), folder)
    return stale


def _free_mib(folder: Path) -> int:
    try:
        return int(shutil.disk_usage(folder).free // 2**20)
    except OSError:
        return -1


def _disk_full(exc: BaseException, path: Path) -> bool:
    """Whether a write failed for want of space: ENOSPC, or torch's zip writer's own words for a
    write the device cut short ("unexpected pos", "file write failed")."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "unexpected pos" in str(exc) or "file write failed" in str(exc)


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
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): a write cut short, not a torch file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        names = [found.group(1)] if found else pickle_imports(path)
        if not names:                               # not a pickle we can read at all
            raise ValueError(f"{path} is not a readable torch file (corrupt, or not written by torch.save)") \
                from None
        raise UnsafeFileError(f"refusing to load {path}: it holds Python objects, not only tensors and "
                              f"plain data, so loading it could run code (it names {', '.join(names[:3])})") from None
    except Exception as exc:
        raise ValueError(f"{path} is not a readable torch file (truncated or corrupt): {type(exc).__name__}: "
                         f"{first_line(exc)}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a dict")
    return state


def pickle_imports(path: str | Path) -> list[str]:
    """The callables a *raw* pickle file would import to load (``module.name``), read with
    :mod:`pickletools` without running anything; [] for a zip file (torch's own format, whose
    unpickler names them itself) or for bytes that are not a pickle."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return []
    names, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(path.read_bytes()):
            if op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:                                  # truncated or not a pickle: what was read counts
        pass
    return names


# ----------------------------------------------------------------------------- append-only logs
def _scan(path: Path) -> tuple[list[dict], int, tuple[int, str] | None]:
    """The records of a JSONL file, the byte offset after its last good line, and its torn last
    line ``(line number, why)`` if any; ValueError with ``file:line`` for a bad line before the end."""
    data = path.read_bytes()
    records: list[dict] = []
    good_end, pos, lineno, bad = 0, 0, 0, None
    while pos < len(data):
        newline = data.find(b"\n", pos)
        end = len(data) if newline < 0 else newline + 1
        text, lineno = data[pos:end].strip(), lineno + 1
        pos = end
        if not text:
            if newline >= 0 and bad is None:
                good_end = end
            continue
        if bad is not None:
            raise ValueError(f"{path}:{bad[0]}: {bad[1]}; a bad line before the end of the log is damage, "
                             "not a torn last write: repair or remove it by hand")
        try:
            if newline < 0:
                raise ValueError("no newline at its end (a write cut short)")
            record = json.loads(text.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:              # JSONDecodeError and UnicodeDecodeError are ValueErrors
            bad = (lineno, f"not a complete JSON record ({e})")
            continue
        records.append(record)
        good_end = end
    return records, good_end, bad


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of an append-only JSONL log (``[]`` when it does not exist). A torn last line
    is dropped with a warning; a bad line before the end raises ValueError (``file:line``)."""
    path = Path(path)
    if not path.is_file():
        return []
    records, _, bad = _scan(path)
    if bad is not None:
        log.warning("%s:%d: dropped a torn last line (%s); the next append cuts it off", path, *bad)
    return records


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one record as one line (created with its folder if needed). A torn last line is cut
    off first (the log heals); a log damaged before its end is refused (ValueError, ``file:line``)."""
    path = Path(path)
    line = json.dumps(dict(record)) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        _, good_end, bad = _scan(path)
        if good_end < path.stat().st_size:
            if bad is not None:
                log.warning("%s:%d: cut off a torn last line (%s) before appending", path, *bad)
            os.truncate(path, good_end)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def between_markers(path: str | Path, begin: str, end: str) -> str:
    """The text of ``path`` between the lines ``begin`` and ``end`` (a generated section of a README)."""
    return Path(path).read_text().split(begin, 1)[1].split(end, 1)[0].lstrip("\n")


def replace_between_markers(path: str | Path, begin: str, end: str, body: str) -> bool:
    """Write ``body`` between the markers ``begin`` and ``end`` of ``path``, keeping the rest; True
    when the file changed."""
    path = Path(path)
    text = path.read_text()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    new = head + begin + "\n" + body + end + tail
    path.write_text(new)
    return new != text
