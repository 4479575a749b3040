"""Input and output at the edge of the system: image decoding and writing (:mod:`.images`),
video sources and the video writer (:mod:`.video`), and atomic file writes (:mod:`.atomic`).

Nothing here knows about faces; everything above uses these to touch the file system.
"""
