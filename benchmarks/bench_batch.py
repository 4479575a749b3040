"""Batch throughput: the AFLW2000-3D images through `tddfa align DIR` (one process, the simple
loop), `--workers 2`, and Ray with 2 CPUs — images/s and peak RSS of the whole process tree.

    python benchmarks/bench_batch.py [--limit 2000] [--modes single,workers2,ray2] [--no-overlay]

Each mode runs the CLI in a fresh process on the same list of images (a list file, so every
mode sees the same inputs) into its own temporary folder. RSS is the sum over the CLI process
and all its descendants (worker processes, Ray's raylet and actors), sampled every 0.25 s; the
RSS when 10 % of the images are done is printed beside the peak (bounded memory: the two should
be close). Modes run one after another, so on a shared CPU compare them within one run only.
Writes ``docs/results/batch.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_report

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
MODES = {
    "single": ["--format", "jsonl"],
    "workers2": ["--format", "jsonl", "--workers", "2"],
    "ray2": ["--format", "jsonl", "--engine", "ray", "--workers", "2"],
    "single-json": [],  # exactly today's `tddfa align DIR -o OUT` (a JSON file per image)
}


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
        rss[int(d)] = pages * page
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def count_done(out: Path) -> int:
    res = out / "results.jsonl"
    if res.is_file():
        with open(res, "rb") as f:
            return sum(1 for _ in f)
    return sum(1 for _ in out.glob("*.json")) if out.is_dir() else 0


def run_mode(name: str, flags: list[str], listfile: Path, n: int, tmp: Path, env: dict,
             overlay: bool) -> dict:
    out = tmp / name
    cmd = [sys.executable, "-m", "tddfa", "align", str(listfile), "-o", str(out), *flags]
    if not overlay:
        cmd.append("--no-overlay")
    t0 = time.perf_counter()
    log = open(tmp / f"{name}.stderr", "wb")  # a file, not a pipe: the progress bar never blocks
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    peak = rss10 = 0
    first = None
    while proc.poll() is None:
        r = tree_rss(proc.pid)
        peak = max(peak, r)
        done = count_done(out)
        if first is None and done:
            first = time.perf_counter() - t0
        if not rss10 and done >= n // 10:
            rss10 = r
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    log.close()
    err = (tmp / f"{name}.stderr").read_text(errors="replace")
    done = count_done(out)
    row = {"images": n, "written": done, "exit": proc.returncode, "seconds": round(wall, 2),
           "images_per_s": round(done / wall, 2), "peak_rss_mb": round(peak / 2**20),
           "rss_at_10pct_mb": round(rss10 / 2**20), "first_record_s": round(first or 0, 2),
           "flags": flags}
    if proc.returncode != 0 or done < n:
        row["stderr_tail"] = err[-3000:]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--modes", default="single-json,workers2,ray2",
                    help="comma list; the first is the baseline of the speed-ups")
    ap.add_argument("--no-overlay", action="store_true", help="skip the landmark overlay JPEGs")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "batch.json")
    args = ap.parse_args()
    folder = SHARED / "benchmarks" / "aflw2000-3d" / "AFLW2000"
    images = sorted(folder.glob("*.jpg"))[: args.limit]
    if not images:
        print(f"bench_batch: no images in {folder}; skipped")
        return 0
    env = dict(os.environ)
    env.setdefault("TDDFA_HOME", str(SHARED / "assets"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    report: dict = {"images": len(images), "cpus": os.cpu_count(), "overlay": not args.no_overlay,
                    "modes": {}}
    print(f"{len(images)} AFLW2000-3D images, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'mode':<12}{'img/s':>8}{'seconds':>9}{'peak RSS MB':>13}{'RSS@10% MB':>12}{'exit':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        listfile = Path(tmp) / "inputs.txt"
        listfile.write_text("".join(f"{p}\n" for p in images))
        for name in args.modes.split(","):
            row = run_mode(name, MODES[name], listfile, len(images), Path(tmp), env,
                           not args.no_overlay)
            row["load_after"] = round(os.getloadavg()[0], 1)
            report["modes"][name] = row
            print(f"{name:<12}{row['images_per_s']:>8.2f}{row['seconds']:>9.1f}"
                  f"{row['peak_rss_mb']:>13}{row['rss_at_10pct_mb']:>12}{row['exit']:>6}"
                  f"   (load {row['load_after']})", flush=True)
            write_report(args.out, report)  # after every mode
    first = args.modes.split(",")[0]
    base = report["modes"].get(first, {}).get("images_per_s")
    if base:
        report["baseline"] = first
        report["speedup"] = {k: round(v["images_per_s"] / base, 2) for k, v in report["modes"].items()}
        print(f"speed-up vs {first}:", report["speedup"])
    write_report(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
