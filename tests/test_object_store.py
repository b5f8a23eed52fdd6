"""Where attachments live (media/storage.py): the same tests on a local directory and on an
S3-compatible server running in the tests' own process (moto's server mode), both reached
through the settings as a deployment reaches them; then what only one of them promises (files
written whole and private, the content type kept on S3), the bucket step docker-compose runs,
and SWITCHBOARD_ATTACHMENTS_URL's forms."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

import media.storage as storage
from media.storage import (
    LocalStore,
    ObjectStore,
    ObjectStoreUnavailable,
    S3Store,
    create_bucket,
    open_object_store,
)
from settings import DATA_DIR, PROJECT_ROOT, S3Location, Settings, parse_attachments_url
from tests.support.object_store import S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, s3_settings

PHOTO = bytes(range(256)) * 40  # every byte value: nothing is decoded or re-encoded on the way
UNSAFE_KEYS = [
    "",
    "../escaped.jpg",
    "conversations/../../escaped.jpg",
    "/etc/passwd",
    "a//b",
    "a/./b",
    "a/",
    ".hidden",
    "a\\b",
    "a b",
    "caf\u00e9.jpg",
    "x" * 513,
]


def a_bucket() -> str:
    return f"attachments-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """The store the settings open: a directory, or a fresh bucket (under a prefix) on S3."""
    if request.param == "directory":
        settings = Settings(env="test", attachments_url=f"file://{tmp_path}/attachments")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        settings = s3_settings(endpoint, a_bucket(), prefix="switchboard")
        s3 = open_object_store(settings)
        assert isinstance(s3, S3Store) and s3.create_bucket()
        return s3
    return open_object_store(settings)


def test_what_is_put_comes_back(store: ObjectStore) -> None:
    store.put("conversations/c1/a1.jpg", PHOTO, "image/jpeg")
    store.put("conversations/c1/a1-thumbnail.jpg", b"small", "image/jpeg")
    assert store.get("conversations/c1/a1.jpg") == PHOTO
    assert store.get("conversations/c1/a1-thumbnail.jpg") == b"small"
    store.put("empty.pdf", b"", "application/pdf")
    assert store.get("empty.pdf") == b""


def test_a_put_replaces_what_the_key_held(store: ObjectStore) -> None:
    store.put("a1.png", b"first", "image/png")
    store.put("a1.png", b"second, longer than the first", "image/png")
    assert store.get("a1.png") == b"second, longer than the first"
    store.put("a1.png", b"3", "image/png")
    assert store.get("a1.png") == b"3"


def test_a_missing_key_is_a_key_error(store: ObjectStore) -> None:
    with pytest.raises(KeyError):
        store.get("never-put.jpg")
    with pytest.raises(KeyError):
        store.get("never/put/under/here.jpg")
    store.put("deleted.jpg", PHOTO, "image/jpeg")
    store.delete(["deleted.jpg"])
    with pytest.raises(KeyError):
        store.get("deleted.jpg")


def test_many_keys_are_deleted_at_once(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # S3 takes 1000 keys a request: a batch of 3 makes 7 keys take three requests.
    monkeypatch.setattr(storage, "DELETE_BATCH", 3)
    erased = [f"conversations/c1/a{number}.jpg" for number in range(7)]
    for key in [*erased, "conversations/c2/kept.jpg"]:
        store.put(key, key.encode(), "image/jpeg")
    # Missing keys and a key twice are fine: erasure may run twice.
    store.delete([*erased, erased[0], "conversations/c1/never-put.jpg"])
    for key in erased:
        with pytest.raises(KeyError):
            store.get(key)
    assert store.get("conversations/c2/kept.jpg") == b"conversations/c2/kept.jpg"
    store.delete(erased)
    store.delete([])


def test_a_key_that_is_not_a_safe_relative_path_is_refused(store: ObjectStore) -> None:
    store.put("kept.jpg", PHOTO, "image/jpeg")
    for key in UNSAFE_KEYS:
        with pytest.raises(ValueError) as put:
            store.put(key, b"escaped", "image/jpeg")
        with pytest.raises(ValueError) as got:
            store.get(key)
        with pytest.raises(ValueError) as deleted:
            store.delete(["kept.jpg", key])  # every key refused before any is deleted
        for refused in (put, got, deleted):
            assert not key or key not in str(refused.value)  # a key may carry what it should not
    assert store.get("kept.jpg") == PHOTO


def test_a_directory_store_writes_only_under_its_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    for key in UNSAFE_KEYS:
        with pytest.raises(ValueError):
            store.put(key, b"escaped", "image/jpeg")
    assert sorted(path.name for path in tmp_path.rglob("*")) == []


def test_a_directory_store_writes_whole_private_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    store.put("conversations/c1/a1.jpg", PHOTO, "image/jpeg")
    path = tmp_path / "conversations" / "c1" / "a1.jpg"
    assert path.stat().st_mode & 0o777 == 0o600  # a customer's photo: this user's alone
    assert [entry.name for entry in path.parent.iterdir()] == ["a1.jpg"]

    # A crash before the rename: the old file stays whole, no part of the new one is left.
    def crash(source: str, destination: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "replace", crash)
    with pytest.raises(ObjectStoreUnavailable, match="No space left on device"):
        store.put("conversations/c1/a1.jpg", b"new bytes", "image/jpeg")
    assert store.get("conversations/c1/a1.jpg") == PHOTO
    assert [entry.name for entry in path.parent.iterdir()] == ["a1.jpg"]


def test_s3_keeps_the_content_type_under_the_prefix(s3_endpoint: str) -> None:
    bucket = a_bucket()
    settings = s3_settings(s3_endpoint, bucket, prefix="switchboard/attachments")
    create_bucket(settings)
    store = open_object_store(settings)
    assert isinstance(store, S3Store)
    store.put("a1.webp", PHOTO, "image/webp")
    store.put("a1.webp", PHOTO, "image/png")  # the bytes' kind as detected last time wins
    # Read back with a client of its own, not the store's.
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_ACCESS_KEY_ID,
        aws_secret_access_key=S3_SECRET_ACCESS_KEY,
    )
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["switchboard/attachments/a1.webp"]
    head = client.head_object(Bucket=bucket, Key="switchboard/attachments/a1.webp")
    assert head["ContentType"] == "image/png"
    assert head["ContentLength"] == len(PHOTO)


def test_s3_without_its_bucket_is_unavailable_and_says_no_secret(s3_endpoint: str) -> None:
    store = open_object_store(s3_settings(s3_endpoint, a_bucket()))
    for attempt in (
        lambda: store.put("a1.jpg", PHOTO, "image/jpeg"),
        lambda: store.get("a1.jpg"),  # not a missing key: a store that is not there
        lambda: store.delete(["a1.jpg"]),
    ):
        with pytest.raises(ObjectStoreUnavailable, match="NoSuchBucket") as unavailable:
            attempt()
        assert S3_SECRET_ACCESS_KEY not in str(unavailable.value)


def test_the_bucket_step_creates_the_bucket_once(s3_endpoint: str, tmp_path: Path) -> None:
    """`python -m media.storage create-bucket`, as docker-compose runs it: from the settings
    in its environment; a second run finds the bucket there."""
    bucket = a_bucket()
    environment = {
        **{
            name: value for name, value in os.environ.items() if not name.startswith("SWITCHBOARD_")
        },
        "SWITCHBOARD_ENV": "test",
        "SWITCHBOARD_ATTACHMENTS_URL": f"s3://{bucket}",
        "SWITCHBOARD_S3_ENDPOINT_URL": s3_endpoint,
        "SWITCHBOARD_S3_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
        "SWITCHBOARD_S3_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
    }
    command = [sys.executable, "-m", "media.storage", "create-bucket"]
    for expected in ("created", "ready"):
        done = subprocess.run(
            command, env=environment, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"bucket {bucket} {expected}"
        assert S3_SECRET_ACCESS_KEY not in done.stdout + done.stderr
    store = open_object_store(s3_settings(s3_endpoint, bucket))
    store.put("a1.jpg", PHOTO, "image/jpeg")
    assert store.get("a1.jpg") == PHOTO
    # With a directory, the step makes the directory.
    directory = Settings(env="test", attachments_url=f"file://{tmp_path}/deep/attachments")
    assert create_bucket(directory) == f"directory {tmp_path}/deep/attachments ready"
    assert (tmp_path / "deep" / "attachments").is_dir()


def test_the_bucket_step_gives_up_on_a_store_that_never_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    settings = s3_settings(endpoint, a_bucket())
    with pytest.raises(ObjectStoreUnavailable, match="create the bucket: EndpointConnectionError"):
        create_bucket(settings, attempts=2, pause=0)
    assert "attempt 1: create the bucket" in capsys.readouterr().err


def test_attachments_url_forms() -> None:
    assert parse_attachments_url("") == DATA_DIR / "attachments"
    assert Settings(env="test").attachments_location == DATA_DIR / "attachments"
    assert parse_attachments_url("file:///srv/attachments") == Path("/srv/attachments")
    assert parse_attachments_url("s3://switchboard-attachments") == S3Location(
        "switchboard-attachments", ""
    )
    assert parse_attachments_url("s3://a.b-c/eu/attachments/") == S3Location(
        "a.b-c", "eu/attachments/"
    )
    assert isinstance(open_object_store(Settings(env="test")), LocalStore)


@pytest.mark.parametrize(
    "url",
    [
        "relative/attachments",
        "/srv/attachments",  # a directory is a file:// URL
        "file://host/srv/attachments",
        "https://bucket.example.com/",
        "s3://",
        "s3://Attachments",
        "s3://a",
        "s3://attachments/../elsewhere",
        "s3://attachments/.hidden",
        "s3://attachments?region=eu",
        "s3://AKIAEXAMPLE:do-not-echo-me@attachments",
    ],
)
def test_a_malformed_attachments_url_is_refused_at_start(url: str) -> None:
    with pytest.raises(ValueError, match="SWITCHBOARD_ATTACHMENTS_URL") as refused:
        Settings(env="test", attachments_url=url)
    assert "do-not-echo-me" not in str(refused.value)


@pytest.mark.parametrize(
    "endpoint", ["object-store:8333", "ftp://object-store", "http://key:secret@object-store:8333"]
)
def test_an_endpoint_is_an_http_url_without_credentials(endpoint: str) -> None:
    with pytest.raises(ValueError, match="s3_endpoint_url") as refused:
        Settings(env="test", s3_endpoint_url=endpoint)
    assert "secret" not in str(refused.value)
    assert Settings(env="test", s3_endpoint_url="https://s3.eu.example.com").s3_endpoint_url


def test_s3_keys_are_both_set_or_neither_and_never_shown() -> None:
    with pytest.raises(ValueError, match="both") as refused:
        Settings(env="test", s3_secret_access_key="a-secret-never-shown")
    assert "a-secret-never-shown" not in str(refused.value)
    with pytest.raises(ValueError, match="both"):
        Settings(env="test", s3_access_key_id="an-access-key-id")
    settings = Settings(
        env="test", s3_access_key_id="an-access-key-id", s3_secret_access_key="a-secret-never-shown"
    )
    assert "a-secret-never-shown" not in repr(settings) + str(settings)
    assert settings.s3_secret_access_key.get_secret_value() == "a-secret-never-shown"
