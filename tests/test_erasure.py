"""A customer's erase and the transcript retention schedule, as deployed: API and worker
processes on the dev server, on SQLite and PostgreSQL.

An erase closes the customer's open conversation as an admin does, then leaves no canary in
any table or any workflow history, and the visitor's and the agent's events show the marker;
it is recorded as an admin action, logged without the customer's id, and a retry erases
nothing. The worker's retention schedule erases a conversation closed long enough ago, and not
a recent one; a worker that starts again leaves it paused if ops paused it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.testing import WorkflowEnvironment

from domain.types import RetentionRun
from store import lifecycle
from store.db import Database
from store.erasure import ERASED
from store.events import append_event
from store.models import AdminAction, Conversation
from tests.support.api import ADMIN, ApiClient, bearer, eventually, expect
from tests.support.canary import Canary, histories_holding, rows_holding
from tests.support.data import app_ticket, closed_conversation, ticket_texts
from tests.support.policy import keep_transcripts
from tests.support.processes import Deployment
from workflows.schedules import RETENTION_SCHEDULE_ID, ensure_retention_schedule

pytestmark = pytest.mark.e2e

# The visitor's token outlives the test (it ends with the rating window).
LONG_RATING_WINDOW = {"rating_window": "1h"}


async def _erase(api: ApiClient, customer_id: str, token: str | None = None) -> Any:
    return await api.http.post(
        f"/v1/customers/{customer_id}/erase", headers=ADMIN if token is None else bearer(token)
    )


def _message_texts(events: list[dict[str, Any]]) -> list[str]:
    return [event["data"].get("content") for event in events if event["type"] == "message.created"]


async def test_an_erase_leaves_no_canary_in_any_table_or_history(
    empty_db: Database, deploy: Callable[..., Deployment], dev_env: WorkflowEnvironment
) -> None:
    deployment = deploy(empty_db.url, timeouts=LONG_RATING_WINDOW)
    canary = Canary()
    customer = f"customer-{uuid.uuid4().hex}"
    async with deployment.client() as api:
        alice = await api.create_agent("alice", max_concurrent=5)
        # Served: both sides write, the agent closes, the visitor rates, staff note it.
        served = await api.start_conversation(customer, order_id=canary("order"))
        await api.wait_for(served.conversation_id, state="active", agent_id=alice.id)
        await api.say(*served, canary("visitor message"))
        await api.say(served.conversation_id, alice.token, canary("agent message"))
        expect(await api.close(served.conversation_id, alice.token), 200)
        # Straight to the store: through the API the comment rides a workflow update until
        # issue 14's first points keep it out of Temporal (their canary test covers that path).
        lifecycle.record_rating(
            db=empty_db, conversation_id=served.conversation_id, score=5, comment=canary("rating")
        )
        with empty_db.write() as session:
            append_event(
                session,
                conversation_id=served.conversation_id,
                type="note.created",
                data={"author_id": alice.id, "text": canary("staff note")},
            )
        # Nobody could serve it: the visitor leaves a message.
        overflowed = await api.start_conversation(customer, entry="callback_test")
        await api.wait_for(overflowed.conversation_id, close_reason="overflow")
        left = await api.leave_message(*overflowed, canary("left message"), canary("contact"))
        expect(left, 201)
        # Still open when the erase comes.
        still_open = await api.start_conversation(customer)
        await api.wait_for(still_open.conversation_id, state="active", agent_id=alice.id)
        await api.say(*still_open, canary("last message"))
        conversations = [served, overflowed, still_open]
        assert rows_holding(empty_db, canary.prefix)

        erased = expect(await _erase(api, customer), 200)

        assert erased == {
            "conversations": 3,
            "messages": 3,
            "closed": 1,
            "erased_at": erased["erased_at"],
        }
        closed = await api.conversation(still_open.conversation_id)
        assert (closed["state"], closed["close_reason"]) == ("closed", "admin_closed")
        for token in (still_open.token, alice.token):
            assert _message_texts(await api.events(still_open.conversation_id, token)) == [ERASED]
        assert _message_texts(await api.events(served.conversation_id, alice.token)) == [
            ERASED,
            ERASED,
        ]
        again = expect(await _erase(api, customer), 200)
        assert again | {"erased_at": None} == {
            "conversations": 0,
            "messages": 0,
            "closed": 0,
            "erased_at": None,
        }

    assert rows_holding(empty_db, canary.prefix) == {}
    ids = [conversation.conversation_id for conversation in conversations]
    assert await histories_holding(dev_env.client, ids, canary.prefix) == []
    with empty_db.read() as session:
        actions = session.execute(
            sa.select(
                col(AdminAction.action),
                col(AdminAction.by_id),
                col(AdminAction.conversations),
                col(AdminAction.messages),
            ).order_by(col(AdminAction.id))
        ).all()
    assert [tuple(action) for action in actions] == [
        ("customer.erase", "admin", 3, 3),
        ("customer.erase", "admin", 0, 0),
    ]
    deployment.stop()
    for process in ("api-0", "worker-0"):
        assert customer not in deployment.log(process)


async def test_only_an_admin_erases_and_an_unknown_customer_is_no_oracle(
    empty_db: Database, deploy: Callable[..., Deployment]
) -> None:
    deployment = deploy(empty_db.url)
    async with deployment.client() as api:
        agent = await api.create_agent()
        visit = await api.start_conversation("customer-refused")
        await api.wait_for(visit.conversation_id, state="active")
        await api.say(*visit, "Where is my parcel?")
        for token in (agent.token, visit.token, api.app_key):
            assert (await _erase(api, "customer-refused", token)).status_code == 403
        unauthenticated = await api.http.post("/v1/customers/customer-refused/erase")
        assert unauthenticated.status_code == 401
        assert (await _erase(api, "x" * 201)).status_code == 422
        assert (await api.conversation(visit.conversation_id))["state"] == "active"
        assert "Where is my parcel?" in str(await api.events(visit.conversation_id))

        nobody = expect(await _erase(api, f"customer-{uuid.uuid4().hex}"), 200)
        assert nobody | {"erased_at": None} == {
            "conversations": 0,
            "messages": 0,
            "closed": 0,
            "erased_at": None,
        }
    with empty_db.read() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(AdminAction)).scalar() == 1


async def _run_of_trigger(client: Client, schedule_id: str) -> RetentionRun:
    """Trigger the schedule now, and the result of the run it starts."""
    handle = client.get_schedule_handle(schedule_id)
    before = {action.action.workflow_id for action in (await handle.describe()).info.recent_actions}
    # Whatever runs already (a run of another test's deployment whose worker has gone).
    await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)

    async def started() -> str | None:
        recent = (await handle.describe()).info.recent_actions
        new = [action.action.workflow_id for action in recent]
        return next((workflow_id for workflow_id in new if workflow_id not in before), None)

    workflow_id = await eventually(started, what=f"a run of {schedule_id}", timeout=60)
    return await client.get_workflow_handle(workflow_id, result_type=RetentionRun).result()


async def test_the_retention_schedule_erases_old_transcripts_and_not_recent_ones(
    empty_db: Database, deploy: Callable[..., Deployment], dev_env: WorkflowEnvironment
) -> None:
    deployment = deploy(empty_db.url)
    # The worker made it (or brought it to its task queue).
    schedule = await dev_env.client.get_schedule_handle(RETENTION_SCHEDULE_ID).describe()
    action = schedule.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.task_queue == deployment.settings.task_queue
    canary = Canary()
    old = closed_conversation(empty_db, content=canary("old"), closed_ago=timedelta(hours=2))
    recent = closed_conversation(empty_db, content=canary("recent"), closed_ago=timedelta(0))
    old_ticket = app_ticket(empty_db, canary, customer_id="c-1", closed_ago=timedelta(hours=2))
    keep_transcripts(deployment.settings.policy, "1h")

    assert await _run_of_trigger(dev_env.client, RETENTION_SCHEDULE_ID) == RetentionRun(1, 1, 1)

    with empty_db.read() as session:
        erased_at = dict(
            session.execute(sa.select(col(Conversation.id), col(Conversation.erased_at))).all()
        )
    assert erased_at[old] is not None and erased_at[recent] is None
    kept = rows_holding(empty_db, canary.prefix)
    assert list(kept) == ["message"]  # the old ticket's text too is gone
    assert len(kept["message"]) == 1 and canary("recent") in kept["message"][0]
    assert set(ticket_texts(empty_db, old_ticket)) == {ERASED}


async def test_a_worker_that_starts_again_keeps_the_schedule_paused(
    dev_env: WorkflowEnvironment,
) -> None:
    schedule_id = f"retention-{uuid.uuid4().hex}"
    await ensure_retention_schedule(
        dev_env.client, task_queue="tq-first", every=timedelta(hours=1), schedule_id=schedule_id
    )
    handle = dev_env.client.get_schedule_handle(schedule_id)
    try:
        await handle.pause(note="an audit")

        await ensure_retention_schedule(
            dev_env.client, task_queue="tq-next", every=timedelta(hours=2), schedule_id=schedule_id
        )

        schedule = (await handle.describe()).schedule
        assert schedule.state.paused and schedule.state.note == "an audit"
        assert isinstance(schedule.action, ScheduleActionStartWorkflow)
        assert schedule.action.task_queue == "tq-next"
        assert [interval.every for interval in schedule.spec.intervals] == [timedelta(hours=2)]
    finally:
        await handle.delete()
