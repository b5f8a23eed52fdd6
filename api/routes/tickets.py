"""Tickets (工单): made by staff from a conversation or a left message, or by the app for its
customer; listed, changed, commented and linked. Each change is stored (store/tickets.py),
then the ticket's workflow is told, which owns its SLA timers (workflows/ticket.py).

A change is answered once stored: its workflow is told at once, or, with the engine
unreachable, by the worker's reconciler within seconds (store/tickets.py untold_tickets).

Who: agents work on their groups' tickets (and those assigned to them), supervisors on their
groups', admins on all; the app makes tickets for its customers and reads their public side
(no internal comments, no staff fields), and writes the customer's replies."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from starlette.concurrency import run_in_threadpool

from api.deps import (
    MAX_INTEGER,
    MAX_SEQ,
    ConversationOfCaller,
    CurrentPrincipal,
    Principal,
    Services,
    ServicesDep,
    may_access,
    require,
)
from api.routes import operation
from api.schemas import (
    UNAUTHORIZED,
    TicketCommentCreate,
    TicketCommentPublic,
    TicketCreate,
    TicketEventPublic,
    TicketFromConversation,
    TicketLinkCreate,
    TicketLinkPublic,
    TicketPage,
    TicketPublic,
    TicketSlaPublic,
    TicketUpdate,
    errors,
)
from domain.errors import EngineUnavailable
from domain.types import Role, TicketStatus
from store import tickets as store
from store.events import ConversationNotFound
from store.models import Conversation, Ticket, TicketComment

router = APIRouter()
log = logging.getLogger("switchboard.api")

TicketId = Annotated[int, Path(ge=1, le=MAX_INTEGER)]
_STAFF = (Role.AGENT, Role.SUPERVISOR, Role.ADMIN)
_STAFF_OR_APP = (*_STAFF, Role.APP)
_NOT_FOUND = {404: "Unknown ticket"}
_NOT_YOURS = {403: "Not a ticket of your groups (or not for your role)"}


def _author(principal: Principal) -> store.Author:
    return store.Author(principal.role, principal.id)


def _refusal(exc: Exception) -> HTTPException:
    """A store's refusal as HTTP."""
    if isinstance(exc, store.TicketNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown ticket")
    if isinstance(exc, ConversationNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown conversation")
    if isinstance(exc, store.NotTicketStaff):
        return HTTPException(status.HTTP_403_FORBIDDEN, detail="not a ticket of your groups")
    if isinstance(exc, store.TicketClosed):
        return HTTPException(status.HTTP_409_CONFLICT, detail="the ticket is closed")
    if isinstance(exc, store.StatusChangeRefused):
        return HTTPException(status.HTTP_409_CONFLICT, detail=f"no such status change: {exc}")
    if isinstance(exc, store.LeftMessageTaken):
        return HTTPException(status.HTTP_409_CONFLICT, detail="the left message is resolved")
    if isinstance(exc, store.UnknownAgent):
        return HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"assignee {exc}: no such active agent in the ticket's group",
        )
    if isinstance(exc, store.LinkRefused):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc))
    raise exc


_REFUSED = (
    store.TicketNotFound,
    ConversationNotFound,
    store.NotTicketStaff,
    store.TicketClosed,
    store.StatusChangeRefused,
    store.LeftMessageTaken,
    store.UnknownAgent,
    store.LinkRefused,
)


def _staff_author(comment: TicketComment, *, staff: bool) -> str | None:
    """Staff read who of them wrote it; a customer's id is the ticket's customer's."""
    return comment.author_id if staff and comment.author_role != "customer" else None


def _public(detail: store.TicketDetail, *, staff: bool) -> TicketPublic:
    ticket = detail.ticket
    assert ticket.id is not None
    view = TicketPublic(
        id=ticket.id,
        subject=ticket.subject,
        description=ticket.description,
        status=TicketStatus(ticket.status),
        priority=ticket.priority,  # type: ignore[arg-type]
        customer_id=ticket.customer_id,
        created_at=ticket.created_at,
        updated_at=ticket.updated_at,
        closed_at=ticket.closed_at,
        comments=[
            TicketCommentPublic(
                id=comment.id or 0,
                author_role=comment.author_role,
                author_id=comment.author_id
                if staff and comment.author_role != "customer"
                else None,
                public=comment.public,
                content=comment.content,
                created_at=comment.created_at,
            )
            for comment in detail.comments
        ],
    )
    if staff:
        view.skill_group = ticket.skill_group
        view.assignee_id = ticket.assignee_id
        view.attributes = ticket.attributes
        view.order_id = ticket.order_id
        view.links = [
            TicketLinkPublic(
                conversation_id=link.conversation_id,
                left_message_id=link.left_message_id,
                linked_at=link.linked_at,
            )
            for link in detail.links
        ]
        view.sla = TicketSlaPublic(
            first_response_due_at=ticket.first_response_due_at,
            first_responded_at=ticket.first_responded_at,
            first_response_breached_at=ticket.first_response_breached_at,
            resolution_due_at=ticket.resolution_due_at,
            resolution_breached_at=ticket.resolution_breached_at,
        )
        view.breached = (
            ticket.first_response_breached_at is not None
            or ticket.resolution_breached_at is not None
        )
    return view


async def _told_and_shown(services: Services, principal: Principal, ticket: Ticket) -> TicketPublic:
    """Tell the ticket's workflow of the stored change, then answer with the ticket."""
    assert ticket.id is not None
    try:
        await services.tickets.ticket_changed(ticket.id, version=ticket.version)
    except EngineUnavailable as exc:
        # Stored: the reconciler tells the workflow (a retry would make a second ticket).
        log.warning("ticket %s stored, its workflow not told yet: %s", ticket.id, exc.what)
    detail = await run_in_threadpool(
        store.ticket_detail,
        services.db,
        ticket_id=ticket.id,
        author=_author(principal),
        supervised=principal.skill_groups,
        staff=principal.is_staff,
    )
    return _public(detail, staff=principal.is_staff)


async def _create(
    services: Services,
    principal: Principal,
    new: store.NewTicket,
) -> TicketPublic:
    def may_use(conversation: Conversation) -> bool:
        return principal.role == Role.APP or may_access(principal, conversation)

    try:
        ticket = await run_in_threadpool(
            store.create_ticket,
            services.db,
            policy=services.policy.current(),
            new=new,
            author=_author(principal),
            supervised=principal.skill_groups,
            may_use_conversation=may_use,
        )
    except _REFUSED as exc:
        raise _refusal(exc) from None
    return await _told_and_shown(services, principal, ticket)


_CREATE_ERRORS = errors(
    {
        **UNAUTHORIZED,
        403: "Not your conversation, or not your group",
        404: "Unknown conversation",
        409: "The left message is resolved already",
        422: "Invalid body, an unknown group or assignee, or another customer's conversation",
    }
)


@router.post(
    "/v1/tickets",
    **operation("tickets", "create"),
    status_code=status.HTTP_201_CREATED,
    response_model=TicketPublic,
    summary="Make a ticket: for a customer (the app), or of a conversation or left message",
    responses=_CREATE_ERRORS,
    dependencies=[require(*_STAFF_OR_APP)],
)
async def create_ticket(
    body: TicketCreate, principal: CurrentPrincipal, services: ServicesDep
) -> TicketPublic:
    new = store.NewTicket(
        subject=body.subject,
        description=body.description,
        priority=body.priority,
        skill_group=body.skill_group,
        assignee_id=body.assignee_id,
        customer_id=body.customer_id,
        conversation_id=body.conversation_id,
        left_message_id=body.left_message_id,
    )
    return await _create(services, principal, new)


@router.post(
    "/v1/conversations/{conversation_id}/ticket",
    **operation("tickets", "create_from_conversation"),
    status_code=status.HTTP_201_CREATED,
    response_model=TicketPublic,
    summary="Make a ticket of a conversation (its transcript linked, its customer's context "
    "copied)",
    responses=_CREATE_ERRORS,
    dependencies=[require(*_STAFF)],
)
async def create_ticket_from_conversation(
    body: TicketFromConversation,
    conversation: ConversationOfCaller,
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> TicketPublic:
    new = store.NewTicket(
        subject=body.subject,
        description=body.description,
        priority=body.priority,
        skill_group=body.skill_group,
        assignee_id=body.assignee_id,
        conversation_id=conversation.id,
    )
    return await _create(services, principal, new)


@router.post(
    "/v1/left-messages/{left_message_id}/ticket",
    **operation("tickets", "create_from_left_message"),
    status_code=status.HTTP_201_CREATED,
    response_model=TicketPublic,
    summary="Make a ticket of a left message, which it resolves",
    responses=errors(
        {
            **UNAUTHORIZED,
            403: "Not a left message of your groups",
            409: "Resolved already",
            422: "Invalid body, an unknown left message, group or assignee",
        }
    ),
    dependencies=[require(*_STAFF)],
)
async def create_ticket_from_left_message(
    left_message_id: Annotated[int, Path(ge=1, le=MAX_INTEGER)],
    body: TicketFromConversation,
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> TicketPublic:
    new = store.NewTicket(
        subject=body.subject,
        description=body.description,
        priority=body.priority,
        skill_group=body.skill_group,
        assignee_id=body.assignee_id,
        left_message_id=left_message_id,
    )
    return await _create(services, principal, new)


@router.get(
    "/v1/tickets",
    **operation("tickets", "list"),
    response_model=TicketPage,
    summary="Tickets, by id, a page at a time (agents and supervisors: their groups')",
    responses=errors({**UNAUTHORIZED, 403: "Staff and the app only"}),
    dependencies=[require(*_STAFF_OR_APP)],
)
async def list_tickets(
    principal: CurrentPrincipal,
    services: ServicesDep,
    status_: Annotated[list[TicketStatus] | None, Query(alias="status", max_length=4)] = None,
    skill_group: Annotated[str | None, Query(max_length=64)] = None,
    assignee_id: Annotated[str | None, Query(max_length=64)] = None,
    unassigned: Annotated[
        bool | None, Query(description="true: the groups' pools alone; false: assigned ones")
    ] = None,
    breached: bool | None = None,
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
    after: Annotated[int, Query(ge=0, le=MAX_INTEGER)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TicketPage:
    found = await run_in_threadpool(
        store.list_tickets,
        services.db,
        author=_author(principal),
        supervised=principal.skill_groups,
        status=status_ or (),
        skill_group=skill_group,
        assignee_id=assignee_id,
        unassigned=unassigned,
        breached=breached,
        customer_id=customer_id,
        after=after,
        limit=limit,
    )
    staff = principal.is_staff
    return TicketPage(
        tickets=[_public(store.TicketDetail(ticket, [], []), staff=staff) for ticket in found],
        next_after=found[-1].id if len(found) == limit else None,
    )


@router.get(
    "/v1/tickets/{ticket_id}",
    **operation("tickets", "get"),
    response_model=TicketPublic,
    summary="A ticket with its comments (the app: its public side)",
    responses=errors({**UNAUTHORIZED, **_NOT_YOURS, **_NOT_FOUND}),
    dependencies=[require(*_STAFF_OR_APP)],
)
async def get_ticket(
    ticket_id: TicketId, principal: CurrentPrincipal, services: ServicesDep
) -> TicketPublic:
    try:
        detail = await run_in_threadpool(
            store.ticket_detail,
            services.db,
            ticket_id=ticket_id,
            author=_author(principal),
            supervised=principal.skill_groups,
            staff=principal.is_staff,
        )
    except _REFUSED as exc:
        raise _refusal(exc) from None
    return _public(detail, staff=principal.is_staff)


@router.patch(
    "/v1/tickets/{ticket_id}",
    **operation("tickets", "update"),
    response_model=TicketPublic,
    summary="Change a ticket's status, priority or assignee",
    description="Status changes: open → pending | solved; pending → open | solved; "
    "solved → open | closed. Pending and solved tickets also close by themselves "
    "([tickets] in the policy).",
    responses=errors(
        {
            **UNAUTHORIZED,
            **_NOT_YOURS,
            **_NOT_FOUND,
            409: "Closed, or no such status change",
            422: "Invalid body, or an assignee not of the ticket's group",
        }
    ),
    dependencies=[require(*_STAFF)],
)
async def update_ticket(
    ticket_id: TicketId, body: TicketUpdate, principal: CurrentPrincipal, services: ServicesDep
) -> TicketPublic:
    changes = {"assignee_id": body.assignee_id} if "assignee_id" in body.model_fields_set else {}
    try:
        ticket = await run_in_threadpool(
            lambda: store.update_ticket(
                services.db,
                policy=services.policy.current(),
                ticket_id=ticket_id,
                author=_author(principal),
                supervised=principal.skill_groups,
                status=body.status,
                priority=body.priority,
                **changes,
            )
        )
    except _REFUSED as exc:
        raise _refusal(exc) from None
    return await _told_and_shown(services, principal, ticket)


@router.post(
    "/v1/tickets/{ticket_id}/comments",
    **operation("tickets", "comment"),
    status_code=status.HTTP_201_CREATED,
    response_model=TicketPublic,
    summary="Comment: staff publicly or internally; the app writes the customer's reply "
    "(public), which reopens a pending or solved ticket",
    responses=errors({**UNAUTHORIZED, **_NOT_YOURS, **_NOT_FOUND, 409: "The ticket is closed"}),
    dependencies=[require(*_STAFF_OR_APP)],
)
async def comment_on_ticket(
    ticket_id: TicketId,
    body: TicketCommentCreate,
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> TicketPublic:
    public = True if principal.role == Role.APP else body.public
    if principal.role == Role.APP and "public" in body.model_fields_set and not body.public:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="the customer's replies are public")
    try:
        ticket, _comment = await run_in_threadpool(
            lambda: store.add_comment(
                services.db,
                ticket_id=ticket_id,
                author=_author(principal),
                content=body.content,
                public=public,
                supervised=principal.skill_groups,
            )
        )
    except _REFUSED as exc:
        raise _refusal(exc) from None
    return await _told_and_shown(services, principal, ticket)


@router.post(
    "/v1/tickets/{ticket_id}/links",
    **operation("tickets", "link"),
    response_model=TicketPublic,
    summary="Link a conversation or a left message of the ticket's customer (once)",
    responses=errors(
        {
            **UNAUTHORIZED,
            **_NOT_YOURS,
            **_NOT_FOUND,
            422: "Invalid body, or not the ticket's customer's",
        }
    ),
    dependencies=[require(*_STAFF)],
)
async def link_to_ticket(
    ticket_id: TicketId, body: TicketLinkCreate, principal: CurrentPrincipal, services: ServicesDep
) -> TicketPublic:
    try:
        ticket = await run_in_threadpool(
            lambda: store.link_to_ticket(
                services.db,
                ticket_id=ticket_id,
                author=_author(principal),
                supervised=principal.skill_groups,
                conversation_id=body.conversation_id,
                left_message_id=body.left_message_id,
            )
        )
    except _REFUSED as exc:
        raise _refusal(exc) from None
    return await _told_and_shown(services, principal, ticket)


@router.get(
    "/v1/tickets/{ticket_id}/events",
    **operation("tickets", "events"),
    response_model=list[TicketEventPublic],
    summary="A ticket's events in seq order (the app: the public ones)",
    responses=errors({**UNAUTHORIZED, **_NOT_YOURS, **_NOT_FOUND}),
    dependencies=[require(*_STAFF_OR_APP)],
)
async def ticket_events(
    ticket_id: TicketId,
    principal: CurrentPrincipal,
    services: ServicesDep,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[TicketEventPublic]:
    try:
        await run_in_threadpool(
            store.ticket_detail,
            services.db,
            ticket_id=ticket_id,
            author=_author(principal),
            supervised=principal.skill_groups,
            staff=principal.is_staff,
        )
    except _REFUSED as exc:
        raise _refusal(exc) from None
    events = await run_in_threadpool(
        store.ticket_events_after,
        services.db,
        ticket_id=ticket_id,
        after_seq=after_seq,
        limit=limit,
        staff=principal.is_staff,
    )
    return [
        TicketEventPublic(seq=event.seq, type=event.type, at=event.at, data=data)
        for event, data in events
    ]
