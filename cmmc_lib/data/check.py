"""What a prepared dataset root holds against its official split (``cmmc data check``).

:func:`check_dataset` returns a JSON-serialisable dict (plain str / int / bool / list / None)
that reads well when printed::

    {"dataset": "ucf101", "root": "data/ucf101", "split": 1, "ok": False, "classes": 101,
     "subsets": {"train": {"expected": 9537, "found": 9530, "missing": 7, "unreadable": None,
                           "with_flow": 0, "missing_examples": [...], "unreadable_examples": []},
                 "test": {...}},
     "notes": ["..."]}

``unreadable`` is None unless ``decode=True`` (every found video is then decoded fully: one
that cannot be opened, whose decoder fails or reports errors, or that ends before the frames
its container promises is unreadable, see ``video.probe_video``; for NTU-60 every skeleton
file is parsed, and ``no_bodies`` counted per subset). NTU-60 roots may hold raw ``.skeleton``
files, ST-GCN's preprocessed arrays (``<root>/xsub/train_data.npy`` ...) and/or combined
pickles (``<root>/preprocessed/*.pkl``, read only with ``trust_pickle=True``), and RGB videos
(``<root>/rgb``): ``sources`` says what is there and which one training reads. ``ok`` is False when any expected video
is missing or unreadable (``cmmc data check`` then exits with status 1).
A root or split folder that cannot be used raises FileNotFoundError with a one-line message;
malformed split lines raise ValueError.
"""
from __future__ import annotations

from pathlib import Path

from ..registry import DATASETS, lookup
from .datasets import NTU_RGB_FOLDERS
from .skeleton import read_ntu_skeleton
from .skeleton_clips import (NTU_PROTOCOLS, find_ntu_arrays, find_ntu_pickles, find_skeleton_folder,
                             ntu60_source)
from .splits import VideoIndex, load_split, ntu60_split, ntu_sample_names, parse_ntu_name
from .video import probe_videos

EXAMPLES = 5
#: Videos per (dataset, split) in the official split files: (train, test).
OFFICIAL_COUNTS = {
    ("ucf101", 1): (9537, 3783), ("ucf101", 2): (9586, 3734), ("ucf101", 3): (9624, 3696),
    ("hmdb51", 1): (3570, 1530), ("hmdb51", 2): (3570, 1530), ("hmdb51", 3): (3570, 1530),
}
#: NTU-60 samples per protocol (Shahroudy et al. 2016): skeleton files in the official archive;
#: and the samples with bodies in them (302 have none; what ST-GCN / SkeletonCLR train and test on).
NTU60_COUNTS = {"xsub": (40320, 16560), "xview": (37920, 18960)}
NTU60_COUNTS_WITH_SKELETON = {"xsub": (40091, 16487), "xview": (37646, 18932)}


def check_dataset(dataset: str, root: Path | str, split: int = 1, decode: bool = False,
                  progress: bool = False, trust_pickle: bool = False) -> dict:
    """Counts of expected / found / missing (/ unreadable) videos per subset of a root."""
    lookup(DATASETS, dataset, "dataset")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist (see data/README.md)")
    if dataset == "ntu60":
        return _check_ntu60(root, decode, trust_pickle)
    return _check_videos(dataset, root, split, decode, progress)


def _subset_report(expected: int, found: list, missing: list[str],
                   unreadable: list[str] | None, with_flow: int | None) -> dict:
    report = {"expected": expected, "found": len(found), "missing": len(missing),
              "unreadable": None if unreadable is None else len(unreadable)}
    if with_flow is not None:
        report["with_flow"] = with_flow
    report["missing_examples"] = missing[:EXAMPLES]
    report["unreadable_examples"] = (unreadable or [])[:EXAMPLES]
    return report


def _check_videos(dataset: str, root: Path, split: int, decode: bool, progress: bool) -> dict:
    videos_dir = root / "videos"
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"{videos_dir} does not exist: put the videos there "
                                "(see data/README.md)")
    split_info = load_split(dataset, root, split)
    index = VideoIndex(videos_dir)
    flow_dir = root / "flow"
    out = {"dataset": dataset, "root": str(root), "split": split, "ok": True,
           "classes": len(split_info.classes), "subsets": {}, "notes": []}
    for subset in ("train", "test"):
        entries = split_info.subset(subset)
        paths = [index.find(e.relpath) for e in entries]
        found = [(e, p) for e, p in zip(entries, paths) if p is not None]
        missing = [e.relpath for e, p in zip(entries, paths) if p is None]
        unreadable = None
        if decode:
            probes = probe_videos([p for _, p in found], progress=progress)
            unreadable = [f"{e.relpath}: {r['errors'][0]}" for (e, _), r in zip(found, probes)
                          if r["errors"] or r["frames"] == 0]
        with_flow = (sum((flow_dir / e.video).is_dir() for e, _ in found)
                     if flow_dir.is_dir() else 0)
        out["subsets"][subset] = _subset_report(len(entries), found, missing, unreadable,
                                                with_flow)
        if missing or unreadable:
            out["ok"] = False
        if not entries:                               # an empty list cannot train or test anything
            out["ok"] = False
            out["notes"].append(f"split {split} lists no {subset} videos: its {subset} list file is empty")
    official = OFFICIAL_COUNTS.get((dataset, split))
    counts = (out["subsets"]["train"]["expected"], out["subsets"]["test"]["expected"])
    if official and counts != official:
        out["notes"].append(f"the split files list {counts[0]} / {counts[1]} videos; the "
                            f"official {dataset} split {split} has {official[0]} / {official[1]}")
    if not flow_dir.is_dir():
        out["notes"].append(f"no {flow_dir}: extract flow with `cmmc flow extract {videos_dir} "
                            f"--out {flow_dir} --method tvl1` to train on flow")
    if not decode:
        out["notes"].append("unreadable not checked: pass decode=True (--decode) to decode "
                            "every video")
    return out


def _ntu_status(path: Path) -> str | None:
    """None for a skeleton file that parses and has a body; else why not ("no bodies" for
    the samples NTU ships without skeleton data)."""
    try:
        seq = read_ntu_skeleton(path)
    except (ValueError, OSError) as e:
        return str(e)
    if not any(bodies for bodies in seq.frames):
        return "no bodies"
    return None


def _ntu_sources(root: Path, trust_pickle: bool) -> tuple[dict, dict]:
    """What an NTU-60 root holds besides raw skeletons: ``(sources, counts)``; ``counts`` maps
    ``protocol/subset`` to the samples of the preprocessed input training would read."""
    folder = find_skeleton_folder(root)
    rgb = next((root / f for f in NTU_RGB_FOLDERS if (root / f).is_dir()), None)
    rgb_count = 0
    if rgb is not None:
        for p in rgb.iterdir():
            try:
                parse_ntu_name(p.name)
                rgb_count += 1
            except ValueError:
                pass
    sources = {"skeletons": len(list(folder.glob("*.skeleton"))) if folder else 0,
               "arrays": {}, "pickle": [str(p) for p in find_ntu_pickles(root)], "rgb_videos": rgb_count}
    counts: dict[str, int] = {}
    for split, protocol in NTU_PROTOCOLS.items():
        for subset in ("train", "test"):
            try:
                files = find_ntu_arrays(root, protocol, subset)
            except FileNotFoundError as e:
                sources["arrays"][f"{protocol}/{subset}"] = str(e)
                continue
            if files:
                sources["arrays"][f"{protocol}/{subset}"] = str(files[0])
    kind = None
    for k in ("arrays", "skeletons", "pickle"):
        if (k == "arrays" and sources["arrays"]) or (k != "arrays" and sources[k]):
            kind = k
            break
    sources["training_reads"] = kind
    if kind in ("arrays", "pickle"):
        for split, protocol in NTU_PROTOCOLS.items():
            for subset in ("train", "test"):
                try:
                    counts[f"{protocol}/{subset}"] = len(ntu60_source(root, split, subset, kind, trust_pickle))
                except (FileNotFoundError, ValueError) as e:
                    counts[f"{protocol}/{subset}"] = str(e).splitlines()[0]
    return sources, counts


def _check_preprocessed(root: Path, sources: dict, counts: dict) -> dict:
    """The report of a root holding no raw skeletons, only preprocessed arrays or pickles."""
    out = {"dataset": "ntu60", "root": str(root), "split": "xsub+xview", "ok": True, "classes": 60,
           "subsets": {}, "notes": [], "sources": sources}
    for protocol in ("xsub", "xview"):
        for subset, expected in zip(("train", "test"), NTU60_COUNTS_WITH_SKELETON[protocol]):
            got = counts.get(f"{protocol}/{subset}", 0)
            problem = got if isinstance(got, str) else None
            found = 0 if problem else got
            out["subsets"][f"{protocol}/{subset}"] = {
                "expected": expected, "found": found, "missing": max(expected - found, 0),
                "unreadable": 1 if problem else 0, "missing_examples": [],
                "unreadable_examples": [problem] if problem else []}
            if problem or found < expected:
                out["ok"] = False
    out["notes"].append(f"read from the preprocessed {sources['training_reads']} (expected: the samples with "
                        "skeleton data, as ST-GCN's ntu_gendata.py writes them)")
    return out


def _check_ntu60(root: Path, decode: bool, trust_pickle: bool = False) -> dict:
    folder = find_skeleton_folder(root)
    sources, counts = _ntu_sources(root, trust_pickle)
    if folder is None:
        if sources["training_reads"] is None:
            raise FileNotFoundError(f"no skeleton folder under {root}: expected "
                                    f"{root / 'skeletons'}/*.skeleton, {root / 'xsub'}/train_data.npy or "
                                    f"{root / 'preprocessed'}/*.pkl (see data/README.md)")
        return _check_preprocessed(root, sources, counts)
    files = sorted(p.name for p in folder.glob("*.skeleton"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .skeleton files")
    names, unparsed = ntu_sample_names(files)
    out = {"dataset": "ntu60", "root": str(root), "split": "xsub+xview", "ok": True,
           "classes": 60, "subsets": {}, "notes": [], "sources": sources}
    status = {f: _ntu_status(folder / f) for f in names} if decode else {}
    for protocol in ("xsub", "xview"):
        sp = ntu60_split(names, protocol)
        for subset, expected in zip(("train", "test"), NTU60_COUNTS[protocol]):
            entries = sp.subset(subset)
            report = {"expected": expected, "found": len(entries),
                      "missing": max(expected - len(entries), 0), "unreadable": None}
            if decode:
                bad = [f"{e.relpath}: {status[e.relpath]}" for e in entries
                       if status[e.relpath] not in (None, "no bodies")]
                report["unreadable"] = len(bad)
                report["no_bodies"] = sum(status[e.relpath] == "no bodies" for e in entries)
            report["missing_examples"] = []
            report["unreadable_examples"] = bad[:EXAMPLES] if decode else []
            out["subsets"][f"{protocol}/{subset}"] = report
            if report["missing"] or report["unreadable"]:
                out["ok"] = False
    with_skeleton = NTU60_COUNTS_WITH_SKELETON
    out["notes"].append(
        "NTU-60 has no name list: missing is a count against the official sample counts; "
        "302 samples have no bodies and are dropped by ST-GCN / SkeletonCLR, leaving "
        f"{with_skeleton['xsub'][0]} / {with_skeleton['xsub'][1]} (xsub) and "
        f"{with_skeleton['xview'][0]} / {with_skeleton['xview'][1]} (xview)")
    if unparsed:
        out["notes"].append(f"{len(unparsed)} files are not NTU sample names, e.g. "
                            + ", ".join(unparsed[:EXAMPLES]))
    if not decode:
        out["notes"].append("unreadable not checked: pass decode=True (--decode) to parse "
                            "every skeleton file")
    if sources["training_reads"] != "skeletons":
        out["notes"].append(f"training reads the preprocessed {sources['training_reads']} (data.ntu_source=auto): "
                            + ", ".join(f"{k} {v}" for k, v in counts.items()))
    out["notes"].append(f"{sources['rgb_videos']} RGB videos (for rgb / heatmap runs on NTU-60)")
    return out
