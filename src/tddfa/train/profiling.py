"""Face profiling (3DDFA v1's 300W-LP synthesis): rotate a photographed face out of plane.

Given a photo, a roi box and the 62 parameters of the face in that roi's crop frame, the face
is turned to a new yaw (and pitch) about the centre of its dense mesh:

* the **face** is the dense mesh of the morphable model; its new pose is exact: the 3×4 matrix
  becomes ``[ΔR·sR | ΔR (t − c) + c]`` (``c`` the mesh centre), shape and expression unchanged,
  so the new parameters reproduce the new landmarks by construction;
* the **surroundings** (hair, ears, neck, background) are carried by anchors: rings of points
  outside the face's outline (the mesh's outer boundary) at growing distances, given the depth
  of the outline point they extend, and moved by the same rotation with a weight that falls
  from 1 at the outline to 0 at the outer ring; the image border is fixed. A Delaunay
  triangulation of the anchors (minus the face interior) makes a background mesh;
* both meshes are drawn at their **target** positions into one z-buffer
  (:func:`tddfa.rasterize.rasterize`) carrying each vertex's **source** pixel position; the
  background mesh lies behind the face, so the face's far side and whatever it now covers are
  hidden; the image is resampled once with ``cv2.remap``; pixels left uncovered are inpainted.

Angles are degrees in the pose convention of :mod:`tddfa.pose` (the crop frame, y up).
``build_profiled_set`` writes a synthesised set with a manifest (``tddfa data profile``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from tddfa.errors import InputError
from tddfa.face.crop import INPUT_SIZE, roi_from_landmarks

__all__ = ["ProfiledView", "rotate_face", "reframe_params", "face_outline", "build_profiled_set",
           "RING_SCALES", "RING_WEIGHTS", "mouth_cap"]

log = logging.getLogger(__name__)

#: anchor rings outside the outline: distance from the face centre, in outline radii
RING_SCALES = (1.12, 1.3, 1.55, 1.9, 2.5)
#: fraction of its outline point's 2-D displacement each ring follows: ``1 − (s − 1) / 1.5``,
#: a slope below 1 so that rings never cross each other (no fold-over) for displacements up to
#: 1.5 outline radii
RING_WEIGHTS = tuple(float(np.clip(1 - (s - 1) / 1.5, 0, 1)) for s in RING_SCALES)


@dataclass(frozen=True)
class ProfiledView:
    """A synthesised view.

    Attributes:
        image: ``(H, W, 3)`` uint8 BGR, same size as the input photo.
        roi: ``(4,)`` float64 roi box (image pixels) from the new landmarks
            (:func:`~tddfa.crop.roi_from_landmarks`).
        params: ``(62,)`` float32 parameters in the crop frame of ``roi``.
        landmarks: ``(68, 2)`` float32 new landmarks, image pixels.
        yaw, pitch: the new yaw and pitch, degrees.
        covered: fraction of the image produced by the meshes (the rest was inpainted).
        source_map: ``(H, W, 2)`` float32 source pixel (x, y) each output pixel was sampled from
            (``-1`` where inpainted).
        visible: ``(68,)`` bool, landmarks not hidden by the face itself in the new view and
            not on its silhouette (the 2×2 pixels around each show the face mesh, none of them
            more than 2 px nearer the camera than the landmark).
    """

    image: np.ndarray
    roi: np.ndarray
    params: np.ndarray
    landmarks: np.ndarray
    yaw: float
    pitch: float
    covered: float
    source_map: np.ndarray | None = None
    visible: np.ndarray | None = None


def reframe_params(params: np.ndarray, roi_from: np.ndarray, roi_to: np.ndarray,
                   size: int = INPUT_SIZE) -> np.ndarray:
    """Express parameters ``(62,)`` given in the crop frame of ``roi_from`` in that of ``roi_to``.

    The z row is scaled by the ratio of the mean roi scales (the depth offset is kept).
    """
    p = np.asarray(params, np.float64).reshape(62).copy()
    a = np.asarray(roi_from, np.float64).reshape(4)
    b = np.asarray(roi_to, np.float64).reshape(4)
    sa = np.array([(a[2] - a[0]) / size, (a[3] - a[1]) / size])
    sb = np.array([(b[2] - b[0]) / size, (b[3] - b[1]) / size])
    P = p[:12].reshape(3, 4)
    # x: x_img = (x - 1) sa + a0 ; x' = (x_img - b0) / sb + 1
    kx, ky = sa[0] / sb[0], sa[1] / sb[1]
    P[0] *= kx
    P[0, 3] += 1 - kx + (a[0] - b[0]) / sb[0]
    # y: y_img = (size - y) sa + a1 ; y' = size - (y_img - b1) / sb
    P[1] *= ky
    P[1, 3] += size - ky * size - (a[1] - b[1]) / sb[1]
    P[2, :3] *= sa.mean() / sb.mean()
    p[:12] = P.reshape(-1)
    return p.astype(np.float32)


@lru_cache(maxsize=1)
def _boundary_loops() -> list[np.ndarray]:
    """Boundary loops of the dense mesh, longest first (face outline, then the mouth)."""
    from tddfa.face.morphable_model import load_morphable_model

    tri = load_morphable_model().tri
    if tri is None:
        raise InputError("face profiling needs the dense model (bfm_noneck or bfm_noneck_approx)")
    e = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    u, c = np.unique(e, axis=0, return_counts=True)
    b = u[c == 1]
    adj: dict[int, list[int]] = {}
    for x, y in b:
        adj.setdefault(int(x), []).append(int(y))
        adj.setdefault(int(y), []).append(int(x))
    seen: set[int] = set()
    loops: list[np.ndarray] = []
    for s in adj:
        if s in seen:
            continue
        loop, prev, cur = [s], -1, s
        seen.add(s)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            seen.add(cur)
            loop.append(cur)
        loops.append(np.asarray(loop, dtype=np.int64))
    return sorted(loops, key=len, reverse=True)


def face_outline() -> np.ndarray:
    """Vertex indices of the dense mesh's outer boundary loop, in order ``(K,)``."""
    return _boundary_loops()[0]


@lru_cache(maxsize=2)
def mouth_cap() -> np.ndarray:
    """Triangles ``(K, 3)`` closing the dense mesh's inner-mouth hole (its second boundary loop),
    so the mouth interior is carried with the face."""
    from scipy.spatial import Delaunay

    from tddfa.face.morphable_model import load_morphable_model

    mm = load_morphable_model()
    loops = _boundary_loops()
    if len(loops) < 2:
        return np.zeros((0, 3), np.int32)
    loop = loops[1]
    xy = np.asarray(mm.u, np.float64).reshape(-1, 3)[loop, :2]
    tri = Delaunay(xy).simplices
    poly = xy.astype(np.float32).reshape(-1, 1, 2)
    cen = xy[tri].mean(axis=1)
    keep = [cv2.pointPolygonTest(poly, (float(x), float(y)), False) > 0 for x, y in cen]
    return np.ascontiguousarray(loop[tri[np.asarray(keep, bool)]], dtype=np.int32)


def _to_image(v: np.ndarray, roi: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Crop-frame vertices ``(N, 3)`` → image pixels (y down, z towards the camera, no z shift)."""
    sx = (roi[2] - roi[0]) / size
    sy = (roi[3] - roi[1]) / size
    out = np.empty_like(v, dtype=np.float64)
    out[:, 0] = (v[:, 0] - 1) * sx + roi[0]
    out[:, 1] = (size - v[:, 1]) * sy + roi[1]
    out[:, 2] = (v[:, 2] - 1) * (sx + sy) / 2
    return out


def _rotation_delta(params: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """``ΔR`` that turns the face of ``params`` to ``yaw``/``pitch`` (degrees), keeping roll."""
    from tddfa.face.pose import angles_to_rotation, pose_from_params

    ang, R, _, _ = pose_from_params(np.asarray(params, np.float64)[None])
    roll = ang[0, 2]
    Rn = angles_to_rotation(np.radians(yaw), np.radians(pitch), np.radians(roll))
    return Rn @ R[0].T


def rotate_face(image: np.ndarray, roi: np.ndarray, params: np.ndarray, yaw: float | None = None,
                pitch: float | None = None, *, delta: bool = True, max_yaw: float = 90.0,
                inpaint: bool = True, march: bool = False) -> ProfiledView | None:
    """Synthesise the face of ``image`` turned out of plane.

    Args:
        image: ``(H, W, 3)`` uint8 BGR photo.
        roi: ``(4,)`` roi box of the face (image pixels); ``params`` live in its crop frame.
        params: ``(62,)`` de-normalised parameters.
        yaw, pitch: degrees; increments over the current pose with ``delta=True`` (default),
            else the target angles. ``None`` keeps the current value.
        max_yaw: the target |yaw| is clipped to this (degrees).
        inpaint: fill pixels no mesh covers (otherwise they are black).
        march: give the view's landmarks (and so its roi) in 300W-LP style: the contour points
            follow the visible silhouette under the new pose
            (:func:`tddfa.face.fitting.march_contour`); otherwise the fixed 68 vertices.

    Returns:
        the :class:`ProfiledView`, or ``None`` when the face cannot be rendered (degenerate).
    """
    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.face.pose import pose_from_params
    from tddfa.render.rasterize import empty_buffers, interpolate, rasterize, visible_vertices

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
    H, W = img.shape[:2]
    roi = np.asarray(roi, np.float64).reshape(4)
    p = np.asarray(params, np.float64).reshape(62)
    mm = load_morphable_model()
    if not mm.has_dense:
        raise InputError("face profiling needs the dense model (bfm_noneck or bfm_noneck_approx)")
    ang = pose_from_params(p[None])[0][0]
    y0, p0 = float(ang[0]), float(ang[1])
    ty = y0 + (yaw or 0.0) if delta else (y0 if yaw is None else float(yaw))
    tp = p0 + (pitch or 0.0) if delta else (p0 if pitch is None else float(pitch))
    ty = float(np.clip(ty, -max_yaw, max_yaw))
    dR = _rotation_delta(p, ty, tp)

    v_src = mm.reconstruct(p[None], dense=True)[0].astype(np.float64)  # crop frame
    c = v_src.mean(axis=0)
    P = p[:12].reshape(3, 4)
    Pn = np.concatenate([dR @ P[:, :3], (dR @ (P[:, 3] - c) + c)[:, None]], axis=1)
    pn = p.copy()
    pn[:12] = Pn.reshape(-1)
    v_dst = (v_src - c) @ dR.T + c

    src_img = _to_image(v_src, roi)
    dst_img = _to_image(v_dst, roi)
    # anchors: rings outside the outline (source positions, depth of the outline point)
    ol = face_outline()
    step = max(1, len(ol) // 90)
    ol = ol[::step]
    ctr_c = c  # crop frame centre
    ring_src, ring_dst = [], []
    disp = _to_image(v_dst[ol], roi)[:, :2] - _to_image(v_src[ol], roi)[:, :2]
    for scale, w in zip(RING_SCALES, RING_WEIGHTS, strict=True):
        pts = _to_image(ctr_c + (v_src[ol] - ctr_c) * np.array([scale, scale, 1.0]), roi)[:, :2]
        ring_src.append(pts)
        ring_dst.append(pts + w * disp)
    ring_src = np.concatenate(ring_src)
    ring_dst = np.concatenate(ring_dst)
    # fixed frame: a coarse grid over the image plus a margin
    m = 0.25 * max(H, W)
    gx = np.linspace(-m, W - 1 + m, 9)
    gy = np.linspace(-m, H - 1 + m, 9)
    grid = np.array([(x, y) for y in gy for x in gx])
    face_r = np.linalg.norm(src_img[ol, :2] - src_img[ol, :2].mean(0), axis=1).max()
    far = np.linalg.norm(grid - src_img[ol, :2].mean(0), axis=1) > face_r * RING_SCALES[-1] * 1.05
    grid = grid[far]
    outline_src = src_img[ol]
    outline_dst = dst_img[ol]
    bg_src = np.concatenate([outline_src[:, :2], ring_src, grid])
    bg_dst = np.concatenate([outline_dst[:, :2], ring_dst, grid])
    from scipy.spatial import Delaunay

    try:
        dl = Delaunay(bg_src)
    except Exception as exc:  # noqa: BLE001 - degenerate geometry
        log.warning("profiling: triangulation failed (%s)", exc)
        return None
    tris = dl.simplices.astype(np.int32)
    n_ol = len(ol)
    inner = np.all(tris < n_ol, axis=1)
    if inner.any():
        cen = bg_src[tris[inner]].mean(axis=1)
        poly = outline_src[:, :2].astype(np.float32).reshape(-1, 1, 2)
        inside = np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), False) > 0
                           for x, y in cen])
        keep = np.ones(len(tris), bool)
        keep[np.flatnonzero(inner)[inside]] = False
        tris = tris[keep]
    zmin = min(src_img[:, 2].min(), dst_img[:, 2].min())
    bg_v = np.concatenate([bg_dst, np.full((len(bg_dst), 1), zmin - 1e4)], axis=1)

    depth, tri_index, bary = empty_buffers(H, W)
    rasterize(bg_v.astype(np.float32), tris, H, W, depth=depth, tri_index=tri_index, bary=bary)
    n_bg = len(tris)
    face_tri = np.concatenate([mm.tri.astype(np.int32), mouth_cap()])
    rasterize(dst_img.astype(np.float32), face_tri, H, W, depth=depth, tri_index=tri_index,
              bary=bary, tri_offset=n_bg)
    # source positions as attributes of the combined mesh
    attrs = np.concatenate([bg_src, src_img[:, :2]]).astype(np.float32)
    all_tris = np.concatenate([tris, face_tri + len(bg_src)])
    src_map = interpolate(attrs, all_tris, tri_index, bary)
    covered = tri_index >= 0
    map_x = np.where(covered, src_map[..., 0], -1).astype(np.float32)
    map_y = np.where(covered, src_map[..., 1], -1).astype(np.float32)
    out = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    hole = ~covered
    if hole.any():
        out[hole] = 0
        if inpaint:
            out = cv2.inpaint(out, hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
    if march:
        from tddfa.face.fitting import march_contour

        lm_idx = march_contour(pn[None], mm)[0]
    else:
        lm_idx = np.asarray(mm.keypoints).reshape(-1)
    lm_img = _to_image(v_dst[lm_idx], roi)[:, :2]
    new_roi = roi_from_landmarks(lm_img)
    pr = reframe_params(pn, roi, new_roi)
    ang_n = pose_from_params(pr[None].astype(np.float64))[0][0]
    # visible: not hidden (z-buffer) and the 2×2 pixels around it all show the face mesh
    kp = dst_img[lm_idx].astype(np.float32)
    vis = visible_vertices(kp, depth, tol=1.0)
    face_px = np.pad(tri_index >= n_bg, 1)
    x0 = np.clip(np.floor(kp[:, 0]).astype(int), -1, W - 1) + 1
    y0 = np.clip(np.floor(kp[:, 1]).astype(int), -1, H - 1) + 1
    dpad = np.pad(depth, 1, constant_values=-np.inf)
    for dy in (0, 1):
        for dx in (0, 1):
            vis &= face_px[y0 + dy, x0 + dx] & (dpad[y0 + dy, x0 + dx] <= kp[:, 2] + 2.0)
    return ProfiledView(out, new_roi, pr, lm_img.astype(np.float32), float(ang_n[0]),
                        float(ang_n[1]), float(covered.mean()),
                        np.stack([map_x, map_y], axis=-1), vis)


def _target_angles(cur_yaw: float, yaws: list[float], rng: np.random.Generator,
                   pitch_range: float, pitches: list[float] | None = None
                   ) -> list[tuple[float, float]]:
    """Target (yaw, pitch) per view, degrees: with ``pitches`` the views of one face cycle
    through that pitch grid (random start, ±``pitch_range``/4 jitter), else a uniform pitch in
    ``±pitch_range``."""
    sign = np.sign(cur_yaw) if abs(cur_yaw) > 3 else (1.0 if rng.random() < 0.5 else -1.0)
    out = []
    start = int(rng.integers(0, len(pitches))) if pitches else 0
    for y in yaws:
        if abs(y) <= abs(cur_yaw) + 2:
            continue
        if pitches:
            tp = pitches[(start + len(out)) % len(pitches)] + rng.uniform(-1, 1) * pitch_range / 4
        else:
            tp = rng.uniform(-pitch_range, pitch_range)
        out.append((float(sign * abs(y)), float(tp)))
    return out


def build_profiled_set(samples, out_dir: str | Path, yaws: list[float] = (30, 45, 60, 75, 90),
                       pitch_range: float = 10.0, seed: int = 0, quality: int = 95,
                       include_original: bool = True, progress: bool = True,
                       march: bool = False, pitches: list[float] | None = None,
                       shard: tuple[int, int] = (0, 1)) -> Path:
    """Synthesise rotated views of every sample and write them with a manifest. Resumable.

    For each face, each target |yaw| in ``yaws`` beyond its current |yaw| gives one view, turned
    towards the side the face already looks to (random side for frontal faces), with a random
    pitch change in ``±pitch_range``. Images go to ``out_dir/images/``; each finished face is
    appended to ``out_dir/records.jsonl`` (so an interrupted run resumes where it stopped), and
    ``out_dir/manifest.npz`` is rewritten at the end (see :mod:`.data`). A face that fails (bad
    image, degenerate mesh) is skipped with a warning and counted.

    Args:
        samples: a :class:`~tddfa.training.data.SampleSet` (e.g. from ``tddfa data fit``).
        out_dir: output folder.

    With ``shard=(k, n)`` only faces ``i % n == k`` are done (records go to
    ``records.{k}of{n}.jsonl``), so ``n`` processes can share the work; the manifest gathers
    every shard's records finished so far.

    Returns:
        the manifest path.
    """

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    k_shard, n_shard = shard
    if not 0 <= k_shard < n_shard:
        raise InputError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
    rec_path = out / ("records.jsonl" if n_shard == 1 else f"records.{k_shard}of{n_shard}.jsonl")
    done: set[str] = set()
    for rp in sorted(out.glob("records*.jsonl")):
        for line in rp.read_text().splitlines():
            try:
                done.add(json.loads(line)["source"])
            except (ValueError, KeyError):
                continue
    todo = [i for i in range(len(samples))
            if str(samples.names[i]) not in done and i % n_shard == k_shard]
    log.info("profiling: %d faces done, %d to do", len(done), len(todo))
    skipped = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="profile", unit="face")
    with open(rec_path, "a") as rec:
        for i in todo:
            name = str(samples.names[i])
            try:
                img = cv2.imread(str(samples.images[i]), cv2.IMREAD_COLOR)
                if img is None:
                    raise InputError(f"cannot read {samples.images[i]}")
                roi = samples.roi_boxes[i]
                p = samples.params[i]
                rng = np.random.default_rng(seed * 1_000_003 + i)
                from tddfa.face.pose import pose_from_params

                cur = float(pose_from_params(np.asarray(p, np.float64)[None])[0][0, 0])
                views = []
                if include_original:
                    from tddfa.face.morphable_model import load_morphable_model

                    if march:
                        from tddfa.face.fitting import marched_landmarks

                        lm3 = marched_landmarks(np.asarray(p)[None])[0].astype(np.float64)
                    else:
                        lm3 = load_morphable_model().reconstruct(
                            np.asarray(p)[None])[0].astype(np.float64)
                    lm = _to_image(lm3, np.asarray(roi, np.float64))
                    fn = f"{name}_orig.jpg"
                    cv2.imwrite(str(out / "images" / fn), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
                    views.append({"image": f"images/{fn}", "roi": list(map(float, roi)),
                                  "params": list(map(float, p)),
                                  "landmarks": lm[:, :2].astype(float).round(3).tolist()})
                for ty, tp in _target_angles(cur, list(yaws), rng, pitch_range, pitches):
                    v = rotate_face(img, roi, p, ty, tp, delta=False, march=march)
                    if v is None:
                        continue
                    fn = f"{name}_y{int(round(ty)):+03d}.jpg"
                    cv2.imwrite(str(out / "images" / fn), v.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
                    views.append({"image": f"images/{fn}", "roi": list(map(float, v.roi)),
                                  "params": list(map(float, v.params)),
                                  "landmarks": v.landmarks.astype(float).round(3).tolist()})
                rec.write(json.dumps({"source": name, "views": views}) + "\n")
                rec.flush()
            except Exception as exc:  # noqa: BLE001 - one bad face must not stop the run
                skipped += 1
                log.warning("profiling %s skipped: %s", name, exc)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if skipped:
        log.warning("profiling: %d face(s) skipped", skipped)
    return write_profiled_manifest(out, skipped, march=march)


def remarch(samples):
    """Re-derive the landmarks of a sample set in 300W-LP style from its parameters: the
    marched landmarks (:func:`tddfa.face.fitting.marched_landmarks`), the roi from them, and
    the parameters re-expressed in that roi's crop frame. Returns a new set."""
    from tddfa.face.fitting import crop_to_image_frame, marched_landmarks
    from tddfa.train.samples import SampleSet

    rois = np.asarray(samples.roi_boxes, np.float64)
    lm = crop_to_image_frame(marched_landmarks(samples.params)[..., :2], rois)
    new_rois = np.stack([roi_from_landmarks(p) for p in lm])
    params = np.stack([reframe_params(p, a, b)
                       for p, a, b in zip(samples.params, rois, new_rois, strict=True)])
    return SampleSet(samples.names, samples.images, new_rois.astype(np.float32),
                     params.astype(np.float32), lm.astype(np.float32), samples.skipped,
                     dict(samples.meta))


def write_profiled_manifest(out_dir: str | Path, skipped: int = 0, march: bool = False) -> Path:
    """(Re)write ``out_dir/manifest.npz`` from every ``records*.jsonl`` there (also those of
    other shards and of an unfinished run); with ``march`` the landmarks, rois and parameters
    are re-derived by :func:`remarch`."""
    from tddfa.train.samples import SampleSet, save_manifest

    out = Path(out_dir)
    names, images, rois, params, lms = [], [], [], [], []
    lines = [ln for rp in sorted(out.glob("records*.jsonl")) for ln in rp.read_text().splitlines()]
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:  # a line being written by a running shard
            continue
        for v in r["views"]:
            names.append(Path(v["image"]).stem)
            images.append(str((out / v["image"]).resolve()))
            rois.append(v["roi"])
            params.append(v["params"])
            lms.append(v["landmarks"])
    if not names:
        raise InputError(f"profiling produced no view ({skipped} faces skipped)")
    ss = SampleSet(np.array(names), np.array(images), np.array(rois, np.float32),
                   np.array(params, np.float32), np.array(lms, np.float32), skipped=skipped)
    if march:
        ss = remarch(ss)
    return save_manifest(out / "manifest.npz", ss)
