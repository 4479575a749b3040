"""Face detection: FaceBoxes (:mod:`.faceboxes`) as an ONNX graph built from the official
weights, with its prior boxes, decoding and NMS in NumPy."""

from tddfa.detection.faceboxes import FaceBoxesDetector, box_iou, nms

__all__ = ["FaceBoxesDetector", "box_iou", "nms"]
