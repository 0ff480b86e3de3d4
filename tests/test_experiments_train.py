"""Training loop: resume after interruption, LR schedule, closures, metrics, summaries."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memoptim.data.streams import permuted_stream, split_stream
from memoptim.experiments import tasks as T
from memoptim.experiments.train import lr_factor, optimizer_kwargs, read_metrics, train


def tiny_images(n_train: int = 96, n_val: int = 40, seed: int = 0) -> T.ClassificationTask:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n_train + n_val,), generator=g)  # 4 of the 10 classes occur
    x = torch.randn(n_train + n_val, 1, 28, 28, generator=g) * 0.5
    x += y.view(-1, 1, 1, 1).float() - 1.5  # a learnable signal: brightness encodes the class
    return T.ClassificationTask(x[:n_train], y[:n_train], x[n_train:], y[n_train:], width=4)


def tiny_lm() -> T.LanguageModelTask:
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 30, 700)
    return T.LanguageModelTask(
        stream[:500], stream[500:600], stream[600:], 30, bptt=7, embed_dim=8, hidden_dim=8,
        dropout=0.3, eval_batch_size=4,
    )  # fmt: skip


class Interrupt:
    """Wrap a task so that the ``at``-th loss evaluation of epoch ``epoch`` raises Ctrl-C."""

    def __init__(self, task: T.Task, epoch: int, at: int) -> None:
        self.task, self.epoch, self.at = task, epoch, at
        self.calls = 0
        self.unit = -1

    def __getattr__(self, name):
        return getattr(self.task, name)

    def train_batches(self, model, unit, epochs, seed, batch_size):
        self.unit = unit
        return self.task.train_batches(model, unit, epochs, seed, batch_size)

    def loss(self, model, batch):
        if self.unit + 1 == self.epoch:
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
        return self.task.loss(model, batch)


def _strip_time(lines):
    return [{k: v for k, v in d.items() if k not in ("time", "elapsed")} for d in lines]


def _model_state(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize(
    ("make_task", "optimizer", "hp"),
    [
        (tiny_images, "adam+cm", {"lr": 1e-2, "buffer_size": 3, "decay": 0.7}),
        (tiny_images, "adam+sam+cm", {"lr": 1e-2, "rho": 0.05}),
        (tiny_lm, "sgd+cm", {"lr": 0.5, "momentum": 0.9}),  # dropout: the RNG state must resume
    ],
)
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, make_task, optimizer, hp):
    bs = 32 if make_task is tiny_images else 4
    ref = train(make_task(), optimizer, hp, 2, 7, tmp_path / "ref", batch_size=bs)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(Interrupt(make_task(), epoch=2, at=2), optimizer, hp, 2, 7, run, batch_size=bs)
    assert [d["epoch"] for d in read_metrics(run)] == [1]  # epoch 1 kept, epoch 2 not written
    with pytest.raises(FileExistsError):  # no silent overwrite of a started run
        train(make_task(), optimizer, hp, 2, 7, run, batch_size=bs)
    out = train(make_task(), optimizer, hp, 2, 7, run, resume=True, batch_size=bs)
    assert _strip_time(read_metrics(run)) == _strip_time(read_metrics(tmp_path / "ref"))
    a, b = _model_state(tmp_path / "ref"), _model_state(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert out["best_epoch"] == ref["best_epoch"] and out["status"] == "complete"
    # resuming a finished run is a no-op returning the same summary
    assert train(make_task(), optimizer, hp, 2, 7, run, resume=True, batch_size=bs) == out


def test_resume_rewrites_a_metrics_line_written_after_the_last_checkpoint(tmp_path):
    task = tiny_images()
    train(task, "adam", {"lr": 1e-3}, 2, 0, tmp_path / "ref", batch_size=48)
    with pytest.raises(KeyboardInterrupt):
        train(Interrupt(tiny_images(), 2, 1), "adam", {"lr": 1e-3}, 2, 0, tmp_path / "r", batch_size=48)
    with open(tmp_path / "r" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_loss": 0.1')  # a torn write from the killed process
    train(tiny_images(), "adam", {"lr": 1e-3}, 2, 0, tmp_path / "r", resume=True, batch_size=48)
    assert _strip_time(read_metrics(tmp_path / "r")) == _strip_time(read_metrics(tmp_path / "ref"))


def test_resume_with_different_configuration_is_refused(tmp_path):
    train(tiny_images(), "adam", {"lr": 1e-3}, 1, 0, tmp_path, batch_size=48)
    with pytest.raises(ValueError, match="configuration differs"):
        train(tiny_images(), "adam", {"lr": 1e-2}, 1, 0, tmp_path, resume=True, batch_size=48)


def test_finished_run_without_checkpoint_is_not_retrained(tmp_path):
    s = train(tiny_images(), "adam", {"lr": 1e-3}, 1, 0, tmp_path, batch_size=48, keep_checkpoint=False)
    assert not (tmp_path / "checkpoint.pt").exists() and (tmp_path / "summary.json").exists()
    counting = CountingTask(tiny_images())
    assert train(counting, "adam", {"lr": 1e-3}, 1, 0, tmp_path, resume=True, batch_size=48) == s
    assert counting.calls == 0


def test_lr_schedule_divides_by_ten_at_mid_training(tmp_path):
    assert [lr_factor(u, 50, "step") for u in (0, 24, 25, 49)] == [1.0, 1.0, 0.1, 0.1]
    assert lr_factor(0, 1, "step") == 1.0 and lr_factor(3, 4, "constant") == 1.0
    train(tiny_images(48, 8), "sgd", {"lr": 0.01}, 4, 0, tmp_path / "s", batch_size=48)
    assert [d["lr"] for d in read_metrics(tmp_path / "s")] == pytest.approx([0.01, 0.01, 1e-3, 1e-3])
    train(tiny_images(48, 8), "sgd", {"lr": 0.01}, 3, 0, tmp_path / "c", batch_size=48,
          schedule="constant")  # fmt: skip
    assert [d["lr"] for d in read_metrics(tmp_path / "c")] == [0.01] * 3


def test_optimizer_kwargs_mapping():
    assert optimizer_kwargs({"lr": 0.1, "beta2": 0.99, "buffer_size": 5}) == {
        "lr": 0.1, "betas": (0.9, 0.99), "buffer_size": 5,
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        optimizer_kwargs({"learning_rate": 0.1})


class CountingTask(T.ClassificationTask):
    def __init__(self, base: T.ClassificationTask) -> None:
        self.__dict__.update(base.__dict__)
        self.calls = 0

    def loss(self, model, batch):
        self.calls += 1
        return super().loss(model, batch)


def test_sam_gets_a_closure_evaluated_twice_per_step(tmp_path):
    plain, sam = CountingTask(tiny_images()), CountingTask(tiny_images())
    train(plain, "adam", {"lr": 1e-3}, 1, 0, tmp_path / "a", batch_size=32)
    train(sam, "adam+sam", {"lr": 1e-3, "rho": 0.05}, 1, 0, tmp_path / "b", batch_size=32)
    assert (plain.calls, sam.calls) == (3, 6)


def test_metrics_match_independent_computation(tmp_path):
    """lr=0: the weights never move, so the epoch's training loss is the loss of the seeded
    initial model on the single full batch, and val_accuracy is its accuracy."""
    task = tiny_images()
    train(task, "sgd", {"lr": 0.0}, 1, 3, tmp_path, batch_size=96)
    (line,) = read_metrics(tmp_path)
    torch.manual_seed(3)
    model = task.build_model()
    model.train()
    with torch.no_grad():
        loss = float(F.cross_entropy(model(task.x_train), task.y_train))
    assert line["train_loss"] == pytest.approx(loss, rel=1e-5)
    model.load_state_dict(_model_state(tmp_path))  # updated BN running stats
    model.eval()
    with torch.no_grad():
        acc = 100.0 * float((model(task.x_val).argmax(1) == task.y_val).float().mean())
    assert line["val_accuracy"] == pytest.approx(acc)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_val_accuracy"] == pytest.approx(acc) and summary["best_epoch"] == 1


def test_training_learns_the_tiny_task(tmp_path):
    s = train(tiny_images(), "adam", {"lr": 1e-2}, 3, 0, tmp_path, batch_size=16)
    assert s["best_val_accuracy"] >= 70.0  # chance: 25%


def test_divergence_stops_the_run(tmp_path):
    s = train(tiny_images(), "sgd", {"lr": math.nan}, 3, 0, tmp_path, batch_size=32)
    lines = read_metrics(tmp_path)
    assert len(lines) == 1 and lines[0]["diverged"] is True and lines[0]["train_loss"] is None
    assert s["status"] == "diverged" and s["best_val_accuracy"] is not None


def test_language_model_perplexity_is_exp_of_token_nll(tmp_path):
    task = tiny_lm()
    train(task, "adam", {"lr": 1e-2}, 1, 0, tmp_path, batch_size=4)
    (line,) = read_metrics(tmp_path)
    assert line["val_perplexity"] == pytest.approx(math.exp(line["val_loss"]))
    model = task.build_model()
    model.load_state_dict(_model_state(tmp_path))
    model.eval()
    with torch.no_grad():  # whole validation stream as one sequence per column, no truncation
        data = T.batchify(task.val, 4)
        logits, _ = model(data[:-1])
        nll = float(F.cross_entropy(logits.reshape(-1, 30), data[1:].reshape(-1)))
    assert line["val_loss"] == pytest.approx(nll, rel=1e-5)


def _tiny_stream(kind: str) -> T.StreamClassificationTask:
    base = tiny_images(120, 60)
    ytr, yva = base.y_train.numpy(), base.y_val.numpy()
    if kind == "split":
        stream = split_stream(ytr, yva, classes_per_task=2, num_classes=4)
    else:
        stream = permuted_stream(len(ytr), len(yva), n_tasks=2)
    return T.StreamClassificationTask(
        base.x_train, base.y_train, base.x_val, base.y_val, stream, name=kind, width=4
    )


@pytest.mark.parametrize("kind", ["split", "permuted"])
def test_online_stream_learning_accuracy(tmp_path, kind):
    s = train(_tiny_stream(kind), "adam+cm", {"lr": 1e-2}, 2, 0, tmp_path, batch_size=30)
    lines = read_metrics(tmp_path)
    assert [(d["task"], d["task_epoch"]) for d in lines] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert [d["lr"] for d in lines] == [0.01] * 4  # streams default to a constant LR
    ends = [d for d in lines if "accuracies" in d]
    assert len(ends) == 2
    for d in ends:  # the current task's accuracy is the matrix entry "right after" it
        assert d["accuracies"][d["task"]] == pytest.approx(d["val_accuracy"])
    expected = (ends[0]["accuracies"][0] + ends[1]["accuracies"][1]) / 2
    assert s["learning_accuracy"] == pytest.approx(expected)
    assert s["final_average_accuracy"] == pytest.approx(np.mean(ends[1]["accuracies"]))
    assert s["accuracy_matrix"] == [d["accuracies"] for d in ends]


def test_diagnostics_do_not_change_training_and_measure_distance(tmp_path):
    hp = {"lr": 1e-2, "buffer_size": 3}
    train(tiny_images(), "adam+cm", hp, 2, 0, tmp_path / "plain", batch_size=32)
    train(tiny_images(), "adam+cm", hp, 2, 0, tmp_path / "diag", batch_size=32,
          diagnostics=True, sharpness_iters=3)  # fmt: skip
    a, b = _model_state(tmp_path / "plain"), _model_state(tmp_path / "diag")
    assert all(torch.equal(a[k], b[k]) for k in a)
    line = read_metrics(tmp_path / "diag")[-1]
    assert {"distance", "sharpness", "buffer_variance", "buffer_agreement"} <= set(line)
    assert line["buffer_filled"] == 3 and -1.0 <= line["buffer_agreement"] <= 1.0
    torch.manual_seed(0)
    init = dict(tiny_images().build_model().named_parameters())
    dist = math.sqrt(sum(float((b[k] - init[k].detach()).pow(2).sum()) for k in init))
    assert line["distance"] == pytest.approx(dist, rel=1e-5)


def test_tensorboard_is_optional(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="tensorboard"):
            train(tiny_images(), "adam", {"lr": 1e-3}, 1, 0, tmp_path, batch_size=48, tensorboard=True)
        assert not (tmp_path / "tensorboard").exists()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            train(tiny_images(), "adam", {"lr": 1e-3}, 1, 0, tmp_path, batch_size=48, tensorboard=True)
        assert any((tmp_path / "tensorboard").iterdir())
