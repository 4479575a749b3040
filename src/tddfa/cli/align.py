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


def _iter_inputs(paths: list[str], *, exclude: str | Path | None = None) -> Iterator[tuple[Path, Path]]:
    """Yield (file, output-relative stem path) for files and folders (searched recursively).

    Output names never collide (compared case-insensitively, for case-insensitive file
    systems): a file argument is named by its stem, a file found in a folder argument by its path
    relative to that folder; when two inputs would share a name, both keep their extension
    (``x.jpg``, ``x.png``); if they still collide, the argument's folder name is prepended
    (``cam1/IMG_0001.jpg``), and as a last resort a number (``x.jpg~2``). The same file given
    twice is processed once. Files inside ``exclude`` (the output folder) are never inputs.
    """
    from tddfa.io.images import IMAGE_EXTENSIONS

    skip = Path(exclude).resolve() if exclude is not None else None

    def excluded(f: Path) -> bool:
        if skip is None:
            return False
        r = f.resolve()
        return r == skip or skip in r.parents

    found: list[tuple[Path, Path, Path]] = []  # (file, path relative to its argument, its folder)
    seen: set[Path] = set()
    for p in map(Path, paths):
        if excluded(p):
            log.warning("%s is inside the output folder: not taken as input", p)
            continue
        if p.is_dir():
            files = [(f, f.relative_to(p)) for f in sorted(p.rglob("*"))
                     if f.suffix.lower() in IMAGE_EXTENSIONS and not excluded(f) and f.is_file()]
            base = p
        else:
            files, base = [(p, Path(p.name))], p.parent
        for f, rel in files:
            key = f.resolve()
            if key in seen:
                continue
            seen.add(key)
            found.append((f, rel, base))

    def clashing(names: list[Path]) -> set[str]:
        count: dict[str, int] = {}
        for n in names:
            count[str(n).casefold()] = count.get(str(n).casefold(), 0) + 1
        return {k for k, c in count.items() if c > 1}

    stems = [rel.with_suffix("") for _, rel, _ in found]
    clash = clashing(stems)
    stems = [rel if str(s).casefold() in clash else s
             for s, (_, rel, _) in zip(stems, found, strict=True)]
    clash = clashing(stems)
    stems = [Path(base.resolve().name or "root") / rel if str(s).casefold() in clash else s
             for s, (_, rel, base) in zip(stems, found, strict=True)]
    taken: set[str] = set()
    for (f, _, _), s in zip(found, stems, strict=True):
        n, candidate = 1, s
        while str(candidate).casefold() in taken:
            n += 1
            candidate = s.with_name(f"{s.name}~{n}")
        taken.add(str(candidate).casefold())
        yield f, candidate


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
    p.add_argument("--min-face", type=_non_negative_float, default=0.0, metavar="PX",
                   help="ignore faces smaller than PX (sqrt(w*h) of the landmark box, image pixels; "
                        "0 = no limit, the default); the detector then runs on a smaller image, "
                        "which is faster for large photos")
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
    from tddfa.cli.batch import add_batch_arguments

    add_batch_arguments(p)
    p.add_argument("--max-pixels", type=_non_negative, default=None, metavar="N",
                   help="refuse images above N pixels (width x height), checked from the file "
                        "header before decoding (default 178956970; 0 = no limit)")
    p.add_argument("--max-dense-faces", type=_non_negative, default=32, metavar="N",
                   help="dense mesh, renders and exports for at most the N best faces per image "
                        "(32); the others get landmarks and pose only")
    p.set_defaults(func=_run_align)


def _non_negative(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {v}")
    return v


def _non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return v


def _progress(items: list, desc: str):
    """``(iterable, say)``: a tqdm progress bar over ``items`` and its ``write`` for messages when
    there are several; for one item the items themselves and a plain print to stderr (tqdm's
    import is 50 ms of a single photo's start-up)."""
    if len(items) < 2:
        return items, lambda msg: print(msg, file=sys.stderr)
    from tqdm import tqdm

    return tqdm(items, unit="img", desc=desc), lambda msg: tqdm.write(msg, file=sys.stderr)


def _run_align(args) -> int:
    from tddfa.io.atomic import atomic_write_text
    from tddfa.io.images import read_image, write_image

    if args.render:
        from tddfa.render.registry import RENDERERS

        _check_kinds(args.render, RENDERERS, "render")
    if args.export:
        from tddfa.export.formats import WRITERS

        _check_kinds(args.export, WRITERS, "export format")
    max_pixels = getattr(args, "max_pixels", None)
    cap = getattr(args, "max_dense_faces", 32)
    aligner = None  # built on the first readable image: a refused input costs no model loading
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        from tddfa.errors import InputError

        raise InputError(f"-o {out}: exists and is not a folder")
    from tddfa.cli.batch import expand_lists, run_batch, wants_batch

    items = list(_iter_inputs(expand_lists(args.inputs), exclude=out))
    if not items:
        print("tddfa align: no image files found in the given paths (files inside the output "
              f"folder {out} are not taken as inputs)", file=sys.stderr)
        return 1
    if wants_batch(args):
        return run_batch(args, items)
    need_mesh = bool(args.render or args.export or args.dense)
    failed = 0
    bar, say = _progress(items, "align")
    for path, stem in bar:
        try:
            img = read_image(path, max_pixels=max_pixels)
        except TddfaError as exc:
            failed += 1
            say(f"tddfa align: skipped {path}: {exc}")
            continue
        if aligner is None:  # a bad model or checkpoint stops the run (one-line error, exit 1)
            from tddfa.pipeline.aligner import FaceAligner

            aligner = FaceAligner(args.model, args.checkpoint, score_threshold=args.threshold,
                                  threads=args.threads, max_pixels=max_pixels,
                                  max_dense_faces=cap, backend=args.backend, device=args.device,
                                  min_face_size=args.min_face)
        try:
            result = aligner.align(img)
            faces = result.faces
            if args.refine and faces:
                faces = aligner.refine(img, faces)
            if need_mesh and len(faces) > cap:
                log.warning("%s: %d faces, dense outputs for the best %d only (--max-dense-faces)",
                            path, len(faces), cap)
            if need_mesh and faces:
                faces = [replace(f, vertices=v) for f, v in
                         zip(faces[:cap], aligner.vertices(faces[:cap]), strict=True)] + faces[cap:]
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

                save_renders(img, faces[:cap], tri, args.render, base.parent, base.name)
            if args.export:
                from tddfa.export.formats import save_exports

                save_exports(img, faces[:cap], tri, args.export, base.parent, base.name,
                             frame=args.frame)
            log.info("%s: %d face(s)", path, len(faces))
        except TddfaError as exc:
            failed += 1
            say(f"tddfa align: skipped {path}: {exc}")
        except Exception as exc:  # a batch never stops on one file
            failed += 1
            say(f"tddfa align: skipped {path}: unexpected {type(exc).__name__}: {exc}")
    done = len(items) - failed
    print(f"tddfa align: {done} of {len(items)} image(s) processed, results in {out}/",
          file=sys.stderr)
    return 1 if failed else 0


def _check_kinds(kinds: list[str], known, what: str) -> None:
    from tddfa.errors import unknown_name

    for k in kinds:
        if k not in known:
            raise unknown_name(what, k, known)
