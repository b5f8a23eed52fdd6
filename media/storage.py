"""Where attachments live: a directory (development, one machine) or an S3-compatible object
store (production), behind one small interface (`ObjectStore`).

Keys are ours, made of the attachment's ids, never an uploader's file name: segments of
letters, digits, '.', '_' and '-' between slashes, none starting with '.'. Both stores refuse
any other key alike (ValueError, naming no key), so a key that works in development works in
production. A store that cannot be reached or written raises `ObjectStoreUnavailable` (a 503
and a retry for the caller); its message names the operation and the store's error code, never
a credential. The stores are synchronous (file I/O, boto3): async code calls them in a thread.

`python -m media.storage create-bucket` creates the bucket that SWITCHBOARD_ATTACHMENTS_URL
names when it is missing (docker-compose's one-shot step), or the directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from settings import KEY_SEGMENT, S3Location, Settings, get_settings

MAX_KEY_CHARS = 512
# S3's DeleteObjects takes at most this many keys in one request.
DELETE_BATCH = 1000
# What S3-compatible stores answer for a missing object, and for a missing bucket (HEAD
# requests have no body, so no code but the status).
_NO_SUCH_KEY = frozenset({"NoSuchKey", "NotFound", "404"})
_NO_SUCH_BUCKET = frozenset({"NoSuchBucket", "NotFound", "404"})


class ObjectStoreUnavailable(Exception):
    """The store could not be read or written (disk, network, credentials, a missing bucket)."""


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...
    def get(self, key: str) -> bytes: ...  # KeyError when missing
    def delete(self, keys: Sequence[str]) -> None: ...  # missing keys are fine


def check_key(key: str) -> str:
    """The key itself when it is one we make; else ValueError (which does not repeat it)."""
    if len(key) > MAX_KEY_CHARS or not all(map(KEY_SEGMENT.fullmatch, key.split("/"))):
        raise ValueError(
            "an object key is segments of letters, digits, '.', '_' and '-' between slashes, "
            f"none starting with '.', at most {MAX_KEY_CHARS} characters"
        )
    return key


def open_object_store(settings: Settings) -> ObjectStore:
    location = settings.attachments_location
    if isinstance(location, S3Location):
        return S3Store(s3_client(settings), location)
    return LocalStore(location)


class LocalStore:
    """A directory, each object a file at its key. A file is written beside its place and
    renamed over it, so a reader gets the old bytes or the new ones, never a part. The content
    type is not kept: the attachment's row has it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A hidden name no key can have; readable by this user only.
            handle, part = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(part, path)
            except BaseException:
                Path(part).unlink(missing_ok=True)
                raise
            _sync_directory(path.parent)  # the rename itself survives a crash
        except OSError as error:
            raise _unavailable("put", error) from error

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyError(key) from None
        except OSError as error:
            raise _unavailable("get", error) from error

    def delete(self, keys: Sequence[str]) -> None:
        paths = [self._path(key) for key in keys]  # every key checked before any is deleted
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except NotADirectoryError:
                continue  # a file where a directory of the key would be: the key is missing
            except OSError as error:
                raise _unavailable("delete", error) from error


class S3Store:
    """A bucket (and a key prefix) on S3 or an S3-compatible store, through boto3. The content
    type is kept on the object."""

    def __init__(self, client: BaseClient, location: S3Location) -> None:
        self.client = client
        self.bucket = location.bucket
        self.prefix = location.prefix

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._call(
            "put",
            self.client.put_object,
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ContentType=content_type,
        )

    def get(self, key: str) -> bytes:
        object_key = self._key(key)
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=object_key)["Body"].read()
        except ClientError as error:
            if _code(error) in _NO_SUCH_KEY:
                raise KeyError(key) from None
            raise _unavailable("get", error) from error
        except BotoCoreError as error:
            raise _unavailable("get", error) from error
        return body

    def delete(self, keys: Sequence[str]) -> None:
        object_keys = list(dict.fromkeys(self._key(key) for key in keys))
        for start in range(0, len(object_keys), DELETE_BATCH):
            batch = object_keys[start : start + DELETE_BATCH]
            answer = self._call(
                "delete",
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            # A missing key counts as deleted; what is listed here failed.
            failed = answer.get("Errors") or []
            if failed:
                raise ObjectStoreUnavailable(
                    f"delete: {len(failed)} of {len(batch)} objects were not deleted "
                    f"(the object store answered {failed[0].get('Code', 'an error')})"
                )

    def create_bucket(self) -> bool:
        """Create the bucket when it is missing; whether this call created it."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as error:
            if _code(error) not in _NO_SUCH_BUCKET:
                raise _unavailable("create the bucket", error) from error
        except BotoCoreError as error:
            raise _unavailable("create the bucket", error) from error
        arguments: dict[str, Any] = {"Bucket": self.bucket}
        region = self.client.meta.region_name
        if region and region != "us-east-1":  # S3 refuses us-east-1 as a location constraint
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**arguments)
        except ClientError as error:
            if _code(error) == "BucketAlreadyOwnedByYou":  # another step created it meanwhile
                return False
            raise _unavailable("create the bucket", error) from error
        except BotoCoreError as error:
            raise _unavailable("create the bucket", error) from error
        return True

    def _call(self, operation: str, method: Callable[..., Any], **arguments: Any) -> Any:
        try:
            return method(**arguments)
        except (ClientError, BotoCoreError) as error:
            raise _unavailable(operation, error) from error


def s3_client(settings: Settings) -> BaseClient:
    """A client for the settings' store: its own session (boto3's default one is not for
    threads), the keys given or boto3's own chain, retries with backoff, timeouts."""
    endpoint = settings.s3_endpoint_url or None
    compatible: dict[str, Any] = {}
    if endpoint:
        # Not AWS: buckets by path, not by DNS name, and checksums only where S3's API
        # requires them (not every S3-compatible store checks the newer ones).
        compatible = {
            "s3": {"addressing_style": "path"},
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }
    config = Config(
        region_name=settings.s3_region,
        connect_timeout=5,
        read_timeout=60,
        retries={"mode": "standard", "total_max_attempts": 3},
        **compatible,
    )
    secret = settings.s3_secret_access_key.get_secret_value()
    client: BaseClient = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=settings.s3_access_key_id or None,
        aws_secret_access_key=secret or None,
        config=config,
    )
    return client


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _unavailable(operation: str, error: Exception) -> ObjectStoreUnavailable:
    if isinstance(error, ClientError):
        reason = f"the object store answered {_code(error) or 'an error'}"
    elif isinstance(error, OSError) and error.strerror:
        reason = error.strerror  # not str(error): that repeats the path
    else:
        reason = type(error).__name__
    return ObjectStoreUnavailable(f"{operation}: {reason}")


def _sync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def create_bucket(settings: Settings, *, attempts: int = 30, pause: float = 2.0) -> str:
    """Make the place SWITCHBOARD_ATTACHMENTS_URL names ready, retrying while the store is not
    (it may answer a moment after its port opens); a line saying what is ready."""
    location = settings.attachments_location
    if not isinstance(location, S3Location):
        location.mkdir(parents=True, exist_ok=True)
        return f"directory {location} ready"
    store = S3Store(s3_client(settings), location)
    attempt = 1
    while True:
        try:
            created = store.create_bucket()
            break
        except ObjectStoreUnavailable as error:
            if attempt >= attempts:
                raise
            print(f"attempt {attempt}: {error}", file=sys.stderr)
            time.sleep(pause)
            attempt += 1
    return f"bucket {location.bucket} {'created' if created else 'ready'}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m media.storage", description="Prepare where attachments live."
    )
    parser.add_argument(
        "command",
        choices=["create-bucket"],
        help="create the bucket (or the directory) of SWITCHBOARD_ATTACHMENTS_URL if missing",
    )
    parser.parse_args(argv)
    try:
        print(create_bucket(get_settings()))
    except ObjectStoreUnavailable as error:
        raise SystemExit(f"gave up: {error}") from None


if __name__ == "__main__":
    main()
