"""``tddfa video``: track faces in a file or a live camera, write an overlay video and JSON Lines."""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tddfa.errors import InputError

# The tracker, renderers and video I/O are imported in run(): importing them costs about a second
# of CPU (Numba, OpenCV), which every other command (and `tddfa --help`) would pay otherwise.
# Keep in step with tddfa.video.overlay.OVERLAYS (checked by the tests).
OVERLAY_CHOICES = ("sparse", "mesh", "dense", "pose", "none")

if TYPE_CHECKING:
    pass


log = logging.getLogger(__name__)

# Command line: tddfa video
# =============================================================================================


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``video`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "video", help="track faces in a video file or a live camera",
        description="Track and align faces in a video file or camera stream; write an overlay "
                    "video and/or per-frame JSON Lines.",
    )
    p.add_argument("input", nargs="?", help="video file (anything FFmpeg reads)")
    p.add_argument("--camera", type=int, metavar="N", help="read the live camera N instead of a file")
    p.add_argument("-o", "--output", help="overlay video to write (.mp4, .avi, .mkv)")
    p.add_argument("--jsonl", help="per-frame JSON Lines to write")
    p.add_argument("--overlay", choices=OVERLAY_CHOICES, default="sparse",
                   help="overlay drawn in -o (sparse)")
    p.add_argument("--model", default="mb05", help="regressor (mb05; also mb1, v1-wpdc-vdc, cascade)")
    p.add_argument("--checkpoint", help="regressor checkpoint or .onnx to use instead")
    p.add_argument("--score-threshold", type=float, default=0.5, help="detector threshold (0.5)")
    p.add_argument("--redetect-every", type=int, default=30, metavar="N",
                   help="run the detector every N frames to find new faces; 0 = only when lost (30)")
    p.add_argument("--max-faces", type=int, help="track at most this many faces")
    p.add_argument("--min-face", type=float, default=24.0, metavar="PX",
                   help="minimum face size, sqrt(w*h) of the landmark box in pixels: smaller faces "
                        "are not tracked (listed as skipped in the JSONL) (24)")
    p.add_argument("--cut-threshold", type=float, default=0.35,
                   help="scene-cut threshold: Bhattacharyya distance of HSV histograms of "
                        "consecutive frames; a cut ends every track; 0 disables (0.35)")
    p.add_argument("--no-validate", action="store_true",
                   help="do not check each track with the detector (every 3rd frame)")
    p.add_argument("--smooth", choices=("auto", "none", "causal", "centered"), default="auto",
                   help="smoothing: causal One-Euro, centred Gaussian window, or none; auto = "
                        "centred for files, causal for cameras")
    p.add_argument("--smooth-target", choices=("params", "landmarks"), default="params",
                   help="filter the 62 parameters in the image frame (landmarks, pose and mesh "
                        "stay consistent) or the landmarks only (params)")
    p.add_argument("--min-cutoff", type=float, default=1.0, help="One-Euro cut-off at rest, Hz (1.0)")
    p.add_argument("--beta", type=float, default=0.05, help="One-Euro speed coefficient, s/px (0.05)")
    p.add_argument("--window", type=int, default=7, help="centred window, frames, odd (7)")
    p.add_argument("--sigma", type=float, help="centred Gaussian sigma, frames (window/4)")
    p.add_argument("--backend", choices=("auto", "opencv", "pyav"), default="auto",
                   help="file decoder (auto: OpenCV, PyAV if OpenCV fails)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (1)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse videos whose frames exceed N pixels (width x height, from the "
                        "container; default 178956970, 0 = no limit)")
    p.set_defaults(func=run)
    return p


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse unusable output paths before any work: a folder, a path under a regular file, the
    input itself, or -o and --jsonl naming the same file. Missing folders are created."""
    from tddfa.io.atomic import prepare_output

    outs = [Path(p) for p in (args.output, args.jsonl) if p]
    for p in outs:
        prepare_output(p)
        if args.input is not None and p.resolve() == Path(args.input).resolve():
            raise InputError(f"{p}: is the input video; choose another output name")
    if len(outs) == 2 and outs[0].resolve() == outs[1].resolve():
        raise InputError(f"-o and --jsonl both name {outs[0]}")


@contextlib.contextmanager
def _sigterm_as_exit():
    """While active, SIGTERM raises SystemExit(143) in the main thread, so partial outputs are
    removed by the writers' abort() instead of being left behind."""
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        print("tddfa video: terminated (SIGTERM); partial outputs removed", file=sys.stderr)
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(args: argparse.Namespace) -> int:
    """Run ``tddfa video``; returns 0 on success. Bad inputs raise :class:`TddfaError` subclasses
    with a one-line message (``tddfa.cli.main`` prints it and exits with 1)."""
    from tddfa.io.video import VideoWriter, open_camera, open_video
    from tddfa.video.overlay import draw_overlay
    from tddfa.video.records import JsonlWriter
    from tddfa.video.smoothing import SmoothingConfig
    from tddfa.video.tracker import VideoAligner

    if (args.input is None) == (args.camera is None):
        raise InputError("give either a video file or --camera N (exactly one)")
    live = args.camera is not None
    mode = args.smooth if args.smooth != "auto" else ("causal" if live else "centered")
    smoothing = SmoothingConfig(mode=mode, target=args.smooth_target, min_cutoff=args.min_cutoff,
                                beta=args.beta, window=args.window, sigma=args.sigma)
    _check_outputs(args)
    src = (open_camera(args.camera) if live else
           open_video(args.input, backend=args.backend, max_pixels=getattr(args, "max_pixels", None)))
    with src, _sigterm_as_exit():
        va = VideoAligner(model=args.model, checkpoint=args.checkpoint,
                          score_threshold=args.score_threshold, redetect_every=args.redetect_every,
                          max_faces=args.max_faces, smoothing=smoothing, threads=args.threads,
                          min_face_size=args.min_face, cut_threshold=args.cut_threshold,
                          validate=not args.no_validate)
        if args.output is None and args.jsonl is None:
            log.warning("no -o/--output or --jsonl given: results are computed but not saved")
        writer = jsonl = None
        ok = False
        n = 0
        ids: set[int] = set()
        cuts = 0
        t0 = time.perf_counter()
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            total = src.frame_count
            if args.max_frames is not None:
                total = min(total or args.max_frames, args.max_frames)
            bar = tqdm(total=total, unit="frame", desc=Path(src.name).name, dynamic_ncols=True)
        try:
            if args.output:
                mm = va.aligner.morphable_model
                kind = args.overlay
                writer = VideoWriter(args.output, src.fps, (src.width, src.height),
                                     render=lambda im, faces: draw_overlay(kind, im, faces, mm.tri, mm))
            jsonl = JsonlWriter(args.jsonl) if args.jsonl else None
            for res in va.track(src, keep_images=writer is not None):
                if writer is not None:
                    writer.write(res.image, res.faces)
                if jsonl is not None:
                    jsonl.write(res)
                ids.update(f.track_id for f in res.faces)
                cuts += res.cut
                n += 1
                if bar is not None:
                    bar.update(1)
                if args.max_frames is not None and n >= args.max_frames:
                    break
            ok = True
        except KeyboardInterrupt:
            ok = live  # stopping a camera with Ctrl-C is the normal way out
            if not ok:
                raise
        finally:
            va.close()  # its worker threads (detector checks and searches)
            if bar is not None:
                bar.close()
            for w in (writer, jsonl):
                if w is None:
                    continue
                if ok:
                    w.close()
                else:
                    w.abort()
        dt = time.perf_counter() - t0
        log.info("%s: %d frames in %.2f s (%.1f frames/s), %d scene cut(s), %d face id(s), "
                 "%d frame(s) skipped", src.name, n, dt, n / dt if dt > 0 else float("nan"), cuts,
                 len(ids), len(src.skipped))
        if src.skipped:
            log.warning("%s: unreadable frames skipped: %s", src.name, src.skipped[:20])
        if n == 0:
            raise InputError(f"{src.name}: no frame could be read")
    return 0
