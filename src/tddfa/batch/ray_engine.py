"""Batch alignment on a Ray cluster (extra ``tddfa[ray]``): Ray Data with an actor pool of aligners.

    tddfa align /data/photos -o /data/out --engine ray --address auto --workers 8 --format parquet

The inputs (paths readable from every node, e.g. a shared file system) become a Ray dataset;
``map_batches`` runs them through a pool of ``workers`` :class:`AlignActor` s (each loads the
models once, one CPU each); the driver receives the records and writes them with the same sinks
as the local engine (:mod:`tddfa.batch.sinks`: JSON-lines, Parquet shards written atomically,
or a JSON file per image), so ``--resume`` and the failures file behave the same. When an actor
dies, Ray Data restarts it and re-runs its unfinished batches; the driver only ever sees each
output row once, so every input is written exactly once.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from tddfa.batch.local import BatchSummary, pending_items, write_failures
from tddfa.batch.sinks import open_sink
from tddfa.batch.work import AlignOptions
from tddfa.errors import DependencyError

__all__ = ["run_ray", "AlignActor"]

log = logging.getLogger(__name__)

#: Testing aid: when set, every actor writes ``<pid>`` files here after each batch (the fault
#: test uses them to kill an actor's process midway).
PID_DIR_ENV = "TDDFA_RAY_PID_DIR"


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise DependencyError("--engine ray needs Ray Data: pip install 'tddfa[ray]'") from exc
    return ray


class AlignActor:
    """A Ray Data callable class: one :class:`~tddfa.batch.work.ImageWorker` per actor."""

    def __init__(self, options: AlignOptions):
        from tddfa.batch.work import ImageWorker

        self.worker = ImageWorker(options)
        self.pid_dir = os.environ.get(PID_DIR_ENV)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        import json

        out: dict[str, list] = {"input": [], "ok": [], "record": []}
        for path, stem in zip(batch["input"], batch["stem"], strict=True):
            ok, rec = self.worker.try_process(str(path), str(stem))
            out["input"].append(str(path))
            out["ok"].append(bool(ok))
            out["record"].append(json.dumps(rec))
        if self.pid_dir:
            marker = Path(self.pid_dir) / str(os.getpid())
            n = int(marker.read_text() or 0) + 1 if marker.is_file() else 1
            marker.write_text(str(n))
        return out


def run_ray(
    items: list,
    options: AlignOptions,
    *,
    fmt: str = "jsonl",
    address: str | None = None,
    workers: int = 2,
    resume: bool = False,
    batch_size: int = 4,
    num_cpus: int | None = None,
    shard_size: int = 500,
    progress: bool = True,
) -> BatchSummary:
    """Align ``items`` (``(input path, output stem)`` pairs) on Ray; see the module doc.

    Args:
        address: an existing cluster (``"auto"``, ``"ray://host:10001"``); default: a local Ray.
        workers: aligner actors (one model load each, one CPU each).
        batch_size: images per ``map_batches`` call.
        num_cpus: CPUs of the local Ray started when ``address`` is None (default: all).
    """
    import json
    from dataclasses import replace

    ray = _ray()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    items = [(str(p), str(s)) for p, s in items]
    options = replace(options, per_image_json=(fmt == "json"),
                      threads=options.threads or 1)
    sink = open_sink(fmt, out, items, shard_size=shard_size)
    summary = BatchSummary(total=len(items))
    started_here = False
    t0 = time.perf_counter()
    try:
        todo, summary.skipped = pending_items(items, sink, resume, out, fmt)
        if todo:
            if not ray.is_initialized():
                kw: dict[str, Any] = {"address": address, "log_to_driver": False,
                                      "logging_level": logging.WARNING}
                if address is None and num_cpus is not None:
                    kw["num_cpus"] = num_cpus
                ray.init(**kw)
                started_here = True
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = progress
            ds = ray.data.from_items([{"input": p, "stem": s} for p, s in todo],
                                     override_num_blocks=-(-len(todo) // batch_size))
            ds = ds.map_batches(
                AlignActor, fn_constructor_args=(options,), batch_size=batch_size,
                batch_format="numpy", num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=workers),
                # a dead actor is restarted and its batches re-run (Ray Data's default in
                # recent releases; explicit for older ones)
                max_restarts=-1, max_task_retries=-1,
            )
            for row in ds.iter_rows():
                rec = json.loads(row["record"])
                if row["ok"]:
                    sink.write(rec)
                    summary.processed += 1
                else:
                    summary.failures.append(rec)
    finally:
        sink.close()
        summary.seconds = time.perf_counter() - t0
        if started_here:
            ray.shutdown()
    write_failures(out, summary.failures)
    return summary
