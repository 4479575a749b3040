"""Command-line interface: ``tddfa <command> ...`` (also ``python -m tddfa``). Builds the parser from
one module per command group and dispatches; a mistyped command or choice is answered with
suggestions."""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import sys

from tddfa import __version__
from tddfa.cli.align import add_parser as add_align_parser
from tddfa.cli.assets import add_assets_parser, add_models_parser
from tddfa.errors import TddfaError

log = logging.getLogger("tddfa")


# Sub-commands contributed by other modules: (module, add_parser function, run function).
_PLUGINS = [
    ("tddfa.cli.video", "add_parser", "run"),
    ("tddfa.cli.eval", "add_parser", "run"),
    ("tddfa.evaluation.bench", "add_parser", "run"),
    ("tddfa.cli.train", "add_parser", "run"),
    ("tddfa.cli.train", "add_data_parser", "run_data"),
    ("tddfa.cli.serve", "add_parser", "run"),
]


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that answers a mistyped command or choice with suggestions."""

    def error(self, message: str):  # noqa: D401 - argparse API
        if "invalid choice" in message:
            import re

            m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
            if m:
                choices = re.findall(r"'([^']*)'", m.group(2)) or [
                    c.strip() for c in m.group(2).split(",")
                ]
                close = difflib.get_close_matches(m.group(1), choices, n=3, cutoff=0.5)
                if close:
                    message += f"\n  did you mean: {', '.join(close)}?"
        super().error(message)



# ---------------------------------------------------------------------------------------------


# Commands defined in this package's core modules: parsing them needs no plugin import (cold start).
_CORE = {"align", "assets", "models"}


def build_parser(plugins: bool = True) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tddfa",
        description="3D dense face alignment (3DDFA_V2) on the CPU: landmarks, pose, meshes.",
    )
    parser.add_argument("--version", action="version", version=f"tddfa {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    add_align_parser(sub)
    add_assets_parser(sub)
    add_models_parser(sub)
    for module, add_name, run_name in _PLUGINS if plugins else []:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            log.debug("command module %s unavailable: %s", module, exc)
            continue
        add = getattr(mod, add_name, None)
        run = getattr(mod, run_name, None)
        if add is None or run is None:
            continue
        before = set(sub.choices)
        add(sub)
        for name in set(sub.choices) - before:
            if sub.choices[name].get_default("func") is None:
                sub.choices[name].set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    first = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(plugins=first not in _CORE or any(w in ("-h", "--help") for w in words[:1]))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TddfaError as exc:
        print(f"tddfa {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, permission denied, ...: the environment, not a bug
        print(f"tddfa {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line by default, the traceback with -v
        if args.verbose:
            raise
        print(f"tddfa {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(run with -v for the traceback and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
