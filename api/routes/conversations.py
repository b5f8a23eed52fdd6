"""Conversations: start, look at, message, follow events, write notes, close, transfer, rate."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.routing import APIRoute
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.credentials import visitor_token
from api.deps import (
    MAX_SEQ,
    ConversationOfCaller,
    ConversationOfReader,
    ConversationOfStreamer,
    CurrentPrincipal,
    Principal,
    Services,
    ServicesDep,
    StreamPrincipal,
    StreamStart,
    conversation_of_caller,
    get_services,
    load_conversation,
    require,
    resume_after,
    suspect_body,
    unstorable,
)
from api.limits import too_many
from api.observability import bind_path_ids
from api.presence import keep_visitor_present
from api.routes import operation
from api.schemas import (
    BEYOND_NEWEST,
    ENGINE_DOWN,
    UNAUTHORIZED,
    AttachmentPublic,
    AttributesPublic,
    AttributesUpdate,
    ConversationAssign,
    ConversationCreate,
    ConversationCreated,
    ConversationPublic,
    EventPage,
    EventPublic,
    MessageCreate,
    MessagePublic,
    NoteCreate,
    RatingCreate,
    RatingPublic,
    ReadReceipt,
    ReadState,
    SopPublic,
    TransferCreate,
    TypingPublic,
    errors,
    too_many_requests,
)
from api.stream_access import stream_access
from api.streams import (
    LIVE_CHANNEL,
    SENDER,
    conversation_log,
    event_public,
    event_stream,
    live_signal_payload,
    stream_keys,
)
from dispatcher import notify_assigned
from domain.errors import ConversationEnded, EngineUnavailable
from domain.policy import Policy
from domain.types import (
    CLOSED_AT_REQUEST_OF,
    CloseRequest,
    ConversationState,
    MessagePosted,
    RatingStatus,
    RatingSubmission,
    Role,
    TransferRequest,
)
from store.agents import find_agent
from store.assignment import CannotTake, NotWaiting, assign_to
from store.attachments import AttachmentNotUsable
from store.conversations import (
    AttributesTooLarge,
    ConversationErased,
    ConversationView,
    SeqNotReached,
    change_attributes,
    conversation_events,
    group_conversations,
    keep_rating_comment,
    open_conversation,
    record_read,
    view_conversation,
)
from store.db import Database, notify
from store.erasure import ERASED
from store.events import ConversationNotFound
from store.lifecycle import transfer_took_effect
from store.messages import (
    ConversationClosed,
    ConversationNotActive,
    MessageRecord,
    NotYourConversation,
    store_message,
)
from store.models import Conversation, utcnow
from store.notes import add_note, add_transfer_note
from store.rates import RateLimited

NOT_ACTIVE = "the conversation is not active"

router = APIRouter(prefix="/v1/conversations")
conversation_router = router  # other modules add conversation sub-resources to it

_ACCESS = {
    **UNAUTHORIZED,
    403: "Not your conversation, or the wrong role",
    404: "Unknown conversation",
}


def conversation_public(
    view: ConversationView, *, staff: bool, policy: Policy | None = None
) -> ConversationPublic:
    """The conversation as staff or as its visitor see it (a visitor sees the agent's display
    name, not their id). With `policy`, staff read the SOP it has for the conversation."""
    conversation = view.conversation
    serving = conversation.state != ConversationState.QUEUED
    sop = policy.sop_for(conversation.visitor_context()) if staff and policy is not None else None
    return ConversationPublic(
        id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.channel,
        state=conversation.state,
        close_reason=conversation.close_reason,
        skill_group=conversation.skill_group,
        # How routing decided is staff's (a visitor would read their tier in a priority).
        priority=conversation.priority if staff else None,
        routing_rule=conversation.routing_rule if staff else None,
        policy_version=conversation.policy_version if staff else None,
        agent_id=conversation.agent_id if serving and staff else None,
        agent_name=view.agent_name if serving else None,
        queue_position=view.queue_position,
        estimated_wait=view.estimated_wait,
        last_seq=conversation.last_seq,
        visitor_read_seq=conversation.visitor_read_seq,
        agent_read_seq=conversation.agent_read_seq,
        rating=RatingPublic(
            status=conversation.rating_status,
            score=conversation.rating_score,
            resolved=conversation.rating_resolved,
            expires_at=conversation.rating_expires_at,
        ),
        created_at=conversation.created_at,
        closed_at=conversation.closed_at,
        **(_staff_context(conversation) if staff else {}),
        sop=None if sop is None else SopPublic.model_validate(sop, from_attributes=True),
    )


def _staff_context(conversation: Conversation) -> dict[str, Any]:
    """What staff alone read of a conversation: where it began, what the app told of the
    customer, and the bot's part."""
    return {
        "entry": conversation.entry,
        "tier": conversation.tier,
        "language": conversation.language,
        "order_id": conversation.order_id,
        "attributes": conversation.attributes,
        "bot": conversation.bot,
        "handoff_reason": conversation.handoff_reason,
    }


async def conversation_view(
    db: Database, conversation_id: str, *, staff: bool, policy: Policy | None = None
) -> ConversationPublic:
    try:
        view = await run_in_threadpool(view_conversation, db, conversation_id=conversation_id)
    except ConversationNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown conversation") from None
    return conversation_public(view, staff=staff, policy=policy)


@router.post(
    "",
    **operation("conversations", "start"),
    status_code=status.HTTP_201_CREATED,
    response_model=ConversationCreated,
    summary="Start a conversation (or get the customer's open one back, with 200)",
    responses={
        200: {"model": ConversationCreated, "description": "The customer's open conversation"},
        **errors({**UNAUTHORIZED, 403: "Only your app's backend (or an admin)", **ENGINE_DOWN}),
        **too_many_requests(
            "Too many conversations started in the last minute with your key, or by this "
            "customer in the last hour"
        ),
    },
    dependencies=[require(Role.APP, Role.ADMIN)],
)
async def start_conversation(
    body: ConversationCreate, principal: CurrentPrincipal, services: ServicesDep, response: Response
) -> ConversationCreated:
    services.limits.conversation_starts.take(
        principal.role, principal.id, over="conversations a minute with your key"
    )
    per_customer = services.settings.max_conversations_per_customer_per_hour
    try:
        opened = await run_in_threadpool(
            lambda: open_conversation(
                services.db,
                customer_id=body.customer_id,
                channel=body.channel,
                entry=body.entry,
                tier=body.tier,
                language=body.language,
                order_id=body.order_id,
                attributes=body.attributes,
                max_per_customer=per_customer,
            )
        )
    except RateLimited as limited:
        raise too_many(
            f"this customer started {per_customer} conversations in the last hour",
            limited.retry_after,
        ) from None
    conversation, created = opened.conversation, opened.created
    # If this fails (503), the reconciler starts it; so does the customer's retry.
    await services.temporal.start(
        conversation, policy=services.policy.current(), task_queue=services.settings.task_queue
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    view = await conversation_view(services.db, conversation.id, staff=False)
    return ConversationCreated(
        **view.model_dump(), visitor_token=visitor_token(services.settings, conversation.id)
    )


@router.get(
    "",
    **operation("conversations", "list"),
    response_model=list[ConversationPublic],
    summary="The conversations of the groups the caller oversees (a supervisor's, or any for "
    "an admin): waiting and active ones unless a state is given, the longest waiting first",
    responses=errors({**UNAUTHORIZED, 403: "Supervisors (of that group) and admins only"}),
    dependencies=[require(Role.SUPERVISOR, Role.ADMIN)],
)
async def list_group_conversations(
    principal: CurrentPrincipal,
    services: ServicesDep,
    skill_group: Annotated[
        str | None, Query(max_length=64, description="One group (default: all the caller's)")
    ] = None,
    state: Annotated[
        ConversationState | None, Query(description="One state (default: bot, queued and active)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> list[ConversationPublic]:
    if principal.role == Role.SUPERVISOR:
        overseen = principal.skill_groups
    else:
        overseen = frozenset(services.policy.current().skill_group_names)
    if skill_group is not None and skill_group not in overseen:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"you do not oversee {skill_group!r}")
    groups = sorted(overseen) if skill_group is None else [skill_group]
    states = (
        [ConversationState.BOT, ConversationState.QUEUED, ConversationState.ACTIVE]
        if state is None
        else [state]
    )
    views = await run_in_threadpool(
        lambda: group_conversations(services.db, skill_groups=groups, states=states, limit=limit)
    )
    return [conversation_public(view, staff=True) for view in views]


@router.get(
    "/{conversation_id}",
    **operation("conversations", "get"),
    response_model=ConversationPublic,
    summary="A conversation's state, agent, queue position and rating; for staff, its SOP",
    responses=errors(_ACCESS),
)
async def get_conversation(
    conversation: ConversationOfReader, principal: CurrentPrincipal, services: ServicesDep
) -> ConversationPublic:
    return await conversation_view(
        services.db,
        conversation.id,
        staff=principal.is_staff,
        policy=services.policy.current() if principal.is_staff else None,
    )


def _message_public(
    message: MessageRecord, attachment: dict[str, Any] | None = None
) -> MessagePublic:
    return MessagePublic(
        attachment=None if attachment is None else AttachmentPublic(**attachment),
        id=message.id,
        conversation_id=message.conversation_id,
        seq=message.seq,
        sender_role=message.sender_role,
        sender_id=message.sender_id,
        client_message_id=message.client_message_id,
        type=message.type,
        content=message.content,
        created_at=message.created_at,
    )


async def post_message(
    body: MessageCreate,
    conversation_id: Annotated[str, Path(max_length=64)],
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> Response:
    # The hot path (every message of every chat): one trip to a thread, one write transaction,
    # one signal. Who may post is checked inside that transaction, which loads the conversation
    # anyway; any other caller gets the usual 404 or 403 the long way.
    if not _posts_own(principal, conversation_id):
        conversation = await load_conversation(services, conversation_id)
        await conversation_of_caller(principal, conversation)
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only its visitor or its agent")
    return await _store_and_tell(services, principal, conversation_id, body)


def _posts_own(principal: Principal, conversation_id: str) -> bool:
    """An agent (whether they hold it is checked as it is stored), or this conversation's
    visitor."""
    return principal.role == Role.AGENT or (
        principal.role == Role.VISITOR and principal.conversation_id == conversation_id
    )


async def _store_and_tell(
    services: Services, principal: Principal, conversation_id: str, body: MessageCreate
) -> Response:
    """Store the message, then tell its workflow; the answer (both ways to post come here)."""
    limit = services.settings.max_message_chars
    if len(body.content) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, detail=f"content is longer than {limit} characters"
        )
    per_minute = services.settings.max_messages_per_minute
    try:
        stored = await run_in_threadpool(
            lambda: store_message(
                services.db,
                conversation_id=conversation_id,
                sender_role=principal.role,
                sender_id=principal.id,
                client_message_id=body.client_message_id,
                type=body.type,
                content=body.content,
                attachment_id=body.attachment_id,
                max_per_minute=per_minute,
            )
        )
    except AttachmentNotUsable as unusable:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=unusable.reason) from None
    except ConversationNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown conversation") from None
    except NotYourConversation:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="not your conversation") from None
    except ConversationClosed:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the conversation is closed") from None
    except ConversationNotActive:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=NOT_ACTIVE) from None
    except RateLimited as limited:
        raise too_many(
            f"more than {per_minute} messages a minute from you in this conversation",
            limited.retry_after,
        ) from None
    message = stored.message
    if stored.created:
        # In the log from here on (a stream that polls may show it already): wake this
        # process's streams now, not after the workflow's signal (most of a POST's time).
        services.hints.wake(*stream_keys(conversation_id, stored.holder))
    # Stored first, then the workflow is told; only then is the message acknowledged (2xx).
    # A repeat is told again (an earlier try may have stored it and then failed to signal):
    # the workflow ignores a seq it has seen.
    # If that fails (503) and the client never sends it again, the reconciler tells it.
    try:
        await services.temporal.post_message(
            conversation_id,
            MessagePosted(message_id=message.id, seq=message.seq, sender_role=message.sender_role),
        )
    except ConversationEnded:
        if stored.created:
            raise
        # Stored while the conversation was open, and its workflow has finished since: the
        # message is in the transcript, so the repeat answers what the first try did.
    else:
        services.signalled.add(conversation_id, message.seq)
    return Response(
        _message_public(message, stored.attachment).model_dump_json(),
        status_code=status.HTTP_201_CREATED if stored.created else status.HTTP_200_OK,
        media_type="application/json",
    )


# The path parameter's limit, as post_message declares it.
_MAX_ID_CHARS = 64


async def _common_message_post(
    request: Request,
) -> tuple[Services, Principal, str, MessageCreate] | None:
    """What post_message would be called with, if the request is the common one: no query, a
    caller the front door authenticated posting into their own conversation, and a JSON
    object body that validates with nothing in it that refuse_unstorable_input would look at
    twice. None: anything else (the route's usual handler answers it, errors and all)."""
    scope = request.scope
    if scope.get("query_string"):
        return None
    principal = scope.get("state", {}).get("principal")
    conversation_id = scope["path_params"].get("conversation_id")
    if (
        not isinstance(principal, Principal)
        or not isinstance(conversation_id, str)
        or len(conversation_id) > _MAX_ID_CHARS
        or unstorable(conversation_id) is not None
        or not _posts_own(principal, conversation_id)
        or request.headers.get("content-type") != "application/json"
    ):
        return None
    raw = await request.body()  # kept on the request: the usual handler reads the same bytes
    if not raw or suspect_body(raw):
        return None
    try:
        value = json.loads(raw)
        if not isinstance(value, dict):
            return None
        body = MessageCreate.model_validate(value)  # as FastAPI validates the body
    except (ValueError, RecursionError):  # ValidationError is a ValueError
        return None
    return get_services(request), principal, conversation_id, body


class _MessagePostRoute(APIRoute):
    """POST …/messages, the hot path of every chat (bench/ B1), without FastAPI's dependency
    solving for the common request (_common_message_post): the same checks, done directly,
    then the same code as post_message. Any other request goes to the usual handler, which
    answers it exactly as before; the document (/openapi.json) is the route's as declared."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        usual = super().get_route_handler()

        async def handle(request: Request) -> Response:
            common = await _common_message_post(request)
            if common is None:
                return await usual(request)
            await bind_path_ids(request)  # the app-wide dependency's part
            return await _store_and_tell(*common)

        return handle


router.add_api_route(
    "/{conversation_id}/messages",
    post_message,
    methods=["POST"],
    route_class_override=_MessagePostRoute,
    **operation("messages", "post"),
    status_code=status.HTTP_201_CREATED,
    response_model=MessagePublic,
    summary="Post a message (a retry with the same client_message_id answers 200, stores nothing)",
    responses={
        200: {"model": MessagePublic, "description": "Already stored: the original message"},
        **errors(
            {
                **_ACCESS,
                409: "The conversation is closed or not yet active",
                413: "Content longer than the limit",
                422: "Not a message we take (an attachment not yours, sent, or of another kind)",
                **ENGINE_DOWN,
            }
        ),
        **too_many_requests("Too many messages from you in this conversation in the last minute"),
    },
)


@router.post(
    "/{conversation_id}/read",
    **operation("messages", "mark_read"),
    response_model=ReadState,
    summary="Mark everything up to a seq as seen; the other side gets message.read",
    responses=errors({**_ACCESS, 422: "Invalid body, or a seq the conversation has not reached"}),
)
async def mark_read(
    body: ReadReceipt,
    conversation: ConversationOfCaller,
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> ReadState:
    if principal.role not in (Role.VISITOR, Role.AGENT):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only its visitor or its agent")
    try:
        marks = await run_in_threadpool(
            record_read,
            services.db,
            conversation_id=conversation.id,
            reader_role=principal.role,
            reader_id=principal.id,
            seq=body.seq,
        )
    except SeqNotReached as beyond:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(beyond)) from None
    services.hints.wake(*stream_keys(conversation.id, conversation.agent_id))
    return ReadState(
        conversation_id=marks.conversation_id,
        visitor_read_seq=marks.visitor_read_seq,
        agent_read_seq=marks.agent_read_seq,
    )


@router.post(
    "/{conversation_id}/typing",
    **operation("conversations", "show_typing"),
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TypingPublic,
    summary="Say that you are typing: the other side's stream shows conversation.typing "
    "(live only: never stored, never replayed)",
    responses={
        **errors(_ACCESS),
        **too_many_requests("Too many typing signals from your side of this conversation"),
    },
)
async def typing(
    conversation: ConversationOfCaller, principal: CurrentPrincipal, services: ServicesDep
) -> TypingPublic:
    if principal.role not in (Role.VISITOR, Role.AGENT):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only its visitor or its agent")
    # Each one is a NOTIFY to every API process on PostgreSQL: a side's typing is kept to a pace.
    services.limits.typing.take(
        conversation.id, principal.role, over="typing signals a minute from your side"
    )
    signal = TypingPublic(
        conversation_id=conversation.id,
        by_role=principal.role,
        by_id=principal.id if principal.role == Role.VISITOR else None,
        at=utcnow(),
    )
    payload = {**signal.model_dump(mode="json"), SENDER: principal.id}
    keys = stream_keys(conversation.id, conversation.agent_id)
    if services.db.is_sqlite:
        for key in keys:
            services.hints.publish(key, payload)
    else:  # every API process's listener (ours too) hands it to its streams
        await run_in_threadpool(
            notify, services.db, channel=LIVE_CHANNEL, payload=live_signal_payload(keys, payload)
        )
    return signal


@router.get(
    "/{conversation_id}/events",
    **operation("conversations", "list_events"),
    response_model=EventPage,
    summary="The conversation's events in seq order, after a given seq",
    responses=errors({**_ACCESS, **BEYOND_NEWEST}),
)
async def list_events(
    conversation: ConversationOfReader,
    principal: CurrentPrincipal,
    services: ServicesDep,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> EventPage:
    after_seq = resume_after(after_seq, newest=conversation.last_seq)
    # Mapped in the thread too: a page holds up to a thousand events.
    events = await run_in_threadpool(
        lambda: [
            event_public(row)
            for row in conversation_events(
                services.db,
                conversation_id=conversation.id,
                after_seq=after_seq,
                limit=limit + 1,
                staff=principal.is_staff,
            )
        ]
    )
    return EventPage(
        conversation_id=conversation.id, events=events[:limit], has_more=len(events) > limit
    )


@router.get(
    "/{conversation_id}/stream",
    **operation("conversations", "stream"),
    response_class=EventSourceResponse,
    summary="Every event of the conversation as Server-Sent Events: replay, then live",
    description=(
        "`id:` is the event's seq, `event:` its type, `data:` the same JSON as /events. "
        "Resume with the `Last-Event-ID` header (or `after_seq`): nothing is missed or repeated. "
        "Comments keep the connection alive; it ends after a while and the client reconnects. "
        "A browser's EventSource, which sends no headers, passes a stream ticket as `ticket`. "
        "When the caller's access ends (the conversation transferred away, the visitor's token "
        "expired, the agent deactivated or their token replaced) a last `stream.ended` event "
        "says why in `reason`."
    ),
    responses={
        200: {"content": {"text/event-stream": {}}},
        **errors({**_ACCESS, **BEYOND_NEWEST}),
        **too_many_requests("The caller holds the most streams allowed open already"),
    },
)
async def stream_events(
    conversation: ConversationOfStreamer,
    principal: StreamPrincipal,
    services: ServicesDep,
    start: StreamStart,
) -> EventSourceResponse:
    after_seq = resume_after(start, newest=conversation.last_seq)
    release = services.limits.streams.take(principal.role, principal.id)
    return event_stream(
        settings=services.settings,
        hints=services.hints,
        read=conversation_log(services.db, conversation.id, staff=principal.is_staff),
        key=conversation.id,
        after_seq=after_seq,
        viewer=principal.id,
        on_close=release,
        access=stream_access(services, principal, conversation_id=conversation.id),
        # The visitor's own streams say they are there to read (no push while they are).
        while_open=(
            partial(keep_visitor_present, services.db, conversation.id)
            if principal.role == Role.VISITOR
            else None
        ),
    )


@router.post(
    "/{conversation_id}/close",
    **operation("conversations", "close"),
    response_model=ConversationPublic,
    summary="Close the conversation (by its visitor, its agent or an admin)",
    responses=errors({**_ACCESS, 409: "Already closed, by someone else", **ENGINE_DOWN}),
)
async def close_conversation(
    conversation: ConversationOfCaller, principal: CurrentPrincipal, services: ServicesDep
) -> ConversationPublic:
    if principal.role == Role.APP:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only its visitor or its staff")
    # Closed is final and stored by the workflow: answered here, even once the workflow ended.
    # A caller's close is one close: their retry (its first answer lost, say to a 503) gets
    # that close's answer; anyone else's is refused.
    if conversation.state == ConversationState.CLOSED:
        closes = CLOSED_AT_REQUEST_OF.get(principal.role, frozenset())
        if conversation.closed_by != principal.id or conversation.close_reason not in closes:
            raise HTTPException(
                status.HTTP_409_CONFLICT, detail="the conversation is already closed"
            )
    else:
        await services.temporal.close(
            conversation.id, CloseRequest(by_role=principal.role, by_id=principal.id)
        )
    return await conversation_view(services.db, conversation.id, staff=principal.is_staff)


@router.post(
    "/{conversation_id}/transfer",
    **operation("conversations", "transfer"),
    response_model=ConversationPublic,
    summary="Hand the conversation to another agent (within their capacity) or skill group",
    responses=errors(
        {
            **_ACCESS,
            409: "Not active, or the agent is not online with room",
            422: "Invalid body, unknown agent or skill group",
            **ENGINE_DOWN,
        }
    ),
    dependencies=[require(Role.AGENT, Role.SUPERVISOR, Role.ADMIN)],
)
async def transfer_conversation(
    body: TransferCreate,
    conversation: Annotated[Conversation, Depends(load_conversation)],
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> ConversationPublic:
    # The caller's transfer, sent again after it took effect (its answer lost): answered as it
    # was, though the conversation is no longer theirs.
    if await run_in_threadpool(
        lambda: transfer_took_effect(
            db=services.db,
            conversation_id=conversation.id,
            by_id=principal.id,
            to_agent_id=body.to_agent_id,
            to_skill_group=body.to_skill_group,
        )
    ):
        return await _with_transfer_note(services, conversation.id, principal, body.note)
    await conversation_of_caller(principal, conversation)
    # The workflow's validator does no I/O: the policy's groups and the agents are checked here.
    if body.to_skill_group is not None and (
        body.to_skill_group not in services.policy.current().skill_group_names
    ):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"unknown skill group {body.to_skill_group!r}",
        )
    if body.to_agent_id is not None:
        to_agent = await run_in_threadpool(find_agent, services.db, agent_id=body.to_agent_id)
        if to_agent is None or to_agent.role != Role.AGENT:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"unknown agent {body.to_agent_id!r}"
                if to_agent is None
                else f"{body.to_agent_id!r} is a supervisor, not an agent who serves",
            )
    # A requeue or close is stored before the workflow moves on (its validator sees it active).
    if conversation.state != ConversationState.ACTIVE:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=NOT_ACTIVE)
    await services.temporal.transfer(
        conversation.id,
        TransferRequest(
            by_role=principal.role,
            by_id=principal.id,
            to_agent_id=body.to_agent_id,
            to_skill_group=body.to_skill_group,
        ),
        assignment=(conversation.assigned_at or conversation.created_at).isoformat(),
    )
    return await _with_transfer_note(services, conversation.id, principal, body.note)


async def _with_transfer_note(
    services: Services, conversation_id: str, principal: Principal, note: str | None
) -> ConversationPublic:
    """The note for the next agent, written once the transfer took effect (a retried transfer
    writes it if the first try did not get that far): staff's alone, and never through the
    workflow's history."""
    if note:
        await run_in_threadpool(
            lambda: add_transfer_note(
                services.db, conversation_id=conversation_id, by_id=principal.id, text=note
            )
        )
    return await conversation_view(services.db, conversation_id, staff=True)


@router.post(
    "/{conversation_id}/notes",
    **operation("conversations", "add_note"),
    status_code=status.HTTP_201_CREATED,
    response_model=EventPublic,
    summary="Write an internal note: a note.created event for staff alone (never the visitor)",
    responses=errors({**_ACCESS, 403: "Only its agent, a supervisor of its group or an admin"}),
    dependencies=[require(Role.AGENT, Role.SUPERVISOR, Role.ADMIN)],
)
async def add_conversation_note(
    body: NoteCreate,
    conversation: ConversationOfCaller,
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> EventPublic:
    note = await run_in_threadpool(
        lambda: add_note(
            services.db, conversation_id=conversation.id, by_id=principal.id, text=body.content
        )
    )
    services.hints.wake(*stream_keys(conversation.id, conversation.agent_id))
    return event_public(note)


@router.post(
    "/{conversation_id}/rating",
    **operation("conversations", "rate"),
    status_code=status.HTTP_201_CREATED,
    response_model=RatingPublic,
    summary="Rate the conversation after it closed (its visitor, within the rating window)",
    responses=errors(
        {**_ACCESS, 409: "No invite pending, the window has passed, or rated", **ENGINE_DOWN}
    ),
    dependencies=[require(Role.VISITOR)],
)
async def rate_conversation(
    body: RatingCreate, conversation: ConversationOfCaller, services: ServicesDep
) -> RatingPublic:
    # Rated, expired or never invited: the workflow may have ended, so the stored copy answers.
    # This rating sent again (its first answer lost) is answered as it was; another is refused.
    if conversation.rating_status == RatingStatus.RATED:
        return await _as_rated(services, body, conversation)
    if conversation.rating_status != RatingStatus.PENDING:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="no rating invite is pending")
    # The workflow hears the score, never the comment (customer text stays out of Temporal).
    await services.temporal.submit_rating(
        conversation.id, RatingSubmission(score=body.score, resolved=body.resolved)
    )
    # Every rating of a conversation is one update: one sent at the same time as another may
    # have been answered with the other's outcome.
    rated = await load_conversation(services, conversation.id)
    return await _as_rated(services, body, rated)


async def _as_rated(
    services: Services, body: RatingCreate, conversation: Conversation
) -> RatingPublic:
    """The stored rating, if it is this one; its comment is stored here, once the workflow
    has taken the rating (a retry stores it if the first try did not get that far)."""
    if conversation.rating_status != RatingStatus.RATED or (
        conversation.rating_score,
        conversation.rating_resolved,
    ) != (body.score, body.resolved):
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the conversation is already rated")
    comment = conversation.rating_comment
    if comment is None and body.comment is not None:
        comment = await run_in_threadpool(
            lambda: keep_rating_comment(
                services.db, conversation_id=conversation.id, comment=body.comment or ""
            )
        )
    if comment not in (body.comment, ERASED):  # erased: taken, and kept as the marker
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the conversation is already rated")
    return conversation_public(ConversationView(conversation), staff=False).rating


@router.patch(
    "/{conversation_id}/attributes",
    **operation("conversations", "update_attributes"),
    response_model=AttributesPublic,
    summary="Change what your app tells staff about the customer (a JSON merge patch: null "
    "removes a key); staff's streams get conversation.attributes_changed",
    responses=errors(
        {
            **UNAUTHORIZED,
            403: "Only your app's backend (or an admin)",
            404: "Unknown conversation",
            409: "The conversation's customer text was erased",
            422: "Invalid body, or the attributes would be larger than 4 KiB",
        }
    ),
    dependencies=[require(Role.APP, Role.ADMIN)],
)
async def update_attributes(
    body: AttributesUpdate,
    conversation: Annotated[Conversation, Depends(load_conversation)],
    services: ServicesDep,
) -> AttributesPublic:
    try:
        changed = await run_in_threadpool(
            lambda: change_attributes(
                services.db, conversation_id=conversation.id, attributes=body.attributes
            )
        )
    except ConversationErased:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="the conversation's customer text was erased"
        ) from None
    except AttributesTooLarge as large:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"the attributes would be {large}"
        ) from None
    services.hints.wake(*stream_keys(changed.id, changed.agent_id))
    return AttributesPublic(conversation_id=changed.id, attributes=changed.attributes or {})


@router.post(
    "/{conversation_id}/assign",
    **operation("conversations", "assign"),
    response_model=ConversationPublic,
    summary="Give a waiting conversation to an online agent of its group with room (a "
    "supervisor of its group or an admin); those behind it keep their order",
    responses=errors(
        {
            **_ACCESS,
            409: "Not waiting in a queue, or the agent is not online in its group with room",
            422: "Invalid body, or unknown agent",
        }
    ),
    dependencies=[require(Role.SUPERVISOR, Role.ADMIN)],
)
async def assign_conversation(
    body: ConversationAssign, conversation: ConversationOfCaller, services: ServicesDep
) -> ConversationPublic:
    try:
        made = await run_in_threadpool(
            lambda: assign_to(services.db, conversation_id=conversation.id, agent_id=body.agent_id)
        )
    except LookupError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"unknown agent {body.agent_id!r}"
        ) from None
    except NotWaiting:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="the conversation is not waiting in a queue"
        ) from None
    except CannotTake as refused:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(refused)) from None
    # Stored: its workflow is told now, or (Temporal unreachable) by the reconciliation pass.
    try:
        client = await services.temporal.client()
    except EngineUnavailable:
        client = None
    if client is not None:
        await notify_assigned(db=services.db, client=client, made=[made])
    return await conversation_view(services.db, conversation.id, staff=True)
