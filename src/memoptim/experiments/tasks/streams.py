"""Online learning on a stream of tasks: ``split-fashion-mnist`` / ``permuted-fashion-mnist``
(:class:`StreamClassificationTask`, learning accuracy).  Paper analogue: Table 4.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memoptim.data import fashion_mnist as fm_data
from memoptim.data import streams as stream_data
from memoptim.experiments.models import SmallResNet
from memoptim.experiments.tasks.base import Task, _generator, _subset_head
from memoptim.experiments.tasks.images import evaluate_classifier, normalize_images


class StreamClassificationTask(Task):
    """Online learning on a stream of classification tasks (paper section 5.4).

    The model and the optimizer (with its state and buffer) are carried from one task to the
    next; unit ``u`` trains on task ``u // epochs`` (``epochs`` passes per task).  After a task's
    last pass the model is evaluated on *every* task of the stream (one row of the accuracy
    matrix, key ``accuracies``).  Metric: the paper's learning accuracy -- the mean over tasks of
    the validation accuracy on a task right after training on it -- reported in the summary as
    ``learning_accuracy``; each metrics line's ``val_accuracy`` is the current task's.
    The shared 10-way head is masked to the current task's classes (task-incremental).
    """

    metric = "learning_accuracy"
    mode = "max"
    default_schedule = "constant"
    default_batch_size = 32

    def __init__(
        self,
        x_train: Tensor,
        y_train: Tensor,
        x_val: Tensor,
        y_val: Tensor,
        tasks: Sequence[stream_data.StreamTask],
        *,
        name: str,
        num_classes: int = 10,
        width: int = 16,
    ) -> None:
        self.name = name
        self.tasks = list(tasks)
        self.num_classes, self.width = num_classes, width
        self._data = []
        for t in self.tasks:
            xtr, xva = x_train[t.train_index], x_val[t.val_index]
            if t.permutation is not None:
                perm = torch.as_tensor(t.permutation)
                xtr = xtr.flatten(1)[:, perm].view_as(xtr)
                xva = xva.flatten(1)[:, perm].view_as(xva)
            mask = torch.zeros(num_classes, dtype=torch.bool)
            mask[list(t.classes)] = True
            self._data.append((xtr, y_train[t.train_index], xva, y_val[t.val_index], mask))

    def num_units(self, epochs: int) -> int:
        return len(self.tasks) * epochs

    def unit_info(self, unit: int, epochs: int) -> dict[str, Any]:
        return {"task": unit // epochs, "task_epoch": unit % epochs + 1}

    def build_model(self) -> nn.Module:
        return SmallResNet(self._data[0][0].shape[1], self.num_classes, self.width)

    def num_batches(self, unit: int, epochs: int, batch_size: int) -> int | None:
        return math.ceil(len(self._data[unit // epochs][1]) / batch_size)

    def train_batches(
        self, model: nn.Module, unit: int, epochs: int, seed: int, batch_size: int,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        xtr, ytr, _, _, mask = self._data[unit // epochs]
        perm = torch.randperm(len(ytr), generator=_generator(seed, unit))
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            if shard is not None:
                idx = idx.tensor_split(shard[1])[shard[0]]
            yield xtr[idx], ytr[idx], mask

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        x, y, mask = batch
        return F.cross_entropy(model(x).masked_fill(~mask, float("-inf")), y)

    def batch_weight(self, batch: tuple[Tensor, Tensor, Tensor]) -> int:
        return len(batch[1])

    def evaluate(self, model: nn.Module, unit: int, epochs: int) -> dict[str, Any]:
        t = unit // epochs
        _, _, xva, yva, mask = self._data[t]
        loss, acc = evaluate_classifier(model, xva, yva, mask)
        out: dict[str, Any] = {"val_loss": loss, "val_accuracy": acc}
        if unit % epochs == epochs - 1:
            out["accuracies"] = [
                evaluate_classifier(model, d[2], d[3], d[4])[1] for d in self._data
            ]
        return out

    def summarize(self, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
        rows = [h for h in history if "accuracies" in h]
        if not rows:
            return {"learning_accuracy": None, "best_learning_accuracy": None, "best_epoch": None}
        right_after = [r["accuracies"][r["task"]] for r in rows]
        seen = [r["accuracies"][: r["task"] + 1] for r in rows]
        la = stream_data.learning_accuracy(right_after)
        matrix = [r["accuracies"] for r in rows]
        out: dict[str, Any] = {
            "learning_accuracy": la,
            # the stream has one value per run; "best_" keeps the summary keys uniform
            "best_learning_accuracy": la,
            "best_epoch": rows[-1]["epoch"],
            "tasks_completed": len(rows),
            "accuracy_matrix": matrix,
            "average_accuracy_seen": float(np.mean(seen[-1])),
        }
        if len(rows) == len(self.tasks):
            out["final_average_accuracy"] = stream_data.final_average_accuracy(matrix)
            out["forgetting"] = stream_data.forgetting([row[: len(rows)] for row in matrix])
        return out

    def sharpness_closure(self, model: nn.Module) -> Callable[[], Tensor]:
        xtr, ytr, _, _, mask = self._data[0]
        x, y = xtr[:256], ytr[:256]
        return lambda: F.cross_entropy(model(x).masked_fill(~mask, float("-inf")), y)


def stream_task(
    kind: str,
    root: str | os.PathLike[str] | None = None,
    subset: int | None = None,
    verify: bool = True,
    n_tasks: int = 5,
    eval_subset: int | None = 2000,
    width: int = 16,
) -> StreamClassificationTask:
    """``kind`` = "split" (5 tasks of 2 classes) or "permuted" (``n_tasks`` permutations, each
    trained on its own 1/``n_tasks`` of the 50k training pool).  Validation examples come from
    the held-out validation split (at most ``eval_subset`` per task, default 2000: all of a
    split task's); ``subset`` caps the training examples per task."""
    data = fm_data.load_fashion_mnist(root, verify=verify)
    tr, va = fm_data.stratified_split(data.train_labels)
    ytr, yva = data.train_labels[tr], data.train_labels[va]
    if kind == "split":
        tasks = stream_data.split_stream(ytr, yva, classes_per_task=2, num_classes=10)
    elif kind == "permuted":
        tasks = stream_data.permuted_stream(len(tr), len(va), n_tasks=n_tasks)
    else:
        raise ValueError(f"unknown stream kind {kind!r}")
    cap = subset
    tasks = [
        stream_data.StreamTask(
            t.name,
            t.classes,
            t.train_index[_subset_head(len(t.train_index), cap)],
            t.val_index[_subset_head(len(t.val_index), eval_subset)],
            t.permutation,
        )
        for t in tasks
    ]
    return StreamClassificationTask(
        normalize_images(data.train_images[tr]),
        torch.from_numpy(ytr),
        normalize_images(data.train_images[va]),
        torch.from_numpy(yva),
        tasks,
        name=f"{kind}-fashion-mnist",
        width=width,
    )
