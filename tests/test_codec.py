"""The payload codec (temporal_client.py) and its endpoint (api/routes/codec.py): with
SWITCHBOARD_PAYLOAD_KEY set, what Temporal keeps of a conversation is ciphertext, read back
only through the codec endpoint by signed-in staff; keys rotate without a stop; payloads from
before a key pass; production refuses to start without one."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from api.credentials import visitor_token
from api.routes.codec import codec_ticket
from settings import PROJECT_ROOT, Settings
from store.db import Database
from temporal_client import ENCRYPTED, KEY_ID, PayloadCipher, payload_codec, payload_key_id
from tests.support.api import ADMIN_TOKEN, APP_KEY, ApiClient
from tests.support.backends import on_sqlite_alone
from tests.support.histories import completed, payloads, plain_text, runs, sdk_bookkeeping
from tests.support.policy import DEFAULT_GROUPS, NEW_PAYLOAD_KEY, PAYLOAD_KEY
from tests.support.processes import Deployment
from tests.support.system import StartSystem, System
from tests.support.temporal import address, binary
from workflows.gateway import workflow_id

# Names that must never be read in plain text outside the search attributes.
AGENT = "zephyr-codec-agent"
GROUP = "returns_desk"
GROUPS = DEFAULT_GROUPS + f'[[skill_groups]]\nname = "{GROUP}"\n'
ROUTING = f'[[routing]]\nwhen = {{}}\nskill_group = "{GROUP}"\n'


def _json(payload: dict[str, Any]) -> Any:
    """A protobuf-JSON payload's data, itself JSON."""
    return json.loads(base64.b64decode(payload["data"]))


def _as_json(payload: Payload) -> dict[str, Any]:
    """A payload in protobuf JSON, as the Temporal UI and CLI send it."""
    return {
        "metadata": {
            key: base64.b64encode(value).decode() for key, value in payload.metadata.items()
        },
        "data": base64.b64encode(payload.data).decode(),
    }


def _plain(value: Any) -> dict[str, Any]:
    """A value as a JSON payload, unencrypted (as written before a key was set)."""
    return _as_json(Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode()))


def _key_ids(histories: list[WorkflowHistory]) -> set[str]:
    return {
        payload.metadata[KEY_ID].decode() for history in histories for payload in payloads(history)
    }


async def _encrypted(system: System, conversation_id: str) -> list[WorkflowHistory]:
    """Every run of the conversation as anyone reading the server sees it (a client without
    the codec), checked to hold nothing but ciphertext outside its search attributes (and the
    SDK's own marker bookkeeping, checked to name nobody): no agent id, no group name."""
    histories = await runs(system.env.client, conversation_id)
    held = [payload for history in histories for payload in payloads(history)]
    assert held, "the histories hold no payloads at all"
    assert {payload.metadata.get("encoding") for payload in held} == {ENCRYPTED}
    for history in histories:
        text = " ".join(plain_text(history))
        assert AGENT not in text and GROUP not in text, f"plain text in {history.workflow_id}"
        for payload in sdk_bookkeeping(history):
            assert AGENT.encode() not in payload.data and GROUP.encode() not in payload.data
        everything = b"".join(event.SerializeToString() for event in history.events)
        assert b"customer-" not in everything
    return histories


async def _lifecycle(system: ApiClient, *, agent: str = AGENT) -> tuple[str, str]:
    """A conversation served by `agent` in GROUP: messages both ways, closed by the agent."""
    alice = await system.create_agent(agent, skill_groups=[GROUP])
    cid, visitor = await system.start_conversation()
    assert (await system.wait_for_state(cid, None, "active"))["agent_id"] == agent
    await system.say(cid, visitor, "Where is my parcel?")
    await system.say(cid, alice.token, "It ships tomorrow.")
    closing = await system.close(cid, alice.token)
    assert closing.status_code == 200, closing.text
    await system.wait_for_event(cid, visitor, "rating.invited")
    return cid, visitor


async def test_a_whole_conversation_leaves_only_ciphertext_in_temporal_and_the_codec_reads_it(
    dev_env: WorkflowEnvironment, make_system: StartSystem
) -> None:
    system = await make_system(dev_env, payload_key=PAYLOAD_KEY, groups=GROUPS, routing=ROUTING)
    cid, visitor = await _lifecycle(system)
    rated = await system.rate(cid, visitor, 5, resolved=True)
    assert rated.status_code == 201, rated.text
    handle = system.client.get_workflow_handle(workflow_id(cid))
    await completed(handle, timeout=60)

    [history] = await _encrypted(system, cid)
    assert _key_ids([history]) == {payload_key_id(base64.b64decode(PAYLOAD_KEY))}
    started = history.events[0].workflow_execution_started_event_attributes
    signals = [
        event.workflow_execution_signaled_event_attributes
        for event in history.events
        if event.HasField("workflow_execution_signaled_event_attributes")
    ]
    assigned = next(signal for signal in signals if signal.signal_name == "agent_assigned")
    sent = [_as_json(started.input.payloads[0]), _as_json(assigned.input.payloads[0])]

    # The CLI's way (`--codec-auth "Bearer <admin token>"`), and the UI's (a ticket).
    decoded = await system.codec("decode", sent)
    assert decoded.status_code == 200, decoded.text
    flow, assignment = decoded.json()["payloads"]
    assert base64.b64decode(flow["metadata"]["encoding"]) == b"json/plain"
    assert _json(flow)["conversation_id"] == cid and _json(flow)["channel"] == "web"
    assert _json(assignment) == {"agent_id": AGENT}
    endpoint = (await system.codec_ticket()).json()["endpoint"]
    assert (await system.decode_with_ticket(endpoint, sent)).json() == decoded.json()


@pytest.mark.e2e
# The codec is the processes' alone: which database holds the conversation does not matter.
@on_sqlite_alone("empty_db")
async def test_the_temporal_cli_reads_a_history_through_the_codec_endpoint(
    empty_db: Database, deploy: Callable[..., Deployment], dev_env: WorkflowEnvironment
) -> None:
    """As deployed (worker and API processes with the key), read with the real `temporal` CLI:
    ciphertext without the codec endpoint, the conversation's ids and names with it."""
    keyed = {"SWITCHBOARD_PAYLOAD_KEY": PAYLOAD_KEY}
    deployment = deploy(empty_db.url, extra_env=keyed, groups=GROUPS, routing=ROUTING)
    async with deployment.client() as api:
        cid, _visitor = await _lifecycle(api)
    show = [
        binary("temporal"),
        *("workflow", "show", "--workflow-id", workflow_id(cid)),
        *("--address", address(dev_env), "--output", "json"),
    ]

    async def cli(*options: str) -> tuple[int, str]:
        shown = await asyncio.create_subprocess_exec(
            *show, *options, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await shown.communicate()
        return shown.returncode or 0, output.decode()

    def assignment(output: str) -> dict[str, Any]:
        """The agent_assigned signal's payload in the CLI's JSON."""
        for event in json.loads(output)["events"]:
            signaled = event.get("workflowExecutionSignaledEventAttributes", {})
            if signaled.get("signalName") == "agent_assigned":
                return signaled["input"]["payloads"][0]
        raise AssertionError(f"no agent_assigned signal in {output[:2000]}")

    code, plain = await cli()
    assert code == 0, plain
    encrypted = base64.b64encode(ENCRYPTED).decode()
    assert assignment(plain)["metadata"]["encoding"] == encrypted
    codec = ("--codec-endpoint", f"{deployment.urls[0]}/v1/codec")
    code, decoded = await cli(*codec, "--codec-auth", f"Bearer {ADMIN_TOKEN}")
    assert code == 0, decoded
    assert _json(assignment(decoded)) == {"agent_id": AGENT}
    assert encrypted not in decoded  # every payload read back
    code, refused = await cli(*codec, "--codec-auth", "Bearer not-the-admin-token")
    assert code != 0 or assignment(refused)["metadata"]["encoding"] == encrypted, refused


async def test_a_rotated_key_decrypts_what_it_encrypted_while_the_new_one_encrypts(
    dev_env: WorkflowEnvironment, make_system: StartSystem, policy_file: Callable[..., Path]
) -> None:
    policy = policy_file(groups=GROUPS, routing=ROUTING)
    before = await make_system(dev_env, payload_key=PAYLOAD_KEY, policy=policy)
    alice = await before.create_agent(AGENT, skill_groups=[GROUP])
    cid, visitor = await before.start_conversation()
    await before.wait_for_state(cid, visitor, "active")
    await before.say(cid, visitor, "Where is my parcel?")
    await before.workflow(cid, seen=1)
    await before.stop()

    # Redeployed with `<new>,<old>`: the running conversation goes on to its end.
    rotated = f"{NEW_PAYLOAD_KEY},{PAYLOAD_KEY}"
    after = await make_system(
        dev_env, payload_key=rotated, policy=policy, task_queue=before.task_queue
    )
    await after.say(cid, alice.token, "It ships tomorrow.")
    closing = await after.close(cid, alice.token)
    assert closing.status_code == 200, closing.text
    assert (await after.rate(cid, visitor, 4)).status_code == 201
    await completed(after.client.get_workflow_handle(workflow_id(cid)), timeout=60)

    old_id = payload_key_id(base64.b64decode(PAYLOAD_KEY))
    new_id = payload_key_id(base64.b64decode(NEW_PAYLOAD_KEY))
    histories = await _encrypted(after, cid)
    assert _key_ids(histories) == {old_id, new_id}
    [first] = [payload for payload in payloads(histories[0])][:1]
    assert first.metadata[KEY_ID].decode() == old_id  # the start, before the rotation

    # The codec endpoint: the new key encrypts, both decrypt; without the old key, its
    # payloads are refused (422, naming the key), not passed off as something else.
    encoded = (await after.codec("encode", [_plain("hello")])).json()["payloads"]
    assert base64.b64decode(encoded[0]["metadata"][KEY_ID]).decode() == new_id
    decoded = await after.codec("decode", [*encoded, _as_json(first)])
    assert decoded.status_code == 200, decoded.text
    assert _json(decoded.json()["payloads"][0]) == "hello"
    async with after.another_api(payload_key=NEW_PAYLOAD_KEY) as without_old:
        refused = await without_old.codec("decode", [_as_json(first)])
        assert refused.status_code == 422 and old_id in refused.text, refused.text


async def test_payloads_from_before_the_key_pass_and_without_a_key_nothing_changes(
    system: System,
) -> None:
    cipher = PayloadCipher([base64.b64decode(PAYLOAD_KEY)])
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"written before the key"')
    assert await cipher.decode([plain]) == [plain]
    [sealed] = await cipher.encode([plain])
    assert sealed.metadata["encoding"] == ENCRYPTED and b"before" not in sealed.data
    assert await cipher.decode([sealed]) == [plain]
    flipped = bytes([sealed.data[-1] ^ 0xFF])  # always a change (a fixed byte is 1 in 256 not)
    tampered = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + flipped)
    with pytest.raises(ValueError, match="does not open"):
        await cipher.decode([tampered])

    assert payload_codec(system.settings) is None  # the tests' default, as development's
    sent = [_plain("as it was"), _as_json(sealed)]
    for way in ("decode", "encode"):
        answered = await system.codec(way, sent)
        assert answered.status_code == 200, answered.text
        assert answered.json() == {"payloads": sent}


async def test_the_codec_endpoint_is_for_signed_in_admins_only(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    sent = [_plain("alice")]
    agent = await system.create_agent()
    cid, visitor = await system.start_conversation()
    for token, status in [
        ("", 401),
        ("not-a-token", 401),
        (APP_KEY, 403),
        (agent.token, 403),
        (visitor, 403),
    ]:
        for way in ("decode", "encode"):
            assert (await system.codec(way, sent, token)).status_code == status, (way, token)
        assert (await system.codec_ticket(token)).status_code == status, token
    assert (await system.codec("decode", sent)).status_code == 200

    asked = await system.codec_ticket()
    assert asked.status_code == 201 and asked.headers["Cache-Control"] == "no-store"
    ticket = asked.json()
    assert ticket["endpoint"] == f"http://switchboard/v1/codec/tickets/{ticket['ticket']}"
    assert (await system.decode_with_ticket(ticket["endpoint"], sent)).status_code == 200
    logged = [str(record.msg) for record in caplog.records]
    assert any("/v1/codec/tickets/{ticket}/decode" in line for line in logged)
    assert not any(ticket["ticket"] in line for line in logged)  # a credential: never logged

    # A ticket decodes only; one altered, expired, of a stream, or of an admin token that has
    # since changed, opens nothing.
    expired = codec_ticket(system.settings, seconds=-1)
    stream = (await system.stream_ticket(f"/v1/conversations/{cid}/stream")).json()["ticket"]
    base = "http://switchboard/v1/codec/tickets"
    mac_end = ticket["ticket"][-1]
    altered = ticket["ticket"][:-1] + ("1" if mac_end == "0" else "0")
    for refused in [altered, expired, stream, visitor_token(system.settings, cid)]:
        answered = await system.decode_with_ticket(f"{base}/{refused}", sent)
        assert answered.status_code == 401, (refused, answered.text)
    encode = await system.http.post(f"{ticket['endpoint']}/encode", json={"payloads": sent})
    assert encode.status_code in (401, 404, 405)
    async with system.another_api(admin_token="a-new-admin-token-0123456789") as replaced:
        assert (await replaced.decode_with_ticket(ticket["endpoint"], sent)).status_code == 401


async def test_bad_bodies_get_a_clear_422(system: System) -> None:
    for payloads_sent in [
        [{"metadata": {"encoding": "not base64!"}, "data": ""}],
        [{"metadata": {}, "data": "@@@"}],
        [{"metadata": {"encoding": 7}, "data": ""}],
        [{"metadata": {}, "data": "", "surprise": 1}],
        ["a payload"],
    ]:
        answered = await system.codec("decode", payloads_sent)
        assert answered.status_code == 422, (payloads_sent, answered.text)
    unknown = _as_json(
        Payload(metadata={"encoding": ENCRYPTED, KEY_ID: b"0123456789abcdef"}, data=b"x" * 40)
    )
    assert (await system.codec("decode", [unknown])).status_code == 200  # no key: as it is
    too_many = [_plain(n) for n in range(1001)]
    assert (await system.codec("decode", too_many)).status_code == 422


async def test_the_temporal_ui_may_call_from_its_origin(system: System) -> None:
    ui = "http://127.0.0.1:8233"
    async with system.another_api(cors_origins=[ui]) as api:
        preflight = await api.http.options(
            "/v1/codec/tickets/stk_x/decode",
            headers={
                "Origin": ui,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["Access-Control-Allow-Origin"] == ui
    assert "x-namespace" in preflight.headers["Access-Control-Allow-Headers"].lower()


def test_production_refuses_to_start_without_a_payload_key_or_with_a_malformed_one() -> None:
    strong = {"admin_token": "a" * 32, "app_key": "b" * 32, "secret_key": "c" * 32}
    with pytest.raises(ValueError, match="production needs SWITCHBOARD_PAYLOAD_KEY"):
        Settings(env="production", **strong)
    assert Settings(env="production", payload_key=f"{NEW_PAYLOAD_KEY},{PAYLOAD_KEY}", **strong)
    short = base64.b64encode(b"sixteen bytes!!!").decode()
    for malformed, which in [
        ("not base64 at all", "key 1"),
        (short, "key 1"),
        (f"{PAYLOAD_KEY},{short}", "key 2"),
        (f"{PAYLOAD_KEY},", "empty key"),
    ]:
        with pytest.raises(ValueError, match=which) as refused:
            Settings(env="test", payload_key=malformed)
        assert short not in str(refused.value)  # the error names the key, never repeats it
    # As deployed: the worker (and the API) stop at start, saying why.
    started = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=PROJECT_ROOT,
        env={
            "SWITCHBOARD_ENV": "production",
            **{f"SWITCHBOARD_{name.upper()}": value for name, value in strong.items()},
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode != 0
    assert "SWITCHBOARD_PAYLOAD_KEY" in started.stderr


def test_the_workflow_sandbox_never_loads_the_cryptography_library() -> None:
    """The sandbox imports the workflows package afresh for every run: the codec must stay
    outside it (in the worker's own event loop)."""
    probe = "import sys, workflows; print('cryptography' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "False"
