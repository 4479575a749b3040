"""Command line: ``tddfa <command>`` (also ``python -m tddfa``). :mod:`.main` builds the parser
and dispatches; one module per command group (:mod:`.video`, :mod:`.eval`, :mod:`.train`)."""

from tddfa.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
