"""Shared fixtures. Tests that need real data use ``../shared`` beside the checkout and are
skipped with a clear reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
HAVE_SHARED = (SHARED / "assets" / "3ddfa_v2" / "mb05_120x120.pth").is_file()

if HAVE_SHARED and not os.environ.get("TDDFA_HOME"):
    os.environ["TDDFA_HOME"] = str(SHARED / "assets")
os.environ.setdefault("TDDFA_OFFLINE", "1")

needs_shared = pytest.mark.skipif(
    not HAVE_SHARED, reason=f"real data not found: {SHARED} (the project's ../shared folder) is absent"
)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ``../shared`` folder; skips the test when it is absent."""
    if not HAVE_SHARED:
        pytest.skip(f"real data not found: {SHARED} is absent")
    return SHARED


@pytest.fixture()
def ort_config_entries(monkeypatch) -> list[tuple[str, str]]:
    """The ``(key, value)`` session config entries of every ONNX Runtime session built during
    the test, in order."""
    import onnxruntime as ort

    seen: list[tuple[str, str]] = []
    orig = ort.SessionOptions.add_session_config_entry

    def record(self, key, value):
        seen.append((key, value))
        return orig(self, key, value)

    monkeypatch.setattr(ort.SessionOptions, "add_session_config_entry", record)
    return seen


def load_sample(shared, name: str):
    """(image, [Face], triangles) for a sample photo from the official reference parameters."""
    import json

    import cv2

    from tddfa.face.morphable_model import load_morphable_model
    from tddfa.pipeline.aligner import faces_from_params

    ref = json.loads((shared / "reference" / "official_mb05_samples.json").read_text())[name]
    mm = load_morphable_model()
    faces = faces_from_params(mm, [f["param"] for f in ref["faces"]],
                              [f["roi_box"] for f in ref["faces"]],
                              boxes=[f["box"] for f in ref["faces"]], dense=True)
    img = cv2.imread(str(shared / "samples" / name))
    assert img is not None and img.shape[:2] == (ref["height"], ref["width"])
    return img, faces, mm.tri
