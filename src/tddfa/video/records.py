"""Per-frame JSON Lines records and their atomic writer."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tddfa.io.atomic import AtomicOutput
from tddfa.io.video import temp_beside

if TYPE_CHECKING:
    from tddfa.video.tracker import FrameResult
    pass


log = logging.getLogger(__name__)

def _r(a: np.ndarray, nd: int) -> list:
    return np.round(np.asarray(a, np.float64), nd).tolist()


def frame_record(result: FrameResult) -> dict[str, Any]:
    """One JSON Lines record: ``frame``, ``timestamp_ms`` and per face ``id``, ``box`` (x1, y1, x2,
    y2 px), ``score``, ``roi_box``, ``landmarks`` (68 × [x, y, z] px), ``pose`` (yaw, pitch, roll
    degrees) and ``params`` (62, de-normalised, 7 significant digits); ``"cut": true`` on a frame
    that starts a new shot, and ``skipped`` (detections below the minimum face size: ``box``,
    ``score``) when there are any."""
    faces = []
    for f in result.faces:
        faces.append({
            "id": int(f.track_id),
            "box": _r(f.box, 2),
            "score": round(float(f.score), 4),
            "roi_box": _r(f.roi_box, 2),
            "landmarks": _r(f.landmarks, 2),
            "pose": {"yaw": round(f.pose.yaw, 3), "pitch": round(f.pose.pitch, 3),
                     "roll": round(f.pose.roll, 3)},
            "params": [float(f"{v:.7g}") for v in np.asarray(f.params, np.float64).tolist()],
        })
    rec: dict[str, Any] = {"frame": int(result.index),
                           "timestamp_ms": round(float(result.timestamp_ms), 3), "faces": faces}
    if getattr(result, "cut", False):
        rec["cut"] = True
    skipped = getattr(result, "skipped", None)
    if skipped is not None and len(skipped):
        rec["skipped"] = [{"box": _r(d[:4], 2), "score": round(float(d[4]), 4)} for d in skipped]
    return rec


class JsonlWriter(AtomicOutput):
    """Per-frame JSON Lines, written to a temporary file and renamed into place on :meth:`close`
    (a reader never sees a half-written file; :meth:`abort` deletes the partial file)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._tmp = temp_beside(self.path)
        self._f = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in close/abort
        self.records = 0

    def write(self, result: FrameResult | dict[str, Any]) -> None:
        rec = result if isinstance(result, dict) else frame_record(result)
        self._f.write(json.dumps(rec, separators=(",", ":")))
        self._f.write("\n")
        self.records += 1

    def close(self) -> Path:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)



# =============================================================================================
