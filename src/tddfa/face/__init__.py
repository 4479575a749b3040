"""What a face is, geometrically: the 3D Morphable Model and its 62 parameters
(:mod:`.morphable_model`), head pose (:mod:`.pose`), the crop policies that cut a face out for the
network (:mod:`.crop`), fitting parameters to landmarks (:mod:`.fitting`) and the frozen result
types (:mod:`.results`).
"""

from tddfa.face.results import Face, ImageResult, Pose

__all__ = ["Face", "ImageResult", "Pose"]
