"""Infrastructure settings: one object, read from SWITCHBOARD_* environment variables.

Development defaults work out of the box; production (SWITCHBOARD_ENV=production) refuses them.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent
DATA_DIR = PROJECT_ROOT / ".data"

DEV_ADMIN_TOKEN = "dev-admin-token"
DEV_APP_KEY = "dev-app-key"
DEV_SECRET_KEY = "dev-secret-key-change-me"
# The payload codec's keys are AES-256 keys: 32 random bytes, written in base64.
PAYLOAD_KEY_BYTES = 32
MAKE_PAYLOAD_KEY = "openssl rand -base64 32"

LogFormat = Literal["json", "console"]


# Read by `make run`'s launcher alone (a deployment starts its processes itself).
LAUNCHER_ONLY = frozenset({"api_host", "api_port", "ui_port", "temporal_db"})


class Settings(BaseSettings):
    # A refused setting is named in the error, never repeated: it may be a secret.
    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_", extra="ignore", hide_input_in_errors=True
    )

    env: Literal["development", "test", "production"] = "development"
    database_url: str = f"sqlite:///{DATA_DIR / 'switchboard.db'}"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "switchboard"
    policy: Path = PROJECT_ROOT / "config" / "policy.toml"

    admin_token: str = DEV_ADMIN_TOKEN
    app_key: str = DEV_APP_KEY
    # Signs visitor tokens (a visitor token is valid for one conversation only). Several keys,
    # comma-separated, while one is rotated out: the first signs, every one is still accepted.
    secret_key: str = DEV_SECRET_KEY
    # Encrypts what Temporal keeps of conversations (temporal_client.py): none in development,
    # required in production. Several keys, comma-separated, while one is rotated out: the
    # first encrypts, every one still decrypts.
    payload_key: str = ""

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
    # Webhooks (courier.py): how often a worker looks for deliveries due, how long it waits
    # for an endpoint's answer, and the first retry's wait (doubling from there, up to an hour
    # between attempts, until the policy's webhook_delivery.give_up_after).
    webhook_poll_interval_seconds: float = Field(default=1.0, ge=0.05, le=60)
    webhook_timeout_seconds: float = Field(default=10.0, ge=0.5, le=60)
    webhook_first_retry_seconds: float = Field(default=10.0, ge=0.05, le=3600)
    # How often the retention schedule erases expired transcripts (the policy says which).
    retention_interval_seconds: int = Field(default=3600, ge=60)
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
    # Where supervisors open the Temporal UI (the wallboard links to it; "" for no links):
    # `make run`'s by default, docker-compose's is http://<host>:8080.
    temporal_ui_url: str = Field(default="http://127.0.0.1:8233", pattern=r"^$|^https?://\S+$")
    # Browsers: the origins whose pages may call the API (comma-separated; none by default),
    # and how long a stream ticket (an EventSource's credential, in its URL) stays valid.
    cors_origins: Annotated[list[str], NoDecode] = []
    stream_ticket_seconds: int = Field(default=60, ge=1, le=300)
    # The codec endpoint (api/routes/codec.py): the largest page of payloads it takes, and how
    # long a codec ticket (the Temporal UI's credential, in its endpoint URL) lasts: a shift.
    max_codec_body_bytes: int = Field(default=2 * 1024 * 1024, ge=64 * 1024, le=16 * 1024 * 1024)
    codec_ticket_seconds: int = Field(default=8 * 3600, ge=60, le=24 * 3600)
    # Where attachments live (media/storage.py): "" for .data/attachments, file:///a/directory,
    # or s3://bucket/prefix on an S3-compatible object store. Its endpoint ("" for AWS itself)
    # and region; its keys, both or neither (neither: boto3's own chain, e.g. an instance role).
    attachments_url: str = ""
    s3_endpoint_url: str = Field(default="", pattern=r"^$|^https?://[^\s/@]+(/\S*)?$")
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _only_origins(cls, origins: list[str]) -> list[str]:
        """Each one exactly as a browser sends it in `Origin` (a trailing slash or a path would
        never match, silently); a wildcard is refused: this is an allow-list."""
        for origin in origins:
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.username is not None
                or origin != f"{parts.scheme}://{parts.netloc}"
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port], without a path"
                )
        return [origin.lower() for origin in origins]

    @field_validator("attachments_url")
    @classmethod
    def _attachments_url_is_a_place(cls, value: str) -> str:
        parse_attachments_url(value)  # refused at start, not at the first upload
        return value

    @property
    def attachments_location(self) -> Path | S3Location:
        """Where attachments live: a local directory, or a bucket and key prefix."""
        return parse_attachments_url(self.attachments_url)

    @property
    def secret_keys(self) -> list[str]:
        """The visitor tokens' keys, the one that signs first."""
        return [key.strip() for key in self.secret_key.split(",")]

    @field_validator("payload_key")
    @classmethod
    def _payload_keys_are_aes_keys(cls, value: str) -> str:
        _payload_keys(value)  # a malformed key is refused at start, not at the first payload
        return value

    @property
    def payload_keys(self) -> list[bytes]:
        """The payload codec's keys, the one that encrypts first; none: payloads are plain."""
        return _payload_keys(self.payload_key)

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> Settings:
        if not all(self.secret_keys):
            raise ValueError("SWITCHBOARD_SECRET_KEY has an empty key (a stray comma?)")
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key.get_secret_value()):
            raise ValueError(
                "set both SWITCHBOARD_S3_ACCESS_KEY_ID and SWITCHBOARD_S3_SECRET_ACCESS_KEY, "
                "or neither (boto3 then finds credentials itself)"
            )
        if self.env != "production":
            return self
        defaults = {
            "SWITCHBOARD_ADMIN_TOKEN": ([self.admin_token], DEV_ADMIN_TOKEN),
            "SWITCHBOARD_APP_KEY": ([self.app_key], DEV_APP_KEY),
            "SWITCHBOARD_SECRET_KEY": (self.secret_keys, DEV_SECRET_KEY),
        }
        weak = [
            name
            for name, (values, dev) in defaults.items()
            if any(value == dev or len(value) < 16 for value in values)
        ]
        if weak:
            raise ValueError(
                "production refuses development or short (<16 chars) secrets: " + ", ".join(weak)
            )
        # The same value twice would make the app's key (or the visitor tokens' key) an admin's.
        payload_keys = [key.strip() for key in self.payload_key.split(",") if key.strip()]
        secrets = [self.admin_token, self.app_key, *self.secret_keys, *payload_keys]
        if len(set(secrets)) < len(secrets):
            raise ValueError(
                "production needs a different value for each of "
                + ", ".join([*defaults, "SWITCHBOARD_PAYLOAD_KEY"])
            )
        if not self.payload_key:
            raise ValueError(
                "production needs SWITCHBOARD_PAYLOAD_KEY (what Temporal keeps is encrypted "
                f"with it): make one with `{MAKE_PAYLOAD_KEY}`"
            )
        return self


def _payload_keys(setting: str) -> list[bytes]:
    """SWITCHBOARD_PAYLOAD_KEY's keys as bytes (each in base64, standard or URL-safe), or the
    error that says which one is wrong, without repeating it."""
    keys = []
    for number, text in enumerate(setting.split(",") if setting else [], 1):
        if not text.strip():
            raise ValueError("SWITCHBOARD_PAYLOAD_KEY has an empty key (a stray comma?)")
        try:
            key = base64.b64decode(text.strip().translate(_URL_SAFE), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != PAYLOAD_KEY_BYTES:
            raise ValueError(
                f"SWITCHBOARD_PAYLOAD_KEY: key {number} is not {PAYLOAD_KEY_BYTES} bytes in "
                f"base64 (make one with `{MAKE_PAYLOAD_KEY}`)"
            )
        keys.append(key)
    return keys


_URL_SAFE = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class S3Location:
    """A bucket, and the prefix of every key there (empty, or ending in '/')."""

    bucket: str
    prefix: str


# S3's rules for a bucket name (the strictest of the S3-compatible stores').
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# One segment of an object key or of a key prefix: no '.' or '..', no hidden names, nothing a
# file system or an S3-compatible store reads in its own way.
KEY_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
ATTACHMENTS_URL_FORMS = "empty (.data/attachments), file:///a/directory or s3://bucket[/prefix]"


def parse_attachments_url(url: str) -> Path | S3Location:
    """SWITCHBOARD_ATTACHMENTS_URL as a directory or a bucket and prefix, or the error that
    says what is wrong with it (without repeating it: a URL may carry a credential)."""
    if not url:
        return DATA_DIR / "attachments"
    parts = urlsplit(url)
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(
            "SWITCHBOARD_ATTACHMENTS_URL takes no query, fragment or credentials (the keys are "
            f"SWITCHBOARD_S3_*): {ATTACHMENTS_URL_FORMS}"
        )
    if parts.scheme == "file" and not parts.netloc and parts.path.startswith("/"):
        return Path(parts.path)
    if parts.scheme == "s3":
        if not _BUCKET.fullmatch(parts.netloc):
            raise ValueError(
                "SWITCHBOARD_ATTACHMENTS_URL: the bucket is 3 to 63 lowercase letters, digits, "
                "dots and hyphens"
            )
        segments = [segment for segment in parts.path.split("/") if segment]
        if not all(KEY_SEGMENT.fullmatch(segment) for segment in segments):
            raise ValueError(
                "SWITCHBOARD_ATTACHMENTS_URL: the prefix is letters, digits, '.', '_' and '-' "
                "between slashes, no segment starting with '.'"
            )
        return S3Location(parts.netloc, "".join(f"{segment}/" for segment in segments))
    raise ValueError(f"SWITCHBOARD_ATTACHMENTS_URL must be {ATTACHMENTS_URL_FORMS}")


@lru_cache
def get_settings() -> Settings:
    return Settings()
