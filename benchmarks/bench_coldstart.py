"""Cold start of the CLI: wall time and peak RSS of whole `tddfa align` processes.

    python benchmarks/bench_coldstart.py [--image emma.jpg] [--runs 5] [--baseline OTHER/src]

``--baseline`` times another source tree (e.g. the previous release's ``src``) in the same run,
alternating processes, and prints the ratio baseline / this tree (robust to a loaded CPU).

"Second run of a fresh install": a new, empty cache folder (``TDDFA_CACHE``) is filled by one
untimed run (ONNX conversion, the memory-mappable copy of the morphable model; Numba's on-disk
cache is filled the same way when it is empty), then ``--runs`` new processes are timed for
each command and the median and best are printed. Targets (issue 11): ``align`` ≤ 0.8 s,
``align --dense --render mesh`` ≤ 1.2 s. Figures on a shared, loaded CPU are upper bounds: the
load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_report

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
COMMANDS = {"align": ([], 0.8), "align --dense --render mesh": (["--dense", "--render", "mesh"], 1.2)}


def run_once(image: Path, out: Path, extra: list[str], env: dict, src: Path | None = None
             ) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, all threads) of one ``python -m tddfa align``
    process. CPU time is far less sensitive than wall time to other jobs on a shared machine."""
    if src is not None:
        env = dict(env, PYTHONPATH=str(src))
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tddfa", "align", str(image), "-o", str(out), *extra],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(SHARED / "samples" / "emma.jpg"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline", type=Path, help="another source tree to time alternately")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "coldstart.json")
    args = ap.parse_args()
    env = dict(os.environ)
    env.setdefault("TDDFA_HOME", str(SHARED / "assets"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    report = {"image": Path(args.image).name, "runs": args.runs, "commands": {}}
    with tempfile.TemporaryDirectory() as tmp:
        env["TDDFA_CACHE"] = str(Path(tmp) / "cache")
        out = Path(tmp) / "out"
        for name, (extra, target) in COMMANDS.items():
            img = Path(args.image)
            run_once(img, out, extra, env)  # the first run of the fresh install
            if args.baseline:
                run_once(img, out, extra, env, args.baseline)
            walls, cpus, base, bcpu = [], [], [], []
            for _ in range(args.runs):
                w, c = run_once(img, out, extra, env)
                walls.append(w)
                cpus.append(c)
                if args.baseline:
                    w, c = run_once(img, out, extra, env, args.baseline)
                    base.append(w)
                    bcpu.append(c)
            med, best, cpu = statistics.median(walls), min(walls), statistics.median(cpus)
            row = {"median_s": round(med, 3), "best_s": round(best, 3), "cpu_s": round(cpu, 3),
                   "target_s": target}
            line = (f"tddfa {name:<28} wall median {med:5.2f} s best {best:5.2f} s, "
                    f"CPU {cpu:5.2f} s (target {target} s)")
            if base:
                bmed, bc = statistics.median(base), statistics.median(bcpu)
                row.update(baseline_median_s=round(bmed, 3), baseline_cpu_s=round(bc, 3),
                           ratio_wall=round(bmed / med, 3), ratio_cpu=round(bc / cpu, 3))
                line += (f"; baseline wall {bmed:5.2f} s CPU {bc:5.2f} s; ratio wall "
                         f"{bmed / med:4.2f}x CPU {bc / cpu:4.2f}x")
            report["commands"][name] = row
            print(f"{line}  load {os.getloadavg()[0]:.1f}")
    report["peak_rss_mb_any_run"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    report["load_average"] = os.getloadavg()
    write_report(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
