"""ONNX Runtime thread spinning modes: photo alignment and video tracking times side by side.

``TDDFA_ORT_SPIN`` selects how the intra-op threads of tddfa's sessions wait for work
(:data:`tddfa.models.runtime.SPIN_MODES`): ``off`` (sleep when idle), ``run`` (spin between the
operators of a run, sleep when it ends) or ``on`` (ONNX Runtime's default: keep spinning after a
run). This script runs the same measurement in child processes with each mode, interleaved over
``--rounds``, and prints the best time of each:

* photo: ``FaceAligner.align`` on each sample photo (best of ``--repeats``), milliseconds;
* video: ``VideoAligner.process`` over the decoded frames of obama.mp4 (sparse, validation and
  cut detection on), milliseconds per frame.

    python benchmarks/bench_spinning.py [--rounds 3] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))

_CHILD = r"""
import json, sys, time
from pathlib import Path
import cv2
from tddfa import FaceAligner
from tddfa.video import VideoAligner

samples, repeats = Path(sys.argv[1]), int(sys.argv[2])
al = FaceAligner()
out = {}
for p in sorted(samples.glob("*.jpg")):
    img = cv2.imread(str(p))
    al.align(img)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        al.align(img)
        best = min(best, time.perf_counter() - t)
    out[p.name] = 1000 * best
cap = cv2.VideoCapture(str(samples / "obama.mp4"))
frames = []
while True:
    ok, f = cap.read()
    if not ok:
        break
    frames.append(f)
best = float("inf")
for _ in range(4):  # the first pass warms up
    va = VideoAligner(al)
    t = time.perf_counter()
    for i, f in enumerate(frames):
        va.process(f, i * 40.0)
    best = min(best, (time.perf_counter() - t) / len(frames))
out["video ms/frame"] = 1000 * best
print(json.dumps(out))
"""


MODES = ("off", "run", "on")


def measure(mode: str, repeats: int) -> dict[str, float]:
    env = dict(os.environ, TDDFA_ORT_SPIN=mode)
    res = subprocess.run([sys.executable, "-c", _CHILD, str(SHARED / "samples"), str(repeats)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    if not (SHARED / "samples" / "obama.mp4").is_file():
        print(f"skipped: {SHARED / 'samples'} not found (set TDDFA_SHARED)")
        return
    best: dict[str, dict[str, float]] = {m: {} for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            for k, v in measure(mode, args.repeats).items():
                best[mode][k] = min(best[mode].get(k, float("inf")), v)
    from tddfa.models.runtime import DEFAULT_SPIN

    print(f"best of {args.rounds} rounds, ms (load average {os.getloadavg()[0]:.1f}); "
          f"ratio = mode / off; tddfa's default: {DEFAULT_SPIN}")
    print(f"{'':24s}" + "".join(f"{m:>10s}" for m in MODES) + "".join(
        f"{m + '/off':>10s}" for m in MODES[1:]))
    for k in best["off"]:
        row = [best[m][k] for m in MODES]
        print(f"{k:24s}" + "".join(f"{v:10.2f}" for v in row)
              + "".join(f"{v / row[0]:9.2f}x" for v in row[1:]))

if __name__ == "__main__":
    main()
