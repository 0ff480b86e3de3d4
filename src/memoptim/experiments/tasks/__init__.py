"""The benchmark tasks: what data, which model, how a batch's loss and the evaluation are computed.

A task's training is a sequence of *units* (epochs); :func:`memoptim.experiments.train.train`
drives it.  Every unit's batches are a pure function of ``(seed, unit)``, so an interrupted run
that resumes from the checkpoint of a finished unit replays exactly the same batches.  The
interface is :class:`Task` (:mod:`.base`); one module per kind of task.

Tasks (``TASKS``):

* ``fashion-mnist`` -- :class:`ClassificationTask` (:mod:`.images`), SmallResNet, 50k/10k/10k
  train/val/test; paper analogue: CIFAR-10/100 with ResNet34 (Table 2) and the SGD family (Table 3).
* ``brown-lm`` -- :class:`LanguageModelTask` (:mod:`.language`), 1-layer LSTM on the Brown
  corpus, validation perplexity; paper analogue: PTB (Table 2).
* ``gpt-brown`` -- :class:`GPTLanguageModelTask` (:mod:`.gpt`), a small decoder-only transformer
  on the same data, trained with AdamW-style weight-decay groups, warm-up and cosine decay; not in
  the paper (the model class most users train now).
* ``split-fashion-mnist`` / ``permuted-fashion-mnist`` -- :class:`StreamClassificationTask`
  (:mod:`.streams`), online learning on a task stream, learning accuracy; paper analogue: Table 4.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from memoptim.experiments.tasks.base import Task, _generator, _subset_head, eval_shard, sharded_evaluation
from memoptim.experiments.tasks.gpt import GPTLanguageModelTask, gpt_brown_task
from memoptim.experiments.tasks.images import (
    ClassificationTask,
    evaluate_classifier,
    fashion_mnist_task,
    normalize_images,
)
from memoptim.experiments.tasks.language import LanguageModelTask, batchify, brown_lm_task
from memoptim.experiments.tasks.streams import StreamClassificationTask, stream_task

__all__ = [
    "BUILDERS",
    "TASKS",
    "ClassificationTask",
    "GPTLanguageModelTask",
    "LanguageModelTask",
    "StreamClassificationTask",
    "Task",
    "_generator",
    "_subset_head",
    "batchify",
    "brown_lm_task",
    "build_task",
    "eval_shard",
    "evaluate_classifier",
    "fashion_mnist_task",
    "gpt_brown_task",
    "normalize_images",
    "sharded_evaluation",
    "stream_task",
]  # fmt: skip

def _stream_builder(kind: str) -> Callable[..., Task]:
    def build(root: Any, subset: int | None, verify: bool, eval_subset: int | None = None) -> Task:
        # Unset, the stream keeps its own default validation cap (all of a split task's).
        return stream_task(kind, root, subset, verify,
                           **({} if eval_subset is None else {"eval_subset": eval_subset}))  # fmt: skip

    return build


#: Task name -> its builder, called as ``builder(root, subset, verify, eval_subset=...)``: the one
#: list of task names (``memoptim train --task``, ``sweep``, the report).
BUILDERS: dict[str, Callable[..., Task]] = {
    "fashion-mnist": fashion_mnist_task,
    "brown-lm": brown_lm_task,
    "gpt-brown": gpt_brown_task,
    "split-fashion-mnist": _stream_builder("split"),
    "permuted-fashion-mnist": _stream_builder("permuted"),
}
TASKS = tuple(BUILDERS)


def build_task(
    name: str,
    *,
    subset: int | None = None,
    eval_subset: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> Task:
    """Build a task by name (:data:`TASKS`); ``data_root`` is the dataset's own directory,
    ``subset`` / ``eval_subset`` cap the training / evaluation data (see the builders)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return BUILDERS[name](data_root, subset, verify, eval_subset=eval_subset)
