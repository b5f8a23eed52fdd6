"""Attachments: a side of a conversation uploads a photo, a video or a PDF, then sends a message
of type image, video or file that carries it; whoever may read the conversation fetches it.

What a file is comes from its bytes (media/inspect.py): images are re-encoded without their
metadata (a phone's photo carries where it was taken), and the name it was uploaded with is
never kept. A browser fetches with a ticket for the attachment in the URL (POST
/v1/stream-tickets with the attachment's path: short-lived, bound to the asker's credential and
checked against their rights again on every fetch), since an <img> sends no token."""

from __future__ import annotations

from typing import Annotated

from fastapi import (
    APIRouter,
    Depends,
    File,
    HTTPException,
    Path,
    Query,
    Request,
    UploadFile,
    status,
)
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.deps import (
    BearerCredentials,
    CurrentPrincipal,
    Principal,
    ServicesDep,
    caller_or_ticket_holder,
    conversation_of_caller,
    conversation_of_reader,
    load_conversation,
)
from api.limits import too_many
from api.routes import operation
from api.schemas import UNAUTHORIZED, AttachmentPublic, errors, too_many_requests
from api.tickets import MAX_TICKET_CHARS
from domain.types import Role
from media.inspect import STORED_TYPES, Refused, inspect_upload
from store.attachments import (
    attachment_path,
    attachment_public,
    find_attachment,
    new_attachment_id,
    object_keys,
    record_attachment,
)
from store.events import ConversationClosed, ConversationNotFound
from store.models import Attachment, Conversation
from store.rates import RateLimited

router = APIRouter(prefix="/v1/conversations")

AttachmentId = Annotated[str, Path(max_length=32, pattern=r"^att_[0-9a-f]{24}$")]

# What a fetched file may do in a browser: nothing (no script, no plugin, no frame of ours).
_SANDBOX = "default-src 'none'; img-src 'self'; media-src 'self'; sandbox"


def _its_side(principal: Principal, conversation: Conversation) -> bool:
    """Its visitor, or the agent holding it: who writes to a conversation."""
    if principal.role == Role.VISITOR:
        return principal.conversation_id == conversation.id
    return principal.role == Role.AGENT and conversation.agent_id == principal.id


@router.post(
    "/{conversation_id}/attachments",
    **operation("attachments", "upload"),
    status_code=status.HTTP_201_CREATED,
    response_model=AttachmentPublic,
    summary="Upload a photo, a video or a PDF (multipart `file`), then send it as a message",
    description=(
        "What the file is comes from its bytes, never its name or declared type: JPEG, PNG, "
        "WebP, GIF and HEIC (converted to JPEG) images, MP4 and WebM videos, PDFs, within the "
        "policy's `[attachments]` limits. Images are re-encoded without metadata (EXIF: where "
        "a photo was taken) and upright, with a thumbnail. Then post a message of type `image`, "
        "`video` or `file` with the `attachment_id` (and a caption as `content`, if you like)."
    ),
    responses={
        **errors(
            {
                **UNAUTHORIZED,
                400: "The body is not multipart form data",
                403: "Only its visitor or its agent",
                404: "Unknown conversation",
                409: "The conversation is closed",
                413: "Larger than the policy allows for its kind",
                415: "Not a kind of file we take",
            }
        ),
        **too_many_requests("Too many uploads from you in this conversation in the last minute"),
    },
)
async def upload_attachment(
    conversation: Annotated[Conversation, Depends(conversation_of_caller)],
    principal: CurrentPrincipal,
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="The file: its name and type are not used")],
) -> AttachmentPublic:
    if not _its_side(principal, conversation):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only its visitor or its agent")
    limits = services.policy.current().attachments
    largest = max(limits.max_image_bytes, limits.max_video_bytes, limits.max_file_bytes)
    data = await file.read(largest + 1)
    try:
        inspected = await run_in_threadpool(inspect_upload, data, limits)
    except Refused as refused:
        raise HTTPException(refused.status, detail=refused.reason) from None
    attachment_id = new_attachment_id()
    key, thumbnail_key = object_keys(conversation.id, attachment_id, inspected.extension)
    stored = [key]
    await run_in_threadpool(services.objects.put, key, inspected.data, inspected.content_type)
    if inspected.thumbnail is not None:
        await run_in_threadpool(
            services.objects.put, thumbnail_key, inspected.thumbnail, "image/jpeg"
        )
        stored.append(thumbnail_key)
    attachment = Attachment(
        id=attachment_id,
        conversation_id=conversation.id,
        uploaded_by_role=principal.role,
        uploaded_by_id=principal.id,
        kind=inspected.kind,
        content_type=inspected.content_type,
        size=inspected.size,
        width=inspected.width,
        height=inspected.height,
        duration=inspected.duration,
        object_key=key,
        thumbnail_key=thumbnail_key if inspected.thumbnail is not None else None,
    )
    try:
        await run_in_threadpool(
            lambda: record_attachment(
                services.db, attachment, max_per_minute=limits.max_uploads_per_minute
            )
        )
    except (ConversationNotFound, ConversationClosed, RateLimited) as refused:
        await run_in_threadpool(services.objects.delete, stored)  # kept by no row: gone
        if isinstance(refused, RateLimited):
            raise too_many(
                f"more than {limits.max_uploads_per_minute} uploads a minute from you in this "
                "conversation",
                refused.retry_after,
            ) from None
        if isinstance(refused, ConversationNotFound):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown conversation") from None
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the conversation is closed") from None
    return AttachmentPublic(**attachment_public(attachment))


async def attachment_reader(
    request: Request,
    services: ServicesDep,
    conversation_id: Annotated[str, Path(max_length=64)],
    attachment_id: AttachmentId,
    credentials: BearerCredentials,
    ticket: Annotated[
        str | None,
        Query(
            max_length=MAX_TICKET_CHARS,
            description="A ticket for this attachment (POST /v1/stream-tickets with its path) "
            "instead of the Authorization header, for a browser's <img> or link",
        ),
    ] = None,
) -> Attachment:
    """The attachment, for a caller who may read its conversation: by bearer token, or by a
    ticket issued for the attachment (it opens the file and its thumbnail)."""
    principal = await caller_or_ticket_holder(
        request,
        services,
        credentials,
        ticket,
        opens=attachment_path(conversation_id, attachment_id),
        what="attachment",
    )
    conversation = await load_conversation(services, conversation_id)
    await conversation_of_reader(principal, services, conversation)  # as its events' reader
    found = await run_in_threadpool(
        lambda: find_attachment(
            services.db, conversation_id=conversation_id, attachment_id=attachment_id
        )
    )
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown attachment")
    return found


AttachmentOfReader = Annotated[Attachment, Depends(attachment_reader)]

_FETCH_RESPONSES = errors(
    {
        **UNAUTHORIZED,
        403: "Not your conversation",
        404: "Unknown conversation or attachment (or erased)",
    }
)


async def _served(services: ServicesDep, attachment: Attachment, key: str, media: str) -> Response:
    try:
        body = await run_in_threadpool(services.objects.get, key)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown attachment") from None
    # Images and videos show in the page; anything else (a PDF) is saved, never rendered here.
    shown = "inline" if media.startswith(("image/", "video/")) else "attachment"
    extension = key.rsplit(".", 1)[-1]
    return Response(
        body,
        media_type=media,
        headers={
            "Content-Disposition": f'{shown}; filename="{attachment.id}.{extension}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": _SANDBOX,
            "Cross-Origin-Resource-Policy": "same-origin",
            "Cache-Control": "private, max-age=300",
        },
    )


@router.get(
    "/{conversation_id}/attachments/{attachment_id}",
    **operation("attachments", "fetch"),
    response_class=Response,
    summary="The attachment's file, as our inspection found it (its type, never the upload's)",
    responses={200: {"content": {media: {} for media in STORED_TYPES}}, **_FETCH_RESPONSES},
)
async def fetch_attachment(attachment: AttachmentOfReader, services: ServicesDep) -> Response:
    return await _served(services, attachment, attachment.object_key, attachment.content_type)


@router.get(
    "/{conversation_id}/attachments/{attachment_id}/thumbnail",
    **operation("attachments", "thumbnail"),
    response_class=Response,
    summary="An image attachment's thumbnail (JPEG, at most 320 px on its long side)",
    responses={200: {"content": {"image/jpeg": {}}}, **_FETCH_RESPONSES},
)
async def fetch_thumbnail(attachment: AttachmentOfReader, services: ServicesDep) -> Response:
    if attachment.thumbnail_key is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no thumbnail: not an image")
    return await _served(services, attachment, attachment.thumbnail_key, "image/jpeg")
