"""Training with the papers' recipes, resumable to the exact same weights, single process or torchrun DDP.

Recipes (each is a list of stages; moving to the next stage restarts from the best weights so far):
- `paper` (Lee et al. 2017): SGD, Nesterov, momentum 0.9, batch 23; a stage ends when the validation loss has not
  improved for 3 epochs; the learning rate goes 0.01 -> 0.002 -> 0.0004 -> 0.00008 -> 0.000016 (lr/5 each time).
- `adam` (Won et al. 2020, sota-music-tagging-models): Adam lr 1e-4 for 80 epochs, then SGD Nesterov (momentum
  0.9) at 1e-3 for 20 epochs, 1e-4 for 20, then 1e-5; weight decay 1e-4; batch 16; 200 epochs.
- `cosine`: a compute-budgeted schedule: AdamW, linear warm-up, cosine decay to zero at the planned last step
  (`--epochs` x the steps of an epoch), no restarts; validation picks the best epoch of an exponential moving
  average of the weights (`--ema`), which gives a usable model long before the decay ends.

Data: without a teacher, every step takes a random 59049-sample crop of each clip (a random cell of the teacher-label
grid where `samplecnn teach` wrote one) with its label. With `--teacher`, every step is a batch of augmented views
(samplecnn.views) labelled by the musicnn teacher inside the step (consistent teaching); an epoch is then
`--epoch-steps` steps. `--teacher labels` is the same without augmentation at the student's cost alone: plain views
drawn like the teacher's, each labelled by the teacher window that contains it, computed ahead by `samplecnn teach`
(`--labels-per-segment 3` for a denser grid of windows). The loss is BCE against the teacher's probabilities or MSE
between the logits (`--loss`).

Crops, views and the data order depend only on (seed, epoch or step, row), and the checkpoint holds the model, its
moving average, optimizer, stage, position in the epoch and the torch RNG (dropout), so `--resume` after an
interruption ends with the same weights as an uninterrupted run. Checkpoints are tensors and plain values loaded with
`weights_only=True`: a crafted run folder cannot run code. `--init CKPT|NAME` starts from a model's weights with a
fresh optimizer (a new head where the tag vocabulary differs).

Fine-tuning on a small collection (the usual advice: tune only the last layers, with augmentation): `--freeze N`
keeps the first N of the model's ten convolution blocks (the stem is the first, then the nine sample-level blocks)
as `--init` gave them: no gradients, and their BatchNorm layers stay in eval mode, so their running statistics are
not moved by the few new clips either. `--augment-crops` augments the label crops (speed, filter, gain: the
teacher's views without mixing, which would blend two clips' labels); the draws come from the same per-crop seed.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import checkpoint, devices, metrics, models, pretrained
from .data import Cache
from .errors import SampleCNNError
from .fileio import atomic_path
from .segments import segment_batches
from .workers import usable_cpus

SEG = models.SEGMENT_SAMPLES


@dataclasses.dataclass(frozen=True)
class Stage:
    optimizer: str            # "sgd" or "adam"
    lr: float
    epochs: int | None = None  # fixed length; None = until early stopping (or the end of training)


RECIPES = {
    "paper": dict(batch_size=23, weight_decay=0.0, patience=3, epochs=1000,
                  stages=[Stage("sgd", 0.01 / 5**k) for k in range(5)]),
    "adam": dict(batch_size=16, weight_decay=1e-4, patience=None, epochs=200,
                 stages=[Stage("adam", 1e-4, 80), Stage("sgd", 1e-3, 20), Stage("sgd", 1e-4, 20),
                         Stage("sgd", 1e-5)]),
    "cosine": dict(batch_size=16, weight_decay=0.02, patience=None, epochs=60, warmup_steps=500, ema=0.999,
                   stages=[Stage("adamw", 1e-3)]),
}
LOSSES = ("bce", "logit-mse")
LAYOUTS = ("auto", "conv1d", "planar")
_LOGIT_CLAMP = 1e-4  # teacher probabilities are clamped to [1e-4, 1 - 1e-4] before taking logits (|logit| <= 9.2)


@dataclasses.dataclass
class TrainConfig:
    data: str
    out: str
    arch: str = "samplecnn"
    recipe: str = "paper"
    epochs: int | None = None           # cap on epochs (default: the recipe's)
    batch_size: int | None = None       # per process (default: the recipe's)
    amp: str = "auto"                   # "bf16", "fp16", "none"; auto: bf16 (or fp16) on a GPU, fp32 on a CPU
    seed: int = 0
    checkpoint_every: int = 500         # optimizer steps between checkpoints (and at every epoch end)
    stop_after_steps: int | None = None  # stop cleanly after this many steps in this run (time-boxed sessions)
    budget_minutes: float | None = None  # end training (and export) after this much step compute, over all resumes
    resume: bool = False
    device: str | None = None
    width: float = 1.0
    multi_level: bool = False
    valid_batch_size: int = 32
    epoch_repeats: int = 1              # visits of every training clip per epoch (long tracks: more crops per epoch)
    valid_segments: int | None = None   # per-clip cap on validation segments during training (speed); None = all
    valid_data: str | None = None       # validate on this cache's valid split instead of --data's
    teacher: str = "none"               # "none": the cache's labels; musicnn/vgg/both: online consistent teaching;
                                        # "labels": plain views labelled ahead by `samplecnn teach` (no teacher cost)
    augment: bool = True                # with a teacher: augmented views (speed, mix, filter, gain)
    voices: str | None = None           # with a teacher: a cache of voice recordings mixed over a share of the views
    extra_data: tuple[str, ...] = ()    # with teacher "labels": more taught caches, crops from their train splits ...
    extra_share: tuple[float, ...] = ()  # ... each in its share of a batch's rows (one share: 0.25 by default)
    loss: str = "bce"                   # "bce" on probabilities, or "logit-mse" (Ba & Caruana 2014)
    epoch_steps: int = 1000             # with a teacher: optimizer steps per epoch (validation, checkpoint)
    ema: float | None = None            # weight moving-average decay per step (default: the recipe's; 0 = off)
    init: str | None = None             # start from this checkpoint's (or registered model's) weights
    lr: float | None = None             # the first stage's learning rate; later stages keep the recipe's ratios
    freeze: int = 0                     # with init: the first N convolution blocks (stem first) stay as loaded
    augment_crops: bool = False         # without a teacher: augment the label crops (speed, filter, gain)
    layout: str = "auto"                # conv1d, planar (height-1 Conv2d, channels-last), auto: planar for CPU bf16
    export_best: bool = False           # only export RUN_DIR's best weights so far (the run may still be going)
    dropout: float | None = None        # dropout before the head in training (default: the architecture's)


@dataclasses.dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    stage: int = 0
    stage_epochs: int = 0
    best_loss: float = math.inf
    bad_epochs: int = 0
    done: bool = False
    compute_seconds: float = 0.0  # CPU time of the training steps / torch threads (pauses and validation excluded)


class Run:
    """One training run in RUN_DIR: last.pt (full state), best.pt (best weights), metrics.jsonl, curves.png,
    model.safetensors (the exported best model with calibrated thresholds)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.recipe = recipe_with_lr(RECIPES[cfg.recipe], cfg.lr)
        self.rank, self.world = _init_distributed()
        self.device = devices.torch_device(cfg.device, local_rank=_local_rank())
        if self.device.type == "cpu":
            devices.tune_malloc()  # a step's activations are reused, not page-faulted in anew: 1.4x on a CPU
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if cfg.amp == "auto":  # GPU runs use mixed precision; on a CPU bf16 is an explicit choice
            if self.device.type == "cuda":
                amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                amp = "none"
            cfg = dataclasses.replace(cfg, amp=amp)
            self.cfg = cfg
        self.out = Path(cfg.out)
        self.cache = Cache(cfg.data)
        self.valid_cache = Cache(cfg.valid_data) if cfg.valid_data else self.cache
        if list(self.valid_cache.tags) != list(self.cache.tags):
            raise SampleCNNError("--valid-data has other tags than --data (or another order)", cfg.valid_data)
        self.train_idx = self.cache.indices("train")
        self.valid_idx = self.valid_cache.indices("valid")
        if len(self.train_idx) == 0 or len(self.valid_idx) == 0:
            raise SampleCNNError("the cache needs clips in both the train and valid splits", cfg.data)
        self.batch_size = cfg.batch_size or self.recipe["batch_size"]
        self.max_epochs = cfg.epochs or self.recipe["epochs"]
        overrides = {"width": cfg.width, **({"multi_level": True} if cfg.multi_level else {})}
        self.model_config = models.config_for(cfg.arch, n_tags=len(self.cache.tags), **overrides)
        torch.manual_seed(cfg.seed)
        self.model = models.SampleCNN(**self.model_config).to(self.device)
        if cfg.dropout is not None:  # a training choice only: the exported model is the same function either way
            if not 0.0 <= cfg.dropout < 1.0:
                raise SampleCNNError(f"--dropout must be in [0, 1), got {cfg.dropout}")
            self.model.dropout.p = cfg.dropout
        if cfg.freeze and not cfg.init:
            raise SampleCNNError("--freeze needs --init CKPT|NAME (frozen random weights learn nothing)")
        if not 0 <= cfg.freeze <= 10:
            raise SampleCNNError(f"--freeze must be between 0 and 10 (the stem and nine blocks), got {cfg.freeze}")
        if cfg.init:
            self._init_from(cfg.init)
        self.frozen = frozen_blocks(self.model, cfg.freeze)
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.model.planar = _planar(cfg.layout, self.device, cfg.amp)
        self.ddp = (torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device]
                                                              if self.device.type == "cuda" else None)
                    if self.world > 1 else self.model)
        self.ema_decay = self.recipe.get("ema", 0.0) if cfg.ema is None else cfg.ema
        self.ema = copy.deepcopy(self.model).eval() if self.ema_decay else None
        self.views, self.teacher = None, None
        if cfg.teacher == "labels":
            from .views import LabelledCrops

            if not self.cache.has_segment_labels:
                raise SampleCNNError("--teacher labels needs the cache's teacher labels: run `samplecnn teach` on it "
                                     "first", cfg.data)
            self.views = LabelledCrops(self.cache, self.train_idx, cfg.seed)
            if cfg.extra_data:
                self.views = self._mixed_with(cfg.extra_data, extra_shares(cfg))
        elif cfg.teacher != "none":
            from .teach import tag_columns, teacher_names
            from .teachers.ensemble import TeacherEnsemble
            from .views import Augment, ViewSampler

            self.teacher = TeacherEnsemble(teacher_names(cfg.teacher), tag_columns(self.cache.tags), self.device)
            voices = Cache(cfg.voices) if cfg.voices else None
            self.views = ViewSampler(self.cache, self.train_idx, cfg.seed, Augment() if cfg.augment else Augment.none(),
                                     voices=voices)
        self.crop_augment = None
        if cfg.augment_crops:
            if cfg.teacher == "labels":
                raise SampleCNNError("--augment-crops is for label training without a teacher: views labelled ahead "
                                     "are plain (augmented audio needs the teacher in the step, --teacher both)")
            if cfg.teacher != "none":
                raise SampleCNNError("--augment-crops is for label training; with --teacher the views are "
                                     "augmented already (--no-augment turns that off)")
            from .views import Augment

            self.crop_augment = Augment()
        self.progress = Progress()
        self.optimizer = self._optimizer(self.recipe["stages"][0])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.best_state = {k: v.detach().clone() for k, v in self._eval_model().state_dict().items()}
        self.steps_per_epoch = len(self.epoch_batches(0))
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)

    # -- state -----------------------------------------------------------------------------------------------------

    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]  # not the frozen blocks'
        wd = self.recipe["weight_decay"]
        if stage.optimizer == "adam":
            return torch.optim.Adam(params, lr=stage.lr, weight_decay=wd)
        if stage.optimizer == "adamw":  # decoupled decay on the weights; none on biases and BatchNorm
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            groups = [{"params": [p for n, p in named if p.dim() > 1], "weight_decay": wd},
                      {"params": [p for n, p in named if p.dim() <= 1], "weight_decay": 0.0}]
            return torch.optim.AdamW(groups, lr=stage.lr)
        return torch.optim.SGD(params, lr=stage.lr, momentum=0.9, nesterov=True, weight_decay=wd)

    def _init_from(self, name_or_path: str) -> None:
        """Copy a checkpoint's weights into the new model; a different tag vocabulary keeps a fresh head."""
        path = pretrained.checkpoint_path(name_or_path)
        source, info = checkpoint.read(path, device=self.device)
        defaults = {k: p.default for k, p in inspect.signature(models.SampleCNN).parameters.items()}
        mine = {k: v for k, v in {**defaults, **self.model_config}.items() if k != "n_tags"}
        theirs = {k: v for k, v in {**defaults, **info.config}.items() if k != "n_tags"}
        if info.arch != self.cfg.arch or mine != theirs:
            raise SampleCNNError(f"--init: that checkpoint is a {info.arch} model with another configuration "
                                 f"({', '.join(f'{k}={v}' for k, v in sorted(theirs.items()) if mine.get(k) != v)}); "
                                 "train with its --arch/--width/--multi-level", path)
        state = source.state_dict()
        if list(info.tags) != list(self.cache.tags):
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
            self._log(f"--init: {len(info.tags)} tags there, {len(self.cache.tags)} here: a new head is trained")
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("classifier.") for k in missing), (missing, unexpected)

    def _train_mode(self) -> None:
        """Training mode, except the frozen blocks: their BatchNorm statistics stay those loaded."""
        self.ddp.train()
        self.frozen.eval()

    def _eval_model(self) -> models.SampleCNN:
        """What validation, the best weights and the export use: the moving average where there is one."""
        return self.ema if self.ema is not None else self.model

    def _mixed_with(self, paths: tuple[str, ...], shares: tuple[float, ...]):
        """The labelled crops of --data and, in each --extra-share of the rows, of each further taught cache."""
        from .views import LabelledCrops, MixedCrops

        sources = []
        for stream, path in enumerate(paths, start=1):
            extra = Cache(path)
            if not extra.has_segment_labels:
                raise SampleCNNError("--extra-data needs the cache's teacher labels: run `samplecnn teach` on it "
                                     "first", path)
            if list(extra.tags) != list(self.cache.tags):
                raise SampleCNNError("--extra-data has other tags than --data (or another order)", path)
            try:
                sources.append(LabelledCrops(extra, extra.indices("train"), self.cfg.seed, stream=stream))
            except ValueError as e:
                raise SampleCNNError(f"--extra-data: {e}", path) from None
        return MixedCrops(self.views, sources, shares, self.cfg.seed)

    def _lr(self, stage: Stage) -> float:
        """The learning rate of the next step: the stage's, or warm-up + cosine over the planned steps."""
        if "warmup_steps" not in self.recipe:
            return stage.lr
        step, total = self.progress.global_step, max(1, self.max_epochs * self.steps_per_epoch)
        warmup = min(self.recipe["warmup_steps"], total // 10)  # at most a tenth of a short plan
        if step < warmup:
            return stage.lr * (step + 1) / warmup
        return stage.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

    def save(self) -> None:
        """Atomically write last.pt (and best.pt); rank 0 only."""
        if self.rank != 0:
            return
        state = {"config": dataclasses.asdict(self.cfg), "model_config": self.model_config,
                 "progress": dataclasses.asdict(self.progress), "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                 "ema": self.ema.state_dict() if self.ema is not None else None,
                 "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        with atomic_path(self.out / "best.pt", overwrite=True) as tmp:
            torch.save(self.best_state, tmp)
        with atomic_path(self.out / "last.pt", overwrite=True) as tmp:
            torch.save(state, tmp)

    def restore(self) -> None:
        """Continue from RUN_DIR/last.pt exactly where it stopped."""
        path = self.out / "last.pt"
        if not path.is_file():
            raise SampleCNNError("nothing to resume: no last.pt in the run folder", self.out)
        try:  # weights_only: tensors and plain values only, so loading a crafted file cannot run code
            state = torch.load(path, map_location=self.device, weights_only=True)
            best = torch.load(self.out / "best.pt", map_location=self.device, weights_only=True)
            if not isinstance(state, dict) or not isinstance(best, dict):
                raise ValueError("not a samplecnn training state")
        except Exception as e:  # a damaged or foreign checkpoint is a user-facing problem, not a traceback
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise SampleCNNError(f"cannot resume: unreadable checkpoint ({first[:200]})", path) from None
        try:
            if state["model_config"] != self.model_config or any(
                    state["config"].get(k, getattr(TrainConfig, k, None)) != getattr(self.cfg, k) for k in _FIXED):
                raise SampleCNNError("cannot resume: the run was started with another architecture, recipe, teacher, "
                                     "loss or data options", path)
            self.progress = Progress(**state["progress"])
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
            self.optimizer = self._optimizer(self.recipe["stages"][self.progress.stage])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise SampleCNNError(f"cannot resume: the checkpoint does not fit this run ({first[:200]})", path) from None
        self.best_state = best
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        if self.rank == 0:  # drop metric lines of epochs that the checkpoint does not contain
            lines = _read_metrics(self.out)
            _write_metrics(self.out, [m for m in lines if m["epoch"] <= self.progress.epoch])

    # -- data ------------------------------------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list:
        """This rank's batches for `epoch`; the same on every run with the same seed. With a teacher: the global step
        numbers of the epoch's views. Otherwise (clip indices, draw numbers):

        an epoch visits every training clip `epoch_repeats` times in a random order; the draw number (the position in
        that order) seeds each crop, so a clip visited twice gets two different crops.
        """
        if self.views is not None:
            return list(range(epoch * self.cfg.epoch_steps, (epoch + 1) * self.cfg.epoch_steps))
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(
            np.tile(self.train_idx, self.cfg.epoch_repeats))
        draws = np.arange(len(order))
        per_rank = len(order) // self.world
        mine = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        order, draws = order[mine], draws[mine]
        return [(order[i:i + self.batch_size], draws[i:i + self.batch_size])
                for i in range(0, len(order), self.batch_size)]

    def batch(self, item, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of one step: teacher-labelled views, or cache crops with their labels."""
        if self.views is None:
            return self.crops(*item, epoch)
        student, teacher = self.views.batch(item * self.world + self.rank, self.batch_size)
        if self.teacher is None:  # --teacher labels: the teacher's labels were computed ahead
            targets = torch.from_numpy(teacher)
        else:
            targets = self.teacher.probabilities(torch.from_numpy(teacher))
        return (torch.from_numpy(student).unsqueeze(1).to(self.device, non_blocking=True),
                targets.to(self.device, non_blocking=True))

    def crops(self, clips: np.ndarray, draws: np.ndarray, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One crop per clip and its target. With teacher labels (`samplecnn teach`) the crop is a random segment
        of the non-overlapping grid, whose own teacher label is the target; otherwise a random crop anywhere, with
        the clip's label. Either way the choice depends only on (seed, epoch, draw)."""
        x = np.zeros((len(clips), SEG), dtype=np.float32)
        y = self.cache.labels[clips].astype(np.float32)
        augment = self.crop_augment
        if augment is not None:
            from .views import draw_speed, samples_for
        for row, (i, draw) in enumerate(zip(clips, draws)):
            length = int(self.cache.lengths[i])
            rng = np.random.default_rng([self.cfg.seed, epoch, int(draw)])
            speed, need = 1.0, SEG
            if augment is not None:  # the speed is drawn first, as a teacher's view draws it
                speed = draw_speed(rng, augment)
                need = samples_for(SEG, speed)
            segments = self.cache.segment_labels(int(i)) if self.cache.has_segment_labels else None
            if segments is not None and len(segments):  # 0 rows: a file the teacher could not read
                k = int(rng.integers(0, len(segments)))
                start = k * self.cache.segment_hop
                y[row] = segments[k]
            else:
                start = int(rng.integers(0, max(1, length - need + 1)))
            piece = self.cache.clip_float(int(i), start, min(need, length - start))
            if augment is not None:
                piece = augment_crop(piece, speed, rng, augment)
            x[row, :len(piece)] = piece
        return (torch.from_numpy(x).unsqueeze(1).to(self.device, non_blocking=True),
                torch.from_numpy(y).to(self.device, non_blocking=True))

    # -- loop ------------------------------------------------------------------------------------------------------

    def fit(self) -> Path | None:
        from tqdm import tqdm

        if self.cfg.resume or self.cfg.export_best:
            self.restore()
        if self.cfg.export_best:
            return self.export()
        p, stages, steps_this_run = self.progress, self.recipe["stages"], 0
        while not p.done:
            batches = self.epoch_batches(p.epoch)
            bar = tqdm(total=len(batches), initial=p.step_in_epoch, disable=self.rank != 0, unit="step",
                       desc=f"epoch {p.epoch + 1} lr {stages[p.stage].lr:g}", dynamic_ncols=True)
            self._train_mode()
            for item in batches[p.step_in_epoch:]:
                started = _compute_clock()
                loss = self.step(*self.batch(item, p.epoch))
                p.compute_seconds += _compute_clock() - started
                p.step_in_epoch += 1
                p.global_step += 1
                steps_this_run += 1
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update(1)
                if p.global_step % self.cfg.checkpoint_every == 0:
                    self.save()
                if self.cfg.stop_after_steps is not None and steps_this_run >= self.cfg.stop_after_steps:
                    bar.close()
                    self.save()
                    self._log(f"stopped after {steps_this_run} steps; continue with --resume")
                    return None
                if self.cfg.budget_minutes is not None and p.compute_seconds >= 60 * self.cfg.budget_minutes:
                    break
            bar.close()
            self.end_epoch()
            if self.cfg.budget_minutes is not None and p.compute_seconds >= 60 * self.cfg.budget_minutes:
                p.done = True
                self._log(f"compute budget of {self.cfg.budget_minutes:g} min spent at step {p.global_step}")
            self.save()
        return self.export()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.recipe["stages"][self.progress.stage])
        with torch.autocast(self.device.type, dtype=_AMP[self.cfg.amp], enabled=self.cfg.amp != "none"):
            logits = self.ddp(x)
        loss = distillation_loss(logits.float(), y, self.cfg.loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self._update_ema()
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema = d * ema + (1 - d) * weights; BatchNorm statistics are copied (they are averages already). The
        decay ramps up over the first steps (as in Keras' moving averages) so that early models are not stale."""
        step = self.progress.global_step + 1
        decay = min(self.ema_decay, (1 + step) / (10 + step))
        for avg, cur in zip(self.ema.state_dict().values(), self.model.state_dict().values()):
            if avg.is_floating_point():
                avg.lerp_(cur, 1 - decay)
            else:
                avg.copy_(cur)

    def end_epoch(self) -> None:
        """Validate, log, and apply the recipe: keep the best weights, move to the next stage when it is time."""
        p, stages = self.progress, self.recipe["stages"]
        result = self.validate() if self.rank == 0 else None
        val_loss = _broadcast_float(result["loss"] if result else 0.0, self.world)
        p.epoch += 1
        p.step_in_epoch = 0
        p.stage_epochs += 1
        improved = val_loss < p.best_loss
        if improved:
            p.best_loss, p.bad_epochs = val_loss, 0
            self.best_state = {k: v.detach().clone() for k, v in self._eval_model().state_dict().items()}
        else:
            p.bad_epochs += 1
        stage = stages[p.stage]
        stage_over = (p.bad_epochs >= self.recipe["patience"] if stage.epochs is None and self.recipe["patience"]
                      else stage.epochs is not None and p.stage_epochs >= stage.epochs)
        if self.rank == 0:
            record = {"epoch": p.epoch, "step": p.global_step, "stage": p.stage, "lr": self._lr(stage),
                      "valid_loss": result["loss"], "valid_roc_auc": result["roc_auc"],
                      "valid_pr_auc": result["pr_auc"], "valid_spearman": result.get("spearman"),
                      "compute_minutes": round(p.compute_seconds / 60, 2), "valid_per_tag": result["per_tag"],
                      "best": improved, "time": round(time.time(), 1),
                      "valid_reference": "segments"}  # scored against the teacher on the same segments
            _write_metrics(self.out, _read_metrics(self.out) + [record])
            _plot_curves(self.out)
            rho = f", Spearman {result['spearman']:.4f}" if result.get("spearman") is not None else ""
            self._log(f"epoch {p.epoch}: valid loss {result['loss']:.4f}, ROC-AUC {result['roc_auc']:.4f}, "
                      f"PR-AUC {result['pr_auc']:.4f}{rho}{' (best)' if improved else ''}")
        if p.epoch >= self.max_epochs or (stage_over and p.stage + 1 == len(stages)):
            p.done = True  # the epoch cap wins over a stage change that falls on the same epoch
        elif stage_over:
            p.stage, p.stage_epochs, p.bad_epochs = p.stage + 1, 0, 0
            self.model.load_state_dict(self.best_state)  # restart from the best weights at the next rate
            self.optimizer = self._optimizer(stages[p.stage])
            self._log(f"stage {p.stage + 1}/{len(stages)}: {stages[p.stage].optimizer} lr {stages[p.stage].lr:g}, "
                      f"restarted from the best weights")

    @torch.inference_mode()
    def predict(self, clips: np.ndarray, max_segments: int | None = None) -> tuple[np.ndarray, float, np.ndarray]:
        """Song-level scores (mean over non-overlapping segments), the mean segment BCE against the targets (each
        segment's teacher label where `samplecnn teach` wrote them, else the clip's label) and the song-level
        references to score against: the mean of those same segments' teacher labels, else the clip's label.

        `max_segments` keeps the first that many segments of each clip (a cheaper validation during training). The
        references are what the teacher says of the same segments: against the whole track's labels, the teacher
        itself would score only 0.915 ROC-AUC on the first 12 segments of the held-out game music."""
        from .inference import song_scores

        model = self._eval_model()
        model.eval()
        scores, references, loss_sum, segments = [], [], 0.0, 0
        for i in clips:
            length = int(self.valid_cache.lengths[i])
            if max_segments is not None:
                length = min(length, max_segments * SEG)
            logits = []
            for batch in segment_batches([self.valid_cache.clip_float(int(i), 0, length)], SEG, SEG,
                                         self.cfg.valid_batch_size):
                with torch.autocast(self.device.type, dtype=_AMP[self.cfg.amp], enabled=self.cfg.amp != "none"):
                    logits.append(model(torch.from_numpy(batch).unsqueeze(1).to(self.device)).float())
            logits = torch.cat(logits)
            targets = self.valid_cache.segment_labels(int(i)) if self.valid_cache.has_segment_labels else None
            if targets is not None:  # the rows of the non-overlapping segments scored here (a denser grid holds them)
                targets = targets[::SEG // self.valid_cache.segment_hop]
            if targets is None or len(targets) < len(logits):
                targets = np.broadcast_to(self.valid_cache.labels[i], logits.shape)
            targets = np.array(targets[:len(logits)], dtype=np.float32)
            references.append(targets.mean(axis=0))
            targets = torch.from_numpy(targets).to(self.device)
            loss_sum += F.binary_cross_entropy_with_logits(logits, targets, reduction="sum").item() / logits.shape[1]
            segments += len(logits)
            scores.append(song_scores(torch.sigmoid(logits).cpu().numpy()))  # as TagResult.scores
        self._train_mode()
        return np.stack(scores), loss_sum / segments, np.stack(references)

    def validate(self) -> dict:
        scores, loss, references = self.predict(self.valid_idx, self.cfg.valid_segments)
        summary = metrics.summary(references, scores, self.valid_cache.tags)
        return {"loss": loss, "roc_auc": summary["roc_auc"], "pr_auc": summary["pr_auc"],
                "spearman": summary.get("spearman"),
                "per_tag": {r["tag"]: [r["positives"], r["roc_auc"]] for r in summary["per_tag"] if r["roc_auc"]}}

    def export(self) -> Path | None:
        """Best weights + F1-optimal thresholds from the validation split -> RUN_DIR/model.safetensors."""
        if self.rank != 0:
            _barrier(self.world)
            return None
        self._eval_model().load_state_dict(self.best_state)
        scores, _, _ = self.predict(self.valid_idx)
        thresholds = metrics.f1_thresholds(self.valid_cache.labels[self.valid_idx], scores)
        history = _read_metrics(self.out)
        best = min(history, key=lambda m: m["valid_loss"]) if history else {}
        info = checkpoint.ModelInfo(
            arch=self.cfg.arch, config=self.model_config, tags=list(self.valid_cache.tags),
            thresholds=[float(t) for t in thresholds],
            provenance={"source": "samplecnn train", "data": os.path.abspath(self.cfg.data), "recipe": self.cfg.recipe,
                        "epochs": self.progress.epoch, "steps": self.progress.global_step, "seed": self.cfg.seed,
                        "processes": self.world, "amp": self.cfg.amp, "best_epoch": best.get("epoch"),
                        "teacher": self.cfg.teacher, "augment": self.cfg.augment, "loss": self.cfg.loss,
                        "ema": self.ema_decay, "init": self.cfg.init, "freeze": self.cfg.freeze,
                        "augment_crops": self.cfg.augment_crops, "batch_size": self.batch_size,
                        "valid_loss": best.get("valid_loss"), "valid_roc_auc": best.get("valid_roc_auc"),
                        "valid_pr_auc": best.get("valid_pr_auc")})
        path = checkpoint.save(self.out / "model.safetensors", self._eval_model(), info, overwrite=True)
        self._log(f"exported the best model (epoch {best.get('epoch')}) with calibrated thresholds to {path}")
        _barrier(self.world)
        return path

    def _log(self, message: str) -> None:
        if self.rank == 0:
            from tqdm import tqdm

            tqdm.write(message)


# what --resume must find unchanged
_FIXED = ("recipe", "lr", "teacher", "augment", "loss", "epoch_steps", "voices", "freeze", "augment_crops", "dropout",
          "extra_data", "extra_share")
_AMP = {"none": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def extra_shares(cfg: TrainConfig) -> tuple[float, ...]:
    """One share of the batch rows per --extra-data cache: as given, or 0.25 for a single cache."""
    shares = tuple(cfg.extra_share) or ((0.25,) if len(cfg.extra_data) == 1 else ())
    if len(shares) != len(cfg.extra_data):
        raise SampleCNNError(f"--extra-share: give one per --extra-data ({len(cfg.extra_data)}), got {len(shares)}")
    return shares


def recipe_with_lr(recipe: dict, lr: float | None) -> dict:
    """The recipe with every stage's rate scaled so that the first is `lr`: fine-tuning from a trained model wants
    a gentler start than training from scratch, with the same schedule after it."""
    if lr is None:
        return recipe
    if not lr > 0:
        raise SampleCNNError(f"--lr must be positive, got {lr}")
    scale = lr / recipe["stages"][0].lr
    return {**recipe, "stages": [dataclasses.replace(s, lr=s.lr * scale) for s in recipe["stages"]]}


def frozen_blocks(model: models.SampleCNN, n: int) -> torch.nn.ModuleList:
    """The first `n` convolution blocks of `model`: the stem, then its sample-level blocks in order."""
    return torch.nn.ModuleList([model.stem, *model.blocks][:n])


def augment_crop(piece: np.ndarray, speed: float, rng: np.random.Generator, augment) -> np.ndarray:
    """A label crop played `speed` times faster, then filtered and scaled as the teacher's views are."""
    import soxr

    from .views import filter_and_gain

    if speed != 1.0:
        piece = soxr.resample(piece, models.SAMPLE_RATE * speed, models.SAMPLE_RATE, "HQ")
    return filter_and_gain(np.asarray(piece[:SEG], dtype=np.float32), rng, augment)


def _compute_clock() -> float:
    """Seconds of compute: this process's CPU time spread over torch's threads (wall time when it runs alone, and it
    stands still while the process is paused, so runs compared at equal budgets got equal work)."""
    if torch.cuda.is_available():
        return time.perf_counter()
    return time.process_time() / max(1, torch.get_num_threads())


def distillation_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """BCE of the student's logits against soft targets (probabilities), or MSE between the student's logits and the
    targets' logits (Ba & Caruana 2014), which keeps a gradient for tags the teacher scores near 0 or 1."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets)
    return F.mse_loss(logits, torch.logit(targets.clamp(_LOGIT_CLAMP, 1 - _LOGIT_CLAMP)))


def _planar(layout: str, device: torch.device, amp: str) -> bool:
    """Whether the model runs as height-1 Conv2d in channels-last memory (see models.py). auto: on a CPU with bf16
    autocast, where it is what reaches oneDNN's bf16 (and AMX) convolutions."""
    if layout == "auto":
        return device.type == "cpu" and amp == "bf16"
    return layout == "planar"


def train(cfg: TrainConfig) -> Path | None:
    """Run (or resume) training; returns the exported checkpoint's path, or None when stopped early."""
    if cfg.recipe not in RECIPES:
        raise SampleCNNError(f"unknown recipe {cfg.recipe!r}; choose from {', '.join(RECIPES)}")
    if cfg.loss not in LOSSES:
        raise SampleCNNError(f"unknown --loss {cfg.loss!r}; choose from {', '.join(LOSSES)}")
    if cfg.layout not in LAYOUTS:
        raise SampleCNNError(f"unknown --layout {cfg.layout!r}; choose from {', '.join(LAYOUTS)}")
    if cfg.voices and cfg.teacher in ("none", "labels"):
        raise SampleCNNError("--voices needs the teacher in the step (--teacher musicnn, vgg or both): it labels the "
                             "mixtures", cfg.voices)
    if cfg.extra_data and cfg.teacher != "labels":
        raise SampleCNNError("--extra-data is for views labelled ahead (--teacher labels)", cfg.extra_data[0])
    shares = extra_shares(cfg)
    if any(not 0.0 < p < 1.0 for p in shares) or sum(shares) >= 1.0:
        raise SampleCNNError(f"--extra-share must be between 0 and 1 and sum to less than 1, got "
                             f"{', '.join(map(str, shares))}")
    if cfg.epoch_steps < 1 or (cfg.ema is not None and not 0.0 <= cfg.ema < 1.0):
        raise SampleCNNError("--epoch-steps must be >= 1 and --ema in [0, 1)")
    if cfg.amp not in (*_AMP, "auto"):
        raise SampleCNNError(f"unknown --amp {cfg.amp!r}; choose auto, bf16, fp16 or none")
    out = Path(cfg.out)
    if not (cfg.resume or cfg.export_best) and (out / "last.pt").exists():
        raise SampleCNNError("a run already exists here: pass --resume to continue it, or choose another --out", out)
    run = Run(cfg)
    path = run.fit()
    if run.world > 1:
        _check_in_sync(run.model, run.world, run._log)
        dist.destroy_process_group()
    return path


# -- distributed helpers ------------------------------------------------------------------------------------------

def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def _init_distributed() -> tuple[int, int]:
    """(rank, world size); under torchrun, joins the process group (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if not torch.cuda.is_available():  # share the CPU cores between the processes of this node
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, usable_cpus() // local))
    return dist.get_rank(), world


def _broadcast_float(value: float, world: int) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, 0)
    return float(t.item())


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _check_in_sync(model: torch.nn.Module, world: int, log) -> None:
    """Compare every rank's weights with rank 0's: DDP keeps them identical, and this proves it."""
    flat = torch.cat([v.detach().float().flatten().cpu() for v in model.state_dict().values()])
    reference = flat.clone()
    dist.broadcast(reference, 0)
    diff = torch.tensor([(flat - reference).abs().max().item()])
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    log(f"ranks in sync: max |weight difference| across {world} processes = {diff.item():.3g}")


# -- metrics log ---------------------------------------------------------------------------------------------------

def _read_metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_metrics(out: Path, records: list[dict]) -> None:
    with atomic_path(out / "metrics.jsonl", overwrite=True) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))


def _plot_curves(out: Path) -> None:
    """Learning curves: validation loss and song-level AUCs per epoch, stage changes marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = _read_metrics(out)
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [r["valid_loss"] for r in records], marker="o", label="valid loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("BCE")
    ax_auc.plot(epochs, [r["valid_roc_auc"] for r in records], marker="o", label="ROC-AUC")
    ax_auc.plot(epochs, [r["valid_pr_auc"] for r in records], marker="o", label="PR-AUC")
    ax_auc.set_xlabel("epoch")
    ax_auc.set_ylim(0, 1)
    for prev, cur in zip(records, records[1:]):
        if cur["stage"] != prev["stage"]:
            for ax in (ax_loss, ax_auc):
                ax.axvline(prev["epoch"] + 0.5, color="gray", linestyle=":")
    for ax in (ax_loss, ax_auc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"{out.name}: validation (song level); dotted lines = learning-rate stages", fontsize=10)
    fig.tight_layout()
    with atomic_path(out / "curves.png", overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
