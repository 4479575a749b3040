"""tddfa — 3D Dense Face Alignment (3DDFA / 3DDFA_V2) on the CPU."""

from __future__ import annotations

__version__ = "0.1.0"
