"""PyTorch Lightning recipe: memoptim optimizers inside a ``LightningModule``.

* Automatic optimization: ``configure_optimizers`` returns :class:`memoptim.AdamCM` with a
  per-step ``StepLR``; resuming from a mid-run checkpoint with ``trainer.fit(ckpt_path=...)``
  reproduces the uninterrupted run's losses bit for bit (the critical buffers, the Adam
  moments and the scheduler all round-trip through Lightning's checkpoint).
* Manual optimization: :class:`memoptim.SAM` (around ``AdamCM`` too) driven with
  ``first_step``/``second_step`` in ``training_step`` matches a plain-PyTorch SAM loop
  exactly.

Tiny CPU models only; the whole file runs in a few seconds.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning", reason="the Lightning recipe needs the optional 'lightning' package")

import memoptim  # noqa: E402

N_SAMPLES, BATCH = 48, 8  # 6 batches per epoch
STEPS, CKPT_STEP = 12, 6
FEATURES = 8


def _dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, FEATURES, generator=g)
    w = torch.randn(FEATURES, 1, generator=g)
    y = x @ w + 0.1 * torch.randn(N_SAMPLES, 1, generator=g)
    return TensorDataset(x, y)


def _loader() -> DataLoader:
    # A fixed order makes the batches a function of the step (exact resume needs that).
    return DataLoader(_dataset(), batch_size=BATCH, shuffle=False, num_workers=0)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh(), nn.Linear(16, 1))


def _trainer(root, **kwargs) -> L.Trainer:
    kwargs.setdefault("enable_checkpointing", False)  # else Lightning writes checkpoints
    return L.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        **kwargs,
    )


# ----------------------------------------------------------------- automatic optimization
class AdamCMRegressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = _mlp()
        self.losses: dict[int, float] = {}  # global step (0-based) -> training loss

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.losses[self.global_step] = loss.item()
        return loss

    def configure_optimizers(self):
        opt = memoptim.AdamCM(self.parameters(), lr=0.02, buffer_size=5, decay=0.7)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_adamcm_resume_from_checkpoint_is_exact(tmp_path):
    L.seed_everything(0, workers=True)
    full = AdamCMRegressor()
    ckpt_cb = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=CKPT_STEP, save_top_k=-1
    )
    _trainer(tmp_path, max_steps=STEPS, callbacks=[ckpt_cb], enable_checkpointing=True).fit(full, _loader())
    assert sorted(full.losses) == list(range(STEPS))
    assert all(math.isfinite(v) for v in full.losses.values())

    # The checkpoint written by the *uninterrupted* run at step 6 (end of epoch 0), so the
    # optimizer, its critical buffers and the scheduler hold exactly that run's state.
    (ckpt,) = tmp_path.glob(f"*step={CKPT_STEP}.ckpt")
    state = torch.load(ckpt, weights_only=False)
    assert state["global_step"] == CKPT_STEP
    assert state["lr_schedulers"][0]["last_epoch"] == CKPT_STEP

    L.seed_everything(123, workers=True)  # a different seed: the resume must not depend on it
    resumed = AdamCMRegressor()
    trainer = _trainer(tmp_path / "resume", max_steps=STEPS)
    with warnings.catch_warnings():
        # a mid-epoch resume with a non-resumable loader would warn here; ours is exact
        warnings.simplefilter("error", L.pytorch.utilities.warnings.PossibleUserWarning)
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint.*")
        trainer.fit(resumed, _loader(), ckpt_path=ckpt)

    assert trainer.global_step == STEPS
    assert sorted(resumed.losses) == list(range(CKPT_STEP, STEPS))
    for step in range(CKPT_STEP, STEPS):
        assert resumed.losses[step] == full.losses[step], step  # bitwise, not approximate
    for p_full, p_res in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p_full, p_res)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0.02 * 0.5 ** (STEPS // 4))


# -------------------------------------------------------------------- manual optimization
RHO, SAM_LR, SAM_STEPS = 0.05, 0.05, 5


def _make_sam(params, base: str):
    if base == "adam+sam+cm":
        return memoptim.SAM(params, memoptim.AdamCM, rho=RHO, lr=SAM_LR)
    return memoptim.SAM(params, torch.optim.SGD, rho=RHO, lr=SAM_LR)


class SAMRegressor(L.LightningModule):
    def __init__(self, base: str) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.base = base
        self.net = _mlp()
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()  # a LightningOptimizer; attribute access reaches the SAM
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.manual_backward(loss)
        opt.first_step(zero_grad=True)  # climb to theta + e
        self.manual_backward(nn.functional.mse_loss(self.net(x), y))
        opt.second_step(zero_grad=True)  # back to theta, base optimizer steps
        self.losses.append(loss.item())

    def configure_optimizers(self):
        return _make_sam(self.parameters(), self.base)


@pytest.mark.parametrize("base", ["sam", "adam+sam+cm"])
def test_sam_manual_optimization_matches_plain_loop(base, tmp_path):
    L.seed_everything(0, workers=True)
    model = SAMRegressor(base)
    reference = copy.deepcopy(model.net)
    x_all, y_all = _dataset().tensors
    with torch.no_grad():
        loss_before = nn.functional.mse_loss(model.net(x_all), y_all).item()
    # first_step/second_step bypass LightningOptimizer.step, so trainer.global_step does
    # not advance: bound the run by batches/epochs, not by max_steps.
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=SAM_STEPS)
    trainer.fit(model, _loader())

    assert isinstance(trainer.optimizers[0], memoptim.SAM)  # Lightning keeps the raw optimizer
    assert model.losses and len(model.losses) == SAM_STEPS
    assert all(math.isfinite(v) for v in model.losses)
    assert trainer.global_step == 0  # see above
    with torch.no_grad():
        loss_after = nn.functional.mse_loss(model.net(x_all), y_all).item()
    assert loss_after < 0.9 * loss_before  # the whole-dataset loss went down

    # The same SAM steps on the same batches in plain PyTorch.
    opt = _make_sam(reference.parameters(), base)
    losses = []
    for step, (x, y) in enumerate(_loader()):
        if step == SAM_STEPS:
            break
        loss = nn.functional.mse_loss(reference(x), y)
        loss.backward()
        opt.first_step(zero_grad=True)
        nn.functional.mse_loss(reference(x), y).backward()
        opt.second_step(zero_grad=True)
        losses.append(loss.item())

    assert model.losses == losses
    for p_light, p_ref in zip(model.net.parameters(), reference.parameters()):
        assert torch.equal(p_light, p_ref)
