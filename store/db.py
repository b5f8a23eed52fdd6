"""Engines and sessions for SQLite (embedded default) and PostgreSQL (production).

SQLite runs in WAL mode with a busy timeout; write transactions start with BEGIN IMMEDIATE so
that a check and the write that depends on it are serialised. PostgreSQL relies on row locks.

On SQLite one process's write transactions also queue on a lock of their own before BEGIN
IMMEDIATE: SQLite lets one writer in at a time anyway, and a thread that finds the database
locked sleeps in SQLite's busy handler for up to tens of milliseconds at a go, long after the
lock came free. Under a burst of requests that sleeping, not the writing, set the pace (about
a quarter of an API's threads' time in the message benchmark, bench/ B1). Other processes are
still kept out by SQLite's lock and its busy timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import alembic.command
import alembic.config
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import Session

from store import models  # noqa: F401  (registers the tables)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def create_engine(url: str, **options: Any) -> sa.Engine:
    """Every engine of the project. Its errors never carry bound values: a statement's
    parameters are customer text (messages, notes, comments, customer ids), and the errors are
    logged (a 503, a failed activity) and kept in workflow histories (an activity's failure)."""
    return sa.create_engine(url, hide_parameters=True, **options)


def _sqlite_engine(url: str, *, immediate: bool) -> sa.Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=16,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self._writer = _sqlite_engine(url, immediate=True)
            self._reader = _sqlite_engine(url, immediate=False)
            self._write_lock: AbstractContextManager[Any] = threading.RLock()
        else:
            self._write_lock = nullcontext()
            # A host that stops answering fails a connection in seconds (a 503, a retried
            # activity) instead of hanging every request until TCP gives up, minutes later.
            timeout = {} if "connect_timeout" in parsed.query else {"connect_timeout": 5}
            self._writer = create_engine(
                url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=timeout
            )
            self._reader = self._writer

    @property
    def engine(self) -> sa.Engine:
        return self._writer

    def create_schema(self) -> None:
        """Create or upgrade the tables to the newest migration (safe to run concurrently)."""
        with self._writer.begin() as connection:
            if not self.is_sqlite:  # one migrator at a time; SQLite's write lock does this
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext('switchboard.migrate'))")
                )
            config = alembic.config.Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            alembic.command.upgrade(config, "head")

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction, committed when the block ends without an exception."""
        with self._write_lock, Session(self._writer, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextmanager
    def write_connection(self) -> Iterator[sa.Connection]:
        """A write transaction for Core statements only: no ORM session to set up (the hot
        path of every message)."""
        with self._write_lock, self._writer.begin() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self._reader, expire_on_commit=False) as session:
            with session.begin():
                yield session

    def dispose(self) -> None:
        self._writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()


class Prepared:
    """A statement of the hot path (every message runs a few), compiled once per dialect to the
    SQL text SQLAlchemy would send, then run as that text (`exec_driver_sql`): no cache key
    worked out and no compiled form looked up on each run. Only for statements whose
    parameters and results are plain text and integers (nothing for a type to convert: no
    times, no JSON). Errors are SQLAlchemy's as for any statement (a 503 when unavailable)."""

    def __init__(self, statement: sa.Executable | Callable[[str], sa.Executable]) -> None:
        # A statement, or what builds it for a dialect's name (an upsert is the dialect's own).
        self._statement = statement
        # Per dialect: the text, its positional parameters' order (None: by name), and the
        # values the statement carries itself (the 1 of `last_seq + 1`).
        self._texts: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def __call__(
        self, connection: sa.Connection, parameters: Mapping[str, Any]
    ) -> sa.CursorResult[Any]:
        dialect = connection.dialect
        found = self._texts.get(dialect.name)
        if found is None:
            statement = self._statement
            if not isinstance(statement, sa.Executable):
                statement = statement(dialect.name)
            compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            order = tuple(compiled.positiontup) if compiled.positional else None
            found = self._texts[dialect.name] = (compiled.string, order, dict(compiled.params))
        text, order, carried = found
        given = {**carried, **parameters}
        if order is None:
            return connection.exec_driver_sql(text, given)
        return connection.exec_driver_sql(text, tuple(given[name] for name in order))


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or used just now (retry later),
    as opposed to a statement it refused (a bug, or bad data)."""
    if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection came free in time
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or (
        isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    )


def reachable(db: Database) -> bool:
    """Whether the database answers a trivial query now (the readiness check)."""
    try:
        with db.read() as session:
            session.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        return False
    return True


_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")


def notify(db: Database, *, channel: str, payload: str) -> None:
    """PostgreSQL: hand `payload` to every process LISTENing on `channel` (nothing stored)."""
    with db.write() as session:
        session.execute(_NOTIFY, {"channel": channel, "payload": payload})
