"""Opening study storage, heartbeats and the retry of trials whose worker died.

Storage URLs:

``sqlite:///path/study.db`` (the default, one machine)
    Opened with a 60 s busy timeout, WAL journal mode and ``BEGIN IMMEDIATE`` transactions: every
    transaction takes SQLite's write lock up front, so concurrent worker processes wait for each
    other instead of failing with "database is locked" on a read→write upgrade. WAL keeps
    readers (optuna-dashboard) unblocked. Not for network file systems.
``postgresql+psycopg://user:pass@host/db`` (several machines; ``postgresql://`` is read as
    ``postgresql+psycopg://`` when only psycopg 3 is installed), or any other SQLAlchemy URL
    Optuna's RDBStorage accepts.
``journal:PATH``
    Optuna's append-only journal file (JournalFileBackend); safe for several processes on one
    machine or on a shared file system with working locks.

Dead workers: with RDB storage Optuna's heartbeat (``heartbeat_interval``/``grace_period``)
marks a RUNNING trial whose worker stopped beating FAIL, and :class:`RetryStaleTrial` (an
Optuna ``RetryHeartbeatStaleTrialCallback``) re-queues its parameters as a WAITING trial. Journal
storage has no heartbeat in Optuna, so the same is done here with a ``y7nas:heartbeat`` system
attribute. Heartbeats are recorded from a background thread while a trial runs.
"""
from __future__ import annotations

import contextlib
import importlib.util
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import SearchError

HEARTBEAT_ATTR = "y7nas:heartbeat"
REPLACES_ATTR = "y7nas:replaces"


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages)."""
    import re

    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def has_replacement(study: Any, number: int) -> bool:
    """Whether some trial was already queued to replace failed trial ``number``."""
    return any(t.system_attrs.get(REPLACES_ATTR) == number for t in study.get_trials(deepcopy=False))


def queue_replacement(study: Any, failed: Any, *, retry_params: bool, reason: str = "") -> None:
    """Queue a WAITING trial that replaces ``failed``: a retry of its parameters, or a fresh sample.

    Tagged with ``y7nas:replaces`` so that a failed trial is replaced at most once (a retry keeps
    Optuna's ``failed_trial``/``retry_history`` system attributes, as RetryFailedTrialCallback
    does).
    """
    optuna = _optuna()
    system_attrs: dict[str, Any] = {REPLACES_ATTR: failed.number}
    params, distributions = {}, {}
    if retry_params:
        history = list(failed.system_attrs.get("retry_history", [])) + [failed.number]
        system_attrs.update(failed_trial=failed.system_attrs.get("failed_trial", failed.number),
                            retry_history=history, fixed_params=dict(failed.params))
        params, distributions = dict(failed.params), dict(failed.distributions)
    if reason:
        system_attrs["y7nas:replace_reason"] = reason
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, params=params,
                                              distributions=distributions, system_attrs=system_attrs))


def _retry_callback_class():
    optuna = _optuna()

    class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
        """Optuna's retry-stale-trial callback, made idempotent: a trial is re-queued only once."""

        def __call__(self, study, trial) -> None:  # noqa: D102 - see class docstring
            if not has_replacement(study, trial.number):
                queue_replacement(study, trial, retry_params=True, reason="worker lost (no heartbeat)")

    return RetryStaleTrial


@dataclass
class StudyStorage:
    """An opened Optuna storage plus the heartbeat strategy that fits it."""

    storage: Any
    url: str
    kind: str  # "sqlite" | "rdb" | "journal"
    heartbeat_interval: int
    grace_period: int

    # -- heartbeats ----------------------------------------------------------------------
    def beat(self, study: Any, trial_id: int) -> None:
        """Record one heartbeat for ``trial_id``."""
        if self.kind == "journal":
            study._storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        else:
            study._storage.record_heartbeat(trial_id)

    @contextlib.contextmanager
    def heartbeat(self, study: Any, trial_id: int):
        """Beat every ``heartbeat_interval`` seconds from a thread while the block runs."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.heartbeat_interval):
                with contextlib.suppress(Exception):  # a missed beat is retried next interval
                    self.beat(study, trial_id)

        thread = threading.Thread(target=loop, name=f"heartbeat-{trial_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def fail_stale(self, study: Any) -> None:
        """Mark RUNNING trials without a recent heartbeat FAIL and re-queue their parameters."""
        optuna = _optuna()
        if self.kind != "journal":
            optuna.storages.fail_stale_trials(study)
            return
        callback = _retry_callback_class()()
        now = time.time()
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            last = trial.system_attrs.get(HEARTBEAT_ATTR)
            if last is None and trial.datetime_start is not None:
                last = trial.datetime_start.timestamp()
            if last is None or now - float(last) <= self.grace_period:
                continue
            try:
                changed = study._storage.set_trial_state_values(trial._trial_id,
                                                                state=optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            if changed:
                callback(study, study._storage.get_trial(trial._trial_id))


def open_storage(url: str, *, heartbeat_interval: int = 5, grace_period: int = 20,
                 create_dirs: bool = True) -> StudyStorage:
    """Open ``url`` (see the module docstring); unreachable storage is one :class:`SearchError` line."""
    optuna = _optuna()
    if heartbeat_interval < 1 or grace_period <= heartbeat_interval:
        raise SearchError("heartbeat interval must be >= 1 s and the grace period longer than it")
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):].removeprefix("//"))
        if create_dirs:
            _mkdir(path.parent)
        try:
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            storage = optuna.storages.JournalStorage(backend)
        except Exception as exc:  # noqa: BLE001 - any failure to open is one line
            raise SearchError(f"cannot open journal storage {path}: {_first_line(exc)}") from None
        return StudyStorage(storage, url, "journal", heartbeat_interval, grace_period)

    url = _default_driver(url)
    kind = "sqlite" if url.startswith("sqlite") else "rdb"
    engine_kwargs: dict[str, Any] = {}
    if kind == "sqlite":
        db = _sqlite_path(url)
        if db is not None:
            if create_dirs:
                _mkdir(db.parent)
            _enable_wal(db)
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
            grace_period=grace_period, heartbeat_stale_trial_callback=_retry_callback_class()())
    except ImportError as exc:
        raise SearchError(f"cannot open storage {redact(url)}: database driver missing "
                          f"({_first_line(exc)}); for PostgreSQL install the 'postgres' extra") from None
    except Exception as exc:  # noqa: BLE001 - sqlalchemy/driver errors vary; one line
        raise SearchError(f"cannot open storage {redact(url)}: {_first_line(exc)}") from None
    if kind == "sqlite":
        _begin_immediate(storage.engine)
    return StudyStorage(storage, url, kind, heartbeat_interval, grace_period)


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SearchError(f"cannot create {path}: {exc.strerror or exc}") from None


def _default_driver(url: str) -> str:
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _sqlite_path(url: str) -> Path | None:
    rest = url.split("://", 1)[1] if "://" in url else ""
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        return None
    return Path(rest[1:])  # sqlite:///rel/path → rel/path, sqlite:////abs/path → /abs/path


def _enable_wal(db: Path) -> None:
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
            con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise SearchError(f"cannot open SQLite database {db}: {exc}") from None


def _begin_immediate(engine: Any) -> None:
    """Make every SQLite transaction take the write lock up front (no read→write upgrade)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # noqa: ANN001
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below drive transactions

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # noqa: ANN001
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners existed are dropped


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other storages)."""
    return _sqlite_path(url) if url.startswith("sqlite") else None


__all__ = ["HEARTBEAT_ATTR", "REPLACES_ATTR", "StudyStorage", "has_replacement", "open_storage",
           "queue_replacement", "redact", "sqlite_file"]
