"""Task builders on tiny files in the real formats, models, LM batching; one real-data run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memoptim.data import fashion_mnist as fm
from memoptim.data.paths import DatasetNotFoundError
from memoptim.experiments import tasks as T
from memoptim.experiments.models import LSTMLanguageModel, SmallResNet


def _write_fmnist(root, n_per_class: int = 6, n_test: int = 10):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), n_per_class).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    fm.write_idx_gz(root / "train-images-idx3-ubyte.gz", images)
    fm.write_idx_gz(root / "train-labels-idx1-ubyte.gz", labels)
    fm.write_idx_gz(root / "t10k-images-idx3-ubyte.gz", images[:n_test])
    fm.write_idx_gz(root / "t10k-labels-idx1-ubyte.gz", labels[:n_test])
    return images, labels


def test_fashion_mnist_task_from_idx_files(tmp_path):
    images, labels = _write_fmnist(tmp_path)
    task = T.fashion_mnist_task(tmp_path, verify=False)
    assert task.x_train.shape == (50, 1, 28, 28) and task.x_val.shape == (10, 1, 28, 28)
    assert sorted(task.y_val.tolist()) == list(range(10))  # one per class held out
    assert task.x_test.shape == (10, 1, 28, 28)
    # normalisation with the published statistics, pixel for pixel
    _, va = fm.stratified_split(labels.astype(np.int64))
    i = int(va[np.random.default_rng(1).permutation(len(va))[0]])  # the fixed val order
    expected = (torch.from_numpy(images[i]).float() / 255 - fm.MEAN) / fm.STD
    torch.testing.assert_close(task.x_val[0, 0], expected)
    small = T.fashion_mnist_task(tmp_path, subset=7, verify=False)
    assert (len(small.y_train), len(small.y_val), len(small.y_test)) == (7, 10, 10)
    tiny = T.fashion_mnist_task(tmp_path, subset=7, verify=False, eval_subset=3)
    assert (len(tiny.y_train), len(tiny.y_val), len(tiny.y_test)) == (7, 3, 3)
    torch.testing.assert_close(tiny.x_val, task.x_val[:3])  # a prefix of the same fixed order
    assert set(small.y_train.tolist()) <= set(task.y_train.tolist())
    with pytest.raises(Exception, match="MD5"):
        T.fashion_mnist_task(tmp_path)  # checksums are verified by default


def test_stream_tasks_from_idx_files(tmp_path):
    _write_fmnist(tmp_path, n_per_class=12)
    split = T.stream_task("split", tmp_path, verify=False)
    assert [t.classes for t in split.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for t, (_, ytr, _, yva, mask) in zip(split.tasks, split._data, strict=True):
        assert set(ytr.tolist()) == set(t.classes) == set(yva.tolist())
        assert mask.nonzero().flatten().tolist() == list(t.classes)
    perm = T.stream_task("permuted", tmp_path, verify=False, n_tasks=3)
    x0, x1 = perm._data[0][2], perm._data[1][2]  # the same validation images, permuted
    p = torch.as_tensor(perm.tasks[1].permutation)
    torch.testing.assert_close(x1.flatten(1), x0.flatten(1)[:, p])
    assert perm.num_units(2) == 6 and perm.unit_info(3, 2) == {"task": 1, "task_epoch": 2}


def test_batchify_and_bptt_chunks():
    data = T.batchify(np.arange(23), 4)  # 5 rows, remainder 3 dropped
    assert data.shape == (5, 4) and data[:, 1].tolist() == [5, 6, 7, 8, 9]
    task = T.LanguageModelTask(np.arange(42), np.arange(10), None, 50, bptt=3, embed_dim=4,
                               hidden_dim=4, dropout=0.0)  # fmt: skip
    model = task.build_model()
    batches = []
    for b in task.train_batches(model, 0, 1, 0, batch_size=2):
        task.loss(model, b)
        batches.append(b)
    # 21 rows per column -> targets cover rows 1..20 exactly once
    assert [b["x"].shape[0] for b in batches] == [3] * 6 + [2]
    assert torch.equal(torch.cat([b["y"] for b in batches]), T.batchify(np.arange(42), 2)[1:])
    assert batches[0]["hidden"] is None
    h_prev = batches[0]["hidden_out"][0]
    assert torch.equal(batches[1]["hidden"][0], h_prev) and not batches[1]["hidden"][0].requires_grad


def test_models_shapes_and_parameter_counts():
    net = SmallResNet(width=16)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in net.parameters()) == 77754
    lm = LSTMLanguageModel(100, 16, 16, dropout=0.0, tie_weights=True)
    logits, (h, _) = lm(torch.zeros(5, 3, dtype=torch.long))
    assert logits.shape == (5, 3, 100) and h.shape == (1, 3, 16)
    assert lm.decoder.weight is lm.embedding.weight


def test_build_task_rejects_unknown_names_and_reports_missing_data(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown task"):
        T.build_task("cifar10")
    monkeypatch.setenv("MEMOPTIM_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"get_data\.sh brown"):
        T.build_task("brown-lm")


def _have_fmnist() -> bool:
    try:
        fm.find_root()
    except DatasetNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _have_fmnist(), reason="Fashion-MNIST not installed: run `bash scripts/get_data.sh`"
)
def test_real_fashion_mnist_quick_run(tmp_path):
    from memoptim.experiments.train import train

    s = train("fashion-mnist", "adam", {"lr": 3e-3}, 2, 0, tmp_path, subset=1000, eval_subset=500,
              batch_size=32, schedule="constant")  # fmt: skip
    assert s["status"] == "complete"
    assert s["best_val_accuracy"] > 50.0  # chance is 10%
