"""Byte-mutation fuzzer for every reader of untrusted files, seeded from the real files in ../shared.

    python benchmarks/fuzz.py --minutes 20            # long run, all targets
    python benchmarks/fuzz.py --seconds 5 --target image,pth

Targets: ``image`` (read_image), ``pth`` (restricted checkpoint loader, zip and legacy), ``pkl``,
``npy``, ``npz``, ``mat`` (restricted loaders), ``video`` (OpenCV and PyAV readers), ``config``
(training YAML) and ``manifest`` (training-data manifest). Each case is a seed file with 1–4
random mutations (bit flips, interesting bytes and integers, deletions, insertions, duplicated
chunks, truncation, splices of another seed).

Invariant: a case either succeeds or raises one of tddfa's typed errors (:class:`TddfaError`).
Cases run in a persistent worker process under an address-space limit, so a crash (signal), a hang
(per-case time limit), a ``MemoryError`` or any other exception is caught, counted as a defect
and its input saved under ``WORK/defects/``. The summary (cases, typed errors, defects per target)
is printed as JSON and written to ``WORK/fuzz.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
TARGETS = ["image", "pth", "pkl", "npy", "npz", "mat", "video", "config", "manifest"]
CASE_TIMEOUT = 20.0  # seconds per case before it counts as a hang
MEMORY_LIMIT = 3 << 30  # bytes of address space for the worker beyond its start-up size


# ---------------------------------------------------------------------------------------------
# seeds


def make_seeds(work: Path) -> dict[str, list[Path]]:
    """Seed files per target: real files from ../shared (small ones) plus small files made from
    them here (other image formats, a short video, archives), all under ``work/seeds``."""
    import cv2
    import numpy as np

    sd = work / "seeds"
    sd.mkdir(parents=True, exist_ok=True)
    s: dict[str, list[Path]] = {t: [] for t in TARGETS}
    samples = SHARED / "samples"
    v2, v1 = SHARED / "assets" / "3ddfa_v2", SHARED / "assets" / "3ddfa_v1"
    photo = cv2.imread(str(samples / "JianzhuGuo.jpg"))
    small = cv2.resize(photo, (64, 48), interpolation=cv2.INTER_AREA)
    for ext in (".png", ".bmp", ".tif", ".webp", ".ppm", ".jpg"):
        p = sd / f"small{ext}"
        cv2.imwrite(str(p), small)
        s["image"].append(p)
    p = sd / "gray16.png"
    cv2.imwrite(str(p), (cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257))
    s["image"] += [p, samples / "5.png"]

    sys.path.insert(0, str(ROOT / "tests" / "assets"))
    from crafted import legacy_checkpoint, zip_checkpoint

    for name, data in (("crafted_zip.pth", zip_checkpoint((2, 2), (2, 1))),
                       ("crafted_legacy.pth", legacy_checkpoint((2, 2), (1, 2)))):
        (sd / name).write_bytes(data)
        s["pth"].append(sd / name)
    s["pth"].append(v2 / "mb05_120x120.pth")
    s["pkl"] += [v2 / "param_mean_std_62d_120x120.pkl", v1 / "param_whitening.pkl"]
    s["npy"] += [v1 / "keypoints_sim.npy", v2 / "indices.npy"]
    arrays = {"u": np.arange(30, dtype=np.float32).reshape(10, 3),
              "names": np.array(["a.jpg", "b.jpg"]), "k": np.arange(4, dtype=np.int64)}
    np.savez(sd / "plain.npz", **arrays)
    np.savez_compressed(sd / "compressed.npz", **arrays)
    s["npz"] += [sd / "plain.npz", sd / "compressed.npz"]
    import scipy.io

    scipy.io.savemat(sd / "small.mat", {"UV": np.random.default_rng(0).random((20, 2)),
                                        "Pose_Para": np.zeros((1, 7))})
    scipy.io.savemat(sd / "small_z.mat", {"UV": np.zeros((50, 2))}, do_compression=True)
    s["mat"] += [sd / "small.mat", sd / "small_z.mat"]

    for name, fourcc, axis in (("short.avi", "MJPG", 1), ("short.mp4", "mp4v", 0)):
        vid = sd / name
        w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*fourcc), 25.0, (64, 48))
        for i in range(6):
            w.write(np.roll(small, i * 3, axis=axis))
        w.release()
        s["video"].append(vid)

    s["config"] += sorted((ROOT / "configs").glob("*.yaml"))
    rng = np.random.default_rng(0)
    np.savez(sd / "manifest.npz", names=np.array(["a", "b"]), images=np.array(["a.jpg", "b.jpg"]),
             params=rng.random((2, 62)).astype(np.float32),
             roi_boxes=np.tile(np.array([0, 0, 120, 120], np.float32), (2, 1)),
             landmarks=rng.random((2, 68, 2)).astype(np.float32))
    s["manifest"].append(sd / "manifest.npz")
    return {t: [p for p in v if p.is_file()] for t, v in s.items()}


# ---------------------------------------------------------------------------------------------
# mutation

_INTERESTING_BYTES = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x20, 0x0A]
_INTERESTING_INTS = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000,
                     0xFFFFFFFF, 1 << 40, -(1 << 62), 30000, 65535]


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            continue
        op = rng.randrange(9)
        # bias positions towards the header, where the structure lives
        pos = rng.randrange(min(len(b), 512)) if rng.random() < 0.6 else rng.randrange(len(b))
        if op == 0:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[pos] = rng.choice(_INTERESTING_BYTES)
        elif op == 2:
            v = rng.choice(_INTERESTING_INTS)
            width = rng.choice([2, 4, 8])
            order = rng.choice(["little", "big"])
            chunk = (v % (1 << (8 * width))).to_bytes(width, order)
            b[pos : pos + width] = chunk
        elif op == 3:
            del b[pos : pos + rng.randint(1, 64)]
        elif op == 4:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif op == 5:
            n = rng.randint(1, 256)
            b[pos:pos] = b[pos : pos + n]
        elif op == 6:
            del b[rng.randrange(len(b)) :]
        elif op == 7 and others:
            o = rng.choice(others)
            if o:
                start = rng.randrange(len(o))
                b[pos : pos + rng.randint(1, 256)] = o[start : start + rng.randint(1, 256)]
        else:
            b[pos] = rng.randrange(256)
    return bytes(b)


# ---------------------------------------------------------------------------------------------
# worker: runs one case per request line "target<TAB>path", answers one line


def _run_target(target: str, path: str) -> None:
    if target == "image":
        from tddfa.io.images import read_image

        img = read_image(path)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype.name == "uint8", img.shape
    elif target == "pth":
        from tddfa.assets.serialization import load_torch_checkpoint, state_dict_from_checkpoint

        state_dict_from_checkpoint(load_torch_checkpoint(path))
    elif target == "pkl":
        from tddfa.assets.serialization import load_pickle

        load_pickle(path)
    elif target == "npy":
        from tddfa.assets.serialization import load_npy

        load_npy(path)
    elif target == "npz":
        from tddfa.assets.serialization import load_npz

        load_npz(path)
    elif target == "mat":
        from tddfa.assets.serialization import load_mat

        load_mat(path)
    elif target == "video":
        from tddfa.io.video import open_video

        for backend in ("opencv", "pyav"):
            try:
                with open_video(path, backend=backend) as src:
                    for k, fr in enumerate(src):
                        assert fr.image.ndim == 3 and fr.image.shape[2] == 3
                        if k >= 20:
                            break
            except Exception as exc:
                from tddfa.errors import TddfaError

                if not isinstance(exc, TddfaError):
                    raise
    elif target == "config":
        from tddfa.train.config import load_config

        load_config(path)
    elif target == "manifest":
        from tddfa.train.samples import load_manifest

        load_manifest(path)
    else:
        raise SystemExit(f"unknown target {target}")


def worker() -> None:
    import resource

    from tddfa.errors import TddfaError

    # warm the imports so the address-space limit applies to the cases, not to library start-up
    for t in TARGETS:
        try:
            _run_target(t, os.devnull)
        except Exception:
            pass
    import re

    vm = int(re.search(r"VmSize:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + MEMORY_LIMIT, vm + MEMORY_LIMIT))
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        target, path = line.rstrip("\n").split("\t")
        try:
            _run_target(target, path)
            msg = "ok"
        except TddfaError as exc:
            msg = f"typed {type(exc).__name__}"
        except BaseException as exc:  # noqa: BLE001 - the point is to catch everything
            tb = traceback.format_exc().strip().splitlines()
            where = next((t.strip() for t in reversed(tb) if t.strip().startswith("File")), "")
            msg = f"defect {type(exc).__name__}: {str(exc)[:200]!r} at {where}"
        out.write(msg.replace("\n", " ") + "\n")
        out.flush()


class Worker:
    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        env.setdefault("TDDFA_OFFLINE", "1")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=env, bufsize=1)
        ready, _, _ = select.select([self.proc.stdout], [], [], 300)
        if not ready or self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the fuzz worker did not start")

    def run(self, target: str, path: Path, timeout: float) -> str:
        try:
            self.proc.stdin.write(f"{target}\t{path}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return f"defect crash (exit {self.proc.wait()})"
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            return f"defect hang (> {timeout:.0f} s)"
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            sig = f", signal {-code}" if code < 0 else ""
            return f"defect crash (exit {code}{sig})"
        return line.strip()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.alive():
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ---------------------------------------------------------------------------------------------


def run(seconds_per_target: float, targets: list[str] | None = None, seed: int = 0,
        work: Path | None = None, log=print, min_cases: int = 1) -> dict:
    """Fuzz each target for ``seconds_per_target`` (and at least ``min_cases`` cases); returns the
    summary dict."""
    import tempfile

    work = Path(work or tempfile.mkdtemp(prefix="tddfa-fuzz-"))
    seeds = make_seeds(work)
    targets = targets or TARGETS
    rng = random.Random(seed)
    summary: dict = {"seed": seed, "seconds_per_target": seconds_per_target, "targets": {}}
    defects_dir = work / "defects"
    w = Worker()
    try:
        for target in targets:
            datas = [p.read_bytes() for p in seeds[target]]
            stats = {"cases": 0, "ok": 0, "typed": 0, "defects": 0, "seeds": len(datas),
                     "errors": {}, "defect_examples": []}
            case = work / f"case_{target}{seeds[target][0].suffix if seeds[target] else ''}"
            end = time.time() + seconds_per_target
            first = True
            while datas and (time.time() < end or stats["cases"] < min_cases):
                i = rng.randrange(len(datas))
                data = datas[i] if first else mutate(datas[i], rng, datas)
                first = False
                case = case.with_suffix(seeds[target][i].suffix)
                case.write_bytes(data)
                if not w.alive():
                    t0 = time.time()
                    w = Worker()
                    end += time.time() - t0
                res = w.run(target, case, CASE_TIMEOUT)
                stats["cases"] += 1
                if res == "ok":
                    stats["ok"] += 1
                elif res.startswith("typed"):
                    stats["typed"] += 1
                    name = res.split()[1]
                    stats["errors"][name] = stats["errors"].get(name, 0) + 1
                else:
                    stats["defects"] += 1
                    defects_dir.mkdir(exist_ok=True)
                    keep = defects_dir / f"{target}_{stats['cases']:06d}{case.suffix}"
                    keep.write_bytes(data)
                    if len(stats["defect_examples"]) < 10:
                        stats["defect_examples"].append(f"{keep}: {res}")
                    log(f"{target}: DEFECT {res} (input saved as {keep})")
            summary["targets"][target] = stats
            log(f"{target}: {stats['cases']} cases, {stats['ok']} ok, {stats['typed']} typed errors, "
                f"{stats['defects']} defects")
    finally:
        w.close()
    summary["cases"] = sum(t["cases"] for t in summary["targets"].values())
    summary["defects"] = sum(t["defects"] for t in summary["targets"].values())
    (work / "fuzz.json").write_text(json.dumps(summary, indent=1))
    summary["work"] = str(work)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--minutes", type=float, help="total budget, split evenly over the targets")
    ap.add_argument("--seconds", type=float, default=10.0, help="budget per target (default 10)")
    ap.add_argument("--target", default=",".join(TARGETS), help="comma list of targets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, help="folder for seeds, cases and saved defects")
    args = ap.parse_args()
    if args.worker:
        worker()
        return 0
    targets = [t for t in args.target.split(",") if t]
    per = args.minutes * 60 / len(targets) if args.minutes else args.seconds
    summary = run(per, targets, args.seed, args.work)
    print(json.dumps({k: v for k, v in summary.items()}, indent=1))
    return 1 if summary["defects"] else 0


if __name__ == "__main__":
    sys.exit(main())
