"""tddfa — 3D Dense Face Alignment (3DDFA / 3DDFA_V2) on the CPU, without PyTorch at inference.

Public API::

    from tddfa import FaceAligner
    result = FaceAligner().align("photo.jpg")
    for face in result.faces:
        face.landmarks       # (68, 3) float32, image pixels
        face.pose.yaw        # degrees
"""

from __future__ import annotations

from tddfa.errors import AssetError, DependencyError, InputError, ModelError, TddfaError
from tddfa.face.results import Face, ImageResult, Pose
from tddfa.models.registry import list_models

__version__ = "0.1.0"

__all__ = [
    "FaceAligner",
    "VideoAligner",
    "Face",
    "Pose",
    "ImageResult",
    "TddfaError",
    "InputError",
    "AssetError",
    "ModelError",
    "DependencyError",
    "list_models",
    "__version__",
]


def __getattr__(name: str):
    # Heavy modules (ONNX Runtime, OpenCV) load on first use, keeping `import tddfa` cheap.
    if name == "FaceAligner":
        from tddfa.pipeline.aligner import FaceAligner

        return FaceAligner
    if name == "VideoAligner":
        from tddfa.video.tracker import VideoAligner

        return VideoAligner
    raise AttributeError(f"module 'tddfa' has no attribute {name!r}")
