"""Structured logs: a real API process (uvicorn) writing JSON lines, each line of a request
carrying its request id and the conversation id from its path."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from api.deps import visitor_token
from logging_setup import configure_logging, log_format
from settings import PROJECT_ROOT, Settings
from store.db import Database
from tests.utils import new_conversation, test_settings, write_policy


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiProcess:
    """`uvicorn api.main:app` configured through the environment, its output in a file."""

    def __init__(self, settings: Settings, output: Path) -> None:
        self.output = output
        self.url = f"http://127.0.0.1:{_free_port()}"
        env = {
            **os.environ,
            "SWITCHBOARD_ENV": settings.env,
            "SWITCHBOARD_LOG_FORMAT": "json",
            "SWITCHBOARD_DATABASE_URL": settings.database_url,
            "SWITCHBOARD_POLICY": str(settings.policy),
            "SWITCHBOARD_TEMPORAL_ADDRESS": settings.temporal_address,
            "SWITCHBOARD_ADMIN_TOKEN": settings.admin_token,
            "SWITCHBOARD_APP_KEY": settings.app_key,
            "SWITCHBOARD_SECRET_KEY": settings.secret_key,
        }
        port = self.url.rsplit(":", 1)[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--port", port],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=output.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/openapi.json", timeout=1)
                return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                pytest.fail("the API did not come up:\n" + output.read_text())
            time.sleep(0.2)

    def stop(self) -> list[dict[str, Any]]:
        """Stop the process; every line it wrote, each parsed as JSON (it fails if one is not)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)
        return [json.loads(line) for line in self.output.read_text().splitlines() if line]


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[tuple[ApiProcess, str, str]]:
    """An API whose Temporal is unreachable, and an open conversation: (api, id, visitor)."""
    db = Database(f"sqlite:///{tmp_path / 'switchboard.db'}")
    db.create_schema()
    with db.write() as session:
        conversation_id = new_conversation(session).id
    db.dispose()
    settings = test_settings(
        f"sqlite:///{tmp_path / 'switchboard.db'}",
        write_policy(tmp_path / "policy.toml"),
        "unused",
        f"127.0.0.1:{_free_port()}",  # nothing listens there
    )
    api = ApiProcess(settings, tmp_path / "api.log")
    try:
        yield api, conversation_id, visitor_token(settings, conversation_id)
    finally:
        api.stop()


def test_api_logs_are_json_lines_with_request_and_conversation_ids(api_process) -> None:
    api, conversation_id, visitor = api_process
    with httpx.Client(base_url=api.url, timeout=30) as http:
        # Temporal is down: the message is stored, the API says 503 and logs why.
        told = http.post(
            f"/v1/conversations/{conversation_id}/messages",
            headers={"Authorization": f"Bearer {visitor}", "X-Request-ID": "req-visitor-1"},
            json={"client_message_id": "m-1", "content": "Where is my parcel?"},
        )
        assert told.status_code == 503, told.text
        assert told.headers["X-Request-ID"] == "req-visitor-1"
        unnamed = http.get("/v1/monitor")  # no request id given: one is made and echoed
        assert unnamed.status_code == 401
        made_up = unnamed.headers["X-Request-ID"]
        assert len(made_up) == 32 and made_up != "req-visitor-1"
    lines = api.stop()  # every line is JSON, uvicorn's included

    assert any(
        line["logger"].startswith("uvicorn") and "Application startup complete" in line["event"]
        for line in lines
    )
    of_message = [line for line in lines if line.get("request_id") == "req-visitor-1"]
    # The warning logged inside the request, and its access line.
    assert {line["logger"] for line in of_message} >= {"switchboard.api", "switchboard.api.access"}
    assert all(line["conversation_id"] == conversation_id for line in of_message)
    access = [line for line in of_message if line["event"] == "request"]
    assert len(access) == 1
    assert access[0] | {"duration_ms": 0} == {
        "event": "request",
        "logger": "switchboard.api.access",
        "level": "info",
        "timestamp": access[0]["timestamp"],
        "request_id": "req-visitor-1",
        "conversation_id": conversation_id,
        "method": "POST",
        "path": f"/v1/conversations/{conversation_id}/messages",
        "route": "/v1/conversations/{conversation_id}/messages",
        "status": 503,
        "duration_ms": 0,
    }
    of_monitor = [line for line in lines if line.get("request_id") == made_up]
    assert [(line["event"], line["path"], line["status"]) for line in of_monitor] == [
        ("request", "/v1/monitor", 401)
    ]
    assert "conversation_id" not in of_monitor[0]


def test_console_lines_in_development_and_json_in_production() -> None:
    production = Settings(
        env="production",
        admin_token="a-production-admin-token",
        app_key="a-production-app-key",
        secret_key="a-production-secret-key",
    )
    assert log_format(production) == "json"
    assert log_format(Settings(env="development")) == "console"
    assert log_format(Settings(env="development", log_format="json")) == "json"

    output = io.StringIO()
    try:
        configure_logging(Settings(env="development"), stream=output)
        with structlog.contextvars.bound_contextvars(request_id="req-7", conversation_id="c-9"):
            logging.getLogger("switchboard.api").warning("answering 503: %s", "engine down")
    finally:
        configure_logging(Settings(env="test"))
    line = output.getvalue().strip()
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert "answering 503: engine down" in line
    assert "request_id=req-7" in line and "conversation_id=c-9" in line
