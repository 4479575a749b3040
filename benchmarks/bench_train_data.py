"""Is training compute-bound? Time the data pipeline (read, crop, augment, collate one batch)
against one training step of the network (forward + backward + AdamW), side by side in one
process, for a training config.

    python benchmarks/bench_train_data.py --config configs/finetune_mb05_march.yaml --batches 5
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    import numpy as np
    import torch

    from tddfa.train.augment import Augmenter
    from tddfa.train.config import load_config
    from tddfa.train.dataset import FaceDataset, collate_skip
    from tddfa.train.losses import FWPDCLoss, LandmarkLoss, TorchMorphable
    from tddfa.train.model import build_model
    from tddfa.train.trainer import _load_source

    torch.set_num_threads(1)
    cfg = load_config(args.config)
    ss = _load_source(cfg["data"]["train"][0], None)
    mm = TorchMorphable(cfg["loss"]["vertices"])
    ds = FaceDataset(ss, mm.mean.numpy(), mm.std.numpy(), Augmenter.from_config(cfg["augment"]))
    rng = np.random.default_rng(0)
    bs = args.batch_size
    t_data, batches = [], []
    for _ in range(args.batches):
        idx = rng.integers(0, len(ds), bs)
        t0 = time.perf_counter()
        batches.append(collate_skip([ds[int(i)] for i in idx]))
        t_data.append(time.perf_counter() - t0)
    model = build_model(0.5, "mb05")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    fw, lm = FWPDCLoss(mm), LandmarkLoss(mm)
    t_step = []
    for x, p, pts, _ in batches:
        t0 = time.perf_counter()
        out = model(x)
        loss = fw(out[0], p) + lm(out[0], pts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t_step.append(time.perf_counter() - t0)
    d, s = float(np.median(t_data)), float(np.median(t_step))
    print(f"batch {bs}: data {d:.2f} s, network step {s:.2f} s (medians of {args.batches}); "
          f"data / step = {d / s:.2f} (< 1: one data worker keeps up, training is compute-bound)")


if __name__ == "__main__":
    main()
