"""Does an int8 regressor buy speed here? mb05 quantised with ONNX Runtime's static quantisation
against the float32 graph, side by side.

    python benchmarks/bench_int8.py [--calib 200] [--rounds 150]

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
    ap.add_argument("--calib", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=150)
    args = ap.parse_args()

    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

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

    tmp = Path(tempfile.mkdtemp(prefix="tddfa-int8-"))
    fp32 = tmp / "fp32.onnx"
    fp32.write_bytes(reg._build_graph())
    pre = tmp / "pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    graphs = {"float32": fp32}
    for name, fmt, rr in (("int8 QDQ reduce_range", QuantFormat.QDQ, True),
                          ("int8 QOperator reduce_range", QuantFormat.QOperator, True),
                          ("int8 QDQ", QuantFormat.QDQ, False)):
        out = tmp / f"{len(graphs)}.onnx"
        quantize_static(str(pre), str(out), Reader(), quant_format=fmt, per_channel=True,
                        reduce_range=rr, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        graphs[name] = out
    sessions = {}
    for name, path in graphs.items():
        so = ort.SessionOptions()
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
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


if __name__ == "__main__":
    main()
