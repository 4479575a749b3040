"""Loopback load test of `tddfa serve` against in-process FaceAligner.align on the same photo.

    python benchmarks/bench_serve.py [--requests 1000] [--clients 8] [--bad 100] [--inproc 200]

Starts `tddfa serve` on a free 127.0.0.1 port, then:

1. in-process baseline, first half: ``FaceAligner().align(path)`` in a loop (file read + decode
   included, as the server decodes every upload);
2. load: ``--clients`` threads, each with a keep-alive connection, send ``--requests`` POSTs of
   the one-face photo to /v1/align with ``--bad`` bad requests mixed in (random bytes → 415,
   truncated JPEG → 400, a PNG declaring 60000×60000 pixels → 413, an unknown render kind → 422,
   a body declared larger than --max-upload-mb → 413); records latency, errors and the server's
   RSS when the 100th and the last good request complete;
3. in-process baseline, second half (so a change of machine load during the run hits both).

Targets: 0 errors on good requests, every bad request answered 4xx, server throughput >= 80 % of
in-process, RSS growth < 10 % from good request 100 to the last. Prints the load average, since
the 2-core test machine is shared.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("TDDFA_HOME", str(SHARED / "assets"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "tddfa", "serve", "--port", str(port), "--workers", str(args.workers),
           "--queue", str(args.queue), "--threads", str(args.threads), "--spin", args.spin,
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("tddfa serve did not start")


def bad_requests(photo: bytes) -> list[tuple[str, str, bytes, dict, int]]:
    """(name, path, body, headers, expected status)."""
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\0" * 256)
    rnd = random.Random(1).randbytes(5000)
    return [
        ("random bytes", "/v1/align", rnd, {}, 415),
        ("truncated jpeg", "/v1/align", photo[:1500], {}, 400),
        ("declared 3.6 gigapixels", "/v1/align", bomb, {}, 413),
        ("unknown render kind", "/v1/render?kind=hologram", photo, {}, 422),
        ("body over the limit", "/v1/align", b"\xff\xd8\xff" + b"\0" * 1021,
         {"Content-Length": str(25 * 1024 * 1024)}, 413),
    ]


def in_process(path: Path, n: int, threads: int) -> tuple[float, float]:
    """Images per second of FaceAligner.align(path), sequential, and CPU seconds per image."""
    from tddfa.pipeline.aligner import FaceAligner

    global _ALIGNER
    if "_ALIGNER" not in globals():
        _ALIGNER = FaceAligner(threads=threads)
        for _ in range(5):
            _ALIGNER.align(path)
    t = time.perf_counter()
    c = time.process_time()
    for _ in range(n):
        faces = _ALIGNER.align(path).faces
        assert len(faces) == 1, len(faces)
    return n / (time.perf_counter() - t), (time.process_time() - c) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", default=str(SHARED / "samples" / "JianzhuGuo.jpg"))
    ap.add_argument("--requests", type=int, default=1000, help="good requests")
    ap.add_argument("--bad", type=int, default=100, help="bad requests mixed in")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--inproc", type=int, default=200, help="in-process align calls (two halves)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--queue", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (both sides)")
    ap.add_argument("--spin", default="off", choices=["off", "run", "on"],
                    help="the server's ONNX Runtime spin mode (tddfa serve --spin; default off)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    photo_path = Path(args.photo)
    photo = photo_path.read_bytes()
    load0 = os.getloadavg()
    port = free_port()
    server = start_server(args, port)
    try:
        ip1, cpu1 = in_process(photo_path, args.inproc // 2, args.threads)

        bads = bad_requests(photo)
        tasks = [("good", "/v1/align", photo, {}, 200)] * args.requests
        step = max(1, len(tasks) // max(args.bad, 1))
        for i in range(args.bad):
            tasks.insert(min(len(tasks), (i + 1) * step + i), bads[i % len(bads)])
        it = iter(tasks)
        lock = threading.Lock()
        lat: list[float] = []
        good_errors: list[str] = []
        bad_results: list[tuple[str, int, int]] = []
        rss: dict[int, float] = {}
        done_good = [0]

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            while True:
                with lock:
                    task = next(it, None)
                if task is None:
                    break
                name, path, body, headers, want = task
                t = time.perf_counter()
                try:
                    c = conn if "Content-Length" not in headers else http.client.HTTPConnection(
                        "127.0.0.1", port, timeout=120)
                    h = {"Content-Type": "image/jpeg", **headers}
                    if "Content-Length" in headers:     # declare a huge body, send a little
                        c.putrequest("POST", path)
                        for k, v in h.items():
                            c.putheader(k, v)
                        c.endheaders(body)
                    else:
                        c.request("POST", path, body=body, headers=h)
                    r = c.getresponse()
                    payload = r.read()
                    status = r.status
                    if c is not conn:
                        c.close()
                except (OSError, http.client.HTTPException) as exc:
                    status, payload = -1, repr(exc).encode()
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                dt = time.perf_counter() - t
                with lock:
                    if name == "good":
                        ok = status == 200 and len(json.loads(payload)["faces"]) == 1
                        if ok:
                            lat.append(dt)
                        else:
                            good_errors.append(f"{status}: {payload[:200]!r}")
                        done_good[0] += 1
                        if done_good[0] in (100, args.requests):
                            rss[done_good[0]] = rss_mb(server.pid)
                    else:
                        bad_results.append((name, want, status))
            conn.close()

        t0 = time.perf_counter()
        server_cpu0 = cpu_s(server.pid)
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        server_cpu = cpu_s(server.pid) - server_cpu0
        ip2, cpu2 = in_process(photo_path, args.inproc - args.inproc // 2, args.threads)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
            metrics = r.read().decode()
    finally:
        server.terminate()
        server.wait(30)
    load1 = os.getloadavg()

    served = len(lat) / wall
    inproc = (ip1 + ip2) / 2
    lat_ms = sorted(x * 1e3 for x in lat)
    p = (lambda q: lat_ms[min(len(lat_ms) - 1, int(q * len(lat_ms)))]) if lat_ms else (lambda q: float("nan"))
    bad_4xx = sum(1 for _, _, s in bad_results if 400 <= s < 500)
    bad_expected = sum(1 for _, w, s in bad_results if w == s)
    have = 100 in rss and args.requests in rss
    growth = (rss[args.requests] / rss[100] - 1) * 100 if have else float("nan")
    faces_metric = next((ln.split()[1] for ln in metrics.splitlines()
                         if ln.startswith("tddfa_faces_total ")), "?")
    out = {
        "photo": photo_path.name, "clients": args.clients, "workers": args.workers, "queue": args.queue,
        "good_requests": args.requests, "good_ok": len(lat), "good_errors": len(good_errors),
        "bad_requests": len(bad_results), "bad_answered_4xx": bad_4xx, "bad_expected_status": bad_expected,
        "wall_s": round(wall, 2), "server_img_per_s": round(served, 2),
        "inprocess_img_per_s": round(inproc, 2), "inprocess_halves": [round(ip1, 2), round(ip2, 2)],
        "ratio": round(served / inproc, 3),
        # conservative: the bad requests' (small) CPU is charged to the good ones
        "server_cpu_ms_per_image": round(server_cpu / max(len(lat), 1) * 1e3, 1),
        "inprocess_cpu_ms_per_image": round((cpu1 + cpu2) / 2 * 1e3, 1),
        "p50_ms": round(statistics.median(lat_ms), 1) if lat_ms else None, "p99_ms": round(p(0.99), 1),
        "rss_mb_at_100": round(rss.get(100, float("nan")), 1),
        "rss_mb_at_last": round(rss.get(args.requests, float("nan")), 1),
        "rss_growth_pct": round(growth, 2), "faces_total_metric": faces_metric,
        "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in load1],
        "cpus": os.cpu_count(),
    }
    print(f"tddfa serve load test: {args.requests} good + {len(bad_results)} bad requests of "
          f"{photo_path.name}, {args.clients} clients, {args.workers} worker(s), queue {args.queue}")
    print(f"  machine: {os.cpu_count()} CPUs, load average {load0[0]:.1f} before, {load1[0]:.1f} after")
    print(f"  server:     {served:7.2f} img/s   p50 {out['p50_ms']} ms   p99 {out['p99_ms']} ms   "
          f"wall {wall:.1f} s")
    print(f"  in-process: {inproc:7.2f} img/s   (halves {ip1:.2f}, {ip2:.2f})")
    print(f"  ratio server / in-process: {served / inproc:.1%} (target >= 80 %)")
    print(f"  CPU per image: server {out['server_cpu_ms_per_image']} ms (all threads, the bad requests' "
          f"CPU included), in-process {out['inprocess_cpu_ms_per_image']} ms -> efficiency "
          f"{out['inprocess_cpu_ms_per_image'] / out['server_cpu_ms_per_image']:.1%}")
    print(f"  good requests failed: {len(good_errors)} (target 0)"
          + (f" e.g. {good_errors[:3]}" if good_errors else ""))
    print(f"  bad requests answered 4xx: {bad_4xx}/{len(bad_results)} (expected status: {bad_expected})")
    for name in sorted({n for n, _, _ in bad_results}):
        got = sorted({s for n, _, s in bad_results if n == name})
        print(f"    {name}: status {got}")
    print(f"  server RSS: {out['rss_mb_at_100']} MB at good request 100, {out['rss_mb_at_last']} MB at "
          f"{args.requests} ({growth:+.2f} %, target < 10 %)")
    print(f"  /metrics tddfa_faces_total = {faces_metric}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
