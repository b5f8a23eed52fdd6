"""`make run` (launch.py) where one of its ports is taken: it stops before starting anything,
with one line naming the port and a non-zero exit, and never attaches to a Temporal server
that someone else runs there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from settings import PROJECT_ROOT
from tests.support.processes import free_port
from tests.support.temporal import address


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def launch(tmp_path: Path, *, temporal: int, ui: int, api: int) -> tuple[int, list[str]]:
    """Run `make run`'s launcher on these ports: its exit code and the lines it wrote."""
    env = {
        **os.environ,
        "SWITCHBOARD_ENV": "development",
        "SWITCHBOARD_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal}",
        "SWITCHBOARD_UI_PORT": str(ui),
        "SWITCHBOARD_API_PORT": str(api),
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp_path / 'switchboard.db'}",
        "SWITCHBOARD_TEMPORAL_DB": str(tmp_path / "temporal.db"),
        "SWITCHBOARD_LOG_FORMAT": "console",
    }
    # The timeout only stops a launcher that hangs; a refusal takes as long as Python's start.
    done = subprocess.run(
        [sys.executable, "launch.py"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, lines


def _refused(tmp_path: Path, code: int, lines: list[str], port: int, setting: str) -> None:
    assert code == 2, lines
    [line] = lines
    assert f"port {port} " in line and setting in line and "in use" in line, line
    assert not (tmp_path / "temporal.db").exists()  # no dev server was started
    assert not (tmp_path / "switchboard.db").exists()


@pytest.mark.parametrize("role", ["temporal", "ui", "api"])
def test_a_busy_port_stops_it_at_once_naming_the_port(
    tmp_path: Path, busy_port: int, role: str
) -> None:
    ports = {"temporal": free_port(), "ui": free_port(), "api": free_port(), role: busy_port}
    code, lines = launch(tmp_path, **ports)
    setting = {
        "temporal": "SWITCHBOARD_TEMPORAL_ADDRESS",
        "ui": "SWITCHBOARD_UI_PORT",
        "api": "SWITCHBOARD_API_PORT",
    }[role]
    _refused(tmp_path, code, lines, busy_port, setting)


async def test_someone_elses_temporal_server_is_never_used(
    tmp_path: Path, dev_env: WorkflowEnvironment
) -> None:
    theirs = int(address(dev_env).rpartition(":")[2])
    code, lines = launch(tmp_path, temporal=theirs, ui=free_port(), api=free_port())
    _refused(tmp_path, code, lines, theirs, "SWITCHBOARD_TEMPORAL_ADDRESS")
    await dev_env.client.service_client.check_health()  # theirs runs on, untouched
