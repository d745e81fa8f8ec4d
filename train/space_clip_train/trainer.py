"""The training loop: a frozen CLIP tower, SPACE-CLIP's decoder, the losses, validation and checkpoints.

Writes to ``config.out``: config.yaml (the resolved configuration), last.pt after every epoch and best.pt (lowest
AbsRel), both space_clip_ros checkpoints the node and load_checkpoint read directly, written atomically;
metrics.jsonl, steps.jsonl and TensorBoard logs in tb/. A resumed run (``resume=RUN/last.pt``) continues exactly
where that run stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from space_clip_ros.checkpoint import atomic_save, checkpoint_dict, read_checkpoint
from space_clip_ros.device import autocast_dtype
from space_clip_ros.model import SpaceClip, SpaceClipConfig
from space_clip_ros.model.backbone import BackboneUnavailableError

from . import config as cfgmod
from .config import ConfigError, TrainConfig, TrainingError
from .data import Augment, DepthDataset, TrainOrder, loader
from .datasets import DATASETS
from .distributed import Process
from .evaluation import eval_loader, evaluate, image_grid
from .losses import GlobalBatch, SpaceClipLoss
from .metrics import format_table
from .optim import EMA, make_scheduler
from .protocols import PROTOCOLS as PROTOCOL_TABLE
from .random_state import rng_state, seed_everything, set_rng_state

RESUME_FREE = ("out", "max_steps", "workers", "device", "log_every", "log_images")  # may change on --resume


# ---------------------------------------------------------------------------------------------------- pieces
def build_model(config: TrainConfig) -> SpaceClip:
    model_cfg = dict(config.model)
    if any(w > 0 for w in config.aux_weights):
        if model_cfg.get("architecture", "release") == "paper":
            raise ConfigError("aux_weights need the release architecture's auxiliary heads; "
                             "set model.architecture=release (--set model.architecture=release) or aux_weights=[]")
        model_cfg["use_aux_heads"] = True
    try:
        return SpaceClip.from_pretrained_backbone(SpaceClipConfig.from_dict(model_cfg))
    except BackboneUnavailableError as error:
        raise ConfigError(f"{error}") from None




def model_from_init(path: Path, config: TrainConfig) -> SpaceClip:
    """The model of checkpoint ``path`` (decoder weights and tower), to fine-tune; its model config must be the
    run's (finetune.py copies it into the config)."""
    from space_clip_ros.checkpoint import CheckpointError, model_from_checkpoint_dict

    try:
        ckpt = read_checkpoint(path)
        backbone = config.model.get("backbone")
        model = model_from_checkpoint_dict(ckpt, backbone if backbone != ckpt["model_config"].get("backbone")
                                           else None)
    except (CheckpointError, BackboneUnavailableError, OSError) as error:
        raise ConfigError(f"--init {path}: {error}") from None
    if model.config.to_dict() != SpaceClipConfig.from_dict(config.model).to_dict():
        raise ConfigError(f"--init {path}: its model config differs from the run's config.model")
    return model.train()


# ------------------------------------------------------------------------------------------------------ trainer
class Trainer:
    def __init__(self, config: TrainConfig, resume: Optional[Path] = None, init: Optional[Path] = None):
        """``init``: a checkpoint whose decoder (and tower) the run starts from (fine-tuning; config.model must be
        its model config, as finetune.py sets it); ``resume``: a run's last.pt to continue."""
        self.config = config
        self.proc = Process(config.device)
        self.out = Path(config.out)
        try:  # autocast of the frozen tower's and the decoder's forward; auto: bf16 on CUDA, fp32 on the CPU
            self.dtype = autocast_dtype(config.precision, self.proc.device)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        seed_everything(config.seed, self.proc.rank)
        if self.proc.world > 1 and config.batch_size % self.proc.world:
            raise ConfigError(f"batch size {config.batch_size} does not divide over "
                             f"{self.proc.world} processes")
        self.per_process_batch = config.batch_size // self.proc.world

        self._build_model(init)
        self._build_data()
        self._build_optimisation()
        self.epoch, self.step, self.batch_in_epoch = 0, 0, 0
        self.best = math.inf
        self.resume_rng: Optional[Dict[str, Any]] = None
        self.stop_rng: Optional[Dict[str, Any]] = None  # where training left its random streams (checkpointed)
        self.skipped = self.skipped_epoch = 0
        self.nonfinite_steps = self.consecutive_nonfinite = 0
        self.scaler_skipped = 0  # fp16 steps the gradient scaler skipped (overflow)
        self._pending: List[tuple] = []  # steps not yet read on the host: (step, epoch, lr, (names, values) or None)
        self._last_loss = float("nan")
        self.bar = None
        if self.proc.main:
            self._remove_partial_checkpoints()
        if resume:
            self._load(resume)
        self.writer = None
        if self.proc.main:
            self.out.mkdir(parents=True, exist_ok=True)
            cfgmod.dump(config, self.out / "config.yaml")
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step if resume else None)

    def _build_model(self, init: Optional[Path]) -> None:
        """The model (from the config, or from ``init`` to fine-tune), what its checkpoints will carry, its memory
        layout and compilation, and its distributed wrapper (``self.net``)."""
        config = self.config
        self.model = (build_model(config) if init is None else model_from_init(init, config)).to(self.proc.device)
        # The reader and the camera checkpoints carry (the node's focal-length transfer); a robot's folder has its own.
        dataset_class, camera = DATASETS[config.dataset].reader(config.data_path)
        self.dataset_class = dataset_class
        script = "finetune.py" if init is not None or config.dataset == "folder" else f"train_{config.dataset}.py"
        self.model.provenance = {"trained": True, "dataset": config.dataset, "source": f"{script} ({self.out.name})",
                                 **({"initialised_from": str(init)} if init is not None else {})}
        # The checkpoint carries the training camera (the node rescales depth to its own camera by fx/width) and the
        # size the decoder was trained to produce (the node's first resize step goes through it).
        self.model.training_camera = camera
        self.model.preprocessing.output_size = tuple(dataset_class.eval_size)
        if config.channels_last and self.proc.device.type == "cuda":  # the decoder's convolutions in NHWC on GPUs
            self.model.decoder.to(memory_format=torch.channels_last)
        if config.compile_decoder:  # in place: the state_dict keys (and so the checkpoints) stay the same
            self.model.decoder.compile()
        if self._sync_batchnorm():  # BatchNorm statistics over the global batch, as one GPU would see it
            self.model.decoder = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model.decoder)
        self.unweighted_heads = self._freeze_unweighted_heads()
        self.net = self.model
        if self.proc.distributed:  # every parameter that trains is used by every step's loss: no unused ones
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.proc.device.index] if self.proc.device.type == "cuda" else None)

    def _sync_batchnorm(self) -> bool:
        """Whether BatchNorm is synchronised over the processes: ``auto`` under torchrun on GPUs."""
        value, proc = self.config.sync_batchnorm, self.proc
        if value is True and proc.distributed and proc.device.type != "cuda":
            raise ConfigError("sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only); set "
                              "sync_batchnorm=auto or false on the CPU")
        return bool(proc.distributed and (value is True or (value == "auto" and proc.device.type == "cuda")))

    def _freeze_unweighted_heads(self) -> List[int]:
        """Auxiliary heads the loss gives no positive weight (``aux_weights: []`` on a release-trained ``--init``,
        a 0 weight, fewer weights than heads) are frozen: they would get no gradient, which DistributedDataParallel
        takes for a step that never finished. Their weights and BatchNorm statistics stay as they were (they run in
        eval mode when another head makes the decoder compute them). Returns their indices."""
        heads = getattr(self.model.decoder, "aux_depth_heads", None)
        if heads is None:
            return []
        weights = list(self.config.aux_weights)
        frozen = [i for i in range(len(heads)) if i >= len(weights) or weights[i] <= 0]
        for i in frozen:
            heads[i].requires_grad_(False)
        if frozen:
            self.proc.log(f"auxiliary head(s) {frozen} have no weight in the loss (aux_weights {weights}): frozen")
        return frozen

    def _build_data(self) -> None:
        """The training and validation sets, the distributed sampler and the training loader."""
        config = self.config
        self.train_set = self._dataset(config.filenames, "train")
        self.eval_set = self._dataset(config.filenames_eval, "eval")
        if len(self.train_set) < config.batch_size:
            raise ConfigError(f"{len(self.train_set)} training lines are fewer than one batch "
                              f"of {config.batch_size}; lower --batch-size")
        self.order = TrainOrder(self.train_set, self.proc.world, self.proc.rank, config.seed, self.per_process_batch)
        self.workers = self._workers()
        self.loader = loader(self.train_set, self.workers, batch_size=self.per_process_batch, sampler=self.order,
                             drop_last=True, pin_memory=self.proc.device.type == "cuda",
                             persistent_workers=self.workers > 0)
        self.steps_per_epoch = len(self.loader)

    def _workers(self) -> int:
        """DataLoader workers of this process: the config's number, or for ``auto`` one per core this process's
        share of the machine leaves beside itself (the cores it may run on over the processes torchrun started on
        this machine), at most 16."""
        value = self.config.workers
        if value != "auto":
            return int(value)
        machine = os.cpu_count() or 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine
        share = cores // self.proc.local_world if cores >= machine else cores  # pinned (SLURM, numa): its own share
        workers = max(1, min(16, share - 1))
        self.proc.log(f"workers: auto = {workers} data loading process(es) per training process ({cores} cores, "
                      f"{self.proc.local_world} training process(es) on this machine)")
        return workers

    def _build_optimisation(self) -> None:
        """Optimizer (fused AdamW on GPUs), schedule, gradient scaler (fp16), EMA of the decoder and the loss."""
        config = self.config
        self.trainable = list(self.model.trainable_parameters())
        # Fused AdamW (CUDA and CPU): one kernel, and it takes the step's skip flag on the device (found_inf).
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, weight_decay=config.weight_decay,
                                           fused=True)
        self.scheduler = make_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.ema = EMA(self.model.decoder, config.ema_decay) if config.ema_decay > 0 else None
        self.criterion = SpaceClipLoss(config.w_ssim, config.aux_weights, config.min_depth,
                                       config.max_depth, version=config.loss_version,
                                       group=GlobalBatch() if self.proc.distributed else None)

    def _remove_partial_checkpoints(self) -> None:
        """Checkpoints are written to a temporary file and renamed; a run killed while writing leaves the temporary
        file (never a damaged last.pt or best.pt). Remove such leftovers, saying so."""
        for partial in sorted(self.out.glob(".*.pt.*.tmp")) if self.out.is_dir() else []:
            partial.unlink()
            print(f"removed {partial.name}: a checkpoint write that did not finish (the run was killed while "
                  "writing); last.pt and best.pt are the last complete ones")

    def _dataset(self, list_value: str, mode: str) -> DepthDataset:
        c = self.config
        pre = self.model.preprocessing
        return self.dataset_class(cfgmod.list_path(list_value), c.data_path, c.gt_path, mode, pre.input_size,
                          pre.mean, pre.std,
                          Augment(tuple(c.crop), c.rotate_degrees, c.flip, c.color, c.rotate_backend),
                          strict=c.strict, seed=c.seed)

    # ---------------------------------------------------------------------------------------- checkpoints
    def _training_state(self) -> Dict[str, Any]:
        return {
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch, "best_abs_rel": self.best,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "ema": self.ema.shadow if self.ema else None,
            "rng": self.proc.gather(self.stop_rng),
            "world_size": self.proc.world, "skipped": self.skipped, "config": self.config.to_dict(),
        }

    @contextlib.contextmanager
    def _decoder_weights(self, state: Optional[Dict[str, torch.Tensor]]):
        """The decoder holds ``state`` (e.g. the EMA's) inside the block and its own weights again after it; None
        leaves it as it is."""
        if state is None:
            yield
            return
        live = {k: v.detach().clone() for k, v in self.model.decoder.state_dict().items()}
        self.model.decoder.load_state_dict(state)
        try:
            yield
        finally:
            self.model.decoder.load_state_dict(live)

    def _save(self, name: str, state: Dict[str, Any], decoder_state: Optional[Dict[str, torch.Tensor]] = None,
              extra: Optional[Dict[str, Any]] = None) -> Path:
        """A checkpoint in the project format with ``state`` (:meth:`_training_state`); ``decoder_state`` replaces
        the live decoder's (the EMA's)."""
        with self._decoder_weights(decoder_state):
            ckpt = checkpoint_dict(self.model, provenance={"epoch": self.epoch, "step": self.step, **(extra or {})},
                                   training_state=state)
        path = self.out / name
        atomic_save(ckpt, path)
        return path

    def _load(self, path: Path) -> None:
        ckpt = read_checkpoint(path)
        state = ckpt.get("training_state")
        if not state:
            raise ConfigError(f"{path} has no training state (only checkpoints written by "
                             "train_kitti.py or train_nyu.py can be resumed)")
        if state["world_size"] != self.proc.world:
            raise ConfigError(f"{path} was written by {state['world_size']} process(es); "
                             f"resume with the same number (now {self.proc.world}) so the data order matches")
        changed = {k: (state["config"].get(k), v) for k, v in self.config.to_dict().items()
                   if k not in RESUME_FREE and state["config"].get(k) != v}
        if changed:
            self.proc.log("warning: resuming with settings that differ from the run's: " + "; ".join(
                f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items()) + " (the result is no longer the "
                "uninterrupted run's)")
        self.model.decoder.load_state_dict(ckpt["decoder"])
        self.optimizer.load_state_dict(self._optimizer_state(state["optimizer"]))
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema and state["ema"] is not None:
            self.ema.shadow = {k: v.to(self.proc.device) for k, v in state["ema"].items()}
        self.epoch, self.step, self.batch_in_epoch = state["epoch"], state["step"], state["batch_in_epoch"]
        self.best, self.skipped = state["best_abs_rel"], state["skipped"]
        self.resume_rng = state["rng"][self.proc.rank]  # each process its own random streams
        set_rng_state(self.resume_rng)
        self.proc.log(f"resumed {path}: epoch {self.epoch + 1}, step {self.step}, batch {self.batch_in_epoch} "
                      f"of {self.steps_per_epoch}")

    def _optimizer_state(self, saved: Dict[str, Any]) -> Dict[str, Any]:
        """The optimizer state of a checkpoint for this run's parameters. A run written before unweighted
        auxiliary heads were frozen listed every decoder parameter; those heads never had a gradient there (so no
        AdamW state either), and their entries are dropped."""
        every = list(self.model.decoder.parameters())
        trainable = [i for i, p in enumerate(every) if p.requires_grad]
        groups = saved["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(every) or len(trainable) == len(every):
            return saved
        new_index = {old: new for new, old in enumerate(trainable)}
        dropped = [i for i in saved["state"] if int(i) not in new_index]
        if dropped:
            raise ConfigError(f"the checkpoint's optimizer holds state for {len(dropped)} parameter(s) of auxiliary "
                              f"heads this run freezes (aux_weights {self.config.aux_weights}); resume with the "
                              "run's own aux_weights")
        group = {**groups[0], "params": list(range(len(trainable)))}
        return {"state": {new_index[int(i)]: v for i, v in saved["state"].items()}, "param_groups": [group]}

    # ----------------------------------------------------------------------------------------------- loop
    def fit(self) -> Dict[str, float]:
        c = self.config
        max_steps = c.max_steps or math.inf
        self.proc.log(f"training {sum(p.numel() for p in self.model.trainable_parameters()):,} decoder parameters "
                      f"({c.model.get('backbone')} frozen) on {self.proc.device} x{self.proc.world}, "
                      f"{len(self.train_set)} lines, {self.steps_per_epoch} steps/epoch, {c.epochs} epochs, "
                      f"{c.precision} ({'fp32' if self.dtype is None else str(self.dtype).split('.')[-1]} "
                      f"autocast); run folder {self.out}")
        results: Dict[str, float] = {}
        stopped = False
        while self.epoch < c.epochs and not stopped:
            stopped = self._train_epoch(max_steps)
            finished_epoch = self.batch_in_epoch == 0
            last = (self.epoch >= c.epochs) or stopped
            # The random streams as training left them go into the checkpoint, and validation must not move them:
            # a resumed run (which skips it) and an uninterrupted one then draw the same dropout masks and crops.
            self.stop_rng = rng_state()
            if last or (finished_epoch and self.epoch % c.eval_every == 0):
                results = self._validate(final=last)  # writes last.pt, and best.pt when AbsRel improved
                set_rng_state(self.stop_rng)
            else:
                state = self._training_state()  # collective under torchrun
                if self.proc.main:
                    self._save("last.pt", state)
                    print(f"wrote {self.out / 'last.pt'} (epoch {self.epoch}, not validated: eval_every "
                          f"{c.eval_every})")
        if self.writer:
            self.writer.close()
        self.proc.close()
        return results

    def _train_epoch(self, max_steps: float) -> bool:
        """One epoch (or the rest of one after a resume). True when max_steps stopped it."""
        from tqdm import tqdm

        c = self.config
        resuming = self.batch_in_epoch > 0 and self.resume_rng is not None
        if not resuming:
            self.batch_in_epoch = 0
        skip = self.batch_in_epoch
        # The order and the augmentations depend on (seed, epoch, line) only: a resumed epoch starts at its batch
        # without loading the ones before it.
        self.order.set_epoch(self.epoch, skip)
        self.net.train()
        heads = getattr(self.model.decoder, "aux_depth_heads", None)
        for i in self.unweighted_heads:  # frozen heads that still run (another head is weighted): statistics too
            heads[i].eval()
        bar = self.bar = tqdm(total=self.steps_per_epoch, initial=skip, desc=f"epoch {self.epoch + 1}/{c.epochs}",
                              disable=not self.proc.main, dynamic_ncols=True)
        start = time.time()
        if not resuming:
            self.train_set.skips.skipped.clear()
            self.skipped_epoch = 0
        for i, batch in enumerate(self.loader, start=skip):
            if self.step >= max_steps:
                self._flush()
                bar.close()
                self.proc.log(f"stopped after {self.step} steps (--max-steps)")
                return True
            if i == skip and resuming:  # the random streams (dropout) as they were when the run stopped
                set_rng_state(self.resume_rng)
                self.resume_rng = None
            self.train_set.record_skips(batch)
            self._train_step(batch)
            self.batch_in_epoch = i + 1
            bar.update(1)
        self._flush()
        bar.close()
        self.epoch += 1
        self.batch_in_epoch = 0
        if self.scaler_skipped:
            self.proc.log(f"{self.scaler_skipped} step(s) so far skipped by the fp16 gradient scaler (overflow)")
        self.proc.log(f"epoch {self.epoch} done in {time.time() - start:.0f} s; " + (
            f"{self.skipped_epoch} training line(s) skipped (all processes); " + self.train_set.skips.summary()
            if self.skipped_epoch else "no training lines skipped"))
        return self.step >= max_steps

    def _train_step(self, batch: Dict[str, Any]) -> None:
        """One optimizer step that never waits for the device: whether it counts (a finite loss and gradient) is
        decided on the device and acted on there (the fused AdamW skips its update, BatchNorm statistics and the
        EMA keep their values); losses and flags are read on the host once per ``log_every`` steps (:meth:`_flush`),
        which reports skipped steps and stops a run that skips ``max_nonfinite_steps`` in a row."""
        c = self.config
        device = self.proc.device
        n = batch["n"]
        skipped_here, empty = self.proc.all_sum([float(len(batch["skipped"])), float(n == 0)])  # host numbers
        self.skipped += int(skipped_here)
        self.skipped_epoch += int(skipped_here)
        if empty:  # every line of a process's batch was unusable: all processes pass this step together
            self.step += 1
            self._schedule_past_skipped_step()
            self._pending.append((self.step, self.epoch, self.optimizer.param_groups[0]["lr"], None))
            return
        pixels = batch["pixel_values"].to(device, non_blocking=True)
        gt = batch["depth"].to(device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        # BatchNorm's running statistics change in the forward pass: kept to undo a step that turns out non-finite.
        buffers = list(self.model.decoder.buffers())
        before = torch._foreach_mul(buffers, 1) if buffers else []
        with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self.net(pixels, output_size=tuple(gt.shape[-2:]), return_aux=bool(self.criterion.aux_weights))
        depth, aux = out if isinstance(out, tuple) else (out, None)
        losses = self.criterion(depth.float(), gt, [a.float() for a in aux] if aux else None)
        loss = losses["loss"]
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # fp16: the gradients unscaled, the scaler's overflow check recorded
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, c.grad_clip)
        bad = self.proc.any(torch.stack([~torch.isfinite(loss.detach()), ~torch.isfinite(norm)]))
        skip = bad.any()
        self.optimizer.found_inf = skip.float()  # the fused AdamW leaves weights, moments and step count as they were
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf
        self.scaler.update()  # fp16: the scale lowered after an overflow (no-op otherwise)
        with torch.no_grad():
            for buffer, saved in zip(buffers, before, strict=True):
                buffer.copy_(torch.where(skip, saved, buffer))
        self.scheduler.step()  # the schedule moves on over a skipped step too
        if self.ema:
            self.ema.update(self.model.decoder, skip)
        self.step += 1
        values = torch.cat([torch.stack([losses[k].detach().float() for k in losses]), bad.float()])
        self._pending.append((self.step, self.epoch, self.optimizer.param_groups[0]["lr"], (list(losses), values)))
        if self.step % c.log_every == 0:
            self._flush()

    def _schedule_past_skipped_step(self) -> None:
        """The schedule moves on over a step without an optimizer step (a batch of unusable lines), as over a taken
        one; torch's warning that the schedule's first value is skipped is silenced: it is, on purpose."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.scheduler.step()

    def _flush(self) -> None:
        """The steps since the last flush, read on the host in one transfer: steps.jsonl (every step: this process's
        losses, ``skipped`` saying why for a skipped one), TensorBoard (every ``log_every`` steps), the progress bar,
        a warning per non-finite step; ``max_nonfinite_steps`` skipped steps in a row stop the run with an error
        (the rows after the step that reached it are not written)."""
        rows, self._pending = self._pending, []
        stacked = [values for *_, values in rows if values is not None]
        read = iter(torch.stack([v for _, v in stacked]).tolist() if stacked else [])  # the one host read
        for step, epoch, lr, entry in rows:
            if entry is None:
                self._log_step(step, epoch, lr, {"loss": float("nan"), "skipped": "no usable line in a batch"})
                continue
            numbers = next(read)
            record = dict(zip(entry[0], numbers[:-2], strict=True))
            bad_loss, bad_grad = numbers[-2:]
            if not (bad_loss or bad_grad):
                self.consecutive_nonfinite = 0
                self._log_step(step, epoch, lr, record)
                continue
            self.consecutive_nonfinite += 1
            if not bad_loss and self.scaler.is_enabled():  # fp16: the gradient scaler's overflow (it lowered its scale)
                self.scaler_skipped += 1
                why = what = "fp16 gradient overflow"
            else:
                what = "loss" if bad_loss else "gradient"
                why = f"non-finite {what}"
                self.nonfinite_steps += 1
                self.proc.log(f"warning: non-finite {what} at step {step} (epoch {epoch + 1}): step skipped "
                              f"({self.nonfinite_steps} so far, {self.consecutive_nonfinite} in a row)")
            self._log_step(step, epoch, lr, {**record, "loss": float("nan"), "skipped": why})
            limit = int(self.config.max_nonfinite_steps)
            if limit and self.consecutive_nonfinite >= limit:
                raise TrainingError(f"{self.consecutive_nonfinite} steps in a row had a {why} (last: step {step}); "
                                    f"the run stops. The checkpoints in {self.out} are the last good ones: resume "
                                    "from last.pt with a lower lr, precision fp32 or grad_clip, or check the data")
        if rows and self.bar is not None:
            self.bar.set_postfix(loss=f"{self._last_loss:.4f}", lr=f"{rows[-1][2]:.2e}")

    def _log_step(self, step: int, epoch: int, lr: float, losses: Dict[str, Any]) -> None:
        """steps.jsonl gets every step (this process's loss); TensorBoard every log_every steps."""
        self._last_loss = losses.get("loss", float("nan"))
        if not self.proc.main:
            return
        with open(self.out / "steps.jsonl", "a") as handle:
            handle.write(json.dumps({"step": step, "epoch": epoch, "lr": lr, **losses}) + "\n")
        if step % self.config.log_every == 0 or step == 1:
            for key, value in losses.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("data/skipped_lines", self.skipped, step)

    # ---------------------------------------------------------------------------------------- validation
    def _validate(self, final: bool) -> Dict[str, float]:
        """Validate the live (and EMA) weights without the final flip TTA, log the better, write last.pt and best.pt
        (lowest AbsRel); after the last epoch, report best.pt as :meth:`_final_report` says."""
        c = self.config
        loader = eval_loader(self.eval_set, workers=min(self.workers, 4))
        # fp32, as evaluate.py reports (the training's autocast would choose best.pt on other numbers); selection
        # never sees the final TTA.
        kwargs = dict(protocol=c.eval_protocol, crop=c.eval_crop, flip_tta=c.eval_flip_tta, min_depth=c.min_depth,
                      max_depth=c.max_depth, autocast_dtype=None)
        self._share_rank0_weights()
        chosen, source, ema_state, pictures, note = self._evaluate_weights(loader, kwargs)
        is_best = chosen["abs_rel"] < self.best
        if is_best:
            self.best = chosen["abs_rel"]
        state = self._training_state()  # collective under torchrun (gathers every process's RNG state)
        skipped_eval, = self.proc.all_sum([float(len(self.eval_set.skips.skipped))])
        if self.proc.main:
            self._log_validation(chosen, source, pictures, note, int(skipped_eval), final)
            extra = {"abs_rel": chosen["abs_rel"], "weights": source, "eval_protocol": c.eval_protocol}
            self._save("last.pt", state, extra=extra)
            if is_best:
                self._save("best.pt", state, decoder_state=ema_state, extra=extra)
                print(f"new best AbsRel {self.best:.4f} ({source}): {self.out / 'best.pt'}")
            print(f"wrote {self.out / 'last.pt'}")
        if self.proc.distributed:
            dist.barrier()  # best.pt is on disk for every process
        if final:
            return self._final_report(loader, kwargs)
        return chosen

    def _share_rank0_weights(self) -> None:
        """Under torchrun, every process takes rank 0's decoder (weights and BatchNorm statistics, which each process
        updates from its own share of the batch) and EMA before validation: the model validated is the one rank 0
        saves."""
        if not self.proc.distributed:
            return
        with torch.no_grad():
            for tensor in self.model.decoder.state_dict().values():
                dist.broadcast(tensor, 0)
            if self.ema:
                for tensor in self.ema.shadow.values():
                    dist.broadcast(tensor, 0)

    def _evaluate_weights(self, loader, kwargs):
        """The live weights' metrics, and the EMA's when there is one: (the better results, "raw" or "ema", the EMA
        state when it won, its pictures, a line comparing the two)."""
        keep = self.config.log_images
        raw, pictures = evaluate(self.model, loader, self.proc.device, keep_images=keep, **kwargs)
        if not self.ema:
            return raw, "raw", None, pictures, ""
        with self._decoder_weights(self.ema.shadow):
            ema, ema_pictures = evaluate(self.model, loader, self.proc.device, keep_images=keep, **kwargs)
        note = f"raw AbsRel {raw['abs_rel']:.4f}, EMA AbsRel {ema['abs_rel']:.4f}"
        if ema["abs_rel"] < raw["abs_rel"]:
            return ema, "ema", self.ema.shadow, ema_pictures, note
        return raw, "raw", None, pictures, note

    def _log_validation(self, chosen: Dict[str, float], source: str, pictures, note: str, skipped_eval: int,
                        final: bool) -> None:
        """The validation's table on stdout, TensorBoard scalars and images, and its metrics.jsonl record."""
        c = self.config
        tag = f"epoch {self.epoch} step {self.step}" + (" (last)" if final else "")
        print(format_table(chosen, f"validation, {tag}, {c.eval_protocol} protocol, {source} weights, fp32:"))
        if note:
            print(note)
        if skipped_eval:
            print(f"{skipped_eval} validation line(s) skipped; " + self.eval_set.skips.summary())
        for key, value in chosen.items():
            self.writer.add_scalar(f"val/{key}", value, self.step)
        if pictures:
            self.writer.add_image("val/rgb_gt_pred", image_grid(pictures, c.max_depth), self.step, dataformats="HWC")
        self.writer.flush()
        record = {"epoch": self.epoch, "step": self.step, "source": source, "last": final,
                  "flip_tta": c.eval_flip_tta, "skipped_train_lines": self.skipped, **chosen}
        with open(self.out / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _final_report(self, loader, kwargs) -> Dict[str, float]:
        """best.pt (the weights selected without TTA) evaluated with ``final_flip_tta`` under every protocol of
        ``summary_protocols``, each labelled with what to compare it with (docs/evaluation.md).
        metrics.jsonl gets one ``final`` record per protocol; ``primary`` marks the validation protocol's."""
        c = self.config
        flip = c.final_flip_tta
        best = self.out / "best.pt"
        weights = read_checkpoint(best)["decoder"] if best.is_file() else None
        protocols = [c.eval_protocol] + [p for p in c.summary_protocols if p != c.eval_protocol]
        tables, primary = [], {}
        for protocol in protocols:
            with self._decoder_weights(weights):
                results, _ = evaluate(self.model, loader, self.proc.device,
                                      **{**kwargs, "protocol": protocol, "flip_tta": flip})
            if protocol == c.eval_protocol:
                primary = results
            about = PROTOCOL_TABLE[(c.dataset, protocol)].describe(c.eval_crop)
            tables.append(format_table(results, f"{protocol} protocol ({about}):"))
            if self.proc.main:
                with open(self.out / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps({"final": True, "primary": protocol == c.eval_protocol,
                                             "protocol": protocol, "flip_tta": flip, "weights": best.name,
                                             "epoch": self.epoch, "step": self.step, **results}) + "\n")
        if self.proc.main:
            print(f"\nfinal summary: {best.name} (AbsRel {self.best:.4f} when selected, without TTA)"
                  + (", evaluated with flip TTA" if flip else "") + ":")
            print("\n".join(tables))
        return primary

