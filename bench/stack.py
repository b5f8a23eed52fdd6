"""The real stack, started exactly as `make run` starts it, on a fresh data directory.

`python launch.py` (the file-backed dev server with our search attributes, `python worker.py`,
uvicorn `api.main:app`), configured only through SWITCHBOARD_* variables: SQLite in the temp
directory, free ports, the scenario's policy file. Beside it, the reference's own worker
(`python -m bench.reference`) against the same dev server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from temporalio.client import Client

from bench.reference import TASK_QUEUE as REFERENCE_TASK_QUEUE
from settings import PROJECT_ROOT

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_policy(
    path: Path,
    *,
    idle_warning_after: str = "3m",
    idle_close_after: str = "2m",
    rating_window: str = "24h",
) -> Path:
    """One always-open group; the scenario's timeouts. The scenarios' agents hold streams only
    where they measure them: a day to connect keeps the others online for the whole run."""
    path.write_text(
        'default_skill_group = "general"\n'
        "[timeouts]\n"
        f'idle_warning_after = "{idle_warning_after}"\n'
        f'idle_close_after = "{idle_close_after}"\n'
        f'rating_window = "{rating_window}"\n'
        '[agents]\npresence_timeout = "1d"\n'
        '[[skill_groups]]\nname = "general"\n'
    )
    return path


# --- processes ------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[
        text.rindex(")") + 2 :
    ].split()  # fields from the state on (the name may hold spaces)


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process (all its threads) so far."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) in KiB."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


@dataclass
class CpuMark:
    at: float
    cpu: dict[str, float]


class Stack:
    """One run of the product and the reference worker on a fresh data directory."""

    def __init__(
        self,
        *,
        name: str,
        policy: dict[str, str] | None = None,
        keep: bool = False,
        profile: tuple[str, ...] = (),
        profile_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.keep = keep
        # py-spy on these processes ("api", "worker") for the whole scenario, as collapsed stacks
        # of the thread holding the GIL (the Python CPU; SQLite and Temporal's core release it).
        self.profile = profile
        self.profile_dir = profile_dir or Path(tempfile.gettempdir())
        self.profilers: list[subprocess.Popen[bytes]] = []
        self.policy_settings = policy or {}
        self.dir = Path(tempfile.mkdtemp(prefix=f"switchboard-bench-{name}-"))
        self.api_port = free_port()
        self.temporal_port = free_port()
        self.ui_port = free_port()
        self.temporal_address = f"127.0.0.1:{self.temporal_port}"
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.launcher: subprocess.Popen[bytes] | None = None
        self.reference: subprocess.Popen[bytes] | None = None
        self.pids: dict[str, int] = {}
        self.client: Client

    @property
    def env(self) -> dict[str, str]:
        policy = bench_policy(self.dir / "policy.toml", **self.policy_settings)
        return {
            **os.environ,
            "SWITCHBOARD_DATABASE_URL": f"sqlite:///{self.dir / 'switchboard.db'}",
            "SWITCHBOARD_TEMPORAL_DB": str(self.dir / "temporal.db"),
            "SWITCHBOARD_TEMPORAL_ADDRESS": self.temporal_address,
            "SWITCHBOARD_API_PORT": str(self.api_port),
            "SWITCHBOARD_UI_PORT": str(self.ui_port),
            "SWITCHBOARD_POLICY": str(policy),
            "SWITCHBOARD_WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
            # The benchmarks measure throughput: the per-sender rate limit (60 a minute by
            # default) would answer 429 to their senders, who post far faster than people.
            "SWITCHBOARD_MAX_MESSAGES_PER_MINUTE": "1000000",
            # Likewise the requests of one address and one token, and the app's starts.
            "SWITCHBOARD_MAX_REQUESTS_PER_MINUTE_PER_ADDRESS": "1000000",
            "SWITCHBOARD_MAX_REQUESTS_PER_MINUTE_PER_CALLER": "1000000",
            "SWITCHBOARD_MAX_CONVERSATIONS_PER_MINUTE": "1000000",
        }

    async def __aenter__(self) -> Stack:
        env = self.env
        self.launcher = self._spawn([sys.executable, "launch.py"], env, "launch.log")
        try:
            await self._wait_healthy()
            self._find_processes()
            self.client = await Client.connect(self.temporal_address)
            self.reference = self._spawn(
                [sys.executable, "-m", "bench.reference", "--address", self.temporal_address],
                env,
                "reference.log",
            )
            self.pids["reference worker"] = self.reference.pid
            await self._check_reference()
            self._start_profilers(env)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_profilers(self, env: dict[str, str]) -> None:
        if not self.profile:
            return
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        for name in self.profile:
            output = self.profile_dir / f"profile-{self.name}-{name.replace(' ', '-')}.txt"
            command = [
                py_spy,
                "record",
                "--gil",
                "--nonblocking",
                "--format",
                "raw",
                "-o",
                str(output),
            ]
            self.profilers.append(
                self._spawn([*command, "-p", str(self.pids[name])], env, f"py-spy-{name}.log")
            )

    def _spawn(self, command: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with (self.dir / log).open("wb") as output:
            return subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                assert self.launcher is not None
                if self.launcher.poll() is not None:
                    raise RuntimeError(f"launch.py exited:\n{self.log_tail()}")
                try:
                    if (await http.get(f"{self.api_url}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the stack did not come up:\n{self.log_tail()}")
                await asyncio.sleep(0.3)

    def _find_processes(self) -> None:
        assert self.launcher is not None
        self.pids["launcher"] = self.launcher.pid
        for pid in children(self.launcher.pid):
            command = cmdline(pid)
            if "start-dev" in command:
                self.pids["dev server"] = pid
            elif "worker.py" in command:
                self.pids["worker"] = pid
            elif "uvicorn" in command:
                self.pids["api"] = pid
        missing = {"dev server", "worker", "api"} - set(self.pids)
        if missing:
            raise RuntimeError(f"launch.py did not start {missing}:\n{self.log_tail()}")

    async def _check_reference(self) -> None:
        """The reference worker answers: one workflow through it."""
        handle = await self.client.start_workflow(
            "BenchSleeper",
            time.time(),
            id=f"bench-check-{uuid.uuid4().hex}",
            task_queue=REFERENCE_TASK_QUEUE,
        )
        await asyncio.wait_for(handle.result(), timeout=60)

    def log_tail(self, lines: int = 40) -> str:
        path = self.dir / "launch.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu(self) -> CpuMark:
        return CpuMark(
            at=time.monotonic(),
            cpu={
                **{name: cpu_seconds(pid) for name, pid in self.pids.items()},
                "bench client": cpu_seconds(os.getpid()),
            },
        )

    @staticmethod
    def cpu_between(start: CpuMark, end: CpuMark, per: int | None = None) -> dict[str, Any]:
        """CPU seconds each process used between two marks (per item in ms, if `per`)."""
        used = {name: end.cpu[name] - start.cpu.get(name, 0.0) for name in end.cpu}
        out: dict[str, Any] = {
            "wall_s": round(end.at - start.at, 2),
            "cpu_s": {name: round(value, 2) for name, value in used.items()},
        }
        if per:
            out["cpu_ms_per_item"] = {
                name: round(value * 1000 / per, 3) for name, value in used.items()
            }
        return out

    def stop(self) -> None:
        for profiler in self.profilers:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file and ends
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                profiler.kill()
        if self.reference is not None and self.reference.poll() is None:
            self.reference.send_signal(signal.SIGTERM)
            try:
                self.reference.wait(20)
            except subprocess.TimeoutExpired:
                self.reference.kill()
                self.reference.wait()
        if self.launcher is not None and self.launcher.poll() is None:
            self.launcher.send_signal(signal.SIGTERM)  # it stops API, worker, server in order
            try:
                self.launcher.wait(90)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait()
        for name in ("api", "worker", "dev server"):  # anything launch.py left behind
            pid = self.pids.get(name)
            if pid is not None and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.keep:
            print(f"kept {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
