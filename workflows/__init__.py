"""Deterministic lifecycle code. No I/O, no environment, no wall clock: see activities/."""

from workflows.conversation import ConversationWorkflow

__all__ = ["ConversationWorkflow"]
