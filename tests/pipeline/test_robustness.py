"""Issue 15 defect 7 (API part) and resource limits of FaceAligner: boxes outside the image,
absurd or non-numeric boxes, the pixel limit and the cap on dense faces."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from tddfa.errors import InputError
from tddfa.pipeline.aligner import FaceAligner


@pytest.fixture(scope="module")
def aligner(shared):
    return FaceAligner()


@pytest.fixture(scope="module")
def photo(shared):
    return cv2.imread(str(shared / "samples" / "JianzhuGuo.jpg"))


def test_box_entirely_outside_gives_no_face_and_a_warning(aligner, photo, caplog):
    h, w = photo.shape[:2]
    with caplog.at_level(logging.WARNING, logger="tddfa"):
        res = aligner.align(photo, boxes=[[w + 4000, 10, w + 4100, 110]])
    assert res.faces == []
    assert "outside the" in caplog.text
    inside = aligner.align(photo, boxes=[[w + 4000, 10, w + 4100, 110], [10, 10, w - 10, h - 10]])
    assert len(inside.faces) == 1


@pytest.mark.parametrize("boxes", [[[0, 0, 1e30, 1e30]], [[-1e30, -1e30, 100, 100]],
                                   [["a", 0, 10, 10]], "x1,y1", [[0, 0, 10]], [[np.nan, 0, 9, 9]],
                                   [[{}, 0, 1, 1]]])
def test_absurd_boxes_are_input_errors(aligner, photo, boxes):
    with pytest.raises(InputError):
        aligner.align(photo, boxes=boxes)


def test_max_pixels_option(shared, photo):
    small = FaceAligner(max_pixels=1000)
    with pytest.raises(InputError, match="limit of 1000"):
        small.align(photo)
    with pytest.raises(InputError, match="limit of 1000"):
        small.align(shared / "samples" / "JianzhuGuo.jpg")


def test_dense_faces_are_capped(shared, caplog):
    img = cv2.imread(str(shared / "samples" / "JianzhuGuo.jpg"))
    h, w = img.shape[:2]
    boxes = [[10 + i, 10, w - 10 - i, h - 10] for i in range(3)]
    al = FaceAligner(max_dense_faces=2)
    with caplog.at_level(logging.WARNING, logger="tddfa"):
        faces = al.align(img, boxes=boxes, dense=True).faces
    assert len(faces) == 3
    assert [f.vertices is not None for f in faces] == [True, True, False]
    assert "max_dense_faces" in caplog.text
