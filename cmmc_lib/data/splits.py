"""Official split files of UCF101, HMDB51 and NTU-60: one parser per format, labels 0-based.

Every parser returns a :class:`Split`: the class names and, per subset (``"train"``,
``"test"``), a list of :class:`VideoEntry` whose ``relpath`` is relative to ``<root>/videos``
(NTU-60: to the skeleton folder). Formats, verbatim as the datasets ship them:

* UCF101 (``ucfTrainTestlist``): ``classInd.txt`` ("1 ApplyEyeMakeup"), ``trainlist0k.txt``
  ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1", 1-based label) and ``testlist0k.txt``
  (no label: the label comes from the folder name through ``classInd``). CRLF line endings.
  The folder ``HandstandPushups`` holds files spelt ``v_HandStandPushups_*``: class names are
  matched case-insensitively. ``gXX`` in the name is the sibling group (same actor/scene).
  The synthetic dataset uses this format too.
* HMDB51 (``testTrainMulti_7030_splits``): ``<class>_test_split<k>.txt``, one line
  ``<video>.avi <0|1|2>`` (0 unused, 1 train, 2 test); class order from ``class_list.txt``
  when present, else the sorted class names.
* NTU-60: no split files; the sample name ``SsssCcccPpppRrrrAaaa`` decides. Cross-subject
  trains on 20 performers, cross-view trains on cameras 2 and 3 (label = action - 1).

A malformed line raises ``ValueError("<file>:<line>: ...")``; a line pointing outside the
root (absolute path, ``..``) is rejected the same way.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable

from .video import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

SUBSETS = ("train", "test")

#: NTU RGB+D 60 cross-subject: performers (P) in the training set (Shahroudy et al. 2016).
NTU60_XSUB_TRAIN_SUBJECTS = frozenset(
    (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38))
#: NTU RGB+D 60 cross-view: cameras (C) in the training set; camera 1 is the test view.
NTU60_XVIEW_TRAIN_CAMERAS = frozenset((2, 3))
NTU60_NUM_CLASSES = 60

_GROUP_RE = re.compile(r"_g(\d+)_c(\d+)", re.IGNORECASE)
_NTU_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


@dataclass(frozen=True)
class VideoEntry:
    """One video of a split.

    relpath: POSIX path relative to the videos folder, as the split file spells it
             (``"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"``).
    label:   0-based class index.
    video:   the video id, the file name without extension (``"v_ApplyEyeMakeup_g08_c01"``);
             flow lives in ``<root>/flow/<video>/``, pose in ``<root>/pose/<video>.npy``.
    group:   sibling group (UCF101 ``gXX``), -1 when the format has none.
    """
    relpath: str
    label: int
    video: str
    group: int = -1


@dataclass
class Split:
    """Class names plus the entries of each subset of one official split."""
    dataset: str
    split: int | str
    classes: list[str]
    train: list[VideoEntry] = field(default_factory=list)
    test: list[VideoEntry] = field(default_factory=list)

    def subset(self, name: str) -> list[VideoEntry]:
        if name not in SUBSETS:
            raise ValueError(f"subset must be 'train' or 'test', got {name!r}")
        return self.train if name == "train" else self.test


# ----------------------------------------------------------------------------- helpers
def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines; CRLF, BOM tolerated."""
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    text = path.read_bytes().decode("utf-8-sig", errors="strict")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def safe_relpath(rel: str, where: str = "") -> str:
    """``rel`` as a clean POSIX relative path, or ValueError if it leaves the root.

    Rejects absolute paths (``/x``, ``C:\\x``, ``\\\\server``) and any ``..`` component;
    backslashes are read as separators. ``where`` ("file:line") prefixes the error message.
    """
    prefix = f"{where}: " if where else ""
    norm = rel.replace("\\", "/")
    if (not norm or PurePosixPath(norm).is_absolute() or PureWindowsPath(rel).is_absolute()
            or PureWindowsPath(rel).drive):
        raise ValueError(f"{prefix}path {rel!r} must be relative to the dataset root")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"{prefix}path {rel!r} points outside the dataset root ('..')")
    if not parts:
        raise ValueError(f"{prefix}empty path {rel!r}")
    return "/".join(parts)


def video_id(relpath: str) -> str:
    """File name without extension: ``"A/v_A_g01_c01.avi" -> "v_A_g01_c01"``."""
    return PurePosixPath(relpath).stem


def parse_group(name: str) -> int:
    """The sibling group ``gXX`` of a UCF101-style name, -1 when the name has none."""
    m = _GROUP_RE.search(name)
    return int(m.group(1)) if m else -1


def source_of(video: str) -> str:
    """The source video a clip was cut from: a UCF101-style ``v_<Class>_gXX_cYY`` without its
    ``_cYY`` (every clip of a group comes from one long video, as CoCLR counts them); any other
    name is its own source."""
    m = _GROUP_RE.search(video)
    return video[:m.start()] + video[m.start():m.end()].rsplit("_", 1)[0] if m else video


# ----------------------------------------------------------------------------- UCF101
def read_ucf101_classes(path: Path | str) -> list[str]:
    """Class names from ``classInd.txt`` ("<1-based index> <name>"), index order."""
    path = Path(path)
    classes: dict[int, str] = {}
    for n, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{n}: expected '<index> <ClassName>', got {line!r}")
        idx = int(parts[0])
        if idx in classes:
            raise ValueError(f"{path}:{n}: class index {idx} appears twice")
        classes[idx] = parts[1]
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise ValueError(f"{path}: class indices must be 1..{len(classes)} without gaps")
    if not classes:
        raise ValueError(f"{path}: no classes")
    return [classes[i] for i in range(1, len(classes) + 1)]


def read_ucf101_list(path: Path | str, classes: list[str]) -> list[VideoEntry]:
    """Entries of a ``trainlist0k.txt`` / ``testlist0k.txt`` file.

    A line is ``<Class>/<file> [<1-based label>]``. Without a label the class comes from the
    folder name (case-insensitive, so ``HandStandPushups`` finds ``HandstandPushups``); with
    one, it must agree with the folder when the folder names a known class.
    """
    path = Path(path)
    by_name = {c.lower(): i for i, c in enumerate(classes)}
    entries = []
    for n, line in _read_lines(path):
        where = f"{path}:{n}"
        parts = line.split()
        if len(parts) not in (1, 2):
            raise ValueError(f"{where}: expected '<Class>/<video> [label]', got {line!r}")
        rel = safe_relpath(parts[0], where)
        folder = rel.split("/")[0].lower() if "/" in rel else None
        folder_label = by_name.get(folder) if folder else None
        if len(parts) == 2:
            if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
                raise ValueError(f"{where}: label {parts[1]!r} is not in 1..{len(classes)}")
            label = int(parts[1]) - 1
            if folder_label is not None and folder_label != label:
                raise ValueError(f"{where}: label {parts[1]} ({classes[label]}) disagrees with "
                                 f"the folder {rel.split('/')[0]!r}")
        elif folder_label is not None:
            label = folder_label
        else:
            raise ValueError(f"{where}: no label and the folder of {rel!r} is not a class "
                             "of classInd.txt")
        entries.append(VideoEntry(rel, label, video_id(rel), parse_group(video_id(rel))))
    return entries


def find_split_dir(root: Path | str, dataset: str) -> Path:
    """The folder holding the split files of ``root``: ``<root>/splits`` or, as unpacked from
    the official archives, ``<root>/splits/ucfTrainTestlist`` / ``testTrainMulti_7030_splits``."""
    root = Path(root)
    probe = "classInd.txt" if dataset in ("ucf101", "synthetic") else "*_test_split1.txt"
    candidates = [root / "splits", root / "splits" / "ucfTrainTestlist",
                  root / "splits" / "testTrainMulti_7030_splits", root / "ucfTrainTestlist",
                  root / "testTrainMulti_7030_splits", root]
    for c in candidates:
        if c.is_dir() and any(c.glob(probe)):
            return c
    raise FileNotFoundError(f"no {dataset} split files under {root} (looked for {probe} in "
                            f"{root / 'splits'}); see data/README.md")


def load_ucf101_split(split_dir: Path | str, split: int = 1, dataset: str = "ucf101") -> Split:
    """UCF101 split ``split`` (1..3): ``classInd.txt``, ``trainlist0k.txt``, ``testlist0k.txt``."""
    split_dir = Path(split_dir)
    classes = read_ucf101_classes(split_dir / "classInd.txt")
    return Split(dataset, split, classes,
                 train=read_ucf101_list(split_dir / f"trainlist{split:02d}.txt", classes),
                 test=read_ucf101_list(split_dir / f"testlist{split:02d}.txt", classes))


# ----------------------------------------------------------------------------- HMDB51
def load_hmdb51_split(split_dir: Path | str, split: int = 1) -> Split:
    """HMDB51 split ``split`` from the ``<class>_test_split<k>.txt`` files present.

    Classes (and so labels) follow ``class_list.txt`` when present, else the sorted class
    names of the split files; a listed class without a split file is warned about and has
    no entries. Marker 1 = train, 2 = test, 0 = unused. ``relpath`` is ``<class>/<video>``.
    """
    split_dir = Path(split_dir)
    suffix = f"_test_split{split}.txt"
    files = {p.name[: -len(suffix)]: p for p in sorted(split_dir.glob(f"*{suffix}"))}
    if not files:
        raise FileNotFoundError(f"no HMDB51 split files *{suffix} in {split_dir}")
    class_list = split_dir / "class_list.txt"
    if class_list.is_file():
        classes = [line for _, line in _read_lines(class_list)]
        unknown = sorted(set(files) - set(classes))
        if unknown:
            raise ValueError(f"{split_dir}: split files for classes not in class_list.txt: "
                             + ", ".join(unknown[:5]))
    else:
        classes = sorted(files)
    absent = [c for c in classes if c not in files]
    if absent:
        log.warning("HMDB51 split %d: %d classes have no split file (%s...)", split,
                    len(absent), ", ".join(absent[:3]))
    out = Split("hmdb51", split, classes)
    for label, cls in enumerate(classes):
        if cls not in files:
            continue
        path = files[cls]
        for n, line in _read_lines(path):
            where = f"{path}:{n}"
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{where}: expected '<video>.avi <0|1|2>', got {line!r}")
            name = safe_relpath(parts[0], where)
            if "/" in name:
                raise ValueError(f"{where}: expected a bare file name, got {parts[0]!r}")
            entry = VideoEntry(f"{cls}/{name}", label, video_id(name), -1)
            if parts[1] == "1":
                out.train.append(entry)
            elif parts[1] == "2":
                out.test.append(entry)
    return out


# ----------------------------------------------------------------------------- NTU-60
@dataclass(frozen=True)
class NTUName:
    """The fields of an NTU RGB+D sample name ``SsssCcccPpppRrrrAaaa`` (all 1-based)."""
    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    @property
    def label(self) -> int:
        return self.action - 1

    @property
    def sample(self) -> str:
        """The sample id ``SsssCcccPpppRrrrAaaa``."""
        return (f"S{self.setup:03d}C{self.camera:03d}P{self.performer:03d}R{self.replication:03d}"
                f"A{self.action:03d}")

    @property
    def performance(self) -> str:
        """The performance the three cameras film (the sample id without its camera): one source
        video in CoCLR's sense."""
        return f"S{self.setup:03d}P{self.performer:03d}R{self.replication:03d}A{self.action:03d}"


def ntu_sample_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(parsed, unparsed)``: the names that are NTU sample names, and the others, in order."""
    parsed, unparsed = [], []
    for name in names:
        try:
            parse_ntu_name(name)
            parsed.append(name)
        except ValueError:
            unparsed.append(name)
    return parsed, unparsed


def parse_ntu_name(name: str) -> NTUName:
    """Fields of ``S001C002P003R001A017`` (any prefix/suffix such as ``.skeleton`` allowed)."""
    m = _NTU_RE.search(name)
    if not m:
        raise ValueError(f"{name!r} is not an NTU RGB+D sample name (SsssCcccPpppRrrrAaaa)")
    return NTUName(*(int(g) for g in m.groups()))


def ntu60_split(names: Iterable[str], protocol: str = "xsub") -> Split:
    """NTU-60 cross-subject (``"xsub"``) or cross-view (``"xview"``) split of sample names.

    ``names`` are file names (``S001C001P001R001A001.skeleton``) relative to the skeleton
    folder; samples with action > 60 (NTU-120) are left out with a warning; names that do not
    parse raise ValueError. Groups are -1.
    """
    if protocol not in ("xsub", "xview"):
        raise ValueError(f"NTU-60 protocol must be 'xsub' or 'xview', got {protocol!r}")
    out = Split("ntu60", protocol, [f"A{a:03d}" for a in range(1, NTU60_NUM_CLASSES + 1)])
    beyond = 0
    for name in names:
        rel = safe_relpath(name)
        f = parse_ntu_name(PurePosixPath(rel).name)
        if f.action > NTU60_NUM_CLASSES:
            beyond += 1
            continue
        is_train = (f.performer in NTU60_XSUB_TRAIN_SUBJECTS if protocol == "xsub"
                    else f.camera in NTU60_XVIEW_TRAIN_CAMERAS)
        stem = PurePosixPath(rel).name.split(".")[0]
        (out.train if is_train else out.test).append(VideoEntry(rel, f.label, stem, -1))
    if beyond:
        log.warning("NTU-60 %s: %d samples with action > 60 (NTU-120) left out", protocol, beyond)
    return out


# ----------------------------------------------------------------------------- dispatch
def load_split(dataset: str, root: Path | str, split: int = 1) -> Split:
    """The official split of a prepared root (UCF101 / synthetic / HMDB51; see data/README.md)."""
    if dataset in ("ucf101", "synthetic"):
        return load_ucf101_split(find_split_dir(root, dataset), split, dataset=dataset)
    if dataset == "hmdb51":
        return load_hmdb51_split(find_split_dir(root, dataset), split)
    raise ValueError(f"unknown dataset {dataset!r}; split files exist for ucf101, synthetic, "
                     "hmdb51 (ntu60: use ntu60_split on the sample names)")


class VideoIndex:
    """Finds the file of a split entry under a videos folder, tolerating real-world layouts.

    Lookup order: the exact relpath; the relpath case-insensitively (``HandStandPushups``);
    the file name anywhere below the folder (a flat ``videos/`` without class folders); the
    video id with any video extension (``.avi`` listed, ``.mp4`` on disk). The folder is
    listed once.
    """

    def __init__(self, videos_dir: Path | str):
        self.videos_dir = Path(videos_dir)
        self._by_rel: dict[str, Path] = {}
        self._by_name: dict[str, Path] = {}
        self._by_stem: dict[str, Path] = {}
        if not self.videos_dir.is_dir():
            return
        for path in sorted(self.videos_dir.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(self.videos_dir).as_posix().lower()
            self._by_rel.setdefault(rel, path)
            self._by_name.setdefault(path.name.lower(), path)
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                self._by_stem.setdefault(path.stem.lower(), path)

    def __len__(self) -> int:
        return len(self._by_rel)

    def find(self, relpath: str) -> Path | None:
        """The file of ``relpath``, or None when it is not there."""
        key = relpath.lower()
        if key in self._by_rel:
            return self._by_rel[key]
        name = PurePosixPath(key).name
        return self._by_name.get(name) or self._by_stem.get(PurePosixPath(name).stem)
