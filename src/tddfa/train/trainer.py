"""The training loop (:class:`Trainer`, :func:`train`): data sources, optimiser and schedule, losses,
checkpoints and resume, validation on 300W helen_test, logging, export."""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tddfa.errors import InputError, require
from tddfa.train.config import _merge, load_config

log = logging.getLogger(__name__)

torch = require("torch", "train")


# ---------------------------------------------------------------------------------------------
# data

def _load_source(src: dict, cache_dir: Path):
    from tddfa.train.samples import (
        fit_300w_split,
        load_manifest,
        read_300wlp,
        read_crops_folder,
        save_manifest,
    )

    kind = src.get("type")
    if kind == "manifest":
        return load_manifest(src["path"])
    if kind == "folder":
        return read_crops_folder(src["images"], src["params"])
    if kind == "300wlp":
        return read_300wlp(src["root"], limit=src.get("limit"))
    if kind == "300w":
        cache = cache_dir / f"labels_{src['split']}.npz"
        if cache.is_file():
            return load_manifest(cache)
        ss, e = fit_300w_split(src["root"], src["split"])
        log.info("fitted %s: %d faces, median NME %.3f%%", src["split"], len(ss), 100 * np.median(e))
        save_manifest(cache, ss, fit_nme=e.astype(np.float32))
        return load_manifest(cache)
    raise InputError(f"unknown data source type {kind!r}; use manifest, folder, 300wlp or 300w")


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _worker_options(workers: int) -> dict:
    """DataLoader options: worker processes are *spawned* (forking a process that already ran
    OpenCV / PyTorch thread pools can deadlock the child)."""
    if workers <= 0:
        return {"num_workers": 0}
    return {"num_workers": workers, "multiprocessing_context": "spawn",
            "worker_init_fn": _worker_init}


# ---------------------------------------------------------------------------------------------

#: values of ``loss.main``
MAIN_LOSSES = ("fwpdc", "wpdc", "vdc", "pdc", "meta", "joint", "none")
#: loss parts logged in ``log.csv``
LOG_PARTS = ("fwpdc", "vdc", "wpdc", "pdc", "lmk", "lm_reg", "distill")


class Trainer:
    """One training run from a merged config (see the module docstring)."""

    def __init__(self, cfg: dict, *, resume: bool = True) -> None:
        self.cfg = cfg
        self.out = Path(cfg["out_dir"])
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.main = self.rank == 0
        self.resume = resume
        torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
        self.skipped = 0

    # -- setup ------------------------------------------------------------------------------
    def _setup(self) -> None:
        from tddfa.train.augment import Augmenter
        from tddfa.train.dataset import FaceDataset
        from tddfa.train.losses import (
            FWPDCLoss,
            LandmarkLoss,
            LandmarkRegressionLoss,
            MetaJoint,
            PDCLoss,
            TorchMorphable,
            VDCLoss,
            WPDCLoss,
        )
        from tddfa.train.model import build_model
        from tddfa.train.samples import SampleSet

        cfg = self.cfg
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("gloo")
        seed = int(cfg["seed"])
        torch.manual_seed(seed + self.rank)
        self.out.mkdir(parents=True, exist_ok=True)
        srcs = cfg["data"]["train"]
        if isinstance(srcs, dict):
            srcs = [srcs]
        if not srcs:
            raise InputError("config data.train lists no training source")
        sets = [_load_source(s, self.out) for s in srcs]
        samples = SampleSet.concat(sets)
        self.skipped += samples.skipped
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(samples))
        n_held = int(cfg["data"].get("heldout") or 0)
        if cfg["loss"]["main"] != "meta":
            n_held = 0
        held_idx, train_idx = order[:n_held], order[n_held:]
        self._held_names = set(map(str, samples.names[held_idx]))
        if cfg["data"].get("limit"):
            train_idx = train_idx[: int(cfg["data"]["limit"])]
        if len(train_idx) == 0:
            raise InputError("no training samples left after the held-out split")
        self.mm = TorchMorphable(cfg["loss"].get("vertices", 25))
        mean, std = self.mm.mean.numpy(), self.mm.std.numpy()
        aug = Augmenter.from_config(cfg.get("augment"))
        self.train_set = FaceDataset(samples.subset(train_idx), mean, std, aug, seed=seed)
        self.held_set = FaceDataset(samples.subset(held_idx), mean, std, None) if n_held else None
        self.n_train = len(train_idx)

        self.model = build_model(float(cfg["model"]["width"]), str(cfg["model"]["init"]))
        for name in cfg["model"].get("reinit") or []:
            mod = getattr(self.model, name, None)
            if not isinstance(mod, torch.nn.Linear):
                raise InputError(f"model.reinit: {name!r} is not a linear head (fc_param, fc_lm)")
            torch.nn.init.zeros_(mod.weight)  # starts at the mean parameters
            torch.nn.init.zeros_(mod.bias)
        trainable = cfg["model"].get("trainable")
        if trainable:
            prefixes = tuple(trainable)
            for n, prm in self.model.named_parameters():
                prm.requires_grad_(n.startswith(prefixes))
        self.teacher = None
        if float(cfg["loss"].get("distill_weight") or 0) > 0:
            self.teacher = build_model(float(cfg["model"]["width"]), str(cfg["model"]["init"]))
            self.teacher.eval()
            for prm in self.teacher.parameters():
                prm.requires_grad_(False)
        self.net = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        oc = cfg["optim"]
        params = [p for p in self.model.parameters() if p.requires_grad]
        if oc["name"] == "sgd":
            self.opt = torch.optim.SGD(params, lr=oc["lr"], momentum=oc["momentum"],
                                       weight_decay=oc["weight_decay"], nesterov=True)
        elif oc["name"] == "adamw":
            self.opt = torch.optim.AdamW(params, lr=oc["lr"], weight_decay=oc["weight_decay"])
        else:
            raise InputError(f"optim.name must be sgd or adamw, got {oc['name']!r}")
        self.steps = int(cfg["train"]["steps"])
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_lambda())

        lc = cfg["loss"]
        self.losses = {"fwpdc": FWPDCLoss(self.mm), "vdc": VDCLoss(self.mm), "wpdc": WPDCLoss(self.mm),
                       "pdc": PDCLoss()}
        self.lm_loss = LandmarkLoss(self.mm)
        self.reg_loss = LandmarkRegressionLoss()
        main = lc["main"]
        if main not in MAIN_LOSSES:
            raise InputError(f"loss.main must be one of {', '.join(MAIN_LOSSES)}, got {main!r}")
        for ph in lc.get("phases") or []:
            if ph.get("main") not in ("fwpdc", "wpdc", "vdc", "pdc"):
                raise InputError(f"loss.phases: main must be fwpdc, wpdc, vdc or pdc, got {ph!r}")
        for k in lc.get("joint") or {}:
            if k not in self.losses:
                raise InputError(f"loss.joint: unknown loss {k!r}; use {sorted(self.losses)}")
        self.meta = None
        if main == "meta":
            mc = lc.get("meta", {})
            self.meta = MetaJoint(
                {"fwpdc": lambda o, t: self.losses["fwpdc"](o[0], t),
                 "vdc": lambda o, t: self.losses["vdc"](o[0], t)},
                metric=lambda o, t: self.lm_loss(o[0], t), lr=float(mc.get("lr", 1e-4)),
                every=int(mc.get("every", 10)), mode=mc.get("mode", "select"),
                normalize=bool(mc.get("normalize", True)),
                reduce=self._all_mean if self.world > 1 else None)
        self.step = 0
        self.best = math.inf
        if self.resume and (self.out / "last.pth").is_file():
            self._load_state(self.out / "last.pth")

    def _all_mean(self, values: dict[str, float]) -> dict[str, float]:
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t, strict=True)}

    def _lr_lambda(self):
        oc = self.cfg["optim"]
        warm = int(oc.get("warmup_steps", 0))
        kind = oc.get("schedule", "cosine")
        total = max(1, self.steps)

        def f(step: int) -> float:
            if warm and step < warm:
                return (step + 1) / warm
            frac = (step - warm) / max(1, total - warm)
            if kind == "cosine":
                return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
            if kind == "step":
                return float(oc.get("gamma", 0.2)) ** sum(frac >= m for m in oc.get("milestones", []))
            if kind in ("none", "constant", None):
                return 1.0
            raise InputError(f"optim.schedule must be cosine, step or none, got {kind!r}")

        return f

    # -- state --------------------------------------------------------------------------------
    def _save_state(self, path: Path) -> None:
        state = {"model": self.model.state_dict(), "optim": self.opt.state_dict(),
                 "sched": self.sched.state_dict(), "step": self.step, "best": self.best,
                 "skipped": self.skipped}
        if self.meta is not None:
            state["meta_counts"] = dict(self.meta.counts)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def _load_state(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        self.sched.load_state_dict(state["sched"])
        self.step = int(state["step"])
        self.best = float(state.get("best", math.inf))
        self.skipped = int(state.get("skipped", 0))
        if self.meta is not None and "meta_counts" in state:
            self.meta.counts.update(state["meta_counts"])
        log.info("resumed from %s at step %d", path, self.step)

    # -- loop ---------------------------------------------------------------------------------
    def _loader(self, epoch: int):
        from torch.utils.data import DataLoader, DistributedSampler

        from tddfa.train.dataset import collate_skip

        self.train_set.set_epoch(epoch)
        bs = int(self.cfg["train"]["batch_size"])
        workers = int(self.cfg["data"].get("workers", 0))
        if self.world > 1:
            sampler = DistributedSampler(self.train_set, shuffle=True, seed=int(self.cfg["seed"]),
                                         drop_last=True)
            sampler.set_epoch(epoch)
            return DataLoader(self.train_set, batch_size=bs, sampler=sampler,
                              collate_fn=collate_skip, drop_last=True, **_worker_options(workers))
        g = torch.Generator()
        g.manual_seed(int(self.cfg["seed"]) * 1000 + epoch)
        return DataLoader(self.train_set, batch_size=bs, shuffle=True, generator=g,
                          collate_fn=collate_skip, drop_last=len(self.train_set) >= bs,
                          **_worker_options(workers))

    def _held_batch(self, k: int):
        from tddfa.train.dataset import collate_skip

        if self.held_set is None or len(self.held_set) == 0:
            return None
        if not hasattr(self, "_held_cache"):
            b = collate_skip([self.held_set[i] for i in range(len(self.held_set))])
            self._held_cache = b
        return self._held_cache

    def compute_loss(self, out, target, weights: dict[str, float], landmarks=None,
                     inputs=None) -> tuple[Any, dict[str, float]]:
        """Total loss for network outputs ``(params, lm)`` and normalised targets ``(B, 62)``.

        ``landmarks`` ``(B, 68, 2)`` crop-frame labelled landmarks (NaN when absent) are the
        target of the landmark losses with ``loss.landmark_target: labels`` (300W-LP style when
        the data were made with ``--march``); otherwise the target parameters' 68 landmarks.
        ``inputs`` feed the distillation teacher (``loss.distill_weight``)."""
        lc = self.cfg["loss"]
        parts: dict[str, Any] = {}
        total = 0.0
        for k, w in weights.items():
            if w > 0:
                parts[k] = self.losses[k](out[0], target)
                total = total + w * parts[k]
        if self.teacher is not None and inputs is not None:
            with torch.no_grad():
                t_out = self.teacher(inputs)[0]
            parts["distill"] = self.losses["fwpdc"](out[0], t_out)
            total = total + float(lc["distill_weight"]) * parts["distill"]
        pts = None
        if float(lc.get("landmark_weight", 0)) > 0 or float(lc.get("lm_reg_weight", 0)) > 0:
            pts = self.landmark_targets(target, landmarks)
        if float(lc.get("landmark_weight", 0)) > 0:
            parts["lmk"] = self.lm_loss(out[0], pts)
            total = total + float(lc["landmark_weight"]) * parts["lmk"]
        if float(lc.get("lm_reg_weight", 0)) > 0:
            parts["lm_reg"] = self.reg_loss(out[1], pts)
            total = total + float(lc["lm_reg_weight"]) * parts["lm_reg"]
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def landmark_targets(self, target, landmarks=None):
        """Targets ``(B, 68, 2)`` (crop frame) of the landmark losses: the labelled landmarks of
        each sample that has them when ``loss.landmark_target`` is ``labels``, otherwise (and
        for samples whose labels are NaN) the 68 landmarks of the target parameters."""
        from tddfa.train.losses import landmark_targets

        use = self.cfg["loss"].get("landmark_target", "params") == "labels"
        return landmark_targets(self.mm, target, landmarks if use else None)

    def _step_weights(self, x, target) -> dict[str, float]:
        """The main loss's weights for this step (phases, fixed joint, meta-joint or single)."""
        lc = self.cfg["loss"]
        phases = lc.get("phases") or []
        if phases:
            frac = self.step / max(1, self.steps)
            for ph in phases:
                if frac < float(ph.get("until", 1.0)):
                    return {ph["main"]: 1.0}
            return {phases[-1]["main"]: 1.0}
        main = lc["main"]
        if main == "joint":
            return {k: float(v) for k, v in (lc.get("joint") or {"fwpdc": 1.0, "vdc": 1.0}).items()}
        if main == "meta":
            held = self._held_batch(self.step)
            if held is not None:
                return self.meta.weights(self.model, x, target, held[0], held[1])
            return {"fwpdc": 1.0}  # no usable held-out sample: plain fWPDC
        return {} if main == "none" else {main: 1.0}

    def _validate(self) -> dict[str, float] | None:
        vc = self.cfg["data"].get("val")
        if not vc:
            return None
        if vc.get("manifest"):
            if getattr(self, "_validator", None) is None:
                from tddfa.train.ablation import _validator

                self._validator = _validator(vc["manifest"], vc.get("limit"))
            return self._validator(self.model)
        from tddfa.train.validation import validate_300w

        return validate_300w(self.model, vc["root"], vc.get("split", "helen_test"), vc.get("limit"))

    def run(self) -> dict[str, Any]:
        """Train to ``train.steps``, validating, checkpointing and exporting; returns a summary."""
        self._setup()
        tc = self.cfg["train"]
        if self.main:
            yaml = require("yaml", "train")
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg, sort_keys=False))
            log.info("training %d samples for %d steps (from step %d), %d process(es)",
                     self.n_train, self.steps, self.step, self.world)
        tb = self.tb = None
        if self.main and tc.get("tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter

                tb = self.tb = SummaryWriter(str(self.out / "tb"))
            except ImportError:
                log.warning("TensorBoard logging needs the 'tensorboard' package; CSV only")
        log_f = open(self.out / "log.csv", "a", newline="") if self.main else None  # noqa: SIM115
        writer = csv.writer(log_f) if log_f else None
        if log_f and log_f.tell() == 0:
            writer.writerow(["step", "epoch", "lr", "loss", *LOG_PARTS, "choice", "skipped",
                             "seconds"])
        bar = None
        if self.main and tc.get("progress", True):
            from tqdm import tqdm

            bar = tqdm(total=self.steps, initial=self.step, desc="train", unit="step")
        if bool(tc.get("freeze_bn", False)):
            self._freeze_bn()
        t0 = time.time()
        first_loss = last_loss = None
        steps_per_epoch = max(1, self.n_train // max(1, int(tc["batch_size"]) * self.world))
        epoch = self.step // steps_per_epoch
        losses_window: list[float] = []
        val_hist: list[dict] = []
        try:
            while self.step < self.steps:
                for batch in self._loader(epoch):
                    if self.step >= self.steps:
                        break
                    if batch is None:
                        self.skipped += int(tc["batch_size"])
                        continue
                    x, target, lmk, n_bad = batch
                    self.skipped += n_bad
                    if bool(self.cfg["loss"].get("fix_tz", True)):
                        # t_z is not observable (crop frame, orthographic): the released model
                        # predicts the mean; profiled/augmented labels move it — do not learn it
                        target[:, 11] = 0.0
                    self.net.train()
                    if bool(tc.get("freeze_bn", False)):
                        self._freeze_bn()
                    weights = self._step_weights(x, target)
                    out = self.net(x)
                    loss, parts = self.compute_loss(out, target, weights, lmk, x)
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
                    self.opt.step()
                    self.sched.step()
                    self.step += 1
                    lv = float(loss.detach())
                    losses_window.append(lv)
                    if first_loss is None:
                        first_loss = lv
                    last_loss = lv
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{lv:.3g}")
                    if self.main and (self.step % int(tc["log_every"]) == 0 or self.step == self.steps):
                        choice = max(weights, key=weights.get) if weights else "-"
                        writer.writerow([self.step, epoch, f"{self.sched.get_last_lr()[0]:.3g}",
                                         f"{np.mean(losses_window):.6g}",
                                         *[f"{parts.get(k, float('nan')):.6g}" for k in
                                           LOG_PARTS],
                                         choice, self.skipped, f"{time.time() - t0:.1f}"])
                        log_f.flush()
                        if tb is not None:
                            tb.add_scalar("loss/train", float(np.mean(losses_window)), self.step)
                            for k, v in parts.items():
                                tb.add_scalar(f"loss/{k}", v, self.step)
                        losses_window = []
                    if self.main and self.step % int(tc["val_every"]) == 0:
                        val_hist.append(self._val_and_best())
                    if self.main and self.step % int(tc["ckpt_every"]) == 0:
                        self._save_state(self.out / "last.pth")
                epoch += 1
                if self.cfg["data"].get("reload"):
                    self._reload_train()
        finally:
            if bar is not None:
                bar.close()
        summary: dict[str, Any] = {"steps": self.step, "first_loss": first_loss,
                                   "last_loss": last_loss, "skipped": self.skipped,
                                   "seconds": time.time() - t0, "world_size": self.world}
        if self.meta is not None:
            summary["meta_choices"] = dict(self.meta.counts)
        if self.main:
            if self.step % int(tc["val_every"]) != 0:
                val_hist.append(self._val_and_best())
            self._save_state(self.out / "last.pth")
            from tddfa.train.export import export_checkpoint, export_onnx

            summary["checkpoint"] = str(export_checkpoint(self.model, self.out / "model.pth"))
            if tc.get("export_onnx", True):
                summary["onnx"] = str(export_onnx(self.model, self.out / "model.onnx"))
            summary["val"] = [v for v in val_hist if v]
            if self.skipped:
                log.warning("%d sample(s) skipped for bad input during training", self.skipped)
            log_f.close()
        if tb is not None:
            tb.close()
        if self.world > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return summary

    def _reload_train(self) -> None:
        """Re-read the training sources (``data.reload``: a manifest still growing, e.g. while
        ``tddfa data profile`` shards run); held-out samples stay out."""
        from tddfa.train.samples import SampleSet

        srcs = self.cfg["data"]["train"]
        srcs = [srcs] if isinstance(srcs, dict) else srcs
        samples = SampleSet.concat([_load_source(s, self.out) for s in srcs])
        keep = np.array([str(n) not in self._held_names for n in samples.names])
        if keep.sum() > len(self.train_set):
            self.train_set.samples = samples.subset(np.flatnonzero(keep))
            self.n_train = len(self.train_set)
            log.info("reloaded the training sources: %d samples", self.n_train)

    def _freeze_bn(self) -> None:
        for m in self.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()

    def _val_and_best(self) -> dict | None:
        v = self._validate()
        if v is None:
            return None
        v["step"] = self.step
        new = not (self.out / "val.csv").is_file()
        keys = ["step", "nme", "nme_median", "n"] + sorted(k for k in v if k.startswith(("nme_b", "nme_all")))
        with open(self.out / "val.csv", "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(keys)
            w.writerow([f"{v[k]:.4f}" if isinstance(v.get(k), float) else v.get(k, "") for k in keys])
        if getattr(self, "tb", None) is not None:
            for k in keys[1:]:
                if isinstance(v.get(k), float):
                    self.tb.add_scalar(f"val/{k}", v[k], self.step)
            if getattr(self, "_validator", None) is not None:
                from tddfa.train.validation import draw_samples

                self.tb.add_image("val/samples", draw_samples(self.model, self._validator),
                                  self.step, dataformats="HWC")
            self.tb.flush()
        log.info("step %d: validation NME %.3f%% (median %.3f%%)", self.step, v["nme"],
                 v["nme_median"])
        if v["nme"] < self.best:
            self.best = v["nme"]
            from tddfa.train.export import export_checkpoint

            export_checkpoint(self.model, self.out / "best.pth", extra={"step": self.step})
        return v


def train(config: str | Path | dict, *, resume: bool = True, overrides: dict | None = None
          ) -> dict[str, Any]:
    """Run a training from a config file (or an already merged config dict)."""
    cfg = config if isinstance(config, dict) else load_config(config, overrides)
    if isinstance(config, dict) and overrides:
        cfg = _merge(cfg, overrides)
    return Trainer(cfg, resume=resume).run()
