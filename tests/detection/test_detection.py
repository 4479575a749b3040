import numpy as np
import pytest

from tddfa.detection.faceboxes import (
    RELIABLE_FACE,
    FaceBoxesDetector,
    box_iou,
    decode_boxes,
    landmark_size,
    nms,
    prior_boxes,
)
from tddfa.errors import InputError


def test_prior_count_matches_feature_maps():
    # 21 anchors per cell at stride 32, one at 64 and 128, on ceil(size / stride) grids
    h, w = 689, 1536
    expected = 21 * 22 * 48 + 11 * 24 + 6 * 12
    assert prior_boxes(h, w).shape == (expected, 4)


def test_decode_zero_offsets_gives_prior_box():
    pri = np.array([[0.5, 0.5, 0.2, 0.1]], np.float32)
    box = decode_boxes(np.zeros((1, 4), np.float32), pri)
    np.testing.assert_allclose(box, [[0.4, 0.45, 0.6, 0.55]], atol=1e-7)


def test_nms_suppresses_overlaps_only():
    dets = np.array([[0, 0, 10, 10, 0.9], [1, 1, 11, 11, 0.8], [50, 50, 60, 60, 0.7]], np.float32)
    assert nms(dets, 0.3).tolist() == [0, 2]


def test_detector_handles_large_and_tiny(shared):
    det = FaceBoxesDetector()
    assert det.scale_for(1901, 3913) < 1 and det.scale_for(500, 500) == 1.0
    assert det(np.zeros((1, 1, 3), np.uint8)).shape == (0, 5)
    big = np.zeros((3000, 5000, 3), np.uint8)
    assert det(big).shape == (0, 5)


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10, 0.9], [5, 0, 15, 10, 0.8], [20, 20, 30, 30, 0.7], [0, 0, 0, 0, 0.1]])
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 50 / 150, 0.0, 0.0])
    assert box_iou(b, a).shape == (4, 1)


def test_landmark_size_of_detector_boxes():
    boxes = np.array([[0, 0, 100, 100, 0.9], [10, 10, 10, 50, 0.8], [0, 0, 50, 200, 0.7]],
                     np.float32)
    np.testing.assert_allclose(landmark_size(boxes), [88.0, 0.0, 88.0], rtol=1e-6)
    assert landmark_size(np.zeros((0, 5), np.float32)).shape == (0,)


def test_min_face_size_sets_the_input_scale(shared):
    det = FaceBoxesDetector(min_face_size=128)
    # 720 x 1280: 0.84 to fit 1080 wide, 0.5 so that a 128-px face is RELIABLE_FACE px
    assert det.scale_for(720, 1280) == RELIABLE_FACE / 128
    assert det.scale_for(100, 100) == RELIABLE_FACE / 128
    assert det.scale_for(1901, 3913) == FaceBoxesDetector().scale_for(1901, 3913)  # already smaller
    assert FaceBoxesDetector(min_face_size=32).scale_for(300, 300) == 1.0  # never upscaled


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_min_face_size_must_be_a_size(shared, bad):
    with pytest.raises(InputError, match="min_face_size"):
        FaceBoxesDetector(min_face_size=bad)


def test_min_face_size_keeps_the_faces_above_it_and_drops_the_others(shared):
    import cv2

    img = cv2.imread(str(shared / "samples" / "trump_hillary.jpg"))
    full = FaceBoxesDetector()(img)
    sizes = landmark_size(full)
    assert len(full) == 2 and sizes.min() > 200
    # both faces are > 200 px: a 128-px limit runs the network on half-size input, same faces
    fast = FaceBoxesDetector(min_face_size=128)(img)
    assert len(fast) == 2
    assert box_iou(full, fast).max(axis=1).min() > 0.8
    assert FaceBoxesDetector(min_face_size=2 * sizes.max())(img).shape == (0, 5)


def test_min_face_size_between_face_sizes(shared):
    import cv2

    img = cv2.imread(str(shared / "samples" / "emma.jpg"))
    sizes = np.sort(landmark_size(FaceBoxesDetector()(img)))
    assert len(sizes) == 3 and sizes[0] < 0.95 * 400 and sizes[1] > 1.05 * 400  # ~366, 445, 489
    assert len(FaceBoxesDetector(min_face_size=400)(img)) == 2
