"""ONNX Runtime vs OpenVINO for each network, side by side on the sample photos.

    python benchmarks/bench_backends.py [--rounds 5] [--repeat 5]

Interleaved rounds (ORT then OpenVINO, per network and photo); medians in ms; ratio = ORT /
OpenVINO (> 1: OpenVINO faster). The per-network default of ``--backend auto``
(:data:`tddfa.models.runtime.AUTO_BACKEND`) follows these figures. Needs ``tddfa[openvino]``.
Writes docs/results/backends.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import numpy as np
from _common import timed, write_report

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("TDDFA_HOME", str(SHARED / "assets"))
PHOTOS = ("emma.jpg", "trump_hillary.jpg", "JianzhuGuo.jpg", "0013.jpg")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "backends.json")
    args = ap.parse_args()
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("bench_backends: OpenVINO is not installed (pip install 'tddfa[openvino]'); skipped")
        return 0
    import cv2

    from tddfa.face.crop import crop_batch, roi_from_box
    from tddfa.pipeline.aligner import FaceAligner

    al = {b: FaceAligner(backend=b) for b in ("onnxruntime", "openvino")}
    report: dict = {"rounds": args.rounds, "repeat": args.repeat, "photos": {}}
    ratios: dict[str, list[float]] = {"detector": [], "regressor": []}
    print(f"{'photo':<20}{'network':<11}{'ORT ms':>9}{'OV ms':>9}{'ORT/OV':>8}")
    for name in PHOTOS:
        img = cv2.imread(str(SHARED / "samples" / name))
        if img is None:
            continue
        boxes = al["onnxruntime"].detect(img)
        crops = crop_batch(img, np.array([roi_from_box(b) for b in boxes]).reshape(-1, 4))
        fns = {
            "detector": {b: (lambda a=a, im=img: a.detector(im)) for b, a in al.items()},
            "regressor": {b: (lambda a=a, c=crops: a.regressor.predict(c)) for b, a in al.items()},
        }
        t: dict = {k: {b: [] for b in al} for k in fns}
        for k in fns:
            for b in al:
                fns[k][b]()
        for _ in range(args.rounds):
            for k in fns:
                for b in al:
                    t[k][b].extend(timed(fns[k][b], args.repeat))
        row = {}
        for k in fns:
            mo, mv = statistics.median(t[k]["onnxruntime"]), statistics.median(t[k]["openvino"])
            ratios[k].append(mo / mv)
            row[k] = {"onnxruntime_ms": round(mo, 3), "openvino_ms": round(mv, 3),
                      "ratio": round(mo / mv, 3)}
            print(f"{name:<20}{k:<11}{mo:>9.2f}{mv:>9.2f}{mo / mv:>8.2f}")
        report["photos"][name] = {"faces": len(boxes), **row}
    report["median_ratio"] = {k: round(statistics.median(v), 3) for k, v in ratios.items() if v}
    report["load_average"] = os.getloadavg()
    print("median ORT/OV:", report["median_ratio"])
    write_report(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
