"""Where the real datasets live, and the errors raised when they are missing or corrupted.

The data directory is ``$MEMOPTIM_DATA`` when that variable is set, otherwise
``${XDG_CACHE_HOME:-~/.cache}/memoptim/data``; ``scripts/get_data.sh`` installs every dataset
there (one sub-directory per dataset) with the same rule.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

GET_DATA_SCRIPT = "scripts/get_data.sh"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not installed; the message says the exact command that installs it."""


class DatasetChecksumError(RuntimeError):
    """A dataset file exists but its content is not the pinned one (corrupted or wrong version)."""


def data_dir() -> Path:
    """The root data directory (``$MEMOPTIM_DATA`` or ``~/.cache/memoptim/data``); not created."""
    env = os.environ.get("MEMOPTIM_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "memoptim" / "data"


def install_command(dataset: str) -> str:
    """The shell command, run from the repository root, that installs ``dataset``."""
    env = os.environ.get("MEMOPTIM_DATA")
    prefix = f"MEMOPTIM_DATA={env} " if env else ""
    return f"{prefix}bash {GET_DATA_SCRIPT} {dataset}"


def missing_error(dataset: str, looked_in: list[Path], detail: str = "",
                  given: str | os.PathLike[str] | None = None) -> DatasetNotFoundError:
    """Build the error (one line) for a dataset that is not installed: where it was looked for
    and the command that fetches it.  ``given``: the directory the caller named (a loader's
    ``root``, ``--data-root``); the command then fetches the dataset into that directory."""
    where = ", ".join(str(p) for p in looked_in)
    extra = f" ({detail})" if detail else ""
    run_from = "run from the memoptim repository root"
    if given is None:
        fix = f"install it with `{install_command(dataset)}` ({run_from}; MEMOPTIM_DATA sets the directory)"
    else:
        root = Path(given).absolute()
        if root.name == dataset:  # get_data.sh installs into $MEMOPTIM_DATA/<dataset>
            command = f"MEMOPTIM_DATA={shlex.quote(str(root.parent))} bash {GET_DATA_SCRIPT} {dataset}"
            fix = f"fetch it there with `{command}` ({run_from})"
        else:
            command = f"MEMOPTIM_DATA={shlex.quote(str(root))} bash {GET_DATA_SCRIPT} {dataset}"
            fix = f"fetch it with `{command}` ({run_from}), then give the directory {root / dataset}"
    return DatasetNotFoundError(f"dataset {dataset!r} not found in {where}{extra}; {fix}")


def md5_bytes(data: bytes) -> str:
    """Hex MD5 digest of ``data`` (used only as a content fingerprint, not for security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
