"""Shared pytest configuration.

* Makes ``tests/`` importable (``from reference import ...``) whatever pytest's import mode.
* Registers a deterministic, CI-friendly hypothesis profile (no deadline, derandomized so a
  CI run is reproducible); select another with ``HYPOTHESIS_PROFILE=<name>``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("explore", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
