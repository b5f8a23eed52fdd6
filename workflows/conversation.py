"""One workflow per conversation: its handlers, the names clients send to it (through
workflows/gateway.py). What it does, stage by stage, with its transition table:
workflows/machine.py.

The sandbox imports this module afresh for every workflow run it starts and keeps that copy
while the run is cached: so it holds the handlers alone, and the behaviour lives in a module
imported once (bench/ B4, the worker's memory).
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.types import (
        AgentAssigned,
        CloseRequest,
        ConversationFlow,
        ConversationSnapshot,
        MessagePosted,
        RatingSubmission,
        TransferRequest,
    )
    from workflows.machine import ConversationMachine


@workflow.defn(name="Conversation")
class ConversationWorkflow(ConversationMachine):
    @workflow.init
    def __init__(self, flow: ConversationFlow) -> None:
        self._begin(flow)

    @workflow.run
    async def run(self, flow: ConversationFlow) -> str:
        return await self._live()

    @workflow.signal
    def message_posted(self, message: MessagePosted) -> None:
        self._take_message(message)

    @workflow.signal
    def agent_assigned(self, assigned: AgentAssigned) -> None:
        self._take_agent(assigned)

    @workflow.update
    async def close(self, request: CloseRequest) -> str:
        return await self._closed_at_request(request)

    @close.validator
    def _validate_close(self, request: CloseRequest) -> None:
        self._check_close(request)

    @workflow.update
    async def transfer(self, request: TransferRequest) -> str:
        return await self._transferred_at_request(request)

    @transfer.validator
    def _validate_transfer(self, request: TransferRequest) -> None:
        self._check_transfer(request)

    @workflow.update
    async def submit_rating(self, rating: RatingSubmission) -> str:
        return await self._rated_at_request(rating)

    @submit_rating.validator
    def _validate_rating(self, rating: RatingSubmission) -> None:
        self._check_rating(rating)

    @workflow.query
    def snapshot(self) -> ConversationSnapshot:
        return self._snapshot()
