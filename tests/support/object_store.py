"""Object stores for the tests: an S3-compatible server in the tests' own process (moto's server
mode on a free loopback port: no Docker, no download) and the settings that point at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

from settings import Settings

S3_ACCESS_KEY_ID = "test-access-key-id"
S3_SECRET_ACCESS_KEY = "test-secret-access-key-never-shown"


@contextmanager
def s3_server() -> Iterator[str]:
    """A running S3-compatible server: its endpoint URL. It keeps its objects in memory and
    takes any keys; each test makes a bucket of its own."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_settings(endpoint: str, bucket: str, prefix: str = "") -> Settings:
    """Settings that put attachments in `bucket` (under `prefix`) on the server at `endpoint`."""
    return Settings(
        env="test",
        attachments_url=f"s3://{bucket}/{prefix}",
        s3_endpoint_url=endpoint,
        s3_access_key_id=S3_ACCESS_KEY_ID,
        s3_secret_access_key=S3_SECRET_ACCESS_KEY,
    )
