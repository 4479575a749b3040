"""PAF render: each face's pose-adaptive feature map (3DDFA V1) drawn over its roi.

The PAF map samples the face's 120×120 crop bilinearly in a ``k × k`` patch around each of the
64×64 surface anchors of ``Model_PAF.pkl`` projected with the face's parameters
(:func:`tddfa.v1.features.render_paf_crops`): the face appears "unwrapped" on the anchor grid,
frontal whatever the pose (what the cascade's pose-adaptive convolution sees). Here it is resized
to the face's roi box and pasted there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from tddfa.errors import InputError
from tddfa.render.common import _as_image

__all__ = ["render_paf"]


def render_paf(image: Any, faces: Sequence[Any], triangles: np.ndarray | None = None, *,
               kernel: int = 3) -> np.ndarray:
    """``(H, W, 3)`` uint8: ``image`` with each face's PAF map (``(64k, 64k)``) over its roi.

    ``faces`` are :class:`~tddfa.face.results.Face` objects (their ``params`` and ``roi_box``).
    """
    from tddfa.face.crop import crop_roi
    from tddfa.v1.features import render_paf_crops

    img = _as_image(image)
    out = img.copy()
    h, w = img.shape[:2]
    for f in faces:
        if not hasattr(f, "params") or not hasattr(f, "roi_box"):
            raise InputError("the PAF render needs Face results (params and roi_box)")
        roi = np.asarray(f.roi_box, np.float64)
        crop = crop_roi(img, roi)
        paf = render_paf_crops(crop[None], np.asarray(f.params, np.float32)[None], kernel)[0]
        x0, y0, x1, y1 = (int(round(v)) for v in roi)
        if x1 <= x0 or y1 <= y0:
            continue
        tile = cv2.resize(paf, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if cx1 > cx0 and cy1 > cy0:
            out[cy0:cy1, cx0:cx1] = tile[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return out
