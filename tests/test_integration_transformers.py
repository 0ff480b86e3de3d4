"""Hugging Face Transformers recipe: memoptim optimizers inside ``transformers.Trainer``.

A 1-layer GPT-2 built from a config (no downloads) on random tokens, CPU, a few seconds:

* Adam+CM + a linear warm-up schedule, 12 steps uninterrupted vs. stopped after the step-6
  checkpoint and resumed by a fresh ``Trainer`` with fresh optimizer/scheduler objects: the
  per-step losses of steps 7-12 and the final weights are bitwise equal.
* SAM through :class:`SAMTrainer` runs and stays finite; a plain ``Trainer`` refuses it.
"""

from __future__ import annotations

import math
import os

import pytest

transformers = pytest.importorskip(
    "transformers", reason="Hugging Face Transformers not installed: pip install 'memoptim[transformers]'"
)
pytest.importorskip("accelerate", reason="Trainer needs accelerate: pip install 'memoptim[transformers]'")

import torch  # noqa: E402

from memoptim import AdamCM  # noqa: E402
from memoptim.integrations.transformers import (  # noqa: E402
    SAMTrainer,
    TrainerSAM,
    _unwrap,
    trainer_optimizers,
)

STEPS, SAVE, BATCH, SEQ = 12, 6, 4, 16


@pytest.fixture(autouse=True)
def _offline_single_thread(monkeypatch):
    """No Hub access, and one intra-op thread (bitwise-reproducible reductions), restored after."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_DISABLED", "true")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Tokens(torch.utils.data.Dataset):
    """A fixed random token dataset (one epoch = 12 steps of 4)."""

    def __init__(self, n: int = STEPS * BATCH):
        g = torch.Generator().manual_seed(1234)
        self.ids = torch.randint(0, 64, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=32, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)  # default dropout: the checkpoint's RNG state matters


def _args(out, max_steps=STEPS):
    return transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        save_steps=SAVE,
        logging_steps=1,
        per_device_train_batch_size=BATCH,
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


class _Recording(transformers.Trainer):
    """Records each step's exact training loss (``log_history`` rounds it)."""

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        self.losses[self.state.global_step + 1] = loss.item()
        return loss


class _StopAt(transformers.TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True
        return control


class _RecordingSAM(_Recording, SAMTrainer):
    pass


def _trainer(out, losses, sam=False, callbacks=()):
    """The brief's recipe: user-built optimizer + linear warm-up schedule over the full run."""
    model = _model()
    if sam:
        optimizer = TrainerSAM(model.parameters(), AdamCM, rho=0.05, lr=3e-3, buffer_size=3, decay=0.7)
    else:
        optimizer = AdamCM(model.parameters(), lr=3e-3, buffer_size=3, decay=0.7)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, 3, STEPS)  # full-run length
    trainer = (_RecordingSAM if sam else _Recording)(
        model=model,
        args=_args(out),
        train_dataset=_Tokens(),
        optimizers=(optimizer, scheduler),
        callbacks=list(callbacks),
    )
    trainer.losses = losses
    return trainer


@pytest.mark.parametrize("sam", [False, True], ids=["adam+cm", "adam+sam+cm"])
def test_trainer_resume_is_exact(tmp_path, sam):
    full: dict[int, float] = {}
    straight = _trainer(tmp_path / "full", full, sam)
    straight.train()
    assert sorted(full) == list(range(1, STEPS + 1))
    assert all(math.isfinite(v) for v in full.values())

    first: dict[int, float] = {}
    interrupted = _trainer(tmp_path / "run", first, sam, callbacks=[_StopAt(SAVE)])
    interrupted.train()
    assert sorted(first) == list(range(1, SAVE + 1))
    checkpoint = tmp_path / "run" / f"checkpoint-{SAVE}"
    assert (checkpoint / "optimizer.pt").is_file()

    rest: dict[int, float] = {}
    resumed = _trainer(tmp_path / "run", rest, sam)  # fresh model, optimizer, scheduler
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert sorted(rest) == list(range(SAVE + 1, STEPS + 1))
    # Same float ops in the same order on one thread, and Trainer restores the RNG
    # (dropout), data order, optimizer state (critical buffers) and scheduler: bitwise equal.
    # (Without optimizer.pt the losses part from step 8 on, so this checks the buffers.)
    assert {**first, **rest} == full
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(_unwrap(resumed.optimizer), TrainerSAM if sam else AdamCM)
    assert resumed.lr_scheduler.last_epoch == straight.lr_scheduler.last_epoch == STEPS


def test_trainer_optimizers_builds_pair():
    model = _model()
    optimizer, scheduler = trainer_optimizers(
        model, "sgd+cm", lr=0.1, momentum=0.9, num_training_steps=10, num_warmup_steps=2
    )
    assert type(optimizer).__name__ == "SGDCM"
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    assert optimizer.param_groups[0]["lr"] == 0.0  # warm-up starts at zero
    sam, _ = trainer_optimizers(model, "adam+sam+cm", lr=1e-3, rho=0.05, num_training_steps=10)
    assert isinstance(sam, TrainerSAM) and isinstance(sam.base_optimizer, AdamCM)


def test_sam_trainer_runs(tmp_path):
    model = _model()
    optimizer, scheduler = trainer_optimizers(
        model, "adam+sam+cm", lr=3e-3, rho=0.05, buffer_size=3, num_training_steps=3
    )
    trainer = SAMTrainer(
        model=model,
        args=_args(tmp_path, max_steps=3),
        train_dataset=_Tokens(),
        optimizers=(optimizer, scheduler),
    )
    before = [p.detach().clone() for p in model.parameters()]
    result = trainer.train()
    assert trainer.state.global_step == 3
    assert math.isfinite(result.training_loss)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(p, q) for p, q in zip(before, model.parameters()))
    assert optimizer.state  # the base optimizer (Adam+CM) stepped: its state exists


def test_plain_trainer_refuses_sam(tmp_path):
    model = _model()
    optimizer, scheduler = trainer_optimizers(model, "adam+sam", lr=1e-3, num_training_steps=2)
    trainer = transformers.Trainer(
        model=model, args=_args(tmp_path), train_dataset=_Tokens(), optimizers=(optimizer, scheduler)
    )
    with pytest.raises(RuntimeError, match="SAMTrainer"):
        trainer.train()


def test_sam_trainer_refuses_other_optimizers(tmp_path):
    model = _model()
    optimizer = AdamCM(model.parameters(), lr=1e-3)
    trainer = SAMTrainer(
        model=model, args=_args(tmp_path), train_dataset=_Tokens(), optimizers=(optimizer, None)
    )
    with pytest.raises(TypeError, match="TrainerSAM"):
        trainer.train()


def test_missing_transformers_names_the_extra(monkeypatch):
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    monkeypatch.delitem(sys.modules, "memoptim.integrations.transformers")
    with pytest.raises(ImportError, match=r"pip install 'memoptim\[transformers\]'"):
        importlib.import_module("memoptim.integrations.transformers")


def test_memoptim_import_does_not_import_transformers():
    import subprocess
    import sys

    code = "import sys, memoptim, memoptim.integrations; print('transformers' in sys.modules)"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


def test_optimizer_cls_and_kwargs(tmp_path):
    """Trainer builds the optimizer itself (its weight-decay param groups, its scheduler)."""
    model = _model()
    trainer = transformers.Trainer(
        model=model,
        args=_args(tmp_path, max_steps=2),
        train_dataset=_Tokens(),
        optimizer_cls_and_kwargs=(AdamCM, {"lr": 1e-3, "buffer_size": 3}),
    )
    trainer.train()
    assert isinstance(_unwrap(trainer.optimizer), AdamCM)
    assert trainer.state.global_step == 2
