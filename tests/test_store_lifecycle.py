"""The lifecycle writes of store/lifecycle.py on SQLite and PostgreSQL, without Temporal: what
each stores, that a repeat (a retried activity) changes nothing and writes no second event, and
that a write keeps what something newer stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from domain.policy import Policy
from domain.types import ConversationState, EventType, QueuePlacement, TransferResult
from store import lifecycle
from store.assignment import dispatch
from store.db import Database
from store.events import ConversationNotFound, EventView, change_state, events_after
from store.messages import store_message
from store.models import Agent, Assignment, Conversation, QueueEntry, QueueSkip, utcnow
from tests.support.data import (
    add_agent,
    enqueue_conversations,
    new_conversation,
    statements_run,
    store_unsignalled,
)

_GROUPS = [
    {"name": "general", "agent_first_reply_timeout": "1m"},
    {
        "name": "after_sales",
        "max_queue_length": 1,
        "max_queue_wait": "5m",
        "overflow_to": "general",
    },
    {"name": "night", "hours": {"weekly": {"mon": ["09:00-10:00"]}}, "on_closing": "close"},
]
POLICY = Policy.model_validate({"skill_groups": _GROUPS})
# Every web conversation to after-sales, with priority.
WEB_TO_AFTER_SALES = Policy.model_validate(
    {
        "skill_groups": _GROUPS,
        "routing": [{"when": {"channel": "web"}, "skill_group": "after_sales", "priority": 5}],
    }
)
NIGHT_ONLY = Policy.model_validate({"skill_groups": _GROUPS, "default_skill_group": "night"})
TUESDAY_NOON = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)  # the night group is closed
NEXT_MONDAY_NINE = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)


def _events(
    db: Database, conversation_id: str, type: str, *, staff: bool = True
) -> list[EventView]:
    """The conversation's events of a type, as staff (or as its visitor) read them."""
    with db.read() as session:
        found = events_after(
            session, conversation_id=conversation_id, after_seq=0, limit=1000, staff=staff
        )
    return [event for event in found if event.type == type]


def _states(db: Database, conversation_id: str) -> list[dict[str, object]]:
    return [event.data for event in _events(db, conversation_id, EventType.STATE_CHANGED)]


def _row(db: Database, conversation_id: str) -> Conversation:
    with db.read() as session:
        conversation = session.get(Conversation, conversation_id)
    assert conversation is not None
    return conversation


def _load(db: Database, agent_id: str) -> int:
    with db.read() as session:
        agent = session.get(Agent, agent_id)
    assert agent is not None
    return agent.active_count


def _waiting(db: Database, conversation_id: str) -> QueueEntry | None:
    with db.read() as session:
        return session.exec(
            select(QueueEntry).where(QueueEntry.conversation_id == conversation_id)
        ).first()


def _created(db: Database) -> str:
    """A conversation as the API starts it: queued, not yet in a queue."""
    with db.write() as session:
        return new_conversation(session).id


def _served(db: Database, agent_id: str) -> str:
    """A conversation assigned to `agent_id` (online in general) and recorded as active."""
    add_agent(db, agent_id, max_concurrent=1)
    [conversation_id] = enqueue_conversations(db, 1)
    assert [made.agent_id for made in dispatch(db, ["general"])] == [agent_id]
    lifecycle.record_assignment(db=db, conversation_id=conversation_id, round=1)
    return conversation_id


def test_a_state_change_is_written_with_its_event_once(db: Database) -> None:
    conversation_id = _created(db)
    for _attempt in range(2):
        with db.write() as session:
            conversation = session.get(Conversation, conversation_id)
            assert conversation is not None
            change_state(
                session,
                conversation=conversation,
                state=ConversationState.ACTIVE,
                dedupe_key="state:active:1",
                agent_id="alice",
            )
    assert _row(db, conversation_id).state == "active"
    assert _states(db, conversation_id) == [{"state": "active", "agent_id": "alice"}]


def test_routing_is_decided_once_and_says_when_a_closed_group_opens(db: Database) -> None:
    conversation_id = _created(db)
    routed = lifecycle.route_conversation(
        db=db, policy=WEB_TO_AFTER_SALES, conversation_id=conversation_id, at=TUESDAY_NOON
    )
    assert (routed.skill_group, routed.priority, routed.rule, routed.is_open) == (
        "after_sales",
        5,
        0,
        True,
    )
    # A repeat under a policy edited since keeps the first decision, and its one event.
    again = lifecycle.route_conversation(
        db=db, policy=POLICY, conversation_id=conversation_id, at=TUESDAY_NOON
    )
    assert (again.skill_group, again.priority, again.rule) == ("after_sales", 5, 0)
    assert len(_events(db, conversation_id, EventType.ROUTED)) == 1
    assert _row(db, conversation_id).policy_version == POLICY.version

    night = lifecycle.route_conversation(
        db=db, policy=NIGHT_ONLY, conversation_id=_created(db), at=TUESDAY_NOON
    )
    assert (night.skill_group, night.is_open, night.next_opening) == (
        "night",
        False,
        NEXT_MONDAY_NINE,
    )
    with pytest.raises(ConversationNotFound):
        lifecycle.route_conversation(db=db, policy=POLICY, conversation_id="nobody", at=utcnow())


def _enter(
    db: Database,
    conversation_id: str,
    skill_group: str,
    hop: int = 0,
    from_group: str | None = None,
) -> QueuePlacement:
    return lifecycle.enter_queue(
        db=db,
        policy=POLICY,
        conversation_id=conversation_id,
        skill_group=skill_group,
        priority=0,
        at=TUESDAY_NOON,
        hop=hop,
        from_group=from_group,
    )


def test_entering_the_queue_twice_queues_once(db: Database) -> None:
    conversation_id = _created(db)
    placement = _enter(db, conversation_id, "general")
    assert _enter(db, conversation_id, "general") == placement
    entry = _waiting(db, conversation_id)
    assert entry is not None and entry.skill_group == "general"
    assert placement == QueuePlacement(
        skill_group="general",
        accepted=True,
        queued_at=entry.enqueued_at,
        first_reply_timeout_s=60,
    )
    assert _states(db, conversation_id) == [{"state": "queued", "skill_group": "general"}]
    assert len(_events(db, conversation_id, EventType.QUEUE_POSITION)) == 1


def test_an_overflow_moves_the_entry_once_and_keeps_its_place_in_time(db: Database) -> None:
    conversation_id = _created(db)
    _enter(db, conversation_id, "general")
    queued = _waiting(db, conversation_id)
    assert queued is not None
    for _attempt in range(2):
        moved = _enter(db, conversation_id, "after_sales", hop=1, from_group="general")
    entry = _waiting(db, conversation_id)
    assert entry is not None and entry.skill_group == "after_sales"
    assert entry.enqueued_at == queued.enqueued_at
    assert moved == QueuePlacement(
        skill_group="after_sales",
        accepted=True,
        queued_at=queued.enqueued_at,
        overflow_to="general",
        max_queue_wait_s=300,
    )
    overflows = _events(db, conversation_id, EventType.OVERFLOWED)
    assert [event.data for event in overflows] == [
        {"from": "general", "to": "after_sales", "hop": 1}
    ]
    assert len(_states(db, conversation_id)) == 1  # only the first queueing


def test_a_full_or_closed_group_refuses_and_stores_nothing(db: Database) -> None:
    enqueue_conversations(db, 1, skill_group="after_sales")
    conversation_id = _created(db)
    full = _enter(db, conversation_id, "after_sales")
    assert full == QueuePlacement(
        skill_group="after_sales", accepted=False, refused_because="full", overflow_to="general"
    )
    closed = _enter(db, conversation_id, "night")
    assert closed == QueuePlacement(skill_group="night", accepted=False, refused_because="closed")
    assert _waiting(db, conversation_id) is None
    assert _states(db, conversation_id) == []


def _overflow_close(db: Database, conversation_id: str, *, overflowed_from: str, hop: int) -> None:
    """The close of an overflow into a left message from `overflowed_from`, its `hop`-th hop."""
    lifecycle.close_conversation(
        db=db,
        policy=POLICY,
        conversation_id=conversation_id,
        reason="overflow",
        overflowed_from=overflowed_from,
        overflow_hop=hop,
    )


def test_every_hop_has_its_event_once_into_a_full_or_closed_group_or_a_left_message(
    db: Database,
) -> None:
    enqueue_conversations(db, 1, skill_group="after_sales")  # after_sales is full
    conversation_id = _created(db)
    _enter(db, conversation_id, "general")
    for _attempt in range(2):
        full = _enter(db, conversation_id, "after_sales", hop=1, from_group="general")
        closed = _enter(db, conversation_id, "night", hop=2, from_group="after_sales")
    assert (full.refused_because, closed.refused_because) == ("full", "closed")
    entry = _waiting(db, conversation_id)
    assert entry is not None and entry.skill_group == "general"  # it waits where it was
    for _attempt in range(2):
        _overflow_close(db, conversation_id, overflowed_from="night", hop=3)
    overflows = _events(db, conversation_id, EventType.OVERFLOWED)
    assert [event.data for event in overflows] == [
        {"from": "general", "to": "after_sales", "hop": 1},
        {"from": "after_sales", "to": "night", "hop": 2},
        {"from": "night", "to": "left_message", "hop": 3},
    ]
    with db.read() as session:
        after = events_after(
            session,
            conversation_id=conversation_id,
            after_seq=overflows[-1].seq - 1,
            limit=10,
            staff=True,
        )
    assert [event.type for event in after] == [
        EventType.OVERFLOWED,
        EventType.STATE_CHANGED,
        EventType.CLOSED,
    ]
    assert _row(db, conversation_id).close_reason == "overflow"
    assert _waiting(db, conversation_id) is None


def test_an_overflow_close_after_another_close_writes_no_hop(db: Database) -> None:
    [conversation_id] = enqueue_conversations(db, 1)
    lifecycle.close_conversation(
        db=db, policy=POLICY, conversation_id=conversation_id, reason="abandoned"
    )
    _overflow_close(db, conversation_id, overflowed_from="general", hop=1)
    assert _events(db, conversation_id, EventType.OVERFLOWED) == []
    assert _row(db, conversation_id).close_reason == "abandoned"


def test_a_placement_says_when_its_group_closes_what_then_and_when_it_opens_again(
    db: Database,
) -> None:
    conversation_id = _created(db)
    placement = lifecycle.enter_queue(
        db=db,
        policy=NIGHT_ONLY,
        conversation_id=conversation_id,
        skill_group="night",
        priority=0,
        at=NEXT_MONDAY_NINE + timedelta(minutes=30),
    )
    assert (placement.accepted, placement.on_closing) == (True, "close")
    assert (placement.closes_at, placement.next_opening) == (
        NEXT_MONDAY_NINE + timedelta(hours=1),
        NEXT_MONDAY_NINE + timedelta(days=7),
    )
    general = _enter(db, _created(db), "general")  # no hours: it never closes
    assert (general.closes_at, general.on_closing, general.next_opening) == (None, "keep", None)


def test_the_close_at_the_closing_declines_when_an_agent_took_the_conversation(
    db: Database,
) -> None:
    at_closing = {
        "db": db,
        "policy": NIGHT_ONLY,
        "reason": "out_of_hours",
        "next_opening": NEXT_MONDAY_NINE,
        "unless_assigned": True,
    }
    served = _served(db, "alice")
    for _attempt in range(2):
        with pytest.raises(lifecycle.AssignedMeanwhile) as declined:
            lifecycle.close_conversation(conversation_id=served, **at_closing)
        assert declined.value.agent_id == "alice"
    assert (_row(db, served).state, _load(db, "alice")) == ("active", 1)
    assert _events(db, served, EventType.CLOSED) == []

    [waiting] = enqueue_conversations(db, 1)
    for _attempt in range(2):
        lifecycle.close_conversation(conversation_id=waiting, **at_closing)
    assert (_row(db, waiting).close_reason, _waiting(db, waiting)) == ("out_of_hours", None)
    [closed] = _events(db, waiting, EventType.CLOSED)
    assert "Mon 09 Mar at 09:00 (UTC)" in closed.data["text"]
    assert closed.data["left_message"] is True
    # The left-message form shows the opening in the visitor's own clock and language.
    assert closed.data["next_opening"] == NEXT_MONDAY_NINE.isoformat()


def test_an_overflow_declines_when_an_agent_took_the_conversation_meanwhile(db: Database) -> None:
    add_agent(db, "alice", max_concurrent=1)
    [conversation_id] = enqueue_conversations(db, 1)
    dispatch(db, ["general"])
    placement = _enter(db, conversation_id, "after_sales", hop=1, from_group="general")
    assert (placement.accepted, placement.agent_id) == (True, "alice")
    assert _waiting(db, conversation_id) is None
    assert _events(db, conversation_id, EventType.OVERFLOWED) == []


def test_recording_an_assignment_twice_makes_it_active_once(db: Database) -> None:
    conversation_id = _served(db, "alice")
    lifecycle.record_assignment(db=db, conversation_id=conversation_id, round=1)
    assert _row(db, conversation_id).state == "active"
    assigned = _events(db, conversation_id, EventType.ASSIGNED)
    assert [event.data for event in assigned] == [{"agent_id": "alice", "agent_name": "alice"}]
    assert _states(db, conversation_id) == [{"state": "active", "agent_id": "alice"}]


def test_recording_an_assignment_keeps_a_closed_conversation_closed(db: Database) -> None:
    conversation_id = _served(db, "alice")
    lifecycle.close_conversation(
        db=db, policy=POLICY, conversation_id=conversation_id, reason="agent_closed"
    )
    lifecycle.record_assignment(db=db, conversation_id=conversation_id, round=2)
    assert _row(db, conversation_id).state == "closed"
    assert [state["state"] for state in _states(db, conversation_id)] == ["active", "closed"]


def test_recording_an_assignment_without_an_agent_is_refused(db: Database) -> None:
    with pytest.raises(lifecycle.ConversationUnassigned):
        lifecycle.record_assignment(db=db, conversation_id=_created(db), round=1)


def test_an_unanswered_conversation_is_requeued_once_and_not_to_that_agent(db: Database) -> None:
    conversation_id = _served(db, "alice")
    queued_at = _row(db, conversation_id).queued_at
    for _attempt in range(2):
        outcome = lifecycle.requeue_unanswered(
            db=db, policy=POLICY, conversation_id=conversation_id, agent_id="alice", round=1
        )
        assert outcome.freed_groups == ["general"]
        assert (outcome.result.skill_group, outcome.result.queued_at) == ("general", queued_at)
    conversation = _row(db, conversation_id)
    assert (conversation.state, conversation.agent_id) == ("queued", None)
    assert _load(db, "alice") == 0
    with db.read() as session:
        assert session.get(QueueSkip, (conversation_id, "alice")) is not None
    assert lifecycle.conversation_agent(db=db, conversation_id=conversation_id) is None
    requeued = _events(db, conversation_id, EventType.REQUEUED)
    connecting = {"sender_role": "system", "text": POLICY.texts.connecting}
    assert [event.data for event in requeued] == [
        {**connecting, "agent_id": "alice", "reason": "no_first_reply"}
    ]
    # The visitor reads that someone else will answer: not who, not why.
    visitor_reads = _events(db, conversation_id, EventType.REQUEUED, staff=False)
    assert [event.data for event in visitor_reads] == [connecting]
    assert _states(db, conversation_id)[1:] == [{"state": "queued", "skill_group": "general"}]
    add_agent(db, "bob", max_concurrent=1, active_count=1)  # online, full for now
    assert dispatch(db, ["general"]) == []  # alice is not given it again: it waits for bob


def _transfer(db: Database, conversation_id: str, **to: str) -> lifecycle.Outcome[TransferResult]:
    return lifecycle.transfer(
        db=db, policy=POLICY, conversation_id=conversation_id, round=1, by_id="alice", **to
    )


def test_a_transfer_to_an_agent_hands_over_once(db: Database) -> None:
    conversation_id = _served(db, "alice")
    add_agent(db, "bob", max_concurrent=1)
    first = _transfer(db, conversation_id, to_agent_id="bob", note="VIP")
    again = _transfer(db, conversation_id, to_agent_id="bob", note="VIP")
    assigned = _events(db, conversation_id, EventType.ASSIGNED)[-1]
    assert first.result == TransferResult(ok=True, agent_id="bob", handover_seq=assigned.seq)
    assert (first.freed_groups, again.result, again.freed_groups) == (["general"], first.result, [])
    assert (_load(db, "alice"), _load(db, "bob")) == (0, 1)
    assert _row(db, conversation_id).agent_id == "bob"
    with db.read() as session:
        assert len(session.exec(select(Assignment)).all()) == 2
    transferred = _events(db, conversation_id, EventType.TRANSFERRED)
    assert [event.data["to_agent_id"] for event in transferred] == ["bob"]
    # A note an older API sent with the request: written once, for staff alone.
    notes = _events(db, conversation_id, EventType.NOTE_CREATED)
    assert [(note.data["kind"], note.data["text"]) for note in notes] == [("transfer", "VIP")]
    assert _events(db, conversation_id, EventType.NOTE_CREATED, staff=False) == []
    visitor_reads = _events(db, conversation_id, EventType.TRANSFERRED, staff=False)
    assert [event.data for event in visitor_reads] == [
        {"sender_role": "system", "text": POLICY.texts.connecting}
    ]
    (handover,) = _events(db, conversation_id, EventType.ASSIGNED, staff=False)[-1:]
    assert handover.data == {"agent_name": "bob"}


def test_a_transfer_to_a_group_queues_once_with_the_original_time(db: Database) -> None:
    conversation_id = _served(db, "alice")
    queued_at = _row(db, conversation_id).queued_at
    first = _transfer(db, conversation_id, to_skill_group="after_sales")
    again = _transfer(db, conversation_id, to_skill_group="after_sales")
    assert first.result.placement is not None
    assert (first.result.placement.skill_group, first.result.placement.queued_at) == (
        "after_sales",
        queued_at,
    )
    assert again.result == first.result
    assert _row(db, conversation_id).state == "queued"
    assert _states(db, conversation_id)[1:] == [{"state": "queued", "skill_group": "after_sales"}]
    assert len(_events(db, conversation_id, EventType.TRANSFERRED)) == 1


def test_a_transfer_to_a_group_is_not_served_straight_back_to_who_handed_it_on(
    db: Database,
) -> None:
    conversation_id = _served(db, "alice")  # her only seat: free again once she hands it on
    add_agent(db, "bob", max_concurrent=1, active_count=1)  # online, full for now
    for _attempt in range(2):
        _transfer(db, conversation_id, to_skill_group="general")
    with db.read() as session:
        assert session.get(QueueSkip, (conversation_id, "alice")) is not None
    assert dispatch(db, ["general"]) == []  # not back to alice while bob could serve it
    with db.write() as session:  # bob's other conversation ends
        bob = session.get(Agent, "bob")
        assert bob is not None
        bob.active_count = 0
        session.add(bob)
    made = dispatch(db, ["general"])
    assert [(m.conversation_id, m.agent_id) for m in made] == [(conversation_id, "bob")]


def test_a_transfer_to_a_group_nobody_else_serves_goes_back_to_who_handed_it_on(
    db: Database,
) -> None:
    conversation_id = _served(db, "alice")
    add_agent(db, "bob", max_concurrent=1, status="away")
    _transfer(db, conversation_id, to_skill_group="general")
    made = dispatch(db, ["general"])  # never stranded: alice is the only one online
    assert [(m.conversation_id, m.agent_id) for m in made] == [(conversation_id, "alice")]


@pytest.mark.parametrize(
    ("to", "reason"),
    [
        ({"to_agent_id": "nobody"}, "unknown agent"),
        ({"to_agent_id": "bob"}, "agent bob is not online with room"),
        ({"to_skill_group": "nowhere"}, "unknown skill group 'nowhere'"),
    ],
)
def test_a_transfer_that_cannot_happen_changes_nothing(
    db: Database, to: dict[str, str], reason: str
) -> None:
    conversation_id = _served(db, "alice")
    add_agent(db, "bob", max_concurrent=1, status="away")
    outcome = _transfer(db, conversation_id, **to)
    assert (outcome.result, outcome.freed_groups) == (
        TransferResult(ok=False, reason=reason),
        [],
    )
    assert (_row(db, conversation_id).agent_id, _load(db, "alice")) == ("alice", 1)
    assert _events(db, conversation_id, EventType.TRANSFERRED) == []


def test_an_idle_warning_is_sent_once_and_gives_the_whole_time(db: Database) -> None:
    conversation_id = _served(db, "alice")
    before = utcnow()

    def warn(close_at: datetime) -> datetime:
        return lifecycle.record_idle_warning(
            db=db,
            policy=POLICY,
            conversation_id=conversation_id,
            agent_message_seq=7,
            close_at=close_at,
            idle_close_after=timedelta(minutes=2),
        )

    # Held up (the database was down): the visitor still gets two minutes from now.
    told = warn(before - timedelta(minutes=5))
    assert told >= before + timedelta(minutes=2)
    assert warn(before + timedelta(hours=1)) == told  # a repeat answers what it told
    warnings = _events(db, conversation_id, EventType.IDLE_WARNING)
    assert [event.data["close_at"] for event in warnings] == [told.isoformat()]
    assert warnings[0].data["after_agent_message_seq"] == 7


def test_closing_a_waiting_conversation_leaves_the_queue_once(db: Database) -> None:
    [conversation_id] = enqueue_conversations(db, 1)
    for _attempt in range(2):
        outcome = lifecycle.close_conversation(
            db=db, policy=POLICY, conversation_id=conversation_id, reason="abandoned"
        )
        assert (outcome.result, outcome.freed_groups) == (None, [])
    conversation = _row(db, conversation_id)
    assert (conversation.state, conversation.close_reason) == ("closed", "abandoned")
    assert conversation.open_customer_key is None and conversation.closed_at is not None
    assert _waiting(db, conversation_id) is None
    assert _states(db, conversation_id)[-1] == {"state": "closed", "close_reason": "abandoned"}
    closed = _events(db, conversation_id, EventType.CLOSED)
    assert [event.data["text"] for event in closed] == [POLICY.texts.closing.abandoned]
    assert _events(db, conversation_id, EventType.RATING_INVITED) == []


def test_closing_a_served_conversation_frees_the_agent_and_invites_a_rating_once(
    db: Database,
) -> None:
    conversation_id = _served(db, "alice")
    first = lifecycle.close_conversation(
        db=db,
        policy=POLICY,
        conversation_id=conversation_id,
        reason="agent_closed",
        closed_by="alice",
        invite_rating=True,
    )
    # A later close (the idle countdown, say) keeps the first one.
    again = lifecycle.close_conversation(
        db=db,
        policy=POLICY,
        conversation_id=conversation_id,
        reason="idle_timeout",
        invite_rating=True,
    )
    conversation = _row(db, conversation_id)
    assert conversation.closed_at is not None
    assert first.result == conversation.closed_at + POLICY.timeouts.rating_window
    assert (first.freed_groups, again.result) == (["general"], first.result)
    assert (conversation.close_reason, conversation.closed_by) == ("agent_closed", "alice")
    assert (conversation.rating_status, conversation.rating_expires_at) == ("pending", first.result)
    assert _load(db, "alice") == 0
    assert [state["state"] for state in _states(db, conversation_id)] == ["active", "closed"]
    assert len(_events(db, conversation_id, EventType.CLOSED)) == 1
    assert len(_events(db, conversation_id, EventType.RATING_INVITED)) == 1


def test_an_idle_close_with_its_invite_updates_the_conversation_once(db: Database) -> None:
    """The close, the agent's load and the rating invite are one UPDATE of the conversation's
    row (besides the seqs its events take), in one transaction: bench/ B3, the worker's CPU
    per idle close."""
    conversation_id = _served(db, "alice")
    with statements_run(db) as seen:
        outcome = lifecycle.close_conversation(
            db=db,
            policy=POLICY,
            conversation_id=conversation_id,
            reason="idle_timeout",
            closed_by="idle_countdown",
            invite_rating=True,
            silent_after_seq=0,
        )
    updates = [
        ran.sql
        for ran in seen
        if ran.sql.startswith("UPDATE conversation SET") and "last_seq" not in ran.sql
    ]
    assert len(updates) == 1, updates
    assert sum(ran.sql.startswith(("BEGIN", "COMMIT")) for ran in seen) <= 2
    conversation = _row(db, conversation_id)
    assert (conversation.state, conversation.close_reason) == ("closed", "idle_timeout")
    assert conversation.load_released and _load(db, "alice") == 0
    assert (conversation.rating_status, conversation.rating_expires_at) == (
        "pending",
        outcome.result,
    )
    assert outcome.freed_groups == ["general"]


def test_a_rating_invite_keeps_its_first_window(db: Database) -> None:
    conversation_id = _served(db, "alice")
    expires_at = utcnow() + timedelta(hours=1)
    for later in (timedelta(0), timedelta(hours=2)):
        told = lifecycle.invite_rating(
            db=db, policy=POLICY, conversation_id=conversation_id, expires_at=expires_at + later
        )
        assert told == expires_at
    conversation = _row(db, conversation_id)
    assert (conversation.rating_status, conversation.rating_expires_at) == ("pending", expires_at)
    invites = _events(db, conversation_id, EventType.RATING_INVITED)
    assert [event.data["expires_at"] for event in invites] == [expires_at.isoformat()]


def test_a_rating_is_recorded_once_and_not_expired_after(db: Database) -> None:
    conversation_id = _served(db, "alice")
    lifecycle.invite_rating(
        db=db, policy=POLICY, conversation_id=conversation_id, expires_at=utcnow()
    )
    for _attempt in range(2):
        lifecycle.record_rating(
            db=db, conversation_id=conversation_id, score=4, resolved=True, comment="quick"
        )
    lifecycle.expire_rating(db=db, conversation_id=conversation_id)
    conversation = _row(db, conversation_id)
    assert (conversation.rating_status, conversation.rating_score) == ("rated", 4)
    assert (conversation.rating_resolved, conversation.rating_comment) == (True, "quick")
    submitted = _events(db, conversation_id, EventType.RATING_SUBMITTED)
    assert [event.data for event in submitted] == [{"score": 4, "resolved": True}]


def test_an_unanswered_rating_invite_expires_once(db: Database) -> None:
    conversation_id = _served(db, "alice")
    lifecycle.invite_rating(
        db=db, policy=POLICY, conversation_id=conversation_id, expires_at=utcnow()
    )
    for _attempt in range(2):
        lifecycle.expire_rating(db=db, conversation_id=conversation_id)
    assert _row(db, conversation_id).rating_status == "expired"
    assert len(_events(db, conversation_id, EventType.RATING_EXPIRED)) == 1


def test_a_close_for_silence_declines_when_a_newer_message_is_stored(db: Database) -> None:
    """Invariant 8: the idle close checks, in its own transaction, that nobody wrote since the
    agent's message its countdown began with; a visitor's reply stored meanwhile declines it."""
    conversation_id = _served(db, "alice")
    said = {
        role: store_message(
            db,
            conversation_id=conversation_id,
            sender_role=role,
            sender_id=sender,
            client_message_id=f"{role}-1",
            type="text",
            content="hello",
        ).message
        for role, sender in (("agent", "alice"), ("visitor", conversation_id))
    }
    idle_close = {
        "db": db,
        "policy": POLICY,
        "conversation_id": conversation_id,
        "reason": "idle_timeout",
        "closed_by": "idle_countdown",
    }
    with pytest.raises(lifecycle.NewerMessage) as declined:
        lifecycle.close_conversation(**idle_close, silent_after_seq=said["agent"].seq)
    assert (declined.value.seq, declined.value.sender_role) == (said["visitor"].seq, "visitor")
    assert _row(db, conversation_id).state == ConversationState.ACTIVE
    assert _events(db, conversation_id, EventType.CLOSED) == []
    # Silent since the newest message: it closes.
    lifecycle.close_conversation(**idle_close, silent_after_seq=said["visitor"].seq)
    assert _row(db, conversation_id).close_reason == "idle_timeout"


def _said(db: Database, conversation_id: str, role: str, sender: str, key: str) -> int:
    """Store a message as the API does (and signal nothing: as if the API died after commit)."""
    return store_unsignalled(
        db, conversation_id=conversation_id, sender_role=role, sender_id=sender, content=key
    ).message.seq


def test_an_idle_warning_declines_when_a_newer_message_is_stored(db: Database) -> None:
    """The warning's countdown began with the agent's message; the visitor's reply stored after
    it (its signal lost) declines the warning, and the newest message is what it found."""
    conversation_id = _served(db, "alice")
    agent_seq = _said(db, conversation_id, "agent", "alice", "a-1")
    visitor_seq = _said(db, conversation_id, "visitor", conversation_id, "v-1")

    def warn(after_seq: int) -> datetime:
        return lifecycle.record_idle_warning(
            db=db,
            policy=POLICY,
            conversation_id=conversation_id,
            agent_message_seq=after_seq,
            close_at=utcnow() + timedelta(minutes=2),
            idle_close_after=timedelta(minutes=2),
        )

    with pytest.raises(lifecycle.NewerMessage) as declined:
        warn(agent_seq)
    assert (declined.value.seq, declined.value.sender_role) == (visitor_seq, "visitor")
    assert _events(db, conversation_id, EventType.IDLE_WARNING) == []
    newer_agent_seq = _said(db, conversation_id, "agent", "alice", "a-2")
    warn(newer_agent_seq)  # silent since the newest: warned
    assert len(_events(db, conversation_id, EventType.IDLE_WARNING)) == 1


def test_a_requeue_for_no_first_reply_declines_when_the_reply_is_stored(db: Database) -> None:
    """The agent answered but the workflow never heard (the signal was lost): no requeue. What
    it finds is the newest message, the visitor's here, written after the agent's reply."""
    conversation_id = _served(db, "alice")
    _said(db, conversation_id, "agent", "alice", "a-1")
    visitor_seq = _said(db, conversation_id, "visitor", conversation_id, "v-1")
    with pytest.raises(lifecycle.NewerMessage) as declined:
        lifecycle.requeue_unanswered(
            db=db, policy=POLICY, conversation_id=conversation_id, agent_id="alice", round=1
        )
    assert (declined.value.seq, declined.value.sender_role) == (visitor_seq, "visitor")
    conversation = _row(db, conversation_id)
    assert (conversation.state, conversation.agent_id) == ("active", "alice")
    assert _events(db, conversation_id, EventType.REQUEUED) == []
    with db.read() as session:
        assert session.get(QueueSkip, (conversation_id, "alice")) is None


def test_a_visitor_message_alone_does_not_stop_a_requeue(db: Database) -> None:
    conversation_id = _served(db, "alice")
    _said(db, conversation_id, "visitor", conversation_id, "v-1")
    outcome = lifecycle.requeue_unanswered(
        db=db, policy=POLICY, conversation_id=conversation_id, agent_id="alice", round=1
    )
    assert outcome.result.accepted and _row(db, conversation_id).state == "queued"
