"""Small videos, flow rawframes, poses and split files written on the fly for the data tests.

Everything here is generated (PyAV / cv2) into a pytest ``tmp_path``: no real data needed.
"""
from __future__ import annotations

import os
from pathlib import Path

import av
import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


def realdata_dir() -> Path:
    """``$CMMC_REALDATA`` or the ``shared/realdata`` folder beside the repository."""
    return Path(os.environ.get("CMMC_REALDATA", REPO_ROOT.parent / "shared" / "realdata"))


def moving_square_frames(num_frames: int = 16, height: int = 48, width: int = 64,
                         speed: int = 2, seed: int = 0) -> np.ndarray:
    """uint8 (T, H, W, 3): a smooth random background and a white 8x8 square moving right by
    ``speed`` px per frame (its top-left at (row 8, col 4 + speed * t))."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 160, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    background = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    frames = np.repeat(background[None], num_frames, axis=0)
    for t in range(num_frames):
        col = 4 + speed * t
        frames[t, 8:16, col:col + 8] = 255
    return frames


def square_centre(t: int, speed: int = 2) -> tuple[float, float]:
    """(x, y) pixel centre (cv2 convention) of the square of :func:`moving_square_frames`."""
    return 4 + speed * t + 3.5, 8 + 3.5


def write_video(path: Path, frames: np.ndarray, fps: int = 25, codec: str | None = None,
                fmt: str | None = None, audio: bool = False,
                metadata: dict[str, str] | None = None) -> Path:
    """Encode uint8 (T, H, W, 3) frames: .avi -> MPEG-4 part 2, .mp4 -> H.264 (or pass
    ``codec``/``fmt``, e.g. ``fmt="m4v"`` for a raw stream without container)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or ("libx264" if path.suffix == ".mp4" and fmt is None else "mpeg4")
    with av.open(str(path), "w", format=fmt) as container:
        if metadata:
            container.metadata.update(metadata)
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = 2_000_000
        a_stream = container.add_stream("aac", rate=16000) if audio else None
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if a_stream is not None:
            samples = np.zeros((1, 1024), dtype=np.float32)
            for k in range(len(frames) * 16000 // fps // 1024):
                af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                af.sample_rate = 16000
                af.pts = k * 1024
                for packet in a_stream.encode(af):
                    container.mux(packet)
            for packet in a_stream.encode():
                container.mux(packet)
    return path


def write_flow_dir(directory: Path, flow_u8: np.ndarray) -> Path:
    """Write uint8 (N, H, W, 2) as ``x_%05d.jpg`` / ``y_%05d.jpg`` (JPEG quality 100)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for i, xy in enumerate(flow_u8):
        for c, prefix in enumerate(("x_", "y_")):
            cv2.imwrite(str(directory / f"{prefix}{i + 1:05d}.jpg"), xy[..., c],
                        [cv2.IMWRITE_JPEG_QUALITY, 100])
    return directory


def write_ucf_like_root(root: Path, classes=("Alpha", "HandstandPushups"), groups=(1, 2, 3),
                        clips_per_group: int = 2, num_frames: int = 16, height: int = 48,
                        width: int = 64, flow: bool = True, pose: bool = True) -> Path:
    """A dataset root in the UCF101 layout (data/README.md): videos/<Class>/v_<Class>_gXX_cYY.avi,
    splits/classInd.txt + trainlist01.txt + testlist01.txt (CRLF; group 1 is test), and
    flow/<video>/ and pose/<video>.npy.

    ``HandstandPushups`` files are spelt ``v_HandStandPushups_*`` as in UCF101. The flow
    stores the decoded video's R and G channels as its x and y images, so that the tests can
    check that RGB and flow are cut identically (flow x == R, or -R on a flip). The pose has
    J = 2 joints: the moving square's centre and a fixed point (10, 20) px.
    """
    root = Path(root)
    from cmmc_lib.data.video import decode_video
    train, test = [], []
    for label, cls in enumerate(classes):
        spelt = "HandStandPushups" if cls == "HandstandPushups" else cls
        for g in groups:
            for c in range(1, clips_per_group + 1):
                vid = f"v_{spelt}_g{g:02d}_c{c:02d}"
                rel = f"{cls}/{vid}.avi"
                frames = moving_square_frames(num_frames, height, width,
                                              speed=1 + label, seed=100 * label + 10 * g + c)
                write_video(root / "videos" / rel, frames)
                if flow:
                    decoded = decode_video(root / "videos" / rel)
                    write_flow_dir(root / "flow" / vid, decoded[..., :2])
                if pose:
                    kp = np.zeros((num_frames, 2, 3), dtype=np.float32)
                    for t in range(num_frames):
                        kp[t, 0] = (*square_centre(t, 1 + label), 1.0)
                        kp[t, 1] = (10.0, 20.0, 0.5)
                    (root / "pose").mkdir(parents=True, exist_ok=True)
                    np.save(root / "pose" / f"{vid}.npy", kp)
                (test if g == 1 else train).append((rel, label))
    splits = root / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    crlf = "\r\n"
    (splits / "classInd.txt").write_bytes(
        crlf.join(f"{i + 1} {c}" for i, c in enumerate(classes)).encode() + b"\r\n")
    (splits / "trainlist01.txt").write_bytes(
        crlf.join(f"{rel} {label + 1}" for rel, label in train).encode() + b"\r\n")
    (splits / "testlist01.txt").write_bytes(
        crlf.join(rel for rel, _ in test).encode() + b"\r\n")
    return root


def corrupt_copy(src: Path, dst: Path, mode: str = "truncate") -> Path:
    """A broken copy of a video: ``truncate`` keeps the first 2 % of the bytes, ``garbage``
    is random bytes of the same length, ``empty`` is zero bytes."""
    data = Path(src).read_bytes()
    if mode == "truncate":
        out = data[: max(64, len(data) // 50)]
    elif mode == "garbage":
        out = np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes()
    elif mode == "empty":
        out = b""
    else:
        raise ValueError(mode)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(out)
    return Path(dst)
