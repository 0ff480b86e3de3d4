"""The built wheel works on its own: installed into a fresh virtual environment, imported from
outside the repository, one AdamCM step, and one ``fused=True`` step whose native kernel is
compiled from the *installed* package's copy of ``fused_cpu.cpp`` (package data).

torch is not installed into the new environment (a multi-GB download, and the CPU wheel is
pinned): a ``.pth`` file appends this interpreter's site-packages to the new environment's
``sys.path``, so torch, numpy and ninja are importable there.  Lines of a ``.pth`` file are only
appended to ``sys.path``; the ``.pth`` files inside that directory (among them the editable
install of memoptim) are not processed, and the new environment's own site-packages comes
first anyway, which the script asserts through ``memoptim.__file__``.

Slow (about 70 s, most of it compiling the kernel); skipped without ``build`` or ninja.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("build") is None,
        reason="the 'build' package is not installed (pip install build; it is in the dev extra)",
    ),
    pytest.mark.skipif(shutil.which("ninja") is None,
                       reason="ninja is not on PATH; the native kernel cannot be built (pip install ninja)"),
]

SCRIPT = textwrap.dedent(
    """
    import functools, os, sys
    from pathlib import Path

    import torch
    import memoptim
    from memoptim import AdamCM
    from memoptim.optim import native

    venv = Path(sys.prefix).resolve()
    assert Path(memoptim.__file__).resolve().is_relative_to(venv), memoptim.__file__
    assert native._SOURCE.resolve().is_relative_to(venv), native._SOURCE
    assert native._SOURCE.is_file(), "fused_cpu.cpp is missing from the wheel"

    torch.manual_seed(0)
    for fused in (False, True):
        model = torch.nn.Linear(8, 2).double()
        opt = AdamCM(model.parameters(), lr=1e-2, fused=fused)
        calls = []
        if fused:
            inner = native.adam_cm

            @functools.wraps(inner)  # keeps __module__, by which the optimizer knows a native kernel
            def counted(*args, **kwargs):
                calls.append(1)
                return inner(*args, **kwargs)

            native.adam_cm = counted
        before = [p.detach().clone() for p in model.parameters()]
        model(torch.randn(4, 8, dtype=torch.float64)).square().mean().backward()
        opt.step()
        assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
        if fused:
            assert native.available(), native._failed
            assert calls, "the fused step did not reach the native kernel"
    built = list(Path(os.environ["TORCH_EXTENSIONS_DIR"]).rglob("*.so"))
    assert built, "no compiled extension in TORCH_EXTENSIONS_DIR"
    print("OK", memoptim.__version__, memoptim.__file__)
    """
)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_wheel_installs_and_builds_native_kernel(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)], timeout=600)
    (wheel,) = dist.glob("memoptim-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--quiet", str(wheel)], timeout=300)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", purelib]).stdout.strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_memoptim_test_parent_site.pth").write_text("".join(f"{p}\n" for p in ours))
    (venv / "bin" / "ninja").symlink_to(shutil.which("ninja"))  # torch runs `ninja` from PATH

    work = tmp_path / "outside"  # not the repository: `import memoptim` must not find src/
    work.mkdir()
    (work / "check.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               TORCH_EXTENSIONS_DIR=str(tmp_path / "torch_extensions"), OMP_NUM_THREADS="1", MAX_JOBS="1")
    out = _run([str(python), "check.py"], cwd=work, env=env, timeout=900).stdout
    assert out.strip().splitlines()[-1].startswith("OK")
