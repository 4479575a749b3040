"""Command-line entry points: ``tddfa train`` and ``tddfa data fit|profile``.

Wire-up (in :mod:`tddfa.cli`)::

    from tddfa.cli.train import add_parser, run, add_data_parser, run_data
    add_parser(subparsers)        # sets args.func = run
    add_data_parser(subparsers)   # sets args.func = run_data

This module imports neither PyTorch nor PyYAML at import time, so the main CLI stays light.
It also runs standalone, e.g. under torchrun:
``torchrun --nproc_per_node 2 -m tddfa.training.cli train --config configs/train_tiny.yaml``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["add_parser", "run", "add_data_parser", "run_data", "main"]

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train", help="train or fine-tune the regressor from a YAML config (needs tddfa[train])",
        description="Train the MobileNet-V1 regressor. Resumes from OUT_DIR/last.pth when present. "
                    "Writes log.csv, val.csv, last.pth, best.pth, model.pth (official layout, "
                    "loads with FaceAligner(checkpoint=...)) and model.onnx.")
    p.add_argument("--config", help="YAML config file (see configs/); required unless a "
                                      "subcommand is given")
    p.add_argument("--out-dir", help="override out_dir of the config")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--init", help="override model.init: mb05, scratch or a checkpoint path")
    p.add_argument("--lr", type=float, help="override optim.lr")
    p.add_argument("--batch-size", type=int, help="override train.batch_size")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.freeze_bn=false (repeatable; "
                        "the value is read as YAML)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing last.pth")
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="train_cmd", metavar="{ablation}")
    a = sub.add_parser("ablation", help="run the losses/regulariser/augmentation ablation grid",
                       description="Runs every row x seed of an ablation config (same start, same "
                                   "budget), evaluates each run and writes the results JSON and "
                                   "plot named in the config. Finished runs are not redone.")
    a.add_argument("--config", required=True, help="ablation YAML (e.g. configs/ablation.yaml)")
    a.add_argument("--only", action="append", help="run only this row (repeatable)")
    a.add_argument("--json", action="store_true", help="print the results JSON")
    a.add_argument("--table-only", action="store_true",
                   help="print the Markdown table of the config's results JSON; train nothing")
    a.set_defaults(func=run_ablation_cmd)
    return p


def _is_cascade_config(path: str | None) -> bool:
    """Whether the YAML at ``path`` has a top-level ``cascade`` section (an unreadable file is
    left to :func:`~tddfa.train.config.load_config`, which reports it)."""
    if not path:
        return False
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and "cascade" in raw


def run_ablation_cmd(args: argparse.Namespace) -> int:
    """Run ``tddfa train ablation``; prints the table (or JSON); returns the exit code."""
    from tddfa.train.ablation import load_ablation, markdown_table, run_ablation

    if args.table_only:
        from pathlib import Path

        from tddfa.errors import InputError

        path = Path(load_ablation(args.config)["results"])
        if not path.is_file():
            raise InputError(f"no ablation results yet: {path}")
        print(markdown_table(json.loads(path.read_text())))
        return 0
    res = run_ablation(args.config, only=args.only)
    print(json.dumps(res, indent=1) if args.json else markdown_table(res))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``tddfa train``; returns the exit code."""
    from tddfa.errors import InputError
    from tddfa.train.trainer import load_config, train

    if not args.config:
        raise InputError("tddfa train needs --config FILE (or a subcommand: ablation)")
    over: dict = {}
    if args.out_dir:
        over["out_dir"] = args.out_dir
    if args.steps is not None:
        over.setdefault("train", {})["steps"] = args.steps
    if args.init:
        over.setdefault("model", {})["init"] = args.init
    if args.threads:
        over["threads"] = args.threads
    if args.lr is not None:
        over.setdefault("optim", {})["lr"] = args.lr
    if args.batch_size is not None:
        over.setdefault("train", {})["batch_size"] = args.batch_size
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise InputError(f"--set expects KEY=VALUE (e.g. optim.lr=1e-4), got {item!r}")
        import yaml

        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise InputError(f"--set {key}: cannot read the value {value!r} as YAML "
                             f"({getattr(exc, 'problem', None) or type(exc).__name__})") from exc
        node = over
        for k in parts[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise InputError(f"--set {key}: {k} is not a mapping of keys")
        node[parts[-1]] = parsed
    if _is_cascade_config(args.config):  # a 3DDFA V1 cascade config: its own defaults and schema
        from tddfa.v1.cascade_train import CASCADE_DEFAULTS, train_cascade

        cfg = load_config(args.config, over, defaults=CASCADE_DEFAULTS)
        summary = train_cascade(cfg, resume=not args.no_resume)
        if args.json:
            print(json.dumps(summary, indent=1, default=str))
        else:
            for row in summary["table"]:
                val = row.get("val_nme")
                print(f"stage {row['stage']}: train NME {row['train_nme']:.3f}%"
                      + (f", validation NME {val:.3f}%" if val is not None else ""))
            print("onnx: " + ", ".join(summary["onnx"]))
        return 0
    cfg = load_config(args.config, over)
    summary = train(cfg, resume=not args.no_resume)
    if summary.get("checkpoint"):
        if args.json:
            print(json.dumps(summary, indent=1, default=str))
        else:
            val = summary.get("val") or []
            last = f", validation NME {val[-1]['nme']:.3f}%" if val else ""
            print(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s: loss "
                  f"{summary['first_loss']:.4g} -> {summary['last_loss']:.4g}{last}; "
                  f"skipped samples: {summary['skipped']}"
                  + (f"; meta-joint choices {summary['meta_choices']}"
                     if summary.get("meta_choices") else "") + "\n"
                  f"checkpoint: {summary['checkpoint']}\nonnx: {summary.get('onnx', '-')}")
    return 0


def add_data_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``data`` subcommand with ``fit`` and ``profile``."""
    p = subparsers.add_parser("data", help="make training data: fit labels, profile faces")
    sub = p.add_subparsers(dest="data_cmd", required=True)
    f = sub.add_parser("fit", help="fit 62 parameters to the 68 landmarks of 300W crops",
                       description="Writes OUT (a manifest .npz: names, images, roi_boxes, params, "
                                   "landmarks, fit_nme) and prints the NME distribution.")
    f.add_argument("--root", required=True, help="the 300w-crops folder")
    f.add_argument("--split", action="append", required=True,
                   help="split name (repeatable), e.g. helen_train")
    f.add_argument("--out", required=True, help="output manifest (.npz)")
    f.add_argument("--march", type=int, default=0, metavar="ROUNDS",
                   help="rounds of landmark marching (300W-LP label style: the jaw landmarks "
                        "follow the visible contour); 0 = fixed correspondence")
    f.set_defaults(func=run_data)
    pr = sub.add_parser("profile", help="synthesise large-pose views (face profiling)",
                        description="Rotates every face of a manifest out of plane (3DDFA's "
                                    "300W-LP method), writing OUT_DIR/images, records.jsonl and "
                                    "manifest.npz. Resumable: re-run the same command.")
    pr.add_argument("--manifest", required=True, action="append",
                    help="input manifest(s) from `tddfa data fit` (repeatable)")
    pr.add_argument("--out-dir", required=True)
    pr.add_argument("--yaws", default="30,45,60,75,90", help="target |yaw| list, degrees")
    pr.add_argument("--pitch", type=float, default=10.0, help="random pitch change range, degrees")
    pr.add_argument("--limit", type=int, help="only the first N faces")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--no-original", action="store_true", help="do not include the source view")
    pr.add_argument("--shard", default="0/1", metavar="K/N",
                    help="do only faces i with i %% N == K (run N processes to share the work)")
    pr.add_argument("--manifest-only", action="store_true",
                    help="only rewrite OUT_DIR/manifest.npz from the records written so far")
    pr.add_argument("--march", action="store_true",
                    help="landmarks (and rois) in 300W-LP style: contour points on the visible "
                         "silhouette under each new pose")
    pr.add_argument("--pitches", help="pitch grid (degrees, e.g. -20,-10,0,10,20): the views of "
                                      "a face cycle through it, jittered by ±PITCH/4")
    pr.set_defaults(func=run_data)
    p.set_defaults(func=run_data)
    return p


def run_data(args: argparse.Namespace) -> int:
    """Run ``tddfa data fit`` / ``tddfa data profile``; returns the exit code."""
    import numpy as np

    from tddfa.train.samples import SampleSet, fit_300w_split, load_manifest, save_manifest

    if args.data_cmd == "fit":
        sets, errs = [], []
        for split in args.split:
            ss, e = fit_300w_split(args.root, split, march=args.march)
            sets.append(ss)
            errs.append(e)
            q = np.percentile(e * 100, [10, 50, 90, 99])
            print(f"{split}: {len(ss)} faces, NME % p10 {q[0]:.3f} median {q[1]:.3f} "
                  f"p90 {q[2]:.3f} p99 {q[3]:.3f} max {100 * e.max():.3f}")
        out = save_manifest(args.out, SampleSet.concat(sets),
                            fit_nme=np.concatenate(errs).astype(np.float32))
        print(f"wrote {out}")
        return 0
    if args.data_cmd == "profile":
        from tddfa.train.profiling import build_profiled_set, write_profiled_manifest

        if args.manifest_only:
            out = write_profiled_manifest(args.out_dir, march=args.march)
            print(f"wrote {out} ({len(load_manifest(out))} views)")
            return 0
        k, _, n = args.shard.partition("/")
        ss = SampleSet.concat([load_manifest(m) for m in args.manifest])
        if args.limit:
            ss = ss.subset(slice(0, args.limit))
        yaws = [float(y) for y in args.yaws.split(",") if y.strip()]
        pitches = ([float(v) for v in args.pitches.split(",") if v.strip()]
                   if args.pitches else None)
        out = build_profiled_set(ss, args.out_dir, yaws, pitch_range=args.pitch, seed=args.seed,
                                 include_original=not args.no_original, march=args.march,
                                 pitches=pitches, shard=(int(k), int(n or 1)))
        n = len(load_manifest(out))
        print(f"wrote {out} ({n} views)")
        return 0
    print(f"unknown data command {args.data_cmd!r}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m tddfa.training.cli train|data ...``)."""
    parser = argparse.ArgumentParser(prog="tddfa-train")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    add_data_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
