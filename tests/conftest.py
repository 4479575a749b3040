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
