"""Mixing operations: tesseract sampling, cutmix and mixup in input space, in feature space
("manifold") and across modalities. Pure tensor functions; depends on torch and numpy only.

Shapes. A *map* is a batch of per-sample tensors: video maps are ``(B, C, T, H, W)``
(dimension letters ``c t h w``), skeleton maps are ``(B, C, T, V)`` (letters ``c t v``).
ST-GCN maps with persons last, ``(B, C, T, V, M)``, are 5-D: cut them with ``dims="cth"`` so
that both persons get the same box (``h`` is then the joint axis, ``w`` the person axis).

Every function is out of place, uses one box / one ``lam`` for the whole batch (as CutMix and
i-Mix do), pairs sample ``i`` with partner ``perm[i]``, and returns ``lam`` as the *exact*
fraction of the first input that is kept.  Randomness comes only from ``generator`` (a
``torch.Generator``), so the same generator state gives the same result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Tesseract", "MixResult", "sample_lam", "sample_tesseract", "sample_perm", "resample_like",
    "cutmix", "mixup", "manifold_cutmix", "manifold_mixup", "cross_modal_cutmix",
    "cross_modal_mixup", "dim_letters", "describe_tesseract", "lam_samples",
]

_LETTERS = {3: "ctv", 4: "cthw"}          # per-sample rank -> dimension letters
_MAX_SIZE = 2**53                         # box sides are computed in float64: exact up to here


class Tesseract(NamedTuple):
    """A box in a per-sample map and the exact fraction of the map *outside* it.

    ``box`` holds one ``slice`` per dimension of the per-sample shape (C, T, H, W) or
    (C, T, V); ``lam = 1 - box_volume / map_volume``.  Unpacks as ``box, lam``.
    """
    box: tuple[slice, ...]
    lam: float

    def volume(self) -> int:
        """Number of elements in the box (an exact Python int: no overflow for huge maps)."""
        return math.prod(s.stop - s.start for s in self.box)

    def mask(self, shape: Sequence[int], device=None) -> torch.Tensor:
        """Bool mask of ``shape`` (per-sample), True where the first input is kept (outside the box)."""
        m = torch.ones(tuple(shape), dtype=torch.bool, device=device)
        m[self.box] = False
        return m


@dataclass
class MixResult:
    """``mixed``: the mixed batch; ``lam``: exact fraction of the first input kept (float);
    ``perm``: LongTensor (B,), partner of sample i is ``perm[i]``; ``box``: the tesseract
    (cutmix only, else None)."""
    mixed: torch.Tensor
    lam: float
    perm: torch.Tensor
    box: Tesseract | None = None


def dim_letters(ndim: int) -> str:
    """Dimension letters of a per-sample map of rank ``ndim`` (4 -> 'cthw', 3 -> 'ctv')."""
    if ndim not in _LETTERS:
        raise ValueError(f"expected a per-sample map of rank 3 (C, T, V) or 4 (C, T, H, W), got rank {ndim}")
    return _LETTERS[ndim]


def sample_lam(alpha: float, generator: torch.Generator | None = None) -> float:
    """Draw ``lam0 ~ Beta(alpha, alpha)`` deterministically from ``generator``."""
    _check_alpha(alpha)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def sample_perm(batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A random permutation of ``range(batch)`` (the partner of sample i is ``perm[i]``)."""
    return torch.randperm(batch, generator=generator).to(device)


def sample_tesseract(shape: Sequence[int], lam: float, dims: str = "cthw",
                     generator: torch.Generator | None = None, centre: str = "uniform") -> Tesseract:
    """Sample a box in a per-sample map of ``shape`` whose *expected* volume is ``1 - lam``.

    For each cut dimension d (n of them) the side is ``round(D_d * (1 - lam) ** (1 / n))`` and
    the centre is uniform in ``[0, D_d)``; the box is clipped at the borders and dimensions not
    in ``dims`` are taken whole.  The returned ``lam`` is recomputed from the clipped box: it is
    exactly the kept fraction.

    Args:
        shape: per-sample shape, ``(C, T, H, W)`` or ``(C, T, V)``.
        lam: target kept fraction in [0, 1] (usually a Beta draw, see :func:`sample_lam`).
        dims: which dimensions to cut, letters from ``cthw`` (or ``ctv`` for rank 3).
        centre: ``uniform`` (the paper: centre uniform over the map, box clipped at borders)
            or ``inside`` (centre drawn so the box never clips: E[1 - lam] = E[1 - lam0]).
    """
    shape = tuple(int(s) for s in shape)
    letters = dim_letters(len(shape))
    _check_sizes(shape)
    cut = _check_dims(dims, letters)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if centre not in ("uniform", "inside"):
        raise ValueError(f"centre must be 'uniform' or 'inside', got {centre!r}")
    n = len(cut)
    box = []
    for letter, size in zip(letters, shape):
        if letter not in cut:
            box.append(slice(0, size))
            continue
        side = int(round(size * (1.0 - lam) ** (1.0 / n)))
        if centre == "uniform":
            c = int(torch.randint(0, size, (1,), generator=generator).item())
        else:
            c = int(torch.randint(side // 2, size - (side - side // 2) + 1, (1,), generator=generator).item())
        lo = c - side // 2
        box.append(slice(max(lo, 0), min(lo + side, size)))
    box = tuple(box)
    return Tesseract(box, _kept_fraction(box, shape))


def _kept_fraction(box: Sequence[slice], shape: Sequence[int]) -> float:
    """``1 - box volume / map volume``, from exact integer volumes (so always in [0, 1])."""
    total = math.prod(int(s) for s in shape)
    volume = math.prod(s.stop - s.start for s in box)
    return float(Fraction(total - volume, total))


def resample_like(src: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample a map ``src`` (B, C', ...) to per-sample ``shape`` (C, ...) without parameters.

    Trilinear (bilinear for rank-3 maps) over the non-channel axes, then an adaptive average
    over channels.  Used when the two modalities are cut at blocks of different shapes.
    """
    shape = tuple(int(s) for s in shape)
    if tuple(src.shape[1:]) == shape:
        return src
    if src.dim() - 1 != len(shape):
        raise ValueError(f"cannot resample a map of shape {tuple(src.shape[1:])} to {shape}: ranks differ")
    mode = "trilinear" if src.dim() == 5 else "bilinear"
    x = src
    if tuple(x.shape[2:]) != shape[1:]:
        x = F.interpolate(x, size=shape[1:], mode=mode, align_corners=False)
    if x.shape[1] != shape[0]:
        b, c = x.shape[:2]
        rest = x.shape[2:]
        flat = x.movedim(1, -1).reshape(-1, 1, c)                  # (B*rest, 1, C')
        flat = F.adaptive_avg_pool1d(flat, shape[0])               # (B*rest, 1, C)
        x = flat.reshape(b, *rest, shape[0]).movedim(-1, 1)
    return x


def cutmix(x: torch.Tensor, alpha: float = 1.0, dims: str = "thw", perm: torch.Tensor | None = None,
           generator: torch.Generator | None = None, centre: str = "uniform") -> MixResult:
    """Same-modality cutmix: paste a box of ``x[perm]`` into ``x``.

    On inputs (B, C, T, H, W) the usual choices are ``dims="hw"`` (spatial, CutMix),
    ``"t"`` (temporal) and ``"thw"`` (spatio-temporal cuboid, VideoMix).  Gradient flows to
    both the kept part and the pasted part (they are the same tensor).
    """
    _check_map(x)
    _check_alpha(alpha)
    perm = _resolve_perm(perm, x.shape[0], generator, x.device)
    tess = sample_tesseract(x.shape[1:], sample_lam(alpha, generator), dims, generator, centre)
    return MixResult(_paste(x, x[perm], tess), tess.lam, perm, tess)


def manifold_cutmix(h: torch.Tensor, alpha: float = 1.0, dims: str = "cthw",
                    perm: torch.Tensor | None = None, generator: torch.Generator | None = None,
                    centre: str = "uniform") -> MixResult:
    """Same-modality cutmix of an intermediate feature map (a tesseract over ``dims``)."""
    return cutmix(h, alpha, dims, perm, generator, centre)


def mixup(x: torch.Tensor, alpha: float = 1.0, perm: torch.Tensor | None = None,
          generator: torch.Generator | None = None) -> MixResult:
    """Same-modality mixup ``lam * x + (1 - lam) * x[perm]`` (inputs or features)."""
    _check_map(x)
    _check_alpha(alpha)
    perm = _resolve_perm(perm, x.shape[0], generator, x.device)
    lam = sample_lam(alpha, generator)
    return MixResult(lam * x + (1.0 - lam) * x[perm], lam, perm)


manifold_mixup = mixup


def cross_modal_cutmix(h1: torch.Tensor, h2: torch.Tensor, alpha: float = 1.0, dims: str = "cthw",
                       perm: torch.Tensor | None = None, generator: torch.Generator | None = None,
                       resample: bool = True, centre: str = "uniform") -> MixResult:
    """CMMC: paste a tesseract of ``h2[perm]`` (the other modality) into ``h1``.

    ``g_mix = M * h1 + (1 - M) * h2[perm]`` with M = 0 inside one box shared by the batch.

    Args:
        h1: (B, C, T, H, W) or (B, C, T, V) map of the trained modality (block k).
        h2: map of the other modality (block l), same batch size. When its per-sample shape
            differs from h1's it is resampled (:func:`resample_like`) or, with
            ``resample=False``, a ValueError is raised.
        perm: partner of sample i is ``perm[i]`` (default: a random permutation; pass
            ``torch.arange(B)`` for the same-video control).
    Returns:
        :class:`MixResult` with ``lam`` = exact fraction of ``h1`` kept. ``h1`` gets gradient
        only where it is kept; ``h2`` gets none.
    """
    src, perm = _cross_modal_source(h1, h2, alpha, perm, generator, resample)
    tess = sample_tesseract(h1.shape[1:], sample_lam(alpha, generator), dims, generator, centre)
    return MixResult(_paste(h1, src[perm], tess), tess.lam, perm, tess)


def cross_modal_mixup(h1: torch.Tensor, h2: torch.Tensor, alpha: float = 1.0,
                      perm: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      resample: bool = True) -> MixResult:
    """Cross-modal manifold mixup ``lam * h1 + (1 - lam) * h2[perm]`` (h2 gets no gradient)."""
    src, perm = _cross_modal_source(h1, h2, alpha, perm, generator, resample)
    lam = sample_lam(alpha, generator)
    return MixResult(lam * h1 + (1.0 - lam) * src[perm], lam, perm)


def describe_tesseract(shape: Sequence[int], alpha: float = 1.0, dims: str = "cthw",
                       seed: int = 0) -> dict:
    """One sampled tesseract as plain data (what ``cmmc mask`` prints and lesson 01 draws).

    Returns ``{"shape", "dims", "alpha", "seed", "lam0", "lam", "box": {letter: [start, stop]},
    "box_volume"}``.
    """
    shape = tuple(int(s) for s in shape)
    _check_sizes(shape)
    g = torch.Generator().manual_seed(seed)
    lam0 = sample_lam(alpha, g)
    tess = sample_tesseract(shape, lam0, dims, g)
    letters = dim_letters(len(shape))
    return {"shape": list(shape), "dims": dims, "alpha": alpha, "seed": seed, "lam0": lam0,
            "lam": tess.lam, "box": {l: [s.start, s.stop] for l, s in zip(letters, tess.box)},
            "box_volume": tess.volume()}


def lam_samples(shape: Sequence[int], alpha: float, dims: str = "cthw", n: int = 2000,
                seed: int = 0, centre: str = "uniform") -> np.ndarray:
    """``n`` exact kept fractions ``lam`` of tesseracts sampled with ``lam0 ~ Beta(alpha, alpha)``
    (``centre`` as in :func:`sample_tesseract`)."""
    g = torch.Generator().manual_seed(seed)
    return np.array([sample_tesseract(shape, sample_lam(alpha, g), dims, g, centre).lam for _ in range(n)])


# ---------------------------------------------------------------------------------- helpers
def _paste(h1: torch.Tensor, src: torch.Tensor, tess: Tesseract) -> torch.Tensor:
    keep = tess.mask(h1.shape[1:], device=h1.device)
    return torch.where(keep, h1, src.to(h1.dtype))     # exact: no 0 * inf, gradient by the mask


def _cross_modal_source(h1, h2, alpha, perm, generator, resample):
    _check_map(h1)
    _check_map(h2, name="h2")
    _check_alpha(alpha)
    if h1.shape[0] != h2.shape[0]:
        raise ValueError(f"batch sizes differ: h1 has {h1.shape[0]} samples, h2 has {h2.shape[0]}")
    src = h2.detach()
    if tuple(h2.shape[1:]) != tuple(h1.shape[1:]):
        if not resample:
            raise ValueError(f"h1 has per-sample shape {tuple(h1.shape[1:])} but h2 has "
                             f"{tuple(h2.shape[1:])}: pick layers with equal shapes or set resample=True")
        src = resample_like(src, h1.shape[1:])
    return src, _resolve_perm(perm, h1.shape[0], generator, h1.device)


def _resolve_perm(perm, batch, generator, device):
    if perm is None:
        return sample_perm(batch, generator, device)
    perm = torch.as_tensor(perm, dtype=torch.long, device=device)
    if perm.shape != (batch,) or not torch.equal(perm.sort().values, torch.arange(batch, device=device)):
        raise ValueError(f"perm must be a permutation of range({batch})")
    return perm


def _check_map(x: torch.Tensor, name: str = "h1") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() not in (4, 5):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be (B, C, T, H, W) or (B, C, T, V), got {got}")


def _check_sizes(shape: tuple[int, ...]) -> None:
    if any(s <= 0 for s in shape):
        raise ValueError(f"shape sizes must be positive, got {shape}")
    if any(s > _MAX_SIZE for s in shape):
        raise ValueError(f"shape sizes must be at most 2**53 = {_MAX_SIZE} (box sides are computed "
                         f"in float64), got {shape}")


def _check_alpha(alpha: float) -> None:
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number > 0 (Beta(alpha, alpha)), got {alpha}")


def _check_dims(dims: str, letters: str) -> str:
    dims = dims.lower()
    bad = sorted(set(dims) - set(letters))
    if bad or not dims or len(set(dims)) != len(dims):
        raise ValueError(f"dims {dims!r} must be distinct letters from {letters!r}"
                         + (f" (unknown: {''.join(bad)})" if bad else ""))
    return dims
