"""Webhooks (README.md, "Webhooks"): the policy's [[webhooks]], the outbox written with each
event, and the worker's courier delivering to real local receivers, signed, in order, again
after failures and after a worker's SIGKILL; the offline push (visitor.unread); the admin's
list and redelivery."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from courier import WebhookCourier
from domain.policy import PolicyError, PolicySource, load_policy
from domain.types import EventType, Role
from store import tickets
from store.db import Database
from store.erasure import ERASED, erase_conversation
from store.events import append_event
from store.models import Conversation, WebhookDelivery, utcnow
from store.webhooks import (
    claim_due,
    delivery_counts,
    enqueue,
    list_deliveries,
    record_delivered,
    route_webhooks,
)
from tests.support.api import ADMIN_TOKEN, ApiClient, bearer, eventually, expect
from tests.support.data import new_conversation
from tests.support.processes import Deployment
from tests.support.webhooks import CALM_TIMEOUTS, FAST_DELIVERY, Receiver, endpoint_toml

SECRET = "the-crm-webhook-secret"
STAFF_SECRET = "the-service-desk-secret"
PUSH_SECRET = "the-push-service-secret"
URL = "https://crm.example.com/switchboard"


def _policy(tmp_path: Path, toml: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(toml)
    return path


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        (endpoint_toml("crm", "ftp://crm.example.com", SECRET, ["*"]), "webhooks.0.url"),
        (endpoint_toml("crm", URL, "short", ["*"]), "webhooks.0.secret"),
        (endpoint_toml("crm", URL, SECRET, []), "webhooks.0.event_types"),
        (
            endpoint_toml("crm", URL, SECRET, ["message.created", "message.deleted"]),
            "webhooks.0.event_types.1: unknown event type 'message.deleted'",
        ),
        (endpoint_toml("crm", URL, SECRET, ["parcel.*"]), "webhooks.0.event_types.0"),
        (endpoint_toml("CRM!", URL, SECRET, ["*"]), "webhooks.0.name"),
        (
            endpoint_toml("crm", URL, SECRET, ["*"]) + endpoint_toml("crm", URL, SECRET, ["*"]),
            "webhooks.1.name: duplicate endpoint 'crm'",
        ),
        ('[webhook_delivery]\nunread_after = "0s"\n', "webhook_delivery.unread_after"),
    ],
)
def test_a_bad_webhook_is_refused_naming_the_key(tmp_path: Path, toml: str, named: str) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(_policy(tmp_path, toml))
    assert named in str(error.value)


def test_a_refused_secret_is_named_never_repeated(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(_policy(tmp_path, endpoint_toml("crm", URL, "a-leaked-one", ["*"])))
    assert "webhooks.0.secret" in str(error.value)
    assert "a-leaked-one" not in str(error.value)


def test_endpoints_take_exact_types_prefixes_tickets_and_the_offline_push(
    tmp_path: Path,
) -> None:
    toml = endpoint_toml(
        "crm", URL, SECRET, ["conversation.*", "message.created", "ticket.*", "visitor.unread"]
    )
    (endpoint,) = load_policy(_policy(tmp_path, toml)).webhooks
    assert [endpoint.wants(kind) for kind in ("conversation.closed", "message.created")] == [
        True,
        True,
    ]
    assert endpoint.wants("ticket.created") and endpoint.wants("visitor.unread")
    assert not endpoint.wants("message.read") and not endpoint.wants("note.created")
    # The secret is never shown where the policy is (GET /v1/admin/policy).
    assert SECRET not in str(load_policy(_policy(tmp_path, toml)).model_dump(mode="json"))


def _route(db: Database, tmp_path: Path, toml: str) -> None:
    policy = load_policy(_policy(tmp_path, toml))
    route_webhooks(db, lambda: policy)


def _owed(db: Database) -> list[tuple[str, int, str, dict[str, Any]]]:
    with db.read() as session:
        rows = session.execute(
            sa.select(WebhookDelivery).order_by(col(WebhookDelivery.id))
        ).scalars()
        return [(row.endpoint, row.seq, row.type, row.data) for row in rows]


def test_the_outbox_is_written_in_the_events_transaction_for_the_endpoints_that_asked(
    db: Database, tmp_path: Path
) -> None:
    with db.write() as session:
        conversation_id = new_conversation(session).id
    with db.write() as session:  # no endpoint routed yet: nothing owed
        append_event(session, conversation_id=conversation_id, type=EventType.ROUTED, data={})
    assert _owed(db) == []
    _route(
        db,
        tmp_path,
        endpoint_toml("crm", URL, SECRET, ["note.created", "conversation.*"])
        + endpoint_toml("desk", URL, STAFF_SECRET, ["*"], staff=True),
    )
    with pytest.raises(RuntimeError), db.write() as session:
        append_event(session, conversation_id=conversation_id, type=EventType.ROUTED, data={})
        raise RuntimeError("rolled back")  # the event and its deliveries go together
    with db.write() as session:
        append_event(
            session,
            conversation_id=conversation_id,
            type=EventType.NOTE_CREATED,
            data={"content": "Prefers a refund"},
            audience="staff",
        )
        append_event(
            session,
            conversation_id=conversation_id,
            type=EventType.ASSIGNED,
            data={"agent_name": "Alice"},
            staff_data={"agent_id": "alice"},
        )
        append_event(session, conversation_id=conversation_id, type="message.read", data={})
    assert _owed(db) == [
        ("desk", 2, "note.created", {"content": "Prefers a refund"}),
        ("crm", 3, "conversation.assigned", {"agent_name": "Alice"}),
        ("desk", 3, "conversation.assigned", {"agent_name": "Alice", "agent_id": "alice"}),
        ("desk", 4, "message.read", {}),
    ]


def test_a_tickets_events_are_owed_to_the_endpoints_that_asked_internal_ones_to_staff_alone(
    db: Database, tmp_path: Path
) -> None:
    _route(
        db,
        tmp_path,
        endpoint_toml("crm", URL, SECRET, ["ticket.*"])
        + endpoint_toml("desk", URL, STAFF_SECRET, ["ticket.commented"], staff=True)
        + endpoint_toml("chat", URL, SECRET, ["conversation.*"]),
    )
    policy = load_policy(_policy(tmp_path, ""))
    agent = tickets.Author(Role.ADMIN, "admin")
    ticket = tickets.create_ticket(
        db,
        policy=policy,
        new=tickets.NewTicket(subject="Refund to approve", customer_id="c-1"),
        author=agent,
    )
    assert ticket.id is not None
    tickets.add_comment(db, ticket_id=ticket.id, author=agent, content="Approved", public=True)
    tickets.add_comment(db, ticket_id=ticket.id, author=agent, content="VIP", public=False)
    with db.read() as session:
        owed = [
            (row.endpoint, row.subject, row.subject_id, row.seq, row.type, row.data)
            for row in session.execute(
                sa.select(WebhookDelivery).order_by(col(WebhookDelivery.id))
            ).scalars()
        ]
    subject = ("ticket", str(ticket.id))
    assert [(e, (s, i), t) for e, s, i, _seq, t, _data in owed] == [
        ("crm", subject, "ticket.created"),
        ("crm", subject, "ticket.commented"),
        ("desk", subject, "ticket.commented"),
        ("desk", subject, "ticket.commented"),  # the internal one: staff's alone
    ]
    assert [seq for *_rest, seq, _type, _data in owed] == [1, 2, 2, 3]
    assert all("Approved" not in str(data) and "VIP" not in str(data) for *_r, data in owed)


def test_a_pending_delivery_holds_back_its_subjects_later_ones_and_no_other_subjects(
    db: Database, tmp_path: Path
) -> None:
    _route(db, tmp_path, endpoint_toml("crm", URL, SECRET, ["*"]))
    with db.write() as session:
        for subject_id in ("t_1", "t_2"):
            for seq in (1, 2):
                enqueue(
                    session,
                    subject="ticket",
                    subject_id=subject_id,
                    seq=seq,
                    type="ticket.updated",
                    visitor_data={"status": "open"},
                )
    hold = {"endpoints": ["crm"], "limit": 10}
    first = claim_due(db, hold=timedelta(minutes=1), **hold)
    assert [(item.subject_id, item.seq) for item in first] == [("t_1", 1), ("t_2", 1)]
    # Claimed: nobody else takes them, and their subjects' next ones wait for them.
    assert claim_due(db, hold=timedelta(minutes=1), **hold) == []
    record_delivered(db, first[0].id)
    after = claim_due(db, hold=timedelta(minutes=1), **hold)
    assert [(item.subject_id, item.seq) for item in after] == [("t_1", 2)]


def test_an_erased_conversations_owed_deliveries_carry_no_text(
    db: Database, tmp_path: Path
) -> None:
    _route(db, tmp_path, endpoint_toml("desk", URL, STAFF_SECRET, ["*"], staff=True))
    with db.write() as session:
        conversation_id = new_conversation(session, state="closed").id
        append_event(
            session,
            conversation_id=conversation_id,
            type=EventType.NOTE_CREATED,
            data={"content": "Lives at 12 Rose Lane"},
            audience="staff",
        )
    erase_conversation(db, conversation_id=conversation_id)
    assert _owed(db) == [("desk", 1, "note.created", {"content": ERASED})]


async def test_the_courier_posts_signed_bodies_and_gives_up_after_give_up_after(
    db: Database, tmp_path: Path
) -> None:
    receiver = Receiver(SECRET, failures=1_000)  # its first delivery never goes through
    with receiver.running():
        path = _policy(tmp_path, receiver.toml("crm", ["*"]))
        _route(db, tmp_path, path.read_text())
        courier = WebhookCourier(
            db=db, policy=PolicySource(path), poll_interval=0.1, timeout=2, first_retry=600
        )
        async with httpx.AsyncClient(timeout=2) as http:
            for subject_id, age in (("t_old", timedelta(days=2)), ("t_new", timedelta(0))):
                with db.write() as session:
                    enqueue(
                        session,
                        subject="ticket",
                        subject_id=subject_id,
                        seq=1,
                        type="ticket.created",
                        visitor_data={"status": "open"},
                        at=utcnow() - age,
                    )
                assert await courier.deliver_due(http) == 1
            assert await courier.deliver_due(http) == 0
        listed = list_deliveries(db, status=None, endpoint="crm", after=0, limit=10)
        deliveries = {item.subject_id: item for item in listed}
    old, new = deliveries["t_old"], deliveries["t_new"]
    # Posted as documented, and signed: the first (two days old) refused once and given up.
    assert [item.body["ticket_id"] for item in receiver.received] == ["t_old", "t_new"]
    assert all(item.verified for item in receiver.received)
    assert receiver.received[1].body == {
        "id": str(new.id),
        "type": "ticket.created",
        "ticket_id": "t_new",
        "seq": 1,
        "at": new.at.isoformat().replace("+00:00", "Z"),
        "data": {"status": "open"},
    }
    assert (old.status, old.attempts, old.last_error) == ("failed", 1, "HTTP 503")
    assert (new.status, new.attempts, new.last_error) == ("delivered", 1, None)
    assert delivery_counts(db) == {"pending": 0, "failed": 1}


# --- against a running system -------------------------------------------------------------


async def _delivered_in_full(
    api: ApiClient, cid: str, token: str | None, receiver: Receiver
) -> list[dict[str, Any]]:
    """The conversation's events as `token`'s holder reads them, once `receiver` has each."""

    async def caught_up() -> list[dict[str, Any]] | None:
        log = await api.events(cid, token)
        got = [body["seq"] for body in receiver.events() if body["type"] != "visitor.unread"]
        return log if got == [event["seq"] for event in log] else None

    return await eventually(caught_up, timeout=60, what=f"{cid}'s events at a receiver")


def _in_order(receiver: Receiver) -> list[dict[str, Any]]:
    """The conversation's events the receiver accepted, each once (a delivery sent again
    counted once, as a receiver dedups), after checking they came in seq order and every
    request's signature verified with the documented recipe."""
    bodies = [body for body in receiver.events() if body["type"] != "visitor.unread"]
    seqs = [body["seq"] for body in bodies]
    assert seqs == sorted(set(seqs)), f"out of order or repeated: {seqs}"
    assert receiver.received and all(item.verified for item in receiver.received)
    return bodies


def _as_posted(log: list[dict[str, Any]], bodies: list[dict[str, Any]], cid: str) -> list[Any]:
    """The bodies that deliveries of `log`'s events post (with the ids `bodies` came with)."""
    return [
        {
            "id": body["id"],
            "type": event["type"],
            "conversation_id": cid,
            "seq": event["seq"],
            "at": event["at"],
            "data": event["data"],
        }
        for event, body in zip(log, bodies, strict=True)
    ]


@pytest.mark.e2e
async def test_a_whole_conversation_reaches_each_endpoint_once_in_order_as_its_audience_reads_it(
    empty_db: Database, deploy: Callable[..., Deployment]
) -> None:
    crm = Receiver(SECRET, failures=3)  # fails the first delivery three times
    desk = Receiver(STAFF_SECRET)
    push = Receiver(PUSH_SECRET)
    with crm.running(), desk.running(), push.running():
        endpoints = (
            crm.toml("crm", ["*"])
            + desk.toml("desk", ["*"], staff=True)
            + push.toml("push", ["visitor.unread"])
        )
        deployment = deploy(
            empty_db.url, timeouts=CALM_TIMEOUTS, routing=endpoints, extra_env=FAST_DELIVERY
        )
        async with deployment.client() as api:
            alice = await api.create_agent("alice")
            cid, visitor = await api.start_conversation()
            await api.wait_for_state(cid, None, "active")
            asked = await api.say(cid, visitor, "Where is my parcel? 我的快递")
            answered = await api.say(cid, alice.token, "It left the warehouse today.")
            expect(await api.add_note(cid, "Prefers a refund", alice.token), 201)
            expect(await api.close(cid, alice.token), 200)
            await api.wait_for_event(cid, None, EventType.RATING_INVITED)
            expect(await api.rate(cid, visitor, 5, comment="Quick, thanks"), 201)
            await api.wait_for_event(cid, None, EventType.RATING_SUBMITTED)

            staff_log = await _delivered_in_full(api, cid, None, desk)
            visitor_log = await _delivered_in_full(api, cid, visitor, crm)
            # Each endpoint: every event, in seq order, signed, as its audience reads it.
            staff_bodies, visitor_bodies = _in_order(desk), _in_order(crm)
            assert staff_bodies == _as_posted(staff_log, staff_bodies, cid)
            assert visitor_bodies == _as_posted(visitor_log, visitor_bodies, cid)
            assert EventType.NOTE_CREATED in [body["type"] for body in staff_bodies]
            assert EventType.NOTE_CREATED not in [body["type"] for body in visitor_bodies]
            assert "Prefers a refund" not in str([item.body for item in crm.received])
            assert not any("sender_id" in body["data"] for body in visitor_bodies)
            # Accepted once per delivery id: the failing receiver got its first delivery a
            # fourth time, with the same id, and nothing later before it.
            for receiver in (crm, desk, push):
                ids = [item.delivery_id for item in receiver.accepted()]
                assert len(ids) == len(set(ids)), "a delivery was sent again after a 2xx"
            first = crm.received[0]
            tries = [item for item in crm.received if item.delivery_id == first.delivery_id]
            assert [item.answered for item in tries] == [503, 503, 503, 200]
            assert first.body["seq"] == visitor_log[0]["seq"]
            before = crm.received[: crm.received.index(tries[-1])]
            assert {item.body["type"] for item in before if item not in tries} <= {
                "visitor.unread"  # unordered: it waits for no earlier delivery
            }

            # The offline push: the agent's answer to a visitor with no stream open, once.
            async def pushed() -> list[dict[str, Any]]:
                return push.events()

            (unread,) = await eventually(pushed, timeout=30, what="the push")
            assert (unread["type"], unread["conversation_id"], unread["seq"]) == (
                "visitor.unread",
                cid,
                answered,
            )
            assert unread["data"]["preview"] == "It left the warehouse today."
            assert unread["data"]["customer_id"] == (await api.conversation(cid))["customer_id"]
            assert asked != answered

            await _ops_see_and_redeliver(api, cid, crm, desk)
        # An endpoint's URL may carry its own credentials: no log line shows it.
        for receiver in (crm, desk, push):
            assert receiver.url.partition("?")[0] not in deployment.log("worker-0")


async def _ops_see_and_redeliver(api: ApiClient, cid: str, crm: Receiver, desk: Receiver) -> None:
    listed = expect(
        await api.http.get(
            "/v1/admin/webhooks/deliveries",
            params={"endpoint": "crm", "status": "delivered", "limit": 500},
            headers=api._as(None),
        ),
        200,
    )
    crm_ids = {int(body["id"]) for body in crm.events()}
    assert {item["id"] for item in listed["deliveries"]} == crm_ids
    first = min(listed["deliveries"], key=lambda item: item["id"])
    assert (first["attempts"], first["last_error"], first["subject_id"]) == (4, None, cid)
    failing = expect(
        await api.http.get(
            "/v1/admin/webhooks/deliveries", params={"status": "failed"}, headers=api._as(None)
        ),
        200,
    )
    assert failing == {"deliveries": [], "has_more": False}
    assert (await api.monitor())["webhooks"] == {"pending": 0, "failed": 0}

    again = desk.events()[2]
    sent = await api.http.post(
        f"/v1/admin/webhooks/deliveries/{again['id']}/redeliver", headers=api._as(None)
    )
    assert expect(sent, 200)["status"] == "pending"

    async def resent() -> bool:
        return [item.delivery_id for item in desk.accepted()].count(again["id"]) == 2

    await eventually(resent, timeout=30, what="the redelivery")
    assert desk.accepted()[-1].body == again  # the same delivery: its id, its body

    for params in ({"status": "lost"}, {"limit": 0}, {"limit": 501}, {"endpoint": "CRM!"}):
        refused = await api.http.get(
            "/v1/admin/webhooks/deliveries", params=params, headers=api._as(None)
        )
        assert refused.status_code == 422, params
    unknown = await api.http.post(
        "/v1/admin/webhooks/deliveries/2147483647/redeliver", headers=api._as(None)
    )
    assert unknown.status_code == 404


@pytest.mark.e2e
@pytest.mark.postgres
async def test_a_worker_killed_mid_backlog_loses_nothing_and_resends_with_the_same_id(
    postgres_db: Database, deploy: Callable[..., Deployment]
) -> None:
    # On PostgreSQL, where claims race for real (the full conversation runs on both).
    # Each of its first three answers takes a second: the worker is killed while it waits.
    desk = Receiver(STAFF_SECRET, delay=1.0, slow=3)
    with desk.running():
        deployment = deploy(
            postgres_db.url,
            timeouts=CALM_TIMEOUTS,
            routing=desk.toml("desk", ["*"], staff=True),
            extra_env=FAST_DELIVERY,
        )
        try:
            async with deployment.client() as api:
                alice = await api.create_agent("alice")
                cid, visitor = await api.start_conversation()
                await api.wait_for_state(cid, None, "active")
                for number in range(4):
                    await api.say(cid, visitor, f"Question {number}")

                async def third_arrived() -> bool:
                    return len(desk.received) >= 3

                await eventually(third_arrived, timeout=30, what="three deliveries")
                deployment.kill("worker-0")  # while the third waits for its answer
                in_flight = desk.received[2]
                await api.say(cid, alice.token, "Written while no worker runs")
                deployment.restart_worker()

                staff_log = await _delivered_in_full(api, cid, None, desk)
                bodies = _in_order(desk)
                assert bodies == _as_posted(staff_log, bodies, cid)
                again = [
                    item for item in desk.received if item.delivery_id == in_flight.delivery_id
                ]
                assert len(again) == 2, "the delivery cut short was not sent again"
                assert again[0].body == again[1].body
        finally:
            deployment.stop(faults=True)


@pytest.mark.e2e
async def test_no_push_of_what_the_visitor_reads_with_the_chat_open_and_one_once_left_unread(
    tmp_path: Path, deploy: Callable[..., Deployment]
) -> None:
    # SQLite alone: what matters here is the API's note of the stream, not the storage.
    db = Database(f"sqlite:///{tmp_path / 'push.db'}")
    push = Receiver(PUSH_SECRET)
    with push.running():
        deployment = deploy(
            db.url,
            timeouts=CALM_TIMEOUTS,
            routing=push.toml("push", ["visitor.unread"])
            + '[webhook_delivery]\nunread_after = "2s"\n',
            extra_env=FAST_DELIVERY,
        )
        async with deployment.client() as api:
            alice = await api.create_agent("alice")
            cid, visitor = await api.start_conversation()
            await api.wait_for_state(cid, None, "active")
            async with api.http.stream(
                "GET", f"/v1/conversations/{cid}/stream", headers=bearer(visitor)
            ) as stream:
                assert stream.status_code == 200
                await eventually(lambda: _stream_noted(db, cid), what="the visitor's stream noted")
                read = await api.say(cid, alice.token, "Read at once")
                expect(await api.mark_read(cid, visitor, read), 200)
                unread = await api.say(cid, alice.token, "Left unread")

                async def pushed() -> list[dict[str, Any]]:
                    return push.events()

                (body,) = await eventually(pushed, timeout=30, what="the unread message's push")
            assert (body["seq"], body["data"]["preview"]) == (unread, "Left unread")

            async def skipped() -> list[int]:
                listed = await api.http.get(
                    "/v1/admin/webhooks/deliveries",
                    params={"status": "skipped"},
                    headers=bearer(ADMIN_TOKEN),
                )
                return [item["seq"] for item in expect(listed, 200)["deliveries"]]

            assert await eventually(skipped, what="the read message's push skipped") == [read]
            assert [item.body["seq"] for item in push.received] == [unread]


async def _stream_noted(db: Database, cid: str) -> bool:
    try:
        with db.read() as session:
            conversation = session.get(Conversation, cid)
            return conversation is not None and conversation.visitor_stream_until is not None
    finally:
        db.dispose()  # no connection of the test's left open on the deployment's file
