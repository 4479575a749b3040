"""The fused dense reconstruction kernel (Numba), kept apart so sparse-only work never imports Numba.

One pass over the morphable model's bases serves every face of an image: for each vertex the
basis rows are read once and each face's shape and affine map applied while they are in cache.
The pass is memory-bound (the bases are 23 MB of float32), so :func:`dense_affine` splits the
vertices into contiguous ranges and runs them on several threads at once (the kernel releases
the GIL): each thread streams its own part of the bases. Plain threads rather than Numba's
``parallel=True``: starting Numba's OpenMP pool added 0.3-0.4 s to the first dense call of a
process (measured 2026-12-04), and the result is the same for any split (each vertex is
computed by one thread, in the same order).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

__all__ = ["dense_affine", "dense_threads"]

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0  # worker threads of _POOL


def dense_threads() -> int:
    """Threads a dense pass uses: the CPUs this process may run on, at most 4 (the pass is
    memory-bound); ``TDDFA_DENSE_THREADS`` overrides it (1 = the calling thread only)."""
    env = os.environ.get("TDDFA_DENSE_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


def dense_affine(u: np.ndarray, w: np.ndarray, alpha: np.ndarray, M: np.ndarray, c: np.ndarray,
                 out: np.ndarray, threads: int | None = None) -> None:
    """``out[b, n] = M[b] @ (u + w @ alpha[b])[3n:3n+3] + c[b]`` for every face ``b`` and vertex
    ``n``, the vertices split over ``threads`` threads (default :func:`dense_threads`).

    Args:
        u: ``(3N,)`` float32 mean shape, xyz interleaved. w: ``(3N, K)`` float32 bases.
        alpha: ``(B, K)`` float32 coefficients. M: ``(B, 3, 3)`` float32 linear maps.
        c: ``(B, 3)`` float32 offsets. out: ``(B, N, 3)`` float32, written.
    """
    global _POOL, _POOL_SIZE
    n_vert = out.shape[1]
    parts = max(1, min(threads or dense_threads(), n_vert // 1024 or 1))
    if parts == 1:
        _dense_range(u, w, alpha, M, c, out, 0, n_vert)
        return
    if _POOL_SIZE < parts - 1:
        _POOL, _POOL_SIZE = ThreadPoolExecutor(parts - 1, thread_name_prefix="tddfa-dense"), parts - 1
    bounds = np.linspace(0, n_vert, parts + 1).astype(np.int64)
    jobs = [_POOL.submit(_dense_range, u, w, alpha, M, c, out, bounds[i], bounds[i + 1])
            for i in range(parts - 1)]
    _dense_range(u, w, alpha, M, c, out, bounds[-2], bounds[-1])
    for j in jobs:
        j.result()


@njit(fastmath=True, cache=True, nogil=True)
def _dense_range(u, w, alpha, M, c, out, start, stop):  # pragma: no cover - compiled
    """:func:`dense_affine` for vertices ``start`` ≤ n < ``stop``."""
    n_faces, k_dim = alpha.shape
    for n in range(start, stop):
        i = 3 * n
        for b in range(n_faces):
            sx = u[i]
            sy = u[i + 1]
            sz = u[i + 2]
            for k in range(k_dim):
                a = alpha[b, k]
                sx += w[i, k] * a
                sy += w[i + 1, k] * a
                sz += w[i + 2, k] * a
            for r in range(3):
                out[b, n, r] = M[b, r, 0] * sx + M[b, r, 1] * sy + M[b, r, 2] * sz + c[b, r]
