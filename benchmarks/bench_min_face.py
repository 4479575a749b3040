"""How small a face can the video tracker use? Detector recall and landmark error against face size.

300W face crops (``../shared/datasets/300w-crops/<split>``, 68 ground-truth landmarks; not
AFLW2000-3D, which is test-only) are scaled so that the landmark box is ``s`` pixels
(``sqrt(w·h)``), pasted on a grey 3·s-wide (at least 128 px) canvas, detected with FaceBoxes and
aligned as the tracker starts a face (detector roi, then the landmark re-crop). Prints, per size:
detection recall (a box with IoU >= 0.3 with the true landmark box), and over the detected faces
the 2-D NME (mean point error / landmark box size, %). The ``--min-face`` default of
``tddfa video`` (24 px) comes from this table.

Run: ``python benchmarks/bench_min_face.py [--split helen_test] [--limit 100]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("TDDFA_HOME", str(SHARED / "assets"))
os.environ.setdefault("TDDFA_OFFLINE", "1")

from tddfa.detection.faceboxes import box_iou  # noqa: E402
from tddfa.face.crop import roi_from_box, roi_from_landmarks  # noqa: E402
from tddfa.io.images import read_image  # noqa: E402
from tddfa.pipeline.aligner import FaceAligner  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="helen_test")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--sizes", type=float, nargs="*", default=[12, 16, 20, 24, 32, 48, 96])
    args = ap.parse_args()
    root = SHARED / "datasets" / "300w-crops"
    data = np.load(root / f"{args.split}.npz", allow_pickle=False)
    names, gts = data["names"][: args.limit], data["landmarks"][: args.limit]
    al = FaceAligner(threads=1)
    print(f"{args.split}: {len(names)} faces; size = sqrt(w*h) of the landmark box, px")
    print(f"{'size':>5s} {'recall':>7s} {'NME mean':>9s} {'NME median':>11s} {'NME >10%':>9s}")
    for s in args.sizes:
        hits, errs = 0, []
        for name, gt in zip(names, gts, strict=True):
            img = read_image(root / args.split / f"{name}.jpg")
            b = np.r_[gt.min(0), gt.max(0)]
            f = s / np.sqrt((b[2] - b[0]) * (b[3] - b[1]))
            small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            side = max(int(3 * s), 128, small.shape[0] + 2, small.shape[1] + 2)
            canvas = np.full((side, side, 3), 127, np.uint8)
            oy, ox = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
            canvas[oy: oy + small.shape[0], ox: ox + small.shape[1]] = small
            pts = gt * f + [ox, oy]
            box = np.r_[pts.min(0), pts.max(0)]
            dets = al.detect(canvas)
            if len(dets) == 0:
                continue
            ov = box_iou(box[None], dets)[0]
            k = int(np.argmax(ov))
            if ov[k] < 0.3:
                continue
            hits += 1
            face = al.align_rois(canvas, roi_from_box(dets[k])[None])[0]
            face = al.align_rois(canvas, roi_from_landmarks(face.landmarks)[None])[0]
            err = np.linalg.norm(face.landmarks[:, :2] - pts, axis=1).mean()
            errs.append(100 * err / np.sqrt((box[2] - box[0]) * (box[3] - box[1])))
        e = np.array(errs) if errs else np.array([np.nan])
        print(f"{s:5.0f} {hits / len(names):7.2f} {np.mean(e):9.2f} {np.median(e):11.2f} "
              f"{np.mean(e > 10):9.2f}")


if __name__ == "__main__":
    main()
