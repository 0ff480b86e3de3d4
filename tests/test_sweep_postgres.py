"""Sweeps on a PostgreSQL storage: concurrent workers share one sweep, an interrupted sweep
resumes, and a missing database driver is one clear line.

The PostgreSQL tests start a throwaway server (``pg_ctl`` on PATH, else the newest version of
Debian's package layout) on a free 127.0.0.1 port; as root it runs as the ``postgres`` user
(``initdb`` refuses root).  Without the binaries, the driver (``memoptim[postgres]``) or the
permissions, they are skipped.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from memoptim.experiments import sweep as S
from memoptim.experiments import train as train_module


def _pg_bin() -> Path | None:
    ctl = shutil.which("pg_ctl")
    if ctl:
        return Path(ctl).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))  # Debian keeps them off PATH
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_server():
    """``(host, port, superuser)`` of a PostgreSQL server, stopped and deleted afterwards."""
    pytest.importorskip("psycopg2", reason="needs the PostgreSQL driver: memoptim[postgres]")
    bindir = _pg_bin()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    prefix: list[str] = []
    user = os.environ.get("USER") or "postgres"
    root = tempfile.mkdtemp(prefix="memoptim-pg-")
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as "postgres"
        import pwd

        runuser = shutil.which("runuser")
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pw = None
        if pw is None or runuser is None:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root without a 'postgres' user (or runuser) to run the server")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix, user = [runuser, "-u", "postgres", "--"], "postgres"
    data, log = os.path.join(root, "data"), os.path.join(root, "server.log")
    port = _free_port()

    def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout,
                              cwd=root)  # fmt: skip

    init = run(str(bindir / "initdb"), "-D", data, "-U", user, "--auth=trust", "-E", "UTF8",
               "--no-sync")  # fmt: skip
    if init.returncode:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {(init.stderr or init.stdout).strip()[-300:]}")
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=40 "
            "-c shared_buffers=16MB")  # fmt: skip
    start = run(str(bindir / "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "30", "-o", opts,
                "start")  # fmt: skip
    if start.returncode:
        text = Path(log).read_text() if os.path.exists(log) else start.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL server did not start: {text.strip()[-300:]}")
    try:
        yield "127.0.0.1", port, user
    finally:
        run(str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server):
    """A fresh database on the throwaway server, as a ``postgresql://`` storage URL."""
    import psycopg2

    host, port, user = postgres_server
    name = f"memoptim_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(host=host, port=port, user=user, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"postgresql://{user}@{host}:{port}/{name}"


WORKER = """
import os, sys, torch
torch.set_num_threads(1)
from memoptim.experiments import train as T
from memoptim.experiments.sweep import sweep
real_train = T.train
def logged(*args, **kwargs):  # under the run directory's lock: log the points really trained
    if not os.path.exists(os.path.join(args[5], "summary.json")):
        with open(sys.argv[3], "a") as f:
            f.write(str(args[5]) + "\\n")
    return real_train(*args, **kwargs)
T.train = logged
sweep("fashion-mnist", ["adam"], out=sys.argv[1], epochs=1, seeds=[0, 1],
      overrides={"lr": [1e-3, 1e-2]}, storage=sys.argv[2] or None,
      train_kwargs={"verify_data": False, "subset": 20, "batch_size": 10}, log=lambda m: None)
"""
EPOCHS, POINTS = 1, 4  # adam x 2 lr x 2 seeds


def _bests(out: Path) -> dict[str, dict[str, float]]:
    """Per run directory (relative to ``out``): its ``best_*`` values; checks trained-once."""
    bests = {}
    for r in sorted(out.glob("fashion-mnist/*/*/seed*")):
        assert len((r / "metrics.jsonl").read_text().splitlines()) == EPOCHS, r
        summary = json.loads((r / "summary.json").read_text())
        assert summary["status"] == "complete"
        bests[str(r.relative_to(out))] = {k: v for k, v in summary.items() if k.startswith("best_")}
    return bests


def test_two_workers_share_a_postgres_sweep(tiny_data, pg_url):
    """Two processes on one PostgreSQL storage: every grid point is trained exactly once, and
    the results equal a one-worker SQLite sweep's."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    shared, alone = tiny_data / "shared", tiny_data / "alone"
    trained = tiny_data / "trained.txt"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(shared), pg_url, str(trained)],
                              env=env) for _ in range(2)]  # fmt: skip
    procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(alone), "",
                                   str(tiny_data / "alone.txt")], env=env))  # fmt: skip
    assert [p.wait(timeout=180) for p in procs] == [0, 0, 0]
    lines = trained.read_text().splitlines()
    assert len(lines) == len(set(lines)) == POINTS  # each point trained by exactly one worker
    bests = _bests(shared)
    assert len(bests) == POINTS
    assert bests == _bests(alone)
    assert not (shared / "optuna.db").exists()  # the storage was PostgreSQL, not SQLite
    import optuna
    from optuna.trial import TrialState

    (summary,) = optuna.get_all_study_summaries(storage=pg_url.replace("://", "+psycopg2://", 1))
    study = optuna.load_study(study_name=summary.study_name,
                              storage=pg_url.replace("://", "+psycopg2://", 1))  # fmt: skip
    # every grid point has a complete trial (a second worker's trial on a point finished
    # meanwhile completes from the run's summary.json without training it again)
    complete = {S._gid(t) for t in study.get_trials() if t.state == TrialState.COMPLETE}
    assert complete == set(range(POINTS))


@pytest.fixture
def one_thread():
    """torch on one thread (modest CPU, as the worker processes), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_interrupted_postgres_sweep_resumes_each_point_once(tiny_data, pg_url, monkeypatch,
                                                          one_thread):
    out = tiny_data / "sweep"
    calls: list[str] = []
    real_train = train_module.train
    stop = {"on": True}

    def spy(*args, **kwargs):
        calls.append(str(args[5]))
        if len(calls) == 3 and stop["on"]:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    def run():
        return S.sweep("fashion-mnist", ["adam"], out=out, epochs=EPOCHS, seeds=[0, 1],
                       overrides={"lr": [1e-3, 1e-2]}, storage=pg_url,
                       train_kwargs={"verify_data": False, "subset": 20, "batch_size": 10},
                       log=lambda m: None)  # fmt: skip

    monkeypatch.setattr(train_module, "train", spy)
    with pytest.raises(KeyboardInterrupt):
        run()
    first = set(calls[:2])
    assert len(first) == 2
    stop["on"] = False
    calls.clear()
    res = run()
    assert not first & set(calls)  # finished points are not run again
    assert sorted(calls) == sorted(set(calls)) and len(calls) == POINTS - 2
    assert res["adam"]["complete"] == res["adam"]["grid_size"] == POINTS
    assert len(_bests(out)) == POINTS
    calls.clear()
    run()  # nothing left to do
    assert calls == []


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg2"])
def test_missing_postgres_driver_is_one_line(tmp_path, monkeypatch, capsys, scheme):
    from memoptim.cli.main import main

    monkeypatch.setitem(sys.modules, "psycopg2", None)
    monkeypatch.delenv("MEMOPTIM_DEBUG", raising=False)
    url = f"{scheme}://someone:secret@127.0.0.1:5432/sweeps"
    status = main(["sweep", "--task", "fashion-mnist", "--epochs", "1", "--out",
                   str(tmp_path / "out"), "--storage", url])  # fmt: skip
    err = capsys.readouterr().err
    assert status != 0
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "secret" not in err
    assert "'psycopg2'" in err and "pip install 'memoptim[postgres]'" in err
    # the library raises a ModuleNotFoundError naming the driver, not Optuna's bare ImportError
    with pytest.raises(ModuleNotFoundError, match="psycopg2") as info:
        S.sweep("fashion-mnist", ["adam"], out=tmp_path / "lib", epochs=1, storage=url)
    assert info.value.name == "psycopg2" and "secret" not in str(info.value)
