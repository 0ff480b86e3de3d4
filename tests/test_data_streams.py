"""Online-learning task streams and the learning-accuracy metric."""

from __future__ import annotations

import numpy as np
import pytest

from memoptim.data import streams


def test_split_stream_groups_classes_exactly():
    rng = np.random.default_rng(0)
    ytr, yva = rng.integers(0, 10, 200), rng.integers(0, 10, 50)
    tasks = streams.split_stream(ytr, yva, classes_per_task=2, num_classes=10)
    assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for t in tasks:
        np.testing.assert_array_equal(t.train_index, [i for i in range(200) if ytr[i] in t.classes])
        np.testing.assert_array_equal(t.val_index, [i for i in range(50) if yva[i] in t.classes])
        assert t.permutation is None
    assert sum(len(t.train_index) for t in tasks) == 200
    with pytest.raises(ValueError):
        streams.split_stream(ytr, yva, classes_per_task=3, num_classes=10)


def test_permuted_stream_chunks_and_permutations():
    tasks = streams.permuted_stream(n_train=103, n_val=7, n_tasks=4, n_pixels=16, seed=3)
    assert len(tasks) == 4
    np.testing.assert_array_equal(tasks[0].permutation, np.arange(16))
    for t in tasks:
        assert len(t.train_index) == 103 // 4
        np.testing.assert_array_equal(np.sort(t.permutation), np.arange(16))
        np.testing.assert_array_equal(t.val_index, np.arange(7))
    all_train = np.concatenate([t.train_index for t in tasks])
    assert len(np.unique(all_train)) == len(all_train)  # disjoint chunks
    assert not np.array_equal(tasks[1].permutation, tasks[2].permutation)
    again = streams.permuted_stream(103, 7, 4, 16, seed=3)
    for a, b in zip(tasks, again, strict=True):
        np.testing.assert_array_equal(a.permutation, b.permutation)
        np.testing.assert_array_equal(a.train_index, b.train_index)


def test_apply_permutes_pixels():
    task = streams.StreamTask("p", (0,), np.arange(1), np.arange(1), np.array([3, 0, 2, 1]))
    imgs = np.array([[[10, 11], [12, 13]], [[20, 21], [22, 23]]])
    out = task.apply(imgs)
    np.testing.assert_array_equal(out, [[[13, 10], [12, 11]], [[23, 20], [22, 21]]])


def test_learning_accuracy_final_accuracy_and_forgetting():
    # acc[i][j]: accuracy on task j after training on task i
    acc = [[0.9, 0.1, 0.0], [0.6, 0.8, 0.1], [0.5, 0.7, 0.95]]
    right_after = [acc[t][t] for t in range(3)]
    assert streams.learning_accuracy(right_after) == pytest.approx((0.9 + 0.8 + 0.95) / 3)
    assert streams.final_average_accuracy(acc) == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert streams.forgetting(acc) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert streams.forgetting([[0.4]]) == 0.0
