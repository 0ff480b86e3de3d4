"""The default path (``fused=None, foreach=None``): native once built, never a compile in step().

With an empty kernel cache the default runs the multi-tensor path; once ``memoptim build-kernels``
(or a ``fused=True`` step) has built the native kernel, optimizers constructed afterwards run it.
Either way the results match the float64 reference.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import memoptim
from memoptim.cli.main import main as cli
from memoptim.optim import native
from memoptim.optim.native import build
from test_equivalence import GRID_SHAPES, run_equivalence
from test_native import _counting

NAMES = {"AdamCM": "adam_cm", "AdamCG": "adam_cg", "SGDCM": "sgd_cm", "SGDCG": "sgd_cg",
         "AdaMomentum": "adamomentum"}


@pytest.fixture
def native_calls(monkeypatch):
    calls = {"n": 0}
    for attr in NAMES.values():
        monkeypatch.setattr(native, attr, _counting(getattr(native, attr), calls))
    return calls


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))

    def no_build():
        raise AssertionError("the default path must not build the native kernel")

    monkeypatch.setattr(build, "load", no_build)
    return tmp_path


@pytest.fixture
def built():
    build.load()  # a no-op (beyond loading) once built; about a minute on a fresh machine
    assert native.is_built()


@pytest.mark.parametrize("name", list(NAMES))
def test_with_an_empty_cache_the_default_runs_foreach_and_matches_the_reference(name, empty_cache,
                                                                                native_calls):
    assert not native.is_built()
    run_equivalence(name, GRID_SHAPES, {"lr": 0.01}, seed=3, none_prob=0.2)
    assert native_calls["n"] == 0


@pytest.mark.parametrize("name", list(NAMES))
def test_once_built_the_default_runs_native_and_matches_the_reference(name, built, native_calls):
    run_equivalence(name, GRID_SHAPES, {"lr": 0.01}, seed=3, none_prob=0.2)
    assert native_calls["n"] > 0


@pytest.mark.parametrize("explicit", [{"foreach": True}, {"foreach": False}, {"fused": False}])
def test_an_explicit_path_is_honoured_even_when_built(explicit, built, native_calls):
    p = torch.randn(4, 3, requires_grad=True)
    opt = memoptim.AdamCM([p], lr=0.01, **explicit)
    p.grad = torch.randn_like(p)
    opt.step()
    assert native_calls["n"] == 0


def test_the_choice_is_made_at_construction(empty_cache, native_calls, monkeypatch):
    p = torch.randn(4, 3, requires_grad=True)
    before = memoptim.AdamCM([p], lr=0.01)  # nothing built: foreach, for good
    monkeypatch.setattr(build, "is_built", lambda: True)
    monkeypatch.setattr(native, "supports", lambda *a, **k: True)
    after = memoptim.AdamCM([torch.randn(2, requires_grad=True)], lr=0.01)
    assert not before._native_default and after._native_default
    p.grad = torch.randn_like(p)
    before.step()
    assert native_calls["n"] == 0


def test_other_rules_and_memory_options_take_the_multi_tensor_path_by_default(built, native_calls):
    for cls, kw in [(memoptim.LionCM, {}), (memoptim.AdamCM, {"policy": "random"}),
                    (memoptim.AdamCM, {"second_moment": "gradient"})]:
        p = torch.randn(4, 3, requires_grad=True)
        opt = cls([p], lr=0.01, **kw)
        p.grad = torch.randn_like(p)
        opt.step()
    assert native_calls["n"] == 0


def test_build_kernels_check_reports_an_empty_cache(empty_cache, capsys):
    assert cli(["build-kernels", "--check"]) == 1
    assert "not built" in capsys.readouterr().out


def test_build_kernels_reports_a_failed_build_in_one_line(empty_cache, capsys):
    assert cli(["build-kernels"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("memoptim build-kernels: error:") and "\n" not in err


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    build._clear_stale_lock(tmp_path)
    assert lock.exists()  # a build may be running
    old = time.time() - build.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="interrupted build"):
        build._clear_stale_lock(tmp_path)
    assert not lock.exists()


def test_a_stamp_from_another_source_is_not_built(tmp_path, monkeypatch, built):
    directory = build.build_directory()
    monkeypatch.setattr(build, "_fingerprint", lambda: {"source": "something else"})
    assert not build.is_built()
    assert (directory / f"{build.name()}.so").is_file()


@pytest.mark.parametrize("env", [None, "custom"])
def test_the_build_directory_is_torchs(env, monkeypatch, tmp_path):
    from torch.utils.cpp_extension import _get_build_directory

    if env:
        monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / env))
    else:
        monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    assert build.build_directory() == Path(_get_build_directory(build.name(), verbose=False))


def test_constructing_an_optimizer_does_not_import_the_extension_builder():
    code = ("import sys, torch, memoptim; memoptim.AdamCM([torch.zeros(2, requires_grad=True)]); "
            "print('torch.utils.cpp_extension' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
