"""Batch alignment on one machine: decode ahead in threads, align in worker processes.

    from tddfa.batch import AlignOptions, run_local
    summary = run_local(items, AlignOptions(out="out"), fmt="jsonl", workers=2, resume=True)

``items`` are ``(input path, output stem)`` pairs (as ``tddfa align`` lists them). With
``workers`` ≤ 1 the aligner runs in this process while a thread decodes the next images; with
``workers`` ≥ 2 each worker process loads the models once and takes chunks of items, decoding
the next image of its chunk in a thread while it aligns the current one. Results are written
by this process only (one writer: no interleaving), in input order (``ordered=True``) or as they
come. Memory stays bounded: at most ``workers × 2`` chunks are in flight and records carry no
images. Failed inputs are listed in ``OUT/failures.jsonl`` and counted in the summary.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tddfa.batch.sinks import FAILURES, RESULTS_JSONL, open_sink
from tddfa.batch.work import AlignOptions, ImageWorker
from tddfa.errors import InputError

__all__ = ["BatchSummary", "run_local", "pending_items", "write_failures"]

log = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    """Counts of one batch run; ``failures`` are failure records (input, stem, error)."""

    total: int = 0
    skipped: int = 0
    processed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def images_per_second(self) -> float:
        return (self.processed + self.failed) / self.seconds if self.seconds > 0 else 0.0


def pending_items(items: list[tuple[str, str]], sink, resume: bool, out: Path, fmt: str
                  ) -> tuple[list[tuple[str, str]], int]:
    """Items still to do and how many were skipped; refuses to append to existing results
    without ``resume`` (that would duplicate records)."""
    if not resume:
        existing = {"jsonl": out / RESULTS_JSONL}.get(fmt)
        if existing is not None and existing.is_file() and existing.stat().st_size > 0:
            raise InputError(f"{existing} already holds results: pass --resume to continue it, "
                             "or choose another output folder")
        return items, 0
    done = sink.done()
    todo = [it for it in items if str(it[0]) not in done]
    return todo, len(items) - len(todo)


def write_failures(out: Path, failures: list[dict[str, Any]]) -> Path | None:
    """Write ``OUT/failures.jsonl`` atomically (removed when nothing failed)."""
    path = out / FAILURES
    if not failures:
        path.unlink(missing_ok=True)
        return None
    from tddfa.io.atomic import atomic_write_text

    return atomic_write_text(path, "".join(json.dumps(f) + "\n" for f in failures))


# -- worker processes ------------------------------------------------------------------------

_WORKER: ImageWorker | None = None


def _init_worker(options: AlignOptions) -> None:
    global _WORKER
    logging.getLogger("tddfa").setLevel(logging.WARNING)
    _WORKER = ImageWorker(options)


def _decode(path: str):
    from tddfa.io.images import read_image

    try:
        return read_image(path, max_pixels=_WORKER.options.max_pixels if _WORKER else None)
    except Exception as exc:  # handed to the aligner, which records it as this item's failure
        return exc


def _run_chunk(chunk: list[tuple[str, str]]) -> list[tuple[bool, dict[str, Any]]]:
    """Worker: align a chunk, decoding image k+1 in a thread while image k is aligned."""
    assert _WORKER is not None, "worker not initialised"
    out = []
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(_decode, chunk[0][0]) if chunk else None
        for k, (path, stem) in enumerate(chunk):
            image = nxt.result()
            if k + 1 < len(chunk):
                nxt = pool.submit(_decode, chunk[k + 1][0])
            out.append(_WORKER.try_process(path, stem, image))
    return out


def _chunks(items: list[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _in_process(items, options: AlignOptions, prefetch: int) -> Iterator[tuple[bool, dict]]:
    worker = ImageWorker(options)
    with ThreadPoolExecutor(2) as pool:
        window: deque = deque()
        it = iter(items)
        for path, stem in it:
            window.append((path, stem, pool.submit(_decode, path)))
            if len(window) >= prefetch:
                break
        while window:
            path, stem, fut = window.popleft()
            nxt = next(it, None)
            if nxt is not None:
                window.append((nxt[0], nxt[1], pool.submit(_decode, nxt[0])))
            yield worker.try_process(path, stem, fut.result())


def _context():
    # fork starts workers without re-importing anything; this process has started no threads
    # when the pool is made. Elsewhere (macOS, Windows) spawn.
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def run_local(
    items: list[tuple[str, str]] | list[tuple[Path, Path]],
    options: AlignOptions,
    *,
    fmt: str = "json",
    workers: int = 0,
    ordered: bool = True,
    resume: bool = False,
    chunk_size: int = 4,
    progress: bool = True,
    shard_size: int = 500,
) -> BatchSummary:
    """Align ``items`` and write their records; see the module doc.

    Args:
        items: ``(input path, output stem)`` pairs.
        options: per-image work (``options.out`` is the output folder).
        fmt: ``json`` (a file per image), ``jsonl`` or ``parquet``.
        workers: worker processes (0 or 1: align in this process).
        ordered: write records in input order (else as they finish).
        resume: skip inputs whose record is already in the output.
        chunk_size: items per task sent to a worker.
    """
    from dataclasses import replace

    from tqdm import tqdm

    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    items = [(str(p), str(s)) for p, s in items]
    options = replace(options, per_image_json=(fmt == "json"))
    sink = open_sink(fmt, out, items, shard_size=shard_size)
    summary = BatchSummary(total=len(items))
    t0 = time.perf_counter()
    try:
        todo, summary.skipped = pending_items(items, sink, resume, out, fmt)
        if summary.skipped:
            log.warning("resume: %d of %d input(s) already done", summary.skipped, len(items))
        if workers >= 2 and todo:
            pool = _context().Pool(workers, initializer=_init_worker, initargs=(options,))
            try:
                mapper = pool.imap if ordered else pool.imap_unordered
                results = (r for chunk in mapper(_run_chunk, _chunks(todo, chunk_size)) for r in chunk)
                _drain(results, sink, summary, len(todo), progress, tqdm)
                pool.close()
            finally:
                pool.terminate()
                pool.join()
        elif todo:
            _drain(_in_process(todo, options, prefetch=4), sink, summary, len(todo), progress, tqdm)
    finally:
        sink.close()
        summary.seconds = time.perf_counter() - t0
    write_failures(out, summary.failures)
    return summary


def _drain(results, sink, summary: BatchSummary, n: int, progress: bool, tqdm) -> None:
    bar = tqdm(total=n, unit="img", desc="align", disable=not progress or n < 2)
    try:
        for ok, rec in results:
            if ok:
                sink.write(rec)
                summary.processed += 1
            else:
                summary.failures.append(rec)
                bar.write(f"tddfa align: skipped {rec['input']}: {rec['error']}", file=sys.stderr)
            bar.update(1)
    finally:
        bar.close()
