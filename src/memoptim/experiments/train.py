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
  ``buffer_agreement`` (and ``m_sharpness`` with ``m_sharpness_batches > 0``).  Non-finite
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
(no decay when ``E == 1``); ``"constant"`` keeps ``lr``; ``"auto"`` is the task's default
(step for supervised tasks, constant for the online streams).

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

import json
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from memoptim.experiments.tasks import Task, build_task, sharded_evaluation
from memoptim.progress import Progress

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
FORMAT_VERSION = 1

#: flat hyperparameter names accepted by :func:`optimizer_kwargs` (CLI / sweep / JSON friendly)
HYPERPARAMETERS = (
    "lr", "beta1", "beta2", "eps", "momentum", "dampening", "weight_decay",
    "buffer_size", "decay", "rho", "adaptive",
)  # fmt: skip


def optimizer_kwargs(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """Map flat hyperparameters to :func:`memoptim.create_optimizer` keywords: ``beta1`` /
    ``beta2`` become ``betas=(beta1, beta2)`` (missing one: 0.9 / 0.999); the rest pass through.
    Unknown names raise ``ValueError``."""
    unknown = set(hyperparameters) - set(HYPERPARAMETERS)
    if unknown:
        raise ValueError(f"unknown hyperparameters {sorted(unknown)}; valid: {HYPERPARAMETERS}")
    kw = {k: v for k, v in hyperparameters.items() if k not in ("beta1", "beta2")}
    if "beta1" in hyperparameters or "beta2" in hyperparameters:
        kw["betas"] = (
            float(hyperparameters.get("beta1", 0.9)),
            float(hyperparameters.get("beta2", 0.999)),
        )
    return kw


def build_optimizer(name: str, params: Any, hyperparameters: Mapping[str, Any]) -> Any:
    """``memoptim.create_optimizer(name, params, **optimizer_kwargs(hyperparameters))``."""
    from memoptim import create_optimizer

    return create_optimizer(name, params, **optimizer_kwargs(hyperparameters))


def lr_factor(unit: int, units: int, schedule: str) -> float:
    """Multiplier of the base LR in epoch ``unit`` (0-based) of ``units`` (see module doc)."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 0.1 if units >= 2 and unit >= units // 2 else 1.0
    raise ValueError(f"unknown schedule {schedule!r} (step | constant)")


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats -> None, tensors -> Python numbers, tuples -> lists."""
    if isinstance(value, Tensor):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _atomic_write_bytes(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, lambda f: f.write(text.encode()))


def _append_line(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The metrics lines of a run directory (an incomplete trailing line is ignored)."""
    path = Path(out_dir) / METRICS
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def _tensorboard(enabled: bool, out_dir: Path) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn(
            "TensorBoard logging requested but the `tensorboard` package is not installed; "
            "continuing without it (pip install tensorboard)",
            stacklevel=3,
        )
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


class CheckpointError(ValueError):
    """A run's checkpoint cannot be read; the message names the file and how to start over."""


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load`` of a run checkpoint, or :class:`CheckpointError` if it is unreadable.

    Checkpoints are written atomically, so a killed run leaves its previous one intact; an
    unreadable one was damaged afterwards (a truncated copy, a full disk)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        raise CheckpointError(
            f"cannot resume from {path}: the checkpoint is unreadable ({type(exc).__name__}); delete it "
            f"to start this run over, or choose another output directory"
        ) from exc
    if not isinstance(checkpoint, dict) or "config" not in checkpoint:
        raise CheckpointError(f"cannot resume from {path}: it is not a memoptim run checkpoint; delete "
                              "it to start this run over, or choose another output directory")
    return checkpoint


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
        schedule: ``auto`` | ``step`` | ``constant`` (see module doc).
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
    rank, world = _data_parallel()
    lead = rank == 0  # the rank that writes files
    task_name = task if isinstance(task, str) else task.name
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    config: dict[str, Any] = _clean(
        {
            "format": FORMAT_VERSION,
            "task": task_name,
            "optimizer": optimizer_name,
            "hyperparameters": dict(sorted(hyperparameters.items())),
            "epochs": epochs,
            "seed": seed,
            "batch_size": batch_size,
            "schedule": schedule,
            "subset": subset,
            "eval_subset": eval_subset,
            "diagnostics": diagnostics,
        }
    )
    ckpt_path, metrics_path, summary_path = out / CHECKPOINT, out / METRICS, out / SUMMARY
    if not resume and (ckpt_path.exists() or metrics_path.exists() or summary_path.exists()):
        raise FileExistsError(
            f"{out} already holds a run; pass resume=True (--resume) to continue it or choose "
            f"another output directory"
        )

    def same_config(other: Mapping[str, Any], source: str) -> None:
        if other != config:
            raise ValueError(
                f"cannot resume {out}: configuration differs from the {source}'s\n"
                f"  {source}: {json.dumps(other, sort_keys=True)}\n"
                f"  requested:  {json.dumps(config, sort_keys=True)}"
            )

    if summary_path.exists():  # finished (its checkpoint may have been removed)
        summary = json.loads(summary_path.read_text())
        same_config(summary["config"], "summary")
        return summary
    checkpoint = None
    if ckpt_path.exists():
        checkpoint = _load_checkpoint(ckpt_path)
        same_config(checkpoint["config"], "checkpoint")
    _barrier(world)  # every rank has read the run directory before rank 0 writes to it

    if isinstance(task, str):
        task = build_task(
            task, subset=subset, eval_subset=eval_subset, data_root=data_root, verify=verify_data
        )
    bs = batch_size or task.default_batch_size
    if bs < world:
        raise ValueError(f"batch size {bs} is smaller than the number of processes {world}")
    sched = task.default_schedule if schedule == "auto" else schedule
    units = task.num_units(epochs)

    torch.manual_seed(seed)
    model = task.build_model()
    if world > 1:
        _sync_batch_norm(model)
    model.train()
    optimizer = build_optimizer(optimizer_name, model.parameters(), hyperparameters)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    diag = None
    if diagnostics:
        from memoptim.experiments.diagnostics import TrainingDiagnostics

        diag = TrainingDiagnostics(
            model, optimizer, task, sharpness_iters=sharpness_iters,
            m_sharpness_batches=m_sharpness_batches, m_sharpness_batch_size=bs,
        )  # fmt: skip

    history: list[dict[str, Any]] = []
    start_unit, elapsed_before = 0, 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["torch_rng"])
        history = list(checkpoint["history"])
        start_unit = int(checkpoint["unit"])
        elapsed_before = float(checkpoint["elapsed"])
        if diag is not None:
            diag.load_state_dict(checkpoint["diagnostics"])
        if checkpoint.get("finished"):
            start_unit = units  # e.g. stopped on divergence; only the summary is missing
    net: torch.nn.Module = model  # what the training forward passes go through
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)
    # the metrics file mirrors the checkpoint's history (drops a line written after the last
    # checkpoint, or a partial line, from an interrupted run)
    if lead:
        _atomic_write_text(metrics_path, "".join(json.dumps(h) + "\n" for h in history))
    # what the defaults resolved to (not part of the resume check): batch size, schedule and the
    # optimizer's full hyperparameters of its first parameter group
    group0 = optimizer.param_groups[0]
    resolved = _clean(
        {
            "batch_size": bs,
            "schedule": sched,
            "epochs_total": units,
            "optimizer_class": type(optimizer).__name__,
            "optimizer_hyperparameters": {
                k: v for k, v in sorted(group0.items())
                if k != "params" and isinstance(v, int | float | str | bool | tuple | None)
            },
        }
    )  # fmt: skip
    if lead:
        _atomic_write_text(
            out / CONFIG, json.dumps({**config, "resolved": resolved}, indent=2) + "\n"
        )
    writer = _tensorboard(tensorboard and lead, out)
    clip = task.clip_grad_norm
    params = [p for g in optimizer.param_groups for p in g["params"]]
    run_start = time.perf_counter()
    diverged = any(h.get("diverged") for h in history)

    for unit in range(start_unit, units):
        t0 = time.perf_counter()
        factor = lr_factor(unit, units, sched)
        for group, lr0 in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = lr0 * factor
        total_loss, total_weight = 0.0, 0
        bar = Progress(task.num_batches(unit, epochs, bs), f"epoch {unit + 1}/{units}",
                       enabled=progress and lead, leave=False)  # fmt: skip
        if world > 1:
            batches = task.train_batches(net, unit, epochs, seed, bs, shard=(rank, world))
        else:
            batches = task.train_batches(model, unit, epochs, seed, bs)
        try:
            for batch in batches:
                scale = 1.0
                if world > 1:
                    local = task.batch_weight(batch)
                    (weight_sum,) = _all_reduce_sum([float(local)])
                    # DDP averages the ranks' gradients: weighting the local mean loss by
                    # world * n_local / n_global makes that the global batch's mean gradient
                    scale = world * local / weight_sum

                def closure(batch: Any = batch, scale: float = scale) -> Tensor:
                    optimizer.zero_grad(set_to_none=True)
                    loss = task.loss(net, batch)
                    (loss * scale if world > 1 else loss).backward()
                    if clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, clip)
                    return loss

                loss = optimizer.step(closure)
                value = float(loss.detach())
                if world > 1:
                    (loss_sum,) = _all_reduce_sum([value * local if local else 0.0])
                    value, weight = loss_sum / weight_sum, round(weight_sum)
                else:
                    weight = task.batch_weight(batch)
                total_loss += value * weight
                total_weight += weight
                bar.update(1, loss=value)
                if not math.isfinite(value) and stop_on_divergence:
                    diverged = True
                    break
        finally:
            bar.close()
        record: dict[str, Any] = {"epoch": unit + 1, **task.unit_info(unit, epochs)}
        record["train_loss"] = total_loss / max(total_weight, 1)
        if world > 1:
            with sharded_evaluation(rank, world):
                record.update(task.evaluate(model, unit, epochs))
        else:
            record.update(task.evaluate(model, unit, epochs))
        if diag is not None:
            record.update(diag())
        record["lr"] = optimizer.param_groups[0]["lr"]
        now = time.perf_counter()
        record["time"] = now - t0
        record["elapsed"] = elapsed_before + (now - run_start)
        if diverged:
            record["diverged"] = True
        record = _clean(record)
        history.append(record)
        finished = diverged or unit + 1 == units
        state = {
            "format": FORMAT_VERSION,
            "config": config,
            "unit": unit + 1,
            "finished": finished,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "elapsed": record["elapsed"],
        }
        if diag is not None:
            state["diagnostics"] = diag.state_dict()
        if lead:
            _atomic_write_bytes(ckpt_path, lambda f, state=state: torch.save(state, f))
            _append_line(metrics_path, record)
        if writer is not None:
            for k, v in record.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch":
                    writer.add_scalar(k, v, unit + 1)
            writer.flush()
        _barrier(world)
        if diverged:
            break
    if writer is not None:
        writer.close()
    summary = _write_summary(out, config, history, task, resolved, write=lead)
    if not keep_checkpoint and lead:
        ckpt_path.unlink(missing_ok=True)
    _barrier(world)
    return summary


def _data_parallel() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _all_reduce_sum(values: list[float]) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over the ranks: the gradient of every rank's input is the sum of the
    ranks' output gradients."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        import torch.distributed as dist

        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        import torch.distributed as dist

        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class _SyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training-mode statistics are those of the global batch (all ranks of
    the default process group), on any device: two differentiable all-reduces (sum, then the
    sum of squared deviations: the two-pass variance, as ``F.batch_norm``).  Evaluation mode
    uses the running statistics, as ``torch.nn.BatchNorm*d``; same parameters and buffers."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        local_count = x.numel() // max(x.shape[1], 1)
        (count,) = _all_reduce_sum([float(local_count)])
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.square().sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                if m is None:  # cumulative moving average
                    m = 1.0 / float(self.num_batches_tracked)
                n = count
                unbiased = var * (n / max(n - 1.0, 1.0))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _sync_batch_norm(module: torch.nn.Module) -> torch.nn.Module:
    """Replace (in place) every batch-norm layer of ``module`` by a :class:`_SyncBatchNorm`
    with the same parameters and buffers; returns ``module``."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, _SyncBatchNorm
        ):
            new = _SyncBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine,
                child.track_running_stats,
            )  # fmt: skip
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            _sync_batch_norm(child)
    return module


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
    summary = _clean(summary)
    if not write:
        return summary
    _atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary
