"""Video and webcam: frame sources, a multi-face tracker with identities, smoothing, overlays and
per-frame JSON Lines.

Modes (as MediaPipe's): *image* mode is :class:`tddfa.pipeline.aligner.FaceAligner` (every image on its
own); *video* mode is :class:`VideoAligner`, whose calls carry timestamps in milliseconds and whose
faces carry a ``track_id``.

    >>> from tddfa.video import VideoAligner, open_video
    >>> va = VideoAligner(smoothing="centered")
    >>> with open_video("talk.mp4") as src:
    ...     for result in va.track(src):          # FrameResult per readable frame
    ...         for face in result.faces:
    ...             face.track_id, face.landmarks  # int, (68, 3) image pixels

Tracking (3DDFA_V2's landmark crop policy): faces are detected on the first frame; each tracked
face is cropped in the next frame from its previous landmarks (all faces of a frame in one
batch). A scene cut (colour-histogram change, ``cut_threshold``) ends every track, and ids are
never reused. Each frame every track is checked geometrically (not finite, smaller than
``min_face_size``, size or pose jump, mostly outside the frame → lost), and every
``validate_every`` frames by the detector on a small tile of its enlarged crop; a track whose
face the detector does not confirm is re-aligned, re-detected on the full frame or ended, and
is not output meanwhile. Full-frame detection also runs after a cut, when a track is lost and
every ``redetect_every`` frames; detections are assigned to tracks (overlap and distance,
Hungarian), revive recently lost tracks of the same shot, or open new tracks. A crop region
that moved less than ``roi_tolerance`` of its side is kept as it was, so a still face gives
bit-identical results frame after frame.

Decoding note: MP4/MOV edit lists are ignored (``ignore_editlist``), so every coded frame is
returned, including frames an edit list would hide from a player (the sample ``obama.mp4`` has
158 coded frames, of which its edit list shows the last 55).

Modules: :mod:`.tracker` (:class:`VideoAligner` frame loop, :class:`FrameResult`), :mod:`.tracks`
(tracks, identities, association, scene cuts, the tile detector), :mod:`.mot` (multi-shot
synthetic clips and identity metrics), :mod:`.smoothing`,
:mod:`.stability` (3DDFA_V2's stability metric on synthetic motion), :mod:`.overlay`,
:mod:`.records` (JSON Lines); frame sources and the video writer live in :mod:`tddfa.io.video`.
"""

from tddfa.io.video import (
    ArraySource,
    CameraSource,
    Frame,
    OpenCVFileSource,
    PyAVFileSource,
    VideoSource,
    VideoWriter,
    open_camera,
    open_video,
)
from tddfa.video.overlay import OVERLAYS, draw_landmarks, draw_overlay
from tddfa.video.records import JsonlWriter, frame_record
from tddfa.video.tracker import FrameResult, VideoAligner

__all__ = [
    "Frame",
    "FrameResult",
    "VideoSource",
    "OpenCVFileSource",
    "PyAVFileSource",
    "CameraSource",
    "ArraySource",
    "open_video",
    "open_camera",
    "VideoAligner",
    "draw_landmarks",
    "draw_overlay",
    "OVERLAYS",
    "VideoWriter",
    "JsonlWriter",
    "frame_record",
]
