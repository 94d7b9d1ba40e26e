"""The project's named things, each listed once: modalities, backbones and training methods.

Everything else reads these tables: the config's ``validate``, the method factory, the
dataset builder, the CLI's choices, the course and the notebooks. A name that is listed but
not ``available`` is known (it has a place in the plan and the config) but refused with one
line until its code exists.

Pure metadata: this module imports nothing of the package (not even torch), so every layer may
read it, down to the dataset writers' worker processes.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Modality:
    """An input stream: its channels, the kind of network that reads it, the datasets that
    carry it."""
    name: str
    channels: int
    network: str                     # "video": (C, T, H, W) clips; "skeleton": (C, T, V, M)
    datasets: tuple[str, ...]
    summary: str
    available: bool = True


@dataclass(frozen=True)
class Dataset:
    """A dataset the loaders read: how many official splits it has (``data.split`` 1..splits) and
    the joint layout of its skeletons (a key of :data:`SKELETON_LAYOUTS`; None: no skeletons)."""
    name: str
    splits: int
    summary: str
    skeleton_layout: str | None = None


@dataclass(frozen=True)
class SkeletonLayout:
    """The joints of a dataset's skeletons: what ST-GCN's graph, the bone stream and the pose
    heatmaps' body parts are built from. Joint indices are 0-based.

    bones:  (child, parent) pairs; the root (``parents[root] == root``) is absent.
    center: the joint the ST-GCN spatial partition measures distances to (its graph centre).
    root:   the joint skeletons are centred on in preprocessing.
    coords: the leading channels that are coordinates (3: x, y, z; 2: x, y with a confidence
            third): the shear augmentation acts on these only.
    parts:  body-part groups (trunk, left arm, right arm, left leg, right leg): one heatmap
            channel each for the RGB + Pose route, so the channel count is the same for every layout.
    mirror: the part each part becomes in a horizontally flipped frame (left <-> right).
    """
    name: str
    num_joints: int
    bones: tuple[tuple[int, int], ...]
    center: int
    root: int
    coords: int
    parts: tuple[tuple[int, ...], ...]
    mirror: tuple[int, ...]
    summary: str

    @property
    def parents(self) -> tuple[int, ...]:
        """The parent of every joint (the root is its own)."""
        out = list(range(self.num_joints))
        for child, parent in self.bones:
            out[child] = parent
        return tuple(out)


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: where its class lives, how many blocks it has (the cut points of mixing are
    1 .. num_blocks - 1), what it reads, whether ``model.width`` sizes it."""
    name: str
    cls: str                         # "module:Class" inside cmmc_lib.models
    num_blocks: int
    network: str                     # the Modality.network it reads
    sized_by_width: bool
    summary: str


@dataclass(frozen=True)
class MethodSpec:
    """Everything a training method is; the factory (:mod:`cmmc_lib.ssl.factory`), the tables and
    the figures read it from here, so adding a mixing variant is a function in
    :mod:`cmmc_lib.mixing` and one entry in :data:`METHODS`.

    kind:   the family of training step, i.e. which class runs it: ``moco`` (no mixing),
            ``input-mix`` (the input clips, same modality), ``manifold-mix`` (block-k features,
            same modality), ``cross-modal-mix`` (block-k features with the other modality's
            block-l features: CMMC), ``coclr`` (positives mined by the other modality).
    mix:    the name of its mixing function in :mod:`cmmc_lib.mixing`, or None. Same-modality
            kinds call ``mix(x, **options)``, cross-modal ones ``mix(h1, h2, **options)``; each
            function takes the options it declares among ``alpha``, ``dims``, ``perm``,
            ``generator``, ``resample`` and ``centre``.
    label:  the method's row name in tables and its legend entry in figures.
    colour: its colour in every figure (a matplotlib colour name).
    source: what it needs of the other modality's network: None (nothing), ``backbone`` (its
            blocks up to l, whose features are pasted in), ``encoder`` (backbone and projection
            head: CoCLR mines positives with its embedding; CoCLR + CMMC also pastes its block-l
            features).
    """
    name: str
    kind: str
    mix: str | None
    label: str
    colour: str
    summary: str
    source: str | None = None
    available: bool = True

    @property
    def cross_modal(self) -> bool:
        """Needs the other modality's network (a frozen source, or CoCLR's miner)."""
        return self.source is not None

    @property
    def trains_jointly(self) -> bool:
        """Can train both networks at once, each mixing in the other's current features (the
        poster's "w/o alternate training"): the cross-modal mixing kind."""
        return self.kind == "cross-modal-mix"

    @property
    def stage1(self) -> bool:
        """Can be stage 1 of the recipe: trains one modality from its own input alone."""
        return self.kind in ("moco", "input-mix")


def _table(*items):
    return {item.name: item for item in items}


DATASETS: dict[str, Dataset] = _table(
    Dataset("synthetic", 3, "the generated stick-figure actions (cmmc data synth), UCF101 layout", "synthetic15"),
    Dataset("ucf101", 3, "UCF101, official splits 1-3"),
    Dataset("hmdb51", 3, "HMDB51, official splits 1-3"),
    Dataset("ntu60", 2, "NTU RGB+D 60: split 1 cross-subject, 2 cross-view", "ntu25"),
)
VIDEO_DATASETS = ("synthetic", "ucf101", "hmdb51", "ntu60")
POSE_DATASETS = tuple(d.name for d in DATASETS.values() if d.skeleton_layout)

# NTU RGB+D (Kinect v2), 1-based as NTU documents it: (child, parent); joint 21 (spine shoulder)
# is the root of the bone stream and the centre of ST-GCN's graph.
_NTU_BONES_1 = ((1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
                (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
                (20, 19), (22, 23), (23, 8), (24, 25), (25, 12))
SKELETON_LAYOUTS: dict[str, SkeletonLayout] = _table(
    SkeletonLayout(
        "ntu25", 25, tuple((c - 1, p - 1) for c, p in _NTU_BONES_1), center=20, root=1, coords=3,
        # trunk + head; left arm (shoulder .. thumb); right arm; left leg; right leg (0-based)
        parts=((0, 1, 2, 3, 20), (4, 5, 6, 7, 21, 22), (8, 9, 10, 11, 23, 24), (12, 13, 14, 15),
               (16, 17, 18, 19)),
        mirror=(0, 2, 1, 4, 3), summary="NTU RGB+D Kinect v2: 25 joints, x y z in metres"),
    SkeletonLayout(
        # the synthetic figure (cmmc_lib.data.render.JOINT_NAMES / BONES): head, neck, right arm
        # (2-4), left arm (5-7), pelvis, right leg (9-11), left leg (12-14); x y in px + confidence
        "synthetic15", 15, ((0, 1), (2, 1), (3, 2), (4, 3), (5, 1), (6, 5), (7, 6), (8, 1), (9, 8),
                            (10, 9), (11, 10), (12, 8), (13, 12), (14, 13)),
        center=1, root=8, coords=2,
        parts=((0, 1, 8), (5, 6, 7), (2, 3, 4), (12, 13, 14), (9, 10, 11)),
        mirror=(0, 2, 1, 4, 3), summary="the synthetic stick figure: 15 joints, x y in px and a confidence"),
)
NUM_POSE_PARTS = 5

MODALITIES: dict[str, Modality] = _table(
    Modality("rgb", 3, "video", VIDEO_DATASETS, "colour frames, values in [-1, 1]"),
    Modality("flow", 2, "video", VIDEO_DATASETS, "optical flow (x, y) in px / 20, TV-L1 or DIS"),
    Modality("heatmap", NUM_POSE_PARTS, "video", POSE_DATASETS,
             "2-D pose as heatmap volumes (RGB + Pose): one Gaussian per joint, one channel per body part"),
    Modality("joint", 3, "skeleton", POSE_DATASETS, "skeleton stream: joint coordinates (SkeletonCLR)"),
    Modality("motion", 3, "skeleton", POSE_DATASETS, "skeleton stream: x[t+1] - x[t] (last frame 0)"),
    Modality("bone", 3, "skeleton", POSE_DATASETS, "skeleton stream: x[joint] - x[parent]"),
    Modality("pose", 3, "skeleton", POSE_DATASETS, "2-D keypoints (x, y, confidence) of a video's frames: "
             "drawn and rendered into `heatmap`, never trained as such", available=False),
)

BACKBONES: dict[str, BackboneSpec] = _table(
    BackboneSpec("small3d", "small3d:Small3D", 4, "video", True, "small 3-D CNN for CPU lessons"),
    BackboneSpec("s3d", "s3d:S3D", 5, "video", False, "S3D in CoCLR's layout, 1024-d (the paper)"),
    BackboneSpec("stgcn", "stgcn:STGCN", 10, "skeleton", True, "ST-GCN at SkeletonCLR's size"),
)

METHODS: dict[str, MethodSpec] = _table(
    MethodSpec("moco", "moco", None, "MoCo (baseline)", "tab:blue",
               "MoCo baseline: InfoNCE over batch keys and a queue"),
    MethodSpec("mixup", "input-mix", "mixup", "+ mixup", "tab:orange",
               "+ mixup of the input clips (same modality)"),
    MethodSpec("cutmix", "input-mix", "cutmix", "+ cutmix", "tab:olive",
               "+ cutmix of the input clips (same modality)"),
    MethodSpec("manifold-mixup", "manifold-mix", "manifold_mixup", "+ manifold mixup", "tab:pink",
               "+ mixup of block-k features (same modality)"),
    MethodSpec("manifold-cutmix", "manifold-mix", "manifold_cutmix", "+ manifold cutmix", "tab:brown",
               "+ tesseract cutmix of block-k features (same modality)"),
    MethodSpec("cm-mixup", "cross-modal-mix", "cross_modal_mixup", "+ CM mixup", "tab:green",
               "+ cross-modal mixup of block-k features", source="backbone"),
    MethodSpec("cmmc", "cross-modal-mix", "cross_modal_cutmix", "+ CM cutmix", "tab:red",
               "+ cross-modal manifold cutmix (CMMC)", source="backbone"),
    MethodSpec("coclr", "coclr", None, "CoCLR", "tab:purple",
               "CoCLR: positives mined by the other modality's frozen network", source="encoder"),
    MethodSpec("coclr-cmmc", "coclr", "cross_modal_cutmix", "CoCLR + CMMC", "tab:cyan",
               "CoCLR + CMMC: mined positives and a cross-modal tesseract", source="encoder"),
)


def lookup(table: dict, name: str, what: str):
    """``table[name]``, or ValueError naming the choices (and why an entry cannot run yet)."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(table)}")
    item = table[name]
    if not getattr(item, "available", True):
        ready = [n for n, i in table.items() if getattr(i, "available", True)]
        raise ValueError(f"{what} {name!r} is not available yet in this version; choose one of "
                         f"{', '.join(ready)}")
    return item


def skeleton_layout(dataset: str) -> SkeletonLayout:
    """The joint layout of ``dataset``'s skeletons (ValueError for a dataset without any)."""
    name = lookup(DATASETS, dataset, "dataset").skeleton_layout
    if name is None:
        raise ValueError(f"dataset {dataset!r} has no skeletons; these do: {', '.join(POSE_DATASETS)}")
    return SKELETON_LAYOUTS[name]


def available(table: dict) -> tuple[str, ...]:
    """The names of a table that can run now (the CLI's choices)."""
    return tuple(n for n, i in table.items() if getattr(i, "available", True))
