"""Per-stage speed of the still-image pipeline (medians over repeated runs; prints figures).

    python benchmarks/bench_core.py [--repeat 200] [--threads 0]

Stages: detection on trump_hillary.jpg resized to 1280×574 (the size the official figures were
measured on), crop + regression per face (batch of the image's faces and batch 1), sparse and
dense reconstruction per face. Needs the assets (TDDFA_HOME) and ../shared/samples.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("TDDFA_HOME", str(SHARED / "assets"))


def median_ms(fn, repeat: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    args = ap.parse_args()

    from tddfa.detection.faceboxes import FaceBoxesDetector
    from tddfa.face.crop import crop_batch, roi_from_box
    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.models.regressor import Regressor

    img = cv2.imread(str(SHARED / "samples" / "trump_hillary.jpg"))
    img = cv2.resize(img, (1280, 574), interpolation=cv2.INTER_AREA)
    det = FaceBoxesDetector(threads=args.threads)
    reg = Regressor("mb05", threads=args.threads)
    mm = load_morphable_model()
    boxes = det(img)
    rois = np.array([roi_from_box(b) for b in boxes])
    n = len(rois)
    params = reg.predict(crop_batch(img, rois))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"python {platform.python_version()}, onnxruntime threads={args.threads or 'default'}")
    print(f"image 1280x574, {n} faces, dense model: {mm.source}, repeat={args.repeat}")
    rows = [
        ("detect (FaceBoxes, whole image)", median_ms(lambda: det(img), args.repeat), 1, 24.0),
        (f"crop + regress, batch of {n}, per face",
         median_ms(lambda: reg.predict(crop_batch(img, rois)), args.repeat), n, 0.8),
        ("crop + regress, batch 1, per face",
         median_ms(lambda: reg.predict(crop_batch(img, rois[:1])), args.repeat), 1, 0.8),
        ("reconstruct sparse 68, per face",
         median_ms(lambda: mm.reconstruct_image(params, rois, dense=False), args.repeat), n, None),
        ("reconstruct dense 38,365, per face",
         median_ms(lambda: mm.reconstruct_image(params, rois, dense=True), args.repeat), n, 0.76),
        ("reconstruct dense 38,365, batch 1",
         median_ms(lambda: mm.reconstruct_image(params[:1], rois[:1], dense=True), args.repeat), 1, 0.76),
    ]
    print(f"{'stage':<42} {'median ms':>10} {'official':>9}")
    for name, ms, per, official in rows:
        ref = f"{official:.2f}" if official else "-"
        print(f"{name:<42} {ms / per:>10.3f} {ref:>9}")


if __name__ == "__main__":
    main()
