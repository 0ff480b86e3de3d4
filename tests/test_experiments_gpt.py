"""The ``gpt-brown`` task: the GPT model, the transformer recipe (weight-decay groups, warm-up +
cosine schedule), its batches and perplexity, and training with the study's seven optimizers,
resume included, through ``train`` and the ``sweep --tune-lr`` CLI."""

from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np
import pytest
import torch

from memoptim import SAM
from memoptim.cli import sweep as sweep_cli
from memoptim.experiments import tasks as T
from memoptim.experiments.models import GPT
from memoptim.experiments.recipe import decay_groups, lr_factor, warmup_cosine
from memoptim.experiments.train import build_optimizer, read_metrics, train
from test_experiments_train import Interrupt, _model_state, _strip_time

#: The optimizers of the study's transformer stage.
SEVEN = ["adamw", "adam+cm", "adamomentum", "adam+cm-nomem", "lion", "lion+cm", "adam+sam+cm"]
MODEL = {"context": 8, "d_model": 16, "n_heads": 2, "n_layers": 1, "dropout": 0.1, "eval_batch_size": 4}


def tiny_gpt(n: int = 700) -> T.GPTLanguageModelTask:
    rng = np.random.default_rng(0)
    stream = (7 * np.arange(n) + rng.integers(0, 3, n)) % 30  # learnable: next ~ previous + 7
    return T.GPTLanguageModelTask(stream[:500], stream[500:600], stream[600:], 30, **MODEL)


# =========================================================================== model
def test_gpt_default_size_tied_embedding_and_causality():
    torch.manual_seed(0)
    model = GPT(10_000)
    assert sum(p.numel() for p in model.parameters()) == 1_684_992  # ~1.7M, 1.28M of it the embedding
    small = GPT(50, d_model=16, n_heads=2, n_layers=2, context=8, dropout=0.0).eval()
    x = torch.randint(0, 50, (3, 8))
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % 50  # change the future of position 4
    a, b = small(x), small(y)
    assert a.shape == (3, 8, 50)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=1e-6)  # the past does not see it
    assert not torch.allclose(a[:, 5:], b[:, 5:])
    # the output layer is the embedding: logits are LN(x) E^T
    h = small.ln_f(small.blocks[1](small.blocks[0](small.embedding(x) + small.position(torch.arange(8)))))
    torch.testing.assert_close(a, h @ small.embedding.weight.t())
    with pytest.raises(ValueError, match="longer than the context"):
        small(torch.zeros(1, 9, dtype=torch.long))


# =========================================================================== recipe
def test_decay_groups_decay_matrices_only():
    model = GPT(50, d_model=16, n_heads=2, n_layers=2, context=8)
    decay, rest = decay_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    named = dict(model.named_parameters())
    ids = {id(p): n for n, p in named.items()}
    decayed = sorted(ids[id(p)] for p in decay["params"])
    assert decayed == sorted(n for n in named if n.endswith((".qkv.weight", ".attn.proj.weight",
                                                             ".fc.weight", "blocks.0.proj.weight",
                                                             "blocks.1.proj.weight")))
    assert len(decayed) == 8  # 4 matrices per block
    assert {"embedding.weight", "position.weight", "ln_f.weight", "blocks.0.fc.bias"} <= {
        ids[id(p)] for p in rest["params"]}
    assert len(decay["params"]) + len(rest["params"]) == len(named)  # each parameter once


def test_warmup_cosine_schedule():
    total = 100  # W = 5 warm-up steps
    f = [warmup_cosine(s, total) for s in range(total)]
    assert f[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert f[5] == 1.0 and all(a >= b for a, b in itertools.pairwise(f[5:]))  # cosine decay from lr
    assert f[5 + 95 // 2] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 47 / 95)))
    assert warmup_cosine(total, total) == pytest.approx(0.1)  # reaches 10% after the last step
    assert warmup_cosine(0, 10) == 1.0  # W = max(1, round(0.5)) = 1
    assert lr_factor(3, 4, "warmup-cosine") == 1.0  # set per step, not per epoch
    with pytest.raises(ValueError, match="warmup-cosine"):
        lr_factor(0, 4, "linear")


# =========================================================================== task
def test_batches_are_shuffled_blocks_and_a_pure_function_of_seed_and_epoch():
    task = tiny_gpt()
    model = task.build_model()
    assert task.blocks == 499 // 8 - 1 and task.num_batches(0, 2, 8) == math.ceil(task.blocks / 8)
    batches = list(task.train_batches(model, 1, 2, 3, 8))
    again = list(task.train_batches(model, 1, 2, 3, 8))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    assert sum(len(x) for x, _ in batches) == task.blocks
    x, y = batches[0]
    assert x.shape == (8, 8) and torch.equal(x[:, 1:], y[:, :-1])  # targets: the next tokens
    other = next(iter(task.train_batches(model, 0, 2, 3, 8)))[0]
    assert not torch.equal(other, x)  # another epoch: another offset and order
    halves = [next(iter(task.train_batches(model, 1, 2, 3, 8, shard=(r, 2))))[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), x)  # data-parallel ranks split every batch


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    class Uniform(torch.nn.Module):
        def forward(self, tokens):
            return torch.zeros(*tokens.shape, 30)

    task = tiny_gpt()
    for n in (100, 97, 2):  # whole blocks, a short last block, a single prediction
        nll, ppl = task.perplexity(Uniform(), torch.arange(n) % 30)
        assert ppl == pytest.approx(30.0) and nll == pytest.approx(math.log(30))


def test_perplexity_counts_every_next_token_once():
    task = tiny_gpt()
    model = task.build_model().eval()
    stream = torch.as_tensor(np.random.default_rng(1).integers(0, 30, 21))
    nll, _ = task.perplexity(model, stream)
    total = 0.0
    for s in range(0, 20, 8):  # blocks of 8 predictions, then 4
        x = stream[s : min(s + 8, 20)].unsqueeze(0)
        y = stream[s + 1 : min(s + 9, 21)]
        with torch.no_grad():
            total += float(torch.nn.functional.cross_entropy(model(x)[0], y, reduction="sum"))
    assert nll == pytest.approx(total / 20, rel=1e-6)


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_sharded_evaluation_shares_add_up_to_the_whole_stream(kind):
    """Each rank's share of the validation stream (under ``sharded_evaluation``) is disjoint from
    the others' and together they count every next token once: their summed NLL is the whole's."""
    if kind == "gpt":
        task = tiny_gpt()
    else:
        task = T.LanguageModelTask(np.arange(500) % 30, np.arange(97) % 30, None, 30, bptt=5,
                                   embed_dim=4, hidden_dim=4, dropout=0.0, eval_batch_size=4)  # fmt: skip
    torch.manual_seed(0)
    model = task.build_model().eval()
    with torch.no_grad():
        whole = task._nll_sums(model, task.val, None)
        for world in (2, 3):
            shares = [task._nll_sums(model, task.val, (r, world)) for r in range(world)]
            assert sum(c for _, c in shares) == whole[1] > 0
            assert sum(t for t, _ in shares) == pytest.approx(whole[0], rel=1e-6)


@pytest.mark.parametrize("name", SEVEN)
def test_each_optimizer_builds_on_the_decay_groups(name):
    task = tiny_gpt()
    model = task.build_model()
    opt = build_optimizer(name, task.param_groups(model, None), {"lr": 1e-3})
    groups = (opt.base_optimizer if isinstance(opt, SAM) else opt).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(g.get("decoupled_weight_decay", True) for g in groups)  # AdamW-style decay
    opt = build_optimizer(name, task.param_groups(model, 0.05), {"lr": 1e-3, "weight_decay": 0.05})
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]  # the run's value replaces 0.1


# =========================================================================== training
@pytest.mark.parametrize("name", SEVEN)
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, name):
    """Interrupted in epoch 2 and resumed from epoch 1's checkpoint: the metrics and the model
    are bit-identical to an uninterrupted run (dropout, per-step schedule, clipping, groups)."""
    hp = {"lr": 3e-3}
    ref = train(tiny_gpt(), name, hp, 2, 5, tmp_path / "ref", batch_size=8)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(Interrupt(tiny_gpt(), epoch=2, at=3), name, hp, 2, 5, run, batch_size=8)
    assert [d["epoch"] for d in read_metrics(run)] == [1]
    out = train(tiny_gpt(), name, hp, 2, 5, run, resume=True, batch_size=8)
    assert _strip_time(read_metrics(run)) == _strip_time(read_metrics(tmp_path / "ref"))
    a, b = _model_state(tmp_path / "ref"), _model_state(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert out["status"] == ref["status"] == "complete"
    assert math.isfinite(out["best_val_perplexity"]) and out["best_val_perplexity"] < 30  # better than uniform


def test_the_schedule_sets_the_lr_at_every_step(tmp_path):
    """The lr of the last step of each epoch, as logged, is the warm-up + cosine factor of that
    step; the task's default schedule is the per-step one."""
    task = tiny_gpt()
    train(task, "adamw", {"lr": 1e-2}, 3, 0, tmp_path, batch_size=8)
    per_epoch = task.num_batches(0, 3, 8)
    lrs = [d["lr"] for d in read_metrics(tmp_path)]
    assert lrs == pytest.approx([1e-2 * warmup_cosine((e + 1) * per_epoch - 1, 3 * per_epoch)
                                 for e in range(3)])
    assert json.loads((tmp_path / "config.json").read_text())["resolved"]["schedule"] == "warmup-cosine"


def _fake_brown(root, n_files: int = 20, words_per_file: int = 120) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(25)]
    root.mkdir(parents=True)
    for i in range(n_files):
        sentences = [" ".join(f"{words[j]}/nn" for j in rng.integers(0, 25, 11))
                     for _ in range(words_per_file // 12)]
        (root / f"ca{i + 1:02d}").write_text("\n".join(sentences) + "\n")


def test_sweep_tune_lr_cli_on_gpt_brown(tmp_path, monkeypatch, capsys):
    _fake_brown(tmp_path / "data" / "brown")
    monkeypatch.setenv("MEMOPTIM_DATA", str(tmp_path / "data"))
    parser = argparse.ArgumentParser(prog="memoptim")
    sweep_cli.register(parser.add_subparsers())
    out = tmp_path / "study"
    args = parser.parse_args(["sweep", "--task", "gpt-brown", "--optimizers", "adamw,adam+cm", "--tune-lr",
                              "1e-3,1e-2", "--tune-seeds", "0", "--seeds", "0", "--epochs", "1",
                              "--batch-size", "4", "--max-widen", "0", "--subset", "400",
                              "--eval-subset", "200", "--no-verify", "--out", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    res = json.loads(text[text.index("\n{") + 1 :])
    assert set(res) == {"adamw", "adam+cm"} and all(r["best_lr"] in (1e-3, 1e-2) for r in res.values())
    summaries = sorted(out.glob("gpt-brown/*/*/seed0/summary.json"))
    assert len(summaries) == 4
    cfg = json.loads(summaries[0].read_text())["resolved"]
    assert cfg["schedule"] == "warmup-cosine" and cfg["batch_size"] == 4
