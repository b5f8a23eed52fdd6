"""The database layer: tables, sessions, the event writer and the assignment function."""

from store.db import Database
from store.models import Agent, AgentSkill, Assignment, Conversation, Event, Message, QueueEntry

__all__ = [
    "Agent",
    "AgentSkill",
    "Assignment",
    "Conversation",
    "Database",
    "Event",
    "Message",
    "QueueEntry",
]
