"""Building the native kernel ahead of time, knowing whether it is built, and loading it.

``memoptim build-kernels`` (or :func:`load`) compiles ``fused_cpu.cpp`` with
:func:`torch.utils.cpp_extension.load` into torch's extension cache (``$TORCH_EXTENSIONS_DIR``,
default ``~/.cache/torch_extensions``), one build per CPU instruction set, and writes a stamp
beside it naming the source, torch version and flags it was built from.  :func:`is_built` checks
that stamp (no compiler, no import), which is how ``fused=None`` decides at construction whether
the native kernel may run -- never compiling inside ``step()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["SOURCE", "build_directory", "is_built", "load", "name"]

SOURCE = Path(__file__).with_name("fused_cpu.cpp")
_STAMP = "memoptim-built.json"
#: A build lock older than this is left over from a build that was killed (a build takes about a
#: minute); torch would otherwise wait for it forever.
STALE_LOCK_SECONDS = 15 * 60


def name() -> str:
    """The extension's name: one build per instruction set, so a shared cache stays valid."""
    return f"memoptim_fused_cpu_{torch.backends.cpu.get_cpu_capability().lower()}"


def _simd_flags() -> list[str]:
    """Vector instruction flags for the CPU torch itself dispatches to (AVX2 / AVX-512)."""
    cap = torch.backends.cpu.get_cpu_capability()
    if cap.startswith("AVX512"):
        return ["-mavx2", "-mfma", "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq"]
    if cap == "AVX2":
        return ["-mavx2", "-mfma"]
    return []


def _cflags() -> list[str]:
    # -fno-math-errno and -fno-trapping-math let the loops vectorise (sqrt; selects) without
    # changing any result; -ffp-contract=off keeps a*b+c rounded as the eager kernels round it;
    # no -ffast-math: NaN/inf and rounding stay IEEE.
    return ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", *_simd_flags()]


def build_directory() -> Path:
    """Where torch builds and caches the extension: ``$TORCH_EXTENSIONS_DIR/<name>``, else torch's
    per-user cache, ``torch_extensions/py<version>_<accelerator>/<name>`` (the rule of
    ``torch.utils.cpp_extension``, restated so that checking costs neither its import -- two
    seconds, it loads setuptools -- nor creating the directory)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        from torch import _appdirs

        if torch.version.hip is not None:
            accelerator = f"rocm{torch.version.hip.replace('.', '')}"
        elif torch.version.cuda is not None:
            accelerator = f"cu{torch.version.cuda.replace('.', '')}"
        else:
            accelerator = "cpu"
        python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
        root = os.path.join(os.path.realpath(_appdirs.user_cache_dir(appname="torch_extensions")),
                            f"{python}_{accelerator}")
    return Path(root) / name()


def _fingerprint() -> dict[str, str]:
    return {"source": hashlib.sha256(SOURCE.read_bytes()).hexdigest(), "torch": torch.__version__,
            "flags": " ".join(_cflags()), "name": name()}


def is_built() -> bool:
    """Whether the kernel in the cache was built from this source, torch version and flags."""
    try:
        directory = build_directory()
        stamp = json.loads((directory / _STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp == _fingerprint() and (directory / f"{name()}.so").is_file()


def _clear_stale_lock(directory: Path) -> None:
    lock = directory / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return
    if age > STALE_LOCK_SECONDS:
        warnings.warn(f"memoptim: removing a build lock left {age / 60:.0f} min ago by an interrupted "
                      f"build ({lock})", RuntimeWarning, stacklevel=3)
        lock.unlink(missing_ok=True)


def load() -> ModuleType:
    """Build the kernel if needed (about a minute, once per machine and torch version), load it
    and stamp the build.  Raises whatever the build raises (no compiler, no ninja, ...)."""
    from torch.utils.cpp_extension import load as load_extension

    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    _clear_stale_lock(directory)
    module = load_extension(name=name(), sources=[str(SOURCE)], extra_cflags=_cflags(),
                            extra_ldflags=["-fopenmp"], verbose=False)
    stamp = directory / _STAMP
    tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_fingerprint()))
    os.replace(tmp, stamp)
    return module
