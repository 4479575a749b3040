"""Training the 3DDFA V1 cascade (PyTorch, ``train`` extra): ``tddfa train --config
configs/cascade.yaml`` (a config with a ``cascade:`` section comes here).

Procedure (the paper's, at CPU scale):

1. Every training and validation face is cropped once (its manifest roi → 120×120, cached as
   ``out_dir/crops_{train,val}.npy``).
2. Stage 0: the released V2 ``mb05`` estimate of every crop (``cascade.start: mb05``), or V1's
   own start, the mean face (the parameter mean) in the crop (``start: mean``).
3. Stage k = 1 … K: a :class:`~tddfa.v1.net.CascadeStageNet` is trained on the previous stage's
   outputs over the training set — PNCC and PAF re-rendered from those estimates every batch,
   the input estimate jittered by ``train.jitter`` × the per-parameter residual spread (so the
   stage sees errors as large as on unseen faces, where the released model is less accurate
   than on the faces it was trained on) — then run over the training and validation sets to
   give stage k's estimates. Losses (``loss.main``): ``vdc``, ``wpdc``, ``fwpdc`` (from
   :mod:`tddfa.train.losses`) or ``owpdc`` (:mod:`tddfa.v1.owpdc`), plus optional
   ``loss.landmark_weight`` × the 68-landmark distance, all on the updated estimate.
   With ``cascade.yaw_gate: true`` the stage then gets the yaw gate (``max_yaw``, one of
   :data:`GATE_CANDIDATES`) with the lowest validation NME: it refines only estimates within
   ``±max_yaw`` and passes the others through (on training and validation estimates alike).
4. After each stage: validation NME (68 landmarks against the annotations, percent, box
   normalisation), the stage's ONNX graph ``stage{k}.onnx`` (exported with ``torch.onnx``; the
   graph takes the uint8 crop, PNCC and PAF and outputs the de-normalised update ``delta``) and
   ``cascade.json`` (:func:`tddfa.v1.cascade.write_manifest`: the stage graphs with their
   SHA-256, start, kernel, pose, the validation table and the run's summary), so the output
   folder loads as a cascade (``--checkpoint out_dir``). Each stage checkpoints
   ``stage{k}/last.pth`` every ``train.ckpt_every`` steps and resumes from it; a finished stage
   (``stage{k}/done.json``) is not retrained.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from tddfa.errors import InputError, require

torch = require("torch", "train")

__all__ = ["CASCADE_DEFAULTS", "train_cascade", "cascade_config"]

log = logging.getLogger(__name__)

CASCADE_DEFAULTS: dict[str, Any] = {
    "seed": 0, "out_dir": "runs/cascade", "threads": 1,
    "cascade": {"stages": 2, "start": "mb05", "kernel": 3, "pose": "matrix", "yaw_gate": False},
    "data": {"train": [], "val": None, "limit": None, "val_limit": None},
    "loss": {"main": "vdc", "vertices": 25, "landmark_weight": 0.0, "landmark_target": "params",
             "owpdc_lambda": 1.0, "quat_weight": 1.0},
    "optim": {"lr": 1.0e-3, "weight_decay": 1.0e-4, "warmup_steps": 50},
    "train": {"steps": 1000, "batch_size": 32, "log_every": 50, "ckpt_every": 200, "jitter": 1.0,
              "progress": True},
}


from tddfa.train.losses import landmark_targets  # noqa: E402

#: Scale of one network output unit for a scaled-quaternion component (‖q‖ ≈ 0.019 for a face
#: filling the crop, so 0.01 is about half of it); shared with the inference side.
from tddfa.v1.cascade import QUAT_STEP  # noqa: E402
from tddfa.v1.features import render_features  # noqa: E402


def cascade_config(cfg: dict) -> dict:
    """``cfg`` merged over :data:`CASCADE_DEFAULTS` (keys of the generic trainer dropped)."""
    from tddfa.train.config import _expand, _merge

    keep = {k: cfg[k] for k in CASCADE_DEFAULTS if k in cfg}
    out = _merge(CASCADE_DEFAULTS, keep)
    if out["cascade"]["start"] not in ("mb05", "mean"):
        raise InputError(f"cascade.start must be 'mb05' or 'mean', got {out['cascade']['start']!r}")
    if out["cascade"]["pose"] not in ("matrix", "quaternion"):
        raise InputError(f"cascade.pose must be 'matrix' or 'quaternion', got {out['cascade']['pose']!r}")
    if not isinstance(out["cascade"]["yaw_gate"], bool):
        raise InputError(f"cascade.yaw_gate must be true or false, got {out['cascade']['yaw_gate']!r}")
    if out["loss"]["landmark_target"] not in ("params", "labels"):
        raise InputError("loss.landmark_target must be 'params' or 'labels', got "
                         f"{out['loss']['landmark_target']!r}")
    if out["loss"]["main"] not in ("vdc", "wpdc", "fwpdc", "owpdc"):
        raise InputError(f"loss.main must be vdc, wpdc, fwpdc or owpdc, got {out['loss']['main']!r}")
    return _expand(out)


def _load_set(spec: Any, cache: Path, limit: int | None):
    from tddfa.train.trainer import _load_source

    specs = spec if isinstance(spec, list) else [spec]
    from tddfa.train.samples import SampleSet

    sets = [_load_source(s, cache) for s in specs]
    ss = SampleSet.concat(sets)
    if limit:
        ss = ss.subset(np.arange(min(int(limit), len(ss))))
    return ss


def _crops(ss, path: Path) -> np.ndarray:
    """All crops ``(N, 120, 120, 3)`` uint8 (cached at ``path``)."""
    from tddfa.face.crop import crop_roi
    from tddfa.train.dataset import _read_image

    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if len(arr) == len(ss):
            return np.array(arr)
    out = np.zeros((len(ss), 120, 120, 3), np.uint8)
    bad = 0
    for i, (img, roi) in enumerate(zip(ss.images, ss.roi_boxes, strict=True)):
        try:
            out[i] = crop_roi(_read_image(str(img)), roi)
        except InputError as exc:
            bad += 1
            log.warning("skipping unreadable sample %s: %s", img, exc)
    if bad:
        log.warning("%d unreadable images (zero crops)", bad)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)
    return out


def _start_estimates(crops: np.ndarray, start: str) -> np.ndarray:
    from tddfa.models.regressor import Regressor, load_param_stats

    if start == "mean":
        mean, _ = load_param_stats()
        return np.tile(mean, (len(crops), 1)).astype(np.float32)
    reg = Regressor("mb05", threads=1)
    return np.concatenate([reg.predict(crops[i:i + 256]) for i in range(0, len(crops), 256)])


def _label_targets(ss) -> np.ndarray:
    """The labelled landmarks ``(N, 68, 2)`` float32 in each sample's crop frame (x right, y up;
    NaN where a sample has none): the landmark loss's target with ``landmark_target: labels``
    (300W-LP style when the data were made with ``--march``)."""
    from tddfa.face.fitting import image_to_crop_frame

    if ss.landmarks is None:
        raise InputError("loss.landmark_target: labels needs training data with landmarks")
    return image_to_crop_frame(ss.landmarks, ss.roi_boxes).astype(np.float32)


def _landmark_errors(params: np.ndarray, ss) -> np.ndarray:
    """Per-sample 2-D NME ``(N,)`` (percent) of the 68 landmarks of ``params`` against the
    annotations ``ss.landmarks`` (which must be present)."""
    from tddfa.face.fitting import nme
    from tddfa.face.morphable_model import load_morphable_model, to_image_frame

    mm = load_morphable_model()
    lm = to_image_frame(mm.reconstruct(params.astype(np.float32)), ss.roi_boxes)[..., :2]
    return nme(lm, ss.landmarks) * 100


def _landmark_nme(params: np.ndarray, ss) -> float:
    """Mean 2-D NME (percent) of the 68 landmarks of ``params`` against the annotations (NaN
    without annotations)."""
    if ss.landmarks is None:
        return float("nan")
    return float(np.mean(_landmark_errors(params, ss)))


class _Stage:
    """Training state of one stage."""

    def __init__(self, cfg: dict, k: int, std: np.ndarray) -> None:
        from tddfa.v1.net import CascadeStageNet

        self.k = k
        self.quat = cfg["cascade"]["pose"] == "quaternion"
        self.net = CascadeStageNet(std, cfg["cascade"]["kernel"], n_out=57 if self.quat else 62)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg["optim"]["lr"],
                                     weight_decay=cfg["optim"]["weight_decay"])
        self.step = 0


def _apply(net_out: torch.Tensor, start: torch.Tensor, quat: bool, std: torch.Tensor) -> torch.Tensor:
    """The updated de-normalised estimate from the stage output."""
    return _apply_q(net_out, start, quat, std)[0]


def _apply_q(net_out: torch.Tensor, start: torch.Tensor, quat: bool, std: torch.Tensor):
    """``(new params (B, 62), new scaled quaternion (B, 4) or None)``."""
    if not quat:
        return start + net_out, None
    from tddfa.v1.quaternion import params_from_quaternion_torch, quaternion_params_torch

    q = quaternion_params_torch(start)  # (B, 57) de-normalised
    scale = torch.cat([torch.full_like(std[:, :4], QUAT_STEP), std[:, 3:12:4], std[:, 12:]], dim=1)
    qp = q + net_out * scale
    return params_from_quaternion_torch(qp), qp[:, :4]


def _run_stage(net, crops, est, kernel, quat, std_t, batch=64) -> np.ndarray:
    """Stage outputs ``(N, 62)`` for inputs ``est``; a non-finite output keeps the input."""
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            c, p = crops[i:i + batch], est[i:i + batch]
            pn, pa = render_features(c, p, kernel)
            d = net(torch.from_numpy(c), torch.from_numpy(pn), torch.from_numpy(pa))
            new = _apply(d, torch.from_numpy(p), quat, std_t).numpy()
            bad = ~np.isfinite(new).all(axis=1)
            new[bad] = p[bad]
            out.append(new.astype(np.float32))
    net.train()
    return np.concatenate(out) if out else np.zeros((0, 62), np.float32)


def _losses(cfg: dict):
    from tddfa.train.losses import FWPDCLoss, LandmarkLoss, TorchMorphable, VDCLoss, WPDCLoss
    from tddfa.v1.owpdc import OWPDCLoss

    lc = cfg["loss"]
    mm = TorchMorphable(lc["vertices"])
    main = lc["main"]
    if main == "owpdc":
        fn = OWPDCLoss(TorchMorphable("sparse"), lam=lc["owpdc_lambda"])
    else:
        fn = {"vdc": VDCLoss, "wpdc": WPDCLoss, "fwpdc": FWPDCLoss}[main](mm)
    lm = LandmarkLoss(TorchMorphable("sparse")) if lc["landmark_weight"] > 0 else None
    return mm, fn, lm


def train_cascade(config: dict, *, resume: bool = True) -> dict[str, Any]:
    """Train (or resume) the cascade described by ``config``; returns the summary (``stages``
    count, ``table`` of train/validation NME per stage, ...), written into the folder's
    ``cascade.json`` manifest as well."""
    from tddfa.models.regressor import load_param_stats

    cfg = cascade_config(config)
    torch.manual_seed(cfg["seed"])
    torch.set_num_threads(int(cfg["threads"]))
    rng = np.random.default_rng(cfg["seed"])
    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    if not cfg["data"]["train"]:
        raise InputError("data.train is empty: list at least one source (see configs/cascade.yaml)")
    train_ss = _load_set(cfg["data"]["train"], out, cfg["data"]["limit"])
    val_ss = (_load_set(cfg["data"]["val"], out, cfg["data"]["val_limit"])
              if cfg["data"]["val"] else None)
    t0 = time.perf_counter()
    crops = _crops(train_ss, out / "crops_train.npy")
    vcrops = _crops(val_ss, out / "crops_val.npy") if val_ss is not None else None
    mean, std = load_param_stats()
    std_t = torch.from_numpy(std.reshape(1, -1))
    mean_t = torch.from_numpy(mean.reshape(1, -1))
    kernel, quat = int(cfg["cascade"]["kernel"]), cfg["cascade"]["pose"] == "quaternion"
    est = _start_estimates(crops, cfg["cascade"]["start"])
    vest = _start_estimates(vcrops, cfg["cascade"]["start"]) if vcrops is not None else None
    gt = train_ss.params.astype(np.float32)
    gt_lm = _label_targets(train_ss) if cfg["loss"]["landmark_target"] == "labels" else None
    table = [{"stage": 0, "train_nme": _landmark_nme(est, train_ss),
              "val_nme": _landmark_nme(vest, val_ss) if val_ss is not None else None}]
    log.info("stage 0 (%s): train NME %.3f%%, val NME %s", cfg["cascade"]["start"],
             table[0]["train_nme"], table[0]["val_nme"])
    mm, loss_fn, lm_fn = _losses(cfg)
    for k in range(1, int(cfg["cascade"]["stages"]) + 1):
        sdir = out / f"stage{k}"
        sdir.mkdir(exist_ok=True)
        stage = _Stage(cfg, k, std)
        done = sdir / "done.json"
        if resume and done.is_file():
            stage.net.load_state_dict(_load_weights(sdir / "model.pth"))
        else:
            _train_stage(stage, cfg, crops, est, gt, mm, loss_fn, lm_fn, mean_t, std_t, rng, sdir,
                         resume, gt_lm)
        new = _run_stage(stage.net, crops, est, kernel, quat, std_t)
        row = {"stage": k}
        if vcrops is not None:
            vnew = _run_stage(stage.net, vcrops, vest, kernel, quat, std_t)
            if cfg["cascade"]["yaw_gate"]:
                row["max_yaw"], row["val_nme_ungated"] = _choose_gate(vest, vnew, val_ss)
                vnew = _gated(vest, vnew, row["max_yaw"])
                new = _gated(est, new, row["max_yaw"])
            vest = vnew
            row["val_nme"] = _landmark_nme(vest, val_ss)
        elif cfg["cascade"]["yaw_gate"]:
            raise InputError("cascade.yaw_gate chooses the gate on validation: set data.val")
        est = new
        row["train_nme"] = _landmark_nme(est, train_ss)
        table.append(row)
        log.info("stage %d: train NME %.3f%%, val NME %s", k, row["train_nme"], row.get("val_nme"))
        _export_onnx(stage.net, out / f"stage{k}.onnx", kernel)
        done.write_text(json.dumps(row))
    summary = {"stages": int(cfg["cascade"]["stages"]), "start": cfg["cascade"]["start"],
               "kernel": kernel, "pose": cfg["cascade"]["pose"], "loss": cfg["loss"]["main"],
               "table": table, "seconds": time.perf_counter() - t0,
               "onnx": [str(out / f"stage{k}.onnx") for k in range(1, len(table))],
               "train_faces": len(train_ss), "val_faces": 0 if val_ss is None else len(val_ss)}
    from tddfa.v1.cascade import write_manifest

    write_manifest(out, summary)  # out_dir is a cascade folder: `--checkpoint out_dir` loads it
    return summary


#: Candidate yaw gates (degrees) for ``cascade.yaw_gate``; ``None`` = refine every face.
GATE_CANDIDATES: tuple[float | None, ...] = (30, 40, 50, 60, 65, 70, 75, 80, 85, 90, None)


def _gated(before: np.ndarray, after: np.ndarray, max_yaw: float | None) -> np.ndarray:
    """``after`` where the stage's input ``before`` is within the gate, else ``before``."""
    from tddfa.v1.cascade import yaw_within

    if max_yaw is None:
        return after
    return np.where(yaw_within(before, max_yaw)[:, None], after, before).astype(np.float32)


def _choose_gate(before: np.ndarray, after: np.ndarray, val_ss) -> tuple[float | None, float]:
    """The gate of :data:`GATE_CANDIDATES` with the lowest mean validation NME (the first on a
    tie, so the tightest), and the ungated stage's validation NME."""
    from tddfa.v1.cascade import yaw_within

    if val_ss.landmarks is None:
        raise InputError("cascade.yaw_gate needs validation data with landmarks")
    e0, e1 = _landmark_errors(before, val_ss), _landmark_errors(after, val_ss)
    scores = [(float(np.nanmean(e1 if g is None else np.where(yaw_within(before, g), e1, e0))), g)
              for g in GATE_CANDIDATES]
    best = min(scores, key=lambda x: x[0])
    log.info("yaw gate: %s", ", ".join(f"{g if g is not None else 'none'}: {v:.3f}%" for v, g in scores))
    return best[1], float(np.nanmean(e1))


def _load_weights(path: Path) -> dict:
    from tddfa.assets.serialization import load_torch_checkpoint

    ck = load_torch_checkpoint(path)
    sd = ck["state_dict"] if isinstance(ck, dict) and "state_dict" in ck else ck
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in sd.items()}


def _train_stage(stage: _Stage, cfg, crops, est, gt, mm, loss_fn, lm_fn, mean_t, std_t, rng,
                 sdir: Path, resume: bool, gt_lm: np.ndarray | None = None) -> None:
    tc, kernel = cfg["train"], int(cfg["cascade"]["kernel"])
    last = sdir / "last.pth"
    if resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        stage.net.load_state_dict(state["model"])
        stage.opt.load_state_dict(state["optim"])
        stage.step = int(state["step"])
        rng = np.random.default_rng(int(state["seed"]) + stage.step)
        log.info("stage %d: resumed at step %d", stage.k, stage.step)
    n, bs, steps = len(crops), int(tc["batch_size"]), int(tc["steps"])
    resid = (gt - est) / std_t.numpy()
    spread = np.std(resid, axis=0) * float(tc["jitter"])
    base_lr, warm = cfg["optim"]["lr"], int(cfg["optim"]["warmup_steps"])
    lw = float(cfg["loss"]["landmark_weight"])
    quat = stage.quat
    log_rows = []
    bar = None
    if tc.get("progress", True):
        try:
            from tqdm import tqdm

            bar = tqdm(total=steps, initial=stage.step, desc=f"stage {stage.k}", unit="step")
        except ImportError:  # pragma: no cover
            bar = None
    t0 = time.perf_counter()
    while stage.step < steps:
        idx = rng.integers(0, n, bs)
        p_in = est[idx] + (rng.standard_normal((bs, 62)) * spread * std_t.numpy()[0]).astype(np.float32)
        pn, pa = render_features(crops[idx], p_in, kernel)
        d = stage.net(torch.from_numpy(crops[idx]), torch.from_numpy(pn), torch.from_numpy(pa))
        start = torch.from_numpy(p_in)
        new, q_new = _apply_q(d, start, quat, std_t)
        pred = (new - mean_t) / std_t
        target = (torch.from_numpy(gt[idx]) - mean_t) / std_t
        if cfg["loss"]["main"] == "owpdc":
            loss = loss_fn(pred, target, (start - mean_t) / std_t)
        else:
            loss = loss_fn(pred, target)
        parts = {"main": float(loss.detach())}
        if lm_fn is not None:
            if gt_lm is None:
                lml = lm_fn(pred, target)
            else:  # labelled landmarks where a sample has them, its parameters' otherwise
                lml = lm_fn(pred, landmark_targets(lm_fn.mm, target, torch.from_numpy(gt_lm[idx])))
            parts["landmark"] = float(lml.detach())
            loss = loss + lw * lml
        if quat:
            from tddfa.v1.quaternion import unit_quaternion_loss

            ql = unit_quaternion_loss(q_new, torch.from_numpy(gt[idx]))
            parts["quat"] = float(ql)
            loss = loss + float(cfg["loss"]["quat_weight"]) * ql
        lr = base_lr * min(1.0, (stage.step + 1) / max(1, warm)) * 0.5 * (
            1 + math.cos(math.pi * stage.step / steps))
        for g in stage.opt.param_groups:
            g["lr"] = lr
        stage.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(stage.net.parameters(), 10.0)
        stage.opt.step()
        stage.step += 1
        if bar is not None:
            bar.update(1)
        if stage.step % int(tc["log_every"]) == 0 or stage.step == steps:
            log_rows.append({"step": stage.step, "loss": float(loss.detach()), **parts, "lr": lr,
                             "seconds": time.perf_counter() - t0})
            log.info("stage %d step %d loss %.4g", stage.k, stage.step, float(loss.detach()))
            with open(sdir / "log.jsonl", "a") as f:
                f.write(json.dumps(log_rows[-1]) + "\n")
        if stage.step % int(tc["ckpt_every"]) == 0 or stage.step == steps:
            tmp = last.with_suffix(".tmp")
            torch.save({"model": stage.net.state_dict(), "optim": stage.opt.state_dict(),
                        "step": stage.step, "seed": int(cfg["seed"])}, tmp)
            tmp.replace(last)
    if bar is not None:
        bar.close()
    sd = {k: v.detach().numpy() for k, v in stage.net.state_dict().items()}
    tmp = sdir / "model.tmp"
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in sd.items()}}, tmp)
    tmp.replace(sdir / "model.pth")


def _export_onnx(net, path: Path, kernel: int) -> Path:
    """The stage as ONNX, its input path rewritten by :func:`tddfa.v1.stage_graph.fast_inputs`:
    inputs ``image`` ``(B, 6, 120, 120)`` (crop and PNCC channels-first) and ``paf_chw``
    ``(B, 3, 64k, 64k)`` uint8 (the PAF as planes; :func:`tddfa.v1.features.stage_inputs`);
    output ``delta`` ``(B, n_out)``."""
    import io

    net.eval()
    size = 64 * kernel
    ex = (torch.zeros(1, 120, 120, 3, dtype=torch.uint8), torch.zeros(1, 120, 120, 3, dtype=torch.uint8),
          torch.zeros(1, size, size, 3, dtype=torch.uint8))
    buf = io.BytesIO()
    torch.onnx.export(net, ex, buf, input_names=["crop", "pncc", "paf"], output_names=["delta"],
                      dynamic_axes={"crop": {0: "batch"}, "pncc": {0: "batch"}, "paf": {0: "batch"},
                                    "delta": {0: "batch"}}, opset_version=17, dynamo=False)
    import onnx

    from tddfa.v1.stage_graph import fast_inputs

    model = fast_inputs(onnx.load_from_string(buf.getvalue()))
    for key, value in (("arch", "tddfa_v1_cascade_stage"), ("kernel", str(kernel)),
                       ("n_out", str(net.out.out_features))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
    net.train()
    return path
