"""Helpers shared by the benchmarks (imported as ``from _common import ...``: the scripts run as
``python benchmarks/NAME.py``, so this folder is on ``sys.path``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path


def timed(fn: Callable[[], object], n: int, settle: float = 0.0) -> list[float]:
    """``n`` wall times of ``fn()`` in milliseconds, after a pause of ``settle`` seconds.

    The pause lets idle ONNX Runtime threads of whatever ran before go to sleep: sessions that
    spin-wait after a run (ONNX Runtime's default, used by the official 3DDFA_V2 code) would
    otherwise take the cores from the calls being timed.
    """
    if settle > 0:
        time.sleep(settle)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def write_report(path: Path, report: dict) -> None:
    """Write a benchmark's results as indented JSON, atomically (parent folders created)."""
    from tddfa.io.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=1) + "\n")
