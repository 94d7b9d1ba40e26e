"""2-D pose as an image-like volume (the paper's "RGB + Pose" route, PoseC3D style).

A pose sequence ``(T, J, 3)`` (x, y in px with pixel centres at integers, confidence) becomes a
heatmap volume ``(J, T, H, W)``: one Gaussian per joint, scaled by its confidence, so that a
video backbone (S3D) consumes pose exactly as it consumes RGB or flow and feature shapes match.
Limb heatmaps (a Gaussian of the distance to each bone segment) are the alternative channels.
Several persons ``(M, T, J, 3)`` are merged by a maximum, as PoseC3D does. :func:`part_heatmaps`
groups the joints into body parts (one channel each) so that every skeleton layout gives the same
number of channels: the ``heatmap`` modality the training loop reads.
"""
from __future__ import annotations

import numpy as np

PoseArray = np.ndarray


def _persons(pose: PoseArray) -> np.ndarray:
    pose = np.asarray(pose, np.float32)
    if pose.ndim == 3:
        pose = pose[None]
    if pose.ndim != 4 or pose.shape[-1] != 3:
        raise ValueError(f"pose must be (T, J, 3) or (M, T, J, 3), got shape {pose.shape}")
    return pose


def _rescale(pose: np.ndarray, frame_size: tuple[int, int] | None,
             size: tuple[int, int]) -> np.ndarray:
    """Move x, y from a (H0, W0) frame to a (H, W) grid (pixel centres stay centres)."""
    if frame_size is None:
        return pose
    (h0, w0), (h, w) = frame_size, size
    out = pose.copy()
    out[..., 0] = (pose[..., 0] + 0.5) * (w / w0) - 0.5
    out[..., 1] = (pose[..., 1] + 0.5) * (h / h0) - 0.5
    return out


def joint_heatmaps(pose: PoseArray, size: tuple[int, int], sigma: float = 0.6,
                   frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """float32 (J, T, H, W) in [0, 1]: ``conf * exp(-d^2 / (2 sigma^2))`` around each joint.

    ``size`` = (H, W) of the heatmaps; ``frame_size`` = (H0, W0) of the frame the pose is in
    (default: the same as ``size``); ``sigma`` in heatmap px (PoseC3D: 0.6 at 56 x 56).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    pose = _rescale(_persons(pose), frame_size, size)
    h, w = size
    ys, xs = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
    x, y, conf = (pose[..., i][..., None, None] for i in range(3))       # (M, T, J, 1, 1)
    d2 = (xs - x) ** 2 + (ys[:, None] - y) ** 2                            # (M, T, J, H, W)
    maps = (np.exp(-d2 / (2 * sigma ** 2)) * conf).max(axis=0)             # (T, J, H, W)
    return np.ascontiguousarray(maps.transpose(1, 0, 2, 3), np.float32)


def limb_heatmaps(pose: PoseArray, bones: tuple[tuple[int, int], ...], size: tuple[int, int],
                  sigma: float = 0.6, frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """float32 (B, T, H, W): per bone (a, b), a Gaussian of the distance to the segment a-b,
    scaled by ``min(conf_a, conf_b)``. Same conventions as :func:`joint_heatmaps`."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    pose = _rescale(_persons(pose), frame_size, size)
    h, w = size
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((len(bones), pose.shape[1], h, w), np.float32)
    for i, (a, b) in enumerate(bones):
        pa, pb = pose[:, :, a, :2], pose[:, :, b, :2]                      # (M, T, 2)
        seg = pb - pa
        length2 = np.maximum((seg ** 2).sum(-1), 1e-6)[..., None, None]
        px, py = gx - pa[..., 0, None, None], gy - pa[..., 1, None, None]  # (M, T, H, W)
        u = np.clip((px * seg[..., 0, None, None] + py * seg[..., 1, None, None]) / length2, 0, 1)
        d2 = (px - u * seg[..., 0, None, None]) ** 2 + (py - u * seg[..., 1, None, None]) ** 2
        conf = np.minimum(pose[:, :, a, 2], pose[:, :, b, 2])[..., None, None]
        out[i] = (np.exp(-d2 / (2 * sigma ** 2)) * conf).max(axis=0)
    return out


def part_heatmaps(pose: PoseArray, parts: tuple[tuple[int, ...], ...], size: tuple[int, int],
                  sigma: float = 1.0, frame_size: tuple[int, int] | None = None,
                  bones: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    """float32 (P, T, H, W) in [0, 1]: one channel per body part, the maximum of its joints'
    Gaussians (:func:`joint_heatmaps`) and, with ``bones`` ((child, parent) pairs), of the limb
    heatmaps of the bones whose child joint belongs to the part. A fixed number of channels for
    any joint layout (NTU's 25 joints, the synthetic figure's 15): what a video backbone needs."""
    joints = joint_heatmaps(pose, size, sigma, frame_size)                 # (J, T, H, W)
    limbs = limb_heatmaps(pose, bones, size, sigma, frame_size) if bones else None
    out = np.zeros((len(parts),) + joints.shape[1:], np.float32)
    for p, members in enumerate(parts):
        out[p] = joints[list(members)].max(axis=0)
        if limbs is not None:
            mine = [i for i, (child, _) in enumerate(bones) if child in members]
            if mine:
                np.maximum(out[p], limbs[mine].max(axis=0), out=out[p])
    return out
