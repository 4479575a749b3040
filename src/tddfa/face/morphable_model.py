"""The 3D Morphable Model (Basel Face Model, "noneck" 38,365-vertex variant) and reconstruction.

Parameter layout (62, de-normalised): ``[0:12]`` the 3×4 matrix ``[s·R | t]`` read row-major,
``[12:52]`` 40 shape coefficients, ``[52:62]`` 10 expression coefficients. A shape vector
``u + W_shp α_shp + W_exp α_exp`` has xyz interleaved per vertex.

Three sources, best first: the official dense ``bfm_noneck_v3.pkl``; the approximate dense
``bfm_noneck_approx.npz`` (exact mean, triangles and landmark bases; dense bases approximate);
sparse only (the 68-landmark bases, no dense mesh). ``MorphableModel.source`` records which.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from tddfa.assets import registry as assets
from tddfa.assets.serialization import load_pickle
from tddfa.errors import AssetError, InputError
from tddfa.face.crop import INPUT_SIZE

__all__ = [
    "MorphableModel",
    "load_morphable_model",
    "split_params",
    "to_image_frame",
    "N_PARAMS",
    "N_SHAPE",
    "N_EXP",
    "N_VERTICES",
    "N_TRIANGLES",
]

log = logging.getLogger(__name__)

N_PARAMS, N_SHAPE, N_EXP = 62, 40, 10
N_VERTICES, N_TRIANGLES, N_LANDMARKS = 38365, 76073, 68


def _checked(params: np.ndarray) -> np.ndarray:
    """``params`` as an array, checked to be ``(B, 62)``."""
    params = np.asarray(params)
    if params.ndim != 2 or params.shape[1] != N_PARAMS:
        raise InputError(f"params must be (B, {N_PARAMS}), got {params.shape}")
    return params


def split_params(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split ``(B, 62)`` into linear part ``(B, 3, 3)``, offset ``(B, 3)``, shape ``(B, 40)`` and
    expression ``(B, 10)`` coefficients."""
    params = _checked(params)
    P = params[:, :12].reshape(-1, 3, 4)
    return P[:, :, :3], P[:, :, 3], params[:, 12:52], params[:, 52:62]


@dataclass(frozen=True)
class MorphableModel:
    """Mean and bases of the morphable model.

    Attributes:
        u: ``(3N,)`` float32 mean shape, xyz interleaved, model units.
        w: ``(3N, 50)`` float32 shape (40) then expression (10) bases; ``None`` if sparse-only.
        tri: ``(M, 3)`` int32 triangles (0-based), ``None`` if sparse-only.
        u_lm, w_lm: the same restricted to the 68 landmarks: ``(204,)``, ``(204, 50)``.
        keypoints: ``(68,)`` int vertex index of each landmark in the dense mesh (or ``None``).
        source: ``"official"``, ``"approx"`` or ``"sparse"``.
    """

    u_lm: np.ndarray
    w_lm: np.ndarray
    source: str
    u: np.ndarray | None = None
    w: np.ndarray | None = None
    tri: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    notes: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def has_dense(self) -> bool:
        return self.w is not None

    @property
    def n_vertices(self) -> int:
        return 0 if self.u is None else self.u.shape[0] // 3

    def describe(self) -> dict:
        """Metadata recorded in every result."""
        return {"source": self.source, "dense": self.has_dense, "notes": self.notes}

    def _require_dense(self) -> None:
        if self.w is None:
            if "unusable" in self.notes:  # a dense file exists but is corrupt: say so
                raise AssetError(f"dense reconstruction needs a dense model: {self.notes}")
            raise AssetError(
                "dense reconstruction needs a dense model (bfm_noneck or bfm_noneck_approx); "
                "only the 68-landmark bases were found — see `tddfa assets`"
            )

    def shape_vectors(self, params: np.ndarray, dense: bool) -> np.ndarray:
        """Model-space shapes ``(B, N, 3)`` float32 (before pose) for ``params`` ``(B, 62)``."""
        alpha = _checked(params)[:, 12:62].astype(np.float32)  # 40 shape, then 10 expression
        if dense:
            self._require_dense()
            s = alpha @ self.w.T
            s += self.u
        else:
            # 68 landmarks: a product this small gains nothing from BLAS, and some OpenBLAS builds
            # (e.g. NumPy 1.26's) keep their threads spinning after every call, taking a core
            # from the networks for the whole of a video; einsum's own loop avoids that
            s = np.einsum("bk,nk->bn", alpha, self.w_lm)
            s += self.u_lm
        return s.reshape(len(alpha), -1, 3)

    def reconstruct(self, params: np.ndarray, dense: bool = False) -> np.ndarray:
        """Vertices ``(B, N, 3)`` float32 in the 120×120 crop frame (x right, y up, model z).

        ``N`` is 68 (sparse) or 38,365 (dense).
        """
        params = np.asarray(params, dtype=np.float32).reshape(-1, N_PARAMS)
        R, t, _, _ = split_params(params)
        return self._posed(params, R, t, dense)

    def reconstruct_image(self, params: np.ndarray, roi_boxes: np.ndarray, dense: bool = False,
                          size: int = INPUT_SIZE) -> np.ndarray:
        """Vertices ``(B, N, 3)`` float32 in image pixels: :meth:`reconstruct` followed by
        :func:`to_image_frame`, fused into one pass over the model (the fast path)."""
        params = np.asarray(params, dtype=np.float32).reshape(-1, N_PARAMS)
        A = _image_affines(params, roi_boxes, size)
        if dense:
            v = self._posed(params, A[:, :, :3], A[:, :, 3], dense=True)
        else:
            v = self._landmarks_posed(params, A)
        if v.shape[1]:
            v[..., 2] -= v[..., 2].min(axis=1, keepdims=True)
        return v

    def _landmarks_posed(self, params: np.ndarray, A: np.ndarray) -> np.ndarray:
        """The 68 landmarks ``(B, 68, 3)`` float32 of ``(B, 62)`` float32 params mapped by affines
        ``A`` ``(B, 3, 4)``, in a few whole-array steps (it runs for every face of every video
        frame, where NumPy's per-call overhead is most of its cost): shape
        ``[alpha, 1] @ [w_lm; u_lm]``, then ``A``."""
        b = len(params)
        basis = self._cache.get("lm_affine")
        if basis is None:  # (51, 204): the 50 bases, then the mean shape
            basis = self._cache["lm_affine"] = np.ascontiguousarray(
                np.vstack([self.w_lm.T, self.u_lm[None]]), dtype=np.float32)
        coef = np.ones((b, 51), np.float32)
        coef[:, :50] = params[:, 12:62]
        # no BLAS for products this small (see shape_vectors)
        shape = np.einsum("bk,kn->bn", coef, basis).reshape(b, -1, 3)
        v = np.einsum("bni,bji->bnj", shape, A[:, :, :3])
        v += A[:, None, :, 3]
        return v

    def _posed(self, params: np.ndarray, M: np.ndarray, c: np.ndarray, dense: bool) -> np.ndarray:
        """``M @ shape + c`` per face for linear maps ``M`` ``(B, 3, 3)`` and offsets ``c`` ``(B, 3)``."""
        if not dense:
            s = self.shape_vectors(params, dense=False)
            return (np.einsum("bni,bji->bnj", s, M.astype(np.float32))  # no BLAS (see above)
                    + c[:, None, :].astype(np.float32))
        self._require_dense()
        alpha = np.ascontiguousarray(params[:, 12:62], dtype=np.float32)
        out = np.empty((len(params), self.n_vertices, 3), np.float32)
        from tddfa.face._dense_kernel import dense_affine  # Numba loads only for dense meshes

        dense_affine(self.u, self.w, alpha, np.ascontiguousarray(M, np.float32),
                      np.ascontiguousarray(c, np.float32), out)
        return out


def _image_affines(params: np.ndarray, roi_boxes: np.ndarray, size: int) -> np.ndarray:
    """``(B, 3, 4)`` float32 maps from model space to image pixels, one per face: ``[R | t]``
    (the 12 pose parameters of ``params`` ``(B, 62)``) followed by the crop → image map of its
    roi (:func:`to_image_frame`, whose z shift is applied afterwards). Built from Python floats:
    for a handful of faces that costs less than a dozen tiny array operations."""
    rois = np.asarray(roi_boxes, dtype=np.float64).reshape(-1, 4)
    rows = []
    for p, roi in zip(params[:, :12].tolist(), rois.tolist(), strict=True):
        sx, sy = (roi[2] - roi[0]) / size, (roi[3] - roi[1]) / size
        sz = (sx + sy) / 2
        rows.append([[sx * p[0], sx * p[1], sx * p[2], sx * (p[3] - 1) + roi[0]],
                     [-sy * p[4], -sy * p[5], -sy * p[6], sy * (size - p[7]) + roi[1]],
                     [sz * p[8], sz * p[9], sz * p[10], sz * (p[11] - 1)]])
    return np.array(rows, np.float32).reshape(-1, 3, 4)


def to_image_frame(vertices: np.ndarray, roi_boxes: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Map crop-frame vertices ``(B, N, 3)`` into image pixels for roi boxes ``(B, 4)``.

    x − 1 and z − 1, y flipped as ``size − y``; x, y scaled by roi width/height over ``size`` and
    shifted by the roi's top-left; z scaled by the mean of the two scales and shifted so that each
    face's smallest z is 0 (z grows towards the camera). Returns float32 ``(B, N, 3)``.
    """
    v = np.array(vertices, dtype=np.float32, copy=True)
    if v.ndim == 2:
        v = v[None]
    rois = np.asarray(roi_boxes, dtype=np.float32).reshape(-1, 4)
    sx = (rois[:, 2] - rois[:, 0]) / size
    sy = (rois[:, 3] - rois[:, 1]) / size
    v[..., 0] = (v[..., 0] - 1.0) * sx[:, None] + rois[:, 0, None]
    v[..., 1] = (size - v[..., 1]) * sy[:, None] + rois[:, 1, None]
    v[..., 2] = (v[..., 2] - 1.0) * ((sx + sy) / 2)[:, None]
    if v.shape[1]:
        v[..., 2] -= v[..., 2].min(axis=1, keepdims=True)
    return v


def _sparse_from_txt() -> tuple[np.ndarray, np.ndarray]:
    u = np.loadtxt(assets.resolve("u_base"), dtype=np.float32).reshape(-1)
    w_shp = np.loadtxt(assets.resolve("w_shp_base"), dtype=np.float32).reshape(204, -1)
    w_exp = np.loadtxt(assets.resolve("w_exp_base"), dtype=np.float32).reshape(204, -1)
    return u, np.concatenate([w_shp, w_exp], axis=1)


def _load_dense(name: str) -> dict[str, np.ndarray]:
    path = assets.resolve(name)
    if name == "bfm_noneck":
        d = load_pickle(path)
        if not isinstance(d, dict):
            raise AssetError(f"{path}: expected a dict with u, w_shp, w_exp, keypoints")
        tri = load_pickle(assets.resolve("tri"))
        d = dict(d)
        d["tri"] = np.asarray(tri)
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise AssetError(f"{path}: corrupt dense model file ({type(exc).__name__}: {exc}); "
                             "delete it and fetch it again") from exc
    missing = {"u", "w_shp", "w_exp", "keypoints", "tri"} - set(d)
    if missing:
        raise AssetError(f"{path}: dense model lacks {sorted(missing)}")
    return d


_ARRAYS = ("u", "w", "keypoints", "tri")
_CACHE_VERSION = "1"


def _normalised(name: str) -> dict[str, np.ndarray]:
    """The dense model ``name`` as ``u`` (3N,), ``w`` (3N, 50) float32, ``keypoints`` (204,) int64,
    ``tri`` (M, 3) int32, all C-contiguous."""
    d = _load_dense(name)
    u = np.ascontiguousarray(np.asarray(d["u"], dtype=np.float32).reshape(-1))
    w = np.ascontiguousarray(np.concatenate(
        [np.asarray(d["w_shp"], np.float32), np.asarray(d["w_exp"], np.float32)], axis=1
    ))
    kp = np.asarray(d["keypoints"]).reshape(-1).astype(np.int64)
    tri = np.asarray(d["tri"])
    if tri.shape[0] == 3 and tri.shape[1] != 3:
        tri = tri.T
    tri = np.ascontiguousarray(tri, dtype=np.int32)
    return {"u": u, "w": w, "keypoints": kp, "tri": tri}


def _dense_arrays(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``u, w, keypoints, tri`` of dense model ``name``, memory-mapped from a plain ``.npy`` copy
    in the user cache (made on first use), so a new process maps them in milliseconds instead of
    decompressing / unpickling 23 MB; pages are read when first touched. The copy is keyed by the
    source files' size and modification time."""
    srcs = [assets.resolve(name)] + ([assets.resolve("tri")] if name == "bfm_noneck" else [])
    key = "-".join(f"{s.stat().st_size}-{s.stat().st_mtime_ns}" for s in srcs)
    folder = assets.cache_dir() / "mm" / f"{name}-{key}-v{_CACHE_VERSION}"
    if all((folder / f"{k}.npy").is_file() for k in _ARRAYS):
        try:
            d = {k: np.asarray(np.load(folder / f"{k}.npy", mmap_mode="r", allow_pickle=False))
                 for k in _ARRAYS}
            return d["u"], d["w"], d["keypoints"], d["tri"]
        except (OSError, ValueError) as exc:  # a damaged copy is rebuilt below
            log.warning("ignoring the cached copy of %s in %s: %s", name, folder, exc)
    d = _normalised(name)
    try:
        import tempfile

        folder.mkdir(parents=True, exist_ok=True)
        for k in _ARRAYS:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{k}-", suffix=".npy")
            with os.fdopen(fd, "wb") as f:
                np.save(f, d[k], allow_pickle=False)
            os.replace(tmp, folder / f"{k}.npy")
    except OSError as exc:
        log.info("could not cache %s as .npy in %s: %s", name, folder, exc)
    return d["u"], d["w"], d["keypoints"], d["tri"]


@lru_cache(maxsize=4)
def load_morphable_model(prefer: str = "auto") -> MorphableModel:
    """Load the best available model.

    Args:
        prefer: ``"auto"`` (official, else approx, else sparse), ``"official"``, ``"approx"`` or
            ``"sparse"``.

    Raises:
        AssetError: the requested source is not available.
    """
    order = {"auto": ["bfm_noneck", "bfm_noneck_approx", None], "official": ["bfm_noneck"],
             "approx": ["bfm_noneck_approx"], "sparse": [None]}
    if prefer not in order:
        raise InputError(f"prefer must be one of {list(order)}, got {prefer!r}")
    errors = []
    problems = []  # dense files that exist but cannot be used
    for name in order[prefer]:
        if name is None:
            u_lm, w_lm = _sparse_from_txt()
            notes = "68-landmark bases only; no dense mesh"
            if problems:
                notes += " (" + "; ".join(problems) + ")"
            return MorphableModel(u_lm=u_lm, w_lm=w_lm, source="sparse", notes=notes)
        try:
            u, w, kp, tri = _dense_arrays(name)
        except AssetError as exc:
            errors.append(str(exc))
            if assets.find(name) is not None:
                problems.append(f"{name} is present but unusable: {exc}")
                log.warning("dense model %s is present but unusable: %s", name, exc)
            if prefer != "auto":
                raise
            continue
        if u.shape[0] != w.shape[0] or w.shape[1] != N_SHAPE + N_EXP or kp.shape != (204,):
            raise AssetError(f"{name}: unexpected shapes u {u.shape}, w {w.shape}, kp {kp.shape}")
        source = "official" if name == "bfm_noneck" else "approx"
        notes = ("official BFM noneck v3" if source == "official" else
                 "approximate dense bases (mean, triangles and landmark bases exact; dense shape "
                 "bases ~5% error, dense expression interpolated from 68 landmarks)")
        if source == "approx":
            log.info("dense model: using the approximate bfm_noneck_approx (official file absent)")
        return MorphableModel(
            u_lm=np.ascontiguousarray(u[kp]), w_lm=np.ascontiguousarray(w[kp]), source=source,
            u=u, w=w, tri=tri, keypoints=kp[0::3] // 3, notes=notes,
        )
    raise AssetError("; ".join(errors))  # pragma: no cover
