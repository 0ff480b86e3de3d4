"""Registration of memoptim's torch custom operators (``torch.ops.memoptim.*``), in one place.

Each operator is defined from a Python function whose signature gives the schema
(:func:`torch.library.infer_schema`, naming the arguments it mutates), implemented by that
function for the given device type (or for every device), and given a fake implementation, so
``torch.compile`` traces a call as one opaque node of the graph and functionalisation knows what
it mutates.

The lower-level :class:`torch.library.Library` registration is used rather than
:func:`torch.library.custom_op`: the latter wraps every call in Python that, among other things,
increments the autograd version counter of every mutated tensor, one Python call per tensor.
The optimizers' operators mutate about ten tensors per parameter inside ``torch.no_grad()`` (the
eager path calls the same implementations directly and bumps nothing either), and in a compiled
step of a 98-tensor model that bookkeeping alone took about as long as the native kernel's work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["define"]

_LIBRARY = torch.library.Library("memoptim", "FRAGMENT")  # kept alive: the registrations live in it


def define(fn: Callable[..., Any], *, name: str, mutates_args: Iterable[str], fake: Callable[..., Any],
           device_type: str | None = None, kernels: dict[str, Callable[..., Any]] | None = None) -> Any:
    """Register ``fn`` as the operator ``memoptim::<name>`` and return ``torch.ops.memoptim.<name>``.

    Args:
        fn: the implementation; its annotations give the schema.
        name: the operator's name in the ``memoptim`` namespace.
        mutates_args: the arguments ``fn`` changes in place.
        fake: the fake implementation (shapes and dtypes of the outputs, no data).
        device_type: the only device type ``fn`` implements (``"cpu"``), or ``None`` for all.
        kernels: further implementations by device type, which take precedence over ``fn`` there.
    """
    _LIBRARY.define(name + torch.library.infer_schema(fn, mutates_args=tuple(mutates_args)))
    _LIBRARY.impl(name, fn, "CompositeExplicitAutograd" if device_type is None else device_type.upper())
    for device, kernel in (kernels or {}).items():
        _LIBRARY.impl(name, kernel, device.upper())
    torch.library.register_fake(f"memoptim::{name}", fake, lib=_LIBRARY)
    return getattr(torch.ops.memoptim, name)
