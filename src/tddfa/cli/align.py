"""``tddfa align``: photos or folders to JSON, landmark overlays, renders and meshes."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from tddfa.errors import TddfaError

log = logging.getLogger("tddfa")


def _split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _iter_inputs(paths: list[str]) -> Iterator[tuple[Path, Path]]:
    """Yield (file, output-relative stem path) for files and folders (searched recursively)."""
    from tddfa.io.images import IMAGE_EXTENSIONS

    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                    yield f, f.relative_to(p).with_suffix("")
        else:
            yield p, Path(p.stem)


# ---------------------------------------------------------------------------------------------
# align


def add_parser(sub) -> None:
    p = sub.add_parser(
        "align",
        help="find faces in photos and write landmarks, pose and 3DMM parameters",
        description=(
            "Detect every face in each image, regress its 62 3DMM parameters and write "
            "OUTDIR/<name>.json (boxes, parameters, 68 3-D landmarks in image pixels, head pose "
            "in degrees) and OUTDIR/<name>_landmarks.jpg (the landmarks drawn on the photo). "
            "Folders are searched recursively. A file that cannot be read is reported and "
            "skipped; the exit status is 1 if any file failed."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--model", default="mb05",
                   help="regressor: mb05 (default), mb1, v1-wpdc-vdc, or cascade (3DDFA V1 cascade; "
                        "--checkpoint may name a cascade folder)")
    p.add_argument("--checkpoint", help="use this regressor checkpoint (.pth/.onnx) instead")
    p.add_argument("--threshold", type=float, default=0.5, help="detector score threshold (0.5)")
    p.add_argument("--refine", action="store_true",
                   help="second pass: re-crop each face from its first-pass landmarks")
    p.add_argument("--dense", action="store_true", help="include the 38,365 dense vertices in the JSON")
    p.add_argument("--render", type=_split_list, default=[], metavar="KINDS",
                   help="comma list of renders: mesh,depth,pncc,normal,uv,pose,dense,landmarks,paf")
    p.add_argument("--export", type=_split_list, default=[], metavar="FORMATS",
                   help="comma list of mesh files per face: obj,ply,glb")
    p.add_argument("--frame", default="image", choices=["image", "centered_yup"],
                   help="coordinate frame of exported meshes (default: image pixels, y down)")
    p.add_argument("--no-overlay", action="store_true", help="do not write <name>_landmarks.jpg")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = auto)")
    p.set_defaults(func=_run_align)


def _run_align(args) -> int:
    from tqdm import tqdm

    from tddfa.io.atomic import atomic_write_text
    from tddfa.io.images import read_image, write_image
    from tddfa.pipeline.aligner import FaceAligner

    if args.render:
        from tddfa.render.registry import RENDERERS

        _check_kinds(args.render, RENDERERS, "render")
    if args.export:
        from tddfa.export.formats import WRITERS

        _check_kinds(args.export, WRITERS, "export format")
    aligner = FaceAligner(args.model, args.checkpoint, score_threshold=args.threshold,
                          threads=args.threads)
    out = Path(args.output)
    items = list(_iter_inputs(args.inputs))
    if not items:
        print("tddfa align: no image files found in the given paths", file=sys.stderr)
        return 1
    need_mesh = bool(args.render or args.export or args.dense)
    failed = 0
    bar = tqdm(items, unit="img", disable=len(items) < 2, desc="align")
    for path, stem in bar:
        try:
            img = read_image(path)
            result = aligner.align(img)
            faces = result.faces
            if args.refine and faces:
                faces = aligner.refine(img, faces)
            if need_mesh and faces:
                faces = [replace(f, vertices=v) for f, v in zip(faces, aligner.vertices(faces),
                                                                 strict=True)]
            result = replace(result, faces=faces, image=str(path))
            base = out / stem
            atomic_write_text(base.with_name(base.name + ".json"),
                              json.dumps(result.to_dict(include_vertices=args.dense)))
            if not args.no_overlay:
                from tddfa.render.landmarks import draw_landmarks

                write_image(base.with_name(base.name + "_landmarks.jpg"), draw_landmarks(img, faces))
            tri = aligner.morphable_model.tri
            if args.render:
                from tddfa.render.registry import save_renders

                save_renders(img, faces, tri, args.render, base.parent, base.name)
            if args.export:
                from tddfa.export.formats import save_exports

                save_exports(img, faces, tri, args.export, base.parent, base.name, frame=args.frame)
            log.info("%s: %d face(s)", path, len(faces))
        except TddfaError as exc:
            failed += 1
            tqdm.write(f"tddfa align: skipped {path}: {exc}", file=sys.stderr)
        except Exception as exc:  # a batch never stops on one file
            failed += 1
            tqdm.write(f"tddfa align: skipped {path}: unexpected {type(exc).__name__}: {exc}",
                       file=sys.stderr)
    done = len(items) - failed
    print(f"tddfa align: {done} of {len(items)} image(s) processed, results in {out}/",
          file=sys.stderr)
    return 1 if failed else 0


def _check_kinds(kinds: list[str], known, what: str) -> None:
    from tddfa.errors import unknown_name

    for k in kinds:
        if k not in known:
            raise unknown_name(what, k, known)
