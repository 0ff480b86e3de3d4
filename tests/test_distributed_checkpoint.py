"""torch.distributed.checkpoint (DCP) of an FSDP2 model and its memoptim optimizer, critical buffer included.

Two gloo ranks train, save a sharded checkpoint, train on and record the trajectory; then
(a) fresh ranks with a differently initialised model load it and must repeat the trajectory
bit for bit; (b) one plain, unsharded process loads the same 2-rank checkpoint (DCP
reshards) and must follow the trajectory to float64 round-off.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from memoptim import AdamCM
from memoptim.buffer import STATE_KEYS, CriticalBuffer
from memoptim.distributed import enable_dtensor_buffers, launch

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo"),
]

WORLD = 2
BEFORE, AFTER = 3, 4  # steps before the checkpoint (buffer of 5 partly filled) and after it


def _model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))


def _optimizer(model):
    return AdamCM(model.parameters(), lr=0.05, buffer_size=5, weight_decay=0.01, priority="group")


def _batches():
    g = torch.Generator().manual_seed(7)
    return [(torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)) for _ in range(BEFORE + AFTER)]


def _step(model, opt, x, y):
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t.detach().clone()


def _snapshot(model, opt):
    """Full parameters and full buffer state, keyed by parameter name (for comparisons)."""
    out = {}
    for name, p in model.named_parameters():
        out[name] = _full(p)
        CriticalBuffer.from_state(opt.state[p])  # completes an offer a native step deferred
        for k in STATE_KEYS:
            out[f"{name}.{k}"] = _full(opt.state[p][k])
    return out


def _sharded(seed, mesh):
    from torch.distributed.fsdp import fully_shard

    model = _model(seed)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = _optimizer(model)
    enable_dtensor_buffers(opt)
    return model, opt


def _load(model, opt, path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, opt)  # allocates the optimizer state to load into
    sd = {"model": msd, "optim": osd}
    dcp.load(sd, checkpoint_id=path)
    set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])


def _worker(rank, world, directory):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_default_dtype(torch.float64)
    mesh = init_device_mesh("cpu", (world,))
    batches = [(x.chunk(world)[rank], y.chunk(world)[rank]) for x, y in _batches()]

    model, opt = _sharded(0, mesh)
    for x, y in batches[:BEFORE]:
        _step(model, opt, x, y)
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=f"{directory}/ckpt")
    at_save = _snapshot(model, opt)
    trajectory = []
    for x, y in batches[BEFORE:]:
        _step(model, opt, x, y)
        trajectory.append(_snapshot(model, opt))
    if rank == 0:
        torch.save({"at_save": at_save, "trajectory": trajectory}, f"{directory}/reference.pt")

    # (a) resume on 2 ranks from a differently initialised model: bit-exact.
    model, opt = _sharded(1, mesh)
    _load(model, opt, f"{directory}/ckpt")
    loaded = _snapshot(model, opt)
    for k, v in at_save.items():
        assert torch.equal(loaded[k], v), f"rank {rank}: {k} differs after loading"
    filled = [CriticalBuffer.from_state(opt.state[p]).filled for p in model.parameters()]
    assert filled == [BEFORE] * 4, filled  # partly filled: empty slots (-inf keys) survive too
    for i, (x, y) in enumerate(batches[BEFORE:]):
        _step(model, opt, x, y)
        for k, v in _snapshot(model, opt).items():
            assert torch.equal(v, trajectory[i][k]), f"rank {rank} step {BEFORE + i + 1}: {k} differs on resume"


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")  # the intended 1-process load
def test_dcp_resume_is_bit_exact_and_reshards_to_one_process(tmp_path):
    launch(_worker, WORLD, str(tmp_path), timeout=90)
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)

    # (b) the 2-rank checkpoint, loaded into one plain process (no process group).
    assert not dist.is_initialized()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = _model(2)
        opt = _optimizer(model)
        _load(model, opt, str(tmp_path / "ckpt"))
        loaded = _snapshot(model, opt)
        for k, v in reference["at_save"].items():
            assert torch.equal(loaded[k], v), f"{k} differs after resharded loading"
        for i, (x, y) in enumerate(_batches()[BEFORE:]):
            _step(model, opt, x, y)
            for k, v in _snapshot(model, opt).items():
                torch.testing.assert_close(v, reference["trajectory"][i][k], rtol=1e-10, atol=1e-12,
                                           msg=lambda m, k=k, i=i: f"step {BEFORE + i + 1}: {k}: {m}")
    finally:
        torch.set_default_dtype(default)
