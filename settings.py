"""Infrastructure settings: one object, read from SWITCHBOARD_* environment variables.

Development defaults work out of the box; production (SWITCHBOARD_ENV=production) refuses them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent
DATA_DIR = PROJECT_ROOT / ".data"

DEV_ADMIN_TOKEN = "dev-admin-token"
DEV_APP_KEY = "dev-app-key"
DEV_SECRET_KEY = "dev-secret-key-change-me"

LogFormat = Literal["json", "console"]


# Read by `make run`'s launcher alone (a deployment starts its processes itself).
LAUNCHER_ONLY = frozenset({"api_host", "api_port", "ui_port", "temporal_db"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str = f"sqlite:///{DATA_DIR / 'switchboard.db'}"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "switchboard"
    policy: Path = PROJECT_ROOT / "config" / "policy.toml"

    admin_token: str = DEV_ADMIN_TOKEN
    app_key: str = DEV_APP_KEY
    # Signs visitor tokens (a visitor token is valid for one conversation only).
    secret_key: str = DEV_SECRET_KEY

    max_message_chars: int = 4000
    # Messages one sender may post in one conversation per minute (429 beyond), counted in the
    # database so the limit holds across API processes.
    max_messages_per_minute: int = Field(default=60, ge=1)
    # Concurrent streams of one visitor (429 beyond), counted per API process.
    max_streams_per_visitor: int = Field(default=3, ge=1)
    # The other limits at the door (api/limits.py; 413, or 429 with Retry-After beyond). The
    # body is counted as it arrives; requests, starts, streams and typing per API process; a
    # customer's conversations in the database.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_requests_per_minute_per_address: int = Field(default=1200, ge=1)
    max_requests_per_minute_per_caller: int = Field(default=600, ge=1)
    max_conversations_per_minute: int = Field(default=300, ge=1)
    max_conversations_per_customer_per_hour: int = Field(default=20, ge=1)
    max_streams_per_agent: int = Field(default=5, ge=1)
    max_streams_per_admin: int = Field(default=10, ge=1)
    max_typing_per_minute: int = Field(default=30, ge=1)
    # Where an API process serves /metrics for Prometheus ("" for nowhere): not the API's port.
    metrics_address: str = Field(default="127.0.0.1:9465", pattern=r"^$|^.+:[0-9]{1,5}$")
    # Streams re-read the event log this often when nothing woke them (events from other
    # processes); and end after max_age so clients reconnect (and resume) now and then.
    stream_poll_interval_seconds: float = 0.5
    stream_max_age_seconds: float = 900
    stream_keepalive_seconds: float = 15
    # Safety net for assignment triggers lost to a crash.
    reconcile_interval_seconds: float = 10.0
    # Logs: JSON lines or readable console lines; unset means JSON in production only.
    log_format: LogFormat | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Where the worker serves the Temporal SDK's metrics for Prometheus ("" turns them off).
    worker_metrics_address: str = "127.0.0.1:9464"
    # `make run` (launch.py): where it serves the API and the Temporal UI, and where its dev
    # server keeps the conversations' histories (the benchmarks start each run on a fresh one).
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    ui_port: int = Field(default=8233, ge=1, le=65535)
    temporal_db: Path = DATA_DIR / "temporal.db"

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> Settings:
        if self.env != "production":
            return self
        defaults = {
            "SWITCHBOARD_ADMIN_TOKEN": (self.admin_token, DEV_ADMIN_TOKEN),
            "SWITCHBOARD_APP_KEY": (self.app_key, DEV_APP_KEY),
            "SWITCHBOARD_SECRET_KEY": (self.secret_key, DEV_SECRET_KEY),
        }
        weak = [name for name, (value, dev) in defaults.items() if value == dev or len(value) < 16]
        if weak:
            raise ValueError(
                "production refuses development or short (<16 chars) secrets: " + ", ".join(weak)
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
