"""Local multi-process runs joined by gloo on 127.0.0.1, for tests and CPU experiments.

Not imported by ``import memoptim``: ``memoptim.distributed.launch`` loads it on first use.  The forkserver
preloads this module (not the package's heavier dependencies).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["free_port", "launch"]

def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn: Callable[..., Any], world_size: int, port: int, timeout: float,
            args: tuple[Any, ...], error_dir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout))
    try:
        fn(rank, world_size, *args)
        dist.barrier()  # gloo can abort if a rank tears down while another still talks
    except BaseException:
        # Recorded before the group is torn down, hence before the other ranks fail in
        # consequence: the launcher reports the earliest error, the root cause.
        path = os.path.join(error_dir, f"rank{rank}")
        with open(path + ".tmp", "w") as f:
            f.write(f"{time.time()!r}\n{traceback.format_exc()}")
        os.replace(path + ".tmp", path)
        raise
    finally:
        dist.destroy_process_group()


def _root_cause(error_dir: str, exc: Exception) -> Exception:
    """The earliest recorded rank failure as a ProcessRaisedException (``exc`` if none was recorded)."""
    import torch.multiprocessing as mp

    records = []
    for name in os.listdir(error_dir):
        if name.startswith("rank") and not name.endswith(".tmp"):
            with open(os.path.join(error_dir, name)) as f:
                stamp, _, tb = f.read().partition("\n")
            records.append((float(stamp), int(name[4:]), tb))
    if not records:
        return exc
    records.sort()
    _, rank, tb = records[0]
    others = [r for _, r, _ in records[1:]]
    note = f"\n(ranks {others} failed afterwards, in consequence)" if others else ""
    return mp.ProcessRaisedException(
        f"\n\n-- Process {rank} terminated with the following error:\n{tb}{note}", rank,
        getattr(exc, "pid", -1),
    )


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout: float = 60.0,
    start_method: str = "forkserver",
) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` local processes joined by gloo.

    For tests and CPU experiments (use ``torchrun`` for real jobs): a process group
    on a free 127.0.0.1 port, one thread per process, a barrier before the group is
    destroyed.  ``fn`` must be picklable (a module-level function).  If a rank
    raises, raises ``torch.multiprocessing.ProcessRaisedException`` carrying the
    traceback of the *first* rank that failed (not of a rank that failed later
    because its peer had gone); raises ``TimeoutError`` (after killing the ranks)
    if they have not all finished after ``timeout`` seconds.

    The default start method, ``"forkserver"``, imports torch once in a server
    process (preloading this module) and forks clean ranks from it, so repeated
    launches do not pay torch's import time again; ``"spawn"`` starts from scratch.
    """
    import multiprocessing

    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    if start_method == "forkserver":
        multiprocessing.get_context("forkserver").set_forkserver_preload([__name__])
    with tempfile.TemporaryDirectory(prefix="memoptim-launch-") as error_dir:
        ctx = mp.start_processes(
            _worker, args=(fn, world_size, free_port(), timeout, args, error_dir), nprocs=world_size,
            join=False, start_method=start_method,
        )
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    for p in ctx.processes:
                        if p.is_alive():
                            p.kill()
                    for p in ctx.processes:
                        p.join(5)
                    raise TimeoutError(
                        f"distributed run of {fn.__name__} did not finish within {timeout} s"
                    )
        except ProcessException as exc:
            raise _root_cause(error_dir, exc) from None
