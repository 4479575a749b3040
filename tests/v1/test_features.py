"""PNCC and PAF features from parameter estimates (NumPy/Numba)."""

from __future__ import annotations

import numpy as np
import pytest

from tddfa.errors import InputError

pytestmark = pytest.mark.usefixtures("shared")


@pytest.fixture(scope="module")
def mean_params():
    from tddfa.models.regressor import load_param_stats

    mean, _ = load_param_stats()
    return mean[None].astype(np.float32)


def test_anchor_model_grid_and_expression_handling():
    from tddfa.v1.features import load_anchor_model

    m = load_anchor_model()
    assert m.u.shape == (4096, 3) and m.w.shape == (4096, 3, 50)
    assert m.tri.shape[1] == 3 and 7000 < len(m.tri) <= 2 * 63 * 63
    # Model_PAF.pkl's w_exp_filter (a copy of shape columns) is not used: expression columns
    # come from the dense model and differ from the first shape columns
    assert not np.allclose(m.w[:, :, 40:], m.w[:, :, :10])
    assert np.abs(m.w[:, :, 40:]).sum() > 0
    assert m.ncc.min() >= 0 and m.ncc.max() <= 1


def test_anchors_agree_with_the_dense_mesh(mean_params):
    # the anchors lie on the face: each anchor of the mean face is close to the rendered mesh
    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.v1.features import anchors_crop

    a = anchors_crop(mean_params)[0]
    mm = load_morphable_model()
    v = mm.reconstruct(mean_params, dense=True)[0]
    v = np.stack([v[:, 0] - 1, 120 - v[:, 1], v[:, 2]], 1)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(v[:, :2]).query(a[:, :2])
    assert np.median(d) < 0.5  # crop pixels


def test_pncc_render(mean_params):
    from tddfa.v1.features import render_pncc_crops

    p = np.repeat(mean_params, 2, 0)
    p[1] = np.nan
    out = render_pncc_crops(p)
    assert out.shape == (2, 120, 120, 3) and out.dtype == np.uint8
    face = out[0].any(axis=2)
    assert 0.1 < face.mean() < 0.8
    assert not out[1].any()  # a non-finite estimate renders nothing
    from tddfa.v1.features import anchors_crop

    q = p.copy()
    q[1] = mean_params[0]
    q[1, 30] = np.nan  # one bad coefficient: every anchor is NaN (compiled code keeps NaN)
    assert np.isnan(anchors_crop(q)[1]).all() and np.isfinite(anchors_crop(q)[0]).all()
    # NCC x grows to the right of the image for a frontal face (channel 0 = x)
    cols = np.nonzero(face.any(0))[0]
    left = out[0][:, cols[0] + 3][face[:, cols[0] + 3], 0].mean()
    right = out[0][:, cols[-1] - 3][face[:, cols[-1] - 3], 0].mean()
    assert right > left + 100


def test_paf_samples_the_crop_at_the_anchors(mean_params):
    from tddfa.v1.features import anchors_crop, render_paf_crops

    yy, xx = np.mgrid[0:120, 0:120]
    crop = np.stack([xx * 2, yy * 2, np.full_like(xx, 77)], -1).astype(np.uint8)[None]
    paf = render_paf_crops(crop, mean_params, kernel=3)
    assert paf.shape == (1, 192, 192, 3)
    a = anchors_crop(mean_params)[0].reshape(64, 64, 3)
    # the centre of patch (i, j) is the bilinear sample at anchor (i, j): a linear ramp → exact
    centre = paf[0, 1::3, 1::3].astype(float)
    inside = (a[..., 0] > 1) & (a[..., 0] < 118) & (a[..., 1] > 1) & (a[..., 1] < 118)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(centre[inside, 0], 2 * a[inside, 0], atol=0.51)
    np.testing.assert_allclose(centre[inside, 1], 2 * a[inside, 1], atol=0.51)
    # offsets: the patch's right neighbour is one pixel to the right
    np.testing.assert_allclose(paf[0, 1::3, 2::3][inside, 0].astype(float), 2 * a[inside, 0] + 2, atol=0.51)
    assert np.all(paf[0, 1::3, 1::3][inside, 2] == 77)


def test_paf_bad_input(mean_params):
    from tddfa.v1.features import render_paf_crops

    with pytest.raises(InputError):
        render_paf_crops(np.zeros((1, 60, 60, 3), np.uint8), mean_params)
    with pytest.raises(InputError):
        render_paf_crops(np.zeros((1, 120, 120, 3), np.uint8), mean_params, kernel=2)
    with pytest.raises(InputError):
        render_paf_crops(np.zeros((2, 120, 120, 3), np.uint8), mean_params)


def test_paf_render_kind(shared):
    from tddfa.face.crop import roi_from_box
    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.models.regressor import load_param_stats
    from tddfa.pipeline.aligner import faces_from_params
    from tddfa.render.registry import RENDERERS, render

    assert "paf" in RENDERERS
    mean, _ = load_param_stats()
    img = np.full((300, 300, 3), 128, np.uint8)
    roi = roi_from_box(np.array([100, 100, 200, 200]))
    faces = faces_from_params(load_morphable_model("sparse"), mean[None], roi[None])
    out = render("paf", img, faces)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out != img).any()


def test_pncc_is_the_rasteriser_render(mean_params):
    # the fused PNCC kernel is the generic z-buffer (tddfa.render.rasterize) + NCC interpolation
    from tddfa.render.rasterize import interpolate, rasterize
    from tddfa.v1.features import anchors_crop, load_anchor_model, render_pncc_crops

    rng = np.random.default_rng(0)
    from tddfa.models.regressor import load_param_stats

    mean, std = load_param_stats()
    p = (mean + 0.3 * std * rng.normal(size=(4, 62))).astype(np.float32)
    p[:, :12] = mean[:12]  # keep the pose: the face stays in the crop
    out = render_pncc_crops(p)
    m = load_anchor_model()
    for b, v in enumerate(anchors_crop(p)):
        depth, ti, bary = rasterize(v, m.tri, 120, 120)
        want = interpolate(m.ncc * 255.0, m.tri, ti, bary)
        face = ti >= 0
        assert np.array_equal(out[b].any(axis=2) | face, face)
        assert np.abs(out[b][face].astype(float) - want[face]).max() <= 0.5 + 1e-3


def test_features_side_by_side_equal_sequential(mean_params):
    from concurrent.futures import ThreadPoolExecutor

    from tddfa.v1.features import render_features

    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (3, 120, 120, 3), dtype=np.uint8)
    p = np.repeat(mean_params, 3, 0)
    p[1, 12:] += 1e3 * rng.normal(size=50).astype(np.float32)
    a = render_features(crops, p, 3)
    with ThreadPoolExecutor(1) as pool:
        b = render_features(crops, p, 3, pool=pool)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_stage_inputs_are_the_features_channels_first(mean_params):
    from concurrent.futures import ThreadPoolExecutor

    from tddfa.v1.features import render_features, stage_inputs

    rng = np.random.default_rng(2)
    crops = rng.integers(0, 256, (3, 120, 120, 3), dtype=np.uint8)
    p = np.repeat(mean_params, 3, 0)
    p[1, 12:] += 1e3 * rng.normal(size=50).astype(np.float32)
    p[2, 0] = np.nan  # no PNCC for a non-finite estimate, as render_features
    pncc, paf = render_features(crops, p, 3)
    want_image = np.concatenate([crops, pncc], axis=3).transpose(0, 3, 1, 2)
    for pool in (None, ThreadPoolExecutor(1)):
        image, paf_in = stage_inputs(crops, p, 3, pool=pool)
        assert image.shape == (3, 6, 120, 120) and image.flags.c_contiguous
        np.testing.assert_array_equal(image, want_image)
        assert paf_in.shape == (3, 3, 192, 192) and paf_in.flags.c_contiguous
        np.testing.assert_array_equal(paf_in, paf.transpose(0, 3, 1, 2))  # the PAF as planes
        if pool is not None:
            pool.shutdown()


def _paf_reference(crop: np.ndarray, anchors: np.ndarray, k: int) -> np.ndarray:
    """The PAF's definition in plain NumPy, one tap at a time: ``(64k, 64k, C)``."""
    h, w, ch = crop.shape
    out = np.zeros((64 * k, 64 * k, ch), np.uint8)
    img = crop.astype(np.float64)
    for n, (ax, ay) in enumerate(anchors[:, :2].astype(np.float64)):
        if not (np.isfinite(ax) and np.isfinite(ay)):
            continue
        bx, by = ax - (k - 1) / 2, ay - (k - 1) / 2
        x0, y0 = int(np.floor(bx)), int(np.floor(by))
        fx, fy = bx - x0, by - y0
        for a in range(k):
            for b in range(k):
                acc = np.zeros(ch)
                for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                                   (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
                    y, x = y0 + a + dy, x0 + b + dx
                    if 0 <= y < h and 0 <= x < w:
                        acc += wt * img[y, x]
                out[(n // 64) * k + a, (n % 64) * k + b] = np.minimum(255.0, acc + 0.5).astype(np.uint8)
    return out


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_paf_matches_its_definition_inside_and_at_the_border(mean_params, kernel):
    from tddfa.v1.features import anchors_crop, render_paf_crops

    rng = np.random.default_rng(kernel)
    crop = rng.integers(0, 256, (1, 120, 120, 3), dtype=np.uint8)
    p = np.repeat(mean_params, 2, 0)
    p[1, 3] += 45.0  # shifted right: part of the face's patches past the crop's border
    p[1, 7] -= 30.0
    got = render_paf_crops(np.repeat(crop, 2, 0), p, kernel)
    for b, anchors in enumerate(anchors_crop(p)):
        np.testing.assert_array_equal(got[b], _paf_reference(crop[0], anchors, kernel))
    assert (anchors_crop(p)[1][:, 0] > 118).any()  # the border path was taken


def test_features_of_far_off_estimates_are_empty(mean_params):
    # finite but huge coordinates: nothing drawn or sampled, no integer overflow in the kernels
    from tddfa.v1.features import render_features

    crops = np.full((4, 120, 120, 3), 200, np.uint8)
    p = np.repeat(mean_params, 4, 0)
    p[0, 3], p[1, 3], p[2, 7], p[3, 7] = 1e25, -1e25, 1e25, -1e25
    pncc, paf = render_features(crops, p, 3)
    assert not pncc.any() and not paf.any()
