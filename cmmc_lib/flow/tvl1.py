"""TV-L1 optical flow in PyTorch, batched over frame pairs, on CPU or CUDA.

The method of Zach, Pock and Bischof (2007) with the refinements of Wedel et al. (2009) and the
structure of Sanchez, Meinhardt-Llopis and Facciolo (IPOL 2013) as OpenCV's
``cv2.optflow.DualTVL1OpticalFlow`` implements it (its default parameters are ours, see
:class:`TVL1Params`). It minimises over the flow ``u = (u1, u2)``::

    E(u) = sum_x |grad u1(x)| + |grad u2(x)| + lambda * |I1(x + u(x)) - I0(x)|

coarse to fine over an image pyramid (``nscales`` levels, each ``scale_step`` times the size of
the one below). At each level the data term is linearised around the current flow ``warps``
times (``I1`` and its gradient are resampled at ``x + u``, bicubic); after each warp the convex
problem is solved by alternating

* a pointwise thresholding step on an auxiliary flow ``v`` (the L1 data term),
* a Chambolle-type primal-dual step on ``u`` and its dual variable ``p`` (the TV term),
* and, before every block of ``inner_iterations``, a 5x5 median filter of ``u`` (up to
  ``outer_iterations`` blocks),

and stops early once the flow barely moves: ``sum_x |u_n(x) - u_{n-1}(x)|^2 <= epsilon^2 * H * W``.

Conventions: images are grey levels in [0, 255] (not normalised, as OpenCV), flow is in pixels of
the frame, channel 0 is x (to the right) and channel 1 is y (down), and ``I1(x + u(x)) ~ I0(x)``.
Everything is vectorised over a batch of frame pairs: tensors are ``(N, C, H, W)`` and a pair
never influences another (each stops on its own criterion; the result does not depend on the
batch it was computed in).

Deviations from OpenCV (measured in ``tests/test_flow_tvl1.py`` and the report of issue 14):

* warping uses exact bicubic coordinates (OpenCV's ``remap`` rounds them to 1/32 px);
* the pyramid is bilinear resizing to ``round(size * scale_step)`` with the sizes' own ratio
  (OpenCV uses exactly ``1 / scale_step``): sub-pixel differences at the coarse levels;
* ``gamma`` (the illumination term, 0 in OpenCV's defaults) is not implemented;
* nothing else: the stopping rule is OpenCV's, per pair and per iteration, also on CUDA, where
  the host reads it only every few iterations (see :func:`_solve_level`).

Here: the parameters, the iteration, one pyramid level and the method (:func:`tvl1_flow` on
tensors, :func:`tvl1_flow_pairs` on uint8 frames); the building blocks (gradients, median,
warping, pyramid) are in :mod:`cmmc_lib.flow.tvl1_ops`, ground-truth pairs and the end-point
error in :mod:`cmmc_lib.flow.ground_truth`.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, asdict

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import resolve_device
from .tvl1_ops import centered_gradient, median_filter, pyramid_sizes, resize_bilinear, warp_bicubic

FLT_EPSILON = 1.1920929e-07        # float32 machine epsilon, OpenCV's threshold on |grad I|^2


@dataclass(frozen=True)
class TVL1Params:
    """Parameters of TV-L1, with OpenCV's defaults (``DualTVL1OpticalFlow_create()``).

    tau: time step of the dual (TV) update; stable for tau <= 1/4 (at most 0.25).
    lambda_: weight of the data term (smaller: smoother flow).
    theta: coupling between ``u`` and the auxiliary ``v`` (small: tight coupling).
    nscales: pyramid levels (fewer if a level would be under 16 px on a side).
    warps: linearisations of the data term per level.
    epsilon: stopping threshold (px) on the RMS change of the flow per iteration.
    inner_iterations, outer_iterations: at most ``outer x inner`` iterations per warp, the
        median filter running before each block of ``inner`` iterations.
    scale_step: size ratio between consecutive pyramid levels (0.5 is a classic pyramid).
    median_filtering: side of the median filter applied to the flow (1: off; OpenCV's float
        median supports 3 and 5).
    """
    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    median_filtering: int = 5

    def __post_init__(self):
        checks = [
            (0 < self.tau <= 0.25, "tau must be in (0, 0.25] (the dual step is unstable above 1/4)"),
            (self.lambda_ > 0, "lambda_ must be > 0"),
            (self.theta > 0, "theta must be > 0"),
            (self.nscales >= 1, "nscales must be >= 1"),
            (self.warps >= 1, "warps must be >= 1"),
            (self.epsilon >= 0, "epsilon must be >= 0"),
            (self.inner_iterations >= 1 and self.outer_iterations >= 1,
             "inner_iterations and outer_iterations must be >= 1"),
            (0 < self.scale_step < 1, "scale_step must be in (0, 1)"),
            (self.median_filtering in (0, 1) or (self.median_filtering >= 3
                                                  and self.median_filtering % 2 == 1),
             "median_filtering must be 0 or 1 (off) or an odd size >= 3"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TVL1Params: {message}")

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- one iteration
def _step_inplace(u, p, gi, rho_c, ninv, div, g, l_t, theta, taut, active=None, want_error=True):
    """One TV-L1 iteration, in place on ``u`` (B, 2, H, W) and ``p`` (B, 2, 2, H, W).

    gi (B, 2, H, W): gradient of the warped I1; rho_c (B, 1, H, W): the constant part of the
    linearised residual; ninv (B, 1, H, W): -1 / |gi|^2; div, g: scratch buffers shaped like
    u and p (g's last column/row stay 0). active: None, or (B, 1, 1, 1) float 1/0: pairs at 0
    are frozen (u and p unchanged). Returns the per-pair squared change of u, (B,), or None
    when not ``want_error``.
    """
    # thresholding: v = u + clamp(-rho / |gi|^2, -l_t, l_t) * gi, rho the linearised residual
    fi = torch.addcmul(rho_c, gi[:, :1], u[:, :1]).addcmul_(gi[:, 1:], u[:, 1:])
    fi.mul_(ninv).clamp_(-l_t, l_t)
    # u = v + theta * div(p): the change is delta = fi * gi + theta * div(p)
    px, py = p[:, :, 0], p[:, :, 1]
    torch.add(px, py, out=div)
    div[..., 1:].sub_(px[..., :-1])
    div[..., 1:, :].sub_(py[..., :-1, :])
    delta = torch.addcmul(div.mul_(theta), fi, gi)
    if active is not None:
        delta.mul_(active)
    error = None
    if want_error:
        flat = delta.flatten(1)
        error = torch.linalg.vecdot(flat, flat)           # (linalg.vector_norm is ~100x slower)
    u.add_(delta)
    # dual step: p = (p + taut * grad u) / (1 + taut * |grad u|)   (grad u = 0: p unchanged)
    torch.sub(u[..., 1:], u[..., :-1], out=g[:, :, 0, :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=g[:, :, 1, :-1, :])
    if active is not None:
        g.mul_(active.unsqueeze(1))
    gx, gy = g[:, :, 0], g[:, :, 1]
    norm = torch.mul(gx, gx).addcmul_(gy, gy).sqrt_().mul_(taut).add_(1.0).unsqueeze(2)
    p.add_(g, alpha=taut).div_(norm)
    return error


def _step_functional(u, p, gi, rho_c, ninv, active, l_t: float, theta: float, taut: float,
                     tol: float):
    """:func:`_step_inplace` without mutation, for ``torch.compile`` (which fuses it into a few
    kernels), with the stopping rule on the device: returns (u, p, active, error), ``active``
    turned to 0 for the pairs whose change was at most ``tol``."""
    fi = ((rho_c + (gi * u).sum(1, keepdim=True)) * ninv).clamp(-l_t, l_t)
    px, py = p[:, :, 0], p[:, :, 1]
    div = px - F.pad(px[..., :-1], (1, 0)) + py - F.pad(py[..., :-1, :], (0, 0, 1, 0))
    delta = (theta * div + fi * gi) * active
    error = delta.square().sum((1, 2, 3))
    u = u + delta
    gx = F.pad(u[..., 1:] - u[..., :-1], (0, 1)) * active
    gy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1)) * active
    norm = 1.0 + taut * torch.sqrt(gx * gx + gy * gy)
    p = (p + taut * torch.stack([gx, gy], 2)) / norm.unsqueeze(2)
    active = active * (error > tol).to(active.dtype).view(-1, 1, 1, 1)
    return u, p, active, error


def _steps_functional(u, p, gi, rho_c, ninv, active, l_t: float, theta: float, taut: float,
                      tol: float, steps: int):
    """``steps`` iterations of :func:`_step_functional` (one compiled call for several: less
    Python and launch overhead per iteration). Returns (u, p, active, last error)."""
    error = None
    for _ in range(steps):
        u, p, active, error = _step_functional(u, p, gi, rho_c, ninv, active, l_t, theta, taut, tol)
    return u, p, active, error


_COMPILED: dict[str, object] = {}
_COMPILE_STATE = {"worked": False, "failed": False}


def _compiled(name: str):
    """torch.compile'd iterations / median (created once per process; dynamic shapes, since the
    pyramid levels and the shrinking batch change them)."""
    if name not in _COMPILED:
        fn = {"steps": _steps_functional, "median": median_filter}[name]
        _COMPILED[name] = torch.compile(fn, dynamic=True)
    return _COMPILED[name]


# --------------------------------------------------------------------------- one pyramid level
class _Active:
    """The pairs of a batch still iterating in the current warp: their state (u, p), the warp's
    constants, scratch buffers and (when the stopping rule runs on the device) their 1/0 flags.
    Converged pairs are written back to the full tensors and dropped (compaction)."""

    def __init__(self, u, p, consts, flags: bool):
        self.index = None                 # None: all pairs, in order
        self.u, self.p, self.consts = u, p, consts
        self.flags = u.new_ones(len(u), 1, 1, 1) if flags else None
        self.div = torch.empty_like(u)
        self.g = torch.zeros_like(p)

    def retire(self, done: torch.Tensor, u_full, p_full) -> None:
        """Write back the pairs flagged in ``done`` (bool, (b,)) and keep the others."""
        where = done.nonzero().squeeze(1)
        rows = where if self.index is None else self.index[where]
        u_full[rows] = self.u[where]
        p_full[rows] = self.p[where]
        keep = (~done).nonzero().squeeze(1)
        self.index = keep if self.index is None else self.index[keep]
        self.u, self.p = self.u[keep], self.p[keep]
        self.consts = [c[keep] for c in self.consts]
        if self.flags is not None:
            self.flags = self.flags[keep]
        self.div = torch.empty_like(self.u)
        self.g = torch.zeros_like(self.p)

    def write_back(self, u_full, p_full):
        if self.index is None:
            return self.u, self.p
        u_full[self.index] = self.u
        p_full[self.index] = self.p
        return u_full, p_full


def _solve_level(i0, i1, u, prm: TVL1Params, check_every: int, compiled: bool,
                 stats: dict | None) -> torch.Tensor:
    """TV-L1 at one pyramid level. i0, i1 (B, 1, H, W) grey levels; u (B, 2, H, W) the initial
    flow (px). Returns the refined flow (a new tensor).

    Stopping rule (OpenCV's, per pair): after each iteration, a pair whose flow changed by
    ``sum |du|^2 <= epsilon^2 H W`` stops for this warp. With ``check_every == 1`` the host
    reads the changes after every iteration; otherwise each pair carries a 1/0 flag on the
    device that freezes it from the iteration it converged, and the host looks only every
    ``check_every`` iterations (and at the end of each block), to drop the frozen pairs. The
    result is the same; only the synchronisations differ.
    """
    b, _, h, w = i0.shape
    i1_and_grad = torch.cat([i1, centered_gradient(i1)], 1)            # (B, 3, H, W)
    p = u.new_zeros(b, 2, 2, h, w)                                      # dual variables
    u = u.clone()
    tol = prm.epsilon ** 2 * h * w
    l_t, taut = prm.lambda_ * prm.theta, prm.tau / prm.theta
    steps = _compiled("steps") if compiled else None
    median = _compiled("median") if compiled else median_filter
    flags = compiled or check_every > 1
    for _ in range(prm.warps):
        warped = warp_bicubic(i1_and_grad, u)
        gi = warped[:, 1:].contiguous()                                  # grad I1 at x + u
        grad2 = gi.square().sum(1, keepdim=True)
        rho_c = warped[:, :1] - (gi * u).sum(1, keepdim=True) - i0      # I1w - gi.u - I0
        ninv = grad2.clamp_min_(FLT_EPSILON).reciprocal_().neg_()
        act = _Active(u, p, [gi, rho_c, ninv], flags)
        n, converged = 0, False
        for _outer in range(prm.outer_iterations):
            if prm.median_filtering > 1:
                act.u = median(act.u, prm.median_filtering)
                if stats is not None:
                    stats["median_filters"] = stats.get("median_filters", 0) + len(act.u)
            inner = 0
            while inner < prm.inner_iterations:
                if compiled:                      # up to the next check in one call
                    k = min(check_every - n % check_every, prm.inner_iterations - inner)
                    act.u, act.p, act.flags, err = steps(act.u, act.p, *act.consts, act.flags,
                                                         l_t, prm.theta, taut, tol, k)
                else:
                    k = 1
                    err = _step_inplace(act.u, act.p, *act.consts, act.div, act.g, l_t,
                                        prm.theta, taut, act.flags)
                    if flags:
                        act.flags.mul_((err > tol).view(-1, 1, 1, 1))
                n, inner = n + k, inner + k
                check = n % check_every == 0 or inner == prm.inner_iterations
                if stats is not None:             # (compiled: counts the frozen pairs too)
                    stats["iterations"] = stats.get("iterations", 0) + k * len(act.u)
                if check:
                    done = act.flags.view(-1) == 0 if flags else err <= tol
                    n_done = int(done.sum())              # (a device synchronisation)
                    if n_done == len(done):
                        converged = True
                        break
                    if n_done:
                        act.retire(done, u, p)
            if converged:
                break
        u, p = act.write_back(u, p)
        if stats is not None:
            stats["warps"] = stats.get("warps", 0) + b
    return u


# --------------------------------------------------------------------------- the method
def default_check_every(device: torch.device | str) -> int:
    """How often the host reads the stopping rule (and drops converged pairs): every iteration on
    CPU, every 5th on CUDA (each read synchronises with the device; the result is the same)."""
    return 1 if torch.device(device).type == "cpu" else 5


def tvl1_flow(i0: torch.Tensor, i1: torch.Tensor, params: TVL1Params | None = None, *,
              check_every: int | None = None, compile: bool = False,
              stats: dict | None = None) -> torch.Tensor:
    """TV-L1 flow of a batch of frame pairs.

    i0, i1: (N, H, W) or (N, 1, H, W) grey levels in [0, 255] (uint8 or float), on one device,
        H and W >= 3.
    params: :class:`TVL1Params` (OpenCV's defaults if None).
    check_every: iterations between the host's reads of the stopping rule (default: 1 on CPU,
        5 on CUDA, see :func:`default_check_every`); the flow does not depend on it.
    compile: run the iteration and the median through ``torch.compile`` (fused kernels with
        dynamic shapes; worth it on CUDA; the first call compiles, for tens of seconds).
    stats: a dict to which counters are added (``iterations``, ``median_filters``, ``warps``,
        each summed over the pairs).

    Returns float32 (N, 2, H, W): the flow in px, channel 0 = x, 1 = y, with
    ``I1(x + flow(x)) ~ I0(x)``.
    """
    params = params or TVL1Params()
    if i0.shape != i1.shape:
        raise ValueError(f"i0 and i1 differ in shape: {tuple(i0.shape)} vs {tuple(i1.shape)}")
    if i0.dim() == 3:
        i0, i1 = i0[:, None], i1[:, None]
    if i0.dim() != 4 or i0.shape[1] != 1:
        raise ValueError(f"expected (N, H, W) or (N, 1, H, W) grey images, got {tuple(i0.shape)}")
    n, _, h, w = i0.shape
    if min(h, w) < 3:
        raise ValueError(f"images must be at least 3x3 px, got {h}x{w}")
    check_every = check_every or default_check_every(i0.device)
    if compile and _COMPILE_STATE["failed"]:
        compile = False
    if compile and not _COMPILE_STATE["worked"]:       # the first compiled call: fall back if
        try:                                          # this machine cannot compile
            flow = _tvl1(i0, i1, params, check_every, True, stats)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            warnings.warn(f"tvl1: torch.compile failed ({type(exc).__name__}: {exc}); "
                          f"using eager mode", RuntimeWarning)
            _COMPILE_STATE["failed"] = True
            return _tvl1(i0, i1, params, check_every, False, stats)
        _COMPILE_STATE["worked"] = True
        return flow
    return _tvl1(i0, i1, params, check_every, compile, stats)


def _tvl1(i0, i1, params: TVL1Params, check_every: int, compile: bool, stats) -> torch.Tensor:
    """:func:`tvl1_flow` on checked (N, 1, H, W) inputs."""
    n, _, h, w = i0.shape
    with torch.inference_mode():
        levels0, levels1 = [i0.float()], [i1.float()]
        for size in pyramid_sizes(h, w, params.nscales, params.scale_step)[1:]:
            levels0.append(resize_bilinear(levels0[-1], size))
            levels1.append(resize_bilinear(levels1[-1], size))
        u = levels0[-1].new_zeros(n, 2, *levels0[-1].shape[-2:])
        for s in range(len(levels0) - 1, -1, -1):
            u = _solve_level(levels0[s], levels1[s], u, params, check_every, compile, stats)
            if s:
                u = resize_bilinear(u, levels0[s - 1].shape[-2:]).div_(params.scale_step)
    return u


def default_batch_size(device: str | torch.device) -> int:
    """Frame pairs per call: 1 on CPU (the working set of one 320x240 pair stays in cache: a
    batch of 8 is ~2.5x slower per pair), 32 on CUDA."""
    return 1 if torch.device(device).type == "cpu" else 32


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` PyTorch CPU threads (None: unchanged), then restore."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads is not None:
            torch.set_num_threads(old)


def tvl1_flow_pairs(prev: np.ndarray, nxt: np.ndarray, device: str | torch.device = "cpu",
                    batch_size: int | None = None, params: TVL1Params | None = None,
                    compile: bool | None = None, check_every: int | None = None,
                    stats: dict | None = None, threads: int | None = 1) -> np.ndarray:
    """TV-L1 of many frame pairs, ``batch_size`` pairs per call on ``device``.

    prev, nxt: uint8 (N, H, W) grey frames (pair i is prev[i] -> nxt[i]).
    compile: None = on CUDA only.
    threads: PyTorch threads on the CPU for this call (restored after; None: leave the
        process's setting). One is the default: it is the fastest per core (a 320x240 pair's
        working set stays in cache), and several threads on a busy machine can be many times
        slower (OpenMP threads waiting on each other); use worker processes for more cores.
    Returns float32 (N, H, W, 2) in px (numpy, on the host).
    """
    prev, nxt = np.asarray(prev), np.asarray(nxt)
    if prev.shape != nxt.shape or prev.ndim != 3:
        raise ValueError(f"expected two (N, H, W) grey stacks of one shape, got {prev.shape} "
                         f"and {nxt.shape}")
    device = resolve_device(device)
    batch_size = default_batch_size(device) if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 (or None), got {batch_size!r}")
    compile = device.type == "cuda" if compile is None else compile
    out = np.empty((*prev.shape, 2), np.float32)
    with torch_threads(threads if device.type == "cpu" else None):
        for s in range(0, len(prev), batch_size):
            a = torch.from_numpy(np.ascontiguousarray(prev[s:s + batch_size])).to(device)
            b = torch.from_numpy(np.ascontiguousarray(nxt[s:s + batch_size])).to(device)
            flow = tvl1_flow(a, b, params, check_every=check_every, compile=compile, stats=stats)
            out[s:s + batch_size] = flow.permute(0, 2, 3, 1).cpu().numpy()
    return out
