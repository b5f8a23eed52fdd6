"""What the conversation engine answers besides yes: the kinds of refusal and failure every caller
from outside maps (the API to HTTP), and the failure types the workflow raises them with."""

from __future__ import annotations

from enum import StrEnum


class Rejection(StrEnum):
    """Why a workflow refused an update: the `type` of the ApplicationError it raised."""

    INVALID_STATE = "InvalidState"  # not now: closed already, not active, rated already
    FORBIDDEN = "Forbidden"  # not this caller: another agent's conversation
    INVALID_INPUT = "InvalidInput"  # not this request, whatever the state


# The workflow raises them as plain strings (an ApplicationError's type crosses the wire as text).
INVALID_STATE = Rejection.INVALID_STATE.value
FORBIDDEN = Rejection.FORBIDDEN.value
INVALID_INPUT = Rejection.INVALID_INPUT.value

# An activity's answers to the workflow, not refusals to a caller: a decision taken because
# nothing happened was declined because something newer is stored (invariant 8). NEWER_MESSAGE:
# a message, its details the newest message's MessagePosted fields; ASSIGNED_MEANWHILE: an
# agent took the waiting conversation, its details their id.
NEWER_MESSAGE = "NewerMessage"
ASSIGNED_MEANWHILE = "AssignedMeanwhile"


class EngineUnavailable(Exception):
    """Temporal did not take the request, or no worker answered in time: nothing was decided,
    and the same request may be sent again."""

    def __init__(self, what: str = "the conversation engine is unreachable") -> None:
        super().__init__(what)
        self.what = what


class ConversationEnded(Exception):
    """The conversation's workflow has finished (closed, and its rating phase is over)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id} has ended")
        self.conversation_id = conversation_id


class UpdateRejected(Exception):
    """The workflow refused the update (its validator, or the handler after it) and changed
    nothing; `message` says why in words the caller may show."""

    def __init__(self, kind: Rejection, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @classmethod
    def from_failure(cls, failure_type: str | None, message: str) -> UpdateRejected:
        """A failure type the workflow does not name (none, or a bug's) is the request's fault:
        the caller learns why, and the workflow is unchanged."""
        try:
            kind = Rejection(failure_type)
        except ValueError:
            kind = Rejection.INVALID_INPUT
        return cls(kind, message)
