"""Speed of the renders on real meshes: median (and min) milliseconds over repeated runs.

Meshes come from the official mb05 parameters in ``../shared/reference/official_mb05_samples.json``
(dense model: whatever :func:`tddfa.morphable_model.load_morphable_model` finds). The first-call
time — Numba compilation with an empty cache, measured in a child process whose
``NUMBA_CACHE_DIR`` is a fresh temporary folder — is reported separately from the steady state.

    python benchmarks/bench_render.py [--repeat 50] [--sample JianzhuGuo.jpg] [--no-cold]

Targets (issue 3): mesh overlay of one face in the 413x551 photo (JianzhuGuo.jpg) <= 4 ms;
depth and PNCC alike; UV texture <= 10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("TDDFA_HOME", str(SHARED / "assets"))


def load(sample: str):
    import cv2

    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.pipeline.aligner import faces_from_params

    ref = json.loads((SHARED / "reference" / "official_mb05_samples.json").read_text())[sample]
    mm = load_morphable_model()
    faces = faces_from_params(mm, [f["param"] for f in ref["faces"]],
                              [f["roi_box"] for f in ref["faces"]],
                              boxes=[f["box"] for f in ref["faces"]], dense=True)
    img = cv2.imread(str(SHARED / "samples" / sample))
    return img, faces, mm.tri, mm.source


def cases(img, faces, tri):
    import tddfa.render as R
    from tddfa.render.rasterize import rasterize

    verts = [f.vertices for f in faces]
    h, w = img.shape[:2]
    return {
        "rasterize (engine only, full image)": lambda: rasterize(verts[0], tri, h, w),
        "vertex_normals": lambda: R.vertex_normals(verts[0], tri),
        "mesh": lambda: R.render_mesh(img, verts, tri),
        "depth": lambda: R.render_depth(img, verts, tri),
        "pncc": lambda: R.render_pncc(img, verts, tri),
        "normal": lambda: R.render_normal(img, verts, tri),
        "uv 256": lambda: R.uv_texture(img, verts[0], 256, triangles=tri),
        "uv 512": lambda: R.uv_texture(img, verts[0], 512, triangles=tri),
        "dense": lambda: R.draw_dense_points(img, verts, tri),
        "pose": lambda: R.draw_pose(img, faces),
        "landmarks": lambda: R.draw_landmarks(img, faces),
    }


def first_calls(sample: str) -> dict[str, float]:
    img, faces, tri, _ = load(sample)
    out = {}
    for name, fn in cases(img, faces, tri).items():
        t = time.perf_counter()
        fn()
        out[name] = (time.perf_counter() - t) * 1e3
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sample", default="JianzhuGuo.jpg")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache first-call run")
    ap.add_argument("--first-call-json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.first_call_json:
        print(json.dumps(first_calls(args.sample)))
        return 0

    cold = None
    if not args.no_cold:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            res = subprocess.run([sys.executable, __file__, "--sample", args.sample,
                                  "--first-call-json"], env=env, capture_output=True, text=True,
                                 check=True)
            cold = json.loads(res.stdout.strip().splitlines()[-1])

    img, faces, tri, source = load(args.sample)
    print(f"sample {args.sample}: {img.shape[1]}x{img.shape[0]} px, {len(faces)} face(s), "
          f"{len(tri)} triangles, dense model '{source}', {args.repeat} runs each")
    print(f"{'render':38s} {'median ms':>10s} {'min ms':>8s} {'first call ms (cold cache)':>28s}")
    for name, fn in cases(img, faces, tri).items():
        fn()                                  # warm (JIT loaded, caches built)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        first = f"{cold[name]:.1f}" if cold else "-"
        print(f"{name:38s} {statistics.median(times):10.2f} {min(times):8.2f} {first:>28s}")
    if cold:
        print("first calls: fresh process, empty Numba cache; a kernel shared by several renders "
              "is compiled on its first use, in the order listed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
