"""Pipelines that join detection, cropping, regression and reconstruction:
:class:`~tddfa.pipeline.aligner.FaceAligner` (image mode)."""

from tddfa.pipeline.aligner import FaceAligner, faces_from_params

__all__ = ["FaceAligner", "faces_from_params"]
