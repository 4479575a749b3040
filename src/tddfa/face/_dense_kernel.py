"""The fused dense reconstruction kernel (Numba), kept apart so sparse-only work never imports Numba.

One pass over the morphable model's bases serves every face of an image: for each vertex the
basis rows are read once and each face's shape and affine map applied while they are in cache.
The kernel is serial: the work is memory-bound (the bases are 23 MB of float32), and on a shared
CPU a second thread mostly adds scheduling noise (measured: 1-thread median 7 ms vs 2-thread
20 ms for one face on the loaded 2-core machine, best-of equal within 20 %); it also avoids
starting Numba's parallel thread pool on the first dense call.
"""

from __future__ import annotations

from numba import njit

__all__ = ["dense_affine"]


@njit(fastmath=True, cache=True, nogil=True)
def dense_affine(u, w, alpha, M, c, out):  # pragma: no cover - compiled
    """``out[b, n] = M[b] @ (u + w @ alpha[b])[3n:3n+3] + c[b]``.

    Args:
        u: ``(3N,)`` float32 mean shape, xyz interleaved. w: ``(3N, K)`` float32 bases.
        alpha: ``(B, K)`` float32 coefficients. M: ``(B, 3, 3)`` float32 linear maps.
        c: ``(B, 3)`` float32 offsets. out: ``(B, N, 3)`` float32, written.
    """
    n_faces, k_dim = alpha.shape
    n_vert = out.shape[1]
    for n in range(n_vert):
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
