"""Per-photo time of ``FaceAligner.align`` against MediaPipe FaceMesh (static-image mode), side by side.

    python benchmarks/bench_vs_mediapipe.py [--mp-python /work/venvs/mp/bin/python] [--rounds 5]

MediaPipe (``mediapipe==0.10.14``) lives in its own virtual environment (it pins NumPy/OpenCV
versions the project does not want): ``python -m venv /work/venvs/mp && /work/venvs/mp/bin/pip
install mediapipe==0.10.14``. This script starts that interpreter once as a helper process that
keeps one ``FaceMesh(static_image_mode=True, max_num_faces=10)`` and times ``process()`` on
request; rounds alternate tddfa (in this process) and MediaPipe on the same decoded photos.
Decoding is outside both timings. Figures: medians in ms, faces found by each, ratio
MediaPipe / tddfa (≥ 1: tddfa at least as fast). Writes docs/results/vs-mediapipe.json.
Skips cleanly when the MediaPipe interpreter is absent.

``--min-face 0 160`` (the default) times tddfa once per value of ``FaceAligner(min_face_size=)``:
0 is the default (every face FaceBoxes can find); a limit lets the detector run on a smaller
image (``tddfa align --min-face PX``), closer to what MediaPipe's short-range face detector
looks for. Faces found are printed for each, so the trade is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from _common import write_report

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("TDDFA_HOME", str(SHARED / "assets"))
PHOTOS = ("emma.jpg", "trump_hillary.jpg", "JianzhuGuo.jpg", "0013.jpg")

# The helper: one JSON request per line {"photo", "repeat"} -> {"ms": [...], "faces": n}.
HELPER = r"""
import json, sys, time, cv2
import mediapipe as mp
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=10,
                                       refine_landmarks=False, min_detection_confidence=0.5)
cache = {}
for line in sys.stdin:
    req = json.loads(line)
    p = req["photo"]
    if p not in cache:
        cache[p] = cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)
    rgb = cache[p]
    ms, faces = [], 0
    for _ in range(req["repeat"]):
        t0 = time.perf_counter()
        res = mesh.process(rgb)
        ms.append((time.perf_counter() - t0) * 1e3)
        faces = len(res.multi_face_landmarks or [])
    print(json.dumps({"ms": ms, "faces": faces}), flush=True)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mp-python", default="/work/venvs/mp/bin/python")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backend", default="onnxruntime", help="tddfa backend (onnxruntime/openvino/auto)")
    ap.add_argument("--min-face", type=float, nargs="+", default=[0.0, 160.0], metavar="PX",
                    help="tddfa min_face_size values to time (default: 0 160)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "vs-mediapipe.json")
    args = ap.parse_args()
    if not Path(args.mp_python).is_file():
        print(f"bench_vs_mediapipe: {args.mp_python} not found (see the docstring); skipped")
        return 0
    import cv2

    from tddfa.pipeline.aligner import FaceAligner

    helper = subprocess.Popen([args.mp_python, "-c", HELPER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, bufsize=1)

    def mp_time(photo: Path, repeat: int) -> dict:
        assert helper.stdin and helper.stdout
        helper.stdin.write(json.dumps({"photo": str(photo), "repeat": repeat}) + "\n")
        return json.loads(helper.stdout.readline())

    aligners = {mf: FaceAligner(backend=args.backend, min_face_size=mf) for mf in args.min_face}
    report: dict = {"rounds": args.rounds, "repeat": args.repeat, "backend": args.backend,
                    "min_face": args.min_face, "photos": {}}
    print(f"{'photo':<20}{'min face':>9}{'tddfa ms':>10}{'MP ms':>9}{'MP/tddfa':>10}"
          f"{'faces t/MP':>12}")
    ratios: dict[float, list[float]] = {mf: [] for mf in aligners}
    try:
        for name in PHOTOS:
            path = SHARED / "samples" / name
            img = cv2.imread(str(path))
            if img is None:
                continue
            found = {mf: len(al.align(img).faces) for mf, al in aligners.items()}  # warm-up
            n_mp = mp_time(path, 1)["faces"]
            tt: dict[float, list[float]] = {mf: [] for mf in aligners}
            tm: list[float] = []
            for _ in range(args.rounds):  # rounds alternate every tddfa setting and MediaPipe
                for mf, al in aligners.items():
                    for _ in range(args.repeat):
                        t0 = time.perf_counter()
                        al.align(img)
                        tt[mf].append((time.perf_counter() - t0) * 1e3)
                tm.extend(mp_time(path, args.repeat)["ms"])
            mm = statistics.median(tm)
            rows = {}
            for mf in aligners:
                mt = statistics.median(tt[mf])
                ratios[mf].append(mm / mt)
                rows[f"{mf:g}"] = {"tddfa_ms": round(mt, 2), "ratio": round(mm / mt, 3),
                                   "tddfa_faces": found[mf]}
                print(f"{name:<20}{mf:>9g}{mt:>10.2f}{mm:>9.2f}{mm / mt:>10.2f}"
                      f"{found[mf]:>7}/{n_mp}")
            report["photos"][name] = {"mediapipe_ms": round(mm, 2), "mediapipe_faces": n_mp,
                                      "size": [img.shape[1], img.shape[0]], "tddfa": rows}
    finally:
        if helper.stdin:
            helper.stdin.close()
        helper.wait(timeout=30)
    report["min_ratio"] = {f"{mf:g}": round(min(r), 3) if r else None for mf, r in ratios.items()}
    report["load_average"] = os.getloadavg()
    write_report(args.out, report)
    print(f"worst MediaPipe/tddfa ratio by min face {report['min_ratio']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
