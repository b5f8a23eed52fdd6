"""The worker's workflow sandbox (worker.py): the SDK's, with its snippets compiled once."""

from __future__ import annotations

import temporalio.workflow
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from worker import CompiledSandboxRunner, sandbox_code
from workflows import ConversationWorkflow


def test_the_worker_keeps_the_sdk_sandbox_and_its_restrictions() -> None:
    runner = CompiledSandboxRunner()
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert runner.restrictions is SandboxRestrictions.default


async def test_a_new_workflow_run_compiles_no_snippet_again() -> None:
    """A run's imports and its first activations run snippets compiled for the runs before it
    (prepare_workflow starts a run in the sandbox, as the worker does at start)."""
    runner = CompiledSandboxRunner()
    definition = temporalio.workflow._Definition.must_from_class(ConversationWorkflow)
    runner.prepare_workflow(definition)
    compiled = sandbox_code.cache_info().misses
    runner.prepare_workflow(definition)
    assert sandbox_code.cache_info().misses == compiled
    assert sandbox_code.cache_info().hits > 0
