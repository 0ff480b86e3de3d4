"""memoptim under torch.distributed (gloo, 2 local processes): DDP, FSDP2 and ZeroRedundancyOptimizer.

Each test spawns two ranks with :func:`memoptim.distributed.launch` (bounded time, a rank's
traceback propagates) and compares, on every rank, the distributed trajectory with a
single-process run of the same optimizer on the same global batch, computed in the rank
itself, in float64.  Tolerances are float64 round-off: the distributed runs sum the batch
and the gradient norms in another order.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.distributed as dist

from memoptim import SAM, SGDCG, SGDCM, AdamCG, AdamCM, AdaMomentum
from memoptim.buffer import CriticalBuffer
from memoptim.distributed import enable_dtensor_buffers, launch
from memoptim.optim import keys, native
from test_native import _counting

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo"),
]

WORLD = 2
STEPS = 10
RTOL, ATOL = 1e-10, 1e-12

# name -> (constructor, kwargs); buffer_size 3 so that a full buffer is replaced within 10 steps.
OPTIMIZERS = {
    "AdamCM": (AdamCM, dict(lr=0.05, buffer_size=3, weight_decay=0.01)),
    "AdamCG": (AdamCG, dict(lr=0.05, buffer_size=3)),
    "SGDCM": (SGDCM, dict(lr=0.1, buffer_size=3)),
    "SGDCG": (SGDCG, dict(lr=0.1, momentum=0.5, buffer_size=3)),
    "AdaMomentum": (AdaMomentum, dict(lr=0.05)),
    "SAM[AdamCM]": (SAM, dict(base_optimizer=AdamCM, rho=0.05, lr=0.05, buffer_size=3)),
}


def _build(name, params, priority, fused=None):
    cls, kw = OPTIMIZERS[name]
    # not fused: the multi-tensor path, named (the default would be the native kernel once built)
    kw = dict(kw, fused=True) if fused else dict(kw, foreach=True)
    if name != "AdaMomentum":
        kw["priority"] = priority
    return cls(params, **kw)


def _model(seed=0, out=2):
    # Linear(4, 5): 5 rows shard unevenly over 2 ranks (3 + 2); out=1: rank 1's shards of the
    # last layer are empty.
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, out))


def _batches(steps, n=8, out=2):
    g = torch.Generator().manual_seed(123)
    return [(torch.randn(n, 4, generator=g), torch.randn(n, out, generator=g)) for _ in range(steps)]


def _single_process():
    """Run the reference through the optimizers' single-process code path (no memoptim.distributed)."""
    return mock.patch.object(keys, "is_distributed", lambda: False)


def _local(t, rank, world):
    return t.chunk(world)[rank]


def _step(model, opt, x, y, reference=False):
    if reference:
        with _single_process():
            return _step(model, opt, x, y)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    if isinstance(opt, SAM):
        opt.step(closure)
    else:
        closure()
        opt.step()


def _state(opt):
    return getattr(opt, "base_optimizer", opt).state


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _shard(ref, like):
    """This rank's slice of the plain tensor ``ref`` for the DTensor ``like`` (no communication)."""
    from torch.distributed.tensor import Shard

    out = ref
    for mesh_dim, placement in enumerate(like.placements):
        if isinstance(placement, Shard):
            rank, n = like.device_mesh.get_local_rank(mesh_dim), like.device_mesh.size(mesh_dim)
            chunks = out.chunk(n, dim=placement.dim)  # DTensor's (uneven) sharding rule
            out = chunks[rank] if rank < len(chunks) else out.narrow(placement.dim, 0, 0)
    assert out.shape == like.to_local().shape
    return out


def _close(a, b, what):
    torch.testing.assert_close(_full(a), _full(b), rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


def _same_on_all_ranks(t, what):
    t = _full(t).detach().contiguous()
    gathered = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, t)
    for r, other in enumerate(gathered):
        assert torch.equal(other, t), f"{what} differs between rank {dist.get_rank()} and rank {r}"


# ---------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank, world):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_default_dtype(torch.float64)
    # fused: the native CPU kernel, with the priority keys of memoptim.distributed
    for name, priority, fused in [(n, pr, False) for n in ("AdamCM", "SGDCG", "SAM[AdamCM]")
                                  for pr in ("group", "tensor")] + [("AdamCM", "group", True),
                                                                    ("SGDCG", "tensor", True)]:
        ref = _model()
        ddp = DDP(_model())
        ref_opt = _build(name, ref.parameters(), priority)
        opt = _build(name, ddp.parameters(), priority, fused)
        cls = type(getattr(opt, "base_optimizer", opt))
        rule = native.KERNELS[(cls.rule, cls.memory_mode)]  # the name of its native kernel
        calls = {"n": 0}
        with mock.patch.object(native, rule, _counting(getattr(native, rule), calls)):
            for x, y in _batches(STEPS):
                _step(ref, ref_opt, x, y, reference=True)
                _step(ddp, opt, _local(x, rank, world), _local(y, rank, world))
        assert calls["n"] == (STEPS if fused else 0)
        # the AdamCM offer is deferred under DDP (its keys are local norms), SGDCG's never
        deferred = any("critical_pending" in st for st in _state(opt).values())
        assert deferred == (fused and name == "AdamCM")
        what = f"DDP {name} priority={priority} fused={fused}"
        for (pname, p), q in zip(ddp.module.named_parameters(), ref.parameters()):
            _same_on_all_ranks(p, f"{what} {pname}")
            _close(p, q, f"{what} {pname}")
            b, rb = CriticalBuffer.from_state(_state(opt)[p]), CriticalBuffer.from_state(_state(ref_opt)[q])
            _same_on_all_ranks(b.keys, f"{what} keys of {pname}")
            _close(b.keys, rb.keys, f"{what} keys of {pname}")
            _close(b.values, rb.values, f"{what} buffer of {pname}")


def test_ddp_matches_single_process_on_the_global_batch():
    launch(_ddp_worker, WORLD, timeout=90)


# ---------------------------------------------------------------------------------------- FSDP2
def _fsdp_worker(rank, world, names, out, hook):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, Shard

    torch.set_default_dtype(torch.float64)
    mesh = init_device_mesh("cpu", (world,))
    replaced = 0
    for name in names:
        for priority in ("group", "tensor"):
            ref = _model(out=out)
            model = _model(out=out)
            for layer in model:
                if isinstance(layer, torch.nn.Linear):
                    fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            ref_opt = _build(name, ref.parameters(), priority)
            opt = _build(name, model.parameters(), priority)
            if hook and name != "AdaMomentum":
                enable_dtensor_buffers(opt)
            what = f"FSDP2 {name} priority={priority}"
            for step, (x, y) in enumerate(_batches(STEPS, out=out)):
                _step(ref, ref_opt, x, y, reference=True)
                _step(model, opt, _local(x, rank, world), _local(y, rank, world))
                # Compare every rank's shards with the same slices of the reference, every step.
                for (pname, p), q in zip(model.named_parameters(), ref.parameters()):
                    assert isinstance(p, DTensor)
                    _close(p.to_local(), _shard(q, p), f"{what} step {step} {pname}")
                    b = CriticalBuffer.from_state(_state(opt)[p])
                    if b is None:
                        continue
                    rb = CriticalBuffer.from_state(_state(ref_opt)[q])
                    # The keys are the norms of the FULL gradients: a shard's norm would differ.
                    assert not isinstance(b.keys, DTensor)
                    at = f"{what} step {step}"
                    _close(b.keys, rb.keys, f"{at} keys of {pname}")
                    _close(b.values.to_local(), _shard(rb.values, b.values), f"{at} buffer of {pname}")
                    _close(b.total.to_local(), _shard(rb.total, b.total), f"{at} buffer sum of {pname}")
            for pname, p in model.named_parameters():
                b = CriticalBuffer.from_state(_state(opt)[p])
                if b is None:
                    continue
                _same_on_all_ranks(b.keys, f"{what} keys of {pname}")
                # Sharded like the parameter: each rank stores only its own slice.
                assert isinstance(b.values, DTensor) and isinstance(b.total, DTensor)
                assert b.values.placements == (Shard(1),) and b.total.placements == p.placements
                assert b.values.to_local().shape == (3, *p.to_local().shape)
                assert b.total.to_local().shape == p.to_local().shape
            for q in ref.parameters():
                rb = CriticalBuffer.from_state(_state(ref_opt)[q])
                replaced += 0 if rb is None else rb.replacements
    assert replaced > 0  # the replace path of the buffer was exercised


def test_fsdp2_matches_single_process_for_every_optimizer():
    launch(_fsdp_worker, WORLD, list(OPTIMIZERS), 2, True, timeout=100)


def test_fsdp2_unchanged_usage_with_a_dimension_smaller_than_the_mesh():
    # No enable_dtensor_buffers; Linear(5, 1): the last layer's shards are empty on rank 1.
    launch(_fsdp_worker, WORLD, ["AdamCM", "SAM[AdamCM]"], 1, False, timeout=60)


# ---------------------------------------------------------------------------------------- ZeRO
def _zero_worker(rank, world):
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_default_dtype(torch.float64)

    def groups(model):
        # Two groups, each partitioned by ZeRO (largest first, to the least loaded rank): rank 0
        # gets the (5, 4) weight only, so its part of the bias group is empty; rank 1 the rest.
        weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
        biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
        return [{"params": weights}, {"params": biases, "lr": 0.02}]

    # fused AdamCM: the native kernel; it defers its offer with tensor keys only (group keys span
    # the ranks' partitions)
    for cls, kw in ((AdamCM, dict(lr=0.05, buffer_size=3)), (SGDCG, dict(lr=0.1, momentum=0.5, buffer_size=3)),
                    (AdamCM, dict(lr=0.05, buffer_size=3, fused=True))):
        for priority in ("group", "tensor"):
            ref = _model()
            ref_opt = cls(groups(ref), priority=priority, **kw)
            ddp = DDP(_model())
            zero = ZeroRedundancyOptimizer(groups(ddp.module), optimizer_class=cls, priority=priority, **kw)
            local = zero.optim
            n_local = sum(len(g["params"]) for g in local.param_groups)
            assert 0 < n_local < len(list(ref.parameters()))  # each rank holds a strict subset
            what = f"ZeRO {cls.__name__} priority={priority} fused={kw.get('fused')}"
            for step, (x, y) in enumerate(_batches(STEPS)):
                _step(ref, ref_opt, x, y, reference=True)
                _step(ddp, zero, _local(x, rank, world), _local(y, rank, world))
                if kw.get("fused"):
                    deferred = any("critical_pending" in st for st in local.state.values())
                    assert deferred == (priority == "tensor"), what
                for (pname, p), q in zip(ddp.module.named_parameters(), ref.parameters()):
                    _close(p, q, f"{what} step {step} {pname}")
                    if p in local.state:  # this rank's partition: its keys are the unpartitioned keys
                        b = CriticalBuffer.from_state(local.state[p])
                        rb = CriticalBuffer.from_state(ref_opt.state[q])
                        _close(b.keys, rb.keys, f"{what} step {step} keys of {pname}")
                        _close(b.values, rb.values, f"{what} step {step} buffer of {pname}")
            for pname, p in ddp.module.named_parameters():
                _same_on_all_ranks(p, f"{what} {pname}")


def test_zero_redundancy_optimizer_group_keys_span_all_ranks():
    launch(_zero_worker, WORLD, timeout=90)
