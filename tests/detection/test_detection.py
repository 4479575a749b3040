import numpy as np

from tddfa.detection.faceboxes import FaceBoxesDetector, box_iou, decode_boxes, nms, prior_boxes


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
