"""The worker's build id: given explicitly, from our sources (the SDK's default compiles every
loaded module at each start where no bytecode is cached), and as telling as the default: the
same for the same code, another for any change to what the worker runs."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from domain.policy import PolicySource
from media.storage import LocalStore
from settings import PROJECT_ROOT
from store.db import Database
from worker import WORKER_SOURCES, build_worker, source_build_id


def _copy_of_sources(into: Path) -> Path:
    for name in WORKER_SOURCES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, into / name)
    return into


def test_the_build_id_follows_the_worker_s_sources_and_nothing_else(tmp_path: Path) -> None:
    root = _copy_of_sources(tmp_path / "copy")
    first = source_build_id(root)
    assert source_build_id(root) == first == source_build_id(PROJECT_ROOT), "not deterministic"
    (root / "README.md").write_text("not code the worker runs")
    assert source_build_id(root) == first
    machine = root / "workflows" / "machine.py"
    machine.write_text(machine.read_text() + "\n# a change\n")
    changed = source_build_id(root)
    assert changed != first, "a workflow change kept the build id"
    (root / "store" / "extra.py").write_text("X = 1\n")
    assert source_build_id(root) not in (first, changed), "a new module kept the build id"


async def test_the_worker_is_built_with_the_source_build_id(
    time_env: WorkflowEnvironment, tmp_path: Path, policy_file
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'worker.db'}")
    db.create_schema()
    try:
        worker = build_worker(
            client=time_env.client,
            db=db,
            policy=PolicySource(policy_file()),
            task_queue=f"tq-{uuid.uuid4()}",
            objects=LocalStore(tmp_path / "attachments"),
        )
        assert worker.config().get("build_id") == source_build_id()
    finally:
        db.dispose()
