"""``tddfa eval``: the benchmark protocols from the command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tddfa.errors import InputError
from tddfa.evaluation.aflw import eval_aflw21
from tddfa.evaluation.aflw2000 import PiecesAligner, eval_aflw2000_crop, eval_aflw2000_detector
from tddfa.evaluation.ibug300w import eval_300w
from tddfa.evaluation.report import EvalResult, format_table, machine_info, write_json

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# CLI


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tddfa eval`` with sub-commands ``aflw2000``, ``300w``, ``aflw``, ``card``."""
    p = subparsers.add_parser("eval", help="benchmark protocols (AFLW2000-3D, 300W, AFLW) and the model card",
                              description="Evaluate a model on the standard benchmarks.")
    sub = p.add_subparsers(dest="eval_command", metavar="{aflw2000,300w,aflw,card}")
    sub.required = True

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data", required=True, help="benchmark folder")
        sp.add_argument("--model", default="mb05",
                        help="regressor name (default mb05; `cascade` = the 3DDFA V1 cascade)")
        sp.add_argument("--checkpoint", default=None, help="weights to use instead of the registered ones")
        sp.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
        sp.add_argument("--plot", action="store_true",
                        help="write PNG figures (CED per yaw bucket, NME vs yaw, pose-error histograms)")
        sp.add_argument("--plot-dir", default=None, metavar="DIR",
                        help="folder for the figures (default: beside --json, else ./eval-plots)")
        sp.add_argument("--batch-size", type=int, default=64)
        sp.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
        sp.add_argument("--limit", type=int, default=None, help="only the first N faces (quick check)")

    a = sub.add_parser("aflw2000", help="AFLW2000-3D: NME by yaw bucket (crop / detector protocol), pose MAE")
    common(a)
    a.add_argument("--protocol", choices=["crop", "detector", "both"], default="crop")
    a.add_argument("--gt", choices=["original", "reannotated"], default="original",
                   help="68-point ground truth (default: original)")
    a.add_argument("--3d", dest="dims3", action="store_true", help="3-D NME (x, y, z)")
    a.add_argument("--min-iou", type=float, default=0.1, help="detector protocol: matching IoU")
    a.add_argument("--min-face", type=float, default=0.0, metavar="PX",
                   help="detector protocol: the aligner's min_face_size (0 = no limit)")
    a.add_argument("--no-pose", action="store_true", help="skip the head-pose MAE")

    w = sub.add_parser("300w", help="300W crops: 2-D NME (inter-ocular and box)")
    common(w)
    w.add_argument("--split", default="helen_test")
    w.add_argument("--roi", choices=["landmarks", "detector"], default="landmarks")

    f = sub.add_parser("aflw", help="AFLW 21-point protocol (needs the AFLW crops)")
    common(f)
    f.add_argument("--gt", dest="gt_dir", default=None, help="folder with AFLW_GT_*.npy")
    f.add_argument("--norm", choices=["auto", "pts68", "pts21", "roi"], default="auto")

    c = sub.add_parser("card", help="generate docs/model-card.md from result JSON files")
    c.add_argument("--results", required=True, help="folder of result JSON files")
    c.add_argument("--out", default="docs/model-card.md")
    return p


def _make_regressor(args: argparse.Namespace):
    if args.model == "cascade":  # the 3DDFA V1 cascade (per-stage figures in the result)
        from tddfa.v1.cascade import CascadeRegressor

        return CascadeRegressor(args.checkpoint, threads=args.threads)
    from tddfa.models.regressor import Regressor

    return Regressor(model=args.model, checkpoint=args.checkpoint, threads=args.threads)


def _make_aligner(args: argparse.Namespace):
    try:
        from tddfa.pipeline.aligner import FaceAligner
    except ImportError:
        from tddfa.detection.faceboxes import FaceBoxesDetector

        log.info("tddfa.pipeline not available; using FaceBoxesDetector + Regressor directly")
        return PiecesAligner(FaceBoxesDetector(threads=args.threads), _make_regressor(args))
    return FaceAligner(model=args.model, checkpoint=args.checkpoint, threads=args.threads,
                       min_face_size=getattr(args, "min_face", 0.0))


def _plot_dir(args: argparse.Namespace) -> Path | None:
    if not args.plot and not args.plot_dir:
        return None
    if args.plot_dir:
        return Path(args.plot_dir)
    return Path(args.json).parent if args.json else Path("eval-plots")


def _emit(results: list[EvalResult], args: argparse.Namespace, stem: str) -> None:
    for r in results:
        print(format_table(r.summary))
    if args.json:
        if len(results) == 1:
            write_json(results[0], args.json)
        else:
            base = Path(args.json)
            for r in results:
                write_json(r, base.with_name(f"{base.stem}-{r.summary['protocol']}{base.suffix}"))
    pd = _plot_dir(args)
    if pd is not None:
        from tddfa.evaluation.plots import plot_result

        for r in results:
            proto = r.summary["protocol"]
            for p in plot_result(r, pd, stem=stem if proto == stem else f"{stem}-{proto}"):
                print(f"  plot: {p}")


def run(args: argparse.Namespace) -> int:
    """Execute ``tddfa eval ...``; returns the exit status."""
    cmd = args.eval_command
    if cmd == "card":
        from tddfa.evaluation.model_card import write_model_card

        out = write_model_card(args.results, args.out)
        print(f"wrote {out}")
        return 0
    if cmd == "aflw2000":
        dims = 3 if args.dims3 else 2
        results = []
        if args.protocol in ("crop", "both"):
            results.append(eval_aflw2000_crop(
                _make_regressor(args), args.data, gt=args.gt, dims=dims,
                batch_size=args.batch_size, model=args.model, pose=not args.no_pose,
                limit=args.limit))
        if args.protocol in ("detector", "both"):
            results.append(eval_aflw2000_detector(
                _make_aligner(args), args.data, gt=args.gt, dims=dims, min_iou=args.min_iou,
                model=args.model, pose=not args.no_pose, limit=args.limit))
        for r in results:
            r.summary["command"] = _command_line(args)
            r.summary["machine"] = machine_info()
        _emit(results, args, "aflw2000")
        return 0
    if cmd == "300w":
        if args.roi == "detector":
            r = eval_300w(None, args.data, split=args.split, roi="detector",
                          aligner=_make_aligner(args), model=args.model)
        else:
            r = eval_300w(_make_regressor(args), args.data, split=args.split, roi="landmarks",
                          batch_size=args.batch_size, model=args.model)
        r.summary["command"] = _command_line(args)
        r.summary["machine"] = machine_info()
        _emit([r], args, "300w")
        return 0
    if cmd == "aflw":
        r = eval_aflw21(_make_regressor(args), args.data, gt_dir=args.gt_dir, norm=args.norm,
                        batch_size=args.batch_size, model=args.model, limit=args.limit)
        r.summary["command"] = _command_line(args)
        r.summary["machine"] = machine_info()
        _emit([r], args, "aflw")
        return 0
    raise InputError(f"unknown eval command {cmd!r}")  # pragma: no cover


def _command_line(args: argparse.Namespace) -> str:
    import shlex
    import sys

    argv = sys.argv[1:]
    if argv and argv[0] in ("eval", "bench") and argv[0] == getattr(args, "command", argv[0]):
        return "tddfa " + " ".join(shlex.quote(a) for a in argv)
    keys = {k: v for k, v in vars(args).items() if v not in (None, False) and k != "func"}
    return "tddfa eval " + " ".join(f"{k}={v}" for k, v in keys.items())
