#!/usr/bin/env bash
# Run a command inside the project's local virtual environment, creating or
# refreshing it first.  Used by the README's Quick start and by CI, so that a
# fresh clone on a fresh machine needs nothing installed by hand.
#
#   bash scripts/run.sh memoptim demo
#   bash scripts/run.sh pytest -q -n 2
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MEMOPTIM_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[memoptim] creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
fi

# Re-install only when the project metadata changed since the last install.
stamp="$venv/.memoptim-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "[memoptim] installing memoptim and its dependencies" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  # Pinned torch: on this machine kind the CPU wheel of 2.13.0 lies on disk;
  # an unpinned torch would pull a multi-GB CUDA build.
  "$venv/bin/python" -m pip install -q "torch==${MEMOPTIM_TORCH:-2.13.0}" >&2
  "$venv/bin/python" -m pip install -q -e "$root[dev]" >&2
  touch "$stamp"
fi

export PATH="$venv/bin:$PATH"
cd "$root"
exec "$@"
