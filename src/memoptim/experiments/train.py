"""The training loop of the real-data benchmarks: metrics, checkpoints, resume, LR schedule.

:func:`train` runs one (task, optimizer, hyperparameters, seed) configuration and writes, in
``out_dir``:

* ``config.json`` -- the configuration (a resume must match it exactly) plus ``resolved``: the
  defaults it resolved to (batch size, schedule, the optimizer's full hyperparameters);
* ``metrics.jsonl`` -- one JSON object per epoch (unit): ``epoch`` (1-based), ``train_loss``
  (mean over the epoch's examples / tokens of the loss at the current parameters; for SAM the
  loss of the first, unperturbed evaluation), the task's evaluation (``val_accuracy`` in % or
  ``val_perplexity``, ``val_loss``, ``test_*``), ``lr``, ``time`` (seconds of the epoch,
  training + evaluation) and ``elapsed`` (seconds since the run's first start); online tasks add
  ``task`` / ``task_epoch`` and, after a task's last epoch, ``accuracies`` (one row of the
  accuracy matrix); with diagnostics on, ``distance``, ``sharpness``, ``buffer_variance``,
  ``buffer_agreement`` (and ``m_sharpness`` with ``m_sharpness_batches > 0``); memory optimizers
  add the buffer dynamics over the run so far (:mod:`memoptim.lab.buffer_dynamics`:
  ``buffer_replacement_rate``, ``buffer_oldest_share``, ``buffer_mean_age``, ...).  Non-finite
  numbers are written as ``null``;
* ``checkpoint.pt`` -- model, optimizer, torch RNG state, epoch count and metrics history, written
  atomically (temporary file + ``os.replace``) after every epoch;
* ``summary.json`` -- the best metric, its epoch, status, on completion.

Resume: with ``resume=True`` the run restarts from the last checkpoint; ``metrics.jsonl`` is
rewritten from the checkpoint's history.  Every epoch's batches are a pure function of
``(seed, epoch)`` and the torch RNG state is restored, so an interrupted-and-resumed run produces
exactly the parameters and metrics of an uninterrupted one (at most the interrupted epoch's work
is redone).

LR schedule (paper section 5: "we reduce the learning rate at the 25th epoch [of 50] by dividing
it by 10"): with ``schedule="step"`` epochs ``floor(E/2)+1 .. E`` run at ``lr/10``
(no decay when ``E == 1``); ``"constant"`` keeps ``lr``; ``"warmup-cosine"``, per step: 5% warm-up,
cosine decay to 10% (:mod:`memoptim.experiments.recipe`); ``"auto"`` is the task's default (step;
constant for the online streams; warmup-cosine for ``gpt-brown``, whose optimizer is built on
weight-decay groups, :meth:`~memoptim.experiments.tasks.Task.param_groups`).

Every optimizer is driven through ``optimizer.step(closure)`` where the closure zeroes the
gradients, computes the loss, back-propagates and clips: ``torch.optim`` optimizers evaluate it
once, SAM twice (at the parameters and at the perturbed point), so no optimizer needs a special
case.

Data-parallel training: when a default process group with more than one rank is initialised
(``memoptim train --nproc N``, or any caller under ``torchrun``), :func:`train` runs the same
global batches as a single process, each rank training on a contiguous share of every batch
(``Task.train_batches(..., shard=(rank, world_size))``), the model wrapped in
``DistributedDataParallel``.  The local loss is weighted by ``world_size * n_local / n_global``
so that DDP's gradient average is the gradient of the global batch's mean loss (also for an
uneven last batch); batch-norm statistics are synchronised over the ranks (a CPU-capable
replacement of ``torch.nn.SyncBatchNorm``, same state-dict keys), so the trajectory is the
single-process one up to float32 round-off.  The training loss and the evaluation sums are
all-reduced; only rank 0 writes files (a barrier follows the writes); every rank loads the
checkpoint on resume.  Every rank starts from the same torch RNG state (the checkpoint stores
rank 0's), so dropout masks are drawn from the same stream on every rank.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from memoptim.experiments.checkpointing import (
    CHECKPOINT,
    CONFIG,
    FORMAT_VERSION,
    METRICS,
    SUMMARY,
    append_line,
    atomic_write_text,
    json_safe,
    load_checkpoint,
    save_checkpoint,
)

# re-exported: other modules and scripts import them from here
from memoptim.experiments.checkpointing import CheckpointError as CheckpointError
from memoptim.experiments.checkpointing import read_metrics as read_metrics
from memoptim.experiments.data_parallel import all_reduce_sum, barrier, process_group, sync_batch_norm
from memoptim.experiments.recipe import lr_factor as lr_factor
from memoptim.experiments.recipe import set_lrs, step_factor
from memoptim.experiments.tasks import Task, build_task, sharded_evaluation
from memoptim.lab.buffer_dynamics import BufferDynamics
from memoptim.progress import Progress

#: flat hyperparameter names accepted by :func:`optimizer_kwargs` (CLI / sweep / JSON friendly)
HYPERPARAMETERS = (
    "lr", "beta1", "beta2", "eps", "momentum", "dampening", "weight_decay",
    "buffer_size", "decay", "rho", "adaptive",
)  # fmt: skip


def optimizer_kwargs(hyperparameters: Mapping[str, Any],
                     default_betas: tuple[float, float] = (0.9, 0.999)) -> dict[str, Any]:
    """Map flat hyperparameters to :func:`memoptim.create_optimizer` keywords: ``beta1`` /
    ``beta2`` become ``betas=(beta1, beta2)`` (a missing one from ``default_betas``); the rest pass
    through.  Unknown names raise ``ValueError``."""
    unknown = set(hyperparameters) - set(HYPERPARAMETERS)
    if unknown:
        raise ValueError(f"unknown hyperparameters {sorted(unknown)}; valid: {HYPERPARAMETERS}")
    kw = {k: v for k, v in hyperparameters.items() if k not in ("beta1", "beta2")}
    if "beta1" in hyperparameters or "beta2" in hyperparameters:
        kw["betas"] = (
            float(hyperparameters.get("beta1", default_betas[0])),
            float(hyperparameters.get("beta2", default_betas[1])),
        )
    return kw


def build_optimizer(name: str, params: Any, hyperparameters: Mapping[str, Any]) -> Any:
    """``memoptim.create_optimizer(name, params, **optimizer_kwargs(hyperparameters))``; a beta not
    given keeps the optimizer's own default (Lion's beta2 is 0.99, Adam's 0.999)."""
    from memoptim import create_optimizer

    return create_optimizer(name, params, **optimizer_kwargs(hyperparameters, _default_betas(name)))


def _default_betas(name: str) -> tuple[float, float]:
    """The ``betas`` default of the class registered as ``name`` (Adam's for builders that are not
    classes, such as presets and SAM wrappers: their bases are Adam-type)."""
    from memoptim.registry import REGISTRY

    entry = REGISTRY.get(name.strip().lower())
    try:
        default = inspect.signature(entry.build).parameters["betas"].default  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError, ValueError):
        return (0.9, 0.999)
    return tuple(default) if isinstance(default, tuple) else (0.9, 0.999)  # type: ignore[return-value]


def _tensorboard(enabled: bool, out_dir: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``out_dir/tensorboard``, or None (disabled, or no
    tensorboard package: then with a warning)."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn(
            "TensorBoard logging requested but the `tensorboard` package is not installed; "
            "continuing without it (pip install tensorboard)",
            stacklevel=4,  # the caller of train (via _start_run)
        )
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


@dataclass(frozen=True)
class _Settings:
    """The arguments of :func:`train` that shape a run, besides its task and its directory."""

    optimizer_name: str
    hyperparameters: Mapping[str, Any]
    epochs: int
    seed: int
    batch_size: int | None
    schedule: str
    subset: int | None
    eval_subset: int | None
    diagnostics: bool
    sharpness_iters: int
    m_sharpness_batches: int
    progress: bool
    tensorboard: bool
    stop_on_divergence: bool

    def config(self, task_name: str) -> dict[str, Any]:
        """The run's configuration (``config.json`` without ``resolved``); a resume must match it."""
        return json_safe(
            {
                "format": FORMAT_VERSION,
                "task": task_name,
                "optimizer": self.optimizer_name,
                "hyperparameters": dict(sorted(self.hyperparameters.items())),
                "epochs": self.epochs,
                "seed": self.seed,
                "batch_size": self.batch_size,
                "schedule": self.schedule,
                "subset": self.subset,
                "eval_subset": self.eval_subset,
                "diagnostics": self.diagnostics,
            }
        )


@dataclass
class _Run:
    """A run being trained: its settings, model, optimizer and progress, shared by its epochs."""

    task: Task
    settings: _Settings
    config: dict[str, Any]
    out: Path
    rank: int
    world: int
    batch_size: int
    schedule: str  # "step", "constant" or "warmup-cosine" ("auto" resolved)
    units: int  # epochs in all (for online streams: over all tasks)
    model: torch.nn.Module
    optimizer: Any
    base_lrs: list[float]  # of each parameter group, before the schedule's factor
    diag: Any  # TrainingDiagnostics, or None without diagnostics
    dynamics: Any = None  # BufferDynamics of a memory optimizer, else None
    net: torch.nn.Module | None = None  # what training forward passes go through (model or DDP)
    history: list[dict[str, Any]] = field(default_factory=list)
    start_unit: int = 0
    elapsed_before: float = 0.0  # seconds spent before this (re)start
    resolved: dict[str, Any] = field(default_factory=dict)
    params: list[Tensor] = field(default_factory=list)
    clip: float | None = None
    writer: Any = None  # TensorBoard SummaryWriter, or None

    @property
    def lead(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0


def train(
    task: str | Task,
    optimizer_name: str,
    hyperparameters: Mapping[str, Any],
    epochs: int,
    seed: int,
    out_dir: str | os.PathLike[str],
    resume: bool = False,
    *,
    batch_size: int | None = None,
    schedule: str = "auto",
    subset: int | None = None,
    eval_subset: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    verify_data: bool = True,
    progress: bool = False,
    tensorboard: bool = False,
    diagnostics: bool = False,
    sharpness_iters: int = 20,
    m_sharpness_batches: int = 0,
    stop_on_divergence: bool = True,
    keep_checkpoint: bool = True,
) -> dict[str, Any]:
    """Train one configuration; returns the run summary (also written to ``summary.json``).

    Args:
        task: a task name (:data:`memoptim.experiments.tasks.TASKS`) or a :class:`Task`.
        optimizer_name: a :func:`memoptim.create_optimizer` name (``adam+cm``, ``sgd``, ...).
        hyperparameters: flat names of :data:`HYPERPARAMETERS` (``lr``, ``beta2``, ...).
        epochs: epochs (for online streams: epochs per task).
        seed: seeds model initialisation, dropout and batch order.
        out_dir: run directory (created).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (else start fresh); without
            it an existing checkpoint is an error, so that no finished work is overwritten.
        batch_size: default: the task's (32 images, 20 sequences for the LM).
        schedule: ``auto`` | ``step`` | ``constant`` | ``warmup-cosine`` (see module doc).
        subset: use only part of the training data (see the task builders), for quick runs;
            recorded in the configuration.
        eval_subset: likewise for the evaluation data.
        data_root: dataset directory override.
        verify_data: verify the dataset checksums.
        progress: show the progress of every epoch (:class:`memoptim.progress.Progress`: a tqdm
            bar in a terminal, one line per epoch on stderr otherwise).
        tensorboard: also log scalars to ``out_dir/tensorboard`` (needs the tensorboard package;
            a warning and no logging without it).
        diagnostics: add sharpness, distance and buffer statistics to every metrics line.
        sharpness_iters: power-iteration budget of the sharpness diagnostic (0: none).
        m_sharpness_batches: with ``diagnostics``, also log the m-sharpness (paper eq. 15,
            radius 0.05, ``m`` = the batch size) averaged over this many fixed training
            mini-batches (0, the default: not computed).
        stop_on_divergence: stop at the first epoch whose training loss is not finite.
        keep_checkpoint: keep ``checkpoint.pt`` once the run is finished (sweeps drop it to
            save space: a finished run is recognised by its ``summary.json``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task_name = task if isinstance(task, str) else task.name
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    settings = _Settings(
        optimizer_name=optimizer_name, hyperparameters=hyperparameters, epochs=epochs, seed=seed,
        batch_size=batch_size, schedule=schedule, subset=subset, eval_subset=eval_subset,
        diagnostics=diagnostics, sharpness_iters=sharpness_iters, m_sharpness_batches=m_sharpness_batches,
        progress=progress, tensorboard=tensorboard, stop_on_divergence=stop_on_divergence,
    )  # fmt: skip
    config = settings.config(task_name)
    summary, checkpoint = _read_run_directory(out, config, resume)
    if summary is not None:
        return summary  # finished before (its checkpoint may have been removed)
    barrier(process_group()[1])  # every rank has read the run directory before rank 0 writes to it
    if isinstance(task, str):
        task = build_task(task, subset=subset, eval_subset=eval_subset, data_root=data_root, verify=verify_data)
    run = _start_run(task, settings, config, out, checkpoint)
    _train_epochs(run)
    return _finish_run(run, keep_checkpoint)


def _read_run_directory(
    out: Path, config: dict[str, Any], resume: bool
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(summary of the finished run, None) if ``out`` holds one, else (None, its checkpoint or None).

    Raises ``FileExistsError`` if ``out`` holds a run and ``resume`` is false, ``ValueError`` if
    the run found has another configuration, :class:`CheckpointError` if its checkpoint is
    unreadable."""
    ckpt_path, metrics_path, summary_path = out / CHECKPOINT, out / METRICS, out / SUMMARY
    if not resume and (ckpt_path.exists() or metrics_path.exists() or summary_path.exists()):
        raise FileExistsError(
            f"{out} already holds a run; pass resume=True (--resume) to continue it or choose "
            f"another output directory"
        )
    if summary_path.exists():  # finished (its checkpoint may have been removed)
        summary = json.loads(summary_path.read_text())
        _check_same_config(out, config, summary["config"], "summary")
        return summary, None
    if not ckpt_path.exists():
        return None, None
    checkpoint = load_checkpoint(ckpt_path)
    _check_same_config(out, config, checkpoint["config"], "checkpoint")
    return None, checkpoint


def _check_same_config(out: Path, config: Mapping[str, Any], other: Mapping[str, Any], source: str) -> None:
    """``ValueError`` unless the configuration of the run found in ``out`` is the requested one."""
    if other != config:
        raise ValueError(
            f"cannot resume {out}: configuration differs from the {source}'s\n"
            f"  {source}: {json.dumps(other, sort_keys=True)}\n"
            f"  requested:  {json.dumps(config, sort_keys=True)}"
        )


def _start_run(
    task: Task, settings: _Settings, config: dict[str, Any], out: Path, checkpoint: dict[str, Any] | None
) -> _Run:
    """Build the run (restored from ``checkpoint`` if any) and write its ``metrics.jsonl`` (the
    checkpoint's history) and ``config.json``; rank 0 writes, every rank returns the run."""
    run = _build_run(task, settings, config, out)
    if checkpoint is not None:
        _restore(run, checkpoint)
    run.net = run.model
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        run.net = DistributedDataParallel(run.model)
    # the metrics file mirrors the checkpoint's history (drops a line written after the last
    # checkpoint, or a partial line, from an interrupted run)
    if run.lead:
        atomic_write_text(out / METRICS, "".join(json.dumps(h) + "\n" for h in run.history))
    # after the restore: the optimizer's hyperparameters are the checkpoint's
    run.resolved = _resolved(run)
    if run.lead:
        atomic_write_text(out / CONFIG, json.dumps({**config, "resolved": run.resolved}, indent=2) + "\n")
    run.writer = _tensorboard(settings.tensorboard and run.lead, out)
    run.clip = task.clip_grad_norm
    run.params = [p for g in run.optimizer.param_groups for p in g["params"]]
    return run


def _build_run(task: Task, settings: _Settings, config: dict[str, Any], out: Path) -> _Run:
    """A fresh run: the model initialised from the seed, its optimizer and diagnostics."""
    rank, world = process_group()
    bs = settings.batch_size or task.default_batch_size
    if bs < world:
        raise ValueError(f"batch size {bs} is smaller than the number of processes {world}")
    sched = task.default_schedule if settings.schedule == "auto" else settings.schedule
    units = task.num_units(settings.epochs)
    torch.manual_seed(settings.seed)
    model = task.build_model()
    if world > 1:
        sync_batch_norm(model)
    model.train()
    params = task.param_groups(model, settings.hyperparameters.get("weight_decay"))
    optimizer = build_optimizer(settings.optimizer_name, params, settings.hyperparameters)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    diag = None
    if settings.diagnostics:
        from memoptim.experiments.diagnostics import TrainingDiagnostics

        diag = TrainingDiagnostics(
            model, optimizer, task, sharpness_iters=settings.sharpness_iters,
            m_sharpness_batches=settings.m_sharpness_batches, m_sharpness_batch_size=bs,
        )  # fmt: skip
    dynamics = BufferDynamics(optimizer) if BufferDynamics.applies(optimizer) else None
    return _Run(
        task=task, settings=settings, config=config, out=out, rank=rank, world=world, batch_size=bs,
        schedule=sched, units=units, model=model, optimizer=optimizer, base_lrs=base_lrs, diag=diag,
        dynamics=dynamics,
    )  # fmt: skip


def _restore(run: _Run, checkpoint: Mapping[str, Any]) -> None:
    """Load the model, optimizer, RNG, diagnostics and progress of ``run`` from its checkpoint."""
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["torch_rng"])
    run.history = list(checkpoint["history"])
    run.start_unit = int(checkpoint["unit"])
    run.elapsed_before = float(checkpoint["elapsed"])
    if run.diag is not None:
        run.diag.load_state_dict(checkpoint["diagnostics"])
    if run.dynamics is not None and "buffer_dynamics" in checkpoint:  # absent: written before it existed
        run.dynamics.load_state_dict(checkpoint["buffer_dynamics"])
    if checkpoint.get("finished"):
        run.start_unit = run.units  # e.g. stopped on divergence; only the summary is missing


def _resolved(run: _Run) -> dict[str, Any]:
    """What the defaults resolved to (not part of the resume check): batch size, schedule and the
    optimizer's full hyperparameters of its first parameter group."""
    group0 = run.optimizer.param_groups[0]
    return json_safe(
        {
            "batch_size": run.batch_size,
            "schedule": run.schedule,
            "epochs_total": run.units,
            "optimizer_class": type(run.optimizer).__name__,
            "optimizer_hyperparameters": {
                k: v for k, v in sorted(group0.items())
                if k != "params" and isinstance(v, int | float | str | bool | tuple | None)
            },
        }
    )  # fmt: skip


def _train_epochs(run: _Run) -> None:
    """Train the epochs not done yet; each one is evaluated, logged and checkpointed.  Stops
    after an epoch whose training loss was not finite (with ``stop_on_divergence``)."""
    run_start = time.perf_counter()
    diverged = any(h.get("diverged") for h in run.history)
    for unit in range(run.start_unit, run.units):
        t0 = time.perf_counter()
        set_lrs(run.optimizer, run.base_lrs, lr_factor(unit, run.units, run.schedule))
        train_loss, stopped = _train_epoch(run, unit)
        diverged = diverged or stopped
        record = _epoch_record(run, unit, train_loss)
        now = time.perf_counter()
        record["time"] = now - t0
        record["elapsed"] = run.elapsed_before + (now - run_start)
        if diverged:
            record["diverged"] = True
        record = json_safe(record)
        run.history.append(record)
        _save_epoch(run, unit, record, finished=diverged or unit + 1 == run.units)
        if diverged:
            break


def _train_epoch(run: _Run, unit: int) -> tuple[float, bool]:
    """The optimizer steps of epoch ``unit``: (mean training loss, whether it stopped early at a
    non-finite loss)."""
    task, epochs, world = run.task, run.settings.epochs, run.world
    total_loss, total_weight = 0.0, 0
    stopped = False
    bar = Progress(task.num_batches(unit, epochs, run.batch_size), f"epoch {unit + 1}/{run.units}",
                   enabled=run.settings.progress and run.lead, leave=False)  # fmt: skip
    if world > 1:
        batches = task.train_batches(run.net, unit, epochs, run.settings.seed, run.batch_size,
                                     shard=(run.rank, world))  # fmt: skip
    else:
        batches = task.train_batches(run.model, unit, epochs, run.settings.seed, run.batch_size)
    per_unit = task.num_batches(unit, epochs, run.batch_size) or 0
    try:
        for i, batch in enumerate(batches):
            factor = step_factor(run.schedule, unit * per_unit + i, run.units * per_unit)
            if factor is not None:  # a per-step schedule
                set_lrs(run.optimizer, run.base_lrs, factor)
            value, weight = _step(run, batch)
            if run.dynamics is not None:
                run.dynamics.observe()
            total_loss += value * weight
            total_weight += weight
            bar.update(1, loss=value)
            if not math.isfinite(value) and run.settings.stop_on_divergence:
                stopped = True
                break
    finally:
        bar.close()
    return total_loss / max(total_weight, 1), stopped


def _step(run: _Run, batch: Any) -> tuple[float, float]:
    """One optimizer step on ``batch``: (its mean loss, its weight), both over all ranks."""
    task, world = run.task, run.world
    scale = 1.0
    if world > 1:
        local = task.batch_weight(batch)
        (weight_sum,) = all_reduce_sum([float(local)])
        # DDP averages the ranks' gradients: weighting the local mean loss by
        # world * n_local / n_global makes that the global batch's mean gradient
        scale = world * local / weight_sum

    def closure() -> Tensor:
        run.optimizer.zero_grad(set_to_none=True)
        loss = task.loss(run.net, batch)
        (loss * scale if world > 1 else loss).backward()
        if run.clip is not None:
            torch.nn.utils.clip_grad_norm_(run.params, run.clip)
        return loss

    loss = run.optimizer.step(closure)
    value = float(loss.detach())
    if world > 1:
        (loss_sum,) = all_reduce_sum([value * local if local else 0.0])
        return loss_sum / weight_sum, round(weight_sum)
    return value, task.batch_weight(batch)


def _epoch_record(run: _Run, unit: int, train_loss: float) -> dict[str, Any]:
    """The metrics line of epoch ``unit`` up to ``lr``: training loss, evaluation, diagnostics."""
    task, epochs = run.task, run.settings.epochs
    record: dict[str, Any] = {"epoch": unit + 1, **task.unit_info(unit, epochs)}
    record["train_loss"] = train_loss
    if run.world > 1:
        with sharded_evaluation(run.rank, run.world):
            record.update(task.evaluate(run.model, unit, epochs))
    else:
        record.update(task.evaluate(run.model, unit, epochs))
    if run.diag is not None:
        record.update(run.diag())
    if run.dynamics is not None:
        record.update(run.dynamics.metrics())
    record["lr"] = run.optimizer.param_groups[0]["lr"]
    return record


def _save_epoch(run: _Run, unit: int, record: dict[str, Any], finished: bool) -> None:
    """Checkpoint the run after epoch ``unit``, append its metrics line and log it to TensorBoard;
    returns when every rank is done."""
    state = {
        "format": FORMAT_VERSION,
        "config": run.config,
        "unit": unit + 1,
        "finished": finished,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": run.history,
        "elapsed": record["elapsed"],
    }
    if run.diag is not None:
        state["diagnostics"] = run.diag.state_dict()
    if run.dynamics is not None:
        state["buffer_dynamics"] = run.dynamics.state_dict()
    if run.lead:
        save_checkpoint(run.out / CHECKPOINT, state)
        append_line(run.out / METRICS, record)
    if run.writer is not None:
        for k, v in record.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch":
                run.writer.add_scalar(k, v, unit + 1)
        run.writer.flush()
    barrier(run.world)


def _finish_run(run: _Run, keep_checkpoint: bool) -> dict[str, Any]:
    """Write ``summary.json`` (rank 0), drop the checkpoint unless kept; returns the summary."""
    if run.writer is not None:
        run.writer.close()
    summary = _write_summary(run.out, run.config, run.history, run.task, run.resolved, write=run.lead)
    if not keep_checkpoint and run.lead:
        (run.out / CHECKPOINT).unlink(missing_ok=True)
    barrier(run.world)
    return summary


def _write_summary(
    out: Path,
    config: Mapping[str, Any],
    history: list[dict[str, Any]],
    task: Task,
    resolved: Mapping[str, Any],
    write: bool = True,
) -> dict[str, Any]:
    diverged = any(h.get("diverged") for h in history)
    summary = {
        "config": dict(config),
        "resolved": dict(resolved),
        "metric": task.metric,
        "mode": task.mode,
        "status": "diverged" if diverged else "complete",
        "epochs_completed": len(history),
        "elapsed": history[-1]["elapsed"] if history else 0.0,
        **task.summarize(history),
    }
    summary = json_safe(summary)
    if not write:
        return summary
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary
