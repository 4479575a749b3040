"""``tddfa assets`` and ``tddfa models``: model files and registered regressors."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("tddfa")


# ---------------------------------------------------------------------------------------------
# assets / models


def add_assets_parser(sub) -> None:
    p = sub.add_parser(
        "assets",
        help="list model files, where they were found and whether they verified; install them",
        description=(
            "Model and data files are looked up in $TDDFA_HOME, then the per-user cache. "
            "`tddfa assets` lists them; `tddfa assets install --from DIR` copies and verifies "
            "every known file found in DIR."
        ),
    )
    p.add_argument("action", nargs="?", default="list", choices=["list", "install"])
    p.add_argument("--from", dest="source", metavar="DIR", help="folder to install files from")
    p.add_argument("--to", dest="dest", metavar="DIR", help="destination (default: first asset folder)")
    p.set_defaults(func=_run_assets)


def _run_assets(args) -> int:
    from tddfa.assets import registry as assets

    if args.action == "install":
        if not args.source:
            print("tddfa assets install: --from DIR is required", file=sys.stderr)
            return 2
        names = assets.install_from(args.source, args.dest)
        print(f"installed {len(names)} file(s): {', '.join(names) or '-'}")
        return 0
    print(f"asset folders (search order): {', '.join(map(str, assets.asset_dirs()))}")
    bad = 0
    for st in assets.list_assets():
        where = str(st.path) if st.path else "-"
        print(f"{st.name:<18} {st.status:<18} {where}")
        if st.status.startswith("bad"):
            bad += 1
    return 1 if bad else 0


def add_models_parser(sub) -> None:
    p = sub.add_parser("models", help="list the available regressors")
    p.set_defaults(func=_run_models)


def _run_models(args) -> int:
    from tddfa.models.registry import MODELS

    for m in MODELS.values():
        print(f"{m.name:<6} {m.arch} x{m.width:g}  input {m.input_size}x{m.input_size} "
              f"{m.input_format}  weights '{m.weights}'  {m.description}")
    return 0
