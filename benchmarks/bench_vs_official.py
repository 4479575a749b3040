"""Per-stage speed of tddfa against the official 3DDFA_V2 ONNX path, side by side in one process.

    python benchmarks/bench_vs_official.py --official /path/to/3DDFA_V2 [--rounds 7] [--repeat 10]

Without ``--official`` (or when the folder is missing) it prints a note and exits 0.

Stages, timed on the same decoded photos in interleaved rounds (official, then tddfa, then the
next stage; ``--rounds`` rounds of ``--repeat`` calls each; the figure is the median over all
calls, and the ratio official / tddfa of those medians; ``--settle`` seconds of pause before
each block, so that one side's spin-waiting ONNX Runtime threads are not timed against the other):

* ``detect`` — FaceBoxes on the whole photo (official ``FaceBoxes_ONNX`` vs
  ``FaceBoxesDetector``);
* ``crop_regress`` — rois from the boxes, 120×120 crops and the regressor for all faces
  (official ``TDDFA_ONNX.__call__`` vs ``crop_batch`` + ``Regressor.predict``);
* ``dense`` — the 38,365-vertex meshes of all faces in image pixels
  (official ``recon_vers(dense_flag=True)`` vs ``MorphableModel.reconstruct_image``);
* ``render`` — the shaded mesh of all faces blended over the photo (official
  ``utils.render.render`` / Sim3DR vs ``tddfa.render.render("mesh")``);
* ``photo`` — all of the above from the decoded photo, plus the 68 landmarks.

Preparing the official checkout (done once, outside this repository; never commit it)::

    # a snapshot of github.com/cleardusk/3DDFA_V2 (weights/mb1 and configs/bfm_noneck_v3.pkl
    # are large blobs that may be absent; mb05 and FaceBoxesProd.pth are in the repository)
    pip install cython
    # NumPy >= 1.24 / Cython 3 patches:
    #   FaceBoxes/utils/nms/cpu_nms.pyx: `np.float thresh` -> `double thresh`,
    #     `np.int_t` -> `np.int64_t`, `dtype=np.int` -> `dtype=np.int64`
    #   bfm/bfm.py: `.astype(np.long)` -> `.astype(np.int64)`
    #   utils/onnx.py, FaceBoxes/onnx.py, bfm/bfm_onnx.py: add `dynamo=False` to each
    #     torch.onnx.export(...) call (torch >= 2.9 defaults to the onnxscript exporter)
    (cd FaceBoxes/utils && python build.py build_ext --inplace)
    (cd Sim3DR && python setup.py build_ext --inplace)
    # bfm_noneck_v3.pkl absent: write one with the same layout from our approximate model
    python -c "import numpy as np, pickle; z = np.load('$TDDFA_HOME/derived/bfm_noneck_approx.npz');
        pickle.dump({k: z[k] for k in ('u', 'w_shp', 'w_exp', 'keypoints')},
                    open('configs/bfm_noneck_v3.pkl', 'wb'))"

The official code converts its PyTorch weights to ONNX on first use (it needs ``torch`` and
``onnx`` for that, and ``pyyaml``), then runs everything on ONNX Runtime. Both sides use the same
(approximate) dense bases, so the dense stage compares the same arithmetic.
Results go to ``docs/results/vs-official.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np
from _common import timed, write_report

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("TDDFA_HOME", str(SHARED / "assets"))
PHOTOS = ("emma.jpg", "trump_hillary.jpg", "JianzhuGuo.jpg")
STAGES = ("detect", "crop_regress", "dense", "render", "photo")
TARGETS = {"detect": 2.0, "crop_regress": 1.5, "dense": 2.0, "render": 2.0, "photo": 2.0}


def load_official(folder: Path):
    """Import the official code from ``folder``; returns (detector, tddfa, render, tri)."""
    sys.path.insert(0, str(folder))
    cwd = os.getcwd()
    os.chdir(folder)  # its config paths are relative
    try:
        import yaml
        from FaceBoxes.FaceBoxes_ONNX import FaceBoxes_ONNX
        from TDDFA_ONNX import TDDFA_ONNX
        from utils.render import render

        cfg = yaml.safe_load(open(folder / "configs" / "mb05_120x120.yml"))
        cfg["checkpoint_fp"] = str(folder / "weights" / "mb05_120x120.pth")
        cfg["bfm_fp"] = str(folder / "configs" / "bfm_noneck_v3.pkl")
        tddfa = TDDFA_ONNX(**cfg)
        det = FaceBoxes_ONNX()
    finally:
        os.chdir(cwd)
    return det, tddfa, render, tddfa.tri


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, help="checkout of cleardusk/3DDFA_V2, prepared as above")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=10, help="calls per stage per round")
    ap.add_argument("--photos", nargs="*", default=list(PHOTOS))
    ap.add_argument("--settle", type=float, default=0.05,
                    help="seconds of pause before each block of calls, so that neither side's "
                         "idle (spinning) threads are timed against the other (0.05)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "vs-official.json")
    args = ap.parse_args()
    if args.official is None or not (args.official / "TDDFA_ONNX.py").is_file():
        print("bench_vs_official: no official checkout given (--official DIR); skipped")
        return 0

    import cv2

    from tddfa.face.crop import crop_batch, roi_from_box
    from tddfa.pipeline.aligner import FaceAligner
    from tddfa.render.registry import render as tddfa_render

    o_det, o_tddfa, o_render, o_tri = load_official(args.official.resolve())
    al = FaceAligner()
    mm = al.morphable_model
    reg, det = al.regressor, al.detector

    def ours_photo(img):
        res = al.align(img, dense=True)
        return tddfa_render("mesh", img, res.faces, mm.tri)

    def official_photo(img):
        boxes = o_det(img)
        p, r = o_tddfa(img, boxes)
        o_tddfa.recon_vers(p, r, dense_flag=False)
        v = o_tddfa.recon_vers(p, r, dense_flag=True)
        return o_render(img, v, o_tri, alpha=0.6)

    def make_pairs(img):
        o_boxes = o_det(img)
        boxes = det(img)
        rois = np.array([roi_from_box(b) for b in boxes]).reshape(-1, 4)
        params = reg.predict(crop_batch(img, rois))
        faces = al.faces_from_params(params, rois, boxes=boxes, dense=True)
        o_p, o_r = o_tddfa(img, o_boxes)
        o_v = o_tddfa.recon_vers(o_p, o_r, dense_flag=True)
        pairs = {
            "detect": (lambda: o_det(img), lambda: det(img)),
            "crop_regress": (lambda: o_tddfa(img, o_boxes),
                             lambda: reg.predict(crop_batch(
                                 img, np.array([roi_from_box(b) for b in boxes]).reshape(-1, 4)))),
            "dense": (lambda: o_tddfa.recon_vers(o_p, o_r, dense_flag=True),
                      lambda: mm.reconstruct_image(params, rois, dense=True)),
            "render": (lambda: o_render(img, o_v, o_tri, alpha=0.6),
                       lambda: tddfa_render("mesh", img, faces, mm.tri)),
            "photo": (lambda: official_photo(img), lambda: ours_photo(img)),
        }
        return pairs, len(boxes), len(o_boxes)

    report: dict = {"protocol": "vs-official", "rounds": args.rounds, "repeat": args.repeat,
                    "settle_s": args.settle,
                    "dense_model": mm.source, "photos": {}}
    print(f"dense model (both sides): {mm.source}; {args.rounds} interleaved rounds x "
          f"{args.repeat} calls; medians in ms; ratio = official / tddfa")
    all_ratios: dict[str, list[float]] = {s: [] for s in STAGES}
    for name in args.photos:
        img = cv2.imread(str(SHARED / "samples" / name))
        if img is None:
            print(f"  {name}: not found, skipped")
            continue
        pairs, n_faces, n_official = make_pairs(img)
        times = {s: ([], []) for s in STAGES}
        for fo, ft in pairs.values():  # warm-up (JIT caches, ORT arenas)
            fo()
            ft()
        for _ in range(args.rounds):
            for s, (fo, ft) in pairs.items():
                times[s][0].extend(timed(fo, args.repeat, args.settle))
                times[s][1].extend(timed(ft, args.repeat, args.settle))
        rows = {}
        print(f"\n{name} ({img.shape[1]}x{img.shape[0]}, {n_faces} faces; official found "
              f"{n_official})")
        print(f"  {'stage':<14}{'official':>10}{'tddfa':>10}{'ratio':>8}{'target':>8}")
        for s in STAGES:
            mo, mt = statistics.median(times[s][0]), statistics.median(times[s][1])
            ratio = mo / mt
            all_ratios[s].append(ratio)
            rows[s] = {"official_ms": round(mo, 3), "tddfa_ms": round(mt, 3),
                       "ratio": round(ratio, 3)}
            print(f"  {s:<14}{mo:>10.2f}{mt:>10.2f}{ratio:>7.2f}x{TARGETS[s]:>7.1f}x")
        report["photos"][name] = {"width": img.shape[1], "height": img.shape[0],
                                  "faces": n_faces, "stages": rows}
    report["min_ratio"] = {s: round(min(v), 3) for s, v in all_ratios.items() if v}
    report["targets"] = TARGETS
    report["met"] = {s: report["min_ratio"][s] >= TARGETS[s] for s in report["min_ratio"]}
    try:
        report["load"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    print("\nworst ratio per stage:", report["min_ratio"], "met:", report["met"])
    write_report(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
