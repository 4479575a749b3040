"""Wall time of the AFLW2000-3D evaluations (2,000 faces): prints medians over a few runs.

Usage::

    python benchmarks/bench_eval.py [--data ../shared/benchmarks/aflw2000-3d] [--runs 3] [--detector]

The crop protocol should take well under a minute on a laptop-class CPU; the detector protocol
is dominated by FaceBoxes on the 2,000 450×450 images.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(here.parent / "shared" / "benchmarks" / "aflw2000-3d"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--detector", action="store_true", help="also time the detector protocol (once)")
    args = ap.parse_args()
    os.environ.setdefault("TDDFA_HOME", str(here.parent / "shared" / "assets"))

    from tddfa.evaluation.aflw2000 import eval_aflw2000_crop, eval_aflw2000_detector
    from tddfa.models.regressor import Regressor

    reg = Regressor("mb05", threads=args.threads)
    times, parts = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        r = eval_aflw2000_crop(reg, args.data, model="mb05")
        times.append(time.perf_counter() - t0)
        parts.append(r.summary["timing_s"])
    nm = r.summary["nme"]
    print(f"crop protocol, {r.summary['n']} faces, {args.runs} runs: median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f} s)")
    for k in parts[0]:
        print(f"  {k:<26} median {statistics.median(p[k] for p in parts):.2f} s")
    print(f"  NME 0-30 {nm['0-30']:.3f}  30-60 {nm['30-60']:.3f}  60-90 {nm['60-90']:.3f}  "
          f"mean {nm['mean']:.3f}")
    if args.detector:
        from tddfa.pipeline.aligner import FaceAligner

        t0 = time.perf_counter()
        d = eval_aflw2000_detector(FaceAligner("mb05", threads=args.threads), args.data, model="mb05")
        print(f"detector protocol, {d.summary['n']} images: {time.perf_counter() - t0:.1f} s "
              f"(detect {d.summary['timing_s']['detect']:.1f} s), misses {d.summary['misses']}")


if __name__ == "__main__":
    main()
