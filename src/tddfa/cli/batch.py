"""Batch options of ``tddfa align`` (``--workers``, ``--format``, ``--resume``, ``--engine``) and
the hand-off to :mod:`tddfa.batch`."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["add_batch_arguments", "wants_batch", "run_batch", "expand_lists"]


def add_batch_arguments(p) -> None:
    s = p.add_argument_group("runtime")
    s.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "openvino", "auto"],
                   help="inference backend; auto = the faster measured one per network "
                        "(today ONNX Runtime for both: benchmarks/bench_backends.py)")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cuda uses ONNX Runtime's CUDA provider (pip install onnxruntime-gpu)")
    g = p.add_argument_group("batch (folders and lists of images)")
    g.add_argument("--workers", type=int, default=0, metavar="N",
                   help="align in N worker processes (images decoded ahead in threads); "
                        "0 = the simple one-image-at-a-time loop")
    g.add_argument("--format", default="json", choices=["json", "jsonl", "parquet"],
                   help="records: json = OUTDIR/<name>.json per image (default); jsonl = "
                        "OUTDIR/results.jsonl; parquet = OUTDIR/results/*.parquet (tddfa[parquet])")
    g.add_argument("--resume", action="store_true",
                   help="skip inputs whose record is already in OUTDIR (each input once)")
    g.add_argument("--unordered", action="store_true",
                   help="write records as they finish instead of in input order")
    g.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local processes (default) or a Ray cluster (tddfa[ray])")
    g.add_argument("--address", help="Ray cluster address (default: start a local Ray)")


def wants_batch(args) -> bool:
    """Whether the batch engine (rather than the simple loop) handles this run."""
    return bool(args.workers or args.format != "json" or args.resume or args.engine != "local")



def run_batch(args, items: list[tuple[Path, Path]]) -> int:
    from tddfa.batch.work import AlignOptions

    options = AlignOptions(
        out=str(args.output), model=args.model, checkpoint=args.checkpoint,
        threshold=args.threshold, refine=args.refine, dense=args.dense,
        render=tuple(args.render), export=tuple(args.export), frame=args.frame,
        overlay=not args.no_overlay, threads=args.threads, backend=args.backend,
        device=args.device, max_pixels=getattr(args, "max_pixels", None),
        max_dense_faces=getattr(args, "max_dense_faces", 32),
        min_face=getattr(args, "min_face", 0.0),
    )
    if args.engine == "ray":
        from tddfa.batch.ray_engine import run_ray

        summary = run_ray(items, options, fmt=args.format, address=args.address,
                          workers=max(args.workers, 1), resume=args.resume)
    else:
        from tddfa.batch.local import run_local

        threads = args.threads if args.threads or args.workers < 2 else 1
        if threads != args.threads:
            from dataclasses import replace

            options = replace(options, threads=threads)  # one ORT thread per worker process
        summary = run_local(items, options, fmt=args.format, workers=args.workers,
                            ordered=not args.unordered, resume=args.resume)
    rate = summary.images_per_second
    print(f"tddfa align: {summary.processed} processed, {summary.skipped} already done, "
          f"{summary.failed} failed of {summary.total} input(s) in {summary.seconds:.1f} s "
          f"({rate:.1f} img/s); results in {args.output}/", file=sys.stderr)
    if summary.failed:
        print(f"tddfa align: failures listed in {Path(args.output) / 'failures.jsonl'}",
              file=sys.stderr)
    return 1 if summary.failed else 0


LIST_SUFFIXES = (".txt", ".lst")


def expand_lists(inputs: list[str]) -> list[str]:
    """Replace each list file (``.txt`` / ``.lst``: one image path per line, ``#`` comments,
    relative paths from the list's folder) by the paths it names."""
    out: list[str] = []
    for name in inputs:
        p = Path(name)
        if p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    out.append(str(q if q.is_absolute() else p.parent / q))
        else:
            out.append(name)
    return out
