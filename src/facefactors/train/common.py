"""Shared training set-up: run directories, the Lightning Trainer, safe checkpoints, resume.

Every method's recipe (``train/<method>.py``) is a thin ``LightningModule``; this module gives
them all the same run-directory layout and the same behaviour:

* ``config.yaml`` — the resolved config (defaults <- preset <- overrides);
* ``checkpoints/last.ckpt`` — full trainer state, written atomically by Lightning every
  ``checkpoint_every_n_steps`` and on interruption; loaded with ``weights_only=True`` so a
  checkpoint file can never execute code;
* ``weights.safetensors`` — the model's weights alone (what inference loads);
* ``metrics.json``, ``samples/*.png``, ``tb/`` (TensorBoard logs).

A run started again on the same directory resumes from ``last.ckpt`` with the saved config.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from facefactors.config import from_dict, save_config, to_dict
from facefactors.utils.device import apply_threads
from facefactors.utils.errors import UserError
from facefactors.utils.io import atomic_write_json, save_module


@dataclass
class TrainerConfig:
    max_steps: int = 2000  # optimisation steps (batches); the world is an infinite stream
    batch_size: int = 64
    num_workers: int = 0  # data-loader worker processes; 0 renders in the main process
    precision: str = "32-true"  # Lightning precision string, e.g. "bf16-mixed" on GPUs
    accelerator: str = "auto"  # "auto" picks the accelerator torch reports, else CPU
    devices: str = "auto"  # "auto", a count ("2") or a list ("0,1")
    strategy: str = "auto"  # "ddp" for several GPUs / nodes
    num_nodes: int = 1
    log_every_n_steps: int = 20
    checkpoint_every_n_steps: int = 200  # last.ckpt is also written on interruption
    sample_every_n_steps: int = 500  # sample grids written to samples/
    seed: int = 0
    progress: bool = True  # progress bar with rate and ETA
    progress_every_n_steps: int = 1  # redraw the bar every n steps (fast steps: the redraw is a visible share)
    threads: int = 0  # torch CPU threads; 0 = torch's default
    channels_last: bool = True  # train with conv weights in NHWC layout (same results, faster; ChannelsLast)


@dataclass
class RunDir:
    """The files of one training run, in one folder."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def weights(self) -> Path:
        return self.path / "weights.safetensors"

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.ckpt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def features(self) -> Path:
        return self.path / "features.npz"

    def has_checkpoint(self) -> bool:
        return self.last_checkpoint.is_file()

    def update_metrics(self, new: dict[str, Any]) -> dict[str, Any]:
        """Merge ``new`` into metrics.json (atomically) and return the whole dict."""
        current = json.loads(self.metrics.read_text()) if self.metrics.is_file() else {}
        current.update(new)
        atomic_write_json(self.metrics, current)
        return current


# Trainer fields that change how a run executes, not what it computes: a resume may set them anew.
RESUME_MAY_CHANGE = {("trainer", k) for k in ("max_steps", "progress", "progress_every_n_steps", "threads", "num_workers", "channels_last")}


def prepare_run(out: str | Path, cfg, overwrite: bool = False) -> tuple[RunDir, bool]:
    """Create (or reopen) a run directory; returns (run, resuming).

    An existing run with a checkpoint is resumed; its saved config must match ``cfg`` in every
    field but those of ``RESUME_MAY_CHANGE`` (the step budget, progress bar, threads, workers,
    memory layout), otherwise the user is told to pick another directory.
    """
    run = RunDir(Path(out))
    resuming = run.has_checkpoint() and not overwrite
    if resuming and run.config.is_file():
        diff = config_differences(run, cfg)
        if diff:
            raise UserError(
                f"{run.config}: this run directory holds a run with a different config ({', '.join(diff[:3])}); "
                "resume it with the same options, pass --overwrite, or choose another --out"
            )
    elif run.path.exists() and any(run.path.iterdir()) and not overwrite and not run.config.is_file():
        raise UserError(f"{run.path}: folder exists and is not a facefactors run; choose another --out or pass --overwrite")
    if overwrite and run.path.exists():
        # A fresh start: drop the old trainer state so fit() does not resume from it.
        import shutil

        shutil.rmtree(run.path / "checkpoints", ignore_errors=True)
        for stale in (run.weights, run.metrics):
            stale.unlink(missing_ok=True)
    run.path.mkdir(parents=True, exist_ok=True)
    run.samples.mkdir(exist_ok=True)
    save_config(cfg, run.config)
    return run, resuming


def config_differences(run: RunDir, cfg) -> list[str]:
    """The fields in which ``run``'s saved config differs from ``cfg`` ("section.field: old ->
    new"), but those of ``RESUME_MAY_CHANGE``; empty when the run was trained with ``cfg``."""
    import yaml

    saved = yaml.safe_load(run.config.read_text()) or {}
    # A field added to the config after the run was saved takes its default, which by
    # convention keeps the earlier behaviour; without this every old run stopped resuming. A
    # field whose type widened (a name that became a list of names) is read as the config class
    # reads it now, so "pose" and ["pose"] are the same option.
    try:
        saved = to_dict(from_dict(type(cfg), saved))
    except (UserError, TypeError, ValueError):  # a field since removed, or a class without defaults
        try:
            saved = _fill_missing(saved, to_dict(type(cfg)()))
        except TypeError:
            pass
    return _config_diff(saved, to_dict(cfg), ignore=RESUME_MAY_CHANGE)


def _fill_missing(saved: dict, defaults: dict) -> dict:
    """``saved`` with every key it lacks taken from ``defaults`` (recursively, nested dicts)."""
    out = dict(saved)
    for k, v in defaults.items():
        if k not in out:
            out[k] = v
        elif isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = _fill_missing(out[k], v)
    return out


def _config_diff(a: dict, b: dict, ignore: set[tuple[str, ...]], prefix: tuple[str, ...] = ()) -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = prefix + (k,)
        if key in ignore:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, ignore, key)
        elif _normalise(va) != _normalise(vb):
            out.append(f"{'.'.join(key)}: {va!r} -> {vb!r}")
    return out


def _normalise(v):
    return list(v) if isinstance(v, tuple) else v


class ExportWeights(Callback):
    """Write ``weights.safetensors`` of ``pl_module.model`` whenever a checkpoint is saved and at the end."""

    def __init__(self, run: RunDir, attribute: str = "model"):
        self.run = run
        self.attribute = attribute

    def _export(self, pl_module: L.LightningModule) -> None:
        module = getattr(pl_module, self.attribute)
        save_module(self.run.weights, module, metadata={"class": type(module).__name__})

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.is_global_zero:
            self._export(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._export(pl_module)


class ChannelsLast(Callback):
    """Keep the 4-D weights (convolutions) in channels-last (NHWC) memory layout while training.

    Same arithmetic, another storage order: oneDNN's CPU convolutions and GPU tensor cores run
    fastest on NHWC, and a convolution whose weight is channels-last produces channels-last
    activations, so converting the weights once converts the whole network. The quick UFE's
    training step runs 1.5x (2 threads) to 1.6x (1 thread) faster (``bench/ufe.py --layout``);
    the 32-px VAE shows no measurable change. Runs at ``setup``, before the optimiser exists
    and before a checkpoint is restored; saved weights are made contiguous."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)


class StepBudgetRichBar(RichProgressBar):
    """Rich progress bar without Lightning's "Epoch 19/-2": runs are budgeted in steps
    (``max_epochs=-1``), so there is no last epoch to count to."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is not None and self.trainer.max_epochs < 1:
            return f"Epoch {current_epoch}"
        return super()._get_train_description(current_epoch)

    @property
    def total_train_batches(self) -> int | float:
        # Lightning sizes the bar by the steps left, but counts it from the batch a resumed run
        # restarts at: a run resumed at step 2306 of 6000 showed "6000/3694" and a wrong ETA.
        # With one endless epoch (our streams) the bar covers the whole budget instead.
        total = super().total_train_batches
        if self.trainer.num_training_batches == float("inf") and total != float("inf"):
            total += self.trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return total


class SaveOnInterrupt(Callback):
    """On Ctrl-C or an exception, write last.ckpt so no finished step is lost."""

    def __init__(self, run: RunDir):
        self.run = run

    def on_exception(self, trainer, pl_module, exception) -> None:
        if isinstance(exception, (KeyboardInterrupt, SystemExit)) and trainer.global_step > 0:
            # The whole state (optimiser, loops) for resuming. Said explicitly: left unset, Lightning
            # logs "`weights_only` was not set, defaulting to `False`" (about saving), which reads
            # like an unsafe load; loading is always weights_only=True (fit).
            trainer.save_checkpoint(str(self.run.last_checkpoint), weights_only=False)


def is_logger_step(global_step: int, every: int) -> bool:
    """Whether Lightning's logger writes this step's ``self.log`` values (it keeps every
    ``every``-th). ``self.log`` has a per-call bookkeeping cost, so recipes log, and compute
    logging-only diagnostics, on these steps only."""
    return (global_step + 1) % max(1, every) == 0


class Adam(torch.optim.Adam):
    """torch's Adam whose loaded state takes the memory layout of its parameter.

    The fused kernel walks a parameter, its gradient and its moment buffers in storage order, so
    moments saved from NCHW weights and loaded into channels-last ones (``trainer.channels_last``)
    would update the wrong elements, silently (measured: 0.036 off after one step of a 3x3 conv
    weight). Copying each loaded buffer into the parameter's layout keeps every element's state."""

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p, {})
                for k, v in state.items():
                    if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                        state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam as every recipe builds it: the fused implementation where torch has one.

    The same update rule (Kingma & Ba 2015, Algorithm 1) in one kernel over all parameters
    instead of a Python loop of small ops per tensor: on one CPU thread a step of the quick
    VAE's 24 tensors (767k weights) took 1.21 ms unfused, 1.10 ms with ``foreach`` and 0.39 ms
    fused, about 5% of its training step (experiments/vae_pythae.py compares training speed).
    Results agree with the unfused update to float rounding, not bit for bit."""
    params = list(params)  # tensors, or parameter groups {"params": [...], "lr": ...}
    tensors = [t for g in params for t in g["params"]] if params and isinstance(params[0], dict) else params
    devices = fused_kernel_devices()
    fused = bool(tensors) and all(p.is_floating_point() and p.device.type in devices for p in tensors) and len({p.device for p in tensors}) == 1
    return Adam(params, lr=lr, betas=tuple(betas), fused=fused or None)


SCHEDULES = ("constant", "cosine")


def late_decay_factor(step: int, max_steps: int, schedule: str = "constant", decay_start: float = 0.5, final_scale: float = 0.01) -> float:
    """The learning-rate factor at ``step``: 1 with ``constant``; with ``cosine``, 1 until
    ``decay_start * max_steps``, then half a cosine down to ``final_scale`` at ``max_steps``.

    The decay waits because the UFE's losses come in late (L_dis and L_ind from step 2000 of the
    standard preset's 6000): each is learnt at the full rate first, and only the last part of the
    run settles what all of them built (the cosine annealing of Loshchilov & Hutter 2017, one
    cycle, held flat at first)."""
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise UserError(f"optim.schedule={schedule!r} is not one of {list(SCHEDULES)}")
    start = decay_start * max_steps
    if step <= start or max_steps <= start:
        return 1.0
    progress = min(1.0, (step - start) / (max_steps - start))
    return final_scale + (1.0 - final_scale) * 0.5 * (1.0 + math.cos(math.pi * progress))


def check_schedule(schedule: str, decay_start: float, final_scale: float) -> None:
    """A clear error for a schedule the optimiser cannot follow (before a run is written)."""
    if schedule not in SCHEDULES:
        raise UserError(f"optim.schedule={schedule!r} is not one of {list(SCHEDULES)}")
    if not 0.0 <= decay_start < 1.0 or not 0.0 <= final_scale <= 1.0:
        raise UserError(f"optim.decay_start ({decay_start}) must be in [0, 1) and optim.final_lr_scale ({final_scale}) in [0, 1]")


def late_decay_scheduler(optimizer: torch.optim.Optimizer, max_steps: int, schedule: str, decay_start: float, final_scale: float) -> dict:
    """Lightning's scheduler entry for :func:`late_decay_factor`, stepped every training step.
    (A plain function as LambdaLR's factor: its state in a checkpoint is the step count alone.)"""

    def factor(step: int) -> float:
        return late_decay_factor(step, max_steps, schedule, decay_start, final_scale)

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}


def fused_kernel_devices() -> set[str]:
    """Device types with torch's fused optimiser kernels (torch's own list; CPU if it moved)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - a torch that renamed its private helper
        return {"cpu"}
    return set(_get_fused_kernels_supported_devices())


def build_trainer(cfg: TrainerConfig, run: RunDir, callbacks: list[Callback] | tuple = (), export_attribute: str = "model") -> L.Trainer:
    """A Lightning Trainer with the project's checkpointing, logging and progress conventions."""
    apply_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    checkpoint = ModelCheckpoint(
        dirpath=run.path / "checkpoints",
        filename="step{step}",
        save_last=True,
        save_top_k=0,
        every_n_train_steps=max(1, cfg.checkpoint_every_n_steps),
        save_on_train_epoch_end=False,
    )
    progress: Callback
    try:
        import rich  # noqa: F401

        progress = StepBudgetRichBar(refresh_rate=max(1, cfg.progress_every_n_steps), leave=True)
    except ImportError:  # pragma: no cover
        progress = TQDMProgressBar(refresh_rate=max(1, cfg.progress_every_n_steps))
    all_callbacks: list[Callback] = [checkpoint, ExportWeights(run, export_attribute), SaveOnInterrupt(run), *callbacks]
    if cfg.channels_last:
        all_callbacks.append(ChannelsLast())
    if cfg.progress:
        all_callbacks.append(progress)
    devices: Any = cfg.devices
    if isinstance(devices, str) and devices not in ("auto",):
        devices = [int(d) for d in devices.split(",")] if "," in devices else int(devices)
    return L.Trainer(
        max_steps=cfg.max_steps,
        max_epochs=-1,
        accelerator=cfg.accelerator,
        devices=devices,
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        logger=TensorBoardLogger(str(run.path), name="tb", version=""),
        callbacks=all_callbacks,
        log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic=False,
    )


def fit(trainer: L.Trainer, module: L.LightningModule, run: RunDir, train_dataloaders=None, datamodule=None) -> None:
    """Train, resuming from ``last.ckpt`` if the run has one (loaded with weights_only=True)."""
    ckpt = str(run.last_checkpoint) if run.has_checkpoint() else None
    if ckpt is not None and trainer.is_global_zero:
        from rich.console import Console

        Console(stderr=True).print(f"[cyan]resuming[/] from {ckpt}")
    try:
        # A batch stream that can (GroupedBatches, AlternatingBatches) goes on where the run
        # stopped: Lightning does not move an iterable data set on, and its first batches would
        # be trained on twice.
        stream = getattr(train_dataloaders, "dataset", None)
        if ckpt is not None and callable(getattr(stream, "skip", None)):
            stream.skip(checkpoint_batches(ckpt))
        trainer.fit(module, train_dataloaders=train_dataloaders, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except RuntimeError as e:
        if ckpt and ("checkpoint" in str(e).lower() or "state_dict" in str(e).lower() or "Unpickl" in str(e)):
            raise _cannot_resume(ckpt, e) from None
        raise


def checkpoint_batches(path: str | Path) -> int:
    """The training batches a Lightning checkpoint's run had taken (its batch progress; the
    global step where that is missing), read with weights_only=True."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated, not a checkpoint, or holding code weights_only refuses
        raise _cannot_resume(path, e) from None
    progress = state.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {}).get("total", {})
    return int(progress.get("processed", state.get("global_step", 0)))


def _cannot_resume(path: str | Path, error: Exception) -> UserError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return UserError(f"{path}: cannot resume from this checkpoint ({reason}); pass --overwrite to start afresh")


def config_hparams(cfg) -> dict:
    """A plain-dict copy of a dataclass config for Lightning's hparams (no pickled classes in checkpoints)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
