"""Structured logs: a real API process (uvicorn) writing JSON lines, each line of a request
carrying its request id and the conversation id from its path."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog

from api.credentials import visitor_token
from logging_setup import configure_logging, log_format
from settings import Settings
from store.db import Database
from tests.support.data import new_conversation
from tests.support.policy import production_settings
from tests.support.processes import Deployment, free_port


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[tuple[Deployment, str, str]]:
    """An API process writing JSON lines whose Temporal is unreachable, and an open
    conversation: (its deployment, the conversation's id, its visitor's token)."""
    database_url = f"sqlite:///{tmp_path / 'switchboard.db'}"
    db = Database(database_url)
    db.create_schema()
    with db.write() as session:
        conversation_id = new_conversation(session).id
    db.dispose()
    deployment = Deployment(
        directory=tmp_path,
        database_url=database_url,
        temporal_address=f"127.0.0.1:{free_port()}",  # nothing listens there
        workers=0,
        extra_env={"SWITCHBOARD_LOG_FORMAT": "json"},
        ready="/openapi.json",
    )
    try:
        yield deployment, conversation_id, visitor_token(deployment.settings, conversation_id)
    finally:
        deployment.stop(faults=True)  # (the 503 it answers is logged with its reason)


def test_api_logs_are_json_lines_with_request_and_conversation_ids(api_process) -> None:
    api, conversation_id, visitor = api_process
    with httpx.Client(base_url=api.urls[0], timeout=30) as http:
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
    api.stop(faults=True)
    lines = [json.loads(line) for line in api.log("api-0").splitlines()]  # uvicorn's too

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
    assert log_format(production_settings()) == "json"
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
