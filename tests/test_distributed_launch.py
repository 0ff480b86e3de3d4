"""memoptim.distributed helpers: the local launcher (failures and hangs surface), plain-tensor paths."""

from __future__ import annotations

import time
from unittest import mock

import pytest
import torch
import torch.distributed as dist

from memoptim import SAM, SGDCM, AdamCM
from memoptim.buffer import STATE_KEYS, CriticalBuffer
from memoptim.distributed import abs_max, enable_dtensor_buffers, init_buffer_state, launch, priority_keys
from memoptim.optim import keys

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo"),
]


def _fails_on_rank_1(rank, world):
    dist.barrier()
    if rank == 1:
        raise ValueError("rank 1 exploded on purpose")


def _hangs(rank, world):
    time.sleep(60)


def _keys_worker(rank, world):
    # With a process group up, _keys takes the distributed branch of priority_keys; for plain
    # (unsharded) tensors it must give the single-process keys bit for bit.
    assert dist.is_initialized()
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in ((3, 4), (5,), (2, 2, 2))]
    for p in params:
        p.grad = torch.randn_like(p)
    for priority in ("group", "tensor"):
        for foreach in (True, False):
            opt = AdamCM(params, priority=priority, foreach=foreach)
            group = opt.param_groups[0]
            grads = [p.grad for p in params]
            with mock.patch.object(keys, "is_distributed", lambda: False):
                single = opt._keys(group, grads, foreach)
            distributed = opt._keys(group, grads, foreach)
            assert torch.equal(distributed, single), (priority, foreach, distributed, single)
            assert torch.equal(priority_keys(opt, group, grads, foreach), single)


def test_a_failing_rank_raises_with_its_traceback():
    with pytest.raises(torch.multiprocessing.ProcessRaisedException, match="rank 1 exploded on purpose"):
        launch(_fails_on_rank_1, 2, timeout=30)


def test_a_hanging_run_is_killed_after_the_timeout():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within 2"):
        launch(_hangs, 2, timeout=2)
    assert time.monotonic() - start < 20


def test_distributed_keys_of_plain_tensors_equal_the_single_process_keys():
    launch(_keys_worker, 1, timeout=30)


def test_init_buffer_state_of_a_plain_tensor_is_the_usual_buffer():
    like = torch.randn(3, 2, dtype=torch.float64)
    ours, usual = {}, {}
    init_buffer_state(ours, like, 4, torch.bfloat16)
    CriticalBuffer.init_state(usual, like, 4, torch.bfloat16)
    assert set(ours) == set(usual) == set(STATE_KEYS)
    for k in STATE_KEYS:
        assert ours[k].dtype == usual[k].dtype and torch.equal(ours[k], usual[k]), k


def test_abs_max_of_plain_tensors():
    assert abs_max(torch.tensor([[1.0, -3.5], [2.0, 0.0]])).item() == 3.5
    assert abs_max(torch.empty(0, 3)).item() == 0.0


def test_enable_dtensor_buffers_accepts_memory_optimizers_only():
    p = torch.nn.Parameter(torch.randn(3))
    enable_dtensor_buffers(AdamCM([p])).remove()
    enable_dtensor_buffers(SAM([p], SGDCM, lr=0.1)).remove()
    with pytest.raises(TypeError, match="critical buffer"):
        enable_dtensor_buffers(torch.optim.Adam([p]))
