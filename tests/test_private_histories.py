"""No customer data in Temporal: a whole lifecycle with a canary in every free-text field (the
customer's id, the order, messages both ways, a note, a transfer's note, the rating's comment,
a left message and its contact), through continue-as-new, and the canary in no run's history.
The payloads are read as they are (no codec: development's plain JSON), so what the check
finds is what the workflow was given."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from tests.support.api import bearer, expect
from tests.support.canary import Canary, histories_holding
from tests.support.histories import runs
from tests.support.media import phone_exif, photo
from tests.support.policy import DEFAULT_GROUPS
from tests.support.processes import CALLBACK_GROUP, CALLBACK_ROUTING
from tests.support.system import StartSystem

QUIET = {"idle_warning_after": "10m", "idle_close_after": "10m", "rating_window": "10m"}


async def test_no_free_text_reaches_any_history(
    short_history_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    canary = Canary()
    system = await make_system(
        short_history_env, groups=DEFAULT_GROUPS + CALLBACK_GROUP, routing=CALLBACK_ROUTING, **QUIET
    )
    _alice, alice_token = await system.create_agent("alice", max_concurrent=1)
    cid, visitor = await system.start_conversation(
        f"{canary.prefix}-customer", order_id=f"{canary.prefix}-order"
    )
    await system.wait_for_state(cid, None, "active")
    # Enough messages that the server suggests continue-as-new, more than once.
    for index in range(45):
        expect(
            await system.post_message(
                cid, visitor, canary(f"question {index}"), f"{canary.prefix}-{index}"
            ),
            201,
        )
        await system.say(cid, alice_token, canary(f"answer {index}"))
    # A photo: its name, its caption and what its EXIF said reach no history either.
    uploaded = await system.http.post(
        f"/v1/conversations/{cid}/attachments",
        headers=bearer(visitor),
        files={
            "file": (f"{canary.prefix}-parcel.jpg", photo("JPEG", exif=phone_exif()), "image/jpeg")
        },
    )
    assert uploaded.status_code == 201, uploaded.text
    shown = await system.http.post(
        f"/v1/conversations/{cid}/messages",
        headers=bearer(visitor),
        json={
            "client_message_id": f"{canary.prefix}-photo",
            "type": "image",
            "attachment_id": uploaded.json()["attachment_id"],
            "content": canary("the photo's caption"),
        },
    )
    assert shown.status_code == 201, shown.text
    noted = await system.add_note(cid, canary("internal note"), alice_token)
    assert noted.status_code == 201, noted.text
    bob, bob_token = await system.create_agent("bob", max_concurrent=1)
    moved = await system.transfer(cid, alice_token, to_agent_id=bob, note=canary("for bob"))
    assert moved.status_code == 200, moved.text
    await system.say(cid, bob_token, canary("bob answers"))
    assert (await system.close(cid, bob_token)).status_code == 200
    await system.wait_for_event(cid, visitor, "rating.invited")
    rated = await system.rate(cid, visitor, 4, resolved=True, comment=canary("rating comment"))
    assert rated.status_code == 201, rated.text
    await system.wait_for_event(cid, visitor, "rating.submitted")

    # Nobody in the callback group: it overflows into a left message.
    left, left_visitor = await system.start_conversation(
        f"{canary.prefix}-other-customer", entry="callback_test"
    )
    await system.wait_for_state(left, left_visitor, "closed")
    expect(
        await system.leave_message(
            left, left_visitor, canary("call me back"), contact=f"{canary.prefix}-phone"
        ),
        201,
    )

    chain = await runs(short_history_env.client, cid)
    assert len(chain) > 1, "the conversation never continued as new"
    # The canary is where it belongs: in the database, for the people who may read it.
    assert any(
        canary.prefix in event["data"].get("content", "") for event in await system.events(cid)
    )
    assert await histories_holding(short_history_env.client, [cid, left], canary.prefix) == []
