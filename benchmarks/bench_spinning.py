"""ONNX Runtime thread spinning on or off: photo alignment and video tracking times side by side.

tddfa creates its sessions with ``session.intra_op.allow_spinning = 0`` (idle intra-op threads
sleep); ``TDDFA_ORT_SPIN=1`` restores ONNX Runtime's default (they spin-wait for the next run).
This script runs the same measurement in child processes with each setting, interleaved over
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


def measure(spin: bool, repeats: int) -> dict[str, float]:
    env = dict(os.environ, TDDFA_ORT_SPIN="1" if spin else "0")
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
    best: dict[bool, dict[str, float]] = {False: {}, True: {}}
    for _ in range(args.rounds):
        for spin in (False, True):
            for k, v in measure(spin, args.repeats).items():
                best[spin][k] = min(best[spin].get(k, float("inf")), v)
    print(f"best of {args.rounds} rounds (load average {os.getloadavg()[0]:.1f})")
    print(f"{'':24s} {'no spinning (default)':>22s} {'spinning':>10s} {'ratio':>7s}")
    for k in best[False]:
        a, b = best[False][k], best[True][k]
        print(f"{k:24s} {a:22.2f} {b:10.2f} {b / a:6.2f}x")


if __name__ == "__main__":
    main()
