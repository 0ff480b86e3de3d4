"""The group-wide custom operators of the critical buffer: ``memoptim::offer`` and ``memoptim::random_draws``.

* both ways of writing the slots (host-read on CPU, device-index elsewhere) equal a per-buffer
  reference written from the equations, bit for bit, for several value and sum dtypes, and the
  whole offer through the operator equals the eager one under every policy;
* each operator passes ``torch.library.opcheck`` (schema, declared mutations, fake implementation);
* compiled, the random policy's draws on CPU counters are ``replacement_draw``'s, as eagerly;
* a traced offer is one node of the graph whatever the number of tensors.
"""

from __future__ import annotations

import math

import pytest
import torch

import memoptim
from memoptim import offers
from memoptim.buffer import CriticalBuffer, offer
from memoptim.policy import device_draw, replacement_draw, step_draws

DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.float32), (torch.float64, torch.float64)]


def _group(n: int, capacity: int, seed: int, value_dtype: torch.dtype, sum_dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3,), (2, 5), (4, 1, 2), ()][:n] + [(7,)] * max(0, n - 4)
    values = [torch.randn((capacity, *s), generator=g).to(value_dtype) for s in shapes]
    sums = [v.to(sum_dtype).sum(0) for v in values]
    counts = [torch.tensor(int(torch.randint(0, 9, (), generator=g)), dtype=torch.int64) for _ in shapes]
    offered = [torch.randn(s, generator=g, dtype=torch.float32) for s in shapes]
    slot = torch.randint(0, capacity, (len(shapes), 1), generator=g)
    accept = torch.rand(len(shapes), generator=g) < 0.6
    replaced = accept & (torch.rand(len(shapes), generator=g) < 0.5)
    return values, sums, counts, offered, slot, accept, replaced


def _reference(values, sums, counts, offered, slot, accept, replaced):
    """The module docstring's equations, one buffer at a time with Python indices."""
    for i, (b, s, r, v) in enumerate(zip(values, sums, counts, offered)):
        j = int(slot[i, 0])
        if bool(accept[i]):
            old = b[j].clone()
            b[j] = v.to(b.dtype)
            s += b[j].to(s.dtype) - old.to(s.dtype)
        if bool(replaced[i]):
            r += 1


def _clone(tensors):
    return [t.clone() for t in tensors]


@pytest.mark.parametrize("value_dtype,sum_dtype", DTYPES)
@pytest.mark.parametrize("impl", ["_write_on_host", "_write_on_device"])
def test_slot_writes_equal_the_reference_bit_for_bit(impl, value_dtype, sum_dtype):
    for seed in range(4):
        values, sums, counts, offered, slot, accept, replaced = _group(6, 4, seed, value_dtype, sum_dtype)
        ref = [_clone(values), _clone(sums), _clone(counts)]
        _reference(*ref, offered, slot, accept, replaced)
        getattr(offers, impl)(values, sums, counts, offered, slot, accept, replaced, True)
        for got, want in zip((values, sums, counts), ref):
            for a, b in zip(got, want):
                assert torch.equal(a, b), (impl, seed)


def _buffers(n: int, capacity: int, seed: int, filled: int) -> list[CriticalBuffer]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        state: dict = {}
        CriticalBuffer.init_state(state, torch.zeros(2, i + 1), capacity)
        b = CriticalBuffer.from_state(state)
        b.keys[:filled] = torch.rand(filled, generator=g, dtype=b.keys.dtype)
        b.values[:filled] = torch.randn((filled, 2, i + 1), generator=g)
        b.resync()
        b.replacements_tensor.fill_(int(torch.randint(0, 7, (), generator=g)))
        out.append(b)
    return out


def _state(buffers: list[CriticalBuffer]) -> list[torch.Tensor]:
    return [t.clone() for b in buffers for t in (b.keys, b.values, b.total, b.replacements_tensor)]


@pytest.mark.parametrize("policy", ["norm", "random", "fifo"])
@pytest.mark.parametrize("filled", [1, 3])
def test_the_operator_offers_as_the_eager_offer(policy, filled):
    """Through ``torch.ops.memoptim.offer`` (the dispatcher, as a compiled step calls it) and
    compiled whole, an offer changes every buffer exactly as the eager offer does."""
    runs = []
    for how in ("eager", "operator", "compiled"):
        buffers = _buffers(5, 3, seed=filled, filled=filled)
        g = torch.Generator().manual_seed(9)
        keys = torch.rand(5, generator=g)
        values = [torch.randn(b.total.shape, generator=g) for b in buffers]
        for b in buffers:
            b.policy = policy
            if policy == "random":
                b.draw = (torch.rand((), generator=g) < 0.5, torch.randint(0, 3, (), generator=g))
        if how == "operator":
            kw = {}
            if policy == "random":
                kw = {"drawn": torch.stack([b.draw[0] for b in buffers]),
                      "drawn_slot": torch.stack([b.draw[1] for b in buffers])}
            changes = [torch.full_like(b.total, math.nan) for b in buffers]  # every entry is written
            torch.ops.memoptim.offer([b.keys for b in buffers], [b.values for b in buffers],
                                     [b.replacements_tensor for b in buffers], changes, keys, values, 0.7,
                                     policy, kw.get("drawn"), kw.get("drawn_slot"))
            for b, d in zip(buffers, changes):
                b.total.add_(d)
        elif how == "compiled":
            torch._dynamo.reset()
            torch.compile(offer, fullgraph=True, backend="aot_eager")(buffers, keys, values, 0.7)
        else:
            offer(buffers, keys, values, 0.7)
        runs.append(_state(buffers))
    for how, got in zip(("operator", "compiled"), runs[1:]):
        assert all(torch.equal(a, b) for a, b in zip(got, runs[0])), how


def test_the_offered_value_is_copied_not_aliased():
    buffers = _buffers(3, 2, seed=0, filled=0)
    values = [torch.randn(b.total.shape) for b in buffers]
    offer(buffers, torch.rand(3), values, 0.7)
    before = [b.values.clone() for b in buffers]
    for v in values:
        v.add_(1.0)
    assert all(torch.equal(b.values, v) for b, v in zip(buffers, before))


def test_offer_passes_opcheck():
    buffers = _buffers(4, 3, seed=2, filled=3)
    args = ([b.keys for b in buffers], [b.values for b in buffers], [b.replacements_tensor for b in buffers],
            [b.total for b in buffers], torch.rand(4), [torch.randn(b.total.shape) for b in buffers],
            0.7, "norm", None, None)
    result = torch.library.opcheck(torch.ops.memoptim.offer.default, args)
    assert set(result.values()) == {"SUCCESS"}, result


def test_random_draws_pass_opcheck():
    steps = torch.tensor([0.0, 3.0, 17.0])
    result = torch.library.opcheck(torch.ops.memoptim.random_draws.default, (steps, 7, 5, 0.5))
    assert set(result.values()) == {"SUCCESS"}, result


def test_draws_on_cpu_counters_are_replacement_draws_eagerly_and_compiled():
    counters = [torch.tensor(float(t)) for t in (0, 1, 5, 255, 1000)]
    want = [replacement_draw(3, int(t) + 1, 4, 0.3) for t in counters]
    torch._dynamo.reset()
    compiled = torch.compile(step_draws, fullgraph=True, backend="aot_eager")
    for run in (step_draws, compiled):
        accept, slot = run(counters, 3, 4, 0.3)
        assert [(bool(a), int(j)) for a, j in zip(accept, slot)] == want


def test_a_compiled_random_policy_step_is_the_eager_step():
    """Whole optimizer steps: the compiled step's draws (through the operator) are the eager ones."""
    gen = torch.Generator().manual_seed(4)
    a = [torch.randn(s, dtype=torch.float64, generator=gen).requires_grad_() for s in ((4, 3), (5,))]
    b = [p.detach().clone().requires_grad_() for p in a]
    hyper = {"lr": 1e-2, "foreach": True, "policy": "random", "replace_prob": 0.5, "buffer_size": 2}
    compiled, eager = memoptim.AdamCM(a, **hyper), memoptim.AdamCM(b, **hyper)
    torch._dynamo.reset()
    step = torch.compile(compiled._step_groups, fullgraph=True, backend="aot_eager")
    for t in range(8):
        for p, q in zip(a, b):
            p.grad = torch.randn(p.shape, dtype=torch.float64, generator=gen) * (1 + t % 3)
            q.grad = p.grad.clone()
        with torch.no_grad():
            step()
        eager.step()
    for p, q in zip(a, b):  # the traced maths may round differently; the decisions may not differ
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(compiled.state[p]["critical_keys"], eager.state[q]["critical_keys"],
                                   rtol=1e-12, atol=0)
        assert torch.equal(compiled.state[p]["critical_replacements"], eager.state[q]["critical_replacements"])
    assert int(eager.state[b[0]]["critical_replacements"]) > 0  # the draws did decide


def test_draws_on_other_devices_are_device_draws():
    counters = [torch.tensor(float(t), device="meta") for t in (0, 1)]
    accept, slot = step_draws(counters, 3, 4, 0.3)
    assert accept.device.type == "meta" and slot.dtype == torch.int64 and accept.shape == (2,)
    # the device formula itself, on CPU tensors
    a, j = device_draw(3, torch.tensor([0.0, 1.0]), 4, 0.3)
    assert a.dtype == torch.bool and j.dtype == torch.int64


@pytest.mark.parametrize("n", [3, 12])
def test_the_offer_is_one_graph_node_whatever_the_number_of_tensors(n):
    """Dynamo's graph of an offer holds one ``memoptim::offer`` call and nothing per tensor."""
    buffers = _buffers(n, 3, seed=0, filled=0)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    values = [torch.randn(b.total.shape) for b in buffers]
    torch.compile(offer, backend=backend, fullgraph=True)(buffers, torch.rand(n), values, 0.7)
    (gm,) = graphs
    calls = [getattr(node.target, "__name__", str(node.target)) for node in gm.graph.nodes
             if node.op == "call_function"]
    # n allocations of the sums' changes (no kernel), the operator, one multi-tensor add
    assert calls == ["empty_like"] * n + ["offer", "_foreach_add_"], calls
    assert all(torch.isfinite(b.keys).sum() == 1 for b in buffers)
    assert all(torch.equal(b.values[0], v) for b, v in zip(buffers, values))
