"""The buffer-dynamics observer against hand-built sequences: a FIFO buffer (every replacement
evicts the oldest entry, ages 0..C-1), a priority buffer worked out by hand, steps without a
gradient, resume, and its metrics in training (memory optimizers only)."""

from __future__ import annotations

import math

import pytest
import torch

import memoptim
from memoptim.experiments.train import read_metrics, train
from memoptim.lab.buffer_dynamics import BufferDynamics
from test_experiments_train import Interrupt, _strip_time, tiny_images


def _run(grads, capacity=3, decay=1.0, policy="norm", observer=None, opt=None, p=None):
    """SGD+CG on one scalar, per-tensor keys ``|g|``, observed after every step."""
    if opt is None:
        p = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = memoptim.SGDCG([p], lr=1e-3, buffer_size=capacity, decay=decay, priority="tensor",
                             policy=policy)
    observer = observer or BufferDynamics(opt)
    for g in grads:
        p.grad = None if g is None else torch.tensor(float(g), dtype=torch.float64)
        opt.step()
        observer.observe()
    return observer, opt, p


@pytest.mark.parametrize("capacity", [1, 3, 5])
def test_a_fifo_buffer_always_evicts_the_oldest_and_its_entries_are_0_to_c_minus_1_steps_old(capacity):
    grads = [1.0 / t for t in range(1, 41)]  # shrinking norms: the norm policy would never replace
    m = _run(grads, capacity, decay=0.7, policy="fifo")[0].metrics()
    assert m["buffer_full_steps"] == 40 - capacity
    assert m["buffer_replacement_rate"] == 1.0 and m["buffer_oldest_share"] == 1.0
    assert m["buffer_mean_age"] == m["buffer_fifo_age"] == (capacity - 1) / 2
    assert m["buffer_mean_lifetime"] == m["buffer_fifo_lifetime"] == capacity


def test_a_priority_buffer_by_hand():
    """C = 3, decay 1, keys 5, 1, 3 fill the buffer (steps 1-3); then 2 replaces the 1 (stored at
    step 2, not the oldest), 4 replaces the 2 (step 4), 6 replaces the 3 (step 3)."""
    m = _run([5, 1, 3, 2, 4, 6])[0].metrics()
    assert m["buffer_full_steps"] == 3 and m["buffer_replacement_rate"] == 1.0
    assert m["buffer_oldest_share"] == 0.0  # the entry of step 1 (key 5) is never evicted
    # ages after steps 4, 5, 6: [3, 0, 1], [4, 0, 2], [5, 1, 0]
    assert m["buffer_mean_age"] == pytest.approx(16 / 9) and m["buffer_fifo_age"] == 1.0
    assert m["buffer_mean_lifetime"] == pytest.approx((2 + 1 + 3) / 3)  # evicted at 4, 5, 6
    cv = [math.sqrt(sum((k - sum(ks) / 3) ** 2 for k in ks) / 3) / (sum(ks) / 3)
          for ks in ([5, 2, 3], [5, 4, 3], [5, 4, 6])]
    assert m["buffer_key_cv"] == pytest.approx(sum(cv) / 3)
    assert m["buffer_key_ratio"] == pytest.approx((5 / 2 + 5 / 3 + 6 / 4) / 3)


def test_no_replacement_and_decayed_keys():
    """Shrinking keys 1/t: with decay 1 nothing is replaced and the entries only age; with decay
    0.5 the oldest entry's key has decayed most, so every new key replaces the oldest."""
    m = _run([1.0 / t for t in range(1, 11)], decay=1.0)[0].metrics()
    assert m["buffer_replacement_rate"] == 0.0 and m["buffer_oldest_share"] is None
    # no replacement: entries of steps 1, 2, 3; ages after step s (4..10): s-1, s-2, s-3
    assert m["buffer_mean_age"] == pytest.approx(sum(3 * s - 6 for s in range(4, 11)) / 21)
    assert m["buffer_mean_lifetime"] is None
    m = _run([1.0 / t for t in range(1, 11)], decay=0.5)[0].metrics()
    assert m["buffer_replacement_rate"] == 1.0 and m["buffer_oldest_share"] == 1.0


def test_the_key_spread_is_that_of_the_offered_keys_not_of_the_decayed_ones():
    """Equal gradient norms: the stored keys differ by powers of the decay, the offered ones not."""
    m = _run([2.0] * 20, decay=0.7, policy="fifo")[0].metrics()
    assert m["buffer_key_cv"] == pytest.approx(0.0, abs=1e-6)
    assert m["buffer_key_ratio"] == pytest.approx(1.0)
    m = _run([1.0, 2.0, 4.0] * 7, decay=0.5, policy="fifo")[0].metrics()  # every full buffer: 1, 2, 4
    assert m["buffer_key_ratio"] == pytest.approx(4.0)
    assert m["buffer_key_cv"] == pytest.approx(math.sqrt(14 / 9) / (7 / 3))


def test_steps_without_a_gradient_do_not_count():
    with_gaps = _run([5, None, 1, 3, None, None, 2, 4, None, 6])[0].metrics()
    assert with_gaps == _run([5, 1, 3, 2, 4, 6])[0].metrics()


def test_state_dict_resumes_the_statistics():
    grads = [math.exp(math.sin(t)) for t in range(1, 31)]
    whole = _run(grads, decay=0.7)[0].metrics()
    first, opt, p = _run(grads[:12], decay=0.7)
    resumed = BufferDynamics(opt)
    resumed.load_state_dict(first.state_dict())
    assert _run(grads[12:], observer=resumed, opt=opt, p=p)[0].metrics() == whole
    late = _run(grads[12:], observer=BufferDynamics(opt), opt=opt, p=p)[0].metrics()
    assert late["buffer_full_steps"] == 30 - 12 - 1  # attached late: from its first step on


def test_training_records_the_dynamics_for_memory_optimizers_only(tmp_path):
    train(tiny_images(), "adam+cm-fifo", {"lr": 1e-2, "buffer_size": 3}, 2, 0, tmp_path / "fifo", batch_size=16)
    lines = read_metrics(tmp_path / "fifo")
    assert lines[-1]["buffer_oldest_share"] == 1.0 and lines[-1]["buffer_replacement_rate"] == 1.0
    assert lines[-1]["buffer_mean_age"] == lines[-1]["buffer_fifo_age"] == 1.0
    assert lines[-1]["buffer_full_steps"] > lines[0]["buffer_full_steps"] > 0  # over the run so far
    train(tiny_images(), "adam", {"lr": 1e-2}, 1, 0, tmp_path / "adam", batch_size=32)
    assert not any(k.startswith("buffer_") for k in read_metrics(tmp_path / "adam")[0])


def test_an_interrupted_run_resumes_the_dynamics_exactly(tmp_path):
    hp = {"lr": 1e-2, "buffer_size": 3}
    train(tiny_images(), "adam+cm", hp, 2, 1, tmp_path / "ref", batch_size=16)
    with pytest.raises(KeyboardInterrupt):
        train(Interrupt(tiny_images(), epoch=2, at=3), "adam+cm", hp, 2, 1, tmp_path / "run", batch_size=16)
    train(tiny_images(), "adam+cm", hp, 2, 1, tmp_path / "run", resume=True, batch_size=16)
    ref, run = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "run")
    assert _strip_time(run) == _strip_time(ref) and run[-1]["buffer_mean_age"] is not None
