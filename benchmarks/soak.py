"""Soak test: long runs of ``tddfa video`` and ``tddfa align`` with RSS sampled throughout.

    nice -n 10 python benchmarks/soak.py --frames 20000 --images 5000 --work /tmp/soak

* video: ``obama.mp4`` (158 frames) is remuxed (no re-encoding) into one file looped until it has
  at least ``--frames`` frames; ``tddfa video LOOPED --jsonl OUT`` runs in a child process.
* images: ``--images`` JPEGs (the sample photos at several sizes, cycled) in one folder;
  ``tddfa align FOLDER -o OUT --no-overlay`` runs in a child process.

The child's resident set size (``/proc/<pid>/status`` VmRSS) is sampled every ``--every``
seconds. Growth = (median of the last 10 % of samples − median of the samples just after
warm-up, 10 %–20 % of the run) / the latter; the target is < 10 %. Counts must be exact: one JSON
Lines record per frame, one JSON file per image. Samples go to ``WORK/<part>_rss.csv`` as they are
taken and the summary to ``WORK/soak.json`` after each part, so an interrupted run keeps its
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))


def loop_video(src: Path, dst: Path, min_frames: int) -> int:
    """Remux ``src`` repeatedly into ``dst`` (same codec, timestamps shifted) until it holds at
    least ``min_frames`` frames; returns the frame count."""
    import av

    with av.open(str(src)) as probe:
        st = probe.streams.video[0]
        pk = [(p.dts, p.duration or 1) for p in probe.demux(st) if p.size]
    per_loop = len(pk)
    first = min(d for d, _ in pk)
    span = max(d + dur for d, dur in pk) - first  # one loop's length in stream time units
    loops = -(-min_frames // per_loop)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        for k in range(loops):
            inp.seek(0)
            offset = k * span - first  # the first decode timestamp becomes 0
            for pkt in inp.demux(ist):
                if not pkt.size:
                    continue
                pkt.pts = None if pkt.pts is None else pkt.pts + offset
                pkt.dts = None if pkt.dts is None else pkt.dts + offset
                pkt.stream = ost
                out.mux(pkt)
    return loops * per_loop


def make_images(folder: Path, n: int, widths: tuple[int, ...] = (320, 480, 640)) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    srcs = [cv2.imread(str(p)) for p in sorted((SHARED / "samples").glob("*.jpg"))]
    variants = []
    for img in srcs:
        for width in widths:
            h = int(img.shape[0] * width / img.shape[1])
            variants.append(cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA))
    for i in range(n):
        p = folder / f"img_{i:05d}.jpg"
        if not p.exists():
            cv2.imwrite(str(p), variants[i % len(variants)])


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run_sampled(cmd: list[str], csv: Path, every: float) -> tuple[int, list[tuple[float, int]], float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t0 = time.time()
    log = open(csv.with_suffix(".stderr.txt"), "w")  # noqa: SIM115 - closed below
    # stderr goes to a file: a pipe read only at the end fills up (progress bars) and blocks the child
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    samples: list[tuple[float, int]] = []
    with open(csv, "w") as f:
        f.write("seconds,rss_kb\n")
        while proc.poll() is None:
            r = rss_kb(proc.pid)
            if r:
                samples.append((time.time() - t0, r))
                f.write(f"{samples[-1][0]:.1f},{r}\n")
                f.flush()
            time.sleep(every)
    log.close()
    if proc.returncode:
        print(csv.with_suffix(".stderr.txt").read_text()[-2000:], file=sys.stderr)
    return proc.returncode, samples, time.time() - t0


def growth(samples: list[tuple[float, int]]) -> dict:
    import statistics

    rss = [r for _, r in samples]
    n = len(rss)
    if n < 20:
        return {"samples": n, "growth_pct": None}
    warm = statistics.median(rss[n // 10 : n // 5])
    last = statistics.median(rss[-max(1, n // 10) :])
    return {"samples": n, "rss_after_warmup_mb": round(warm / 1024, 1),
            "rss_end_mb": round(last / 1024, 1), "rss_peak_mb": round(max(rss) / 1024, 1),
            "growth_pct": round(100 * (last - warm) / warm, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tddfa-soak"))
    ap.add_argument("--every", type=float, default=2.0, help="RSS sampling period, s")
    ap.add_argument("--parts", default="video,images")
    ap.add_argument("--widths", default="320,480,640", help="image widths of the batch, px")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    summary_path = args.work / "soak.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    py = sys.executable
    if "video" in args.parts:
        looped = args.work / "obama_looped.mp4"
        n = loop_video(SHARED / "samples" / "obama.mp4", looped, args.frames)
        jsonl = args.work / "video.jsonl"
        code, samples, secs = run_sampled(
            [py, "-m", "tddfa", "video", str(looped), "--jsonl", str(jsonl), "--no-progress",
             "--threads", "1"], args.work / "video_rss.csv", args.every)
        records = sum(1 for _ in open(jsonl)) if jsonl.exists() else 0
        frames = [json.loads(line)["frame"] for line in open(jsonl)] if jsonl.exists() else []
        summary["video"] = {"exit": code, "frames_in_file": n, "records": records,
                            "frames_exact": records == n and frames == list(range(n)),
                            "seconds": round(secs, 1), "fps": round(records / secs, 1),
                            **growth(samples)}
        summary_path.write_text(json.dumps(summary, indent=1))
        print("video:", summary["video"], flush=True)
    if "images" in args.parts:
        folder = args.work / "images"
        make_images(folder, args.images, tuple(int(w) for w in args.widths.split(",")))
        out = args.work / "aligned"
        code, samples, secs = run_sampled(
            [py, "-m", "tddfa", "align", str(folder), "-o", str(out), "--no-overlay",
             "--threads", "1"], args.work / "images_rss.csv", args.every)
        jsons = len(list(out.glob("*.json"))) if out.exists() else 0
        summary["images"] = {"exit": code, "images": args.images, "widths": args.widths,
                             "json_files": jsons,
                             "counts_exact": jsons == args.images, "seconds": round(secs, 1),
                             "images_per_s": round(jsons / secs, 2), **growth(samples)}
        summary_path.write_text(json.dumps(summary, indent=1))
        print("images:", summary["images"], flush=True)
    ok = all(v.get("exit") == 0 and (v.get("growth_pct") or 0) < 10
             and v.get("frames_exact", v.get("counts_exact")) for v in summary.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
