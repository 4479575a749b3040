"""NME of a regressor (default: the released mb05) against our labels on profiled views, for
two label styles: fixed landmark-to-vertex correspondence vs 300W-LP-style landmark marching.

Each manifest is a profiled validation set (``tddfa data profile``) of held-out 300W helen_test
faces; with ``--march`` its labels (fit, landmarks, rois) follow the visible contour. The model's
68 landmarks are compared with each view's landmarks (2-D NME %, √(w·h) of the label box) by
|yaw| bucket. Matching styles (AFLW2000-3D's ground truth is marched) should lower the NME.

    python benchmarks/label_style.py --manifest fixed=/work/data/train/val_fixed/manifest.npz \\
        --manifest march=/work/data/train/val_march/manifest.npz [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--checkpoint", default="mb05", help="mb05 (released) or a .pth path")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from tddfa.train.model import build_model
    from tddfa.train.validation import ManifestValidator

    torch.set_num_threads(1)
    model = build_model(0.5, args.checkpoint)
    rows = {}
    for item in args.manifest:
        name, _, path = item.partition("=")
        v = ManifestValidator(path, args.limit)
        rows[name] = v(model)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"model {args.checkpoint}: NME % against the labels of each style")
    print(f"{'labels':<10} {'views':>6} {'[0,30)':>8} {'[30,60)':>8} {'[60,90]':>8} "
          f"{'mean':>8} {'all':>8}")
    for name, r in rows.items():
        print(f"{name:<10} {r['n']:>6} {r['nme_b0']:>8.3f} {r['nme_b1']:>8.3f} {r['nme_b2']:>8.3f} "
              f"{r['nme']:>8.3f} {r['nme_all']:>8.3f}")


if __name__ == "__main__":
    main()
