"""Worst-case differences from the official 3DDFA_V2 outputs over every face of every sample.

    python benchmarks/conformance.py

Reads ../shared/reference/official_mb05_samples.json (official FaceBoxes + mb05, PyTorch path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("TDDFA_HOME", str(SHARED / "assets"))


def main() -> None:
    from tddfa import FaceAligner
    from tddfa.face.pose import pose_from_params
    from tddfa.io.images import read_image

    ref = json.loads((SHARED / "reference" / "official_mb05_samples.json").read_text())
    aligner = FaceAligner()
    worst = {"box px": 0.0, "landmarks px (box pass)": 0.0, "landmarks px (re-crop pass)": 0.0,
             "pose deg (box pass)": 0.0, "pose deg (re-crop pass)": 0.0}
    n = 0
    for name, r in ref.items():
        img = read_image(SHARED / "samples" / name)
        faces = aligner.align(img).faces
        if len(faces) != len(r["faces"]):
            raise SystemExit(f"{name}: {len(faces)} faces, official {len(r['faces'])}")
        again = aligner.refine(img, faces)
        for f, g, rf in zip(faces, again, r["faces"], strict=True):
            n += 1
            lp = rf["landmark_pass"]
            d = {
                "box px": np.abs(f.box - np.array(rf["box"][:4])).max(),
                "landmarks px (box pass)": np.linalg.norm(
                    f.landmarks[:, :2] - np.array(rf["landmarks68"])[:, :2], axis=1).mean(),
                "landmarks px (re-crop pass)": np.linalg.norm(
                    g.landmarks[:, :2] - np.array(lp["landmarks68"])[:, :2], axis=1).mean(),
                "pose deg (box pass)": np.abs(
                    np.array([f.pose.yaw, f.pose.pitch, f.pose.roll]) - rf["pose_yaw_pitch_roll_deg"]).max(),
                "pose deg (re-crop pass)": np.abs(
                    np.array([g.pose.yaw, g.pose.pitch, g.pose.roll])
                    - pose_from_params(np.array(lp["param"]))[0]).max(),
            }
            for k, v in d.items():
                worst[k] = max(worst[k], float(v))
    print(f"{n} faces in {len(ref)} photos, same faces found as the official code")
    for k, v in worst.items():
        print(f"worst {k:<30} {v:.6f}")


if __name__ == "__main__":
    main()
