"""The product as deployed: API (uvicorn) and worker processes configured only through the
environment, each writing its log to a file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from settings import PROJECT_ROOT, Settings
from tests.support.api import ApiClient
from tests.support.policy import (
    DEFAULT_GROUPS,
    DEFAULT_PRESENCE_TIMEOUT,
    UNLIMITED_REQUESTS,
    test_settings,
    write_policy,
)

# Nobody serves this group: after 2 seconds its conversations overflow to a left message.
CALLBACK_GROUP = (
    '[[skill_groups]]\nname = "callback"\nmax_queue_wait = "2s"\noverflow_to = "left_message"\n'
)
CALLBACK_ROUTING = '[[routing]]\nwhen = { entry = "callback_test" }\nskill_group = "callback"\n'
# Second-scale timeouts: whole lifecycles in seconds.
DEPLOYED_TIMEOUTS = {"idle_warning_after": "2s", "idle_close_after": "2s", "rating_window": "4s"}
# What a worker logs once it polls its task queue (worker.py).
_POLLING = "worker polling task queue"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(settings: Settings) -> dict[str, str]:
    """The SWITCHBOARD_* variables that configure a process with these settings."""
    return {
        **os.environ,
        "SWITCHBOARD_ENV": settings.env,
        "SWITCHBOARD_DATABASE_URL": settings.database_url,
        "SWITCHBOARD_POLICY": str(settings.policy),
        "SWITCHBOARD_TASK_QUEUE": settings.task_queue,
        "SWITCHBOARD_TEMPORAL_ADDRESS": settings.temporal_address,
        "SWITCHBOARD_ADMIN_TOKEN": settings.admin_token,
        "SWITCHBOARD_APP_KEY": settings.app_key,
        "SWITCHBOARD_SECRET_KEY": settings.secret_key,
        "SWITCHBOARD_METRICS_ADDRESS": settings.metrics_address,
        "SWITCHBOARD_ATTACHMENTS_URL": settings.attachments_url,
        **{
            f"SWITCHBOARD_{name.upper()}": str(getattr(settings, name))
            for name in UNLIMITED_REQUESTS
        },
    }


class Deployment:
    """API and worker processes on one database and Temporal server, as in production."""

    def __init__(
        self,
        *,
        directory: Path,
        database_url: str,
        temporal_address: str,
        apis: int = 1,
        workers: int = 1,
        timeouts: dict[str, str] | None = None,
        groups: str = DEFAULT_GROUPS,
        routing: str = "",
        presence_timeout: str = DEFAULT_PRESENCE_TIMEOUT,
        extra_env: dict[str, str] | None = None,
        api_env: dict[str, str] | None = None,
        ready: str = "/healthz",
    ) -> None:
        """`timeouts` override the policy's; `groups` and `routing` (TOML) are its skill groups
        and routing rules besides `callback`'s; `presence_timeout` its agents'; `extra_env`
        adds to every process's environment, `api_env` to the API processes' only (say, to
        reach Temporal through a proxy); an API is up once `ready` answers 200."""
        directory.mkdir(parents=True, exist_ok=True)
        policy = write_policy(
            directory / "policy.toml",
            **{**DEPLOYED_TIMEOUTS, **(timeouts or {})},
            groups=groups + CALLBACK_GROUP,
            routing=CALLBACK_ROUTING + routing,
            presence_timeout=presence_timeout,
        )
        self.settings = test_settings(
            database_url, policy, task_queue=f"tq-{uuid.uuid4()}", address=temporal_address
        )
        self.env = {
            **environment(self.settings),
            "SWITCHBOARD_RECONCILE_INTERVAL_SECONDS": "1",
            **(extra_env or {}),
        }
        self.api_env = {**self.env, **(api_env or {})}
        self.ready = ready
        self.logs = directory / "logs"
        self.logs.mkdir()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, list[str]] = {}
        self.urls: list[str] = []
        self.stopped = False
        try:
            for index in range(workers):
                self._start(f"worker-{index}", [sys.executable, "worker.py"])
            for index in range(apis):
                port = free_port()
                self._start(
                    f"api-{index}",
                    [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port)],
                )
                self.urls.append(f"http://127.0.0.1:{port}")
            for index, url in enumerate(self.urls):
                self._wait_ready(f"api-{index}", url)
            for index in range(workers):
                self._wait_polling(f"worker-{index}")
        except BaseException:
            self._kill_all()
            raise

    def client(self, index: int = 0, **options: Any) -> ApiClient:
        """A client of API process `index` over HTTP (`async with` closes it); `options` as
        for ApiClient.at."""
        return ApiClient.at(self.urls[index], **{"patience": 30, **options})

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def failed_attempts(self, activity_type: str) -> int:
        """Attempts of this activity the workers logged as failed (a local activity's retries
        show nowhere else while they go on)."""
        return sum(
            line.count(f"'activity_type': '{activity_type}'")
            for log in self.logs.glob("worker-*.log")
            for line in log.read_text().splitlines()
            if "Completing activity as failed" in line
        )

    def _start(self, name: str, command: list[str]) -> None:
        self.commands[name] = command
        self.processes[name] = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=self.api_env if name.startswith("api") else self.env,
            stdout=(self.logs / f"{name}.log").open("a"),  # a restarted process appends
            stderr=subprocess.STDOUT,
        )

    def _wait_ready(self, name: str, url: str) -> None:
        def ready() -> bool:
            try:
                return httpx.get(f"{url}{self.ready}", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        self._wait_until_up(name, ready)

    def _wait_polling(self, name: str, *, starts: int = 1) -> None:
        """Until the worker says it polls its task queue, for the `starts`-th time (a test's
        first conversation would otherwise wait out the worker's start on a loaded machine)."""
        self._wait_until_up(name, lambda: self.log(name).count(_POLLING) >= starts)

    def _wait_until_up(self, name: str, up: Callable[[], bool]) -> None:
        # Generous: on a loaded machine a process's imports alone take tens of seconds.
        deadline = time.monotonic() + 90
        while not up():
            if time.monotonic() > deadline or self.processes[name].poll() is not None:
                pytest.fail(f"{name} did not come up:\n" + self.log(name))
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.kill()
        process.wait()

    def restart(self, name: str) -> None:
        """Start a process that was killed again, as it was (an API also comes up ready)."""
        assert name not in self.processes, f"{name} is still running"
        self._start(name, self.commands[name])
        if name.startswith("api"):
            self._wait_ready(name, self.urls[int(name.removeprefix("api-"))])

    def restart_worker(self, name: str = "worker-0") -> None:
        """Start a worker that was killed again, and wait until it polls its task queue."""
        started_before = self.log(name).count(_POLLING)
        self.restart(name)
        self._wait_polling(name, starts=started_before + 1)

    def _kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    def stop(self, *, faults: bool = False) -> None:
        """Stop every process gracefully (once; again is a no-op). `faults`: the test broke
        something on purpose, and processes log the tracebacks of what failed meanwhile (a
        retried activity, a 503); an error that reached the ASGI server unhandled still fails."""
        if self.stopped:
            return
        self.stopped = True
        # The APIs first: a request still waiting on a workflow gets its answer from a worker.
        waves = [[name for name in self.processes if name.startswith(kind)] for kind in "aw"]
        try:
            for wave in waves:
                for name in wave:
                    self.processes[name].send_signal(signal.SIGTERM)
                for name in wave:
                    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
                    code = self.processes[name].wait(60)  # (a loaded machine is slow)
                    assert code in (0, -signal.SIGTERM), f"{name} did not stop cleanly"
        finally:
            self._kill_all()
        for name in self.processes:
            log = self.log(name)
            assert "Exception in ASGI application" not in log, f"{name}:\n{log}"
            assert faults or "Traceback" not in log, f"{name}:\n{log}"
            if name.startswith("api"):
                assert "Application shutdown complete" in log
