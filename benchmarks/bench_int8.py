"""Does an int8 regressor or detector buy speed here? mb05 (or FaceBoxes) quantised with ONNX
Runtime's static quantisation against the float32 graph, side by side.

    python benchmarks/bench_int8.py [--calib 200] [--rounds 150]
    python benchmarks/bench_int8.py --detector [--calib 40] [--rounds 10]

``--detector``: FaceBoxes, calibrated on the first ``--calib`` helen_train images (resized to
320×320; training data), timed on the sample photos at the detector's own input scale; prints
ms per photo and the largest change of a face score against float32.

Calibration: the first ``--calib`` 300W helen_train crops (training data; never AFLW2000-3D),
MinMax ranges, uint8 activations and int8 per-channel weights, in both QDQ and QOperator form,
with and without ``reduce_range`` (7-bit weights, which CPUs without VNNI need to avoid
saturating their 16-bit accumulations). Prints median ms per face at batch 1 and batch 8
(interleaved rounds, both ONNX Runtime threads, idle threads sleeping as in tddfa) and the mean
relative parameter error of each int8 graph against float32 on 64 helen_test crops. Needs the
``dev`` extra (``onnx``). Nothing here is used by the library: the figures decide whether an
int8 option is worth shipping.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDDFA_SHARED", ROOT.parent / "shared"))
os.environ.setdefault("TDDFA_HOME", str(SHARED / "assets"))


def _crops(split: str, n: int) -> np.ndarray:
    from tddfa.face.crop import crop_roi, roi_from_landmarks
    from tddfa.io.images import read_image

    root = SHARED / "datasets/300w-crops"
    with np.load(root / f"{split}.npz") as z:
        names, lms = z["names"][:n], z["landmarks"][:n]
    return np.stack([crop_roi(read_image(root / split / f"{nm}.jpg"), roi_from_landmarks(lm))
                     for nm, lm in zip(names, lms, strict=True)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=None, help="calibration images (200; 40 with --detector)")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds (150; 10 with --detector)")
    ap.add_argument("--detector", action="store_true", help="FaceBoxes instead of mb05")
    args = ap.parse_args()
    if args.detector:
        return _detector(args.calib or 40, args.rounds or 10)
    args.calib, args.rounds = args.calib or 200, args.rounds or 150

    from onnxruntime.quantization import CalibrationDataReader

    from tddfa.models.regressor import Regressor

    reg = Regressor("mb05")
    calib, test = _crops("helen_train", args.calib), _crops("helen_test", 64)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            if self.i >= len(calib):
                return None
            self.i += 8
            return {"input": calib[self.i - 8:self.i]}

    sessions = _quantised(reg._build_graph(), Reader)
    ref = sessions["float32"].run(None, {"input": test})[0]
    times = {(n, b): [] for n in sessions for b in (1, 8)}
    for s in sessions.values():
        s.run(None, {"input": test[:8]})
    for _ in range(args.rounds):
        for n, s in sessions.items():
            for b in (1, 8):
                t = time.perf_counter()
                s.run(None, {"input": test[:b]})
                times[(n, b)].append((time.perf_counter() - t) * 1e3 / b)
    load = os.getloadavg()
    print(f"mb05, {args.calib} helen_train calibration crops; load average {load[0]:.1f}")
    print(f"{'graph':<30}{'batch 1 ms':>12}{'batch 8 ms/face':>17}{'param rel. error':>18}")
    for n, s in sessions.items():
        err = float(np.abs(s.run(None, {"input": test})[0] - ref).mean() / np.abs(ref).mean())
        b1, b8 = (float(np.median(times[(n, b)])) for b in (1, 8))
        print(f"{n:<30}{b1:>12.3f}{b8:>17.3f}{err:>18.4f}")


def _quantised(graph: bytes, reader_cls) -> dict:
    """Sessions of the float32 graph and its int8 variants (QDQ / QOperator, with and without
    reduce_range), calibrated with fresh ``reader_cls()`` readers; idle threads sleep as in tddfa."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tmp = Path(tempfile.mkdtemp(prefix="tddfa-int8-"))
    fp32 = tmp / "fp32.onnx"
    fp32.write_bytes(graph)
    pre = tmp / "pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    graphs = {"float32": fp32}
    for name, fmt, rr in (("int8 QDQ reduce_range", QuantFormat.QDQ, True),
                          ("int8 QOperator reduce_range", QuantFormat.QOperator, True),
                          ("int8 QDQ", QuantFormat.QDQ, False)):
        out = tmp / f"{len(graphs)}.onnx"
        quantize_static(str(pre), str(out), reader_cls(), quant_format=fmt, per_channel=True,
                        reduce_range=rr, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        graphs[name] = out
    sessions = {}
    for name, path in graphs.items():
        so = ort.SessionOptions()
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sessions


def _detector(n_calib: int, rounds: int) -> None:
    import cv2
    from onnxruntime.quantization import CalibrationDataReader

    from tddfa.assets import registry as assets
    from tddfa.assets.serialization import load_torch_checkpoint, state_dict_from_checkpoint
    from tddfa.detection.faceboxes import FaceBoxesDetector
    from tddfa.models.networks import build_faceboxes_onnx

    root = SHARED / "datasets/300w-crops/helen_train"
    calib = [cv2.resize(cv2.imread(str(p)), (320, 320)) for p in sorted(root.glob("*.jpg"))[:n_calib]]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            img = next(self.it, None)
            return None if img is None else {"input": img[None]}

    graph = build_faceboxes_onnx(state_dict_from_checkpoint(load_torch_checkpoint(
        assets.resolve("faceboxes"))))
    sessions = _quantised(graph, Reader)
    det = FaceBoxesDetector()
    print(f"FaceBoxes, {len(calib)} helen_train calibration images; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'photo (network input)':<34}{'graph':<30}{'ms':>8}{'max score change':>18}")
    for name in ("emma.jpg", "trump_hillary.jpg", "JianzhuGuo.jpg", "0013.jpg"):
        img = cv2.imread(str(SHARED / "samples" / name))
        if img is None:
            continue
        s = det.scale_for(*img.shape[:2])
        small = img if s == 1 else cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)))
        feed = {"input": np.ascontiguousarray(small)[None]}
        ref = sessions["float32"].run(["conf"], feed)[0][0, :, 1]
        times: dict[str, list[float]] = {n: [] for n in sessions}
        for _ in range(rounds):
            for n, sess in sessions.items():
                t = time.perf_counter()
                sess.run(["loc", "conf"], feed)
                times[n].append((time.perf_counter() - t) * 1e3)
        for n, sess in sessions.items():
            d = float(np.abs(sess.run(["conf"], feed)[0][0, :, 1] - ref).max())
            label = f"{name} ({small.shape[1]}x{small.shape[0]})"
            print(f"{label:<34}{n:<30}{np.median(times[n]):>8.1f}{d:>18.3f}")


if __name__ == "__main__":
    main()
