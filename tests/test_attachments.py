"""Attachments through the API with the real worker: a side uploads a file (what it is decided
by its bytes), sends it as a message, the other side reads the event and fetches the file with
its token or a browser's ticket; strangers, expired tickets and erased files get nothing."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image
from temporalio.testing import WorkflowEnvironment

from media.storage import create_bucket
from tests.support.api import ADMIN, ADMIN_TOKEN, AgentLogin, bearer
from tests.support.media import phone_exif, photo
from tests.support.object_store import s3_settings
from tests.support.policy import add_to_policy
from tests.support.system import StartSystem, System


def camera_photo(size: tuple[int, int] = (800, 600)) -> bytes:
    """A phone's photo: EXIF with the camera's make and where it was taken."""
    return photo("JPEG", size, exif=phone_exif())


def png() -> bytes:
    return photo("PNG", (40, 30))


async def upload(
    system: System,
    cid: str,
    token: str,
    data: bytes,
    *,
    name: str = "photo.jpg",
    declared: str = "image/jpeg",
) -> httpx.Response:
    return await system.http.post(
        f"/v1/conversations/{cid}/attachments",
        headers=bearer(token),
        files={"file": (name, data, declared)},
    )


async def send(
    system: System, cid: str, token: str, attachment_id: str, kind: str, caption: str = ""
) -> httpx.Response:
    body: dict[str, Any] = {
        "client_message_id": f"m-{attachment_id}",
        "type": kind,
        "attachment_id": attachment_id,
    }
    if caption:
        body["content"] = caption
    return await system.http.post(
        f"/v1/conversations/{cid}/messages", headers=bearer(token), json=body
    )


async def ticket_for(system: System, path: str, token: str) -> str:
    answer = await system.http.post(
        "/v1/stream-tickets", headers=bearer(token), json={"stream": path}
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["ticket"])


async def test_a_photo_goes_from_the_visitor_to_the_agent_without_where_it_was_taken(
    system: System,
) -> None:
    alice = AgentLogin(*await system.create_agent("alice"))
    cid, visitor = await system.start_conversation()
    await system.wait_for(cid, timeout=30, state="active", agent_id=alice.id)

    uploaded = await upload(system, cid, visitor, camera_photo(), name="IMG_0001.HEIC")
    assert uploaded.status_code == 201, uploaded.text
    attachment = uploaded.json()
    assert (attachment["kind"], attachment["content_type"]) == ("image", "image/jpeg")
    assert (attachment["width"], attachment["height"]) == (800, 600)
    assert attachment["thumbnail_url"] == attachment["url"] + "/thumbnail"
    sent = await send(system, cid, visitor, attachment["attachment_id"], "image", "The box")
    assert sent.status_code == 201, sent.text
    assert sent.json()["attachment"] == attachment
    assert sent.json()["content"] == "The box"

    # The agent reads it in the transcript: what it is and where, never the name it had.
    [event] = [e for e in await system.events(cid, alice.token) if e["type"] == "message.created"]
    assert event["data"]["attachment"] == attachment
    assert "IMG_0001" not in str(event)

    fetched = await system.http.get(attachment["url"], headers=bearer(alice.token))
    assert fetched.status_code == 200, fetched.text
    assert fetched.headers["content-type"] == "image/jpeg"
    assert fetched.headers["x-content-type-options"] == "nosniff"
    assert fetched.headers["content-disposition"].startswith("inline;")
    assert "IMG_0001" not in fetched.headers["content-disposition"]
    image = Image.open(io.BytesIO(fetched.content))
    assert image.size == (800, 600)
    assert dict(image.getexif()) == {}  # no make, no GPS
    thumbnail = await system.http.get(attachment["thumbnail_url"], headers=bearer(visitor))
    assert thumbnail.status_code == 200
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 320

    # A browser's <img>: a ticket in the URL, for this attachment alone.
    ticket = await ticket_for(system, attachment["url"], alice.token)
    by_ticket = await system.http.get(attachment["url"], params={"ticket": ticket})
    assert by_ticket.content == fetched.content
    small = await system.http.get(attachment["thumbnail_url"], params={"ticket": ticket})
    assert small.content == thumbnail.content

    # Nobody else: another conversation's visitor, another agent, a made-up id, a ticket for
    # something else or a forged one.
    other, stranger = await system.start_conversation("someone-else")
    bob = AgentLogin(*await system.create_agent("bob", online=False))
    for token in (stranger, bob.token):
        refused = await system.http.get(attachment["url"], headers=bearer(token))
        assert refused.status_code == 403, refused.text
        asked = await system.http.post(
            "/v1/stream-tickets", headers=bearer(token), json={"stream": attachment["url"]}
        )
        assert asked.status_code == 403, asked.text
    unknown = attachment["url"].rsplit("/", 1)[0] + "/att_" + "0" * 24
    assert (await system.http.get(unknown, headers=bearer(alice.token))).status_code == 404
    stream_ticket = await ticket_for(system, f"/v1/conversations/{cid}/stream", alice.token)
    for wrong in (stream_ticket, ticket[:-4] + "0000"):
        refused = await system.http.get(attachment["url"], params={"ticket": wrong})
        assert refused.status_code == 401, refused.text
    # Sent once: the same file is not sent again by anyone, nor into another conversation.
    again = await send(system, cid, visitor, attachment["attachment_id"], "image")
    assert again.status_code == 200  # the same client_message_id: the same message
    elsewhere = await send(system, other, stranger, attachment["attachment_id"], "image")
    assert elsewhere.status_code == 422, elsewhere.text
    assert elsewhere.json()["detail"] == "no such attachment in this conversation: upload it first"

    # The customer comes back later: the agent serving them opens the earlier photo, as they
    # read the earlier transcript.
    customer = (await system.conversation(cid, alice.token))["customer_id"]
    assert (await system.close(cid, alice.token)).status_code == 200
    again_cid, _ = await system.start_conversation(customer)
    await system.wait_for(again_cid, timeout=30, state="active", agent_id=alice.id)
    earlier = await system.http.get(attachment["url"], headers=bearer(alice.token))
    assert earlier.status_code == 200, earlier.text
    assert await ticket_for(system, attachment["url"], alice.token)


async def test_a_ticket_ends_with_its_time(system: System) -> None:
    alice = AgentLogin(*await system.create_agent("alice"))
    add_to_policy(system.policy_path, '[attachments]\nurl_ttl = "1s"\n')
    cid, visitor = await system.start_conversation()
    await system.wait_for(cid, timeout=30, state="active", agent_id=alice.id)
    attachment = (await upload(system, cid, visitor, png(), name="a.png")).json()
    ticket = await ticket_for(system, attachment["url"], visitor)
    await asyncio.sleep(2.1)  # a ticket's clock is the wall clock (seconds since the epoch)
    expired = await system.http.get(attachment["url"], params={"ticket": ticket})
    assert expired.status_code == 401, expired.text


@pytest.mark.parametrize(
    ("name", "declared", "data", "status", "kind"),
    [
        # The name and the declared type count for nothing: the bytes do.
        ("invoice.pdf", "application/pdf", png(), 201, "image"),
        ("photo.jpg", "image/jpeg", b"<!doctype html><script>alert(1)</script>", 415, None),
        ("photo.jpg", "image/jpeg", b"MZ\x90\x00" + b"\x00" * 200, 415, None),
    ],
)
async def test_what_a_file_is_comes_from_its_bytes(
    system: System, name: str, declared: str, data: bytes, status: int, kind: str | None
) -> None:
    cid, visitor = await system.start_conversation()
    answer = await upload(system, cid, visitor, data, name=name, declared=declared)
    assert answer.status_code == status, answer.text
    if kind is not None:
        assert answer.json()["kind"] == kind
    else:
        assert answer.json()["detail"]  # a sentence for the visitor


async def test_limits_and_who_may_send_what(system: System) -> None:
    add_to_policy(system.policy_path, "[attachments]\nmax_image_bytes = 20000\n")
    alice = AgentLogin(*await system.create_agent("alice"))
    cid, visitor = await system.start_conversation()
    await system.wait_for(cid, timeout=30, state="active", agent_id=alice.id)

    too_large = await upload(system, cid, visitor, camera_photo((1600, 1200)))
    assert too_large.status_code == 413, too_large.text
    assert "20000" in too_large.json()["detail"] or "KiB" in too_large.json()["detail"]

    mine = (await upload(system, cid, visitor, png())).json()
    # The agent may not send the visitor's file; nobody sends an image as a video; a message of
    # a file's type needs its file; a text carries none.
    theirs = await send(system, cid, alice.token, mine["attachment_id"], "image")
    assert theirs.status_code == 422, theirs.text
    wrong_kind = await send(system, cid, visitor, mine["attachment_id"], "video")
    assert wrong_kind.status_code == 422, wrong_kind.text
    for body in (
        {"client_message_id": "link", "type": "image", "content": "https://x.example/a.png"},
        {
            "client_message_id": "text-with-file",
            "content": "hi",
            "attachment_id": "att_" + "1" * 24,
        },
    ):
        refused = await system.http.post(
            f"/v1/conversations/{cid}/messages", headers=bearer(visitor), json=body
        )
        assert refused.status_code == 422, refused.text
    # A supervisor, an admin or the app reads but never uploads.
    sue = AgentLogin(*await system.create_agent("sue", role="supervisor", online=False))
    for token in (sue.token, ADMIN_TOKEN):
        assert (await upload(system, cid, token, png())).status_code == 403

    closed = await system.close(cid, alice.token)
    assert closed.status_code == 200, closed.text
    late = await upload(system, cid, visitor, png())
    assert late.status_code == 409, late.text


@pytest.fixture(params=["directory", "s3"])
async def stored_system(
    request: pytest.FixtureRequest,
    time_env: WorkflowEnvironment,
    make_system: StartSystem,
    s3_endpoint: str,
) -> System:
    """The system with its files in a directory (the embedded default) or in an S3-compatible
    store (production's), a bucket of its own."""
    if request.param == "directory":
        return await make_system(time_env)
    bucket = f"attachments-{uuid.uuid4().hex[:12]}"
    objects = s3_settings(s3_endpoint, bucket, prefix="switchboard")
    create_bucket(objects, attempts=1)
    return await make_system(time_env, objects=objects)


async def test_erasing_the_customer_deletes_their_files(stored_system: System) -> None:
    system = stored_system
    alice = AgentLogin(*await system.create_agent("alice"))
    cid, visitor = await system.start_conversation("cust-erase")
    await system.wait_for(cid, timeout=30, state="active", agent_id=alice.id)
    attachment = (await upload(system, cid, visitor, camera_photo())).json()
    sent = await send(system, cid, visitor, attachment["attachment_id"], "image")
    assert sent.status_code == 201, sent.text
    unsent = (await upload(system, cid, visitor, png())).json()
    objects = system.app.state.services.objects
    keys = [
        f"conversations/{cid}/{attachment['attachment_id']}.jpg",
        f"conversations/{cid}/{attachment['attachment_id']}.thumbnail.jpg",
        f"conversations/{cid}/{unsent['attachment_id']}.png",
        f"conversations/{cid}/{unsent['attachment_id']}.thumbnail.jpg",
    ]
    assert all(objects.get(key) for key in keys)

    erased = await system.http.post("/v1/customers/cust-erase/erase", headers=ADMIN)
    assert erased.status_code == 200, erased.text
    for key in keys:
        with pytest.raises(KeyError):
            objects.get(key)
    for gone in (attachment["url"], attachment["thumbnail_url"], unsent["url"]):
        assert (await system.http.get(gone, headers=ADMIN)).status_code == 404
    [event] = [e for e in await system.events(cid) if e["type"] == "message.created"]
    assert event["data"]["attachment"]["kind"] == "image"  # what it was stays; the file is gone
