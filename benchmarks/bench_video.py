"""Speed of video tracking, end to end (decoding included), on ../shared/samples/obama.mp4.

Prints the median (and min/max) frames per second over ``--runs`` runs of each scenario:

* ``sparse``: tracking with 68 landmarks, no smoothing, nothing written;
* ``sparse+centered``: the same with centred-window smoothing of the parameters (the CLI default
  for files);
* ``sparse overlay video``: landmarks drawn and encoded to an .mp4;
* ``mesh overlay video``: dense mesh reconstructed, shaded mesh rendered and encoded to an .mp4
  (as ``tddfa video -o out.mp4 --overlay mesh``: drawing and encoding in the writer's thread).

Model loading is done once before timing. Run: ``python benchmarks/bench_video.py``.
The machine's other load shows up in the spread; the median is the figure to quote.

``--stability`` also prints 3DDFA_V2's stability measure (mean ‖Δp − Δq‖ over adjacent frames,
in percent of the face size) on synthetic short videos made from the sample photos with known
smooth motion (in-plane: rotation ±3°, shift ±6 px, scale ±3 %; out-of-plane: additionally yaw
±6°, pitch ±4° through the fitted mesh), without smoothing and with causal / centred smoothing,
and the landmark jitter on a still frame repeated 30 times.

``--mot`` builds the multi-face, multi-shot synthetic clip of :mod:`tddfa.video.mot` (scene cuts,
pans and zooms, faces entering and leaving, a face below the minimum size, a face turning to
profile through its mesh, obama.mp4 as one shot) and prints the identity figures (id switches,
ids across cuts, fragmentation, false-track and missed face-frames, tracked faces below the
minimum size) of the tracker with and without validation / cut detection.

``--mediapipe`` times tddfa sparse tracking (validation and cut detection on, no smoothing) as
``VideoAligner()`` and ``tddfa video`` run it by default (one ONNX Runtime thread for the
regressor, the detector's checks and searches on worker threads; any number of faces), the same
with one face at most (as MediaPipe's default), and with ONNX Runtime on every core
(``FaceAligner(spin="off")``) against MediaPipe FaceMesh with ``max_num_faces`` 1 (its default)
and 4 (which, like tddfa's default, keeps looking for more faces: MediaPipe runs its detector on
every frame while fewer faces than that are tracked)
(``mediapipe==0.10.14``, legacy ``solutions.face_mesh`` in video mode) side by side on the
decoded frames of the video, best of ``--passes``; skipped with a message when mediapipe is not
importable (install it in a separate venv and run this script with that interpreter). The
OpenCV that MediaPipe pins applies obama.mp4's edit list and yields only 55 of its 158 coded
frames (tddfa's reader gets all of them, see the README), so decode with
the project's environment first and pass the frames::

    python benchmarks/bench_video.py --dump-frames /tmp/obama.npy
    /path/to/mp-venv/bin/python benchmarks/bench_video.py --mediapipe --only --frames /tmp/obama.npy
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("TDDFA_HOME", str(SHARED / "assets"))
os.environ.setdefault("TDDFA_OFFLINE", "1")

from tddfa.io.video import VideoWriter, open_video  # noqa: E402
from tddfa.pipeline.aligner import FaceAligner  # noqa: E402
from tddfa.video.overlay import draw_overlay  # noqa: E402
from tddfa.video.smoothing import SmoothingConfig  # noqa: E402
from tddfa.video.tracker import VideoAligner  # noqa: E402


def run_once(va: VideoAligner, path: Path, overlay: str | None, out_dir: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open_video(path) as src:
        writer = None
        if overlay is not None:
            mm = va.aligner.morphable_model
            writer = VideoWriter(out_dir / f"bench_{overlay}.mp4", src.fps, (src.width, src.height),
                                 render=lambda im, faces: draw_overlay(overlay, im, faces, mm.tri, mm))
        n = 0
        for res in va.track(src, keep_images=writer is not None):
            if writer is not None:
                writer.write(res.image, res.faces)
            n += 1
        if writer is not None:
            writer.close()
    return n, time.perf_counter() - t0


def stability_report(aligner: FaceAligner, n_frames: int = 60, seeds: int = 3) -> None:
    import numpy as np

    from tddfa.io.images import read_image
    from tddfa.io.video import ArraySource
    from tddfa.video.stability import (
        smooth_random_motion,
        stability,
        still_motion,
        synthesize_video,
        transform_points_3d,
    )

    modes = ("none", "causal", "centered")
    mm = aligner.morphable_model

    def track(frames, mode):
        va = VideoAligner(aligner, smoothing=mode)
        res = list(va.track(ArraySource(frames), keep_images=False))
        if any(len(r.faces) != 1 for r in res):
            raise RuntimeError("expected exactly one face in every synthetic frame")
        return np.stack([r.faces[0].landmarks for r in res])

    rows = {("in-plane", m): [] for m in modes} | {("out-of-plane", m): [] for m in modes}
    jitter = {m: [] for m in modes}
    used = []
    for name in ("JianzhuGuo.jpg", "0013.jpg", "5.png", "emma.jpg"):
        img = read_image(SHARED / "samples" / name)
        boxes = aligner.detect(img)
        if len(boxes) > 1:  # keep the best face with a margin around it: a one-face photo
            x1, y1, x2, y2 = boxes[0, :4]
            mx, my = 0.6 * (x2 - x1), 0.6 * (y2 - y1)
            top, left = max(int(y1 - my), 0), max(int(x1 - mx), 0)
            img = np.ascontiguousarray(img[top: int(y2 + my), left: int(x2 + mx)])
            if len(aligner.detect(img)) != 1:
                continue
        used.append(name)
        face = aligner.refine(img, aligner.align(img).faces, dense=True)[0]
        v = face.vertices
        centre = v[:, :2].mean(axis=0)
        for seed in range(seeds):
            for kind, extra in (("in-plane", {}), ("out-of-plane", dict(max_yaw_deg=6.0, max_pitch_deg=4.0))):
                m = smooth_random_motion(n_frames, centre, seed=seed, **extra)
                frames = synthesize_video(img, m, v, mm.tri)
                truth = transform_points_3d(v[mm.keypoints], m, pivot=v.mean(axis=0))
                for mode in modes:
                    rows[(kind, mode)].append(100 * stability(track(frames, mode), truth))
        still = synthesize_video(img, still_motion(30, centre))
        for mode in modes:
            lm = track(still, mode)
            jitter[mode].append(float(np.abs(np.diff(lm, axis=0)).max()))
    print(f"stability (% of face size, mean over {len(used)} photos ({', '.join(used)}) x {seeds} "
          f"seeds, {n_frames} frames each):")
    for kind in ("in-plane", "out-of-plane"):
        print(f"  {kind:13s} " + "  ".join(f"{m}: {np.mean(rows[(kind, m)]):.4f}" for m in modes))
    print("still frame x30, max landmark change between frames (px): "
          + "  ".join(f"{m}: {max(jitter[m]):.4g}" for m in modes))


def declared_frame_count(path: Path) -> int:
    """Frame count the container declares (0 when unknown)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    finally:
        cap.release()


def decoded_frames(path: Path) -> list:
    with open_video(path) as src:
        return [f.image for f in src]


def mot_report(aligner: FaceAligner, obama: list, min_face: float, save: Path | None) -> None:
    from tddfa.io.video import ArraySource
    from tddfa.video.mot import build_benchmark_clip, mot_metrics

    t0 = time.perf_counter()
    clip = build_benchmark_clip(aligner, SHARED / "samples", obama_frames=obama[:50])
    print(f"MOT clip: {len(clip)} frames, {len(clip.names)} shots ({'; '.join(clip.names)}), "
          f"built in {time.perf_counter() - t0:.1f} s; min face {min_face:g} px")
    if save is not None:
        writer = VideoWriter(save, 25.0, (clip.frames[0].shape[1], clip.frames[0].shape[0]))
    configs = [
        ("validate+cuts (default)", dict()),
        ("no validation", dict(validate=False)),
        ("no cut detection", dict(cut_threshold=0)),
        ("neither (previous tracker)", dict(validate=False, cut_threshold=0, min_face_size=16.0)),
    ]
    keys = ("id_switches", "ids_across_cuts", "fragmentations", "false", "false_rate", "missed",
            "missed_profile", "missed_frontal", "below_min", "ids", "true_ids", "outputs",
            "required")
    for name, kw in configs:
        va = VideoAligner(aligner, **({"min_face_size": min_face} | kw))
        t0 = time.perf_counter()
        res = list(va.track(ArraySource(clip.frames, fps=25.0), keep_images=False))
        dt = time.perf_counter() - t0
        outs = [[(f.track_id, f.box) for f in r.faces] for r in res]
        m = mot_metrics(outs, clip, min_face)
        cuts = [r.index for r in res if r.cut]
        print(f"  {name:27s} " + "  ".join(
            f"{k} {m[k]:.4f}" if isinstance(m[k], float) else f"{k} {m[k]}" for k in keys)
            + f"  cuts at {cuts}  {len(res) / dt:.1f} frames/s")
        if save is not None and not kw:
            from tddfa.video.overlay import draw_overlay

            mm = aligner.morphable_model
            for fr, r in zip(clip.frames, res, strict=True):
                writer.write(draw_overlay("sparse", fr.copy(), r.faces, mm.tri, mm), [])
    if save is not None:
        writer.close()
        print(f"  overlay of the default tracker: {save}")


def mediapipe_report(aligner: FaceAligner, frames: list, passes: int) -> None:
    try:
        import mediapipe as mp
    except ImportError:
        print("MediaPipe comparison skipped: mediapipe is not importable with this interpreter "
              "(pip install mediapipe==0.10.14 in a separate venv and run this script with it)")
        return
    import cv2

    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]

    # ONNX Runtime on every core, idle threads sleeping (as VideoAligner advises for an aligner
    # with more than one thread: its sessions run side by side)
    every_core = FaceAligner(spin="off")

    def tddfa_pass(al: FaceAligner, **kw) -> tuple[float, float]:
        # sparse, validation and cut detection on, no smoothing
        va = VideoAligner(al, **kw)
        t0, c0 = time.perf_counter(), time.process_time()
        for i, f in enumerate(frames):
            va.process(f, i * 40.0)
        out = (len(frames) / (time.perf_counter() - t0),
               1000 * (time.process_time() - c0) / len(frames))
        va.close()
        return out

    def mp_pass(max_faces: int = 1) -> tuple[float, float]:
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=False,
                                             max_num_faces=max_faces) as fm:
            t0, c0 = time.perf_counter(), time.process_time()
            found = 0
            for f in rgb:
                found += fm.process(f).multi_face_landmarks is not None
            out = (len(rgb) / (time.perf_counter() - t0),
                   1000 * (time.process_time() - c0) / len(rgb))
        if found < len(rgb):
            print(f"  (MediaPipe found a face in {found}/{len(rgb)} frames)")
        return out

    tddfa_pass(aligner), tddfa_pass(every_core), mp_pass()  # warm-up
    ours, one, cores, theirs, theirs_multi = [], [], [], [], []
    for _ in range(passes):  # interleaved, so all see the same machine load
        ours.append(tddfa_pass(aligner))
        one.append(tddfa_pass(aligner, max_faces=1))
        cores.append(tddfa_pass(every_core))
        theirs.append(mp_pass())
        theirs_multi.append(mp_pass(4))
    print(f"speed on {len(frames)} decoded frames, best of {passes} (mediapipe {mp.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}):")
    best_t, cpu_t = max(x[0] for x in theirs), min(x[1] for x in theirs)
    best_m = max(x[0] for x in theirs_multi)
    for name, res in (("tddfa sparse tracking + validation", ours),
                      ("  the same, max_faces=1 (as MediaPipe)", one),
                      ("  the same, ORT on every core", cores),
                      ("MediaPipe FaceMesh, max_num_faces=1", theirs),
                      ("MediaPipe FaceMesh, max_num_faces=4", theirs_multi)):
        best, cpu = max(x[0] for x in res), min(x[1] for x in res)
        ratio = "" if res is theirs or res is theirs_multi else (
            f"; ratio {best / best_t:.2f}x frames/s, {cpu_t / cpu:.2f}x CPU time")
        if res is ours:  # both keep looking for more faces
            ratio += f"; {best / best_m:.2f}x MediaPipe's max_num_faces=4"
        print(f"  {name:36s} {best:6.1f} frames/s (all: {', '.join(f'{x[0]:.1f}' for x in res)}),"
              f" CPU {cpu:.2f} ms/frame{ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(SHARED / "samples" / "obama.mp4"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", nargs="*", help="scenario names to run (default: all)")
    ap.add_argument("--stability", action="store_true", help="also print the stability figures")
    ap.add_argument("--mot", action="store_true", help="print the multi-shot identity figures")
    ap.add_argument("--min-face", type=float, default=24.0, help="--mot: minimum face size (24)")
    ap.add_argument("--save-mot", help="--mot: write the default tracker's overlay to this .mp4")
    ap.add_argument("--mediapipe", action="store_true",
                    help="speed side by side with MediaPipe FaceMesh (decoded frames)")
    ap.add_argument("--passes", type=int, default=3, help="--mediapipe: passes, best taken (3)")
    ap.add_argument("--dump-frames", metavar="F.npy",
                    help="decode the video, save its frames to this .npy and exit")
    ap.add_argument("--frames", metavar="F.npy",
                    help="--mediapipe: use these decoded frames (from --dump-frames)")
    args = ap.parse_args()
    path = Path(args.video)
    aligner = FaceAligner(threads=1)  # as VideoAligner's default
    scenarios = [
        ("sparse", dict(smoothing=None), None),
        ("sparse+centered", dict(smoothing=SmoothingConfig(mode="centered")), None),
        ("sparse overlay video", dict(smoothing=SmoothingConfig(mode="centered")), "sparse"),
        ("mesh overlay video", dict(smoothing=SmoothingConfig(mode="centered")), "mesh"),
    ]
    print(f"video: {path.name}, runs: {args.runs}, cpu count: {os.cpu_count()}, "
          f"load average: {os.getloadavg()[0]:.2f}")
    only = args.only  # `--only` with no names: no speed scenarios
    if args.dump_frames:
        frames = np.stack(decoded_frames(path))
        np.save(args.dump_frames, frames)
        print(f"wrote {len(frames)} decoded frames to {args.dump_frames}")
        return
    if args.mediapipe:
        frames = list(np.load(args.frames)) if args.frames else decoded_frames(path)
        declared = declared_frame_count(path)
        if declared and len(frames) < declared:
            print(f"note: {len(frames)} of the {declared} frames the file declares were decoded "
                  "(older OpenCV builds apply the MP4 edit list); decode with the project's "
                  "environment: --dump-frames F there, then --frames F here")
        mediapipe_report(aligner, frames, args.passes)
    if args.mot:
        mot_report(aligner, decoded_frames(SHARED / "samples" / "obama.mp4"), args.min_face,
                   Path(args.save_mot) if args.save_mot else None)
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw, overlay in scenarios:
            if only is not None and name not in only:
                continue
            va = VideoAligner(aligner, **kw)
            run_once(va, path, overlay, Path(tmp))  # warm-up (JIT, caches)
            fps = []
            for _ in range(args.runs):
                n, dt = run_once(va, path, overlay, Path(tmp))
                fps.append(n / dt)
            print(f"{name:22s} frames {n:4d}  median {statistics.median(fps):7.1f} frames/s  "
                  f"(min {min(fps):.1f}, max {max(fps):.1f})")
    if args.stability:
        stability_report(aligner)


if __name__ == "__main__":
    main()
