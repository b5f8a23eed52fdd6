"""Ops: the effective policy and its version, reload without restart (a bad file refused with the
reason, the old policy kept), the version each conversation ran under; admin force-close."""

from __future__ import annotations

from domain.policy import load_policy
from tests.support.api import ADMIN, bearer
from tests.support.policy import write_policy
from tests.support.system import System


async def test_reload_reports_a_bad_file_keeps_the_policy_and_versions_are_recorded(
    system: System,
) -> None:
    path = system.policy_path
    first_version = load_policy(path).version
    shown = await system.http.get("/v1/admin/policy", headers=ADMIN)
    assert shown.status_code == 200, shown.text
    assert (shown.json()["version"], shown.json()["last_error"]) == (first_version, None)
    assert shown.json()["policy"]["timeouts"]["idle_warning_after"] == "180s"
    _, agent_token = await system.create_agent("alice", online=False)
    assert (
        await system.http.get("/v1/admin/policy", headers=bearer(agent_token))
    ).status_code == 403

    early, early_visitor = await system.start_conversation()
    await system.wait_for_event(early, early_visitor, "queue.position_changed")
    assert (await system.conversation(early))["policy_version"] == first_version
    # Routing's workings are staff's: the visitor reads no policy version, rule or priority.
    seen = await system.conversation(early, early_visitor)
    assert (seen["policy_version"], seen["routing_rule"], seen["priority"]) == (None, None, None)

    path.write_text(
        path.read_text().replace('idle_warning_after = "3m"', 'idle_warning_after = "soon"')
    )
    refused = await system.reload_policy()
    assert refused.status_code == 422
    assert "timeouts.idle_warning_after" in refused.json()["detail"]
    kept = (await system.http.get("/v1/admin/policy", headers=ADMIN)).json()
    assert kept["version"] == first_version
    assert "timeouts.idle_warning_after" in kept["last_error"]

    write_policy(path, idle_warning_after="4m")
    reloaded = await system.reload_policy()
    assert reloaded.status_code == 200, reloaded.text
    second_version = reloaded.json()["version"]
    assert second_version not in (first_version, None) and reloaded.json()["last_error"] is None
    assert reloaded.json()["policy"]["timeouts"]["idle_warning_after"] == "240s"

    late, late_visitor = await system.start_conversation()
    await system.wait_for_event(late, late_visitor, "queue.position_changed")
    assert (await system.conversation(late))["policy_version"] == second_version
    # The one routed before keeps the version of its latest decision.
    assert (await system.conversation(early))["policy_version"] == first_version


async def test_an_admin_force_closes_any_conversation(system: System) -> None:
    agent_id, _ = await system.create_agent("alice", max_concurrent=1)
    cid, visitor = await system.start_conversation()
    await system.wait_for_state(cid, visitor, "active")
    closed = await system.close(cid)
    assert closed.status_code == 200, closed.text
    assert (closed.json()["state"], closed.json()["close_reason"]) == ("closed", "admin_closed")
    closing = await system.wait_for_event(cid, visitor, "conversation.closed")
    assert closing["data"]["close_reason"] == "admin_closed" and closing["data"]["text"]
    assert (await system.agent(agent_id))["load"] == 0
    again = await system.close(cid)
    assert again.status_code == 200, again.text  # the admin's close sent again: its answer
    assert again.json()["close_reason"] == "admin_closed"
    other = await system.close(cid, visitor)
    assert other.status_code == 409
