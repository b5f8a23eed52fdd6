"""The authorization matrix: for every route of the API, who may call it, with a valid body and
the kind of resource it acts on. The authorization test checks every caller against it; the
hostile-input test takes it to know whose credentials to send."""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import Enum
from typing import Any

from PIL import Image

from tests.support.api import Visit, bearer
from tests.support.callers import OWNER, Caller, World


class Subject(Enum):
    """What the route's {conversation_id}, {left_message_id}, {customer_id}, {ticket},
    {ticket_id} or {agent_id} is (an {agent_id} is Alice's unless the subject names another
    {delivery_id} or {agent_id} is (an {agent_id} is Alice's unless the subject names another
    agent)."""

    ACTIVE = "a conversation Alice holds"
    RATING_PENDING = "a conversation closed and waiting for its rating"
    OVERFLOWED = "a conversation closed with overflow (a left message is offered)"
    LEFT_MESSAGE = "an open left message of Alice's group"
    CUSTOMER = "the customer of a conversation Alice holds"
    CODEC_TICKET = "a codec ticket an admin asked for (the credential is in the path)"
    IDLE_AGENT = "an agent of `general`, offline, who holds nothing (its agent: that agent)"
    DEACTIVATED_AGENT = "an agent an admin deactivated"
    ATTACHMENT = "an image the visitor of a conversation Alice holds uploaded"
    TICKET = "a ticket of `general` made (by the admin) of a conversation Alice holds"
    WEBHOOK_DELIVERY = "a webhook delivery's id (the matrix's policy has no webhooks: unknown)"


@dataclass(frozen=True)
class Route:
    allowed: frozenset[Caller]
    body: dict[str, Any] | None = None
    subject: Subject = Subject.ACTIVE
    # The call changes its subject (closes it, moves it): each allowed caller gets a fresh one.
    consumes: bool = False
    # What an allowed caller gets: 2xx, unless the row says why a subject that serves every
    # caller must refuse them after their rights were checked (its test shows the 2xx).
    allowed_answer: str = "2xx"
    # Its query string; `{conversation_id}` in a value is the subject's (as in the body's
    # string values).
    query: dict[str, str] | None = None
    # A multipart body instead of `body` (an upload): the form's files.
    files: dict[str, tuple[str, bytes, str]] | None = None


ANYONE = frozenset(Caller)
ADMIN_ONLY = frozenset({Caller.ADMIN})
AGENT_SELF_OR_ADMIN = frozenset({Caller.ADMIN, Caller.OWNER_AGENT})  # {agent_id} is Alice
ITS_SIDES = frozenset({Caller.OWNER_AGENT, Caller.OWN_VISITOR})
ITS_SIDES_OR_ADMIN = ITS_SIDES | ADMIN_ONLY
ITS_STAFF = frozenset({Caller.OWNER_AGENT, Caller.SUPERVISOR, Caller.ADMIN})
ITS_SIDES_OR_STAFF = ITS_SIDES | ITS_STAFF
SUPERVISORS = frozenset({Caller.SUPERVISOR, Caller.OTHER_SUPERVISOR})
# Every member of staff with a valid token, whatever they hold.
STAFF_MEMBERS = (
    frozenset({Caller.ADMIN, Caller.OWNER_AGENT, Caller.OTHER_AGENT, Caller.FORMER_AGENT})
    | SUPERVISORS
)
# Whose credentials the input tests send (tests/test_hostile.py, test_no_server_errors.py): of
# the callers a route admits, these, in this order (each of them holds a token of its own).
TOKEN_HOLDERS = (Caller.ADMIN, Caller.APP, Caller.OWNER_AGENT, Caller.OWN_VISITOR)
# A ticket's workers: agents of its group (Alice), its group's supervisor (Sue), admins.
TICKET_STAFF = frozenset({Caller.OWNER_AGENT, Caller.SUPERVISOR, Caller.ADMIN})
# ...and the app, for its customer (the public side).
TICKET_STAFF_OR_APP = TICKET_STAFF | {Caller.APP}


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 3), (0, 128, 255)).save(out, "PNG")
    return out.getvalue()


def filled_body(route: Route, ids: dict[str, str]) -> dict[str, Any] | None:
    """The route's body, its string values' `{conversation_id}` (…) the subject's."""
    if route.body is None:
        return None
    return {
        key: value.format(**ids) if isinstance(value, str) and "{" in value else value
        for key, value in route.body.items()
    }


def callers_of(route: Route) -> list[Caller]:
    """The token holders the route admits (no one: a route whose credential is its path)."""
    if route.allowed == ANYONE:
        return [Caller.NOBODY]
    return [caller for caller in TOKEN_HOLDERS if caller in route.allowed]


# A photo to upload: a PNG of 4 by 3 pixels.
SMALL_PNG = _png()

# A payload as the Temporal UI sends it to be decoded: "alice" as JSON, unencrypted.
CODEC_BODY = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "ImFsaWNlIg=="}]}

ACCESS: dict[tuple[str, str], Route] = {
    ("GET", "/healthz"): Route(ANYONE),
    ("GET", "/docs"): Route(ANYONE),
    ("GET", "/docs/oauth2-redirect"): Route(ANYONE),
    ("GET", "/redoc"): Route(ANYONE),
    ("POST", "/v1/stream-tickets"): Route(
        AGENT_SELF_OR_ADMIN, body={"stream": f"/v1/agents/{OWNER}/stream"}
    ),
    ("POST", "/v1/agents"): Route(
        ADMIN_ONLY,
        body={"id": "carol", "name": "C", "skill_groups": ["general"], "max_concurrent": 1},
    ),
    ("GET", "/v1/agents/{agent_id}"): Route(AGENT_SELF_OR_ADMIN),
    ("PUT", "/v1/agents/{agent_id}/status"): Route(AGENT_SELF_OR_ADMIN, body={"status": "online"}),
    ("GET", "/v1/agents"): Route(ADMIN_ONLY),
    ("PATCH", "/v1/agents/{agent_id}"): Route(
        ADMIN_ONLY,
        body={"name": "Renamed", "skill_groups": ["general"], "max_concurrent": 2},
        subject=Subject.IDLE_AGENT,
    ),
    ("POST", "/v1/agents/{agent_id}/deactivate"): Route(
        ADMIN_ONLY, subject=Subject.IDLE_AGENT, consumes=True
    ),
    ("POST", "/v1/agents/{agent_id}/activate"): Route(
        ADMIN_ONLY, subject=Subject.DEACTIVATED_AGENT, consumes=True
    ),
    # Its agent asks with the token it replaces: a fresh agent for each caller allowed.
    ("POST", "/v1/agents/{agent_id}/token"): Route(
        AGENT_SELF_OR_ADMIN, subject=Subject.IDLE_AGENT, consumes=True
    ),
    ("GET", "/v1/agents/{agent_id}/conversations"): Route(AGENT_SELF_OR_ADMIN),
    ("GET", "/v1/agents/{agent_id}/events"): Route(AGENT_SELF_OR_ADMIN),
    ("GET", "/v1/agents/{agent_id}/stream"): Route(AGENT_SELF_OR_ADMIN),
    ("POST", "/v1/conversations"): Route(
        frozenset({Caller.APP, Caller.ADMIN}), body={"customer_id": "matrix"}
    ),
    ("GET", "/v1/conversations/{conversation_id}"): Route(ITS_SIDES_OR_STAFF),
    # Each supervisor lists their own groups' (tests/test_staff.py: another group's is 403).
    ("GET", "/v1/conversations"): Route(ADMIN_ONLY | SUPERVISORS),
    # Any staff token says whose it is (the workbench signs in with it).
    ("GET", "/v1/me"): Route(STAFF_MEMBERS),
    ("PATCH", "/v1/conversations/{conversation_id}/attributes"): Route(
        frozenset({Caller.APP, Caller.ADMIN}), body={"attributes": {"membership": "gold"}}
    ),
    # Alice holds the conversation: its supervisor's right is checked, then 409 (not queued).
    # tests/test_staff.py assigns a waiting one.
    ("POST", "/v1/conversations/{conversation_id}/assign"): Route(
        frozenset({Caller.SUPERVISOR, Caller.ADMIN}), body={"agent_id": OWNER}, allowed_answer="409"
    ),
    ("POST", "/v1/conversations/{conversation_id}/visitor-token"): Route(frozenset({Caller.APP})),
    ("POST", "/v1/conversations/{conversation_id}/messages"): Route(
        ITS_SIDES, body={"client_message_id": "matrix-1", "content": "hello"}
    ),
    ("POST", "/v1/conversations/{conversation_id}/read"): Route(ITS_SIDES, body={"seq": 1}),
    ("POST", "/v1/conversations/{conversation_id}/typing"): Route(ITS_SIDES),
    ("POST", "/v1/conversations/{conversation_id}/attachments"): Route(
        ITS_SIDES, files={"file": ("parcel.png", SMALL_PNG, "image/png")}
    ),
    ("GET", "/v1/conversations/{conversation_id}/attachments/{attachment_id}"): Route(
        ITS_SIDES_OR_STAFF, subject=Subject.ATTACHMENT
    ),
    ("GET", "/v1/conversations/{conversation_id}/attachments/{attachment_id}/thumbnail"): Route(
        ITS_SIDES_OR_STAFF, subject=Subject.ATTACHMENT
    ),
    ("GET", "/v1/conversations/{conversation_id}/events"): Route(ITS_SIDES_OR_STAFF),
    ("GET", "/v1/conversations/{conversation_id}/stream"): Route(ITS_SIDES_OR_STAFF),
    ("POST", "/v1/conversations/{conversation_id}/close"): Route(ITS_SIDES_OR_STAFF, consumes=True),
    ("POST", "/v1/conversations/{conversation_id}/transfer"): Route(
        ITS_STAFF,
        body={"to_skill_group": "general"},
        consumes=True,
    ),
    ("POST", "/v1/conversations/{conversation_id}/notes"): Route(
        ITS_STAFF, body={"content": "Prefers email"}
    ),
    ("POST", "/v1/conversations/{conversation_id}/rating"): Route(
        frozenset({Caller.OWN_VISITOR}),
        body={"score": 5},
        subject=Subject.RATING_PENDING,
        consumes=True,
    ),
    ("POST", "/v1/conversations/{conversation_id}/left-message"): Route(
        frozenset({Caller.OWN_VISITOR}),
        body={"content": "Call me back"},
        subject=Subject.OVERFLOWED,
        consumes=True,
    ),
    ("GET", "/v1/left-messages"): Route(STAFF_MEMBERS),
    ("POST", "/v1/left-messages/{left_message_id}/resolve"): Route(
        ITS_STAFF,  # Alice is an agent of its group and Sue its supervisor; Bob and Oscar not
        body={"note": "Called back"},
        subject=Subject.LEFT_MESSAGE,
        consumes=True,
    ),
    # Any agent lists their groups' canned replies; filled for a conversation, its staff alone.
    ("GET", "/v1/canned-replies"): Route(
        ITS_STAFF,
        query={"q": "hello", "conversation_id": "{conversation_id}"},
    ),
    # Tickets: made of a conversation by its staff, of a left message by its group's staff
    # (which it resolves: once), or for a customer of the group the caller works in.
    ("POST", "/v1/tickets"): Route(
        TICKET_STAFF_OR_APP,
        body={"subject": "Parcel lost", "customer_id": "matrix", "skill_group": "general"},
    ),
    ("POST", "/v1/conversations/{conversation_id}/ticket"): Route(
        ITS_STAFF, body={"subject": "Parcel lost"}
    ),
    ("POST", "/v1/left-messages/{left_message_id}/ticket"): Route(
        ITS_STAFF, body={"subject": "Call back"}, subject=Subject.LEFT_MESSAGE, consumes=True
    ),
    # Each lists the tickets they work on (the app: every customer's, their public side).
    ("GET", "/v1/tickets"): Route(STAFF_MEMBERS | {Caller.APP}),
    ("GET", "/v1/tickets/{ticket_id}"): Route(TICKET_STAFF_OR_APP, subject=Subject.TICKET),
    ("PATCH", "/v1/tickets/{ticket_id}"): Route(
        TICKET_STAFF, body={"priority": "high"}, subject=Subject.TICKET
    ),
    ("POST", "/v1/tickets/{ticket_id}/comments"): Route(
        TICKET_STAFF_OR_APP, body={"content": "Any news?", "public": True}, subject=Subject.TICKET
    ),
    # Linked already (made of it): the same answer again.
    ("POST", "/v1/tickets/{ticket_id}/links"): Route(
        TICKET_STAFF, body={"conversation_id": "{conversation_id}"}, subject=Subject.TICKET
    ),
    ("GET", "/v1/tickets/{ticket_id}/events"): Route(TICKET_STAFF_OR_APP, subject=Subject.TICKET),
    ("GET", "/v1/monitor"): Route(STAFF_MEMBERS),  # each their own groups' figures
    ("GET", "/v1/admin/policy"): Route(ADMIN_ONLY),
    ("POST", "/v1/admin/policy/reload"): Route(ADMIN_ONLY),
    ("GET", "/v1/admin/conversations/{conversation_id}/snapshot"): Route(ADMIN_ONLY),
    ("GET", "/v1/admin/bot/unanswered"): Route(ADMIN_ONLY),
    ("GET", "/v1/admin/webhooks/deliveries"): Route(
        ADMIN_ONLY, query={"status": "failed", "limit": "10"}
    ),
    # The admin is let through, to hear of no such delivery (tests/test_webhooks.py sends one
    # again for real).
    ("POST", "/v1/admin/webhooks/deliveries/{delivery_id}/redeliver"): Route(
        ADMIN_ONLY, subject=Subject.WEBHOOK_DELIVERY, allowed_answer="404"
    ),
    ("GET", "/v1/customers/{customer_id}/conversations"): Route(
        ITS_STAFF, subject=Subject.CUSTOMER
    ),
    ("POST", "/v1/customers/{customer_id}/erase"): Route(
        ADMIN_ONLY, subject=Subject.CUSTOMER, consumes=True
    ),
    ("POST", "/v1/codec/decode"): Route(ADMIN_ONLY, body=CODEC_BODY),
    ("POST", "/v1/codec/encode"): Route(ADMIN_ONLY, body=CODEC_BODY),
    ("POST", "/v1/codec/tickets"): Route(ADMIN_ONLY),
    # The demo's backend (development only): it plays an app's backend, whose own sign-in is
    # not ours, so anyone may start the named customer's conversation (production has no such
    # route: tests/test_widget.py).
    ("POST", "/demo/conversations"): Route(ANYONE, body={"customer_id": "demo-matrix"}),
    # The ticket in the path is the credential (the Temporal UI sends none of ours): whatever
    # the Authorization header says. A bad or expired ticket: tests/test_codec.py.
    ("POST", "/v1/codec/tickets/{ticket}/decode"): Route(
        ANYONE, body=CODEC_BODY, subject=Subject.CODEC_TICKET
    ),
}


async def make_subject(world: World, kind: Subject) -> tuple[Visit, dict[str, str]]:
    """A new subject of this kind and the path ids that name it (`World.path` fills them in)."""
    if kind == Subject.LEFT_MESSAGE:
        owner = await world.active()  # a conversation only for the visitor's credentials
        return owner, {"left_message_id": str(await world.left_message())}
    if kind == Subject.CUSTOMER:
        conversation = await world.active()
        return conversation, {"customer_id": (await world.view(conversation))["customer_id"]}
    if kind in (Subject.IDLE_AGENT, Subject.DEACTIVATED_AGENT):
        owner = await world.active()  # a conversation only for the visitor's credentials
        agent_id = await world.idle_agent()
        if kind == Subject.DEACTIVATED_AGENT:
            deactivated = await world.api.deactivate_agent(agent_id)
            assert deactivated.status_code == 200, deactivated.text
        return owner, {"agent_id": agent_id}
    if kind == Subject.WEBHOOK_DELIVERY:
        owner = await world.active()  # a conversation only for the visitor's credentials
        return owner, {"delivery_id": "2147483647"}
    if kind == Subject.CODEC_TICKET:
        owner = await world.active()  # a conversation only for the visitor's credentials
        asked = await world.api.codec_ticket()
        assert asked.status_code == 201, asked.text
        return owner, {"ticket": asked.json()["ticket"]}
    if kind == Subject.ATTACHMENT:
        conversation = await world.active()
        uploaded = await world.api.http.post(
            f"/v1/conversations/{conversation.conversation_id}/attachments",
            headers=bearer(conversation.token),
            files={"file": ("parcel.png", SMALL_PNG, "image/png")},
        )
        assert uploaded.status_code == 201, uploaded.text
        return conversation, {
            "conversation_id": conversation.conversation_id,
            "attachment_id": uploaded.json()["attachment_id"],
        }
    if kind == Subject.TICKET:
        conversation = await world.active()
        made = await world.api.ticket_from_conversation(
            conversation.conversation_id, subject="Parcel lost"
        )
        assert made.status_code == 201, made.text
        return conversation, {
            "conversation_id": conversation.conversation_id,
            "ticket_id": str(made.json()["id"]),
        }
    maker = {
        Subject.ACTIVE: world.active,
        Subject.RATING_PENDING: world.rating_pending,
        Subject.OVERFLOWED: world.overflowed,
    }[kind]
    conversation = await maker()
    return conversation, {"conversation_id": conversation.conversation_id}
