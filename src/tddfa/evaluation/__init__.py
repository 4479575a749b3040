"""Evaluation: landmark and pose metrics on arrays, and the standard benchmark protocols.

Metrics (pure functions on arrays):

* :func:`nme` — normalised mean error per face, in **percent**: the mean Euclidean distance
  between predicted and ground-truth points (2-D, or 3-D with both clouds' depth centred), over
  the visible points, divided by a per-face normaliser (:func:`normaliser`: ``"box"`` =
  √(w·h) of the ground-truth points' box, ``"inter-ocular"`` = outer eye corners,
  ``"inter-pupil"`` = eye centres, ``"diagonal"`` = box diagonal).
* :func:`bucket_table` — means per |yaw| bucket ``[0, 30)``, ``[30, 60)``, ``[60, ∞)`` (named
  ``"0-30"``, ``"30-60"``, ``"60-90"`` as in the literature), their mean (``"mean"``) and the
  plain mean over every face (``"all"``).
* :func:`ced_curve` — cumulative error distribution; :func:`pose_mae` — head-pose error.

Protocols (each returns an :class:`EvalResult`; its ``summary`` is what the CLI writes as JSON):

* :func:`eval_aflw2000_crop` — 3DDFA's AFLW2000-3D protocol: the 2,000 given 120×120 crops,
  landmarks mapped back with the crop's roi box; plus head-pose MAE against ``Pose_Para``.
* :func:`eval_aflw2000_detector` — the 450×450 images through a face detector first; each
  image's ground truth is matched to the detection with the largest IoU with the ground-truth
  landmark box; unmatched images are counted as misses (never silently dropped).
* :func:`eval_300w` — 2-D NME (inter-ocular and box) on the 300W face crops.
* :func:`eval_aflw21` — 3DDFA's 21-point AFLW protocol (visible points only).

Pose convention mapping (AFLW2000-3D). ``Pose_Para[0, :3]`` are pitch, yaw, roll in radians of
the dataset's rotation ``Rz(roll)·Ry(yaw)·Rx(pitch)`` (``Rx``, ``Ry``, ``Rz`` the right-handed
elementary rotations). Our rotation (:mod:`tddfa.pose`, crop frame) is the **transpose** of
that matrix; this was verified on the 2,000 faces with mb05: among the 96 combinations of
axis order, signs and y/z flip, it is the only one (up to an equivalent flip) that agrees with
our predictions (mean MAE 4.6° against ≥ 7.6° for the next one). So the ground truth is
compared in the dataset's own convention: our predicted rotation ``R`` is transposed and
decomposed as ``pitch = atan2(M[2,1], M[2,2])``, ``yaw = −asin(M[2,0])``,
``roll = atan2(M[1,0], M[0,0])`` with ``M = Rᵀ`` (:func:`rotation_to_aflw_angles`). Yaw agrees
in sign with our ``Pose.yaw``; pitch and roll differ from ours because the Euler order differs
(ours is Z·Y·X about the crop axes). Following the usual head-pose protocol, only faces whose
three ground-truth angles are within ±99° are scored (1,969 of 2,000); angle differences are
wrapped to ``[-180°, 180°)``.

Modules: :mod:`.metrics`, :mod:`.headpose`, :mod:`.report` (results, JSON, tables),
one per benchmark (:mod:`.aflw2000`, :mod:`.ibug300w`, :mod:`.aflw`), :mod:`.plots`,
:mod:`.model_card` and :mod:`.bench` (per-stage latency). The CLI lives in :mod:`tddfa.cli.eval`.
"""

from tddfa.evaluation.aflw import eval_aflw21
from tddfa.evaluation.aflw2000 import eval_aflw2000_crop, eval_aflw2000_detector, load_aflw2000
from tddfa.evaluation.ibug300w import eval_300w
from tddfa.evaluation.metrics import BUCKET_NAMES, YAW_BUCKETS, bucket_table, nme, normaliser
from tddfa.evaluation.report import EvalResult, write_json

__all__ = [
    "BUCKET_NAMES",
    "YAW_BUCKETS",
    "EvalResult",
    "bucket_table",
    "eval_300w",
    "eval_aflw21",
    "eval_aflw2000_crop",
    "eval_aflw2000_detector",
    "load_aflw2000",
    "nme",
    "normaliser",
    "write_json",
]
