"""The task interface and what every task shares: batch-order generators, sharded evaluation.

A task's training is a sequence of *units* (epochs); :func:`memoptim.experiments.train.train`
drives it.  Every unit's batches are a pure function of ``(seed, unit)``, so an interrupted run
that resumes from the checkpoint of a finished unit replays exactly the same batches.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

_EVAL_BATCH = 1000


#: (rank, world size) while :func:`sharded_evaluation` is active, else None
_EVAL_SHARD: tuple[int, int] | None = None


@contextlib.contextmanager
def sharded_evaluation(rank: int, world_size: int) -> Iterator[None]:
    """Within this context the evaluations (:func:`~memoptim.experiments.tasks.evaluate_classifier`,
    :meth:`LanguageModelTask.perplexity`) run data-parallel: each rank of the default process
    group evaluates its share of the data and the sums are all-reduced, so every rank returns
    the metrics of the whole data.  Used by :func:`memoptim.experiments.train.train` under DDP."""
    global _EVAL_SHARD
    previous, _EVAL_SHARD = _EVAL_SHARD, (rank, world_size)
    try:
        yield
    finally:
        _EVAL_SHARD = previous


def eval_shard() -> tuple[int, int] | None:
    """``(rank, world size)`` while :func:`sharded_evaluation` is active, else ``None``."""
    return _EVAL_SHARD


def _all_reduce_sums(*values: float) -> list[float]:
    """Sum ``values`` over the ranks under :func:`sharded_evaluation` (float64)."""
    if _EVAL_SHARD is None:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _generator(seed: int, unit: int) -> torch.Generator:
    """Batch-order generator of one unit: a pure function of ``(seed, unit)``."""
    g = torch.Generator()
    g.manual_seed(1_000_003 * (seed + 1) + unit)
    return g


class Task:
    """Interface of a benchmark task (see the subclasses)."""

    name: str = ""
    #: metric the sweep optimises and the report ranks by, and its direction
    metric: str = ""
    mode: str = "max"
    #: default LR schedule (:data:`memoptim.experiments.recipe.SCHEDULES`: "step" divides by 10 at
    #: mid-training, as the paper; "constant"; "warmup-cosine" per step)
    default_schedule: str = "step"
    default_batch_size: int = 64
    #: gradient-norm clipping applied inside the closure (None: none)
    clip_grad_norm: float | None = None

    def num_units(self, epochs: int) -> int:
        return epochs

    def unit_info(self, unit: int, epochs: int) -> dict[str, Any]:
        """Extra keys for the metrics line of ``unit`` (0-based)."""
        return {}

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def param_groups(self, model: nn.Module, weight_decay: float | None) -> Any:
        """What the optimizer is built on: ``model.parameters()`` (one group, the optimizer's
        own ``weight_decay``); a task may split them (see :func:`memoptim.experiments.recipe.decay_groups`).
        ``weight_decay``: the run's ``weight_decay`` hyperparameter, ``None`` if not given."""
        return model.parameters()

    def num_batches(self, unit: int, epochs: int, batch_size: int) -> int | None:
        """Number of training batches of ``unit`` (for the progress bar)."""
        return None

    def train_batches(
        self, model: nn.Module, unit: int, epochs: int, seed: int, batch_size: int,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[Any]:
        """The unit's batches of ``batch_size``; with ``shard=(rank, world_size)`` (data-parallel
        training) rank ``rank``'s contiguous share of every one of these global batches."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        raise NotImplementedError

    def batch_weight(self, batch: Any) -> int:
        """Number of examples (or tokens) in ``batch``, to average the training loss."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, unit: int, epochs: int) -> dict[str, Any]:
        raise NotImplementedError

    def summarize(self, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Run summary from the metrics lines; always has ``best_<metric>`` and ``best_epoch``."""
        values = [(h.get(self.metric), h["epoch"]) for h in history]
        finite = [(v, e) for v, e in values if v is not None and math.isfinite(v)]
        if not finite:
            return {f"best_{self.metric}": None, "best_epoch": None}
        pick = max if self.mode == "max" else min
        best, epoch = pick(finite, key=lambda ve: ve[0])
        out = {f"best_{self.metric}": best, "best_epoch": epoch}
        line = next(h for h in history if h["epoch"] == epoch)
        for k in ("test_accuracy", "test_perplexity"):
            if k in line:
                out[f"{k}_at_best"] = line[k]
        return out

    def sharpness_closure(self, model: nn.Module) -> Callable[[], Tensor]:
        """Loss on a fixed training batch (for the sharpness diagnostics)."""
        raise NotImplementedError


def _subset_head(n: int, subset: int | None) -> slice:
    return slice(0, n if subset is None else min(n, subset))
