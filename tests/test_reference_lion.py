"""The Lion references of ``tests/reference.py`` against numbers computed by hand.

Every expected value below is written out as arithmetic from the update rules (Chen et al.
2023, decoupled weight decay; critical gradients / critical momenta as in the module
docstring of ``reference``), never taken from a run of the reference, so that a wrong
reference cannot hide a wrong library.
"""

from __future__ import annotations

import math

import pytest
import torch

from reference import REFERENCES, RefLion, RefLionCG, RefLionCM

F64 = torch.float64
ABS = 1e-15


def _t(*values: float) -> torch.Tensor:
    """A float64 scalar (one value) or 1-d tensor."""
    return torch.tensor(values[0] if len(values) == 1 else list(values), dtype=F64)


def _value(x: torch.Tensor) -> float | list[float]:
    return x.tolist()


def _slots(ref, gi=0, pi=0):  # type: ignore[no-untyped-def]
    """The buffer of one tensor as ``[(key, value as float or list)]``."""
    return [(k, _value(v)) for k, v in ref.buffer(gi, pi).slots]


def _assert_slots(actual, expected):  # type: ignore[no-untyped-def]
    assert len(actual) == len(expected)
    for (k, v), (ek, ev) in zip(actual, expected, strict=True):
        assert k == pytest.approx(ek, abs=ABS)
        assert v == pytest.approx(ev, abs=ABS)


def test_lion_keys_and_defaults():
    assert REFERENCES["Lion"] is RefLion
    assert REFERENCES["LionCG"] is RefLionCG
    assert REFERENCES["LionCM"] is RefLionCM
    ref = RefLion([_t(1.0)])
    assert ref.groups[0] == {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0,
                             "maximize": False}
    assert "buffer_size" not in ref.groups[0] and "memory" not in ref.groups[0]
    ref.step([[_t(1.0)]])
    assert ref.buffer(0, 0) is None  # plain Lion has no critical buffer
    assert set(ref.state[(0, 0)]) == {"step", "exp_avg"}
    for cls in (RefLionCG, RefLionCM):
        group = cls([_t(1.0)]).groups[0]
        assert group["lr"] == 1e-4 and group["betas"] == (0.9, 0.99)
        assert group["buffer_size"] == 5 and group["memory"] is True


def test_lion_scalar_by_hand_with_weight_decay_and_maximize():
    """Scalar Lion, maximize: the step follows sign(c_t), not sign(g_t), at step 3."""
    lr, b1, b2, wd = 0.1, 0.9, 0.99, 0.01
    ref = RefLion([_t(1.0)], lr=lr, betas=(b1, b2), weight_decay=wd, maximize=True)
    # raw gradients 2, -1, -0.05; maximize flips them to g = -2, 1, 0.05
    # step 1: m0 = 0, c1 = 0.1 * -2 = -0.2 < 0 -> theta1 = 1 - 0.1 * (-1 + 0.01 * 1)
    theta1 = 1.0 - 0.1 * (-1 + 0.01 * 1.0)
    m1 = 0.01 * -2.0
    # step 2: c2 = 0.9 * -0.02 + 0.1 * 1 = 0.082 > 0
    theta2 = theta1 - 0.1 * (1 + 0.01 * theta1)
    m2 = 0.99 * m1 + 0.01 * 1.0
    # step 3: c3 = 0.9 * -0.0098 + 0.1 * 0.05 = -0.00382 < 0 although g3 = 0.05 > 0
    c3 = 0.9 * m2 + 0.1 * 0.05
    assert c3 < 0
    theta3 = theta2 - 0.1 * (-1 + 0.01 * theta2)
    m3 = 0.99 * m2 + 0.01 * 0.05
    expected = [(2.0, theta1, m1), (-1.0, theta2, m2), (-0.05, theta3, m3)]
    for t, (g_raw, theta, m) in enumerate(expected, start=1):
        ref.step([[_t(g_raw)]])
        assert float(ref.params[0][0]) == pytest.approx(theta, abs=ABS)
        assert float(ref.state[(0, 0)]["exp_avg"]) == pytest.approx(m, abs=ABS)
        assert ref.state[(0, 0)]["step"] == t
    assert theta1 == pytest.approx(1.099, abs=ABS)
    assert m2 == pytest.approx(-0.0098, abs=ABS)


def test_lion_sign_of_zero_is_zero_elementwise():
    """A zero interpolation moves only by the weight decay (torch.sign(0) = 0)."""
    ref = RefLion([_t(2.0, -1.0)], lr=0.1, betas=(0.5, 0.9), weight_decay=0.5)
    ref.step([[_t(0.0, 3.0)]])
    # element 0: c = 0 -> 2 - 0.1 * (0 + 0.5 * 2);  element 1: c = 1.5 > 0
    expected = [2.0 - 0.1 * (0 + 0.5 * 2.0), -1.0 - 0.1 * (1 + 0.5 * -1.0)]
    assert _value(ref.params[0][0]) == pytest.approx(expected, abs=ABS)
    assert _value(ref.state[(0, 0)]["exp_avg"]) == pytest.approx([0.0, 0.1 * 3.0], abs=ABS)


def _lion_cg(**extra):  # type: ignore[no-untyped-def]
    return RefLionCG([_t(0.0)], lr=0.1, betas=(0.5, 0.9), weight_decay=0.1, maximize=True,
                     buffer_size=2, decay=0.5, priority="tensor", **extra)


def test_lion_cg_scalar_buffer_by_hand():
    """Lion+CG, scalar, C = 2, decay 0.5, tensor keys, maximize: the buffer flips step 2."""
    # raw gradients -4, 1, 3 -> g = 4, -1, -3 (maximize); keys |g_raw| = 4, 1, 3
    # step 1: empty buffer, ghat = 4; c1 = 0.5 * 4 = 2 > 0
    theta1 = 0.0 - 0.1 * (1 + 0.1 * 0.0)
    m1 = 0.1 * 4.0
    slots1 = [(4.0 * 0.5, 4.0)]  # (key 4, value g = 4), then decay
    # step 2: ghat = -1 + 4 / 2 = 1; c2 = 0.5 * 0.4 + 0.5 * 1 = 0.7 > 0, whereas without
    # the buffer c = 0.5 * 0.4 + 0.5 * -1 = -0.3 < 0: the memory reverses the step
    ghat2 = -1.0 + 4.0 / 2
    assert 0.5 * m1 + 0.5 * ghat2 > 0 > 0.5 * m1 + 0.5 * -1.0
    theta2 = theta1 - 0.1 * (1 + 0.1 * theta1)
    m2 = 0.9 * m1 + 0.1 * ghat2
    slots2 = [(2.0 * 0.5, 4.0), (1.0 * 0.5, -1.0)]  # free slot, then decay
    # step 3: ghat = -3 + (4 - 1) / 2 = -1.5; c3 = 0.5 * 0.46 + 0.5 * -1.5 = -0.52 < 0
    ghat3 = -3.0 + (4.0 - 1.0) / 2
    assert 0.5 * m2 + 0.5 * ghat3 < 0
    theta3 = theta2 - 0.1 * (-1 + 0.1 * theta2)
    m3 = 0.9 * m2 + 0.1 * ghat3
    slots3 = [(1.0 * 0.5, 4.0), (3.0 * 0.5, -3.0)]  # key 3 > min 0.5: slot 1 replaced
    expected = [(-4.0, theta1, m1, slots1), (1.0, theta2, m2, slots2), (3.0, theta3, m3, slots3)]

    ref = _lion_cg()
    seeded = _lion_cg(first_step="seed")  # a no-op for critical gradients
    for g_raw, theta, m, slots in expected:
        for r in (ref, seeded):
            r.step([[_t(g_raw)]])
            assert float(r.params[0][0]) == pytest.approx(theta, abs=ABS)
            assert float(r.state[(0, 0)]["exp_avg"]) == pytest.approx(m, abs=ABS)
            _assert_slots(_slots(r), slots)
    assert theta2 == pytest.approx(-0.199, abs=ABS)
    assert m2 == pytest.approx(0.46, abs=ABS)
    assert ref.buffer(0, 0).replacements == 1


def test_lion_cm_two_elements_buffer_by_hand():
    """Lion+CM, 2 elements, C = 2, decay 0.5, group key = ||g||_2: the buffer holds c_t and
    flips element 1 at step 2."""
    ref = RefLionCM([_t(1.0, -1.0)], lr=0.1, betas=(0.5, 0.9), buffer_size=2, decay=0.5)
    # step 1: g = (3, 4), key 5; c1 = 0.5 * g = (1.5, 2); empty buffer -> signs (+, +)
    c1 = [1.5, 2.0]
    theta1 = [1.0 - 0.1, -1.0 - 0.1]
    m1 = [0.1 * 3.0, 0.1 * 4.0]
    slots1 = [(5.0 * 0.5, c1)]
    # step 2: g = (0, -2), key 2; c2 = 0.5 * (0.3, 0.4) + 0.5 * (0, -2) = (0.15, -0.8);
    # aggr = c2 + (1.5, 2) / 2 = (0.9, 0.2): element 1 goes + although c2 is -
    c2 = [0.5 * 0.3 + 0.5 * 0.0, 0.5 * 0.4 + 0.5 * -2.0]
    assert c2[1] < 0 < c2[1] + 2.0 / 2
    theta2 = [theta1[0] - 0.1, theta1[1] - 0.1]
    m2 = [0.9 * 0.3 + 0.1 * 0.0, 0.9 * 0.4 + 0.1 * -2.0]
    slots2 = [(2.5 * 0.5, c1), (2.0 * 0.5, c2)]
    # step 3: g = (-4, 3), key 5; c3 = 0.5 * (0.27, 0.16) + 0.5 * (-4, 3) = (-1.865, 1.58);
    # aggr = c3 + (1.5 + 0.15, 2 - 0.8) / 2 = (-1.04, 2.18) -> signs (-, +)
    c3 = [0.5 * 0.27 + 0.5 * -4.0, 0.5 * 0.16 + 0.5 * 3.0]
    assert c3[0] + (1.5 + 0.15) / 2 < 0 < c3[1] + (2.0 - 0.8) / 2
    theta3 = [theta2[0] + 0.1, theta2[1] - 0.1]
    m3 = [0.9 * 0.27 + 0.1 * -4.0, 0.9 * 0.16 + 0.1 * 3.0]
    slots3 = [(1.25 * 0.5, c1), (5.0 * 0.5, c3)]  # key 5 > min 1.0: slot 1 replaced
    expected = [
        ([3.0, 4.0], theta1, m1, slots1),
        ([0.0, -2.0], theta2, m2, slots2),
        ([-4.0, 3.0], theta3, m3, slots3),
    ]
    for g, theta, m, slots in expected:
        ref.step([[_t(*g)]])
        assert _value(ref.params[0][0]) == pytest.approx(theta, abs=ABS)
        assert _value(ref.state[(0, 0)]["exp_avg"]) == pytest.approx(m, abs=ABS)
        _assert_slots(_slots(ref), slots)
    assert theta3 == pytest.approx([0.9, -1.3], abs=ABS)
    assert ref.buffer(0, 0).replacements == 1
    assert ref.state[(0, 0)]["step"] == 3


def test_lion_cm_first_step_seed_by_hand():
    """Lion+CM first_step="seed", maximize, wd: step 1 only decays theta and offers g_1."""
    hyper = dict(lr=0.1, betas=(0.5, 0.9), weight_decay=0.5, maximize=True, buffer_size=2,
                 decay=0.5, priority="tensor")
    ref = RefLionCM([_t(2.0)], first_step="seed", **hyper)
    # step 1: raw -3 -> g = 3, key 3; theta1 = 2 - 0.1 * 0.5 * 2; m stays 0; offer g = 3
    ref.step([[_t(-3.0)]])
    assert float(ref.params[0][0]) == pytest.approx(2.0 - 0.1 * 0.5 * 2.0, abs=ABS)
    assert float(ref.state[(0, 0)]["exp_avg"]) == 0.0
    assert ref.state[(0, 0)]["step"] == 1
    _assert_slots(_slots(ref), [(3.0 * 0.5, 3.0)])
    # step 2: raw 1 -> g = -1, key 1; c2 = 0.5 * 0 + 0.5 * -1 = -0.5;
    # aggr = -0.5 + 3 / 2 = 1 > 0 (sign(c2) alone would be -)
    theta1 = 1.9
    theta2 = theta1 - 0.1 * (1 + 0.5 * theta1)
    ref.step([[_t(1.0)]])
    assert float(ref.params[0][0]) == pytest.approx(theta2, abs=ABS)
    assert float(ref.state[(0, 0)]["exp_avg"]) == pytest.approx(0.1 * -1.0, abs=ABS)
    assert ref.state[(0, 0)]["step"] == 2
    _assert_slots(_slots(ref), [(1.5 * 0.5, 3.0), (1.0 * 0.5, -0.5)])
    assert theta2 == pytest.approx(1.705, abs=ABS)

    # the same first gradient with first_step="step": an ordinary Lion step, c1 is offered
    plain = RefLionCM([_t(2.0)], **hyper)
    plain.step([[_t(-3.0)]])
    # c1 = 0.5 * 3 = 1.5 > 0 -> 2 - 0.1 * (1 + 0.5 * 2)
    assert float(plain.params[0][0]) == pytest.approx(2.0 - 0.1 * (1 + 0.5 * 2.0), abs=ABS)
    _assert_slots(_slots(plain), [(3.0 * 0.5, 1.5)])


@pytest.mark.parametrize("cls", [RefLionCG, RefLionCM])
def test_lion_memory_rules_without_memory_are_lion(cls):
    """Memory off: both memory rules reduce to Lion (the aggregate of an empty buffer is x)."""
    hyper = dict(lr=0.05, betas=(0.8, 0.95), weight_decay=0.2, maximize=True)
    ref = cls([_t(0.5, -1.5)], memory=False, **hyper)
    lion = RefLion([_t(0.5, -1.5)], **hyper)
    for g in ([1.0, -2.0], [-0.5, 0.25], [0.0, 3.0], [2.0, -0.1]):
        ref.step([[_t(*g)]])
        lion.step([[_t(*g)]])
        assert ref.buffer(0, 0) is None
        assert torch.equal(ref.params[0][0], lion.params[0][0])
        assert torch.equal(ref.state[(0, 0)]["exp_avg"], lion.state[(0, 0)]["exp_avg"])


BAD = [
    ({"lr": -1e-3}, "lr"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"betas": (1.0, 0.99)}, "betas"),
    ({"betas": (0.9, 1.0)}, "betas"),
    ({"betas": (-0.1, 0.99)}, "betas"),
    ({"lr": math.nan}, "lr"),
]


@pytest.mark.parametrize(("kwargs", "arg"), BAD)
@pytest.mark.parametrize("cls", [RefLion, RefLionCG, RefLionCM])
def test_lion_bad_hyperparameters_are_refused(cls, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        cls([_t(1.0)], **kwargs)
    with pytest.raises(ValueError, match=arg):  # also as a group override
        cls([{"params": [_t(1.0)], **kwargs}])
    cls([_t(1.0)], lr=0.0, betas=(0.0, 0.0), weight_decay=0.0)  # the closed ends are fine


@pytest.mark.parametrize("cls", [RefLionCG, RefLionCM])
def test_lion_memory_rules_refuse_bad_variant_values(cls):
    with pytest.raises(ValueError, match="aggregation"):
        cls([_t(1.0)], aggregation="mean")
    with pytest.raises(ValueError, match="first_step"):
        cls([_t(1.0)], first_step="x")
    with pytest.raises(TypeError, match="second_moment"):
        cls([_t(1.0)], second_moment="gradient")
