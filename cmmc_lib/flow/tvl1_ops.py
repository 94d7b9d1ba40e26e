"""The building blocks of TV-L1 in PyTorch (:mod:`cmmc_lib.flow.tvl1`), each one OpenCV's: finite
differences, an exact median filter built from min/max, bicubic backward warping and the image
pyramid. Tensors are ``(N, C, H, W)``; flow is in px, channel 0 = x, 1 = y."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- finite differences
def centered_gradient(img: torch.Tensor) -> torch.Tensor:
    """Image gradient as OpenCV's TV-L1 takes it: (N, 1, H, W) -> (N, 2, H, W) (d/dx, d/dy).

    Central differences ``(I[x+1] - I[x-1]) / 2`` inside, half the one-sided difference on the
    first and last row/column. Units: grey levels per px.
    """
    gx = torch.empty_like(img)
    gy = torch.empty_like(img)
    torch.sub(img[..., 2:], img[..., :-2], out=gx[..., 1:-1])
    torch.sub(img[..., 1], img[..., 0], out=gx[..., 0])
    torch.sub(img[..., -1], img[..., -2], out=gx[..., -1])
    torch.sub(img[..., 2:, :], img[..., :-2, :], out=gy[..., 1:-1, :])
    torch.sub(img[..., 1, :], img[..., 0, :], out=gy[..., 0, :])
    torch.sub(img[..., -1, :], img[..., -2, :], out=gy[..., -1, :])
    return torch.cat([gx, gy], 1).mul_(0.5)


def forward_gradient(u: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 2, H, W): forward differences ``u[x+1] - u[x]`` along x (index 0)
    and y (index 1), zero on the last column (x) and last row (y) (Neumann boundary)."""
    g = u.new_zeros(*u.shape[:2], 2, *u.shape[2:])
    torch.sub(u[..., 1:], u[..., :-1], out=g[:, :, 0, :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=g[:, :, 1, :-1, :])
    return g


def divergence(p: torch.Tensor) -> torch.Tensor:
    """(N, C, 2, H, W) -> (N, C, H, W): backward-difference divergence, minus the adjoint of
    :func:`forward_gradient` for fields that are zero on the last column/row (as ``p`` is):
    ``p_x[x] - p_x[x-1] + p_y[y] - p_y[y-1]`` with ``p[-1] = 0``."""
    px, py = p[:, :, 0], p[:, :, 1]
    div = px + py
    div[..., 1:].sub_(px[..., :-1])
    div[..., 1:, :].sub_(py[..., :-1, :])
    return div


# --------------------------------------------------------------------------- median filter
def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators of Batcher's odd-even merge sort for ``n`` wires (n padded to a power of two
    with +inf wires, whose comparators are no-ops and are dropped)."""
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return pairs


_PROGRAMS: dict[tuple[int, tuple[int, ...]], tuple] = {}


def _selection_program(n: int, ranks: tuple[int, ...]):
    """A min/max program that returns the values at sorted positions ``ranks`` of ``n`` inputs:
    Batcher's sorting network, pruned to what those outputs need.

    Returns (steps, outputs): steps are ``(value_id, is_max, a, b, frees)`` in order (inputs are
    ids 0..n-1; ``frees`` are ids no later step reads); outputs are the ids of the ranks.
    Cached per (n, ranks) in a plain dict (``torch.compile`` traces through it)."""
    if (n, ranks) not in _PROGRAMS:
        _PROGRAMS[n, ranks] = _build_selection_program(n, ranks)
    return _PROGRAMS[n, ranks]


def _build_selection_program(n: int, ranks: tuple[int, ...]):
    wires = list(range(n))
    ops: list[tuple[bool, int, int]] = []
    for a, b in _batcher_pairs(n):
        x, y = wires[a], wires[b]
        ops.append((False, x, y))
        wires[a] = n + len(ops) - 1
        ops.append((True, x, y))
        wires[b] = n + len(ops) - 1
    outputs = tuple(wires[r] for r in ranks)
    needed, stack = set(), list(outputs)
    while stack:
        v = stack.pop()
        if v >= n and v not in needed:
            needed.add(v)
            stack += ops[v - n][1:]
    kept = [(v, *ops[v - n]) for v in sorted(needed)]
    last_use: dict[int, int] = {}
    for i, (_, _, a, b) in enumerate(kept):
        last_use[a] = last_use[b] = i
    steps = tuple((v, is_max, a, b, tuple(x for x in (a, b) if last_use[x] == i and x >= n
                                          and x not in outputs))
                  for i, (v, is_max, a, b) in enumerate(kept))
    return steps, outputs


def select_ranks(values: Sequence[torch.Tensor], ranks: Iterable[int]) -> list[torch.Tensor]:
    """Elementwise order statistics: for tensors ``values`` (all the same shape), the tensors of
    the ``ranks``-th smallest value at each element (0-based), with a min/max network."""
    steps, outputs = _selection_program(len(values), tuple(ranks))
    env = dict(enumerate(values))
    for v, is_max, a, b, frees in steps:
        env[v] = torch.maximum(env[a], env[b]) if is_max else torch.minimum(env[a], env[b])
        for x in frees:
            del env[x]
    return [env[o] for o in outputs]


def median_filter(u: torch.Tensor, size: int = 5) -> torch.Tensor:
    """``size`` x ``size`` median of each channel of (N, C, H, W), borders replicated (OpenCV's
    ``medianBlur``). Exact (no approximation), built from elementwise min/max:

    1. sort every vertical run of ``size`` values once (shared by the windows above each other);
    2. a window is then ``size`` sorted columns; sorting its rows too gives a matrix sorted both
       ways, in which only the entries with ``(i+1)(j+1) <= m+1`` and ``(size-i)(size-j) <= m+1``
       (m = size^2 // 2) can be the median, and a known count of entries lies below them;
    3. the median is the right order statistic of those candidates (13 of 25 for 5x5).
    """
    if size <= 1:
        return u
    r, (n, c, h, w) = size // 2, u.shape
    x = F.pad(u, (r, r, r, r), mode="replicate")
    columns = select_ranks([x[..., i:i + h, :] for i in range(size)], range(size))
    m = size * size // 2
    candidates = []
    for i in range(size):
        js = [j for j in range(size) if (i + 1) * (j + 1) <= m + 1 and (size - i) * (size - j) <= m + 1]
        candidates += select_ranks([columns[i][..., j:j + w] for j in range(size)], js)
    below = sum(1 for i in range(size) for j in range(size) if (size - i) * (size - j) >= m + 2)
    return select_ranks(candidates, [m - below])[0]


# --------------------------------------------------------------------------- warping, pyramid
def warp_bicubic(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out[n, :, y, x] = images[n, :, y + flow_y, x + flow_x]``.

    images (N, C, H, W), flow (N, 2, H, W) in px -> (N, C, H, W). Bicubic (Keys, a = -0.75, as
    OpenCV's INTER_CUBIC); samples outside the image count as 0 (OpenCV's BORDER_CONSTANT).
    """
    n, _, h, w = images.shape
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device)
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device)[:, None]
    gx = (flow[:, 0] + xs).mul_(2.0 / max(w - 1, 1)).sub_(1.0)
    gy = (flow[:, 1] + ys).mul_(2.0 / max(h - 1, 1)).sub_(1.0)
    return F.grid_sample(images, torch.stack([gx, gy], -1), mode="bicubic",
                         padding_mode="zeros", align_corners=True)


def pyramid_sizes(height: int, width: int, nscales: int = 5, scale_step: float = 0.8,
                  min_size: int = 16) -> list[tuple[int, int]]:
    """(H, W) of each pyramid level, finest first: each ``round(previous * scale_step)``, stopping
    before a level with a side under ``min_size`` px (OpenCV's rule)."""
    sizes = [(height, width)]
    while len(sizes) < nscales:
        h, w = sizes[-1]
        nxt = (int(round(h * scale_step)), int(round(w * scale_step)))
        if min(nxt) < min_size:
            break
        sizes.append(nxt)
    return sizes


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) resized to ``size`` (H, W), bilinear: the pyramid's resampling."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
