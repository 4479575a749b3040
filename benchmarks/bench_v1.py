"""Speed of 3DDFA V1's cascade features and stages: median milliseconds per 120×120 crop.

    python benchmarks/bench_v1.py [--repeat 30] [--cascade DIR]

* ``anchors`` — the 4,096 PAF anchors posed from a parameter vector;
* ``pncc`` — the NCC-coloured z-buffered render of the anchor-grid mesh (anchors included);
* ``paf`` — the 3×3 bilinear patches at every anchor (anchors included);
* ``pncc_dense_mesh`` — for comparison, the same PNCC from the full 38,365-vertex mesh
  (:func:`tddfa.render.pncc.render_pncc` on the crop);
* ``stage_k`` — one cascade stage end to end (features + ONNX graph), when a cascade folder is
  given or packaged.

Each figure is taken at batch 1 and per crop in a batch of 32. Targets (issue 13): PNCC and PAF
≤ 1 ms per crop; each stage ≤ 2 ms per face. The machine's load is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("TDDFA_HOME", str(SHARED / "assets"))


def _median_ms(fn, repeat: int, per: int = 1) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3 / per)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--cascade", default=None, help="cascade folder (default: the packaged one)")
    ap.add_argument("--threads", type=int, default=0,
                    help="ONNX Runtime threads for the stage graphs (0 = one per core, the default)")
    args = ap.parse_args()

    from tddfa.face.crop import crop_roi, roi_from_landmarks
    from tddfa.io.images import read_image
    from tddfa.models.regressor import Regressor
    from tddfa.render.pncc import render_pncc
    from tddfa.v1.features import anchors_crop, render_paf_crops, render_pncc_crops

    root = SHARED / "datasets/300w-crops"
    with np.load(root / "helen_test.npz") as z:
        names, lms = z["names"][:32], z["landmarks"][:32]
    crops = np.stack([crop_roi(read_image(root / "helen_test" / f"{n}.jpg"), roi_from_landmarks(lm))
                      for n, lm in zip(names, lms, strict=True)])
    params = Regressor("mb05").predict(crops)
    one_c, one_p = crops[:1], params[:1]
    rows = {}
    rows["anchors"] = (_median_ms(lambda: anchors_crop(one_p), args.repeat),
                       _median_ms(lambda: anchors_crop(params), args.repeat, 32))
    rows["pncc"] = (_median_ms(lambda: render_pncc_crops(one_p), args.repeat),
                    _median_ms(lambda: render_pncc_crops(params), args.repeat, 32))
    rows["paf"] = (_median_ms(lambda: render_paf_crops(one_c, one_p), args.repeat),
                   _median_ms(lambda: render_paf_crops(crops, params), args.repeat, 32))
    from tddfa.face.morphable_model import load_morphable_model

    mm = load_morphable_model()
    if mm.has_dense:
        roi = np.array([[0, 0, 120, 120]], np.float32)

        def dense():
            v = mm.reconstruct_image(one_p, roi, dense=True)
            return render_pncc(one_c[0], v)

        rows["pncc_dense_mesh"] = (_median_ms(dense, args.repeat), float("nan"))
    try:
        from tddfa.v1.cascade import CascadeRegressor

        reg = CascadeRegressor(args.cascade, threads=args.threads)
        for k in range(1, reg.n_stages + 1):
            rows[f"stage_{k}"] = (_median_ms(lambda k=k: reg.run_stage(k, one_c, one_p), args.repeat),
                                  _median_ms(lambda k=k: reg.run_stage(k, crops, params), args.repeat, 32))
        rows["stage_0_mb05"] = (_median_ms(lambda: reg.stage0(one_c), args.repeat),
                                _median_ms(lambda: reg.stage0(crops), args.repeat, 32))
    except Exception as exc:  # noqa: BLE001 - no cascade available: features only
        print(f"(no cascade timed: {exc})")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'item':<18}{'batch 1 ms':>12}{'per crop, batch 32 ms':>24}")
    for k, (a, b) in rows.items():
        print(f"{k:<18}{a:>12.3f}{b:>24.3f}")


if __name__ == "__main__":
    main()
