"""Batch alignment of many images: on one machine (:func:`run_local`: decode-ahead threads,
worker processes, JSON / JSON-lines / Parquet output, resume, failures file) and on a Ray
cluster (:func:`tddfa.batch.ray_engine.run_ray`, extra ``tddfa[ray]``)."""

from tddfa.batch.local import BatchSummary, run_local
from tddfa.batch.sinks import FORMATS
from tddfa.batch.work import AlignOptions, ImageWorker

__all__ = ["AlignOptions", "BatchSummary", "FORMATS", "ImageWorker", "run_local"]
