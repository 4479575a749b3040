"""``tddfa bench``: latency of each pipeline stage on one image, on this machine.

Stages (each timed ``repeat`` times after ``warmup`` untimed runs; the median is reported in
milliseconds, with the 10th and 90th percentiles):

* ``decode`` — read and decode the image file (:func:`tddfa.image_io.read_image`);
* ``detect`` — FaceBoxes on the decoded image;
* ``crop`` — the 120×120 crops of the detected faces (roi from each box);
* ``regress_b1`` / ``regress_b8`` — the regressor on 1 crop and on a batch of 8 crops (the
  per-face cost of the batch is reported as ``regress_b8_per_face``);
* ``reconstruct_sparse`` / ``reconstruct_dense`` — 68 landmarks / the 38,365-vertex mesh of
  one face, mapped to image pixels;
* ``render_<kind>`` — :func:`tddfa.render.render` (default kind ``mesh``) of all detected
  faces' dense meshes when that module is present, otherwise skipped with a note.

Timings on a shared machine are noisy: read the medians, not single runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tddfa.errors import InputError, TddfaError

__all__ = ["time_stage", "run_bench", "add_parser", "run"]

log = logging.getLogger(__name__)


def time_stage(fn: Callable[[], Any], repeat: int = 20, warmup: int = 2) -> dict[str, float]:
    """Time ``fn()``: ``{"median", "p10", "p90", "min"}`` milliseconds and ``"n"`` runs."""
    if repeat < 1:
        raise InputError(f"repeat must be >= 1, got {repeat}")
    for _ in range(max(warmup, 0)):
        fn()
    t = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        t[i] = (time.perf_counter() - t0) * 1000.0
    return {"median": float(np.median(t)), "p10": float(np.percentile(t, 10)),
            "p90": float(np.percentile(t, 90)), "min": float(t.min()), "n": int(repeat)}


def _thread_info(threads: int) -> dict[str, Any]:
    from tddfa.face._dense_kernel import dense_threads
    from tddfa.models.runtime import resolve_spin

    ort = threads if threads > 0 else "default (one per physical core)"
    info: dict[str, Any] = {"onnxruntime_intra_op": ort, "onnxruntime_spin": resolve_spin(),
                            "dense_threads": dense_threads(), "cpu_count": os.cpu_count()}
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not on every OS
        pass
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        if os.environ.get(var):
            info[var] = os.environ[var]
    try:
        import numba

        info["numba"] = int(numba.get_num_threads())
    except ImportError:  # pragma: no cover
        pass
    return info


def _render_fn(image: np.ndarray, faces: list, triangles: np.ndarray | None,
               kind: str = "mesh") -> tuple[Callable | None, str]:
    from tddfa.render.registry import render

    if triangles is None:
        return None, "no dense mesh is available: render stage skipped"
    return (lambda: render(kind, image, faces, triangles)), ""


def run_bench(
    image: str | Path,
    *,
    aligner: Any = None,
    model: str = "mb05",
    threads: int = 0,
    repeat: int = 20,
    warmup: int = 2,
    dense: bool = True,
    render: bool = True,
    render_kind: str = "mesh",
) -> dict[str, Any]:
    """Time every stage on ``image`` and return a JSON-ready dict.

    Args:
        image: path of the image to time (decoding is one of the stages).
        aligner: a :class:`tddfa.pipeline.FaceAligner` (built from ``model``/``threads`` if None).
        repeat, warmup: timed and untimed runs per stage.
        dense, render: include the dense reconstruction / render stages.
        render_kind: the :func:`tddfa.render.render` kind timed (default ``"mesh"``).

    Returns:
        ``{"protocol": "bench", "image", "width", "height", "faces", "model", "threads",
        "repeat", "stages_ms": {stage: median}, "stages": {stage: time_stage(...)},
        "notes": [...], "machine": {...}}``.
    """
    from tddfa.evaluation.report import machine_info
    from tddfa.face.crop import crop_batch, roi_from_box
    from tddfa.face.morphable_model import to_image_frame
    from tddfa.io.images import read_image

    path = Path(image)
    if aligner is None:
        from tddfa.pipeline.aligner import FaceAligner

        aligner = FaceAligner(model=model, threads=threads)
    notes: list[str] = []
    img = read_image(path)
    stages: dict[str, dict[str, float]] = {}
    stages["decode"] = time_stage(lambda: read_image(path), repeat, warmup)
    dets = np.asarray(aligner.detect(img), np.float32).reshape(-1, 5)
    stages["detect"] = time_stage(lambda: aligner.detect(img), repeat, warmup)
    if len(dets) == 0:
        h, w = img.shape[:2]
        s = min(h, w) / 2
        dets = np.array([[w / 2 - s / 2, h / 2 - s / 2, w / 2 + s / 2, h / 2 + s / 2, 1.0]], np.float32)
        notes.append("no face detected: later stages use a centred box")
    rois = np.stack([roi_from_box(d) for d in dets])
    stages["crop"] = time_stage(lambda: crop_batch(img, rois), repeat, warmup)
    crops = crop_batch(img, rois)
    reg = aligner.regressor if hasattr(aligner, "regressor") else aligner.predictor
    one = crops[:1]
    eight = np.ascontiguousarray(np.resize(crops, (8,) + crops.shape[1:]))
    stages["regress_b1"] = time_stage(lambda: reg.predict(one), repeat, warmup)
    stages["regress_b8"] = time_stage(lambda: reg.predict(eight), repeat, warmup)
    per_face = {k: v / 8.0 if k != "n" else v for k, v in stages["regress_b8"].items()}
    stages["regress_b8_per_face"] = per_face
    if hasattr(reg, "run_stage"):  # the 3DDFA V1 cascade: each stage on its own
        stages["cascade_stage0_b1"] = time_stage(lambda: reg.stage0(one), repeat, warmup)
        p0 = reg.stage0(one)
        for k in range(1, reg.n_stages + 1):
            stages[f"cascade_stage{k}_b1"] = time_stage(
                lambda k=k: reg.run_stage(k, one, p0), repeat, warmup)
            st8 = time_stage(lambda k=k: reg.run_stage(k, eight, np.repeat(p0, 8, 0)), repeat, warmup)
            stages[f"cascade_stage{k}_b8_per_face"] = {
                key: v / 8.0 if key != "n" else v for key, v in st8.items()}
    params = reg.predict(one)
    roi1 = rois[:1]
    mm = aligner.morphable_model
    stages["reconstruct_sparse"] = time_stage(
        lambda: to_image_frame(mm.reconstruct(params, dense=False), roi1), repeat, warmup)
    triangles = None
    faces: list = []
    if dense and mm.has_dense:
        stages["reconstruct_dense"] = time_stage(
            lambda: to_image_frame(mm.reconstruct(params, dense=True), roi1), repeat, warmup)
        triangles = mm.tri
        if mm.source != "official":
            notes.append(f"dense model: {mm.source} ({mm.notes})")
    elif dense:
        notes.append("no dense morphable model available: reconstruct_dense and render skipped")
    if render and triangles is not None:
        faces = aligner.align_rois(img, rois, dense=True, boxes=dets)
        fn, note = _render_fn(img, faces, triangles, render_kind)
        if fn is None:
            notes.append(note)
        else:
            try:
                stages[f"render_{render_kind}"] = time_stage(fn, repeat, warmup)
            except TddfaError as exc:
                notes.append(f"render stage failed: {exc}")
    describe = aligner.describe() if hasattr(aligner, "describe") else {"name": model}
    return {
        "protocol": "bench",
        "image": str(path),
        "width": int(img.shape[1]),
        "height": int(img.shape[0]),
        "faces": int(len(dets)),
        "model": describe,
        "threads": threads,
        "thread_info": _thread_info(threads),
        "repeat": int(repeat),
        "warmup": int(warmup),
        "stages_ms": {k: round(v["median"], 4) for k, v in stages.items()},
        "stages": stages,
        "notes": notes,
        "machine": machine_info(),
    }


def format_bench(result: dict[str, Any]) -> str:
    """Human-readable table of a :func:`run_bench` result."""
    lines = [f"tddfa bench: {result['image']} ({result['width']}x{result['height']}, "
             f"{result['faces']} face(s)), model {result['model'].get('name')}, "
             f"threads {result['thread_info']['onnxruntime_intra_op']} "
             f"(spin {result['thread_info'].get('onnxruntime_spin', '?')}, dense pass on "
             f"{result['thread_info'].get('dense_threads', '?')}), "
             f"{result['repeat']} runs per stage",
             f"  machine: {result['machine']['processor']}, {result['machine']['cpu_count']} CPUs, "
             f"{result['machine']['platform']}",
             f"  {'stage':<22}{'median ms':>10}{'p10':>9}{'p90':>9}"]
    for k, v in result["stages"].items():
        lines.append(f"  {k:<22}{v['median']:>10.3f}{v['p10']:>9.3f}{v['p90']:>9.3f}")
    for n in result["notes"]:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tddfa bench``."""
    p = subparsers.add_parser("bench", help="per-stage latency medians on an image",
                              description="Time decode, detect, crop, regress (batch 1 and 8), "
                                          "reconstruct (sparse, dense) and render on one image.")
    p.add_argument("image", help="image file to time")
    p.add_argument("--model", default="mb05")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per stage (default 20)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-dense", action="store_true", help="skip dense reconstruction and render")
    p.add_argument("--render-kind", default="mesh", help="render kind to time (default mesh)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the timings as JSON")
    p.add_argument("--plot", action="store_true", help="write a bar chart PNG of the stage medians")
    p.add_argument("--plot-dir", default=None, metavar="DIR",
                   help="folder for the figure (default: beside --json, else ./eval-plots)")
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``tddfa bench``; returns the exit status."""
    from tddfa.evaluation.report import write_json

    res = run_bench(args.image, model=args.model, threads=args.threads, repeat=args.repeat,
                    warmup=args.warmup, dense=not args.no_dense, render=not args.no_dense,
                    render_kind=args.render_kind)
    from tddfa.cli.eval import _command_line

    res["command"] = _command_line(args)
    print(format_bench(res))
    if args.json:
        write_json(res, args.json)
    if args.plot or args.plot_dir:
        from tddfa.evaluation.plots import plot_result

        out = Path(args.plot_dir) if args.plot_dir else (Path(args.json).parent if args.json
                                                         else Path("eval-plots"))
        for p in plot_result(res, out, stem="bench"):
            print(f"  plot: {p}")
    return 0
