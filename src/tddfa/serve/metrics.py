"""Prometheus text-format metrics, hand-written (no client library): request counts by route and
status, a latency histogram by route, faces found, errors by code, and queue gauges."""

from __future__ import annotations

import threading
from collections import defaultdict

__all__ = ["Metrics", "BUCKETS"]

#: latency histogram bucket upper bounds, seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(**kv: str) -> str:
    parts = []
    for k, v in kv.items():
        esc = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{k}="{esc}"')
    return "{" + ",".join(parts) + "}"


class Metrics:
    """Thread-safe counters rendered by :meth:`render` as Prometheus exposition text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.lat_sum: dict[str, float] = defaultdict(float)
        self.faces = 0
        self.errors: dict[str, int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            h = self.hist[route]
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[i] += 1
                    break
            else:
                h[-1] += 1
            self.lat_sum[route] += seconds

    def add_faces(self, n: int) -> None:
        with self._lock:
            self.faces += n

    def add_error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """Exposition text; ``gauges`` maps name -> (help, value)."""
        out = ["# HELP tddfa_requests_total HTTP requests by method, route and status.",
               "# TYPE tddfa_requests_total counter"]
        with self._lock:
            for (m, r, s), n in sorted(self.requests.items()):
                out.append(f"tddfa_requests_total{_labels(method=m, route=r, status=str(s))} {n}")
            out += ["# HELP tddfa_request_duration_seconds Request latency by route.",
                    "# TYPE tddfa_request_duration_seconds histogram"]
            for r, h in sorted(self.hist.items()):
                cum = 0
                for b, c in zip((*BUCKETS, float("inf")), h, strict=True):
                    cum += c
                    le = "+Inf" if b == float("inf") else repr(b)
                    out.append(f"tddfa_request_duration_seconds_bucket{_labels(route=r, le=le)} {cum}")
                out.append(f"tddfa_request_duration_seconds_sum{_labels(route=r)} {self.lat_sum[r]:.6f}")
                out.append(f"tddfa_request_duration_seconds_count{_labels(route=r)} {cum}")
            out += ["# HELP tddfa_faces_total Faces found by align, render, export and live calls.",
                    "# TYPE tddfa_faces_total counter", f"tddfa_faces_total {self.faces}",
                    "# HELP tddfa_errors_total Error responses by error code.",
                    "# TYPE tddfa_errors_total counter"]
            for c, n in sorted(self.errors.items()):
                out.append(f"tddfa_errors_total{_labels(code=c)} {n}")
        for name, (help_, value) in gauges.items():
            out += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(out) + "\n"
