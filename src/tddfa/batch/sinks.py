"""Where batch records go: per-image JSON files, one JSON-lines file, or Parquet shards.

Every sink can say which inputs it already holds (``done()``), which ``--resume`` skips, and
writes each record exactly once:

* ``json`` — ``OUT/<stem>.json`` per image (written atomically by the worker); done = the files
  that exist.
* ``jsonl`` — ``OUT/results.jsonl``; each record is one ``os.write`` of a complete line on an
  ``O_APPEND`` descriptor, fsynced in groups; a torn last line left by a crash is cut off on
  resume. done = the ``input`` of every complete line.
* ``parquet`` — ``OUT/results/part-<run>-<n>.parquet`` shards of up to ``shard_size`` records,
  each written to a temporary name and renamed (a shard is all there or absent); done = the
  ``input`` column of every shard. Needs ``pyarrow`` (extra ``tddfa[parquet]``).

Records keep ``input``, ``stem``, ``width``, ``height`` as columns; the face list is a JSON
string column ``faces`` in Parquet (one schema for any number of faces).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from tddfa.errors import DependencyError, InputError

__all__ = ["Sink", "open_sink", "FORMATS", "RESULTS_JSONL", "PARQUET_DIR", "FAILURES"]

log = logging.getLogger(__name__)

FORMATS = ("json", "jsonl", "parquet")
RESULTS_JSONL = "results.jsonl"
PARQUET_DIR = "results"
FAILURES = "failures.jsonl"


class Sink:
    """Base sink: ``done()`` (set of input paths already written), ``write(record)``, ``close()``."""

    def done(self) -> set[str]:
        return set()

    def write(self, record: dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonFilesSink(Sink):
    """Records were written by the workers as ``OUT/<stem>.json``; this only answers ``done``."""

    def __init__(self, out: Path, items: list[tuple[str, str]] | None = None):
        self.out = out
        self.items = items or []

    def done(self) -> set[str]:
        out = set()
        for path, stem in self.items:
            base = self.out / stem
            if base.with_name(base.name + ".json").is_file():
                out.add(str(path))
        return out

    def write(self, record: dict[str, Any]) -> None:
        pass


class JsonlSink(Sink):
    """Append-only JSON lines (see the module doc for the exactly-once rules)."""

    def __init__(self, path: Path, sync_every: int = 32):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.sync_every = sync_every
        self._pending = 0

    def _repair(self) -> None:
        """Cut a torn last line (a crash mid-write) so every line is a complete record."""
        if not self.path.is_file():
            return
        with open(self.path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return
            data_end = size
            step = 1 << 16
            pos = size
            while pos > 0:  # find the last newline
                pos = max(0, pos - step)
                f.seek(pos)
                chunk = f.read(data_end - pos)
                k = chunk.rfind(b"\n")
                if k >= 0:
                    f.truncate(pos + k + 1)
                    log.warning("%s: removed a torn last line", self.path)
                    return
                data_end = pos
            f.truncate(0)

    def done(self) -> set[str]:
        out: set[str] = set()
        if not self.path.is_file():
            return out
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.add(json.loads(line)["input"])
                except (ValueError, KeyError, TypeError):
                    continue
        return out

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record) + "\n").encode("utf-8")
        n = os.write(self.fd, data)
        while n < len(data):  # pragma: no cover - regular files take the whole write
            n += os.write(self.fd, data[n:])
        self._pending += 1
        if self._pending >= self.sync_every:
            os.fsync(self.fd)
            self._pending = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DependencyError(
            "--format parquet needs pyarrow: pip install 'tddfa[parquet]'") from exc
    return pa, pq


def parquet_table(records: list[dict[str, Any]]):
    """A ``pyarrow.Table`` of records: input, stem, image, width, height, n_faces, faces (JSON)."""
    pa, _ = _pyarrow()
    cols = {
        "input": [r["input"] for r in records],
        "stem": [r.get("stem", "") for r in records],
        "width": [int(r.get("width", 0)) for r in records],
        "height": [int(r.get("height", 0)) for r in records],
        "n_faces": [len(r.get("faces", [])) for r in records],
        "faces": [json.dumps(r.get("faces", [])) for r in records],
        "model": [json.dumps(r.get("model", {})) for r in records],
    }
    return pa.table(cols)


def write_parquet_shard(folder: Path, name: str, records: list[dict[str, Any]]) -> Path:
    """Write ``records`` to ``folder/name`` atomically (temporary name, then rename)."""
    _, pq = _pyarrow()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    pq.write_table(parquet_table(records), tmp)
    os.replace(tmp, target)
    return target


def parquet_inputs(folder: Path) -> set[str]:
    """The ``input`` column of every complete shard in ``folder``."""
    if not folder.is_dir():
        return set()
    _, pq = _pyarrow()
    out: set[str] = set()
    for shard in sorted(folder.glob("*.parquet")):
        out.update(pq.read_table(shard, columns=["input"]).column("input").to_pylist())
    return out


class ParquetSink(Sink):
    """Parquet shards (see the module doc)."""

    def __init__(self, folder: Path, shard_size: int = 500):
        _pyarrow()
        self.folder = folder
        self.shard_size = int(shard_size)
        self.run = uuid.uuid4().hex[:8]
        self.buf: list[dict[str, Any]] = []
        self.n = 0

    def done(self) -> set[str]:
        return parquet_inputs(self.folder)

    def write(self, record: dict[str, Any]) -> None:
        self.buf.append(record)
        if len(self.buf) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            write_parquet_shard(self.folder, f"part-{self.run}-{self.n:05d}.parquet", self.buf)
            self.n += 1
            self.buf = []

    def close(self) -> None:
        self.flush()


def open_sink(fmt: str, out: Path, items: list[tuple[str, str]] | None = None,
              shard_size: int = 500) -> Sink:
    """The sink for output format ``fmt`` (one of :data:`FORMATS`) in folder ``out``."""
    if fmt == "json":
        return JsonFilesSink(out, items)
    if fmt == "jsonl":
        return JsonlSink(out / RESULTS_JSONL)
    if fmt == "parquet":
        return ParquetSink(out / PARQUET_DIR, shard_size)
    raise InputError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
