"""The m-sharpness training diagnostic (paper eq. 15): closed form on a quadratic model, no
effect on training, recorded per epoch by the training loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from memoptim.experiments import tasks as T
from memoptim.experiments.diagnostics import TrainingDiagnostics
from memoptim.experiments.train import read_metrics, train
from test_experiments_train import tiny_images, tiny_lm

D64 = torch.float64


class QuadraticTask(T.Task):
    """Linear least squares: the loss of a mini-batch is 0.5 * mean((x.w - y)^2), a quadratic in
    ``w`` with gradient ``X'(Xw - y)/m`` and Hessian ``X'X/m``."""

    name = "quadratic"
    default_batch_size = 8

    def __init__(self, n: int = 40, d: int = 5) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, d, generator=g, dtype=D64)
        self.y = torch.randn(n, generator=g, dtype=D64)
        self.d = d

    def build_model(self) -> nn.Module:
        return nn.Linear(self.d, 1, bias=False).double()

    def train_batches(self, model, unit, epochs, seed, batch_size, shard=None):
        perm = torch.randperm(len(self.y), generator=T._generator(seed, unit))
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            yield self.x[idx], self.y[idx]

    def loss(self, model, batch):
        x, y = batch
        return 0.5 * (model(x).squeeze(-1) - y).pow(2).mean()


def _closed_form(task: QuadraticTask, w: torch.Tensor, batches: int, m: int, rho: float) -> float:
    """Mean over the first ``batches`` mini-batches (seed 0, unit 0) of
    L(w + eps) - L(w) = g.eps + 0.5 eps'A eps with eps = rho g/|g|."""
    values = []
    perm = torch.randperm(len(task.y), generator=T._generator(0, 0))
    for b in range(batches):
        idx = perm[b * m : (b + 1) * m]
        x, y = task.x[idx], task.y[idx]
        g = x.T @ (x @ w - y) / m
        a = x.T @ x / m
        gn = g.norm()
        values.append(float(rho * gn + 0.5 * rho**2 * (g @ a @ g) / gn**2))
    return sum(values) / len(values)


@pytest.mark.parametrize(("batches", "m", "rho"), [(1, 8, 0.05), (3, 8, 0.05), (4, 5, 0.3)])
def test_m_sharpness_of_a_quadratic_model_matches_the_closed_form(batches, m, rho):
    task = QuadraticTask()
    torch.manual_seed(1)
    model = task.build_model()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    diag = TrainingDiagnostics(model, opt, task, sharpness_iters=0, m_sharpness_batches=batches,
                               m_sharpness_batch_size=m, m_sharpness_rho=rho)  # fmt: skip
    w = model.weight.detach().clone().reshape(-1)
    expected = _closed_form(task, w, batches, m, rho)
    value = diag.m_sharpness()
    assert value == pytest.approx(expected, rel=1e-10)
    # a different rho, batch count or batch size gives a different value: the test can fail
    assert _closed_form(task, w, batches, m, 2 * rho) != pytest.approx(expected, rel=1e-3)
    assert _closed_form(task, w, batches + 1, m, rho) != pytest.approx(expected, rel=1e-3)
    # the parameters are restored exactly, no gradient is left, the mode is kept
    assert torch.equal(model.weight.detach().reshape(-1), w)
    assert model.weight.grad is None
    assert model.training
    line = diag()
    assert line["m_sharpness"] == pytest.approx(expected, rel=1e-10)
    assert "sharpness" not in line  # sharpness_iters=0 switches the eigenvalue off


def test_m_sharpness_is_off_by_default_and_rejects_negative_counts():
    task = QuadraticTask()
    model = task.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert "m_sharpness" not in TrainingDiagnostics(model, opt, task, sharpness_iters=0)()
    with pytest.raises(ValueError):
        TrainingDiagnostics(model, opt, task, m_sharpness_batches=-1)


@pytest.mark.parametrize(
    ("make_task", "optimizer", "hp"),
    [
        (tiny_images, "adam+cm", {"lr": 1e-2, "buffer_size": 3}),  # batch norm: eval mode
        (tiny_lm, "adam", {"lr": 1e-2}),  # dropout + hidden state carried across batches
    ],
)
def test_m_sharpness_in_training_changes_nothing_and_is_logged(tmp_path, make_task, optimizer,
                                                                 hp):  # fmt: skip
    train(make_task(), optimizer, hp, 2, 0, tmp_path / "plain", batch_size=16)
    train(make_task(), optimizer, hp, 2, 0, tmp_path / "diag", batch_size=16, diagnostics=True,
          sharpness_iters=0, m_sharpness_batches=2)  # fmt: skip
    a = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "diag" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # parameters and batch-norm statistics
    plain, diag = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "diag")
    assert [p["train_loss"] for p in plain] == [d["train_loss"] for d in diag]
    values = [d["m_sharpness"] for d in diag]
    assert all(v is not None and math.isfinite(v) and v > 0 for v in values)
    assert "sharpness" not in diag[-1]
