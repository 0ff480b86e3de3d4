"""Grid sweeps over optimizers, hyperparameters and seeds with Optuna's ``GridSampler``.

One Optuna study per (task, optimizer, fixed settings); its grid is the optimizer's
hyperparameter grid times the seeds, so every (configuration, seed) pair is one trial and the
report can average seeds per configuration (no seed is ever selected).  Each trial trains in its
own run directory ``<out>/<task>/<optimizer>/<hp-slug>/seed<k>`` with ``resume=True``:

* the storage defaults to SQLite (``sqlite:///<out>/optuna.db``); a sweep that is interrupted
  (Ctrl-C, kill, reboot) continues where it stopped when the same command is run again: finished
  trials are skipped, trials that failed (e.g. the interrupted one) are queued again, and an
  interrupted run continues from its last epoch checkpoint;
* ``storage`` can be any Optuna RDB URL (e.g. PostgreSQL) so several machines share one sweep;
  trials of a machine that dies are detected by Optuna's heartbeat (60 s, grace 180 s) and
  retried.  Run directories are per machine unless ``out`` is on a shared file system;
  a file lock per run directory keeps two local workers off the same run (``scripts/evidence_study.sh``
  runs two worker processes per stage this way, one torch thread each).

Grids (:func:`grid_for`): ``"paper"`` is Table 8 restricted to each optimizer's hyperparameters
(:data:`memoptim.experiments.paper.TABLE8_PARAMS`), e.g. 432 configurations for Adam+SAM+CM;
``"cpu"`` is the documented CPU-budget subset: only the learning
rate is searched, the other hyperparameters are fixed at the paper's defaults
(beta1 0.9, beta2 0.999, C 5, lambda 0.7, rho 0.05; SGD momentum 0.9).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memoptim.experiments.paper import TABLE8, TABLE8_PARAMS
from memoptim.progress import labelled
from memoptim.registry import REGISTRY

_PAPER = [name for name, entry in REGISTRY.items() if entry.paper]
#: The paper's optimizers by family (from the registry, :data:`memoptim.registry.FAMILIES`).
ADAM_FAMILY = tuple(n for n in _PAPER if REGISTRY[n].family == "adam")
SGD_FAMILY = tuple(n for n in _PAPER if REGISTRY[n].family == "sgd")
ALL_OPTIMIZERS = ADAM_FAMILY + SGD_FAMILY

#: fixed values of the CPU grid (the paper's defaults, appendix A.2.2), from the registry
CPU_FIXED: dict[str, dict[str, float]] = {name: dict(entry.fixed) for name, entry in REGISTRY.items()}
#: learning rates of the CPU grid per family (Adam's and SGD's: a subset of Table 8's
#: {0.1, 0.01, 0.001, 0.0001}; Lion's: Adam's / 10, its usual ratio)
CPU_LRS = {"adam": [0.001, 0.0001], "sgd": [0.1, 0.01], "lion": [0.0001, 0.00001]}


def grid_for(optimizer: str, grid: str = "cpu") -> dict[str, list[Any]]:
    """The hyperparameter grid of ``optimizer``: ``"paper"`` (Table 8) or ``"cpu"`` (subset)."""
    if optimizer not in TABLE8_PARAMS:
        raise ValueError(f"no grid for optimizer {optimizer!r}; known: {', '.join(TABLE8_PARAMS)}")
    family = REGISTRY[optimizer].family
    sgd = family == "sgd"
    if grid == "paper":
        out = {k: list(TABLE8[k]) for k in TABLE8_PARAMS[optimizer]}
        if sgd:
            out["momentum"] = [0.9]
        return out
    if grid == "cpu":
        out = {"lr": list(CPU_LRS[family])}
        out.update({k: [v] for k, v in CPU_FIXED[optimizer].items()})
        return out
    raise ValueError(f"unknown grid {grid!r} (cpu | paper)")


def grid_size(space: Mapping[str, Sequence[Any]]) -> int:
    return math.prod(len(v) for v in space.values())


def hp_slug(hyperparameters: Mapping[str, Any]) -> str:
    """Directory name of a configuration: ``beta2=0.999,lr=0.001`` (sorted keys)."""
    return ",".join(f"{k}={hyperparameters[k]!r}" for k in sorted(hyperparameters)) or "default"


def run_dir(out: str | os.PathLike[str], task: str, optimizer: str, hp: Mapping[str, Any],
            seed: int) -> Path:  # fmt: skip
    return Path(out) / task / optimizer / hp_slug(hp) / f"seed{seed}"


class StorageError(ValueError):
    """The sweep's storage URL cannot be parsed, or its database cannot be reached; the message
    (one line, no password) names the host and the cause."""


def storage_host(url: str) -> str:
    """The ``host[:port]`` part of a database URL as written (``"local socket"`` if none)."""
    rest = url.partition("://")[2]
    host = rest.rpartition("@")[2].partition("/")[0].partition("?")[0]
    return host or "local socket"


def storage_failure(url: str, exc: BaseException) -> StorageError:
    """The :class:`StorageError` of ``url`` failing with ``exc`` (a driver or SQLAlchemy error)."""
    scheme = url.partition("://")[0] or "(no scheme)"
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error in .orig
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    detail = "; ".join(lines) or type(cause).__name__
    password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
    if password:
        detail = detail.replace(password, "***")
    return StorageError(f"storage {scheme}://... at {storage_host(url)}: {detail}")


class RunBusyError(RuntimeError):
    """Another local process holds the run directory's lock (it is training that run)."""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path/.lock`` (POSIX ``flock``, released when the holder
    exits, even on a crash); raises :class:`RunBusyError` at once if another process holds it."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RunBusyError(str(path)) from exc
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _setup_lock(out: Path) -> Iterator[None]:
    """Blocking exclusive lock on ``out/.storage.lock`` while a worker sets up the storage."""
    import fcntl

    with open(out / ".storage.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _gid(trial: Any) -> int | None:
    """Grid point of a trial (GridSampler's ``grid_id`` system attribute)."""
    return trial.system_attrs.get("grid_id")


def _settings_tag(settings: Mapping[str, Any]) -> str:
    blob = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode(), usedforsecurity=False).hexdigest()[:8]


def sweep(
    task: str,
    optimizers: Sequence[str],
    *,
    out: str | os.PathLike[str],
    epochs: int,
    seeds: Sequence[int] = (0, 1, 2),
    grid: str = "cpu",
    overrides: Mapping[str, Sequence[Any]] | None = None,
    storage: str | None = None,
    train_kwargs: Mapping[str, Any] | None = None,
    keep_checkpoints: bool = False,
    log: Any = print,
) -> dict[str, dict[str, Any]]:
    """Run (or continue) the sweep; returns, per optimizer, the study's trial count and the best
    *single* trial (the report averages seeds; this is only progress information).

    Args:
        overrides: replace grid values, e.g. ``{"lr": [1e-3]}`` (applies to optimizers whose
            grid has that hyperparameter).
        train_kwargs: extra keywords of :func:`memoptim.experiments.train.train` fixed for the
            whole sweep (``subset``, ``eval_subset``, ``batch_size``, ``schedule``,
            ``diagnostics``, ...); part of the study name, so changing them starts new studies.
        keep_checkpoints: keep each finished run's ``checkpoint.pt`` (default: delete it; an
            unfinished run always keeps its checkpoint so that it can resume).
    """
    import optuna

    from memoptim.experiments.tasks import build_task
    from memoptim.experiments.train import train  # looked up at each call (tests replace it)

    out = Path(out)
    kwargs = dict(train_kwargs or {})
    # the task (data, tensors) is built once and shared by every trial of this process; first,
    # so that missing data leave no output directory behind
    task_obj = build_task(
        task,
        subset=kwargs.get("subset"),
        eval_subset=kwargs.get("eval_subset"),
        data_root=kwargs.get("data_root"),
        verify=kwargs.get("verify_data", True),
    )
    out.mkdir(parents=True, exist_ok=True)
    rdb = _open_storage(out, storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if task_obj.mode == "max" else "minimize"
    runner = _TrialRunner(
        train=train, task=task, task_obj=task_obj, out=out, epochs=epochs, train_kwargs=kwargs,
        keep_checkpoints=keep_checkpoints, log=log,
        worst=-math.inf if direction == "maximize" else math.inf,
    )  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    for opt in optimizers:
        space, hp_names = _search_space(opt, grid, overrides, seeds)
        settings = {"epochs": epochs, "grid": space, **kwargs}
        name = f"{task}/{opt}/{_settings_tag(settings)}"
        study = _open_study(out, rdb, name, direction, space, settings)
        objective = functools.partial(runner.run, opt=opt, space=space, hp_names=hp_names)
        _run_grid(study, objective, grid_size(space), name, log)
        results[opt] = _study_result(study, name, grid_size(space))
    return results


def _open_storage(out: Path, storage: str | None) -> Any:
    """The sweep's Optuna ``RDBStorage`` (``storage``, default SQLite ``<out>/optuna.db``) with
    heartbeats: 60 s, grace 180 s, a stale trial retried up to 3 times."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    url = storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    # Creating the schema (or a study) races with a concurrent worker doing the same on a
    # fresh SQLite file ("UNIQUE constraint failed: alembic_version"): serialise both.
    with _setup_lock(out), warnings.catch_warnings():  # heartbeat options are "experimental"
        warnings.simplefilter("ignore")
        if url.startswith("postgresql://"):  # psycopg2 (memoptim[postgres]), whatever the
            url = "postgresql+psycopg2://" + url[len("postgresql://"):]  # SQLAlchemy default
        try:
            return RDBStorage(
                url,
                heartbeat_interval=60,
                grace_period=180,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
        except ImportError as exc:  # Optuna re-raises SQLAlchemy's driver import as ImportError
            cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
            driver = (getattr(cause, "name", None) or "").split(".")[0] or None
            scheme = url.partition("://")[0]
            raise ModuleNotFoundError(
                f"storage URL {scheme}://...: the database driver "
                f"{driver or '(unknown)'!r} cannot be imported ({cause})",
                name=driver,
            ) from exc
        except Exception as exc:  # SQLAlchemy's errors (bad URL, unreachable server, refused login)
            from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

            if isinstance(exc, ArgumentError | DBAPIError | NoSuchModuleError | ValueError):
                raise storage_failure(url, exc) from exc
            raise


def _search_space(
    optimizer: str, grid: str, overrides: Mapping[str, Sequence[Any]] | None, seeds: Sequence[int]
) -> tuple[dict[str, list[Any]], list[str]]:
    """(Optuna grid of ``optimizer``: its hyperparameter grid with ``overrides`` applied, plus
    ``seed``; the sorted hyperparameter names)."""
    space: dict[str, list[Any]] = grid_for(optimizer, grid)
    for k, vals in (overrides or {}).items():
        if k in space:
            space[k] = list(vals)
    hp_names = sorted(space)
    space["seed"] = list(seeds)
    return space, hp_names


def _open_study(
    out: Path, rdb: Any, name: str, direction: str, space: dict[str, list[Any]], settings: Mapping[str, Any]
) -> Any:
    """Create (or load) the grid study ``name`` and record its ``settings`` as a user attribute."""
    import optuna

    with _setup_lock(out):
        study = optuna.create_study(
            study_name=name,
            storage=rdb,
            direction=direction,
            sampler=optuna.samplers.GridSampler(space, seed=0),
            load_if_exists=True,
        )
    study.set_user_attr("settings", json.loads(json.dumps(settings, default=str)))
    return study


@dataclass(frozen=True)
class _TrialRunner:
    """Trains the run of a sweep trial; holds what every trial of the sweep shares."""

    train: Callable[..., dict[str, Any]]
    task: str
    task_obj: Any  # the built task, shared by the trials
    out: Path
    epochs: int
    train_kwargs: dict[str, Any]
    keep_checkpoints: bool
    log: Any
    worst: float  # objective value of a run without any finite metric

    def run(self, trial: Any, opt: str, space: dict[str, list[Any]], hp_names: list[str]) -> float:
        """The Optuna objective: train (or resume) the trial's run; its best metric."""
        import optuna

        hp = {k: trial.suggest_categorical(k, space[k]) for k in hp_names}
        seed = int(trial.suggest_categorical("seed", space["seed"]))
        rdir = run_dir(self.out, self.task, opt, hp, seed)
        trial.set_user_attr("run_dir", str(rdir))
        try:
            with _locked(rdir), labelled(f"{opt} {hp_slug(hp)} seed {seed}"):
                summary = self.train(self.task_obj, opt, hp, self.epochs, seed, rdir, resume=True,
                                     keep_checkpoint=self.keep_checkpoints, **self.train_kwargs)  # fmt: skip
        except RunBusyError:
            # another worker is running this point (GridSampler hands out running points
            # once none is left unstarted); its own trial will complete it
            raise optuna.TrialPruned("run directory busy: another worker runs it") from None
        metric = self.task_obj.metric
        value = summary.get(f"best_{metric}")
        trial.set_user_attr("status", summary["status"])
        self.log(f"[sweep] {opt} {hp_slug(hp)} seed {seed}: {metric} {value} "
                 f"({summary['status']}, {summary['elapsed']:.0f} s)")  # fmt: skip
        return self.worst if value is None else float(value)


def _run_grid(study: Any, objective: Callable[[Any], float], points: int, name: str, log: Any) -> None:
    """Run the study until each of its ``points`` grid points is complete or run by a live worker.

    GridSampler counts a failed trial as visited and stops the study when no grid point is
    unvisited.  So every failed point (e.g. the trial interrupted by Ctrl-C, or one whose
    worker died: Optuna's heartbeat fails it once stale) is queued again as a WAITING trial
    carrying its grid id -- as Optuna's own heartbeat retry does -- and optimize() is
    called until no point is left that nobody runs.  Points that another live worker is
    running are left to it (this worker moves on to the next optimizer)."""
    for attempt in range(points + 2):
        done, pending = _requeue_failed(study)
        remaining = points - len(done)
        if attempt == 0:
            log(f"[sweep] {name}: {len(done)}/{points} done, {remaining} to run")
        to_run = _unclaimed(study, points, done | pending)
        if to_run <= 0:
            if remaining > 0:
                log(f"[sweep] {name}: {remaining} point(s) being run by other workers")
            break
        study.optimize(objective, n_trials=to_run)


def _requeue_failed(study: Any) -> tuple[set[int], set[int | None]]:
    """Fail the stale trials, then queue every failed grid point again that is neither complete
    nor queued / running; returns (complete grid ids, queued or running grid ids)."""
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    with warnings.catch_warnings():  # "experimental" API
        warnings.simplefilter("ignore")
        fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    done = {_gid(t) for t in trials if t.state == TrialState.COMPLETE}
    active = (TrialState.RUNNING, TrialState.WAITING)
    pending = {_gid(t) for t in trials if t.state in active}
    for t in trials:
        gid = _gid(t)
        if t.state == TrialState.FAIL and gid is not None and gid not in done | pending:
            attrs = {k: t.system_attrs[k] for k in ("grid_id", "search_space")}
            study.add_trial(optuna.create_trial(state=TrialState.WAITING, system_attrs=attrs))
            pending.add(gid)
    done.discard(None)
    return done, pending


def _unclaimed(study: Any, points: int, claimed: set[int | None]) -> int:
    """Trials for this worker to run: the queued ones plus the grid points nobody has claimed."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    running = {_gid(t) for t in trials if t.state == TrialState.RUNNING}
    return waiting + points - len(claimed | running)


def _study_result(study: Any, name: str, points: int) -> dict[str, Any]:
    """The study's name, complete grid points and best single trial (value, parameters)."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return {
        "study": name,
        "complete": len({_gid(t) for t in complete}),
        "grid_size": points,
        "best_value": best.value if best else None,
        "best_params": best.params if best else None,
    }
