"""Conformance with the official 3DDFA_V2 code on every face of every sample photo."""

import json

import numpy as np
import pytest

from tddfa import FaceAligner
from tddfa.io.images import read_image


@pytest.fixture(scope="module")
def aligner(shared):
    return FaceAligner()


@pytest.fixture(scope="module")
def reference(shared):
    return json.loads((shared / "reference" / "official_mb05_samples.json").read_text())


def _check(face, ref):
    lm = np.asarray(ref["landmarks68"])
    dist = np.linalg.norm(face.landmarks[:, :2] - lm[:, :2], axis=1).mean()
    assert dist < 0.5, f"mean landmark distance {dist:.3f} px"
    np.testing.assert_allclose(face.roi_box, ref["roi_box"], atol=0.5)


def test_conformance_with_official(aligner, reference, shared):
    for name, ref in reference.items():
        img = read_image(shared / "samples" / name)
        result = aligner.align(img)
        assert (result.width, result.height) == (ref["width"], ref["height"])
        assert len(result.faces) == len(ref["faces"]), name
        refined = aligner.refine(img, result.faces)
        for face, again, rf in zip(result.faces, refined, ref["faces"], strict=True):
            np.testing.assert_allclose(face.box, rf["box"][:4], atol=2.0)
            assert face.score == pytest.approx(rf["box"][4], abs=1e-3)
            _check(face, rf)
            pose = [face.pose.yaw, face.pose.pitch, face.pose.roll]
            np.testing.assert_allclose(pose, rf["pose_yaw_pitch_roll_deg"], atol=0.5)
            _check(again, rf["landmark_pass"])
            # the reference gives no pose for the second pass: compare the parameters' pose part
            from tddfa.face.pose import pose_from_params

            ref_pose2 = pose_from_params(np.asarray(rf["landmark_pass"]["param"]))[0]
            pose2 = [again.pose.yaw, again.pose.pitch, again.pose.roll]
            np.testing.assert_allclose(pose2, ref_pose2, atol=0.5)
            np.testing.assert_allclose(again.box, face.box)


def test_user_boxes_skip_detection(aligner, reference, shared):
    ref = reference["trump_hillary.jpg"]
    boxes = np.array([f["box"][:4] for f in ref["faces"]])
    result = aligner.align(shared / "samples" / "trump_hillary.jpg", boxes=boxes)
    assert [f.score for f in result.faces] == [1.0, 1.0]
    for face, rf in zip(result.faces, ref["faces"], strict=True):
        _check(face, rf)


def test_rgb_flag_and_dense(aligner, reference, shared):
    bgr = read_image(shared / "samples" / "JianzhuGuo.jpg")
    a = aligner.align(bgr[:, :, ::-1].copy(), rgb=True, dense=True)
    b = aligner.align(bgr)
    assert len(a.faces) == 1
    np.testing.assert_allclose(a.faces[0].landmarks, b.faces[0].landmarks, atol=1e-3)
    v = a.faces[0].vertices
    assert v.shape == (38365, 3) and v.dtype == np.float32
    assert b.faces[0].vertices is None
    np.testing.assert_allclose(aligner.vertices(b.faces)[0], v, atol=1e-2)


def test_result_json_layout(aligner, shared):
    r = aligner.align(shared / "samples" / "JianzhuGuo.jpg")
    d = json.loads(r.to_json())
    assert set(d) == {"image", "width", "height", "model", "faces"}
    f = d["faces"][0]
    assert set(f) == {"box", "score", "roi_box", "param", "landmarks", "pose"}
    assert len(f["param"]) == 62 and len(f["landmarks"]) == 68 and len(f["landmarks"][0]) == 3
    assert set(f["pose"]) == {"yaw", "pitch", "roll"}
    assert d["model"]["morphable_model"]["source"] in {"official", "approx", "sparse"}


def test_no_face_gives_empty_list(aligner):
    blank = np.full((240, 320, 3), 127, np.uint8)
    assert aligner.align(blank).faces == []
    assert aligner.align_rois(blank, np.zeros((0, 4))) == []
    assert aligner.refine(blank, []) == []


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 3, 3), (7, 5)])
def test_tiny_images(aligner, shape):
    assert aligner.align(np.zeros(shape, np.uint8)).faces == []


def test_bad_boxes_are_refused(aligner):
    from tddfa.errors import InputError

    img = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(InputError, match="x2 > x1"):
        aligner.align(img, boxes=[[50, 50, 10, 10]])
    with pytest.raises(InputError, match=r"\(K, 4\)"):
        aligner.align(img, boxes=[[1, 2, 3]])


def test_result_plot_and_save(aligner, shared, tmp_path):
    img = read_image(shared / "samples" / "JianzhuGuo.jpg")
    r = aligner.align(img)
    drawn = r.plot(img)
    assert drawn.shape == img.shape and (drawn != img).any()
    r.save(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["faces"][0]["param"] == r.to_dict()["faces"][0]["param"]


def test_huge_image(aligner, shared):
    import cv2

    img = read_image(shared / "samples" / "trump_hillary.jpg")
    big = cv2.resize(img, (img.shape[1] * 5, img.shape[0] * 5))  # 7680 x 3445
    faces = aligner.align(big).faces
    assert len(faces) == 2


def test_min_face_size_reaches_the_detector_and_spares_user_boxes(shared):
    from tddfa.errors import InputError

    img = read_image(shared / "samples" / "JianzhuGuo.jpg")
    al = FaceAligner(min_face_size=100)
    assert al.detector.min_face_size == 100 and al.describe()["min_face_size"] == 100
    assert len(al.align(img).faces) == 1  # a ~170-px face
    huge = FaceAligner(min_face_size=10_000)
    assert huge.align(img).faces == []
    assert len(huge.align(img, boxes=[[100, 100, 200, 220]]).faces) == 1  # given boxes stay
    with pytest.raises(InputError, match="min_face_size"):
        FaceAligner(min_face_size=-5)
