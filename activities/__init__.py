"""Side effects of the conversation lifecycle: database writes, assignment, notifications."""

from activities.conversation import ConversationActivities

__all__ = ["ConversationActivities"]
