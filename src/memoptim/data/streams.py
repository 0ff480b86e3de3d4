"""Task streams for the online-learning benchmark (the CPU stand-in for the paper's
TinyImagenet / 5-dataset streams, section 5.4).

* **Split** stream: the classes are cut into consecutive groups (Fashion-MNIST: 5 tasks of
  2 classes, ``(0, 1), (2, 3), ...``); task ``t`` holds the training / validation examples of its
  classes.  The model has one shared 10-way head whose logits are masked to the task's classes
  (task-incremental setting), during training and evaluation alike.
* **Permuted** stream: every task is 10-way on a fixed pixel permutation (task 0 keeps the
  identity); task ``t`` trains on its own disjoint chunk of the training pool and is validated on
  the whole (permuted) validation pool.  Permutations come from a fixed ``seed`` independent of
  the run's seed, so every optimizer and seed sees the same stream.

Everything here is index bookkeeping (numpy); the tensors are built by the experiment code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StreamTask:
    """One task of a stream: which labels it uses, which examples, which pixel permutation."""

    name: str
    classes: tuple[int, ...]
    train_index: np.ndarray
    val_index: np.ndarray
    permutation: np.ndarray | None = None

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Apply the task's pixel permutation to ``images`` of shape ``(N, H, W)``."""
        if self.permutation is None:
            return images
        n = images.shape[0]
        flat = images.reshape(n, -1)[:, self.permutation]
        return flat.reshape(images.shape)


def split_stream(
    train_labels: np.ndarray,
    val_labels: np.ndarray,
    classes_per_task: int = 2,
    num_classes: int | None = None,
) -> list[StreamTask]:
    """Consecutive class groups of size ``classes_per_task``; indices are sorted."""
    n_cls = int(num_classes if num_classes is not None else max(train_labels.max(), 0) + 1)
    if classes_per_task < 1 or n_cls % classes_per_task:
        raise ValueError(f"{n_cls} classes cannot be cut into groups of {classes_per_task}")
    tasks = []
    for t in range(n_cls // classes_per_task):
        cls = tuple(range(t * classes_per_task, (t + 1) * classes_per_task))
        tasks.append(
            StreamTask(
                name=f"split-{t}",
                classes=cls,
                train_index=np.nonzero(np.isin(train_labels, cls))[0],
                val_index=np.nonzero(np.isin(val_labels, cls))[0],
            )
        )
    return tasks


def permuted_stream(
    n_train: int,
    n_val: int,
    n_tasks: int = 5,
    n_pixels: int = 784,
    num_classes: int = 10,
    seed: int = 0,
) -> list[StreamTask]:
    """``n_tasks`` permuted tasks; task ``t`` trains on the ``t``-th of ``n_tasks`` equal
    contiguous chunks of a fixed permutation of the training pool (``seed``)."""
    if n_tasks < 1:
        raise ValueError("n_tasks must be >= 1")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_train)
    chunk = n_train // n_tasks
    tasks = []
    for t in range(n_tasks):
        perm = np.arange(n_pixels) if t == 0 else rng.permutation(n_pixels)
        tasks.append(
            StreamTask(
                name=f"permuted-{t}",
                classes=tuple(range(num_classes)),
                train_index=np.sort(order[t * chunk : (t + 1) * chunk]),
                val_index=np.arange(n_val),
                permutation=perm,
            )
        )
    return tasks


def learning_accuracy(acc_right_after: list[float]) -> float:
    """The paper's *learning accuracy* (section 5.4, after Riemer et al. 2019): the mean over
    tasks of the validation accuracy on task ``t`` measured right after training on task ``t``."""
    if not acc_right_after:
        raise ValueError("no task accuracies")
    return float(np.mean(acc_right_after))


def final_average_accuracy(acc_matrix: list[list[float]]) -> float:
    """Mean accuracy over all tasks after training on the last one (``acc_matrix[i][j]``:
    accuracy on task ``j`` after training on task ``i``)."""
    return float(np.mean(acc_matrix[-1]))


def forgetting(acc_matrix: list[list[float]]) -> float:
    """Mean over tasks ``j < T-1`` of ``max_i acc[i][j] - acc[T-1][j]`` (Chaudhry et al. 2018);
    0.0 for a single task."""
    T = len(acc_matrix)
    if T < 2:
        return 0.0
    drops = [max(acc_matrix[i][j] for i in range(j, T - 1)) - acc_matrix[-1][j] for j in range(T - 1)]
    return float(np.mean(drops))
